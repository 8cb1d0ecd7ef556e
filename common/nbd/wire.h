// Byte-level helpers shared by the NBD server and client: big-endian field
// packing and whole-message socket I/O with deadlines.
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

inline void Put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline void Put32(uint8_t* p, uint32_t v) {
  Put16(p, static_cast<uint16_t>(v >> 16));
  Put16(p + 2, static_cast<uint16_t>(v));
}
inline void Put64(uint8_t* p, uint64_t v) {
  Put32(p, static_cast<uint32_t>(v >> 32));
  Put32(p + 4, static_cast<uint32_t>(v));
}
inline uint16_t Get16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
inline uint32_t Get32(const uint8_t* p) {
  return (static_cast<uint32_t>(Get16(p)) << 16) | Get16(p + 2);
}
inline uint64_t Get64(const uint8_t* p) {
  return (static_cast<uint64_t>(Get32(p)) << 32) | Get32(p + 4);
}

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
// Makes fd non-blocking.
base::Status SetNonBlocking(int fd);

}  // namespace hexz::nbd
