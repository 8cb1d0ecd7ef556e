#include "hexz-fused/serve.h"

#include "common/cache/worker_cache.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/base/log.h"
#include "common/format/snapshot.h"
#include "common/nbd/server.h"
#include "common/overlay/overlay_volume.h"
#include "common/sandbox/sandbox.h"

namespace hexz::fused {
namespace {

using base::Result;
using base::Status;
using base::UniqueFd;

int g_stop_write = -1;

void OnStopSignal(int) {
  int saved = errno;
  (void)!::write(g_stop_write, "x", 1);
  errno = saved;
}

// The path a descriptor was opened as (for messages only), read before the
// sandbox closes /proc to us.
std::string FdPath(int fd, const std::string& fallback) {
  char link[4096];
  std::string proc = "/proc/self/fd/" + std::to_string(fd);
  ssize_t n = ::readlink(proc.c_str(), link, sizeof link - 1);
  if (n <= 0) return fallback;
  link[n] = '\0';
  return link;
}

bool IsListening(int fd) {
  int value = 0;
  socklen_t len = sizeof value;
  return ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &value, &len) == 0 && value != 0;
}

Result<std::vector<nbd::Export>> BuildExports(ipc::WorkerConfig& config,
                                              std::shared_ptr<io::Volume>* writable,
                                              std::shared_ptr<cache::ShmCache>* cache_out) {
  // The shared block cache (--cache-size), joined before the lockdown; it
  // lives as long as the exports (the volumes hold the snapshot).
  std::string cache_note;
  HEXZ_ASSIGN_OR_RETURN(std::shared_ptr<cache::ShmCache> shm,
                        cache::AttachForWorker(config.cache_size, &cache_note));
  format::OpenOptions open_options;
  open_options.cache = shm.get();
  HEXZ_ASSIGN_OR_RETURN(
      std::shared_ptr<format::Snapshot> snapshot,
      format::Snapshot::OpenFds(std::move(config.chain_fds), config.chain_names, open_options));
  HEXZ_RETURN_IF_ERROR(cache::CheckWorkerBlockSize(shm.get(), snapshot->block_size()));
  if (!cache_note.empty()) HEXZ_LOG_INFO("%s", cache_note.c_str());
  *cache_out = std::move(shm);
  auto wanted = [&config](const std::string& name) {
    if (config.nbd_exports.empty()) return true;
    for (const auto& n : config.nbd_exports) {
      if (n == name) return true;
    }
    return false;
  };
  std::vector<nbd::Export> exports;
  if (!snapshot->HasStream(format::StreamId::kDisk)) {
    return Status::InvalidArgument(config.chain_names[0] + ": the snapshot has no disk stream");
  }
  if (config.read_write) {
    overlay::OverlayNames names;
    names.data = FdPath(config.overlay_data_fd.get(), "overlay");
    names.meta = FdPath(config.overlay_meta_fd.get(), names.data + ".meta");
    names.base = config.chain_names[0];
    HEXZ_ASSIGN_OR_RETURN(auto volume,
                          overlay::OpenOverlayVolume(snapshot, std::move(config.overlay_data_fd),
                                                     std::move(config.overlay_meta_fd), names,
                                                     /*ephemeral=*/false));
    std::shared_ptr<io::Volume> shared(std::move(volume));
    *writable = shared;
    exports.push_back({"disk", shared, "disk of " + config.chain_names[0] + " + " + names.data,
                       /*fast_zero=*/true});
  } else {
    std::shared_ptr<io::Volume> volume =
        format::Snapshot::StreamVolume(snapshot, format::StreamId::kDisk);
    if (!volume) return Status::Internal("no volume for the disk stream");
    exports.push_back({"disk", volume, "disk of " + config.chain_names[0], false});
  }
  if (!wanted("disk")) exports.clear();
  if (snapshot->HasStream(format::StreamId::kMemory) && wanted("memory")) {
    std::shared_ptr<io::Volume> volume =
        format::Snapshot::StreamVolume(snapshot, format::StreamId::kMemory);
    if (!volume) return Status::Internal("no volume for the memory stream");
    exports.push_back({"memory", volume, "memory of " + config.chain_names[0], false});
  }
  if (exports.empty()) return Status::InvalidArgument("no export to serve");
  return exports;
}

}  // namespace

