#include "common/io/file.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "common/base/path.h"

namespace hexz::io {

Status PreadFull(int fd, void* buf, size_t len, uint64_t offset, std::string_view what) {
  auto* p = static_cast<char*>(buf);
  while (len > 0) {
    ssize_t n = ::pread(fd, p, len, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, std::string("read failed on ") + std::string(what));
    }
    if (n == 0) {
      return Status::Corruption(std::string(what) + ": unexpected end of file at offset " +
                                std::to_string(offset) + " (file truncated?)");
    }
    p += n;
    len -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

Status PwriteFull(int fd, const void* buf, size_t len, uint64_t offset, std::string_view what) {
  const auto* p = static_cast<const char*>(buf);
  while (len > 0) {
    ssize_t n = ::pwrite(fd, p, len, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, std::string("write failed on ") + std::string(what));
    }
    p += n;
    len -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

Result<bool> CopyFileRange(int in_fd, uint64_t in_off, int out_fd, uint64_t out_off, uint64_t len,
                           std::string_view what) {
  bool first = true;
  while (len > 0) {
    auto in = static_cast<off_t>(in_off);
    auto out = static_cast<off_t>(out_off);
    ssize_t n = ::copy_file_range(in_fd, &in, out_fd, &out, len, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (first && (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP || errno == EINVAL ||
                    errno == EBADF || errno == EPERM)) {
        return false;
      }
      return Status::FromErrno(errno, std::string("copy failed to ") + std::string(what));
    }
    if (n == 0) {
      return Status::Corruption(std::string(what) +
                                ": unexpected end of file of the copy's source");
    }
    first = false;
    in_off += static_cast<uint64_t>(n);
    out_off += static_cast<uint64_t>(n);
    len -= static_cast<uint64_t>(n);
  }
  return true;
}

Status WriteFull(int fd, const void* buf, size_t len, std::string_view what) {
  const auto* p = static_cast<const char*>(buf);
  while (len > 0) {
    ssize_t n = ::write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, std::string("write failed on ") + std::string(what));
    }
    p += n;
    len -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

Result<size_t> ReadUpTo(int fd, void* buf, size_t len, std::string_view what) {
  auto* p = static_cast<char*>(buf);
  size_t done = 0;
  while (done < len) {
    ssize_t n = ::read(fd, p + done, len - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, std::string("read failed on ") + std::string(what));
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

Result<UniqueFd> OpenFile(const std::string& path, int flags, mode_t mode) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) return Status::FromErrno(errno, path);
  return UniqueFd(fd);
}

Result<uint64_t> FileSize(int fd, std::string_view what) {
  struct stat st;
  if (::fstat(fd, &st) != 0)
    return Status::FromErrno(errno, std::string("stat ") + std::string(what));
  if (S_ISREG(st.st_mode)) return static_cast<uint64_t>(st.st_size);
  if (S_ISBLK(st.st_mode)) {
    uint64_t size = 0;
    if (::ioctl(fd, BLKGETSIZE64, &size) != 0) {
      return Status::FromErrno(errno, std::string("size of block device ") + std::string(what));
    }
    return size;
  }
  return Status::InvalidArgument(std::string(what) + ": not a regular file or block device");
}

Status Fsync(int fd, std::string_view what) {
  if (::fsync(fd) != 0) return Status::FromErrno(errno, std::string("fsync ") + std::string(what));
  return Status::Ok();
}

Status Fdatasync(int fd, std::string_view what) {
  while (::fdatasync(fd) != 0) {
    if (errno == EINTR) continue;
    return Status::FromErrno(errno, std::string("fdatasync failed on ") + std::string(what));
  }
  return Status::Ok();
}

Status FsyncParentDir(const std::string& path) {
  const std::string dir = base::DirName(path);
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "open directory " + dir);
  Status s = Fsync(fd, dir);
  ::close(fd);
  return s;
}

bool HoleScanner::IsHole(uint64_t pos, uint64_t len) {
  if (sparse_ && pos >= zero_until_ && pos >= data_until_) {
    off_t d = ::lseek(fd_, static_cast<off_t>(pos), SEEK_DATA);
    if (d < 0) {
      if (errno == ENXIO) {
        zero_until_ = size_;
      } else {
        sparse_ = false;
      }
    } else if (static_cast<uint64_t>(d) > pos) {
      zero_until_ = static_cast<uint64_t>(d);
    } else {
      off_t hole = ::lseek(fd_, static_cast<off_t>(pos), SEEK_HOLE);
      data_until_ = hole < 0 ? size_ : static_cast<uint64_t>(hole);
      if (data_until_ <= pos) data_until_ = pos + len;
    }
  }
  return sparse_ && pos + len <= zero_until_;
}

}  // namespace hexz::io
