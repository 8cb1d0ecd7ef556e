#include "common/nbd/wire.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "common/base/endian.h"
#include "common/nbd/protocol.h"

namespace hexz::nbd {

using base::Status;

Clock::time_point DeadlineIn(uint32_t ms) {
  if (ms == 0) return kNoDeadline;
  return Clock::now() + std::chrono::milliseconds(ms);
}

uint32_t NbdErrno(const Status& s, uint16_t cmd_flags) {
  switch (s.ToErrno()) {
    case 0:
      return 0;
    case EPERM:
    case EROFS:
    case EACCES:
      return kEperm;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
      return kEnospc;
    case ENOMEM:
      return kEnomem;
    case EINVAL:
      return kEinval;
    case ESHUTDOWN:
      return kEshutdown;
    case EOPNOTSUPP:  // == ENOTSUP on Linux
      return (cmd_flags & kCmdFlagFastZero) ? kEnotsup : kEinval;
    case EOVERFLOW:
      return (cmd_flags & kCmdFlagDf) ? kEoverflow : kEinval;
    default:
      return kEio;
  }
}

Builder& Builder::U16(uint16_t v) {
  uint8_t b[2];
  base::PutBe16(b, v);
  buf_.append(reinterpret_cast<const char*>(b), sizeof b);
  return *this;
}
Builder& Builder::U32(uint32_t v) {
  uint8_t b[4];
  base::PutBe32(b, v);
  buf_.append(reinterpret_cast<const char*>(b), sizeof b);
  return *this;
}
Builder& Builder::U64(uint64_t v) {
  uint8_t b[8];
  base::PutBe64(b, v);
  buf_.append(reinterpret_cast<const char*>(b), sizeof b);
  return *this;
}
Builder& Builder::Bytes(std::string_view s) {
  buf_.append(s);
  return *this;
}

Status WaitFor(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    int timeout = -1;
    if (deadline != kNoDeadline) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return Status::Cancelled("nbd: timed out waiting for the peer");
      timeout = static_cast<int>(std::min<int64_t>(left.count(), 60 * 1000));
    }
    struct pollfd p = {fd, events, 0};
    int n = ::poll(&p, 1, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "nbd: poll");
    }
    if (n > 0) return Status::Ok();  // readable, writable, or an error to surface
  }
}

Status ReadExact(int fd, void* buf, size_t len, Clock::time_point deadline) {
  auto* p = static_cast<uint8_t*>(buf);
  while (len > 0) {
    ssize_t n = ::read(fd, p, len);
    if (n > 0) {
      p += n;
      len -= static_cast<size_t>(n);
      continue;
    }
    if (n == 0) return Status::IoError("nbd: peer closed the connection", EPIPE);
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return Status::FromErrno(errno, "nbd: read");
    HEXZ_RETURN_IF_ERROR(WaitFor(fd, POLLIN, deadline));
  }
  return Status::Ok();
}

Status Discard(int fd, uint64_t len, Clock::time_point deadline) {
  char buf[16384];
  while (len > 0) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(len, sizeof buf));
    HEXZ_RETURN_IF_ERROR(ReadExact(fd, buf, n, deadline));
    len -= n;
  }
  return Status::Ok();
}

Status WriteExact(int fd, const void* buf, size_t len, Clock::time_point deadline) {
  const auto* p = static_cast<const uint8_t*>(buf);
  bool is_socket = true;
  while (len > 0) {
    ssize_t n = is_socket ? ::send(fd, p, len, MSG_NOSIGNAL) : ::write(fd, p, len);
    if (n >= 0) {
      p += n;
      len -= static_cast<size_t>(n);
      continue;
    }
    if (errno == ENOTSOCK && is_socket) {
      is_socket = false;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return Status::FromErrno(errno, "nbd: write");
    HEXZ_RETURN_IF_ERROR(WaitFor(fd, POLLOUT, deadline));
  }
  return Status::Ok();
}

Status SetNonBlocking(int fd) {
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0 || ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
    return Status::FromErrno(errno, "nbd: fcntl O_NONBLOCK");
  }
  return Status::Ok();
}

}  // namespace hexz::nbd
