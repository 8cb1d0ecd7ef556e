// IndexSpill: see index_spill.h.
#include "common/format/index_spill.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "common/io/file.h"

namespace hexz::format {

namespace L = layout;
using base::Status;

base::Result<base::UniqueFd> CreateUnlinkedTemp(const std::string& dir, const std::string& what) {
  int fd = open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    std::string tmpl = dir + "/.hexz-temp-XXXXXX";
    fd = mkostemp(tmpl.data(), O_CLOEXEC);
    if (fd >= 0) unlink(tmpl.c_str());
  }
  if (fd < 0) return Status::FromErrno(errno, what + ": cannot create a temp file in " + dir);
  return base::UniqueFd(fd);
}

IndexSpill::IndexSpill(std::string dir, std::string name, size_t buffer_bytes)
    : dir_(std::move(dir)),
      name_(std::move(name)),
      capacity_(std::max<size_t>(buffer_bytes / L::kEntrySize, 1) * L::kEntrySize),
      written_hash_(std::make_unique<L::Hasher>()) {}

IndexSpill::~IndexSpill() = default;

Status IndexSpill::Append(const L::Entry& e) {
  if (buf_.size() + L::kEntrySize > capacity_) HEXZ_RETURN_IF_ERROR(Spill());
  if (buf_.capacity() < capacity_) buf_.reserve(capacity_);
  buf_.resize(buf_.size() + L::kEntrySize);
  L::EncodeEntry(e, buf_.data() + buf_.size() - L::kEntrySize);
  ++count_;
  return Status::Ok();
}

Status IndexSpill::Spill() {
  if (!fd_.valid()) {
    HEXZ_ASSIGN_OR_RETURN(fd_, CreateUnlinkedTemp(dir_, name_ + ": the index"));
  }
  HEXZ_RETURN_IF_ERROR(io::PwriteFull(fd_.get(), buf_.data(), buf_.size(), spilled_,
                                      name_ + ": temp file of the index"));
  written_hash_->Update(buf_.data(), buf_.size());
  spilled_ += buf_.size();
  buf_.clear();
  return Status::Ok();
}

Status IndexSpill::ForEachPiece(const std::function<Status(const uint8_t*, size_t)>& piece) {
  if (spilled_ > 0) {
    std::vector<uint8_t> in(capacity_);
    L::Hasher read_hash;
    for (uint64_t pos = 0; pos < spilled_;) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(capacity_, spilled_ - pos));
      HEXZ_RETURN_IF_ERROR(
          io::PreadFull(fd_.get(), in.data(), n, pos, name_ + ": temp file of the index"));
      read_hash.Update(in.data(), n);
      HEXZ_RETURN_IF_ERROR(piece(in.data(), n));
      pos += n;
    }
    if (read_hash.Digest() != written_hash_->Digest()) {
      return Status::Corruption(name_ + ": the temp file of the index in " + dir_ +
                                " changed between writing and reading it back");
    }
  }
  if (buf_.empty()) return Status::Ok();
  return piece(buf_.data(), buf_.size());
}

}  // namespace hexz::format
