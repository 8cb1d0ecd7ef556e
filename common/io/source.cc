#include "common/io/source.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <utility>

#include "common/base/path.h"
#include "common/io/file.h"

namespace hexz::io {

Status Source::ReadFreshAt(void*, size_t, uint64_t) const {
  return Status::Unsupported(name() + ": has no copy to read past");
}

namespace {

class FileSourceImpl final : public Source {
 public:
  FileSourceImpl(UniqueFd fd, std::string name, uint64_t size, std::string identity)
      : fd_(std::move(fd)), name_(std::move(name)), size_(size), identity_(std::move(identity)) {}
  const std::string& name() const override { return name_; }
  uint64_t size() const override { return size_; }
  Status ReadAt(void* buf, size_t len, uint64_t offset) const override {
    return PreadFull(fd_.get(), buf, len, offset, name_);
  }
  int fd() const override { return fd_.get(); }
  std::string identity() const override { return identity_; }

 private:
  UniqueFd fd_;
  std::string name_;
  uint64_t size_;
  std::string identity_;
};

}  // namespace

Result<std::unique_ptr<Source>> FileSource(UniqueFd fd, std::string name) {
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return Status::FromErrno(errno, name);
  if (S_ISDIR(st.st_mode))
    return Status::InvalidArgument(name + ": is a directory, not a snapshot");
  HEXZ_ASSIGN_OR_RETURN(uint64_t size, FileSize(fd.get(), name));
  std::string identity = "file:" + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  return std::unique_ptr<Source>(
      std::make_unique<FileSourceImpl>(std::move(fd), std::move(name), size, std::move(identity)));
}

}  // namespace hexz::io

namespace hexz::io {

Result<std::unique_ptr<Source>> SourceOpener::Open(const std::string& location) const {
  HEXZ_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(location, O_RDONLY | O_NONBLOCK));
  return FileSource(std::move(fd), location);
}

Result<std::string> SourceOpener::ResolveParent(const std::string& child,
                                                const std::string& parent_path) const {
  return base::ResolveBeside(child, parent_path);
}

const SourceOpener& LocalOpener() {
  static const SourceOpener opener;
  return opener;
}

}  // namespace hexz::io
