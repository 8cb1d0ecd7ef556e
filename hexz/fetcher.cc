#include "hexz/fetcher.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/base/fd.h"
#include "common/base/log.h"
#include "common/format/layout.h"
#include "common/io/source.h"
#include "common/ipc/channel.h"
#include "common/ipc/fetch_protocol.h"
#include "common/remote/disk_cache.h"
#include "common/sandbox/sandbox.h"

namespace hexz::cli {

namespace {

using base::Result;
using base::Status;
using base::UniqueFd;

// The fetcher's start-up report to the front-end (over its own socketpair).
enum : uint32_t { kFetcherReady = 1, kFetcherError = 2 };

Status RecvExactly(int fd, void* buf, size_t len, bool* eof_at_start) {
  auto* p = static_cast<uint8_t*>(buf);
  size_t got = 0;
  while (got < len) {
    ssize_t n = recv(fd, p + got, len - got, 0);
    if (n == 0) {
      if (got == 0 && eof_at_start) *eof_at_start = true;
      return Status::IoError("the worker closed the channel", EPIPE);
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "fetcher: receiving a request");
    }
    got += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status SendExactly(int fd, const void* buf, size_t len) {
  const auto* p = static_cast<const uint8_t*>(buf);
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "fetcher: answering");
    }
    p += n;
    len -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

// Answers the requests of one channel until the worker closes it (or sends
// something malformed, which ends the channel).
void ServeChannel(int fd, const std::vector<std::unique_ptr<io::Source>>& sources,
                  const std::vector<uint64_t>& sizes) {
  std::vector<uint8_t> buf;
  for (;;) {
    uint8_t raw[ipc::kFetchRequestSize];
    bool eof = false;
    Status st = RecvExactly(fd, raw, sizeof raw, &eof);
    if (eof) return;
    if (!st.ok()) {
      HEXZ_LOG_ERROR("%s", st.ToString().c_str());
      return;
    }
    auto request = ipc::DecodeFetchRequest(raw, sizes);
    if (!request.ok()) {
      HEXZ_LOG_ERROR("closing a channel: %s", request.status().ToString().c_str());
      return;
    }
    buf.resize(request->length);
    const io::Source& source = *sources[request->file];
    // kFetchFresh: the worker found the cached bytes damaged; a source
    // without a cache reads the server anyway.
    st = (request->flags & ipc::kFetchFresh) != 0 && source.has_fresh_read()
             ? source.ReadFreshAt(buf.data(), request->length, request->offset)
             : source.ReadAt(buf.data(), request->length, request->offset);
    ipc::FetchReplyHeader header;
    std::string message;
    if (st.ok()) {
      header.length = request->length;
    } else {
      HEXZ_LOG_ERROR("%s", st.ToString().c_str());
      message = st.message().substr(0, ipc::kMaxFetchMessage);
      header.code = static_cast<uint32_t>(st.code());
      header.sys_errno = static_cast<uint32_t>(std::clamp(st.sys_errno(), 0, 4095));
      header.length = static_cast<uint32_t>(message.size());
    }
    uint8_t head[ipc::kFetchReplyHeaderSize];
    ipc::EncodeFetchReplyHeader(header, head);
    st = SendExactly(fd, head, sizeof head);
    if (st.ok())
      st = SendExactly(
          fd, header.code == 0 ? buf.data() : reinterpret_cast<const uint8_t*>(message.data()),
          header.length);
    if (!st.ok()) return;  // the worker is gone
  }
}

// Entries of the disk cache are keyed by the snapshot id the front-end read;
// the object this fetcher opened must still carry it, or a snapshot that
// replaced it between the two opens would be read through the old entries.
// One small request per file; the worker checks the header again.
Status CheckSnapshotId(const io::Source& source, const format::SnapshotId& id) {
  namespace layout = format::layout;
  uint8_t raw[layout::kHeaderSize];
  if (source.size() < sizeof raw) return Status::Corruption(source.name() + ": too short");
  HEXZ_RETURN_IF_ERROR(source.ReadAt(raw, sizeof raw, 0));
  if (layout::HeaderChecksumOk(raw, sizeof raw)) {
    auto header = layout::DecodeHeader(raw);
    if (header.ok() && header->id == id.bytes) return Status::Ok();
  }
  return Status::IoError(source.name() +
                             ": the object changed since it was opened (another snapshot); "
                             "open it again to read the new version",
                         ESTALE);
}

// A chain to fetch: each file's location and snapshot id, and the disk cache
// (or none).
struct FetchPlan {
  std::vector<std::string> locations;
  std::vector<format::SnapshotId> ids;
  UniqueFd disk_cache;
};

// The fetcher process: opens the chain, reports, locks down, serves.
int RunFetcher(FetchPlan plan, const remote::Options& options, int status_fd,
               std::vector<UniqueFd> channels) {
  remote::Opener opener(options);
  std::vector<std::unique_ptr<io::Source>> sources;
  std::vector<uint64_t> sizes;
  Status st;
  std::unique_ptr<remote::DiskCache> cache;
  if (plan.disk_cache) {
    auto opened = remote::DiskCache::FromFd(std::move(plan.disk_cache));
    if (opened.ok()) cache = std::move(*opened);
    if (!opened.ok()) st = opened.status();
  }
  for (size_t i = 0; i < plan.locations.size() && st.ok(); ++i) {
    auto source = opener.Open(plan.locations[i]);
    if (!source.ok()) {
      st = source.status();
      break;
    }
    sizes.push_back((*source)->size());
    if (cache != nullptr) {
      st = CheckSnapshotId(**source, plan.ids[i]);
      if (!st.ok()) break;
      *source = std::make_unique<remote::CachedSource>(std::move(*source), cache.get(),
                                                       plan.ids[i].bytes);
    }
    sources.push_back(std::move(*source));
  }
  if (st.ok()) {
    sandbox::Policy policy;
    policy.network = true;
    st = sandbox::LockDown(policy);
    if (!st.ok()) st = st.WithContext("fetcher");
  }
  ipc::Encoder e;
  if (!st.ok()) {
    e.U32(static_cast<uint32_t>(st.code()));
    e.U32(static_cast<uint32_t>(st.sys_errno()));
    e.Str(st.message().substr(0, 4096));
    (void)ipc::Send(status_fd, kFetcherError, e.bytes());
    return 1;
  }
  e.U32(static_cast<uint32_t>(sizes.size()));
  for (uint64_t size : sizes) e.U64(size);
  if (!ipc::Send(status_fd, kFetcherReady, e.bytes()).ok()) return 1;
  close(status_fd);
  std::vector<std::thread> threads;
  for (const UniqueFd& channel : channels) {
    threads.emplace_back(ServeChannel, channel.get(), std::cref(sources), std::cref(sizes));
  }
  for (std::thread& t : threads) t.join();
  return 0;
}

// Blanks the command line the fetcher inherited (the user's `hexz mount URL
// ...`, whose URL may carry a pre-signed query) in place, as setproctitle
// does, so that /proc/PID/cmdline shows "hexz-fetch" only. Only when the
// memory at argv[0] is exactly what the kernel shows as the command line.
void BlankCommandLine() {
  UniqueFd fd(open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC));
  if (!fd) return;
  std::string shown;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd.get(), buf, sizeof buf)) > 0) shown.append(buf, static_cast<size_t>(n));
  char* start = program_invocation_name;
  if (start == nullptr || shown.size() < 2 || std::memcmp(start, shown.data(), shown.size()) != 0) {
    return;
  }
  std::memset(start, 0, shown.size());
  const char name[] = "hexz-fetch";
  std::memcpy(start, name, std::min(sizeof name - 1, shown.size() - 1));
}

