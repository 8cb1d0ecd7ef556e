#include "hexz/nbd_mount.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/base/fd.h"
#include "common/base/log.h"
#include "common/base/size.h"
#include "common/cache/worker_cache.h"
#include "common/disk/partition.h"
#include "common/format/snapshot.h"
#include "common/ipc/worker_protocol.h"
#include "common/nbd/client.h"
#include "hexz/cli_checks.h"
#include "hexz/commands.h"
#include "hexz/fetcher.h"
#include "hexz/mount_table.h"
#include "hexz/worker_session.h"

namespace hexz::cli {

namespace {

using base::Result;
using base::Status;
using base::UniqueFd;

#ifndef HEXZ_NBD_GROUP
#define HEXZ_NBD_GROUP "hexz"
#endif

constexpr size_t kProbeBytes = 65536 + 4096;  // covers btrfs' superblock at 64 KiB

std::string GroupName(gid_t gid) {
  const struct group* g = ::getgrgid(gid);
  return g != nullptr ? g->gr_name : std::to_string(gid);
}

std::string UserName() {
  const struct passwd* pw = ::getpwuid(getuid());
  return pw != nullptr ? pw->pw_name : std::to_string(getuid());
}

// A helper at `path` that we may not run (root:hexz 4750 and we are not in
// group hexz): the error that says which group to ask for. Ok otherwise.
Status CheckHelperGroup(const std::string& path) {
  struct stat st;
  if (geteuid() == 0 || ::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) ||
      ::access(path.c_str(), X_OK) == 0 || errno != EACCES) {
    return Status::Ok();
  }
  const std::string group = GroupName(st.st_gid), user = UserName();
  return Status(base::Code::kPermissionDenied,
                "you (" + user + ") are not in group " + group + ", whose members may run " + path +
                    " to mount with --nbd; ask an administrator: usermod -aG " + group + " " +
                    user + " (then log in again), or use a FUSE mount (without --nbd)",
                EACCES);
}

// The helper, checked to be able to do its job: setuid root (or we are
// root), and runnable by us (a member of its group, normally "hexz"). The
// program search skips files we may not execute, so the places it looks at
// are checked first, in its order, to name the group instead of saying
// "cannot find".
Result<std::string> FindHelper() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("HEXZ_NBD_HELPER"); env != nullptr && *env != '\0') {
    candidates.push_back(env);
  }
  char self[4096];
  if (ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1); n > 0) {
    std::string dir(self, static_cast<size_t>(n));
    dir.resize(dir.rfind('/'));
    for (const char* rel : {"/", "/../hexz-nbd-helper/", "/../libexec/hexz/"}) {
      candidates.push_back(dir + rel + "hexz-nbd-helper");
    }
  }
  for (const std::string& c : candidates) {
    if (::access(c.c_str(), F_OK) != 0) continue;
    HEXZ_RETURN_IF_ERROR(CheckHelperGroup(c));
    break;
  }
  HEXZ_ASSIGN_OR_RETURN(std::string path,
                        FindProgram("hexz-nbd-helper", "HEXZ_NBD_HELPER", "hexz-nbd-helper"));
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Status::FromErrno(errno, path);
  if (geteuid() != 0 && !(st.st_uid == 0 && (st.st_mode & S_ISUID))) {
    const std::string group = HEXZ_NBD_GROUP;
    return Status(base::Code::kPermissionDenied,
                  path +
                      " is not setuid root, so it cannot attach NBD devices. Install it with "
                      "'cmake --install' as root, or as root run: chown root:" +
                      group + " " + path + " && chmod 4750 " + path,
                  EPERM);
  }
  return path;
}

struct HelperResult {
  int status = 0;
  std::string out;
};

