// OverlayVolume: the read-write disk of a `--rw` mount.
//
// Combines the read-only disk stream of the base snapshot (any io::Volume)
// with an Overlay. Reads merge the two per 4 KiB block; the first write to a
// block copies the base block into the overlay (read-modify-write for a
// partial block); WriteZeroes and Trim record whole blocks as zero without
// storing data (Trim leaves partial blocks alone, as it may). The size is
// fixed: a write that ends past it fails with kNoSpace (ENOSPC) and writes
// nothing.
//
// Ownership: shares ownership of the base volume and the overlay.
// Thread safety: all methods may be called concurrently (io::Volume's
// contract). Per 4 KiB block, a striped reader/writer lock makes a read
// concurrent with a write see the old or the new bytes of that block.
#pragma once

#include <array>
#include <memory>
#include <shared_mutex>

#include "common/format/snapshot.h"
#include "common/io/volume.h"
#include "common/overlay/overlay.h"

namespace hexz::overlay {

class OverlayVolume : public io::Volume {
 public:
  // Refuses a base whose size differs from the overlay's disk size.
  static Result<std::unique_ptr<OverlayVolume>> Create(std::shared_ptr<io::Volume> base,
                                                       std::shared_ptr<Overlay> overlay);

  uint64_t Size() const override { return overlay_->disk_size(); }
  uint32_t BlockSize() const override { return kBlockSize; }
  bool Writable() const override { return !overlay_->read_only(); }

  Status Read(uint64_t offset, void* buf, size_t len) override;
  Status Write(uint64_t offset, const void* buf, size_t len, bool fua) override;
  Status WriteZeroes(uint64_t offset, uint64_t len, bool fua) override;
  Status Trim(uint64_t offset, uint64_t len) override;
  Status Flush() override;
  // Overlay data blocks are data, overlay zero blocks are zero holes, the
  // rest is described by the base. Covers at most 1 GiB per call.
  Status Extents(uint64_t offset, uint64_t len, std::vector<io::Extent>* out) override;

  Overlay& overlay() { return *overlay_; }

 private:
  static constexpr size_t kStripes = 256;
  OverlayVolume(std::shared_ptr<io::Volume> base, std::shared_ptr<Overlay> overlay)
      : base_(std::move(base)), overlay_(std::move(overlay)) {}

  std::shared_mutex& Stripe(uint64_t block) { return stripes_[block % kStripes]; }
  Status CheckRange(uint64_t offset, uint64_t len, const char* op) const;
  // The current 4 KiB of `block` (zero-padded past the end of the disk).
  // Caller holds the block's stripe.
  Status ReadCurrent(uint64_t block, uint8_t* out);
  enum class Op { kWrite, kZero, kTrim };
  // Applies one operation to [offset, offset+len); src is used for kWrite.
  Status Apply(Op op, uint64_t offset, uint64_t len, const uint8_t* src);

  const std::shared_ptr<io::Volume> base_;
  const std::shared_ptr<Overlay> overlay_;
  std::array<std::shared_mutex, kStripes> stripes_;
};

// The worker's one call for a --rw disk: the disk stream of `snapshot` over
// the overlay in `data`/`meta` (initialized when the data file is empty, else
// opened, which refuses another base). An ephemeral overlay skips fdatasync.
Result<std::unique_ptr<OverlayVolume>> OpenOverlayVolume(
    const std::shared_ptr<const format::Snapshot>& snapshot, UniqueFd data, UniqueFd meta,
    OverlayNames names, bool ephemeral);

// The undo of a switch to a fresh overlay (hexz vm snapshot --continue that
// failed): writes every changed block of `upper` (data and zero blocks) into
// `lower`, then flushes `lower`. Afterwards `lower` alone reads as
// OverlayVolume(upper, base = OverlayVolume(lower, ...)) did. The caller
// makes sure nothing writes to either meanwhile.
Status FoldOverlay(const Overlay& upper, Overlay* lower);

}  // namespace hexz::overlay