// In the forked child: its own session and name, a blank command line, stdio on /dev/null and the
// log, every other inherited descriptor closed, default signals.
void BecomeFetcher(int devnull, int log_fd, bool daemon_log, std::vector<int> keep) {
  setsid();
  prctl(PR_SET_NAME, "hexz-fetch", 0, 0, 0);
  BlankCommandLine();
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGCHLD}) signal(sig, SIG_DFL);
  signal(SIGPIPE, SIG_IGN);
  dup2(devnull, STDIN_FILENO);
  dup2(devnull, STDOUT_FILENO);
  if (log_fd >= 0) dup2(log_fd, STDERR_FILENO);
  keep.push_back(STDERR_FILENO);
  std::sort(keep.begin(), keep.end());
  int from = STDERR_FILENO + 1;
  for (int fd : keep) {
    if (fd >= from) {
      if (fd > from) close_range(static_cast<unsigned>(from), static_cast<unsigned>(fd - 1), 0);
      from = fd + 1;
    }
  }
  close_range(static_cast<unsigned>(from), ~0u, 0);
  base::SetLogProgram("hexz-fetch");
  if (daemon_log) base::SetLogFd(STDERR_FILENO, true);
}

Result<std::vector<uint64_t>> ReceiveFetcherReport(int fd, size_t files) {
  auto m = ipc::Receive(fd, {kFetcherReady, kFetcherError});
  if (!m.ok()) {
    if (m.status().code() == base::Code::kNotFound) {
      return Status::Internal("the fetcher exited without reporting (see its log or stderr)");
    }
    return m.status();
  }
  ipc::Decoder d(m->payload);
  if (m->type == kFetcherError) {
    HEXZ_ASSIGN_OR_RETURN(uint32_t code, d.U32());
    HEXZ_ASSIGN_OR_RETURN(uint32_t err, d.U32());
    HEXZ_ASSIGN_OR_RETURN(std::string message, d.Str(4096));
    if (code == 0 || code > static_cast<uint32_t>(base::Code::kInternal)) {
      code = static_cast<uint32_t>(base::Code::kInternal);
    }
    return Status(static_cast<base::Code>(code), message, static_cast<int>(err));
  }
  HEXZ_ASSIGN_OR_RETURN(uint32_t count, d.U32());
  if (count != files) return Status::Internal("the fetcher reported another chain length");
  std::vector<uint64_t> sizes;
  for (uint32_t i = 0; i < count; ++i) {
    HEXZ_ASSIGN_OR_RETURN(uint64_t size, d.U64());
    sizes.push_back(size);
  }
  HEXZ_RETURN_IF_ERROR(d.Finish());
  return sizes;
}

