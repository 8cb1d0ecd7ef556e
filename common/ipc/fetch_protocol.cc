#include "common/ipc/fetch_protocol.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>

#include "common/base/endian.h"
#include "common/base/log.h"

namespace hexz::ipc {

using base::Result;
using base::Status;
using base::UniqueFd;

void EncodeFetchRequest(const FetchRequest& request, uint8_t out[kFetchRequestSize]) {
  base::PutLe32(out, kFetchRequestMagic);
  base::PutLe32(out + 4, request.file);
  base::PutLe64(out + 8, request.offset);
  base::PutLe32(out + 16, request.length);
  base::PutLe32(out + 20, request.flags);
}

Result<FetchRequest> DecodeFetchRequest(const uint8_t in[kFetchRequestSize],
                                        const std::vector<uint64_t>& sizes) {
  if (base::GetLe32(in) != kFetchRequestMagic)
    return Status::Corruption("fetch: bad request magic");
  FetchRequest r;
  r.flags = base::GetLe32(in + 20);
  if ((r.flags & ~kFetchFresh) != 0)
    return Status::Corruption("fetch: unknown request flags " + std::to_string(r.flags));
  r.file = base::GetLe32(in + 4);
  r.offset = base::GetLe64(in + 8);
  r.length = base::GetLe32(in + 16);
  if (r.file >= sizes.size()) {
    return Status::Corruption("fetch: request for file " + std::to_string(r.file) +
                              " of a chain of " + std::to_string(sizes.size()));
  }
  if (r.length == 0 || r.length > kMaxFetchLength) {
    return Status::Corruption("fetch: request length " + std::to_string(r.length) +
                              " is outside 1.." + std::to_string(kMaxFetchLength));
  }
  if (r.offset > sizes[r.file] || r.length > sizes[r.file] - r.offset) {
    return Status::Corruption("fetch: request [" + std::to_string(r.offset) + ", +" +
                              std::to_string(r.length) + ") ends past the file's " +
                              std::to_string(sizes[r.file]) + " bytes");
  }
  return r;
}

void EncodeFetchReplyHeader(const FetchReplyHeader& header, uint8_t out[kFetchReplyHeaderSize]) {
  base::PutLe32(out, kFetchReplyMagic);
  base::PutLe32(out + 4, header.code);
  base::PutLe32(out + 8, header.sys_errno);
  base::PutLe32(out + 12, header.length);
}

Result<FetchReplyHeader> DecodeFetchReplyHeader(const uint8_t in[kFetchReplyHeaderSize],
                                                const FetchRequest& request) {
  if (base::GetLe32(in) != kFetchReplyMagic) return Status::Corruption("fetch: bad reply magic");
  FetchReplyHeader h;
  h.code = base::GetLe32(in + 4);
  h.sys_errno = base::GetLe32(in + 8);
  h.length = base::GetLe32(in + 12);
  if (h.code > static_cast<uint32_t>(base::Code::kInternal)) {
    return Status::Corruption("fetch: unknown reply code " + std::to_string(h.code));
  }
  if (h.code == 0 && (h.length != request.length || h.sys_errno != 0)) {
    return Status::Corruption("fetch: answer of " + std::to_string(h.length) +
                              " bytes to a request of " + std::to_string(request.length));
  }
  if (h.code != 0 && (h.length > kMaxFetchMessage || h.sys_errno > 4095)) {
    return Status::Corruption("fetch: malformed error reply");
  }
  return h;
}

Status FetchReplyStatus(const FetchReplyHeader& header, const std::string& message) {
  std::string clean = message;
  for (char& c : clean) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  }
  // An errno the kernel would not take back from FUSE or NBD becomes EIO.
  int err =
      header.sys_errno >= 1 && header.sys_errno <= 133 ? static_cast<int>(header.sys_errno) : EIO;
  return Status(static_cast<base::Code>(header.code), std::move(clean), err);
}

namespace {

// Waits until `fd` is readable, up to `deadline`.
Status WaitReadable(int fd, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return Status::IoError("no answer in time", ETIMEDOUT);
    struct pollfd p = {fd, POLLIN, 0};
    int n = poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 60000)));
    if (n > 0) return Status::Ok();
    if (n < 0 && errno != EINTR) return Status::FromErrno(errno, "poll");
  }
}

Status RecvAll(int fd, void* buf, size_t len, std::chrono::steady_clock::time_point deadline) {
  auto* p = static_cast<uint8_t*>(buf);
  while (len > 0) {
    HEXZ_RETURN_IF_ERROR(WaitReadable(fd, deadline));
    ssize_t n = recv(fd, p, len, MSG_DONTWAIT);
    if (n == 0) return Status::IoError("the fetcher closed the channel", EPIPE);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return Status::FromErrno(errno, "receiving from the fetcher");
    }
    p += n;
    len -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status SendAll(int fd, const void* buf, size_t len) {
  const auto* p = static_cast<const uint8_t*>(buf);
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "sending to the fetcher");
    }
    p += n;
    len -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

}  // namespace

