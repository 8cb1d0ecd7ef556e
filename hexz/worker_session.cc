#include "hexz/worker_session.h"

#include "common/cache/shm_cache.h"

#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/base/log.h"
#include "common/overlay/overlay_files.h"

namespace hexz::cli {

using base::Result;
using base::Status;
using base::UniqueFd;

namespace {

std::string DirOf(const std::string& p) {
  size_t slash = p.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : p.substr(0, slash);
}

bool IsExecutable(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(p.c_str(), X_OK) == 0;
}

}  // namespace

Result<std::string> FindProgram(const std::string& name, const char* env_var,
                                const std::string& build_subdir) {
  std::vector<std::string> tried;
  if (const char* env = std::getenv(env_var); env != nullptr && *env != '\0') {
    if (IsExecutable(env)) return std::string(env);
    tried.push_back(std::string(env) + " (from $" + env_var + ")");
  }
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    self[n] = '\0';
    std::string dir = DirOf(self);
    for (const std::string& c : {dir + "/" + name, dir + "/../" + build_subdir + "/" + name,
                                 dir + "/../libexec/hexz/" + name}) {
      if (IsExecutable(c)) return c;
      tried.push_back(c);
    }
  }
  std::string list;
  for (const auto& t : tried) list += "\n  " + t;
  return Status::NotFound("cannot find " + name + "; tried:" + list + "\nset " + env_var +
                          " to its path");
}

Result<std::string> FindInPath(const std::string& name) {
  const char* env = std::getenv("PATH");
  const std::string dirs = env != nullptr ? env : "/usr/local/bin:/usr/bin:/bin";
  for (size_t b = 0, e; b <= dirs.size(); b = e + 1) {
    e = dirs.find(':', b);
    if (e == std::string::npos) e = dirs.size();
    const std::string candidate = (e > b ? dirs.substr(b, e - b) : ".") + "/" + name;
    if (IsExecutable(candidate)) return candidate;
  }
  return Status::NotFound(name + " not found in PATH");
}

Result<std::string> PrivateRuntimeDir(const std::string& purpose) {
  std::vector<std::string> candidates;
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg != nullptr && xdg[0] == '/') {
    candidates.push_back(std::string(xdg) + "/hexz");
  }
  std::string home;
  if (const char* h = std::getenv("HOME"); h != nullptr && h[0] == '/') {
    home = h;
  } else if (struct passwd* pw = getpwuid(getuid()); pw != nullptr && pw->pw_dir[0] == '/') {
    home = pw->pw_dir;
  }
  if (!home.empty()) {
    std::string cache = home + "/.cache";
    (void)mkdir(cache.c_str(), 0700);  // the check below reports a problem
    candidates.push_back(cache + "/hexz");
  }
  std::string problems;
  for (const auto& dir : candidates) {
    if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      problems += "\n  " + dir + ": " + std::strerror(errno);
      continue;
    }
    struct stat st;
    if (lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() ||
        (st.st_mode & 077) != 0) {
      problems += "\n  " + dir + ": not a private (0700) directory owned by you";
      continue;
    }
    return dir;
  }
  return Status::Unavailable("no private directory for " + purpose + problems);
}

Result<DaemonLog> OpenDaemonLog(const std::string& log_file, const std::string& default_name) {
  DaemonLog log;
  if (!log_file.empty()) {
    log.path = log_file;
  } else {
    HEXZ_ASSIGN_OR_RETURN(std::string dir,
                          PrivateRuntimeDir("the daemon's log; use --log-file PATH"));
    log.path = dir + "/" + default_name;
  }
  HEXZ_ASSIGN_OR_RETURN(log.fd, base::OpenLogForAppend(log.path));
  return log;
}

namespace {

// Blocks SIGINT, SIGTERM, SIGHUP and SIGCHLD (restoring their default
// dispositions first) and returns a signalfd for them.
Result<UniqueFd> TakeSignals(sigset_t* old_mask) {
  // A shell starts background jobs with SIGINT ignored; these signals must
  // stop us, so their default disposition comes back first.
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) signal(sig, SIG_DFL);
  sigset_t mask;
  sigemptyset(&mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGCHLD}) sigaddset(&mask, sig);
  sigprocmask(SIG_BLOCK, &mask, old_mask);
  UniqueFd sigfd(signalfd(-1, &mask, SFD_CLOEXEC));
  if (!sigfd) return Status::FromErrno(errno, "signalfd");
  return sigfd;
}

