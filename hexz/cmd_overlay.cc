// hexz overlay info: what an overlay of a --rw mount changes.
#include <cstdio>
#include <string>

#include "common/base/size.h"
#include "common/overlay/overlay_files.h"
#include "hexz/commands.h"

namespace hexz::cli {
namespace {

using base::Status;

Status Info(const std::string& path, bool json) {
  HEXZ_ASSIGN_OR_RETURN(overlay::OverlayFiles files,
                        overlay::OpenOverlayFiles(path, overlay::LockMode::kShared, false));
  overlay::OverlayOptions ro;
  ro.read_only = true;
  HEXZ_ASSIGN_OR_RETURN(
      auto ov,
      overlay::Overlay::OpenAnyBase(std::move(files.data), std::move(files.meta), files.names, ro));
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
}

}  // namespace hexz::cli