Status ServeNbd(ipc::WorkerConfig config, int sock) {
  UniqueFd endpoint = std::move(config.nbd_listen_fd);
  struct stat st;
  if (::fstat(endpoint.get(), &st) != 0 || !S_ISSOCK(st.st_mode)) {
    return Status::InvalidArgument("the NBD descriptor is not a socket");
  }
  const bool listening = IsListening(endpoint.get());

  std::shared_ptr<cache::ShmCache> shm;  // outlives every volume (declared first)
  std::shared_ptr<io::Volume> writable;
  HEXZ_ASSIGN_OR_RETURN(std::vector<nbd::Export> exports, BuildExports(config, &writable, &shm));

  // SIGTERM/SIGINT stop the server through a pipe; SIGPIPE must not kill us
  // when a client vanishes.
  int stop[2];
  if (::pipe2(stop, O_CLOEXEC | O_NONBLOCK) != 0) return Status::FromErrno(errno, "pipe");
  UniqueFd stop_read(stop[0]), stop_write(stop[1]);
  g_stop_write = stop_write.get();
  struct sigaction sa = {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGHUP, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  nbd::ServerOptions options;
  auto server = std::make_unique<nbd::Server>(std::move(exports), options);

  sandbox::Policy policy;
  // On top of the base allowlist (which has poll, send/recv, shutdown):
  // accepting clients. Everything else the server needs was set up above.
  policy.extra_syscalls = {"accept4"};
  policy.max_open_files = 256;
  HEXZ_RETURN_IF_ERROR(sandbox::LockDown(policy));
  HEXZ_LOG_DEBUG("sandbox active (seccomp %s)", sandbox::DebugBuild() ? "trap" : "kill");

  // Stops the server on a signal or, in the foreground, when the front-end
  // goes away (its end of the channel closes, even after SIGKILL).
  const bool watch_frontend = !config.daemon;
  std::thread watcher([&server, stop_fd = stop_read.get(), sock, watch_frontend] {
    struct pollfd pfd[2] = {{stop_fd, POLLIN, 0}, {sock, POLLIN, 0}};
    for (;;) {
      int n = ::poll(pfd, watch_frontend ? 2 : 1, -1);
      if (n < 0 && errno == EINTR) continue;
      if (pfd[0].revents != 0) {
        HEXZ_LOG_INFO("signal received; shutting down");
        break;
      }
      if (pfd[1].revents != 0) {
        char c;
        if (::recv(sock, &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0) {
          pfd[1].events = 0;  // unexpected bytes: keep watching the signal pipe only
          continue;
        }
        HEXZ_LOG_WARN("the front-end went away; shutting down");
        break;
      }
    }
    server->Shutdown();
  });

  HEXZ_LOG_INFO("serving %s over NBD (%s)", config.chain_names[0].c_str(),
                listening ? "listening socket" : "connected socket");
  if (Status s = ipc::SendWorkerReady(sock, "pid " + std::to_string(getpid())); !s.ok()) {
    HEXZ_LOG_WARN("could not report ready: %s", s.ToString().c_str());
  }

  Status served;
  if (listening) {
    // ServeListener also watches the pipe; Shutdown() wakes it otherwise.
    served = server->ServeListener(endpoint.get(), stop_read.get());
  } else {
    served = server->ServeConnection(std::move(endpoint));
    if (!served.ok()) HEXZ_LOG_WARN("NBD connection ended: %s", served.ToString().c_str());
    served = Status::Ok();  // the client's end is the end of this server
  }
  // Wake the watcher (if it is still waiting) and wait for it.
  (void)!::write(stop_write.get(), "x", 1);
  watcher.join();
  server.reset();
  Status flushed = Status::Ok();
  if (writable) {
    flushed = writable->Flush();
    if (!flushed.ok()) HEXZ_LOG_ERROR("flushing the overlay: %s", flushed.ToString().c_str());
    writable.reset();
  }
  if (!served.ok()) HEXZ_LOG_ERROR("%s", served.ToString().c_str());
  HEXZ_LOG_INFO("NBD server stopped");
  std::fflush(nullptr);
  _exit(served.ok() && flushed.ok() ? 0 : 1);
}

}  // namespace hexz::fused