// The worker's process: the channel as fd 3, stdio on /dev/null (stderr on
// `log_fd` when >= 0), a clean environment. Returns the pid.
Result<pid_t> ForkWorker(const std::string& program, UniqueFd theirs, int log_fd,
                         const sigset_t& old_mask) {
  UniqueFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!devnull) return Status::FromErrno(errno, "/dev/null");
  // A clean environment; HEXZ_CACHE_NAME_PREFIX names the shared cache.
  std::string cache_prefix = "HEXZ_CACHE_NAME_PREFIX=" + cache::ShmCache::NamePrefix();
  pid_t pid = fork();
  if (pid < 0) return Status::FromErrno(errno, "fork");
  if (pid == 0) {
    sigprocmask(SIG_SETMASK, &old_mask, nullptr);
    if ((theirs.get() == 3 ? fcntl(3, F_SETFD, 0) : dup2(theirs.get(), 3)) < 0 ||
        dup2(devnull.get(), 0) < 0 || dup2(devnull.get(), 1) < 0 ||
        (log_fd >= 0 && dup2(log_fd, 2) < 0)) {
      _exit(127);
    }
    close_range(4, ~0U, 0);
    char* argv[] = {const_cast<char*>("hexz-fused"), const_cast<char*>("--ipc-fd"),
                    const_cast<char*>("3"), nullptr};
    char* envp[] = {const_cast<char*>("PATH=/usr/bin:/bin"), cache_prefix.data(), nullptr};
    execve(program.c_str(), argv, envp);
    std::fprintf(stderr, "hexz: cannot run %s: %s\n", program.c_str(), std::strerror(errno));
    _exit(127);
  }
  return pid;
}

}  // namespace

Result<WorkerSession> WorkerSession::Launch(const std::string& program,
                                            const ipc::WorkerConfig& config, int log_fd) {
  WorkerSession session;
  HEXZ_ASSIGN_OR_RETURN(session.sigfd_, TakeSignals(&session.old_mask_));
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return Status::FromErrno(errno, "socketpair");
  }
  session.channel_ = UniqueFd(sv[0]);
  HEXZ_ASSIGN_OR_RETURN(session.pid_,
                        ForkWorker(program, UniqueFd(sv[1]), log_fd, session.old_mask_));
  if (Status st = ipc::SendWorkerConfig(session.channel_.get(), config); !st.ok()) {
    ReapWorker(session.pid_, 2000);
    return st.WithContext("starting " + program);
  }
  return session;
}

int ReadyTimeoutSeconds() {
  const char* env = std::getenv("HEXZ_READY_TIMEOUT");
  if (env == nullptr || *env == '\0') return kDefaultReadyTimeoutSeconds;
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(env, &end, 10);
  if (errno != 0 || *end != '\0' || v < 1 || v > 86400) {
    std::fprintf(stderr,
                 "hexz: ignoring HEXZ_READY_TIMEOUT=%s (expected seconds, 1..86400); waiting %d "
                 "s for the worker\n",
                 env, kDefaultReadyTimeoutSeconds);
    return kDefaultReadyTimeoutSeconds;
  }
  return static_cast<int>(v);
}

Result<std::string> WorkerSession::AwaitReady() {
  const int timeout_s = ReadyTimeoutSeconds();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) {
      kill(pid_, SIGKILL);
      ReapWorker(pid_, 5000);
      return Status::Unavailable("the worker did not report ready within " +
                                 std::to_string(timeout_s) +
                                 " s, so it was stopped (set HEXZ_READY_TIMEOUT=SECONDS to wait "
                                 "longer)");
    }
    struct pollfd pfd[2] = {{sigfd_.get(), POLLIN, 0}, {channel_.get(), POLLIN, 0}};
    if (poll(pfd, 2, static_cast<int>(std::min<long long>(left, 1000))) < 0 && errno != EINTR) {
      return Status::FromErrno(errno, "poll");
    }
    if (pfd[1].revents != 0) break;
    struct signalfd_siginfo si;
    if ((pfd[0].revents & POLLIN) && read(sigfd_.get(), &si, sizeof si) == sizeof si &&
        si.ssi_signo != SIGCHLD) {
      kill(pid_, SIGKILL);
      ReapWorker(pid_, 5000);
      return Status::Cancelled("interrupted before the worker was ready");
    }
  }
  auto ready = ipc::ReceiveWorkerReply(channel_.get());
  if (!ready.ok()) ReapWorker(pid_, 5000);
  return ready;
}

