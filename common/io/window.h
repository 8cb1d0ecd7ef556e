// WindowVolume: a byte range [start, start + size) of another Volume, shown
// as a Volume of its own (a partition of a disk: `hexz mount --partitions`).
//
// Offsets are translated by `start`; every request is checked to lie within
// the window first, so nothing reaches the underlying volume outside it: a
// read past the end fails with OutOfRange, a write (or zeroing, or trim) that
// ends past the end fails as a whole with NoSpace. Writes are passed on only
// when the window was made writable and the underlying volume is writable.
//
// Ownership: borrows the underlying volume, which must outlive the window
// (hexz-fused keeps the disk and its partition files in one VolumeFs).
// Thread safety: as the underlying volume's (the window has no state of its
// own after construction).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "common/io/volume.h"

namespace hexz::io {

class WindowVolume : public Volume {
 public:
  // The range must lie within `base` (checked by the caller; Create checks).
  WindowVolume(Volume* base, uint64_t start, uint64_t size, bool writable);

  // The window, or InvalidArgument when the range does not lie within `base`.
  static base::Result<std::unique_ptr<WindowVolume>> Create(Volume* base, uint64_t start,
                                                            uint64_t size, bool writable);

  uint64_t Size() const override { return size_; }
  uint32_t BlockSize() const override { return base_->BlockSize(); }
  bool Writable() const override { return writable_; }
  uint64_t start() const { return start_; }

  base::Status Read(uint64_t offset, void* buf, size_t len) override;
  base::Status Write(uint64_t offset, const void* buf, size_t len, bool fua) override;
  base::Status WriteZeroes(uint64_t offset, uint64_t len, bool fua) override;
  base::Status Trim(uint64_t offset, uint64_t len) override;
  base::Status Flush() override;
  base::Status Extents(uint64_t offset, uint64_t len, std::vector<Extent>* out) override;

 private:
  // Ok when [offset, offset + len) lies within the window (and, for a write,
  // the window is writable); else ReadOnly, NoSpace (write) or OutOfRange.
  base::Status CheckRange(uint64_t offset, uint64_t len, bool write) const;

  Volume* const base_;
  const uint64_t start_;
  const uint64_t size_;
  const bool writable_;
};

}  // namespace hexz::io
