// hexz info: what a snapshot holds, as text or JSON.
#include <cstdio>
#include <string>
#include <vector>

#include "common/base/json.h"
#include "common/base/size.h"
#include "common/disk/partition.h"
#include "common/format/snapshot.h"
#include "hexz/cli_checks.h"
#include "hexz/commands.h"
#include "hexz/remote_cli.h"

namespace hexz::cli {
namespace {

using format::Snapshot;
using format::StreamId;

std::string JsonString(const std::string& s) { return base::JsonQuote(s); }

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

using Table = base::Result<disk::PartitionTable>;

// The partition table of the disk stream (read through the snapshot, so a
// damaged block is an error here, not a guess).
Table ReadTable(const Snapshot& s) {
  if (!s.HasStream(StreamId::kDisk)) return disk::PartitionTable{};
  auto read = [&s](uint64_t off, void* buf, size_t len) {
    return s.Read(StreamId::kDisk, off, buf, len);
  };
  return disk::ReadPartitionTable(read, s.StreamSize(StreamId::kDisk));
}

std::string FsText(const disk::Filesystem& fs) {
  if (fs.type.empty()) return "-";
  return fs.label.empty() ? fs.type : fs.type + " \"" + fs.label + "\"";
}

void PrintTableText(const Table& table) {
  if (!table.ok()) {
    std::printf("partitions:  unreadable: %s\n", table.status().ToString().c_str());
    return;
  }
  const disk::PartitionTable& t = *table;
  if (t.scheme == "none") {
    std::printf("partitions:  none (whole disk: %s)\n", FsText(t.whole_disk).c_str());
    return;
  }
  std::printf("partitions:  %s, %u-byte sectors%s%s\n", t.scheme == "gpt" ? "GPT" : "MBR",
              t.sector_size, t.disk_guid.empty() ? "" : ", disk GUID ", t.disk_guid.c_str());
  for (const std::string& p : t.problems) std::printf("  warning: %s\n", p.c_str());
  std::printf("%s", disk::FormatPartitionList(t, "  ").c_str());
}

std::string JsonOrNull(const std::string& s) { return s.empty() ? "null" : JsonString(s); }

std::string FsJson(const disk::Filesystem& fs) {
  return "\"filesystem\": " + JsonOrNull(fs.type) + ", \"label\": " + JsonOrNull(fs.label);
}

void PrintTableJson(const Table& table) {
  if (!table.ok()) {
    std::printf("  \"partition_table\": {\"error\": %s},\n",
                JsonString(table.status().ToString()).c_str());
    return;
  }
  const disk::PartitionTable& t = *table;
  std::printf("  \"partition_table\": {\"scheme\": \"%s\", \"sector_size\": %u, ", t.scheme.c_str(),
              t.sector_size);
  if (t.scheme == "none") {
    std::printf("%s, \"partitions\": []},\n", FsJson(t.whole_disk).c_str());
    return;
  }
  std::printf("\"disk_guid\": %s, \"gpt_header\": %s,\n    \"problems\": [",
              JsonOrNull(t.disk_guid).c_str(), JsonOrNull(t.gpt_header).c_str());
  for (size_t i = 0; i < t.problems.size(); ++i)
    std::printf("%s%s", i ? ", " : "", JsonString(t.problems[i]).c_str());
  std::printf("],\n    \"partitions\": [");
  for (size_t i = 0; i < t.partitions.size(); ++i) {
    const disk::Partition& p = t.partitions[i];
    std::printf(
        "%s\n      {\"number\": %u, \"start\": %llu, \"size\": %llu, \"type\": %s, "
        "\"type_id\": %s, \"name\": %s, \"bootable\": %s, %s}",
        i ? "," : "", p.number, static_cast<unsigned long long>(p.start),
        static_cast<unsigned long long>(p.size), JsonString(p.type).c_str(),
        JsonString(p.type_id).c_str(), JsonOrNull(p.name).c_str(), p.bootable ? "true" : "false",
        FsJson(p.fs).c_str());
  }
  std::printf("]},\n");
}

// qemu.args holds NUL-terminated arguments; every other value is text.
std::vector<std::string> SplitArgs(const std::string& v) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] == '\0') {
      out.push_back(v.substr(start, i - start));
      start = i + 1;
    }
  }
  if (start < v.size()) out.push_back(v.substr(start));
  return out;
}

