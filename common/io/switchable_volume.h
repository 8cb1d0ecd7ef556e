// SwitchableVolume: a Volume whose volume underneath can be replaced while
// it is served. `hexz vm snapshot --continue` uses it to move a running
// guest's disk to a fresh overlay at the pause (hexz-fused/nbd_mode.cc).
//
// Every request holds a shared lock for its duration; Switch() takes the lock
// exclusively, so it waits for the requests in flight (which finish on the
// old volume), and requests that arrive meanwhile wait and then go to the new
// one. A request never sees half of each.
//
// Ownership: shares ownership of the current volume; the volumes it replaced
// live on while something else holds them. Thread safety: every method may
// be called concurrently (io::Volume's contract), Switch too.
#pragma once

#include <functional>
#include <memory>
#include <shared_mutex>

#include "common/io/volume.h"

namespace hexz::io {

class SwitchableVolume final : public Volume {
 public:
  explicit SwitchableVolume(std::shared_ptr<Volume> initial);

  // Fixed by the initial volume: every later one has the same.
  uint64_t Size() const override { return size_; }
  uint32_t BlockSize() const override { return block_size_; }
  bool Writable() const override { return writable_; }

  base::Status Read(uint64_t offset, void* buf, size_t len) override;
  base::Status Write(uint64_t offset, const void* buf, size_t len, bool fua) override;
  base::Status WriteZeroes(uint64_t offset, uint64_t len, bool fua) override;
  base::Status Trim(uint64_t offset, uint64_t len) override;
  base::Status Flush() override;
  base::Status Extents(uint64_t offset, uint64_t len, std::vector<Extent>* out) override;

  std::shared_ptr<Volume> current() const;

  // With no request in flight (new ones wait), calls `make` with the current
  // volume and serves the volume it returns from then on. An error from
  // `make`, or a volume whose size, block size or writability differs
  // (kInvalidArgument), keeps the current volume. `make` must not call into
  // this volume.
  using Maker =
      std::function<base::Result<std::shared_ptr<Volume>>(const std::shared_ptr<Volume>&)>;
  base::Status Switch(const Maker& make);

 private:
  const uint64_t size_;
  const uint32_t block_size_;
  const bool writable_;
  mutable std::shared_mutex mu_;
  std::shared_ptr<Volume> current_;  // guarded by mu_
};

}  // namespace hexz::io
