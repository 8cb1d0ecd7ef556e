// SwitchableVolume: see switchable_volume.h.
#include "common/io/switchable_volume.h"

#include <mutex>
#include <utility>

namespace hexz::io {

using base::Status;

SwitchableVolume::SwitchableVolume(std::shared_ptr<Volume> initial)
    : size_(initial->Size()),
      block_size_(initial->BlockSize()),
      writable_(initial->Writable()),
      current_(std::move(initial)) {}

Status SwitchableVolume::Read(uint64_t offset, void* buf, size_t len) {
  std::shared_lock lock(mu_);
  return current_->Read(offset, buf, len);
}

Status SwitchableVolume::Write(uint64_t offset, const void* buf, size_t len, bool fua) {
  std::shared_lock lock(mu_);
  return current_->Write(offset, buf, len, fua);
}

Status SwitchableVolume::WriteZeroes(uint64_t offset, uint64_t len, bool fua) {
  std::shared_lock lock(mu_);
  return current_->WriteZeroes(offset, len, fua);
}

Status SwitchableVolume::Trim(uint64_t offset, uint64_t len) {
  std::shared_lock lock(mu_);
  return current_->Trim(offset, len);
}

Status SwitchableVolume::Flush() {
  std::shared_lock lock(mu_);
  return current_->Flush();
}

Status SwitchableVolume::Extents(uint64_t offset, uint64_t len, std::vector<Extent>* out) {
  std::shared_lock lock(mu_);
  return current_->Extents(offset, len, out);
}

std::shared_ptr<Volume> SwitchableVolume::current() const {
  std::shared_lock lock(mu_);
  return current_;
}

Status SwitchableVolume::Switch(const Maker& make) {
  std::unique_lock lock(mu_);
  HEXZ_ASSIGN_OR_RETURN(std::shared_ptr<Volume> next, make(current_));
  if (!next || next->Size() != size_ || next->BlockSize() != block_size_ ||
      next->Writable() != writable_) {
    return Status::InvalidArgument(
        "the volume to switch to differs in size, block size or writability");
  }
  current_ = std::move(next);
  return Status::Ok();
}

}  // namespace hexz::io
