#include "common/io/volume.h"

namespace hexz::io {

using base::Status;

Status Volume::Write(uint64_t, const void*, size_t, bool) {
  return Status::ReadOnly("volume is read-only");
}
Status Volume::WriteZeroes(uint64_t, uint64_t, bool) {
  return Status::ReadOnly("volume is read-only");
}
Status Volume::Trim(uint64_t, uint64_t) { return Status::ReadOnly("volume is read-only"); }
Status Volume::Flush() { return Status::Ok(); }

Status Volume::Extents(uint64_t offset, uint64_t len, std::vector<Extent>* out) {
  out->push_back(Extent{offset, len, false, false});
  return Status::Ok();
}

}  // namespace hexz::io
