// Whole-buffer file I/O that retries EINTR and short transfers.
//
// Every function returns a Status naming `what` (usually the path) on failure.
// A read that hits end-of-file early returns kCorruption ("unexpected end of
// file"), since hexz only reads ranges it was told exist. Thread-safe: these
// use pread/pwrite and keep no state.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/base/fd.h"
#include "common/base/status.h"

namespace hexz::io {

using base::Result;
using base::Status;
using base::UniqueFd;

Status PreadFull(int fd, void* buf, size_t len, uint64_t offset, std::string_view what);
Status PwriteFull(int fd, const void* buf, size_t len, uint64_t offset, std::string_view what);
// Copies len bytes from in_fd at in_off to out_fd at out_off inside the
// kernel (copy_file_range: a reflink or a server-side copy where the file
// system offers one). Returns false, having copied nothing, when the kernel
// or file system cannot (the caller then reads and writes); an I/O error
// names `what`.
Result<bool> CopyFileRange(int in_fd, uint64_t in_off, int out_fd, uint64_t out_off, uint64_t len,
                           std::string_view what);
Status WriteFull(int fd, const void* buf, size_t len, std::string_view what);
// Reads up to len bytes; returns how many (less only at end of file).
Result<size_t> ReadUpTo(int fd, void* buf, size_t len, std::string_view what);

Result<UniqueFd> OpenFile(const std::string& path, int flags, mode_t mode = 0);
Result<uint64_t> FileSize(int fd, std::string_view what);  // regular file or block device
Status Fsync(int fd, std::string_view what);
// fdatasync(2): the data (and the size) durable, other metadata maybe not.
Status Fdatasync(int fd, std::string_view what);
// fsync of the directory that holds `path`, so a rename or create is durable.
Status FsyncParentDir(const std::string& path);

// Tells which ranges of a file of `size` bytes are holes (SEEK_DATA /
// SEEK_HOLE), asking the kernel about each extent once, for a reader that
// moves forward through the file. Where the file system cannot say, nothing
// is a hole. Borrows the fd; one thread at a time.
class HoleScanner {
 public:
  HoleScanner(int fd, uint64_t size) : fd_(fd), size_(size) {}
  // True when [pos, pos + len) is known to read as zeros without storage.
  bool IsHole(uint64_t pos, uint64_t len);

 private:
  int fd_;
  uint64_t size_;
  bool sparse_ = true;
  uint64_t zero_until_ = 0;  // [pos, zero_until_) is known to be a hole
  uint64_t data_until_ = 0;  // [pos, data_until_) is known to be data
};

}  // namespace hexz::io
