// Starting hexz-fused (the sandboxed worker) from a front-end command, and the
// small pieces that `hexz serve` and `hexz mount --nbd` share: finding a
// program next to hexz, the private runtime directory, the signalfd that
// turns SIGINT/SIGTERM/SIGHUP/SIGCHLD into readable events, and reaping.
//
// Ownership: a WorkerProcess owns its end of the control channel; the pid is
// the caller's to reap (ReapWorker). Thread safety: front-end main thread only.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <functional>
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

// A private (0700, ours, not a symlink) directory: $XDG_RUNTIME_DIR/hexz,
// else ~/.cache/hexz. `purpose` goes into the error ("the daemon's log").
base::Result<std::string> PrivateRuntimeDir(const std::string& purpose);

// Opens (creates 0600, appends) a log file: a regular file of ours only
// (base::OpenLogForAppend).
base::Result<base::UniqueFd> OpenLogFile(const std::string& path);

// Blocks SIGINT, SIGTERM, SIGHUP and SIGCHLD (restoring their default
// dispositions first) and returns a signalfd for them; `old_mask` receives
// the mask to restore in children.
base::Result<base::UniqueFd> TakeSignals(sigset_t* old_mask);

struct WorkerProcess {
  pid_t pid = -1;
  base::UniqueFd channel;  // our end of the control socketpair
};

// fork+exec of the worker with the channel as fd 3, stdin/stdout on
// /dev/null, stderr on `log_fd` (or ours when -1), a clean environment and
// `old_mask` restored; then sends `config`. On a send failure the worker is
// reaped and the error returned.
base::Result<WorkerProcess> LaunchWorker(const std::string& program,
                                         const ipc::WorkerConfig& config, int log_fd,
                                         const sigset_t& old_mask);

// Waits for the worker's ready/error reply while watching `sigfd`: a signal
// other than SIGCHLD meanwhile kills and reaps the worker and returns
// kCancelled. A worker that neither replies nor exits within
// ReadyTimeoutSeconds() is killed and reaped, and kUnavailable returned. On
// an error reply the worker is reaped too.
base::Result<std::string> AwaitWorkerReady(WorkerProcess& worker, int sigfd);

// How long AwaitWorkerReady waits: $HEXZ_READY_TIMEOUT seconds (1..86400), else
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

// Describes a wait status ("exit status 1", "signal 9").
std::string DescribeWaitStatus(int status);

}  // namespace hexz::cli
