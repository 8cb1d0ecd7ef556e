// hexz info: what a snapshot holds, as text or JSON.
#include <cstdio>
#include <string>

#include "common/base/size.h"
#include "common/format/snapshot.h"
#include "hexz/cli_checks.h"
#include "hexz/commands.h"

namespace hexz::cli {
namespace {

using format::Snapshot;
using format::StreamId;

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out + "\"";
}

std::vector<std::string> Codecs(const Snapshot& s) {
  uint32_t mask = 0;
  for (StreamId id : {StreamId::kDisk, StreamId::kMemory}) mask |= s.Stats(id).codecs_used;
  std::vector<std::string> out;
  for (format::Codec c : {format::Codec::kLz4, format::Codec::kZstd, format::Codec::kRaw})
    if (mask & (1u << static_cast<int>(c))) out.push_back(format::CodecName(c));
  return out;
}

std::string Ratio(const format::StreamStats& st) {
  if (st.stored_bytes == 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f",
                static_cast<double>(st.logical_size) / static_cast<double>(st.stored_bytes));
  return buf;
}

void PrintText(const Snapshot& s) {
  std::printf("snapshot:    %s\n", s.path().c_str());
  std::printf("format:      hexz snapshot version %u\n", s.format_version());
  std::printf("id:          %s\n", s.id().ToHex().c_str());
  if (!s.parent_path().empty()) {
    std::printf("parent:      %s (id %s)\n", s.parent_path().c_str(),
                s.parent_id().ToHex().c_str());
  } else {
    std::printf("parent:      none\n");
  }
  std::printf("block size:  %s\n", base::FormatSize(s.block_size()).c_str());
  std::string codecs;
  for (const std::string& c : Codecs(s)) codecs += (codecs.empty() ? "" : ", ") + c;
  std::printf("codecs:      %s\n", codecs.empty() ? "-" : codecs.c_str());
  for (StreamId id : {StreamId::kDisk, StreamId::kMemory}) {
    const format::StreamStats st = s.Stats(id);
    if (!st.present) {
      std::printf("%-7s      absent\n", (std::string(format::StreamName(id)) + ":").c_str());
      continue;
    }
    std::printf("%-7s      %s (%llu bytes), stored %s, ratio %s\n",
                (std::string(format::StreamName(id)) + ":").c_str(),
                base::FormatSize(st.logical_size).c_str(),
                static_cast<unsigned long long>(st.logical_size),
                base::FormatSize(st.stored_bytes).c_str(), Ratio(st).c_str());
    std::printf("             blocks %llu: zero %llu, dedup %llu, parent %llu\n",
                static_cast<unsigned long long>(st.block_count),
                static_cast<unsigned long long>(st.zero_blocks),
                static_cast<unsigned long long>(st.dedup_blocks),
                static_cast<unsigned long long>(st.parent_blocks));
  }
}

void PrintJson(const Snapshot& s) {
  std::printf("{\n  \"path\": %s,\n  \"format_version\": %u,\n  \"id\": \"%s\",\n",
              JsonString(s.path()).c_str(), s.format_version(), s.id().ToHex().c_str());
  if (!s.parent_path().empty()) {
    std::printf("  \"parent\": {\"path\": %s, \"id\": \"%s\"},\n",
                JsonString(s.parent_path()).c_str(), s.parent_id().ToHex().c_str());
  } else {
    std::printf("  \"parent\": null,\n");
  }
  std::printf("  \"block_size\": %u,\n  \"codecs\": [", s.block_size());
  bool first = true;
  for (const std::string& c : Codecs(s)) {
    std::printf("%s\"%s\"", first ? "" : ", ", c.c_str());
    first = false;
  }
  std::printf("],\n  \"streams\": {\n");
  for (StreamId id : {StreamId::kDisk, StreamId::kMemory}) {
    const format::StreamStats st = s.Stats(id);
    const char* sep = id == StreamId::kDisk ? "," : "";
    if (!st.present) {
      std::printf("    \"%s\": null%s\n", format::StreamName(id), sep);
      continue;
    }
    std::string ratio = Ratio(st);
    std::printf(
        "    \"%s\": {\"logical_size\": %llu, \"stored_size\": %llu, \"ratio\": %s, "
        "\"blocks\": %llu, \"zero_blocks\": %llu, \"dedup_blocks\": %llu, "
        "\"parent_blocks\": %llu}%s\n",
        format::StreamName(id), static_cast<unsigned long long>(st.logical_size),
        static_cast<unsigned long long>(st.stored_bytes), ratio == "-" ? "null" : ratio.c_str(),
        static_cast<unsigned long long>(st.block_count),
        static_cast<unsigned long long>(st.zero_blocks),
        static_cast<unsigned long long>(st.dedup_blocks),
        static_cast<unsigned long long>(st.parent_blocks), sep);
  }
  std::printf("  }\n}\n");
}

}  // namespace

void AddInfoCommand(CLI::App& parent, int* rc) {
  auto path = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  CLI::App* cmd = parent.add_subcommand("info", "Show what a snapshot holds");
  cmd->add_option("SNAP", *path, "Snapshot file")->required();
  cmd->add_flag("--json", *json, "Machine-readable output");
  cmd->callback([rc, path, json] {
    auto snap = OpenSnapshotChain(*path);
    if (!snap.ok()) {
      // A thin snapshot whose parent chain is broken: still show the file
      // itself (it says which parent it needs), then fail.
      format::OpenOptions alone;
      alone.skip_parents = true;
      auto self = Snapshot::Open(*path, alone);
      if (self.ok() && !(*self)->parent_path().empty()) {
        if (*json) {
          PrintJson(**self);
        } else {
          PrintText(**self);
        }
      }
      *rc = Fail(snap.status());
      return;
    }
    if (*json) {
      PrintJson(**snap);
    } else {
      PrintText(**snap);
    }
    *rc = 0;
  });
}

}  // namespace hexz::cli