FetchClient::FetchClient(std::vector<UniqueFd> channels, uint32_t timeout_seconds)
    : channels_(std::move(channels)), alive_(channels_.size()), timeout_seconds_(timeout_seconds) {
  for (size_t i = 0; i < channels_.size(); ++i) free_.push_back(static_cast<int>(i));
}

int FetchClient::Take() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return !free_.empty() || alive_ == 0; });
  if (free_.empty()) return -1;
  int i = free_.back();
  free_.pop_back();
  return i;
}

void FetchClient::Give(int index, bool broken, const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (broken) {
    channels_[static_cast<size_t>(index)].reset();
    --alive_;
    HEXZ_LOG_ERROR("fetcher channel %d given up (%s); %zu of %zu left%s", index, why.c_str(),
                   alive_, channels_.size(),
                   alive_ == 0 ? ": every read of the remote snapshot now fails with EIO" : "");
  } else {
    free_.push_back(index);
  }
  cv_.notify_all();
}

Status FetchClient::ReadOne(int fd, const FetchRequest& request, const std::string& name, void* buf,
                            bool* broken) {
  *broken = true;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds_);
  uint8_t req[kFetchRequestSize];
  EncodeFetchRequest(request, req);
  HEXZ_RETURN_IF_ERROR(SendAll(fd, req, sizeof req));
  uint8_t head[kFetchReplyHeaderSize];
  HEXZ_RETURN_IF_ERROR(RecvAll(fd, head, sizeof head, deadline));
  HEXZ_ASSIGN_OR_RETURN(FetchReplyHeader h, DecodeFetchReplyHeader(head, request));
  if (h.code == 0) {
    HEXZ_RETURN_IF_ERROR(RecvAll(fd, buf, h.length, deadline));
    *broken = false;
    return Status::Ok();
  }
  std::string message(h.length, '\0');
  HEXZ_RETURN_IF_ERROR(RecvAll(fd, message.data(), h.length, deadline));
  *broken = false;
  if (message.empty()) message = name + ": the fetcher failed the read";
  return FetchReplyStatus(h, message);
}

Status FetchClient::Read(uint32_t file, const std::string& name, void* buf, size_t len,
                         uint64_t offset, uint32_t flags) {
  auto* out = static_cast<uint8_t*>(buf);
  while (len > 0) {
    FetchRequest request;
    request.file = file;
    request.offset = offset;
    request.length = static_cast<uint32_t>(std::min<size_t>(len, kMaxFetchLength));
    request.flags = flags;
    int index = Take();
    if (index < 0) {
      return Status::IoError(name +
                             ": the fetcher process is gone; the remote snapshot cannot be read "
                             "(unmount and mount again)");
    }
    bool broken = false;
    Status st = ReadOne(channels_[static_cast<size_t>(index)].get(), request, name, out, &broken);
    Give(index, broken, st.ToString());
    if (broken) {
      return Status::IoError(name + ": reading through the fetcher: " + st.ToString());
    }
    if (!st.ok()) return st;
    out += request.length;
    offset += request.length;
    len -= request.length;
  }
  return Status::Ok();
}

namespace {

class FetchSourceImpl final : public io::Source {
 public:
  FetchSourceImpl(std::shared_ptr<FetchClient> client, uint32_t file, uint64_t size,
                  std::string name)
      : client_(std::move(client)), file_(file), size_(size), name_(std::move(name)) {}
  const std::string& name() const override { return name_; }
  uint64_t size() const override { return size_; }
  Status ReadAt(void* buf, size_t len, uint64_t offset) const override {
    return client_->Read(file_, name_, buf, len, offset);
  }
  bool has_fresh_read() const override { return true; }
  Status ReadFreshAt(void* buf, size_t len, uint64_t offset) const override {
    return client_->Read(file_, name_, buf, len, offset, kFetchFresh);
  }
  std::string identity() const override { return "fetch:" + std::to_string(file_); }

 private:
  std::shared_ptr<FetchClient> client_;
  uint32_t file_;
  uint64_t size_;
  std::string name_;
};

}  // namespace

std::unique_ptr<io::Source> FetchSource(std::shared_ptr<FetchClient> client, uint32_t file,
                                        uint64_t size, std::string name) {
  return std::make_unique<FetchSourceImpl>(std::move(client), file, size, std::move(name));
}

}  // namespace hexz::ipc
