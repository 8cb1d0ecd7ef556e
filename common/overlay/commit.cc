#include "common/overlay/commit.h"

#include <filesystem>
#include <vector>

#include "common/overlay/overlay_volume.h"

namespace hexz::overlay {

using format::Snapshot;
using format::StreamId;

std::string RelativeParentPath(const std::string& base, const std::string& output) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path out_dir = fs::absolute(fs::path(output), ec).parent_path();
  fs::path rel = fs::relative(fs::absolute(fs::path(base), ec), out_dir, ec);
  if (ec || rel.empty()) return fs::absolute(fs::path(base), ec).string();
  return rel.string();
}

Result<CommitStats> WriteCommit(const std::shared_ptr<const Snapshot>& base,
                                const std::shared_ptr<Overlay>& overlay,
                                format::SnapshotWriter* writer, const std::string& thin_parent_path,
                                bool carry_memory) {
  if (overlay && !(overlay->base_id() == base->id())) {
    return Status::InvalidArgument("overlay " + overlay->names().data + " belongs to snapshot id " +
                                   overlay->base_id().ToHex() + ", but the base " + base->path() +
                                   " has id " + base->id().ToHex());
  }
  if (!base->HasStream(StreamId::kDisk)) {
    return Status::InvalidArgument(base->path() + ": has no disk stream");
  }
  const uint32_t bs = base->block_size();
  if (writer->block_size() != bs || bs % kBlockSize != 0) {
    return Status::InvalidArgument("commit: the output's block size must be the base's (" +
                                   std::to_string(bs) + ")");
  }
  const bool thin = !thin_parent_path.empty();
  if (thin) HEXZ_RETURN_IF_ERROR(writer->SetParent(thin_parent_path, base->id()));

  std::unique_ptr<OverlayVolume> volume;
  if (overlay) {
    HEXZ_ASSIGN_OR_RETURN(
        volume, OverlayVolume::Create(Snapshot::StreamVolume(base, StreamId::kDisk), overlay));
  }
  CommitStats stats;
  const uint64_t size = base->StreamSize(StreamId::kDisk);
  HEXZ_RETURN_IF_ERROR(writer->BeginStream(StreamId::kDisk, size));
  const uint64_t count = base->BlockCount(StreamId::kDisk);
  const uint64_t parts = bs / kBlockSize;
  std::vector<uint8_t> buf(bs);
  format::BlockCopier copier(writer, *base);
  // Unchanged blocks [from, to) of `stream`: referenced (thin) or copied in
  // stored form, a run at a time.
  auto unchanged = [&](StreamId stream, uint64_t from, uint64_t to) -> Status {
    if (from == to) return Status::Ok();
    if (thin) return writer->AddRun(format::BlockKind::kParent, to - from);
    return copier.Copy(stream, from, to);
  };
  uint64_t run_from = 0;
  for (uint64_t b = 0; b < count; ++b) {
    if (!overlay || !overlay->AnyChanged(b * parts, parts)) continue;
    HEXZ_RETURN_IF_ERROR(unchanged(StreamId::kDisk, run_from, b));
    const uint32_t blen = base->BlockLength(StreamId::kDisk, b);
    HEXZ_RETURN_IF_ERROR(volume->Read(b * bs, buf.data(), blen));
    HEXZ_RETURN_IF_ERROR(writer->AddData(buf.data(), blen));
    ++stats.rewritten_blocks;
    run_from = b + 1;
  }
  HEXZ_RETURN_IF_ERROR(unchanged(StreamId::kDisk, run_from, count));
  (thin ? stats.parent_blocks : stats.copied_blocks) = count - stats.rewritten_blocks;
  stats.disk_blocks = count;
  HEXZ_RETURN_IF_ERROR(writer->EndStream());

  if (carry_memory && base->HasStream(StreamId::kMemory)) {
    HEXZ_RETURN_IF_ERROR(
        writer->BeginStream(StreamId::kMemory, base->StreamSize(StreamId::kMemory)));
    const uint64_t mcount = base->BlockCount(StreamId::kMemory);
    HEXZ_RETURN_IF_ERROR(unchanged(StreamId::kMemory, 0, mcount));
    stats.memory_blocks = mcount;
    HEXZ_RETURN_IF_ERROR(writer->EndStream());
  }
  return stats;
}

}  // namespace hexz::overlay