// Forks the fetcher for `locations`; returns the worker's ends of its
// channels and the files' sizes.
Status StartFetcher(FetchPlan plan, const remote::Options& options, int log_fd, bool daemon_log,
                    ipc::WorkerConfig* config) {
  const size_t files = plan.locations.size();
  int status_pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, status_pair) != 0) {
    return Status::FromErrno(errno, "fetcher: socketpair");
  }
  UniqueFd status_ours(status_pair[0]), status_theirs(status_pair[1]);
  std::vector<UniqueFd> worker_ends, fetcher_ends;
  for (int i = 0; i < kFetcherChannels; ++i) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      return Status::FromErrno(errno, "fetcher: socketpair");
    }
    worker_ends.emplace_back(sv[0]);
    fetcher_ends.emplace_back(sv[1]);
  }
  UniqueFd devnull(open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!devnull) return Status::FromErrno(errno, "/dev/null");
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid < 0) return Status::FromErrno(errno, "fetcher: fork");
  if (pid == 0) {
    std::vector<int> keep = {status_theirs.get()};
    for (const UniqueFd& fd : fetcher_ends) keep.push_back(fd.get());
    if (plan.disk_cache) keep.push_back(plan.disk_cache.get());
    BecomeFetcher(devnull.get(), log_fd, daemon_log, keep);
    _exit(RunFetcher(std::move(plan), options, status_theirs.get(), std::move(fetcher_ends)));
  }
  status_theirs.reset();
  fetcher_ends.clear();
  plan.disk_cache.reset();
  auto sizes = ReceiveFetcherReport(status_ours.get(), files);
  if (!sizes.ok()) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    return sizes.status();
  }
  config->chain_sizes = std::move(*sizes);
  config->fetch_timeout = options.timeout_seconds + 15;
  config->fetcher_fds = std::move(worker_ends);
  return Status::Ok();
}

}  // namespace

Status AttachChain(const std::string& location, const format::Snapshot& snapshot,
                   const remote::Options& options, int log_fd, bool daemon_log,
                   ipc::WorkerConfig* config) {
  config->chain_names = snapshot.ChainNames();
  if (!remote::IsUrl(location)) {
    if (!options.disk_cache.empty()) {
      return Status::InvalidArgument("--disk-cache is for a snapshot read from a URL, not " +
                                     location);
    }
    HEXZ_ASSIGN_OR_RETURN(config->chain_fds, snapshot.DupChainFds());
    return Status::Ok();
  }
  // Where each file of the chain lives, resolved as Snapshot::Open did.
  remote::Opener opener(options);
  FetchPlan plan;
  plan.locations = {location};
  plan.ids = {snapshot.id()};
  for (const format::Snapshot* s = &snapshot; s->parent() != nullptr; s = s->parent().get()) {
    HEXZ_ASSIGN_OR_RETURN(std::string parent,
                          opener.ResolveParent(plan.locations.back(), s->parent_path()));
    plan.locations.push_back(std::move(parent));
    plan.ids.push_back(s->parent()->id());
  }
  if (plan.locations.size() != config->chain_names.size()) {
    return Status::Internal("the chain's locations and names differ in number");
  }
  // The cache file is opened here, as the user; the fetcher gets only its
  // descriptor and can open nothing for writing.
  if (!options.disk_cache.empty()) {
    HEXZ_ASSIGN_OR_RETURN(plan.disk_cache, remote::DiskCache::OpenFile(options.disk_cache));
  }
  return StartFetcher(std::move(plan), options, log_fd, daemon_log, config);
}

}  // namespace hexz::cli