int WorkerSession::Supervise(const Handlers& handlers) {
  for (;;) {
    struct pollfd pfd[2] = {{sigfd_.get(), POLLIN, 0}, {channel_.get(), POLLIN, 0}};
    if (poll(pfd, channel_ ? 2 : 1, -1) < 0) {
      if (errno == EINTR) continue;
      std::fprintf(stderr, "hexz: poll: %s; stopping the worker\n", std::strerror(errno));
      return handlers.on_child_exit(Stop(SIGTERM, 10000));
    }
    if (pfd[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      if (read(sigfd_.get(), &si, sizeof si) != sizeof si) continue;
      if (si.ssi_signo == SIGCHLD) {
        int status = 0;
        if (waitpid(pid_, &status, WNOHANG) != pid_) continue;
        return handlers.on_child_exit(status);
      }
      if (std::optional<int> rc = handlers.on_signal(static_cast<int>(si.ssi_signo))) return *rc;
      continue;
    }
    if (channel_ && (pfd[1].revents & (POLLHUP | POLLIN | POLLERR))) {
      // The worker closed its end: it is exiting; SIGCHLD follows.
      channel_.reset();
    }
  }
}

Status WorkerSession::Control(const ipc::WorkerControl& request) {
  HEXZ_RETURN_IF_ERROR(ipc::SendWorkerControl(channel_.get(), request));
  return ipc::ReceiveWorkerReply(channel_.get()).status().WithContext("the disk server");
}

int WorkerSession::Stop(int signo, int wait_ms) {
  if (signo != 0) kill(pid_, signo);
  return ReapWorker(pid_, wait_ms);
}

Status AttachOverlay(const std::string& path, const std::string& snapshot_name,
                     const format::Snapshot& snapshot, ipc::WorkerConfig* config) {
  HEXZ_ASSIGN_OR_RETURN(overlay::OverlayFiles files,
                        overlay::OpenOverlayFiles(path, overlay::LockMode::kExclusive,
                                                  /*create=*/true));
  files.names.base = snapshot_name;
  HEXZ_RETURN_IF_ERROR(overlay::ValidateOverlayFiles(files, snapshot.id(),
                                                     snapshot.StreamSize(format::StreamId::kDisk)));
  config->read_write = true;
  config->overlay_name = path;
  config->overlay_data_fd = std::move(files.data);
  config->overlay_meta_fd = std::move(files.meta);
  return Status::Ok();
}

Status WatchWorker(pid_t worker, const sigset_t& old_mask, const std::function<void()>& cleanup) {
  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, worker, 0)));
  if (!pidfd) return Status::FromErrno(errno, "pidfd_open of the worker");
  pid_t pid = fork();
  if (pid < 0) return Status::FromErrno(errno, "fork of the cleanup process");
  if (pid > 0) return Status::Ok();
  // The companion: no terminal, no descriptor but the pidfd.
  setsid();
  prctl(PR_SET_NAME, "hexz-watch", 0, 0, 0);
  sigprocmask(SIG_SETMASK, &old_mask, nullptr);
  signal(SIGINT, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0 || dup2(devnull, 2) < 0) {
    _exit(1);
  }
  int fd = pidfd.release();
  if (fd != 3 && (dup2(fd, 3) < 0)) _exit(1);
  close_range(4, ~0U, 0);
  struct pollfd pfd = {3, POLLIN, 0};
  while (poll(&pfd, 1, -1) < 0 && errno == EINTR) {
  }
  cleanup();
  _exit(0);
}

void RemoveSocketIfSame(const std::string& path, dev_t dev, ino_t ino, const std::string& dir) {
  struct stat st;
  if (!path.empty() && lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == dev &&
      st.st_ino == ino) {
    unlink(path.c_str());
  }
  if (!dir.empty()) rmdir(dir.c_str());
}

int ReapWorker(pid_t pid, int ms) {
  int status = 0;
  for (int waited = 0; waited <= ms; waited += 20) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return 0;
    usleep(20000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return status;
}

bool ExitedCleanly(int status) { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }

std::string DescribeWaitStatus(int status) {
  if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
  return "exit status " + std::to_string(WEXITSTATUS(status));
}

}  // namespace hexz::cli
