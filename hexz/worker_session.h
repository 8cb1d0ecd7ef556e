// One front-end worker session: hexz-fused (the sandboxed worker) started
// from `hexz mount`, `hexz mount --nbd` or `hexz serve`, its ready reply, and
// the foreground loop that supervises it (a signal, or the worker's exit);
// plus the small pieces those commands share: finding a program next to
// hexz, the private runtime directory, the daemon's log, the overlay of a
// read-write session, the companion that cleans up after a worker, reaping.
//
// Ownership: a WorkerSession owns the signalfd (SIGINT/SIGTERM/SIGHUP/SIGCHLD
// are blocked while it lives) and its end of the control channel; the worker
// is its child, reaped by Supervise or Stop (a daemon's worker is left
// running). Thread safety: front-end main thread only.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>

#include "common/base/fd.h"
#include "common/base/status.h"
#include "common/format/snapshot.h"
#include "common/ipc/worker_protocol.h"

namespace hexz::cli {

// Finds `name`: $ENV_VAR, then <dir of hexz>/name, <dir>/../<build_subdir>/name
// (build tree), <dir>/../libexec/hexz/name (installed). The error lists what
// was tried and names the variable.
base::Result<std::string> FindProgram(const std::string& name, const char* env_var,
                                      const std::string& build_subdir);

// The first executable regular file `name` in the directories of $PATH (as
// execvp would find it; /usr/local/bin:/usr/bin:/bin when PATH is unset, "."
// for an empty entry); NotFound otherwise, which callers word.
base::Result<std::string> FindInPath(const std::string& name);

// A private (0700, ours, not a symlink) directory: $XDG_RUNTIME_DIR/hexz,
// else ~/.cache/hexz. `purpose` goes into the error ("the daemon's log").
base::Result<std::string> PrivateRuntimeDir(const std::string& purpose);

// The log of a --daemon worker: `log_file` when given, else
// PrivateRuntimeDir()/`default_name`, opened (created 0600, appended) as a
// regular file of ours only (base::OpenLogForAppend).
struct DaemonLog {
  base::UniqueFd fd;
  std::string path;
};
base::Result<DaemonLog> OpenDaemonLog(const std::string& log_file, const std::string& default_name);

// A started worker and the signals of its front-end.
class WorkerSession {
 public:
  // What Supervise does when something happens. on_signal gets SIGINT,
  // SIGTERM or SIGHUP and returns the exit code, or nullopt to keep
  // supervising; on_child_exit gets the worker's wait status once it is
  // reaped and returns the exit code.
  struct Handlers {
    std::function<std::optional<int>(int signo)> on_signal;
    std::function<int(int wait_status)> on_child_exit;
  };

  // Blocks SIGINT, SIGTERM, SIGHUP and SIGCHLD (restoring the default
  // dispositions first) and takes them through a signalfd; then fork+exec of
  // `program` with the control channel as fd 3, stdin/stdout on /dev/null,
  // stderr on `log_fd` (or ours when -1), a clean environment and the old
  // signal mask; then sends `config`. On a send failure the worker is reaped
  // and the error returned.
  static base::Result<WorkerSession> Launch(const std::string& program,
                                            const ipc::WorkerConfig& config, int log_fd);

  WorkerSession(WorkerSession&&) = default;
  WorkerSession& operator=(WorkerSession&&) = default;

  // Waits for the worker's ready/error reply while watching the signals: a
  // signal other than SIGCHLD meanwhile kills and reaps the worker and
  // returns kCancelled. A worker that neither replies nor exits within
  // ReadyTimeoutSeconds() is killed and reaped, and kUnavailable returned. On
  // an error reply the worker is reaped too.
  base::Result<std::string> AwaitReady();

  // The foreground: waits for a signal or the worker's exit and returns what
  // the handler returns. A closed control channel (the worker is leaving)
  // only stops it being watched. Should waiting itself fail, the worker is
  // stopped (Stop) and on_child_exit gets its status.
  int Supervise(const Handlers& handlers);

  // Sends a control request to a ready worker (worker_protocol.h) and waits
  // for its answer: the worker's error as is.
  base::Status Control(const ipc::WorkerControl& request);

  // SIGTERM (when `signo` is not 0), then ReapWorker(pid, wait_ms).
  int Stop(int signo, int wait_ms);

  pid_t pid() const { return pid_; }
  // The signal mask from before the session, for the children it forks.
  const sigset_t& old_mask() const { return old_mask_; }

 private:
  WorkerSession() = default;

  pid_t pid_ = -1;
  base::UniqueFd channel_;  // our end of the control socketpair
  base::UniqueFd sigfd_;
  sigset_t old_mask_ = {};
};

// How long AwaitReady waits: $HEXZ_READY_TIMEOUT seconds (1..86400), else
// kDefaultReadyTimeoutSeconds (a bad value is reported on stderr and ignored).
inline constexpr int kDefaultReadyTimeoutSeconds = 30;
int ReadyTimeoutSeconds();

// Opens (creating when missing), locks exclusively and validates the overlay
// at `path` against `snapshot`'s disk, as the user, and puts its two
// descriptors into `config` (read_write set).
base::Status AttachOverlay(const std::string& path, const std::string& snapshot_name,
                           const format::Snapshot& snapshot, ipc::WorkerConfig* config);

// For --daemon, where the front-end returns and nobody else would notice the
// worker go: forks a small companion process ("hexz-watch", not sandboxed,
// holding nothing but a pidfd of the worker and /dev/null as stdio, in its
// own session) that waits for the worker to exit, by any means, then runs
// `cleanup` and exits. The worker must still be our unreaped child, so its
// pid cannot have been reused. `cleanup` runs in the forked child: it must
// only use what it captured by value (no locks held by other threads).
base::Status WatchWorker(pid_t worker, const sigset_t& old_mask,
                         const std::function<void()>& cleanup);

// Removes the unix socket at `path` only while it is still the one with this
// device and inode (nobody replaced it), then `dir` if it is then empty.
void RemoveSocketIfSame(const std::string& path, dev_t dev, ino_t ino, const std::string& dir);

// Waits up to `ms` for `pid` to exit, then SIGKILLs it. Returns the wait status.
int ReapWorker(pid_t pid, int ms);

// True for a wait status of exit status 0.
bool ExitedCleanly(int status);

// Describes a wait status ("exit status 1", "signal 9").
std::string DescribeWaitStatus(int status);

}  // namespace hexz::cli
