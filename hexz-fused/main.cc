// hexz-fused: the sandboxed worker. It is started by `hexz mount` or `hexz
// serve` with one end of a socketpair as `--ipc-fd N`; everything else
// (settings, the snapshot chain's descriptors) arrives over that channel
// (common/ipc/worker_protocol.h).
//
// main.cc checks the arguments, receives the config, leaves the terminal's
// session and dispatches to the FUSE or NBD mode (modes.h), which open the
// volumes (volumes.h), watch for the end (lifeline.h), lock down and serve.
// Any failure is sent back as an exact message. It is not meant to be run by
// hand.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/base/log.h"
#include "common/ipc/worker_protocol.h"
#include "hexz-fused/modes.h"

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
