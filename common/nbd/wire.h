// Byte-level helpers shared by the NBD server and client: building messages
// of big-endian fields (base/endian.h), whole-message socket I/O with
// deadlines, and the NBD error a Status becomes on the wire.
//
// The descriptor passed to ReadExact/WriteExact must be non-blocking (both
// helpers poll). A deadline of kNoDeadline waits forever; otherwise the call
// fails with kCancelled ("timed out") once the monotonic clock passes it.
// Thread safety: stateless; one reader and one writer may use a socket at once.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/base/status.h"

namespace hexz::nbd {

using Clock = std::chrono::steady_clock;
inline constexpr Clock::time_point kNoDeadline = Clock::time_point::max();

// Deadline `ms` milliseconds from now (0 = none).
Clock::time_point DeadlineIn(uint32_t ms);

// The NBD error value (protocol.h: kEperm, kEio, ...) for a failed request,
// derived from s.ToErrno() alone, as nbdkit derives every reply error from
// the errno (its nbd_errno): EPERM, EROFS and EACCES become kEperm; ENOSPC,
// EDQUOT and EFBIG kEnospc; ENOMEM kEnomem; EINVAL kEinval; ESHUTDOWN
// kEshutdown; ENOTSUP kEnotsup for a FAST_ZERO request and kEinval otherwise;
// EOVERFLOW kEoverflow for a DF read and kEinval otherwise; anything else
// (corruption, I/O errors) kEio. `cmd_flags` are the request's flags.
uint32_t NbdErrno(const base::Status& s, uint16_t cmd_flags);

// Appends big-endian fields to a byte string (for building messages).
class Builder {
 public:
  Builder& U16(uint16_t v);
  Builder& U32(uint32_t v);
  Builder& U64(uint64_t v);
  Builder& Bytes(std::string_view s);
  const std::string& data() const { return buf_; }
  size_t size() const { return buf_.size(); }

 private:
  std::string buf_;
};

// Reads exactly len bytes. End of stream before that is kIoError ("peer closed").
base::Status ReadExact(int fd, void* buf, size_t len, Clock::time_point deadline);
// Reads and throws away len bytes.
base::Status Discard(int fd, uint64_t len, Clock::time_point deadline);
// Writes exactly len bytes (never raises SIGPIPE).
base::Status WriteExact(int fd, const void* buf, size_t len, Clock::time_point deadline);
inline base::Status WriteExact(int fd, std::string_view s, Clock::time_point deadline) {
  return WriteExact(fd, s.data(), s.size(), deadline);
}
// Waits until fd is ready for `events` (POLLIN, POLLOUT) or has an error to
// report; kCancelled ("timed out") once the deadline passes.
base::Status WaitFor(int fd, short events, Clock::time_point deadline);
// Makes fd non-blocking.
base::Status SetNonBlocking(int fd);

}  // namespace hexz::nbd