// Runs the helper with `args`, `sock` (or -1) as fd 3, a clean environment;
// its stderr is ours, its stdout is captured.
Result<HelperResult> RunHelper(const std::string& helper, const std::vector<std::string>& args,
                               int sock) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return Status::FromErrno(errno, "pipe");
  UniqueFd out_r(p[0]), out_w(p[1]);
  std::vector<std::string> all = {"hexz-nbd-helper"};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : all) argv.push_back(s.data());
  argv.push_back(nullptr);
  sigset_t none;
  sigemptyset(&none);
  pid_t pid = ::fork();
  if (pid < 0) return Status::FromErrno(errno, "fork");
  if (pid == 0) {
    sigprocmask(SIG_SETMASK, &none, nullptr);
    if (::dup2(out_w.get(), 1) < 0) _exit(127);
    if (sock == 3) {
      if (::fcntl(3, F_SETFD, 0) != 0) _exit(127);  // dup2(3, 3) would keep FD_CLOEXEC
    } else if (sock >= 0) {
      if (::dup2(sock, 3) < 0) _exit(127);
    } else {
      ::close(3);
    }
    ::close_range(4, ~0U, 0);
    char* envp[] = {nullptr};
    ::execve(helper.c_str(), argv.data(), envp);
    int e = errno;
    std::fprintf(
        stderr, "hexz: cannot run %s: %s%s\n", helper.c_str(), std::strerror(e),
        e == EACCES ? " (are you in the group that may run it? see hexz-nbd-helper(8))" : "");
    _exit(127);
  }
  out_w.reset();
  HelperResult r;
  char buf[512];
  for (;;) {
    ssize_t n = ::read(out_r.get(), buf, sizeof buf);
    if (n > 0) {
      if (r.out.size() < 4096) r.out.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  while (::waitpid(pid, &r.status, 0) < 0 && errno == EINTR) {
  }
  return r;
}

bool HelperOk(const HelperResult& r) { return ExitedCleanly(r.status); }

Status HelperFailure(const std::string& what, const HelperResult& r) {
  return Status::Unavailable("hexz-nbd-helper " + what + " failed (" +
                             DescribeWaitStatus(r.status) + "; its message is above)");
}

Status Detach(const std::string& helper, const std::string& mnt) {
  HEXZ_ASSIGN_OR_RETURN(HelperResult r, RunHelper(helper, {"detach", "--mountpoint", mnt}, -1));
  if (!HelperOk(r)) return HelperFailure("detach", r);
  return Status::Ok();
}

int Usage(const std::string& msg) {
  std::fprintf(stderr, "hexz mount: %s\n", msg.c_str());
  return 2;
}

}  // namespace

std::string DetectFsType(const uint8_t* head, size_t len) {
  auto at = [&](size_t off, const char* magic, size_t n) {
    return off + n <= len && std::memcmp(head + off, magic, n) == 0;
  };
  // ext2/3/4: s_magic 0xEF53 at 1024 + 56. The ext4 driver mounts all three.
  if (len >= 1082 && head[1080] == 0x53 && head[1081] == 0xEF) return "ext4";
  if (at(0, "XFSB", 4)) return "xfs";
  if (at(65600, "_BHRfS_M", 8)) return "btrfs";
  if (len >= 512 && head[510] == 0x55 && head[511] == 0xAA &&
      (at(54, "FAT", 3) || at(82, "FAT32", 5))) {
    return "vfat";
  }
  return "";
}

