#include "common/io/window.h"

#include <algorithm>
#include <memory>
#include <string>

#include "common/base/checked_math.h"

namespace hexz::io {

using base::Result;
using base::Status;

WindowVolume::WindowVolume(Volume* base, uint64_t start, uint64_t size, bool writable)
    : base_(base), start_(start), size_(size), writable_(writable && base->Writable()) {}

Result<std::unique_ptr<WindowVolume>> WindowVolume::Create(Volume* base, uint64_t start,
                                                           uint64_t size, bool writable) {
  if (base == nullptr || !base::RangeWithin<uint64_t>(start, size, base->Size())) {
    return Status::InvalidArgument("window [" + std::to_string(start) + ", +" +
                                   std::to_string(size) + ") does not lie within the volume");
  }
  return std::make_unique<WindowVolume>(base, start, size, writable);
}

Status WindowVolume::CheckRange(uint64_t offset, uint64_t len, bool write) const {
  if (write && !writable_) return Status::ReadOnly("the window is read-only");
  if (base::RangeWithin<uint64_t>(offset, len, size_)) return Status::Ok();
  std::string what = std::to_string(len) + " bytes at offset " + std::to_string(offset) +
                     " end past the window's " + std::to_string(size_) + " bytes";
  return write ? Status::NoSpace(what) : Status::OutOfRange(what);
}

Status WindowVolume::Read(uint64_t offset, void* buf, size_t len) {
  HEXZ_RETURN_IF_ERROR(CheckRange(offset, len, /*write=*/false));
  return base_->Read(start_ + offset, buf, len);
}

Status WindowVolume::Write(uint64_t offset, const void* buf, size_t len, bool fua) {
  HEXZ_RETURN_IF_ERROR(CheckRange(offset, len, /*write=*/true));
  return base_->Write(start_ + offset, buf, len, fua);
}

Status WindowVolume::WriteZeroes(uint64_t offset, uint64_t len, bool fua) {
  HEXZ_RETURN_IF_ERROR(CheckRange(offset, len, /*write=*/true));
  return base_->WriteZeroes(start_ + offset, len, fua);
}

Status WindowVolume::Trim(uint64_t offset, uint64_t len) {
  HEXZ_RETURN_IF_ERROR(CheckRange(offset, len, /*write=*/true));
  return base_->Trim(start_ + offset, len);
}

Status WindowVolume::Flush() { return writable_ ? base_->Flush() : Status::Ok(); }

Status WindowVolume::Extents(uint64_t offset, uint64_t len, std::vector<Extent>* out) {
  HEXZ_RETURN_IF_ERROR(CheckRange(offset, len, /*write=*/false));
  size_t first = out->size();
  HEXZ_RETURN_IF_ERROR(base_->Extents(start_ + offset, len, out));
  // Back into the window's offsets, clipped to the range asked for.
  size_t kept = first;
  for (size_t i = first; i < out->size(); ++i) {
    Extent e = (*out)[i];
    uint64_t begin = std::max(e.offset, start_ + offset);
    uint64_t end = std::min(e.offset + e.length, start_ + offset + len);
    if (begin >= end) continue;
    e.offset = begin - start_;
    e.length = end - begin;
    (*out)[kept++] = e;
  }
  out->resize(kept);
  return Status::Ok();
}

}  // namespace hexz::io
