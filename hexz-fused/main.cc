// hexz-fused: the sandboxed worker. It is started by `hexz mount` with one end
// of a socketpair as `--ipc-fd N`; everything else (settings, the snapshot
// chain's descriptors) arrives over that channel (common/ipc/worker_protocol.h).
//
// Sequence: receive the config, open the snapshot from the descriptors (and,
// for --rw, the overlay from its two descriptors), check /dev/fuse, mount
// (through fusermount3 when not root), lock down (common/sandbox), report
// "ready" when the kernel's INIT is answered, serve until the mount goes away,
// exit. A read-write worker flushes its overlay before it exits: after the
// unmount, on SIGTERM/SIGINT/SIGHUP, and when the foreground front-end goes
// away. Any failure is sent back as an exact message. It is not meant to be
// run by hand.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "common/base/log.h"
#include "common/cache/worker_cache.h"
#include "common/format/snapshot.h"
#include "common/fuse/volume_fs.h"
#include "common/ipc/worker_protocol.h"
#include "common/overlay/overlay_files.h"
#include "common/overlay/overlay_volume.h"
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

// The read-write disk of a --rw mount: the snapshot's disk stream over the
// overlay whose descriptors came with the config.
Result<std::unique_ptr<overlay::OverlayVolume>> OpenRwDisk(
    const std::shared_ptr<format::Snapshot>& snapshot, ipc::WorkerConfig& config) {
  overlay::OverlayNames names;
  names.data = config.overlay_name.empty() ? "(overlay)" : config.overlay_name;
  names.meta = config.overlay_ephemeral ? names.data + " meta" : overlay::MetaPathFor(names.data);
  names.base = config.chain_names.at(0);
  return overlay::OpenOverlayVolume(snapshot, std::move(config.overlay_data_fd),
                                    std::move(config.overlay_meta_fd), std::move(names),
                                    config.overlay_ephemeral);
}

// Makes the overlay durable before the worker exits; logs the outcome.
bool FlushBeforeExit(io::Volume* rw_disk, const char* why) {
  if (rw_disk == nullptr) return true;
  Status st = rw_disk->Flush();
  if (!st.ok()) {
    HEXZ_LOG_ERROR("flushing the overlay (%s) failed: %s", why, st.ToString().c_str());
    return false;
  }
  HEXZ_LOG_DEBUG("overlay flushed (%s)", why);
  return true;
}

Status ServeFuse(ipc::WorkerConfig config, int sock) {
  struct stat st;
  if (fstat(config.chain_fds.at(0).get(), &st) != 0) {
    return Status::FromErrno(errno, config.chain_names.at(0));
  }
  // The shared block cache (--cache-size), joined before the lockdown.
  std::string cache_note;
  HEXZ_ASSIGN_OR_RETURN(auto shm, cache::AttachForWorker(config.cache_size, &cache_note));
  format::OpenOptions open_options;
  open_options.cache = shm.get();
  HEXZ_ASSIGN_OR_RETURN(
      std::shared_ptr<format::Snapshot> snapshot,
      format::Snapshot::OpenFds(std::move(config.chain_fds), config.chain_names, open_options));
  HEXZ_RETURN_IF_ERROR(cache::CheckWorkerBlockSize(shm.get(), snapshot->block_size()));
  if (!cache_note.empty()) HEXZ_LOG_INFO("%s", cache_note.c_str());

  std::vector<fuse::File> files;
  io::Volume* rw_disk = nullptr;  // owned by `files`, then by the filesystem
  if (config.read_write) {
    HEXZ_ASSIGN_OR_RETURN(std::unique_ptr<overlay::OverlayVolume> disk,
                          OpenRwDisk(snapshot, config));
    rw_disk = disk.get();
    fuse::File file{format::StreamName(format::StreamId::kDisk), std::move(disk)};
    file.writable = true;
    file.io_size = std::max<uint32_t>(snapshot->block_size(), overlay::kBlockSize);
    files.push_back(std::move(file));
  }
  for (format::StreamId id : {format::StreamId::kDisk, format::StreamId::kMemory}) {
    if (!snapshot->HasStream(id)) continue;
    if (id == format::StreamId::kDisk && rw_disk != nullptr) continue;
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
  options.allow_other = config.allow_other;
  options.auto_unmount = config.auto_unmount;
  options.read_write = config.read_write;
  options.exit_on_signals = config.read_write;  // flush, then exit
  options.on_ready = [sock, mnt = config.mountpoint, cache_note] {
    // Logged before the reply, so the log says so once hexz mount returns.
    HEXZ_LOG_INFO("serving %s", mnt.c_str());
    // Lines after the first are notes for the user (hexz mount prints them).
    Status s = ipc::SendWorkerReady(
        sock, "pid " + std::to_string(getpid()) + (cache_note.empty() ? "" : "\n" + cache_note));
    if (!s.ok()) {
      HEXZ_LOG_WARN("could not tell hexz that %s is ready: %s", mnt.c_str(), s.ToString().c_str());
    }
  };
  fuse::VolumeFs fs(std::move(files), options);
  // Kept until exit: names this worker as the one serving the mountpoint
  // (fuse::WorkersOf), so that `hexz unmount` can wait for it to finish.
  int marker = open(config.mountpoint.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (marker < 0) HEXZ_LOG_DEBUG("O_PATH %s: %s", config.mountpoint.c_str(), std::strerror(errno));
  HEXZ_RETURN_IF_ERROR(fs.Mount(config.mountpoint));

  if (!config.daemon) {
    // In the foreground the mount lives as long as `hexz mount`: when the
    // front-end goes away (even by SIGKILL) the channel reaches end-of-file
    // and the worker leaves; auto_unmount then takes the mount away.
    std::thread([sock, rw_disk] {
      struct pollfd pfd = {sock, POLLIN, 0};
      while (poll(&pfd, 1, -1) < 0 && errno == EINTR) {
      }
      HEXZ_LOG_WARN("hexz mount went away; exiting, which unmounts");
      bool flushed = FlushBeforeExit(rw_disk, "the front-end went away");
      std::fflush(nullptr);
      _exit(flushed ? 0 : 1);
    }).detach();
  }

  sandbox::Policy policy;
  // The overlay truncates its meta file when it compacts its log.
  if (config.read_write) policy.extra_syscalls.push_back("ftruncate");
  Status locked = sandbox::LockDown(policy);
  if (!locked.ok()) {
    // Not serving unsandboxed: auto_unmount takes the mount away when we exit.
    return locked;
  }
  HEXZ_LOG_DEBUG("sandbox active (seccomp %s)", sandbox::DebugBuild() ? "trap" : "kill");
  Status served = fs.Serve();
  HEXZ_LOG_INFO("%s is no longer mounted; exiting", config.mountpoint.c_str());
  if (!FlushBeforeExit(rw_disk, "exit")) served = Status::Internal("the final flush failed");
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
