// MemVolume: the in-memory io::Volume the unit tests serve, overlay and
// mount. It holds its bytes in a vector, is read-only unless constructed
// writable, and counts its calls so a test can check what reached it.
//
// Extents: by default one data extent (io::Volume's default); with
// set_hole_from(off), everything from `off` on is reported as a zero hole
// (the bytes there should be zero for that to be true).
//
// Ownership: owns its bytes. Thread safety: every method may be called
// concurrently (a shared mutex guards the bytes; the counters are atomic);
// the hooks and set_hole_from are set before the volume is shared.
#pragma once

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <shared_mutex>
#include <vector>

#include "common/base/checked_math.h"
#include "common/base/status.h"
#include "common/io/volume.h"

namespace hexz::testing {

class MemVolume : public io::Volume {
 public:
  explicit MemVolume(std::vector<uint8_t> bytes, uint32_t block_size = 4096, bool writable = false)
      : bytes_(std::move(bytes)), block_size_(block_size), writable_(writable) {
    hole_from_ = bytes_.size();
  }

  uint64_t Size() const override { return bytes_.size(); }
  uint32_t BlockSize() const override { return block_size_; }
  bool Writable() const override { return writable_; }

  base::Status Read(uint64_t offset, void* buf, size_t len) override {
    if (!base::RangeWithin<uint64_t>(offset, len, bytes_.size())) {
      return base::Status::OutOfRange("memory volume: read beyond the end");
    }
    ++reads;
    if (on_read) on_read(offset, len);
    std::shared_lock lock(mu_);
    std::memcpy(buf, bytes_.data() + offset, len);
    return base::Status::Ok();
  }
  base::Status Write(uint64_t offset, const void* buf, size_t len, bool fua) override {
    if (!writable_) return io::Volume::Write(offset, buf, len, fua);
    if (!base::RangeWithin<uint64_t>(offset, len, bytes_.size())) {
      return base::Status::NoSpace("memory volume: write past the end");
    }
    std::unique_lock lock(mu_);
    std::memcpy(bytes_.data() + offset, buf, len);
    ++writes;
    if (fua) ++fua_writes;
    return base::Status::Ok();
  }
  base::Status WriteZeroes(uint64_t offset, uint64_t len, bool fua) override {
    if (!writable_) return io::Volume::WriteZeroes(offset, len, fua);
    if (!base::RangeWithin<uint64_t>(offset, len, bytes_.size())) {
      return base::Status::NoSpace("memory volume: zeroes past the end");
    }
    std::unique_lock lock(mu_);
    std::memset(bytes_.data() + offset, 0, len);
    return base::Status::Ok();
  }
  base::Status Trim(uint64_t offset, uint64_t len) override {
    if (!writable_) return io::Volume::Trim(offset, len);
    return WriteZeroes(offset, len, false);
  }
  base::Status Flush() override {
    ++flushes;
    if (fail_flush) return base::Status::FromErrno(EIO, "memory volume: flush");
    return base::Status::Ok();
  }
  base::Status Extents(uint64_t offset, uint64_t len, std::vector<io::Extent>* out) override {
    if (hole_from_ >= bytes_.size()) return io::Volume::Extents(offset, len, out);
    const uint64_t end = offset + len;
    if (offset < hole_from_) out->push_back({offset, std::min(end, hole_from_) - offset});
    if (end > hole_from_) {
      uint64_t start = std::max(offset, hole_from_);
      out->push_back({start, end - start, /*zero=*/true, /*hole=*/true});
    }
    return base::Status::Ok();
  }

  // Reports [offset, Size()) as a zero hole. Call before sharing the volume.
  void set_hole_from(uint64_t offset) { hole_from_ = offset; }
  // A copy of the bytes as they are now.
  std::vector<uint8_t> Contents() const {
    std::shared_lock lock(mu_);
    return bytes_;
  }

  std::atomic<int> reads{0};
  std::atomic<int> writes{0};
  std::atomic<int> fua_writes{0};
  std::atomic<int> flushes{0};
  std::atomic<bool> fail_flush{false};  // Flush() fails with EIO
  // Called by every Read (concurrently, before it copies). Set it before
  // sharing the volume.
  std::function<void(uint64_t offset, size_t len)> on_read;

 private:
  mutable std::shared_mutex mu_;
  std::vector<uint8_t> bytes_;  // guarded by mu_ (the size never changes)
  uint32_t block_size_;
  bool writable_;
  uint64_t hole_from_;
};

}  // namespace hexz::testing