namespace {

// What --nbd mounts: the whole disk (partition 0) or one partition, and
// the filesystem type for the helper.
struct NbdTarget {
  uint32_t partition = 0;
  std::string fstype;
};

// The type the helper mounts a filesystem found by disk::ProbeFilesystem as
// ("ext4" also for ext2/3, "vfat"), or "" when --nbd does not mount it.
std::string HelperFsType(const disk::Filesystem& fs) {
  if (fs.type == "ext2" || fs.type == "ext3" || fs.type == "ext4") return "ext4";
  if (fs.type == "vfat") return "vfat";
  return "";
}

// hexz-nbd-helper attaches partitions 1 to this number (its --partition).
constexpr uint32_t kMaxHelperPartition = 128;

// The partition list for an error message (without the final newline).
std::string PartitionListForError(const disk::PartitionTable& t) {
  std::string list = disk::FormatPartitionList(t, "  ");
  if (!list.empty() && list.back() == '\n') list.pop_back();
  return list;
}

// Why partition `p` cannot be mounted with --nbd, or "" when it can.
std::string UnmountableReason(const disk::Partition& p) {
  if (p.number > kMaxHelperPartition) {
    return "is numbered above " + std::to_string(kMaxHelperPartition) +
           ", the highest partition hexz-nbd-helper attaches";
  }
  if (!HelperFsType(p.fs).empty()) return "";
  if (p.fs.type == "LVM2_member") {
    return "holds an LVM physical volume; hexz does not mount LVM volumes (yet): 'hexz mount "
           "--partitions' shows it as a file for LVM tools";
  }
  if (p.fs.type.empty()) return "holds no filesystem hexz recognizes";
  return "holds " + p.fs.type +
         ", and --nbd mounts only ext2/3/4 and vfat; use 'hexz mount --partitions' and fuse2fs or "
         "a loop mount of its partition file";
}

// The partition --partition N names, checked to be one --nbd can mount.
Result<NbdTarget> ChosenPartition(const std::string& name, const disk::PartitionTable& t,
                                  uint64_t disk_size, uint32_t number) {
  const std::string list = PartitionListForError(t);
  const disk::Partition* chosen = nullptr;
  for (const disk::Partition& p : t.partitions) {
    if (p.number == number) chosen = &p;
  }
  const std::string what = name + ": partition " + std::to_string(number);
  if (chosen == nullptr) {
    return Status::NotFound(name + " has no partition " + std::to_string(number) +
                            "; its partitions are:\n" + list);
  }
  if (disk::IsExtendedContainer(*chosen)) {
    return Status::InvalidArgument(what +
                                   " is an extended partition (it holds the logical partitions, "
                                   "5 and up); choose one of those:\n" +
                                   list);
  }
  if (chosen->size == 0 || chosen->start > disk_size || chosen->size > disk_size - chosen->start) {
    return Status::Corruption(what + " is empty or extends past the end of the disk");
  }
  if (std::string why = UnmountableReason(*chosen); !why.empty()) {
    return Status::Unsupported(what + " " + why);
  }
  return NbdTarget{number, HelperFsType(chosen->fs)};
}

// Without --partition, on a partitioned disk: the only partition --nbd can
// mount, or an error that lists them all.
Result<NbdTarget> OnlyPartition(const std::string& name, const disk::PartitionTable& t,
                                uint64_t disk_size) {
  std::vector<const disk::Partition*> candidates;
  std::vector<disk::Partition> usable = disk::UsablePartitions(t, disk_size);
  for (const disk::Partition& p : usable) {
    if (UnmountableReason(p).empty()) candidates.push_back(&p);
  }
  if (candidates.size() == 1) {
    return NbdTarget{candidates[0]->number, HelperFsType(candidates[0]->fs)};
  }
  std::string numbers;
  for (const disk::Partition* p : candidates) {
    numbers += (numbers.empty() ? "" : ", ") + std::to_string(p->number);
  }
  const std::string scheme = t.scheme == "gpt" ? "GPT" : "MBR";
  std::string msg = candidates.empty()
                        ? name + " is a partitioned disk (" + scheme +
                              ") without a partition --nbd can mount (ext2/3/4 or vfat)"
                        : name + " is a partitioned disk (" + scheme + ") with " +
                              std::to_string(candidates.size()) +
                              " filesystems --nbd can mount (partitions " + numbers +
                              "); choose one with --partition N";
  return Status::InvalidArgument(msg + ":\n" + PartitionListForError(t));
}

// What to mount from `snapshot`'s disk, read as the user: the whole disk's
// filesystem, or a partition's (--partition N, or the only candidate).
Result<NbdTarget> ChooseNbdTarget(const std::string& name,
                                  const std::shared_ptr<format::Snapshot>& snapshot,
                                  std::optional<uint32_t> partition) {
  if (!snapshot->HasStream(format::StreamId::kDisk)) {
    return Status::InvalidArgument(name + " has no disk stream to mount");
  }
  const uint64_t disk_size = snapshot->StreamSize(format::StreamId::kDisk);
  if (disk_size % 512 != 0) {
    return Status::Unsupported(name + ": the disk size " + std::to_string(disk_size) +
                               " is not a multiple of 512 bytes");
  }
  auto volume = format::Snapshot::StreamVolume(snapshot, format::StreamId::kDisk);
  if (!volume) return Status::Internal("no volume for the disk stream");
  auto read = [&volume](uint64_t off, void* buf, size_t len) {
    return volume->Read(off, buf, len);
  };
  HEXZ_ASSIGN_OR_RETURN(disk::PartitionTable table, disk::ReadPartitionTable(read, disk_size));
  if (table.scheme != "none") {
    return partition ? ChosenPartition(name, table, disk_size, *partition)
                     : OnlyPartition(name, table, disk_size);
  }
  if (partition) {
    return Status::InvalidArgument(
        name + " has no partition table (the whole disk holds " +
        (table.whole_disk.type.empty() ? std::string("no filesystem") : table.whole_disk.type) +
        "), so it has no partition " + std::to_string(*partition) + "; drop --partition");
  }
  std::vector<uint8_t> head(static_cast<size_t>(std::min<uint64_t>(kProbeBytes, disk_size)));
  HEXZ_RETURN_IF_ERROR(volume->Read(0, head.data(), head.size()));
  std::string fstype = DetectFsType(head.data(), head.size());
  if (fstype.empty()) {
    return Status::Unsupported(name +
                               ": no partition table, and no ext2/3/4, xfs, btrfs or vfat "
                               "filesystem at the start of the disk");
  }
  if (fstype != "ext4" && fstype != "vfat") {
    return Status::Unsupported(
        name + ": the disk holds " + fstype +
        ", and --nbd mounts only ext2/3/4 and vfat (the filesystems hexz-nbd-helper is tested "
        "with); use a FUSE mount (without --nbd) and, as root, mount -o loop,ro on its disk file");
  }
  return NbdTarget{0, fstype};
}

// The worker's settings (NBD mode, the disk export only), with the chain's
// descriptors (or a fetcher for a URL) and, with --rw, the overlay opened and locked as the user.
Status FillNbdConfig(const NbdMountArgs& a, const format::Snapshot& snapshot,
                     ipc::WorkerConfig* config) {
  config->mode = ipc::WorkerMode::kNbdServe;
  config->uid = getuid();
  config->gid = getgid();
  config->nbd_exports = {"disk"};
  if (a.rw) HEXZ_RETURN_IF_ERROR(AttachOverlay(a.overlay, a.snapshot, snapshot, config));
  remote::Options options = a.remote ? a.remote->options() : remote::Options();
  HEXZ_RETURN_IF_ERROR(AttachChain(a.snapshot, snapshot, options, -1, false, config));
  return ApplyWorkerOptions(a.worker, snapshot, config);
}

// The mountpoint, canonical (the helper checks it again, with the user's rights).
Result<std::string> CheckNbdMountpoint(const std::string& mountpoint) {
  auto canonical = CanonicalMountPath(mountpoint);
  if (!canonical.ok()) return canonical.status().WithContext("mountpoint");
  struct stat st;
  if (::stat(canonical->c_str(), &st) != 0) {
    return Status::FromErrno(errno, "mountpoint " + mountpoint);
  }
  if (!S_ISDIR(st.st_mode)) {
    return Status::InvalidArgument("mountpoint " + mountpoint + " is not a directory");
  }
  return canonical;
}

// Negotiates the export on `client` as the user, then has the helper attach
// the socket as /dev/nbdN and mount it. Returns the device.
Result<std::string> AttachDisk(const NbdMountArgs& a, const std::string& helper,
                               const NbdTarget& target, const std::string& canonical,
                               UniqueFd client) {
  auto exported = nbd::NegotiateClient(client.get(), "disk");
  if (!exported.ok()) return exported.status().WithContext("negotiating with the NBD server");
  char flags[16];
  std::snprintf(flags, sizeof flags, "0x%x", static_cast<unsigned>(exported->transmission_flags));
  std::vector<std::string> attach = {"attach",       "--size",   std::to_string(exported->size),
                                     "--block-size", "512",      "--flags",
                                     flags,          "--fstype", target.fstype,
                                     "--mountpoint", canonical};
  if (target.partition != 0) {
    attach.push_back("--partition");
    attach.push_back(std::to_string(target.partition));
  }
  if (a.rw) attach.push_back("--rw");
  auto attached = RunHelper(helper, attach, client.get());
  client.reset();  // the kernel holds the socket now (or nobody does)
  if (!attached.ok()) return attached.status();
  if (!HelperOk(*attached)) return HelperFailure("attach", *attached);
  return attached->out.substr(0, attached->out.find(' '));
}

// Foreground until a signal or until the server exits (hexz unmount). A
// signal unmounts and disconnects (helper detach); the server then sees the
// disconnect and exits after flushing the overlay.
int SuperviseNbdMount(WorkerSession& session, const std::string& helper,
                      const std::string& canonical, const std::string& device) {
  WorkerSession::Handlers handlers;
  handlers.on_signal = [&](int) -> std::optional<int> {
    Status detached = Detach(helper, canonical);
    if (!detached.ok()) {
      std::fprintf(stderr, "hexz mount: %s; %s stays mounted (try again, or 'hexz unmount %s')\n",
                   detached.ToString().c_str(), canonical.c_str(), canonical.c_str());
      return std::nullopt;
    }
    int status = session.Stop(0, 20000);
    if (!ExitedCleanly(status)) {
      std::fprintf(stderr, "hexz mount: the NBD server did not stop cleanly (%s)\n",
                   DescribeWaitStatus(status).c_str());
      return 1;
    }
    std::fprintf(stderr, "hexz: unmounted %s and detached %s\n", canonical.c_str(), device.c_str());
    return 0;
  };
  handlers.on_child_exit = [&](int status) {
    bool clean = ExitedCleanly(status);
    auto entry = FindMount(canonical);
    bool still = entry.ok() && *entry && (*entry)->source == device;
    if (clean && !still) {
      std::fprintf(stderr, "hexz: %s was unmounted; the NBD server exited\n", canonical.c_str());
      return 0;
    }
    std::fprintf(stderr, "hexz mount: the NBD server for %s exited (%s); detaching %s\n",
                 canonical.c_str(), DescribeWaitStatus(status).c_str(), device.c_str());
    if (still) (void)Detach(helper, canonical);
    return 1;
  };
  return session.Supervise(handlers);
}

}  // namespace

