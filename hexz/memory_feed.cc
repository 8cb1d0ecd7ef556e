#include "hexz/memory_feed.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "hexz/cli_checks.h"

namespace hexz::cli {

using base::Result;
using base::Status;
using base::UniqueFd;
using format::StreamId;

Result<UniqueFd> MemoryFeed::Prepare() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return Status::FromErrno(errno, "socketpair");
  socket_.reset(sv[0]);
  return UniqueFd(sv[1]);
}

void MemoryFeed::Start(std::shared_ptr<const format::Snapshot> snapshot, const std::string& name) {
  snapshot_ = std::move(snapshot);
  name_ = name;
  thread_ = std::thread([this] { Run(); });
}

void MemoryFeed::Run() {
  const uint64_t size = snapshot_->StreamSize(StreamId::kMemory);
  const uint64_t chunk = std::max<uint64_t>(snapshot_->block_size(), 1u << 20);
  std::vector<uint8_t> buf(chunk);
  for (uint64_t pos = 0; pos < size;) {
    const uint64_t n = std::min(chunk, size - pos);
    if (Status st = snapshot_->Read(StreamId::kMemory, pos, buf.data(), n); !st.ok()) {
      status_ = NameChain(snapshot_->ChainNames(), st);
      break;
    }
    for (uint64_t off = 0; off < n;) {
      // MSG_NOSIGNAL: QEMU gone is an error here, not a SIGPIPE.
      ssize_t w = ::send(socket_.get(), buf.data() + off, n - off, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        status_ = Status::FromErrno(errno, name_ + ": QEMU stopped reading the memory stream at " +
                                               std::to_string(pos + off) + " of " +
                                               std::to_string(size) + " bytes");
        break;
      }
      off += static_cast<uint64_t>(w);
      sent_.fetch_add(static_cast<uint64_t>(w), std::memory_order_relaxed);
    }
    if (!status_.ok()) break;
    pos += n;
  }
  ::shutdown(socket_.get(), SHUT_WR);  // the end of the stream
}

Status MemoryFeed::Finish(bool abort) {
  if (!thread_.joinable()) return status_;
  if (abort) ::shutdown(socket_.get(), SHUT_RDWR);  // a blocked send returns
  thread_.join();
  socket_.reset();
  return status_;
}

}  // namespace hexz::cli
