// hexz-fused: the sandboxed worker. It is started by `hexz mount` with one end
// of a socketpair as `--ipc-fd N`; everything else (settings, the snapshot
// chain's descriptors) arrives over that channel (common/ipc/worker_protocol.h).
//
// Sequence: receive the config, open the snapshot from the descriptors, check
// /dev/fuse, mount (through fusermount3 when not root), lock down
// (common/sandbox), report "ready" when the kernel's INIT is answered, serve
// until the mount goes away, exit. Any failure is sent back as an exact
// message. It is not meant to be run by hand.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "common/base/log.h"
#include "common/format/snapshot.h"
#include "common/fuse/read_only_fs.h"
#include "common/ipc/worker_protocol.h"
#include "common/sandbox/sandbox.h"
#include "hexz-fused/serve.h"

namespace hexz::fused {
namespace {

using base::Result;
using base::Status;

Result<int> ParseArgs(int argc, char** argv) {
  if (argc != 3 || std::strcmp(argv[1], "--ipc-fd") != 0) {
    return Status::InvalidArgument(
        "usage: hexz-fused --ipc-fd N (it is started by 'hexz mount', not by hand)");
  }
  char* end = nullptr;
  long fd = std::strtol(argv[2], &end, 10);
  if (*argv[2] == '\0' || *end != '\0' || fd < 3 || fd > 1024) {
    return Status::InvalidArgument(std::string("hexz-fused: bad --ipc-fd value '") + argv[2] + "'");
  }
  struct stat st;
  if (fstat(static_cast<int>(fd), &st) != 0 || !S_ISSOCK(st.st_mode)) {
    return Status::InvalidArgument("hexz-fused: --ipc-fd " + std::to_string(fd) +
                                   " is not a socket (it is started by 'hexz mount')");
  }
  return static_cast<int>(fd);
}

Status ServeFuse(ipc::WorkerConfig config, int sock) {
  if (config.read_write) return Status::Unsupported("read-write mounts are not available yet");
  if (config.cache_size != 0) return Status::Unsupported("--cache-size is not available yet");

  struct stat st;
  if (fstat(config.chain_fds.at(0).get(), &st) != 0) {
    return Status::FromErrno(errno, config.chain_names.at(0));
  }
  HEXZ_ASSIGN_OR_RETURN(std::shared_ptr<format::Snapshot> snapshot,
                        format::Snapshot::OpenFds(std::move(config.chain_fds), config.chain_names));

  std::vector<fuse::File> files;
  for (format::StreamId id : {format::StreamId::kDisk, format::StreamId::kMemory}) {
    if (!snapshot->HasStream(id)) continue;
    auto volume = format::Snapshot::StreamVolume(snapshot, id);
    if (!volume)
      return Status::Internal(std::string("no volume for stream ") + format::StreamName(id));
    files.push_back(fuse::File{format::StreamName(id), std::move(volume)});
  }
  if (files.empty()) return Status::Corruption(config.chain_names[0] + ": snapshot has no streams");

  if (Status dev = fuse::CheckFuseDevice(); !dev.ok()) {
    return dev.WithContext("cannot mount on " + config.mountpoint);
  }

  fuse::FsOptions options;
  options.uid = config.uid;
  options.gid = config.gid;
  options.mtime = st.st_mtim;
  options.read_threads = config.read_threads;
  options.allow_root = config.allow_root;
  options.auto_unmount = config.auto_unmount;
  options.on_ready = [sock, mnt = config.mountpoint] {
    // Logged before the reply, so the log says so once hexz mount returns.
    HEXZ_LOG_INFO("serving %s", mnt.c_str());
    Status s = ipc::SendWorkerReady(sock, "pid " + std::to_string(getpid()));
    if (!s.ok()) {
      HEXZ_LOG_WARN("could not tell hexz that %s is ready: %s", mnt.c_str(), s.ToString().c_str());
    }
  };
  fuse::ReadOnlyFs fs(std::move(files), options);
  HEXZ_RETURN_IF_ERROR(fs.Mount(config.mountpoint));

  if (!config.daemon) {
    // In the foreground the mount lives as long as `hexz mount`: when the
    // front-end goes away (even by SIGKILL) the channel reaches end-of-file
    // and the worker leaves; auto_unmount then takes the mount away.
    std::thread([sock] {
      struct pollfd pfd = {sock, POLLIN, 0};
      while (poll(&pfd, 1, -1) < 0 && errno == EINTR) {
      }
      HEXZ_LOG_WARN("hexz mount went away; exiting, which unmounts");
      _exit(0);
    }).detach();
  }

  sandbox::Policy policy;
  Status locked = sandbox::LockDown(policy);
  if (!locked.ok()) {
    // Not serving unsandboxed: auto_unmount takes the mount away when we exit.
    return locked;
  }
  HEXZ_LOG_DEBUG("sandbox active (seccomp %s)", sandbox::DebugBuild() ? "trap" : "kill");
  Status served = fs.Serve();
  HEXZ_LOG_INFO("%s is no longer mounted; exiting", config.mountpoint.c_str());
  // The mount is gone; skip destructors that would try to unmount (the
  // sandbox forbids it and there is nothing left to unmount).
  std::fflush(nullptr);
  _exit(served.ok() ? 0 : 1);
}

int Main(int argc, char** argv) {
  base::SetLogProgram("hexz-fused");
  if (getuid() != geteuid() || getgid() != getegid()) {
    std::fprintf(stderr, "hexz-fused: refusing to run setuid or setgid\n");
    return 1;
  }
  auto sock = ParseArgs(argc, argv);
  if (!sock.ok()) {
    std::fprintf(stderr, "%s\n", sock.status().ToString().c_str());
    return 2;
  }
  fcntl(*sock, F_SETFD, FD_CLOEXEC);  // fusermount3 (a child) must not keep it
  auto message = ipc::Receive(*sock, {ipc::kWorkerConfig});
  if (!message.ok()) {
    HEXZ_LOG_ERROR("%s", message.status().ToString().c_str());
    return 1;
  }
  auto config = ipc::DecodeWorkerConfig(std::move(*message));
  if (!config.ok()) {
    HEXZ_LOG_ERROR("%s", config.status().ToString().c_str());
    (void)ipc::SendWorkerError(*sock, config.status());
    return 1;
  }
  base::SetLogLevel(static_cast<base::LogLevel>(config->log_level));
  if (config->daemon) base::SetLogFd(STDERR_FILENO, true);
  // Leave the terminal's session (Ctrl+C goes to the front-end, which
  // unmounts) and any directory that could be unmounted under us.
  setsid();
  if (chdir("/") != 0) HEXZ_LOG_WARN("chdir /: %s", std::strerror(errno));

  bool daemon = config->daemon;
  Status st = config->mode == ipc::WorkerMode::kFuse ? ServeFuse(std::move(*config), *sock)
                                                     : ServeNbd(std::move(*config), *sock);
  if (!st.ok()) {
    // In the foreground the front-end prints it (same terminal); a daemon's
    // log keeps it too.
    if (daemon) HEXZ_LOG_ERROR("%s", st.ToString().c_str());
    (void)ipc::SendWorkerError(*sock, st);
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace hexz::fused

int main(int argc, char** argv) { return hexz::fused::Main(argc, argv); }
