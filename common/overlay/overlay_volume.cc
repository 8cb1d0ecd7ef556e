#include "common/overlay/overlay_volume.h"

#include <algorithm>
#include <cstring>
#include <mutex>

#include "common/base/checked_math.h"

namespace hexz::overlay {
namespace {

// Walks the 4 KiB blocks that [offset, end) touches, each clipped to the
// range as [lo, hi). `state(block, lo, hi)` says where a block's bytes are
// (and may serve the overlay's own). Consecutive base pieces are merged and
// handed to `base_run(lo, hi)` once; every other piece goes to
// `other(state, lo, hi)`, in order, after the base run before it.
template <typename StateFn, typename BaseRunFn, typename OtherFn>
Status WalkBlocks(uint64_t offset, uint64_t end, StateFn state, BaseRunFn base_run, OtherFn other) {
  uint64_t run_lo = 0, run_hi = 0;
  auto flush_run = [&]() -> Status {
    Status st = run_hi > run_lo ? base_run(run_lo, run_hi) : Status::Ok();
    run_lo = run_hi = 0;
    return st;
  };
  for (uint64_t b = offset / kBlockSize; b * kBlockSize < end; ++b) {
    const uint64_t blk = b * kBlockSize;
    const uint64_t lo = std::max(offset, blk);
    const uint64_t hi = std::min(end, blk + kBlockSize);
    HEXZ_ASSIGN_OR_RETURN(BlockState s, state(b, lo, hi));
    if (s == BlockState::kBase) {
      if (run_hi != lo) {
        HEXZ_RETURN_IF_ERROR(flush_run());
        run_lo = lo;
      }
      run_hi = hi;
      continue;
    }
    HEXZ_RETURN_IF_ERROR(flush_run());
    HEXZ_RETURN_IF_ERROR(other(s, lo, hi));
  }
  return flush_run();
}

}  // namespace

Result<std::unique_ptr<OverlayVolume>> OverlayVolume::Create(std::shared_ptr<io::Volume> base,
                                                             std::shared_ptr<Overlay> overlay) {
  if (base->Size() != overlay->disk_size()) {
    return Status::InvalidArgument("overlay " + overlay->names().data + " covers a disk of " +
                                   std::to_string(overlay->disk_size()) +
                                   " bytes, but the disk of " + overlay->names().base + " has " +
                                   std::to_string(base->Size()));
  }
  return std::unique_ptr<OverlayVolume>(new OverlayVolume(std::move(base), std::move(overlay)));
}

Result<std::unique_ptr<OverlayVolume>> OpenOverlayVolume(
    const std::shared_ptr<const format::Snapshot>& snapshot, UniqueFd data, UniqueFd meta,
    OverlayNames names, bool ephemeral) {
  if (!snapshot->HasStream(format::StreamId::kDisk)) {
    return Status::InvalidArgument(snapshot->path() + ": has no disk stream");
  }
  OverlayOptions options;
  options.durable = !ephemeral;
  if (names.base.empty()) names.base = snapshot->path();
  HEXZ_ASSIGN_OR_RETURN(
      std::unique_ptr<Overlay> ov,
      Overlay::OpenOrCreate(std::move(data), std::move(meta), std::move(names), snapshot->id(),
                            snapshot->StreamSize(format::StreamId::kDisk), options));
  return OverlayVolume::Create(format::Snapshot::StreamVolume(snapshot, format::StreamId::kDisk),
                               std::shared_ptr<Overlay>(std::move(ov)));
}

Status FoldOverlay(const Overlay& upper, Overlay* lower) {
  if (upper.disk_size() != lower->disk_size()) {
    return Status::InvalidArgument(upper.names().data + " and " + lower->names().data +
                                   " are overlays of disks of different sizes");
  }
  constexpr uint64_t kChunk = 4096;  // blocks asked at once whether anything changed
  std::vector<uint8_t> buf(kBlockSize);
  for (uint64_t first = 0; first < upper.block_count(); first += kChunk) {
    const uint64_t end = std::min(upper.block_count(), first + kChunk);
    if (!upper.AnyChanged(first, end - first)) continue;
    for (uint64_t b = first; b < end; ++b) {
      HEXZ_ASSIGN_OR_RETURN(BlockState state, upper.ReadBlock(b, buf.data()));
      if (state == BlockState::kData) HEXZ_RETURN_IF_ERROR(lower->WriteBlock(b, buf.data()));
      if (state == BlockState::kZero) HEXZ_RETURN_IF_ERROR(lower->ZeroBlock(b));
    }
  }
  return lower->Flush();
}

Status OverlayVolume::CheckRange(uint64_t offset, uint64_t len, const char* op) const {
  if (!base::RangeWithin(offset, len, Size())) {
    return Status::NoSpace(std::string(op) + " of " + std::to_string(len) + " bytes at offset " +
                           std::to_string(offset) + " ends past the end of the disk (" +
                           std::to_string(Size()) + " bytes; its size is fixed)");
  }
  return Status::Ok();
}

Status OverlayVolume::Read(uint64_t offset, void* buf, size_t len) {
  if (!base::RangeWithin<uint64_t>(offset, len, Size())) {
    return Status::OutOfRange("read of " + std::to_string(len) + " bytes at offset " +
                              std::to_string(offset) + " is past the end of the disk (" +
                              std::to_string(Size()) + " bytes)");
  }
  if (len == 0) return Status::Ok();
  auto* out = static_cast<uint8_t*>(buf);
  const uint64_t end = offset + len;
  // A run of base blocks is read from the base in one call: the base never
  // changes, so it needs no lock (a write racing with it only adds the block
  // to the overlay, and the reader returns the old bytes).
  uint8_t tmp[kBlockSize];
  return WalkBlocks(
      offset, end,
      [&](uint64_t b, uint64_t lo, uint64_t hi) -> Result<BlockState> {
        const uint64_t blk = b * kBlockSize;
        uint8_t* dst = out + (lo - offset);
        const bool whole = lo == blk && hi == blk + kBlockSize;
        std::shared_lock<std::shared_mutex> lock(Stripe(b));
        HEXZ_ASSIGN_OR_RETURN(BlockState state, overlay_->ReadBlock(b, whole ? dst : tmp));
        if (state == BlockState::kData && !whole) std::memcpy(dst, tmp + (lo - blk), hi - lo);
        return state;
      },
      [&](uint64_t lo, uint64_t hi) { return base_->Read(lo, out + (lo - offset), hi - lo); },
      [&](BlockState state, uint64_t lo, uint64_t hi) {
        if (state == BlockState::kZero) std::memset(out + (lo - offset), 0, hi - lo);
        return Status::Ok();
      });
}

Status OverlayVolume::ReadCurrent(uint64_t block, uint8_t* out) {
  HEXZ_ASSIGN_OR_RETURN(BlockState state, overlay_->ReadBlock(block, out));
  if (state == BlockState::kData) return Status::Ok();
  std::memset(out, 0, kBlockSize);
  if (state == BlockState::kZero) return Status::Ok();
  const uint64_t blk = block * kBlockSize;
  return base_->Read(blk, out, std::min<uint64_t>(kBlockSize, Size() - blk));
}

Status OverlayVolume::Apply(Op op, uint64_t offset, uint64_t len, const uint8_t* src) {
  const uint64_t end = offset + len;
  const uint64_t size = Size();
  uint8_t tmp[kBlockSize];
  for (uint64_t b = offset / kBlockSize; b * kBlockSize < end; ++b) {
    const uint64_t blk = b * kBlockSize;
    const uint64_t blk_end = std::min(blk + kBlockSize, size);
    const uint64_t lo = std::max(offset, blk);
    const uint64_t hi = std::min(end, blk_end);
    const bool whole = lo == blk && hi == blk_end;
    if (op == Op::kTrim && !whole) continue;  // trim is advisory
    std::unique_lock<std::shared_mutex> lock(Stripe(b));
    if (op != Op::kWrite && whole) {
      HEXZ_RETURN_IF_ERROR(overlay_->ZeroBlock(b));
      continue;
    }
    if (whole && blk_end == blk + kBlockSize) {
      HEXZ_RETURN_IF_ERROR(overlay_->WriteBlock(b, src + (lo - offset)));
      continue;
    }
    if (whole) {
      std::memset(tmp, 0, kBlockSize);  // the short last block of the disk
    } else {
      HEXZ_RETURN_IF_ERROR(ReadCurrent(b, tmp));
    }
    if (op == Op::kWrite) {
      std::memcpy(tmp + (lo - blk), src + (lo - offset), hi - lo);
    } else {
      std::memset(tmp + (lo - blk), 0, hi - lo);
    }
    HEXZ_RETURN_IF_ERROR(overlay_->WriteBlock(b, tmp));
  }
  return Status::Ok();
}

Status OverlayVolume::Write(uint64_t offset, const void* buf, size_t len, bool fua) {
  HEXZ_RETURN_IF_ERROR(CheckRange(offset, len, "write"));
  HEXZ_RETURN_IF_ERROR(Apply(Op::kWrite, offset, len, static_cast<const uint8_t*>(buf)));
  return fua ? Flush() : Status::Ok();
}

Status OverlayVolume::WriteZeroes(uint64_t offset, uint64_t len, bool fua) {
  HEXZ_RETURN_IF_ERROR(CheckRange(offset, len, "write of zeroes"));
  HEXZ_RETURN_IF_ERROR(Apply(Op::kZero, offset, len, nullptr));
  return fua ? Flush() : Status::Ok();
}

Status OverlayVolume::Trim(uint64_t offset, uint64_t len) {
  HEXZ_RETURN_IF_ERROR(CheckRange(offset, len, "trim"));
  return Apply(Op::kTrim, offset, len, nullptr);
}

Status OverlayVolume::Flush() { return overlay_->Flush(); }

Status OverlayVolume::Extents(uint64_t offset, uint64_t len, std::vector<io::Extent>* out) {
  if (!base::RangeWithin(offset, len, Size()) || len == 0) {
    return Status::OutOfRange("block status of " + std::to_string(len) + " bytes at offset " +
                              std::to_string(offset) + " is outside the disk (" +
                              std::to_string(Size()) + " bytes)");
  }
  len = std::min<uint64_t>(len, uint64_t{1} << 30);
  const uint64_t end = offset + len;
  auto add = [out](io::Extent e) {
    if (!out->empty()) {
      io::Extent& last = out->back();
      if (last.offset + last.length == e.offset && last.zero == e.zero && last.hole == e.hole) {
        last.length += e.length;
        return;
      }
    }
    out->push_back(e);
  };
  // A run of base blocks asks the base once.
  auto base_run = [&](uint64_t run_lo, uint64_t run_hi) -> Status {
    uint64_t pos = run_lo;
    while (pos < run_hi) {
      std::vector<io::Extent> base_ext;
      HEXZ_RETURN_IF_ERROR(base_->Extents(pos, run_hi - pos, &base_ext));
      if (base_ext.empty() || base_ext.front().offset != pos) break;
      for (io::Extent e : base_ext) {
        if (e.offset >= run_hi || e.length == 0) break;
        e.length = std::min(e.length, run_hi - e.offset);
        add(e);
        pos = e.offset + e.length;
      }
    }
    return Status::Ok();
  };
  return WalkBlocks(
      offset, end,
      [&](uint64_t b, uint64_t, uint64_t) -> Result<BlockState> { return overlay_->State(b); },
      base_run,
      [&](BlockState state, uint64_t lo, uint64_t hi) {
        const bool zero = state == BlockState::kZero;
        add(io::Extent{lo, hi - lo, zero, zero});
        return Status::Ok();
      });
}

}  // namespace hexz::overlay