// A value for a terminal: bytes outside printable ASCII as \xNN; with
// `quote`, an empty value or one with spaces or quotes in single quotes.
std::string Printable(const std::string& v, bool quote) {
  std::string out;
  bool needs_quotes = quote && (v.empty() || v.find_first_of(" '\"\\") != std::string::npos);
  for (unsigned char c : v) {
    if (c < 0x20 || c >= 0x7f || (needs_quotes && c == '\'')) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return needs_quotes ? "'" + out + "'" : out;
}

void PrintMetadataText(const format::Metadata& m) {
  if (m.empty()) {
    std::printf("metadata:    none\n");
    return;
  }
  bool first = true;
  for (const auto& [key, value] : m) {
    std::string shown;
    if (key == format::kMetaQemuArgs) {
      for (const std::string& a : SplitArgs(value))
        shown += (shown.empty() ? "" : " ") + Printable(a, true);
    } else {
      shown = Printable(value, false);
    }
    std::printf("%s%s = %s\n", first ? "metadata:    " : "             ", key.c_str(),
                shown.c_str());
    first = false;
  }
}

void PrintMetadataJson(const format::Metadata& m) {
  std::printf("  \"metadata\": {");
  bool first = true;
  for (const auto& [key, value] : m) {
    std::printf("%s\n    %s: ", first ? "" : ",", JsonString(key).c_str());
    first = false;
    if (key != format::kMetaQemuArgs) {
      std::printf("%s", JsonString(value).c_str());
      continue;
    }
    std::printf("[");
    const std::vector<std::string> args = SplitArgs(value);
    for (size_t i = 0; i < args.size(); ++i)
      std::printf("%s%s", i ? ", " : "", JsonString(args[i]).c_str());
    std::printf("]");
  }
  std::printf("%s},\n", first ? "" : "\n  ");
}

void PrintText(const Snapshot& s, const Table* table) {
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
  PrintMetadataText(s.metadata());
  if (table != nullptr) PrintTableText(*table);
}

void PrintJson(const Snapshot& s, const Table* table) {
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
  std::printf("],\n");
  PrintMetadataJson(s.metadata());
  if (table != nullptr) PrintTableJson(*table);
  std::printf("  \"streams\": {\n");
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
  auto remote = std::make_shared<RemoteFlags>();
  cmd->add_option("SNAP", *path, "Snapshot file or URL")->required();
  cmd->add_flag("--json", *json, "Machine-readable output");
  remote->Add(cmd);
  cmd->callback([rc, path, json, remote] {
    auto snap = OpenSnapshotChain(*path, remote->OpenOptions());
    if (!snap.ok() && snap.status().code() != base::Code::kUnavailable) {
      // A thin snapshot whose parent chain is broken: still show the file
      // itself (it says which parent it needs), then fail. (Not after a
      // server that did not answer in time: it would be waited for again.)
      format::OpenOptions alone = remote->OpenOptions();
      alone.skip_parents = true;
      auto self = Snapshot::Open(*path, alone);
      if (self.ok() && !(*self)->parent_path().empty()) {
        if (*json) {
          PrintJson(**self, nullptr);
        } else {
          PrintText(**self, nullptr);
        }
      }
    }
    if (!snap.ok()) {
      *rc = Fail(snap.status());
      return;
    }
    Table table = ReadTable(**snap);
    if (*json) {
      PrintJson(**snap, &table);
    } else {
      PrintText(**snap, &table);
    }
    *rc = 0;
  });
}

}  // namespace hexz::cli
