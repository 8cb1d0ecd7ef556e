#include "common/ipc/channel.h"

#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/base/endian.h"

namespace hexz::ipc {

namespace {

// Reads exactly len bytes; `eof_ok_at_start` tells whether EOF before any byte
// is a clean close.
Status ReadExact(int sock, uint8_t* buf, size_t len, const char* what) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = ::recv(sock, buf + done, len - done, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, std::string("ipc: reading ") + what);
    }
    if (n == 0) {
      return Status::Corruption("ipc: truncated message: end of channel after " +
                                std::to_string(done) + " of " + std::to_string(len) + " bytes of " +
                                what);
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

}  // namespace

Status Send(int sock, uint32_t type, const std::vector<uint8_t>& payload,
            const std::vector<int>& fds) {
  if (payload.size() > kMaxPayload) {
    return Status::InvalidArgument("ipc: message of type " + std::to_string(type) + " is " +
                                   std::to_string(payload.size()) + " bytes, over the limit of " +
                                   std::to_string(kMaxPayload));
  }
  if (fds.size() > kMaxFds) {
    return Status::InvalidArgument("ipc: message carries " + std::to_string(fds.size()) +
                                   " descriptors, over the limit of " + std::to_string(kMaxFds));
  }
  std::vector<uint8_t> buf(kHeaderSize + payload.size());
  base::PutLe32(&buf[0], kMagic);
  base::PutLe32(&buf[4], type);
  base::PutLe32(&buf[8], static_cast<uint32_t>(payload.size()));
  base::PutLe32(&buf[12], static_cast<uint32_t>(fds.size()));
  std::copy(payload.begin(), payload.end(), buf.begin() + kHeaderSize);

  std::vector<char> control(fds.empty() ? 0 : CMSG_SPACE(sizeof(int) * fds.size()));
  size_t sent = 0;
  bool first = true;
  while (sent < buf.size()) {
    struct iovec iov = {buf.data() + sent, buf.size() - sent};
    struct msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (first && !fds.empty()) {
      msg.msg_control = control.data();
      msg.msg_controllen = control.size();
      struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "ipc: sending message of type " + std::to_string(type));
    }
    first = false;
    sent += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Result<Message> Receive(int sock, std::initializer_list<uint32_t> allowed) {
  uint8_t header[kHeaderSize];
  std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxFds));
  Message out;
  size_t got = 0;
  for (;;) {
    struct iovec iov = {header, kHeaderSize};
    struct msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    ssize_t n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "ipc: receiving a message");
    }
    // Take ownership of whatever descriptors arrived, before any check.
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        out.fds.emplace_back(fd);
      }
    }
    if (msg.msg_flags & MSG_CTRUNC) {
      return Status::Corruption("ipc: message carries more than " + std::to_string(kMaxFds) +
                                " descriptors");
    }
    if (n == 0) return Status::NotFound("ipc: peer closed the channel");
    got = static_cast<size_t>(n);
    break;
  }
  if (got < kHeaderSize) {
    HEXZ_RETURN_IF_ERROR(ReadExact(sock, header + got, kHeaderSize - got, "message header"));
  }
  if (base::GetLe32(header) != kMagic) return Status::Corruption("ipc: bad message magic");
  out.type = base::GetLe32(header + 4);
  uint32_t length = base::GetLe32(header + 8);
  uint32_t fd_count = base::GetLe32(header + 12);
  if (std::find(allowed.begin(), allowed.end(), out.type) == allowed.end()) {
    return Status::Corruption("ipc: unexpected message type " + std::to_string(out.type));
  }
  if (length > kMaxPayload) {
    return Status::Corruption("ipc: message of " + std::to_string(length) +
                              " bytes exceeds the limit of " + std::to_string(kMaxPayload));
  }
  if (fd_count != out.fds.size()) {
    return Status::Corruption("ipc: message announces " + std::to_string(fd_count) +
                              " descriptors but carries " + std::to_string(out.fds.size()));
  }
  out.payload.resize(length);
  if (length > 0) HEXZ_RETURN_IF_ERROR(ReadExact(sock, out.payload.data(), length, "payload"));
  return out;
}

void Encoder::U32(uint32_t v) {
  uint8_t b[4];
  base::PutLe32(b, v);
  bytes_.insert(bytes_.end(), b, b + 4);
}

void Encoder::U64(uint64_t v) {
  U32(static_cast<uint32_t>(v));
  U32(static_cast<uint32_t>(v >> 32));
}

void Encoder::Str(std::string_view s) {
  U32(static_cast<uint32_t>(s.size()));
  bytes_.insert(bytes_.end(), s.begin(), s.end());
}

Status Decoder::Need(size_t n) const {
  if (bytes_.size() - pos_ < n) {
    return Status::Corruption("ipc: payload too short: need " + std::to_string(n) +
                              " bytes at offset " + std::to_string(pos_) + " of " +
                              std::to_string(bytes_.size()));
  }
  return Status::Ok();
}

Result<uint8_t> Decoder::U8() {
  HEXZ_RETURN_IF_ERROR(Need(1));
  return bytes_[pos_++];
}

Result<bool> Decoder::Bool() {
  HEXZ_ASSIGN_OR_RETURN(uint8_t v, U8());
  if (v > 1) return Status::Corruption("ipc: boolean field holds " + std::to_string(v));
  return v == 1;
}

Result<uint32_t> Decoder::U32() {
  HEXZ_RETURN_IF_ERROR(Need(4));
  uint32_t v = base::GetLe32(&bytes_[pos_]);
  pos_ += 4;
  return v;
}

Result<uint64_t> Decoder::U64() {
  HEXZ_ASSIGN_OR_RETURN(uint32_t lo, U32());
  HEXZ_ASSIGN_OR_RETURN(uint32_t hi, U32());
  return static_cast<uint64_t>(hi) << 32 | lo;
}

Result<std::string> Decoder::Str(uint32_t max_len) {
  HEXZ_ASSIGN_OR_RETURN(uint32_t len, U32());
  if (len > max_len) {
    return Status::Corruption("ipc: string of " + std::to_string(len) +
                              " bytes exceeds its limit of " + std::to_string(max_len));
  }
  HEXZ_RETURN_IF_ERROR(Need(len));
  std::string s(reinterpret_cast<const char*>(&bytes_[pos_]), len);
  pos_ += len;
  return s;
}

Status Decoder::Finish() const {
  if (pos_ != bytes_.size()) {
    return Status::Corruption("ipc: " + std::to_string(bytes_.size() - pos_) +
                              " unexpected trailing bytes in payload");
  }
  return Status::Ok();
}

}  // namespace hexz::ipc