int RunNbdMount(const NbdMountArgs& a) {
  if (!a.overlay.empty() && !a.rw) return Usage("--overlay goes with --rw");
  if (a.rw && a.overlay.empty()) return Usage("--nbd --rw needs --overlay PATH (where writes go)");
  if (a.uid_gid) return Usage("--uid/--gid apply to FUSE mounts, not to --nbd");
  if (a.worker.daemon) {
    return Usage(
        "--nbd runs in the foreground (Ctrl+C, SIGTERM or 'hexz unmount MNT' from another "
        "shell ends it)");
  }

  // 1. The snapshot, the overlay, the partition and the filesystem type,
  // as the user.
  auto snapshot =
      OpenSnapshotAsUser(a.snapshot, a.remote ? a.remote->OpenOptions() : format::OpenOptions());
  if (!snapshot.ok()) return Fail(snapshot.status());
  auto target = ChooseNbdTarget(ShownLocation(a.snapshot), *snapshot, a.partition);
  if (!target.ok()) return Fail(target.status());
  ipc::WorkerConfig config;
  Status filled = FillNbdConfig(a, **snapshot, &config);
  snapshot->reset();
  if (!filled.ok()) return Fail(filled);

  // 2. The mountpoint and 3. the programs.
  auto canonical = CheckNbdMountpoint(a.mountpoint);
  if (!canonical.ok()) return Fail(canonical.status());
  auto helper = FindHelper();
  if (!helper.ok()) return Fail(helper.status());
  auto program = FindProgram("hexz-fused", "HEXZ_FUSED", "hexz-fused");
  if (!program.ok()) return Fail(program.status());

  // 4. The private endpoint: a socketpair, one end for the worker.
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return Fail(Status::FromErrno(errno, "socketpair"));
  }
  UniqueFd client(sv[0]);
  config.nbd_listen_fd = UniqueFd(sv[1]);
  auto session = WorkerSession::Launch(*program, config, -1);
  config = ipc::WorkerConfig();  // the worker holds the overlay lock now
  if (!session.ok()) return Fail(session.status());
  auto ready = session->AwaitReady();
  if (!ready.ok()) {
    std::fprintf(stderr, "hexz mount: %s\n", ready.status().ToString().c_str());
    return 1;
  }

  // 5. Negotiate as the user, then hand the socket to the helper.
  auto device = AttachDisk(a, *helper, *target, *canonical, std::move(client));
  if (!device.ok()) {
    session->Stop(SIGTERM, 10000);
    return Fail(device.status());
  }
  const std::string shown = ShownLocation(a.snapshot);
  const std::string what =
      target->partition == 0 ? shown : shown + " partition " + std::to_string(target->partition);
  std::fprintf(stderr,
               "hexz: mounted %s (%s) on %s via %s (%s; NBD server pid %d); Ctrl+C, SIGTERM or "
               "'hexz unmount %s' unmounts\n",
               what.c_str(), target->fstype.c_str(), canonical->c_str(), device->c_str(),
               a.rw ? "read-write" : "read-only", static_cast<int>(session->pid()),
               canonical->c_str());
  return SuperviseNbdMount(*session, *helper, *canonical, *device);
}

int RunNbdUnmount(const std::string& canonical_mountpoint) {
  auto helper = FindHelper();
  if (!helper.ok()) return Fail(helper.status());
  Status st = Detach(*helper, canonical_mountpoint);
  if (!st.ok()) return Fail(st);
  std::printf("hexz: unmounted %s\n", canonical_mountpoint.c_str());
  return 0;
}

}  // namespace hexz::cli
