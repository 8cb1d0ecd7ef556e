// hexz mount (also `hexz vm mount`): opens and validates the snapshot chain as
// the user, checks the mountpoint, starts hexz-fused with the chain's
// descriptors and the settings over a socketpair, and waits for "ready" or
// the worker's exact error. With --rw it also opens (or creates) and locks the
// overlay as the user, checks it against the snapshot, and passes its two
// descriptors along; without --overlay the overlay is ephemeral (unlinked at
// once, so nothing is left behind). In the foreground it then stays until SIGINT,
// SIGTERM or SIGHUP and unmounts; with --daemon it returns once the mount is
// usable and the worker logs to a file.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "common/base/fd.h"
#include "common/base/log.h"
#include "common/cache/worker_cache.h"
#include "common/format/snapshot.h"
#include "common/ipc/worker_protocol.h"
#include "common/overlay/overlay_files.h"
#include "hexz/cli_checks.h"
#include "hexz/commands.h"
#include "hexz/fetcher.h"
#include "hexz/mount_table.h"
#include "hexz/nbd_mount.h"
#include "hexz/remote_cli.h"
#include "hexz/worker_session.h"

namespace hexz::cli {

namespace {

using base::Result;
using base::Status;
using base::UniqueFd;

struct MountArgs {
  std::string snapshot;
  std::string mountpoint;
  std::optional<uint32_t> uid;
  std::optional<uint32_t> gid;
  WorkerOptions worker;  // --cache-size, --daemon, --log-file, --verbose
  bool rw = false;
  std::string overlay;
  bool nbd = false;
  bool partitions = false;            // --partitions: disk-pN files (FUSE)
  std::optional<uint32_t> partition;  // --partition N (--nbd)
  std::vector<std::string> options;   // -o allow_root,allow_other
  std::shared_ptr<RemoteFlags> remote = std::make_shared<RemoteFlags>();
};

std::string BaseName(const std::string& p) {
  size_t slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

// A mount hides what the directory holds; like fusermount without
// "nonempty", hexz refuses a directory that is not empty.
Status CheckMountpointEmpty(const std::string& mnt, const std::string& canonical) {
  DIR* dir = opendir(canonical.c_str());
  if (dir == nullptr) return Status::Ok();  // unreadable: nothing to tell
  std::string first;
  while (struct dirent* e = readdir(dir)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
      first = e->d_name;
      break;
    }
  }
  closedir(dir);
  if (first.empty()) return Status::Ok();
  return Status::Busy("mountpoint " + mnt + " is not empty (it holds " + first +
                      "); the mount would hide its files: use an empty directory");
}

Status CheckMountpoint(const std::string& mnt, std::string* canonical) {
  struct stat st;
  if (stat(mnt.c_str(), &st) != 0) {
    int err = errno;
    if (err == ENOENT) {
      return Status::NotFound("mountpoint " + mnt + " does not exist (create it with mkdir)");
    }
    if (err == ENOTCONN || err == ECONNABORTED) {
      return Status::Busy("mountpoint " + mnt +
                          " holds a dead hexz mount (Transport endpoint is not connected); run "
                          "'hexz unmount " +
                          mnt + "' first");
    }
    return Status::FromErrno(err, "mountpoint " + mnt);
  }
  if (!S_ISDIR(st.st_mode))
    return Status::InvalidArgument("mountpoint " + mnt + " is not a directory");
  HEXZ_ASSIGN_OR_RETURN(*canonical, CanonicalMountPath(mnt));
  HEXZ_ASSIGN_OR_RETURN(auto entry, FindMount(*canonical));
  if (entry && entry->fstype == kHexzFsType) {
    return Status::Busy("mountpoint " + mnt + " is already a hexz mount; run 'hexz unmount " + mnt +
                        "' first");
  }
  if (access(canonical->c_str(), W_OK) != 0 && geteuid() != 0) {
    return Status(base::Code::kPermissionDenied,
                  "mountpoint " + mnt + " is not writable by you (FUSE mounts need that)", EACCES);
  }
  return CheckMountpointEmpty(mnt, *canonical);
}

// After a failure: nothing of ours may stay mounted.
void CleanUpMount(const std::string& canonical) {
  auto entry = FindMount(canonical);
  if (entry.ok() && *entry && (*entry)->fstype == kHexzFsType) {
    (void)UnmountFuse(canonical, /*lazy=*/true);
  }
}

// The overlay of a --rw mount, opened as the user: PATH (created when
// missing, locked, checked against the snapshot), or an ephemeral one.
Result<overlay::OverlayFiles> OpenMountOverlay(const MountArgs& a,
                                               const format::Snapshot& snapshot) {
  if (!snapshot.HasStream(format::StreamId::kDisk)) {
    return Status::InvalidArgument(a.snapshot + " has no disk stream; --rw needs one to write to");
  }
  if (a.overlay.empty()) {
    // Crashed mounts can leave empty private directories behind; the files
    // in them are already gone.
    auto reclaimed = overlay::ReclaimEphemeralDirs();
    if (!reclaimed.ok()) {
      HEXZ_LOG_WARN("reclaiming stale ephemeral overlays: %s",
                    reclaimed.status().ToString().c_str());
    } else if (*reclaimed > 0) {
      HEXZ_LOG_INFO("removed %d stale ephemeral overlay director%s", *reclaimed,
                    *reclaimed == 1 ? "y" : "ies");
    }
    return overlay::CreateEphemeralOverlayFiles();
  }
  HEXZ_ASSIGN_OR_RETURN(overlay::OverlayFiles files,
                        overlay::OpenOverlayFiles(a.overlay, overlay::LockMode::kExclusive,
                                                  /*create=*/true));
  files.names.base = a.snapshot;
  HEXZ_RETURN_IF_ERROR(overlay::ValidateOverlayFiles(files, snapshot.id(),
                                                     snapshot.StreamSize(format::StreamId::kDisk)));
  return files;
}

// -o: who besides the user may use the mount (FUSE only). Returns false
// with a message for anything else.
bool ParseMountOptions(const MountArgs& a, bool* allow_root, bool* allow_other) {
  for (const std::string& list : a.options) {
    size_t start = 0;
    while (start <= list.size()) {
      size_t comma = list.find(',', start);
      std::string o = list.substr(start, comma == std::string::npos ? comma : comma - start);
      start = comma == std::string::npos ? list.size() + 1 : comma + 1;
      if (o == "allow_root") {
        *allow_root = true;
      } else if (o == "allow_other") {
        *allow_other = true;
      } else if (!o.empty()) {
        std::fprintf(stderr, "hexz mount: unknown option -o %s (known: allow_root, allow_other)\n",
                     o.c_str());
        return false;
      }
    }
  }
  return true;
}

int Usage(const std::string& msg) {
  std::fprintf(stderr, "hexz mount: %s\n", msg.c_str());
  return 2;
}

// The usage errors found before anything is opened; 0 when there are none.
int CheckMountArgs(const MountArgs& a, bool* allow_root, bool* allow_other) {
  for (Status st : {CheckId("--uid", a.uid), CheckId("--gid", a.gid)}) {
    if (!st.ok()) return UsageError(st);
  }
  if (!a.overlay.empty() && !a.rw) {
    return Usage("--overlay " + a.overlay +
                 " needs --rw (an overlay holds the writes of a read-write mount); add --rw, or "
                 "drop --overlay for a read-only mount");
  }
  if (!ParseMountOptions(a, allow_root, allow_other)) return 2;
  if (a.nbd && !a.options.empty()) {
    return Usage("-o allow_root/allow_other are FUSE options, not for --nbd");
  }
  if (a.nbd && a.partitions) {
    return Usage(
        "--partitions shows partition files in a FUSE mount; with --nbd, choose the partition "
        "to mount with --partition N");
  }
  if (!a.nbd && a.partition) {
    return Usage(
        "--partition N chooses what --nbd mounts; a FUSE mount shows every partition "
        "as a file with --partitions");
  }
  if (a.partition && *a.partition == 0) {
    return Usage("--partition 0: partitions are numbered from 1 ('hexz info' lists them)");
  }
  return 0;
}

// The worker's settings for a FUSE mount of `snapshot` on `canonical`: who
// owns the files and may use the mount, the chain's descriptors and, with
// --rw, the overlay (opened, locked and checked as the user; the lock
// follows the descriptor into the worker).
Status FillMountConfig(const MountArgs& a, const format::Snapshot& snapshot,
                       const std::string& canonical, bool allow_root, bool allow_other, int log_fd,
                       ipc::WorkerConfig* config) {
  config->mode = ipc::WorkerMode::kFuse;
  config->mountpoint = canonical;
  config->uid = a.uid.value_or(getuid());
  config->gid = a.gid.value_or(getgid());
  config->allow_root = allow_root;
  config->allow_other = allow_other;
  config->partitions = a.partitions;
  // The mount is the user's alone unless -o allow_root/allow_other. A dead
  // worker's mount is taken away by a companion (WatchMount); libfuse's
  // auto_unmount is added where it works, which for a user (libfuse 3.14)
  // is only together with allow_root/allow_other.
  config->auto_unmount = getuid() == 0 || allow_root || allow_other;
  HEXZ_RETURN_IF_ERROR(
      AttachChain(a.snapshot, snapshot, a.remote->options(), log_fd, a.worker.daemon, config));
  if (a.rw) {
    HEXZ_ASSIGN_OR_RETURN(overlay::OverlayFiles files, OpenMountOverlay(a, snapshot));
    config->read_write = true;
    config->overlay_data_fd = std::move(files.data);
    config->overlay_meta_fd = std::move(files.meta);
    config->overlay_name = files.names.data;
    config->overlay_ephemeral = files.ephemeral;
  }
  return Status::Ok();
}

// Whenever the worker goes (killed, or the front-end killed first), a mount
// left dead is unmounted (fusermount3 -u -z), as auto_unmount would.
void WatchMount(const WorkerSession& session, const std::string& canonical) {
  Status watched = WatchWorker(session.pid(), session.old_mask(), [canonical] {
    for (int i = 0; i < 40; ++i) {  // the kernel may take a moment to abort it
      if (IsDeadFuseMount(canonical)) return CleanUpMount(canonical);
      auto entry = FindMount(canonical);
      if (!entry.ok() || !*entry || (*entry)->fstype != kHexzFsType) return;
      usleep(50 * 1000);
    }
  });
  if (!watched.ok()) HEXZ_LOG_WARN("%s", watched.ToString().c_str());
}

// The worker did not report ready: nothing of ours stays mounted.
int ReportNotMounted(const MountArgs& a, const std::string& canonical, const std::string& log_path,
                     const Status& status) {
  CleanUpMount(canonical);
  if (status.code() == base::Code::kCancelled) {
    std::fprintf(stderr, "hexz mount: interrupted before %s was mounted; nothing is left\n",
                 canonical.c_str());
    return 1;
  }
  std::string msg = status.ToString();
  if (a.worker.daemon) msg += " (worker log: " + log_path + ")";
  std::fprintf(stderr, "hexz mount: %s\n", msg.c_str());
  return 1;
}

void ReportMounted(const MountArgs& a, const std::string& canonical, pid_t pid,
                   const std::string& ready, const std::string& log_path) {
  const std::string what = ShownLocation(a.snapshot) +
                           (!a.rw               ? std::string()
                            : a.overlay.empty() ? std::string(" read-write (ephemeral overlay)")
                                                : " read-write (overlay " + a.overlay + ")");
  if (a.worker.daemon) {
    // Notes from the worker (in the foreground its log already showed them).
    for (size_t nl = ready.find('\n'); nl != std::string::npos; nl = ready.find('\n', nl + 1)) {
      std::printf("hexz: %s\n", ready.substr(nl + 1, ready.find('\n', nl + 1) - nl - 1).c_str());
    }
    std::printf("hexz: mounted %s on %s (worker pid %d, log %s)\n", what.c_str(), canonical.c_str(),
                static_cast<int>(pid), log_path.c_str());
    return;
  }
  std::fprintf(stderr, "hexz: mounted %s on %s (worker pid %d); Ctrl+C or SIGTERM unmounts\n",
               what.c_str(), canonical.c_str(), static_cast<int>(pid));
}

// Foreground: a signal unmounts (the worker then exits by itself); a worker
// that exits first ends the mount.
int SuperviseMount(WorkerSession& session, const std::string& canonical) {
  WorkerSession::Handlers handlers;
  handlers.on_signal = [&session, &canonical](int) -> std::optional<int> {
    Status st = UnmountFuse(canonical, /*lazy=*/false);
    if (st.code() == base::Code::kBusy) {
      std::fprintf(stderr, "hexz: %s; detaching it lazily instead\n", st.ToString().c_str());
      st = UnmountFuse(canonical, /*lazy=*/true);
    }
    auto entry = FindMount(canonical);
    session.Stop(!st.ok() && entry.ok() && *entry ? SIGTERM : 0, 10000);
    CleanUpMount(canonical);
    if (!st.ok()) return Fail(st);
    std::fprintf(stderr, "hexz: unmounted %s\n", canonical.c_str());
    return 0;
  };
  handlers.on_child_exit = [&canonical](int status) {
    if (ExitedCleanly(status)) {
      std::fprintf(stderr, "hexz: %s was unmounted; the worker exited\n", canonical.c_str());
      return 0;
    }
    CleanUpMount(canonical);
    std::fprintf(stderr, "hexz mount: the worker for %s died (%s); unmounted it\n",
                 canonical.c_str(), DescribeWaitStatus(status).c_str());
    return 1;
  };
  return session.Supervise(handlers);
}

int RunMount(const MountArgs& a) {
  bool allow_root = false, allow_other = false;
  if (int rc = CheckMountArgs(a, &allow_root, &allow_other); rc != 0) return rc;
  if (a.nbd) {
    // The kernel mount would hide the directory's files just the same.
    if (Status st = CheckMountpointEmpty(a.mountpoint, a.mountpoint); !st.ok()) return Fail(st);
    return RunNbdMount({a.snapshot, a.mountpoint, a.rw, a.overlay, a.worker,
                        a.uid.has_value() || a.gid.has_value(), a.partition, a.remote});
  }
  if (Status st = CheckWorkerOptions(a.worker); !st.ok()) return Usage(st.message());

  // 1. The snapshot chain, opened and validated with the user's rights.
  auto snapshot = OpenSnapshotAsUser(a.snapshot, a.remote->OpenOptions());
  if (!snapshot.ok()) return Fail(snapshot.status());
  ipc::WorkerConfig config;
  if (Status st = ApplyWorkerOptions(a.worker, **snapshot, &config); !st.ok()) {
    return UsageError(st);
  }
  // 2. The mountpoint.
  std::string canonical;
  if (Status st = CheckMountpoint(a.mountpoint, &canonical); !st.ok()) return Fail(st);
  // 3. The worker and its log.
  auto program = FindProgram("hexz-fused", "HEXZ_FUSED", "hexz-fused");
  if (!program.ok()) return Fail(program.status());
  DaemonLog log;
  if (a.worker.daemon) {
    auto opened = OpenDaemonLog(a.worker.log_file, BaseName(canonical) + ".log");
    if (!opened.ok()) return Fail(opened.status());
    log = std::move(*opened);
  }
  // 4. The settings, the chain's descriptors and the overlay.
  Status filled =
      FillMountConfig(a, **snapshot, canonical, allow_root, allow_other, log.fd.get(), &config);
  snapshot->reset();
  if (!filled.ok()) return Fail(filled);

  // Signals are taken by the session from here on: they unmount.
  auto session = WorkerSession::Launch(*program, config, log.fd.get());
  // Only the worker holds the chain and the overlay (and its lock) now.
  config = ipc::WorkerConfig();
  log.fd.reset();
  if (!session.ok()) return Fail(session.status().WithContext("starting " + *program));

  // Wait for the worker's reply; Ctrl+C meanwhile gives up on the mount.
  auto ready = session->AwaitReady();
  if (!ready.ok()) return ReportNotMounted(a, canonical, log.path, ready.status());
  WatchMount(*session, canonical);
  ReportMounted(a, canonical, session->pid(), *ready, log.path);
  if (a.worker.daemon) return 0;
  return SuperviseMount(*session, canonical);
}

}  // namespace

void AddMountCommand(CLI::App& parent, int* rc) {
  auto args = std::make_shared<MountArgs>();
  CLI::App* cmd = parent.add_subcommand(
      "mount", "Mount a snapshot: MOUNTPOINT shows the files 'disk' and 'memory' (FUSE)");
  cmd->add_option("snapshot", args->snapshot, "Snapshot file (*.st) or URL")->required();
  cmd->add_option("mountpoint", args->mountpoint, "Existing directory to mount on")->required();
  cmd->add_option("--uid", args->uid, "Owner shown for the files (default: your uid)");
  cmd->add_option("--gid", args->gid, "Group shown for the files (default: your gid)");
  AddWorkerOptions(cmd, &args->worker,
                   "Return once mounted; the worker runs in the background and logs to "
                   "$XDG_RUNTIME_DIR/hexz/<mountpoint name>.log (or ~/.cache/hexz/)");
  cmd->add_flag("--rw", args->rw,
                "Writable disk: writes go to a copy-on-write overlay (ephemeral unless "
                "--overlay is given)");
  cmd->add_option("--overlay", args->overlay,
                  "Keep the overlay in this file (and FILE.meta); created when missing; needs "
                  "--rw");
  cmd->add_option("-o,--options", args->options,
                  "Comma-separated: allow_root (root may use the mount too, e.g. for mount -o "
                  "loop on disk), allow_other (every user may); users need user_allow_other in "
                  "/etc/fuse.conf")
      ->expected(1)
      ->allow_extra_args(false)  // one value per -o; the positionals may follow
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_flag("--nbd", args->nbd,
                "Attach the disk as /dev/nbdN and mount its filesystem (needs the setuid "
                "hexz-nbd-helper and kernel NBD)");
  cmd->add_flag("--partitions", args->partitions,
                "Also show each partition of the disk as a file: disk-p1, disk-p2, ... (by "
                "partition number; for fuse2fs or a loop mount without offsets)");
  cmd->add_option("--partition", args->partition,
                  "With --nbd: mount partition N (default: the only mountable filesystem)");
  args->remote->Add(cmd);
  args->remote->AddDiskCache(cmd);
  cmd->callback([rc, args] { *rc = RunMount(*args); });
}

}  // namespace hexz::cli
