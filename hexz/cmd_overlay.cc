// hexz overlay info: what an overlay of a --rw mount changes.
// hexz overlay verify: checks every log record and every stored block.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "common/base/size.h"
#include "common/overlay/overlay_files.h"
#include "hexz/commands.h"

namespace hexz::cli {
namespace {

using base::Result;
using base::Status;

// Opens an overlay of any base for reading, sharing its lock with readers.
Result<std::unique_ptr<overlay::Overlay>> OpenReadOnly(const std::string& path) {
  HEXZ_ASSIGN_OR_RETURN(overlay::OverlayFiles files,
                        overlay::OpenOverlayFiles(path, overlay::LockMode::kShared, false));
  overlay::OverlayOptions ro;
  ro.read_only = true;
  return overlay::Overlay::OpenAnyBase(std::move(files.data), std::move(files.meta), files.names,
                                       ro);
}

Status Info(const std::string& path, bool json) {
  HEXZ_ASSIGN_OR_RETURN(auto ov, OpenReadOnly(path));
  overlay::OverlayStats s = ov->Stats();
  uint64_t blocks = s.data_blocks + s.zero_blocks;
  if (json) {
    std::printf(
        "{\"overlay\": \"%s\", \"base_id\": \"%s\", \"disk_size\": %llu, \"block_size\": %u, "
        "\"changed_blocks\": %llu, \"stored_blocks\": %llu, \"zero_blocks\": %llu, "
        "\"changed_bytes\": %llu, \"data_file_bytes\": %llu, \"meta_file_bytes\": %llu}\n",
        path.c_str(), ov->base_id().ToHex().c_str(),
        static_cast<unsigned long long>(ov->disk_size()), overlay::kBlockSize,
        static_cast<unsigned long long>(blocks), static_cast<unsigned long long>(s.data_blocks),
        static_cast<unsigned long long>(s.zero_blocks),
        static_cast<unsigned long long>(s.changed_bytes),
        static_cast<unsigned long long>(s.data_file_bytes),
        static_cast<unsigned long long>(s.meta_file_bytes));
    return Status::Ok();
  }
  double pct = 100.0 * static_cast<double>(s.changed_bytes) / static_cast<double>(ov->disk_size());
  std::printf("overlay:         %s (+ %s)\n", path.c_str(), overlay::MetaPathFor(path).c_str());
  std::printf("base snapshot:   id %s\n", ov->base_id().ToHex().c_str());
  std::printf("disk size:       %s (%llu bytes)\n", base::FormatSize(ov->disk_size()).c_str(),
              static_cast<unsigned long long>(ov->disk_size()));
  std::printf("changed blocks:  %llu of %llu (4 KiB): %llu stored, %llu zeroed\n",
              static_cast<unsigned long long>(blocks),
              static_cast<unsigned long long>(ov->block_count()),
              static_cast<unsigned long long>(s.data_blocks),
              static_cast<unsigned long long>(s.zero_blocks));
  std::printf("changed bytes:   %s (%llu bytes, %.1f%% of the disk)\n",
              base::FormatSize(s.changed_bytes).c_str(),
              static_cast<unsigned long long>(s.changed_bytes), pct);
  std::printf("files:           %s data, %s meta\n", base::FormatSize(s.data_file_bytes).c_str(),
              base::FormatSize(s.meta_file_bytes).c_str());
  return Status::Ok();
}

// Exit 0: every record and block checks (notes, such as an interrupted
// compaction, are printed). Exit 1: damage, each piece named.
Status Verify(const std::string& path) {
  HEXZ_ASSIGN_OR_RETURN(auto ov, OpenReadOnly(path));
  for (const std::string& p : ov->problems()) std::printf("note: %s\n", p.c_str());
  HEXZ_ASSIGN_OR_RETURN(std::vector<overlay::DamagedBlock> damaged, ov->CheckBlocks(false));
  for (const auto& d : damaged) std::fprintf(stderr, "hexz: %s\n", d.message.c_str());
  overlay::OverlayStats s = ov->Stats();
  if (!damaged.empty()) {
    return Status::Corruption(path + ": " + std::to_string(damaged.size()) + " of " +
                              std::to_string(s.data_blocks) +
                              " stored blocks are damaged (hexz commit --salvage keeps the rest)");
  }
  std::printf(
      "%s: ok (generation %llu, %llu log records, %llu stored and %llu zeroed blocks "
      "checked)\n",
      path.c_str(), static_cast<unsigned long long>(s.generation),
      static_cast<unsigned long long>(s.records), static_cast<unsigned long long>(s.data_blocks),
      static_cast<unsigned long long>(s.zero_blocks));
  return Status::Ok();
}

}  // namespace

void AddOverlayCommand(CLI::App& parent, int* rc) {
  CLI::App* cmd = parent.add_subcommand("overlay", "Inspect the overlay of a read-write mount");
  cmd->require_subcommand(1);
  auto path = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  CLI::App* info =
      cmd->add_subcommand("info", "Show the base id and how many blocks and bytes it changes");
  info->add_option("OVERLAY", *path, "The overlay file (its .meta lies beside it)")->required();
  info->add_flag("--json", *json, "Print one JSON object");
  info->callback([rc, path, json] {
    Status st = Info(*path, *json);
    *rc = st.ok() ? 0 : Fail(st);
  });
  CLI::App* verify = cmd->add_subcommand(
      "verify", "Check every log record and every stored block of an overlay against its checksum");
  verify->add_option("OVERLAY", *path, "The overlay file (its .meta lies beside it)")->required();
  verify->callback([rc, path] {
    Status st = Verify(*path);
    *rc = st.ok() ? 0 : Fail(st);
  });
}

}  // namespace hexz::cli
