/* hexz-nbd-helper: the setuid-root helper for `hexz mount --nbd`.
 *
 * Read SECURITY.md ("The NBD helper") before changing anything here.
 *
 * Invariant: the helper grants nothing beyond a nosuid, nodev mount of a block
 * device served by the user's own, already-connected NBD socket, on a directory
 * that the user owns, with error handling and file owners that the image cannot
 * choose; and `detach` undoes only attachments that the same user made through
 * this helper. No lock shared by users is ever held: a stuck or stopped helper
 * holds only its own device.
 *
 * How: the unprivileged front-end negotiates NBD itself and passes the
 * connected socket as fd 3 together with the numbers it learned (size, block
 * size, transmission flags). This program never reads or writes that socket,
 * parses no network data and no snapshot data, executes no other program, and
 * opens user-named paths only with the user's filesystem rights (setfsuid).
 * The kernel NBD client is set up with the NBD ioctls directly (no nbd-client).
 *
 * Order of work, for auditors: process hygiene -> exact argument checks ->
 * mountpoint checks (as the user) -> kernel NBD support -> device work. Nothing
 * touches a device before every user input has been checked.
 *
 * C11 + POSIX/Linux, libc only. Every check is one function; on any doubt the
 * helper refuses (exit 1) or rejects its arguments (exit 2).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/magic.h>
#include <linux/nbd.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/fsuid.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* HEXZ_VERSION and HEXZ_NBD_GROUP come from CMake. */

enum { kExitOk = 0, kExitFail = 1, kExitUsage = 2 };

#define SOCK_FD 3               /* the negotiated NBD socket, attach only */
#define RUN_DIR "/run/hexz-nbd" /* root-owned 0700: attachment records */
#define NBD_BLOCK_MAJOR 43      /* Documentation/admin-guide/devices.txt */
#define MAX_DEVICES 1024        /* scan at most /dev/nbd0../dev/nbd1023 */
#define MAX_SIZE (1ULL << 60)   /* 1 EiB: far beyond any disk, far below loff_t */
#define WAIT_STEPS 1000         /* x 10 ms = 10 s for the device to come up/down */
#define IO_TIMEOUT 30           /* s: a request the server does not answer fails */
#define RECORD_MAX 8192
#define MAX_PARTITION 128 /* GPT's usual limit; the driver shows max_part of them */
_Static_assert(MAX_SIZE <= ULONG_MAX, "NBD_SET_SIZE takes the size as an unsigned long");

static const char kUsage[] =
    "usage: hexz-nbd-helper attach --size BYTES --block-size 512|1024|2048|4096\n"
    "           --flags HEX --fstype TYPE --mountpoint /ABS/PATH [--partition N] [--rw]\n"
    "           (the negotiated NBD socket on fd 3)\n"
    "       hexz-nbd-helper detach --mountpoint /ABS/PATH\n"
    "       hexz-nbd-helper --version\n";

/* The invoking user: the real ids, fixed at startup. */
static uid_t g_uid;
static gid_t g_gid;

/* ---- messages --------------------------------------------------------- */

__attribute__((noreturn, format(printf, 2, 3))) static void Exit(int code, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("hexz-nbd-helper: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  if (code == kExitUsage) fputs(kUsage, stderr);
  exit(code);
}
#define Die(...) Exit(kExitFail, __VA_ARGS__)
#define Usage(...) Exit(kExitUsage, __VA_ARGS__)

/* ---- process hygiene -------------------------------------------------- */

/* fds 0-2 must be open, or a file we open later could become "stderr" and
 * receive our messages. */
static void EnsureStdFds(void) {
  for (int fd = 0; fd <= 2; fd++) {
    if (fcntl(fd, F_GETFD) == -1 && errno == EBADF) {
      if (open("/dev/null", O_RDWR) != fd) abort();
    }
  }
}

/* We need root to attach and mount. A plain copy run by a user has no
 * privilege and must say how to install it instead of failing later. */
static void RequireRoot(void) {
  if (geteuid() != 0) {
    char self[PATH_MAX] = "PATH";
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) self[n] = '\0';
    Die("not running as root: %s must be installed setuid root for group %s (as root: chown "
        "root:%s %s && chmod 4750 %s), or be run by root",
        self, HEXZ_NBD_GROUP, HEXZ_NBD_GROUP, self, self);
  }
}

/* The environment and signal state come from the user: drop both. PR_SET_NO_NEW_PRIVS
 * is set here, at once: it only forbids *later* execve calls from gaining
 * privileges and does not remove the euid 0 we already hold, so it costs the
 * helper nothing (it executes no program) and closes that door for good.
 * Non-dumpable keeps the user from ptracing or core-dumping us. */
static void CleanProcess(void) {
  if (clearenv() != 0) Die("cannot clear the environment");
  umask(022);
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) Die("cannot set no_new_privs: %m");
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) Die("cannot clear the dumpable flag: %m");
  /* Ctrl+C in the middle of attach must not leave a half-made attachment:
   * the user can still SIGKILL us, which SECURITY.md covers. */
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, NULL);
  if (chdir("/") != 0) Die("cannot chdir to /: %m");
  /* The user's rlimits must not make a step fail halfway (say, the record
   * write after the mount) nor kill the device process (CPU): lift them.
   * Raising a hard limit needs CAP_SYS_RESOURCE, which containers may lack;
   * then the soft limit goes up to the hard one, and a step that still
   * fails says what failed. */
  static const int kLimits[] = {RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_AS, RLIMIT_DATA, RLIMIT_CPU};
  for (size_t i = 0; i < sizeof kLimits / sizeof kLimits[0]; i++) {
    struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
    if (kLimits[i] == RLIMIT_NOFILE) rl.rlim_cur = rl.rlim_max = 1024;
    if (setrlimit(kLimits[i], &rl) != 0 && getrlimit(kLimits[i], &rl) == 0) {
      rl.rlim_cur = rl.rlim_max;
      setrlimit(kLimits[i], &rl);
    }
  }
}

/* Only fds 0-2, plus the NBD socket on fd 3 for attach, may be inherited. */
static void CloseInheritedFds(bool keep_sock) {
  unsigned first = keep_sock ? SOCK_FD + 1 : SOCK_FD;
  if (close_range(first, ~0U, 0) != 0) Die("cannot close inherited descriptors: %m");
}

/* ---- argument parsing (exact, closed set) ----------------------------- */

/* Decimal digits only: no sign, no spaces, no leading zeros, no overflow. */
static bool ParseDecimal(const char* s, uint64_t max, uint64_t* out) {
  uint64_t v = 0;
  if (s[0] == '\0' || (s[0] == '0' && s[1] != '\0')) return false;
  for (const char* p = s; *p; p++) {
    if (*p < '0' || *p > '9') return false;
    unsigned d = (unsigned)(*p - '0');
    if (v > (max - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

/* The filesystems we agree to mount (the ones the test suite mounts). Their
 * options are fixed in MountFs, never chosen by the user or the image. idmap:
 * the image's owners are mapped to the caller (ext4, the driver that also
 * mounts ext2 and ext3); vfat has no owners and gets the caller's uid/gid. */
struct FsType {
  const char* name;
  bool idmap;
};
static const struct FsType kFsTypes[] = {{"ext4", true}, {"vfat", false}};

/* Absolute, bounded, no control characters (they would corrupt records and
 * messages), no "." or ".." components, no trailing slash except "/". */
static bool ValidMountpointArg(const char* p) {
  size_t n = strlen(p);
  if (n < 2 || n >= PATH_MAX || p[0] != '/' || p[n - 1] == '/') return false;
  for (const char* c = p; *c; c++) {
    if ((unsigned char)*c < 0x20 || *c == 0x7f) return false;
    if (c[0] != '/') continue;
    if (c[1] == '/') return false;
    if (c[1] == '.' && (c[2] == '/' || c[2] == '\0')) return false;
    if (c[1] == '.' && c[2] == '.' && (c[3] == '/' || c[3] == '\0')) return false;
  }
  return true;
}

struct Args {
  uint64_t size;
  uint64_t block_size;
  uint16_t flags;
  const struct FsType* fs;
  const char* mountpoint;
  uint64_t partition; /* 0: the whole disk */
  bool rw;
};

/* Options come as "--name VALUE" pairs (or the bare "--rw" for attach), each
 * at most once. Anything else is a usage error. */
static void ParseArgs(int argc, char** argv, bool attach, struct Args* a) {
  const char *size = NULL, *bs = NULL, *flags = NULL, *fs = NULL, *mp = NULL, *part = NULL;
  memset(a, 0, sizeof *a);
  for (int i = 2; i < argc; i++) {
    const char* opt = argv[i];
    if (attach && strcmp(opt, "--rw") == 0) {
      if (a->rw) Usage("--rw given twice");
      a->rw = true;
      continue;
    }
    static const char* kNames[] = {"--mountpoint", "--size",   "--block-size",
                                   "--flags",      "--fstype", "--partition"};
    const char** slots[] = {&mp, &size, &bs, &flags, &fs, &part};
    const char** slot = NULL;
    for (int k = 0; k < (attach ? 6 : 1); k++) {
      if (strcmp(opt, kNames[k]) == 0) slot = slots[k];
    }
    if (slot == NULL) Usage("unknown argument '%s' for %s", opt, argv[1]);
    if (*slot != NULL) Usage("%s given twice", opt);
    if (i + 1 >= argc) Usage("%s needs a value", opt);
    *slot = argv[++i];
  }
  if (mp == NULL) Usage("--mountpoint is required");
  if (!ValidMountpointArg(mp)) {
    Usage(
        "--mountpoint '%s' must be an absolute path without '.', '..', '//' or a "
        "trailing '/'",
        mp);
  }
  a->mountpoint = mp;
  if (!attach) return;
  if (!size || !bs || !flags || !fs)
    Usage("attach needs --size, --block-size, --flags and --fstype");
  if (!ParseDecimal(bs, 4096, &a->block_size) || (a->block_size != 512 && a->block_size != 1024 &&
                                                  a->block_size != 2048 && a->block_size != 4096)) {
    Usage("--block-size '%s' must be 512, 1024, 2048 or 4096", bs);
  }
  if (!ParseDecimal(size, MAX_SIZE, &a->size) || a->size == 0 || a->size % a->block_size) {
    Usage(
        "--size '%s' must be a decimal byte count, > 0, at most 2^60, and a multiple of "
        "the block size",
        size);
  }
  size_t nf = strlen(flags); /* "0x" then 1-4 hex digits: the 16-bit flags */
  if (strncmp(flags, "0x", 2) != 0 || nf < 3 || nf > 6 ||
      strspn(flags + 2, "0123456789abcdefABCDEF") != nf - 2) {
    Usage("--flags '%s' must be 0x followed by 1-4 hex digits", flags);
  }
  a->flags = (uint16_t)strtoul(flags + 2, NULL, 16);
  if (!(a->flags & NBD_FLAG_HAS_FLAGS) || (a->flags & ~0x0fffu)) {
    Usage("--flags %s: bit 0 (has flags) must be set and bits 12-15 must be clear", flags);
  }
  if (part != NULL && (!ParseDecimal(part, MAX_PARTITION, &a->partition) || a->partition == 0)) {
    Usage("--partition '%s' must be a number from 1 to %d", part, MAX_PARTITION);
  }
  for (size_t i = 0; i < sizeof kFsTypes / sizeof kFsTypes[0]; i++) {
    if (strcmp(kFsTypes[i].name, fs) == 0) a->fs = &kFsTypes[i];
  }
  if (a->fs == NULL) {
    Usage(
        "--fstype '%s' is not allowed (allowed: ext4, which also mounts ext2 and ext3, "
        "and vfat)",
        fs);
  }
}

/* ---- acting as the user ----------------------------------------------- */

/* Paths that the user names are resolved with the user's filesystem rights
 * (fsuid/fsgid; the supplementary groups are still the user's). Like
 * bubblewrap, we check that the switch really happened. */
static void SetFsIds(uid_t uid, gid_t gid) {
  setfsgid(gid);
  setfsuid(uid);
  if ((uid_t)setfsuid((uid_t)-1) != uid || (gid_t)setfsgid((gid_t)-1) != gid) {
    Die("cannot switch filesystem ids to %u:%u", (unsigned)uid, (unsigned)gid);
  }
}
static void AsUser(void) { SetFsIds(g_uid, g_gid); }
static void AsRoot(void) { SetFsIds(0, 0); }

/* ---- mountpoint checks ------------------------------------------------ */

/* Mounting over /proc, /sys, device or pseudo filesystems could change how
 * the system behaves for everybody; only ordinary data filesystems qualify. */
static void CheckMountpointFsType(int fd, const char* path) {
  static const unsigned long kAllowed[] = {
      EXT4_SUPER_MAGIC, XFS_SUPER_MAGIC,  BTRFS_SUPER_MAGIC,
      TMPFS_MAGIC,      F2FS_SUPER_MAGIC, 0x2fc12fc1UL /* zfs */,
  };
  struct statfs sfs;
  if (fstatfs(fd, &sfs) != 0) Die("cannot statfs mountpoint %s: %m", path);
  for (size_t i = 0; i < sizeof kAllowed / sizeof kAllowed[0]; i++) {
    if ((unsigned long)sfs.f_type == kAllowed[i]) return;
  }
  Die("mountpoint %s is on a filesystem of type 0x%lx, which is not allowed "
      "(allowed: ext2/3/4, xfs, btrfs, tmpfs, f2fs, zfs; never proc, sysfs or devices)",
      path, (unsigned long)sfs.f_type);
}

/* Pins the mountpoint: later steps use this fd (via /proc/self/fd/N), so
 * swapping the path for a symlink after the checks changes nothing.
 * O_NOFOLLOW refuses a symlink as the last component; earlier components are
 * resolved with the user's rights, as for any path the user could open. */
/* must_own (attach): stricter than fusermount3, the user must own the
 * directory. A directory that is merely writable (a shared one) would let the
 * user hide another user's files behind a mount of their choice. */
static int OpenMountpointAt(int dir_fd, const char* name, const char* path, bool must_own,
                            struct stat* st) {
  int fd = openat(dir_fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) Die("cannot open mountpoint %s as uid %u: %m", path, (unsigned)g_uid);
  if (fstat(fd, st) != 0) Die("cannot stat mountpoint %s: %m", path);
  if (S_ISLNK(st->st_mode)) Die("mountpoint %s is a symbolic link; give the real directory", path);
  if (!S_ISDIR(st->st_mode)) Die("mountpoint %s is not a directory", path);
  if (must_own) CheckMountpointFsType(fd, path);
  if (must_own && st->st_uid != g_uid) {
    Die("mountpoint %s is owned by uid %u, not by you (uid %u); mount on a directory you own", path,
        (unsigned)st->st_uid, (unsigned)g_uid);
  }
  return fd;
}

/* The socket must be a connected stream socket. We never read or write it:
 * it goes straight to the kernel. */
static void CheckSocketFd(void) {
  struct stat st;
  int type = 0, domain = 0;
  socklen_t len = sizeof type;
  struct sockaddr_storage peer;
  socklen_t plen = sizeof peer;
  if (fstat(SOCK_FD, &st) != 0)
    Die("fd %d is not open: pass the connected NBD socket as fd %d", SOCK_FD, SOCK_FD);
  if (!S_ISSOCK(st.st_mode))
    Die("fd %d is not a socket: pass the connected NBD socket as fd %d", SOCK_FD, SOCK_FD);
  if (getsockopt(SOCK_FD, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) {
    Die("fd %d is not a stream socket", SOCK_FD);
  }
  len = sizeof domain;
  if (getsockopt(SOCK_FD, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 ||
      (domain != AF_UNIX && domain != AF_INET && domain != AF_INET6)) {
    Die("fd %d is not a unix or TCP socket", SOCK_FD);
  }
  if (getpeername(SOCK_FD, (struct sockaddr*)&peer, &plen) != 0) {
    Die("fd %d is not connected: %m", SOCK_FD);
  }
}

/* ---- NBD devices (root from here on, fixed paths only) ---------------- */

static bool PathExists(const char* path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* Reads a sysfs number such as /sys/block/nbd0/size; -1 when absent. */
static long long ReadSysNumber(const char* path) {
  long long v = -1;
  FILE* f = fopen(path, "re");
  if (f == NULL) return -1;
  if (fscanf(f, "%lld", &v) != 1) v = -1;
  fclose(f);
  return v;
}

/* The pinned mountpoint is reached through /proc/self/fd: /proc must be
 * the real proc filesystem. */
static void CheckProc(void) {
  struct statfs sfs;
  if (statfs("/proc/self/fd", &sfs) != 0 || sfs.f_type != PROC_SUPER_MAGIC) {
    Die("/proc is not mounted (or is not procfs); hexz-nbd-helper needs /proc/self/fd");
  }
}

/* Tell the user exactly what is missing instead of a bare ENOENT. */
static void CheckNbdSupport(void) {
  if (PathExists("/dev/nbd0")) return;
  if (!PathExists("/sys/module/nbd")) {
    Die("this kernel has no NBD support loaded (/sys/module/nbd and /dev/nbd0 are missing); "
        "load it as root with: modprobe nbd");
  }
  Die("the nbd module is loaded but /dev/nbd0 is missing: check that /dev is devtmpfs, or "
      "reload with: modprobe -r nbd && modprobe nbd nbds_max=16");
}

/* A device is busy when the kernel shows a receiver pid or a size for it. */
static bool DeviceInUse(unsigned n) {
  char path[64];
  snprintf(path, sizeof path, "/sys/block/nbd%u/pid", n);
  if (PathExists(path)) return true;
  snprintf(path, sizeof path, "/sys/block/nbd%u/size", n);
  return ReadSysNumber(path) != 0;
}

/* The device number in a sysfs "dev" file ("43:16"); 0 when absent. */
static dev_t ReadSysDev(const char* path) {
  unsigned ma, mi;
  FILE* f = fopen(path, "re");
  if (f == NULL) return 0;
  int n = fscanf(f, "%u:%u", &ma, &mi);
  fclose(f);
  return n == 2 ? makedev(ma, mi) : 0;
}

/* The node of /dev/nbdN, or of its partition K (/dev/nbdNpK), and its sysfs
 * "dev" file. */
static void DeviceNames(unsigned n, unsigned partition, char node[48], char sys[96]) {
  if (partition == 0) {
    snprintf(node, 48, "/dev/nbd%u", n);
    snprintf(sys, 96, "/sys/block/nbd%u/dev", n);
  } else {
    snprintf(node, 48, "/dev/nbd%up%u", n, partition);
    snprintf(sys, 96, "/sys/block/nbd%u/nbd%up%u/dev", n, n, partition);
  }
}

/* A device node under /dev must be the NBD block device (or partition) whose
 * number sysfs reports, not something else that happens to have that name. */
static void CheckDeviceNode(const char* node, const struct stat* st, const char* sys_dev) {
  if (!S_ISBLK(st->st_mode) || major(st->st_rdev) != NBD_BLOCK_MAJOR ||
      st->st_rdev != ReadSysDev(sys_dev)) {
    Die("%s is not the NBD block device that %s names", node, sys_dev);
  }
}

static int OpenNbdDevice(unsigned n) {
  char path[48], sys[96];
  DeviceNames(n, 0, path, sys);
  int fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) Die("cannot open %s: %m", path);
  CheckDeviceNode(path, &st, sys);
  return fd;
}

/* Hands our socket to the kernel. NBD_SET_SOCK first: it claims the device
 * for this task, so a concurrent setup by anyone else fails with EBUSY. */
static bool ConfigureDevice(int fd, const struct Args* a) {
  if (ioctl(fd, NBD_SET_SOCK, (unsigned long)SOCK_FD) != 0) {
    if (errno == EBUSY) return false;
    Die("NBD_SET_SOCK failed: %m");
  }
  /* Read-only unless --rw: the device itself refuses writes, not just the mount. */
  unsigned long flags = a->flags | (a->rw ? 0 : NBD_FLAG_READ_ONLY);
  /* A server that stops answering fails its requests after IO_TIMEOUT instead
   * of hanging every reader (and this helper's mount()) for ever. */
  if (ioctl(fd, NBD_SET_BLKSIZE, (unsigned long)a->block_size) != 0 ||
      ioctl(fd, NBD_SET_TIMEOUT, (unsigned long)IO_TIMEOUT) != 0 ||
      ioctl(fd, NBD_SET_SIZE, (unsigned long)a->size) != 0 ||
      ioctl(fd, NBD_SET_FLAGS, flags) != 0) {
    int e = errno;
    ioctl(fd, NBD_CLEAR_SOCK);
    errno = e;
    Die("configuring the NBD device failed: %m");
  }
  return true;
}

/* The child that keeps the device running: NBD_DO_IT blocks until the device
 * is disconnected. It becomes fully root (the user can no longer signal it;
 * only `detach` or root stop it), leaves the session (so Ctrl+C in the user's
 * terminal cannot tear the device down before the unmount), holds no other
 * descriptor (no lock, no pipe of the caller) and no cwd on the user's fs. */
__attribute__((noreturn)) static void RunDeviceChild(int nbd_fd) {
  setsid();
  if (setgroups(0, NULL) != 0 || setresgid(0, 0, 0) != 0 || setresuid(0, 0, 0) != 0) _exit(125);
  if (dup2(nbd_fd, 3) != 3) _exit(125);
  close_range(4, ~0U, 0);
  int null_fd = open("/dev/null", O_RDWR);
  if (null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(null_fd, 1) < 0 || dup2(null_fd, 2) < 0)
    _exit(125);
  if (null_fd > 2) close(null_fd);
  int rc = ioctl(3, NBD_DO_IT);
  int e = rc == 0 ? 0 : errno;
  ioctl(3, NBD_CLEAR_QUE);
  ioctl(3, NBD_CLEAR_SOCK);
  _exit(e > 0 && e < 125 ? e : 0);
}

static void SleepTick(void) {
  struct timespec ts = {0, 10 * 1000 * 1000};
  nanosleep(&ts, NULL);
}

/* Waits until sysfs shows the device running with its size (the kernel sets
 * the capacity just after it creates the pid file), or the child gave up. */
static bool WaitDeviceUp(unsigned n, uint64_t size, pid_t child, int* child_errno) {
  char pid_path[64], size_path[64];
  snprintf(pid_path, sizeof pid_path, "/sys/block/nbd%u/pid", n);
  snprintf(size_path, sizeof size_path, "/sys/block/nbd%u/size", n);
  for (int i = 0; i < WAIT_STEPS; i++) {
    int status;
    if (waitpid(child, &status, WNOHANG) == child) {
      *child_errno = WIFEXITED(status) ? WEXITSTATUS(status) : 0;
      return false;
    }
    if (PathExists(pid_path) && ReadSysNumber(size_path) == (long long)(size / 512)) return true;
    SleepTick();
  }
  *child_errno = ETIMEDOUT;
  return false;
}

static bool WaitDeviceDown(unsigned n) {
  char path[64];
  snprintf(path, sizeof path, "/sys/block/nbd%u/pid", n);
  for (int i = 0; i < WAIT_STEPS; i++) {
    if (!PathExists(path)) return true;
    SleepTick();
  }
  return false;
}

/* Partitions appear when the running device is next opened (the kernel then
 * reads the partition table): open it once, then wait for the node. */
static bool WaitPartition(unsigned n, unsigned partition, const char* node) {
  char whole[48], sys[96];
  DeviceNames(n, partition, whole, sys);
  snprintf(whole, sizeof whole, "/dev/nbd%u", n);
  int fd = open(whole, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) close(fd);
  for (int i = 0; i < WAIT_STEPS / 5; i++) {
    struct stat st;
    if (PathExists(sys) && stat(node, &st) == 0) {
      CheckDeviceNode(node, &st, sys);
      return true;
    }
    SleepTick();
  }
  return false;
}

static void DisconnectDevice(int fd) {
  ioctl(fd, NBD_DISCONNECT);
  ioctl(fd, NBD_CLEAR_SOCK);
}

/* ---- records: /run/hexz-nbd/nbdN -------------------------------------- */

/* Creates or checks RUN_DIR: a root-owned directory nobody else can enter. */
static int OpenRunDir(void) {
  if (mkdir(RUN_DIR, 0700) != 0 && errno != EEXIST) Die("cannot create %s: %m", RUN_DIR);
  int fd = open(RUN_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) Die("cannot open %s: %m", RUN_DIR);
  if (st.st_uid != 0 || (st.st_mode & 077) != 0) {
    Die("%s must be owned by root with mode 0700 (it is uid %u, mode %o); remove it", RUN_DIR,
        (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
  }
  return fd;
}

/* One lock per device (RUN_DIR/nbdN.lock), held until exit by the attach
 * that claims the device and by a detach of it, so that a detach never
 * removes a newer attachment's record. There is no machine-wide lock: a
 * helper stuck on its caller (a full stderr pipe, SIGSTOP, a mute server)
 * holds only its own device. Waits are bounded; returns -1 on timeout. */
static int LockDevice(int dir_fd, unsigned n, int tries) {
  char name[32];
  snprintf(name, sizeof name, "nbd%u.lock", n);
  int fd = openat(dir_fd, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) Die("cannot open %s/%s: %m", RUN_DIR, name);
  for (int i = 0; flock(fd, LOCK_EX | LOCK_NB) != 0; i++) {
    if (errno != EWOULDBLOCK || i >= tries) {
      close(fd);
      return -1;
    }
    SleepTick();
  }
  return fd;
}

struct Record {
  unsigned device;
  unsigned partition;
  uid_t uid;
  uint64_t mnt_id;
  long pid;
  char mountpoint[PATH_MAX];
};

/* Written to a temporary name, then renamed, so a record is whole or absent. */
static bool WriteRecord(int dir_fd, const struct Record* r) {
  char name[32], tmp[40];
  snprintf(name, sizeof name, "nbd%u", r->device);
  snprintf(tmp, sizeof tmp, "nbd%u.tmp", r->device);
  int fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
  bool ok =
      fd >= 0 &&
      dprintf(fd,
              "hexz-nbd-helper record 1\ndevice %u\npartition %u\nuid %u\nmnt_id %llu\npid %ld\n"
              "mountpoint %s\n",
              r->device, r->partition, (unsigned)r->uid, (unsigned long long)r->mnt_id, r->pid,
              r->mountpoint) > 0 &&
      fsync(fd) == 0;
  if (fd >= 0) ok = close(fd) == 0 && ok;
  return ok && renameat(dir_fd, tmp, dir_fd, name) == 0;
}

/* Records are written by this program only, yet parsed strictly anyway. */
static bool ReadRecord(int dir_fd, const char* name, struct Record* r) {
  char buf[RECORD_MAX + 1];
  int fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t n = read(fd, buf, RECORD_MAX);
  close(fd);
  if (n <= 0 || n == RECORD_MAX) return false;
  buf[n] = '\0';
  int used = 0;
  memset(r, 0, sizeof *r);
  if (sscanf(buf,
             "hexz-nbd-helper record 1\ndevice %u\npartition %u\nuid %u\nmnt_id %" SCNu64 "\npid "
             "%ld\nmountpoint %n",
             &r->device, &r->partition, &r->uid, &r->mnt_id, &r->pid, &used) != 5 ||
      used == 0) {
    return false;
  }
  char *mp = buf + used, *nl = strchr(mp, '\n');
  if (nl == NULL || nl[1] != '\0' || (size_t)(nl - mp) >= sizeof r->mountpoint) return false;
  memcpy(r->mountpoint, mp, (size_t)(nl - mp));
  char want[32];
  snprintf(want, sizeof want, "nbd%u", r->device);
  return strcmp(want, name) == 0;
}

/* Finds the record of the mount with this id. */
static bool FindRecord(int dir_fd, uint64_t mnt_id, struct Record* out) {
  int fd = dup(dir_fd);
  DIR* d = fd < 0 ? NULL : fdopendir(fd);
  if (d == NULL) Die("cannot list %s: %m", RUN_DIR);
  rewinddir(d); /* the dup shares its offset with dir_fd */
  bool found = false;
  struct dirent* e;
  while (!found && (e = readdir(d)) != NULL) {
    if (strncmp(e->d_name, "nbd", 3) != 0 || strchr(e->d_name, '.') != NULL) continue;
    found = ReadRecord(dir_fd, e->d_name, out) && out->mnt_id == mnt_id;
  }
  closedir(d);
  return found;
}

/* ---- mounts ----------------------------------------------------------- */

static uint64_t MountIdOf(int dir_fd, const char* name, bool* is_root) {
  struct statx stx;
  if (statx(dir_fd, name, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_MNT_ID, &stx) != 0 ||
      !(stx.stx_mask & STATX_MNT_ID)) {
    Die("cannot get the mount id of the mountpoint: %m (Linux 5.8 or newer is needed)");
  }
  if (is_root)
    *is_root = (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
               (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
  return stx.stx_mnt_id;
}

/* A user namespace that maps the image's `uid`:`gid` to the caller's and
 * nothing else, as an fd (-1 on failure). A child enters a new namespace and
 * stops; we write its maps as root, keep a reference and end the child. */
static int UserNsFor(uid_t uid, gid_t gid) {
  int status, fd = -1;
  pid_t pid = fork();
  if (pid == 0) {
    if (unshare(CLONE_NEWUSER) == 0) raise(SIGSTOP);
    _exit(1);
  }
  if (pid < 0) return -1;
  if (waitpid(pid, &status, WUNTRACED) == pid && WIFSTOPPED(status)) {
    char path[64], map[64];
    bool ok = true;
    for (int i = 0; i < 2 && ok; i++) {
      snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, i ? "gid_map" : "uid_map");
      int n = snprintf(map, sizeof map, "%u %u 1\n", i ? (unsigned)gid : (unsigned)uid,
                       i ? (unsigned)g_gid : (unsigned)g_uid);
      int mfd = open(path, O_WRONLY | O_CLOEXEC);
      ok = mfd >= 0 && write(mfd, map, (size_t)n) == n;
      if (mfd >= 0) close(mfd);
    }
    snprintf(path, sizeof path, "/proc/%d/ns/user", (int)pid);
    if (ok) fd = open(path, O_RDONLY | O_CLOEXEC);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  return fd;
}

/* Makes the filesystem with the new mount API: created detached, with fixed
 * options (errors= overrides what the image asks for, e.g. ext4's "panic"
 * in s_errors or its stored mount options; read-only ext4 skips journal
 * replay, the device being read-only too), nosuid and nodev; idmapped while
 * still detached, so nobody ever sees the image's owners; only then attached
 * to the pinned directory. Returns the mount's fd; on failure -1, errno and
 * *what (the step that failed). */
static int MountFs(const struct Args* a, const char* source, int mp_fd, const char** what) {
  char uid[16], gid[16];
  snprintf(uid, sizeof uid, "%u", (unsigned)g_uid);
  snprintf(gid, sizeof gid, "%u", (unsigned)g_gid);
  *what = "mount";
  int fs = fsopen(a->fs->name, FSOPEN_CLOEXEC);
  if (fs < 0 || fsconfig(fs, FSCONFIG_SET_STRING, "source", source, 0) != 0 ||
      fsconfig(fs, FSCONFIG_SET_STRING, "errors", "remount-ro", 0) != 0 ||
      (!a->rw && fsconfig(fs, FSCONFIG_SET_FLAG, "ro", NULL, 0) != 0) ||
      (!a->rw && a->fs->idmap && fsconfig(fs, FSCONFIG_SET_FLAG, "noload", NULL, 0) != 0) ||
      (!a->fs->idmap && (fsconfig(fs, FSCONFIG_SET_STRING, "uid", uid, 0) != 0 ||
                         fsconfig(fs, FSCONFIG_SET_STRING, "gid", gid, 0) != 0)) ||
      fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) != 0) {
    return -1;
  }
  unsigned attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (a->rw ? 0 : MOUNT_ATTR_RDONLY);
  int m = fsmount(fs, FSMOUNT_CLOEXEC, attrs);
  if (m < 0) return -1;
  if (a->fs->idmap) {
    struct stat st;
    *what = "idmapping";
    int ns = fstat(m, &st) == 0 ? UserNsFor(st.st_uid, st.st_gid) : -1;
    struct mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)ns};
    if (ns < 0 || mount_setattr(m, "", AT_EMPTY_PATH, &attr, sizeof attr) != 0) return -1;
  }
  *what = "attaching";
  if (move_mount(m, "", mp_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) != 0)
    return -1;
  return m;
}

static const char* MountError(int e) {
  if (e == EINVAL) return "the device does not hold a valid filesystem of this type";
  if (e == ENODEV) return "the kernel does not support this filesystem (try: modprobe FSTYPE)";
  return e == EROFS ? "the export is read-only; mount without --rw" : strerror(e);
}

/* ---- subcommands ------------------------------------------------------ */

/* Undoes a half-made attachment: the mount (when attached), the device, its
 * process and the record. */
static void Undo(int mnt_fd, int nbd_fd, pid_t child, int run_fd, const char* record) {
  if (mnt_fd >= 0) {
    char path[32];
    snprintf(path, sizeof path, "/proc/self/fd/%d", mnt_fd);
    umount2(path, MNT_DETACH);
  }
  DisconnectDevice(nbd_fd);
  if (child > 0) waitpid(child, NULL, 0);
  unlinkat(run_fd, record, 0);
}

static int Attach(const struct Args* a) {
  /* 1. Everything the user controls, checked with the user's rights. */
  CheckSocketFd();
  AsUser();
  struct stat st;
  int mp_fd = OpenMountpointAt(AT_FDCWD, a->mountpoint, a->mountpoint, true, &st);
  AsRoot();

  /* 2. Only now the kernel and the devices: the first free device whose
   *    lock we get at once; NBD_SET_SOCK then claims it in the kernel. */
  CheckProc();
  CheckNbdSupport();
  int run_fd = OpenRunDir();
  int nbd_fd = -1;
  unsigned n = 0, scanned = 0;
  for (n = 0; n < MAX_DEVICES; n++) {
    char sys[64];
    snprintf(sys, sizeof sys, "/sys/block/nbd%u", n);
    if (!PathExists(sys)) break;
    scanned++;
    if (DeviceInUse(n)) continue;
    int lock = LockDevice(run_fd, n, 0);
    if (lock < 0) continue;
    if (!DeviceInUse(n)) {
      nbd_fd = OpenNbdDevice(n);
      if (ConfigureDevice(nbd_fd, a)) break;
      close(nbd_fd);
      nbd_fd = -1;
    }
    close(lock);
  }
  if (nbd_fd < 0) {
    Die("all %u /dev/nbd devices are in use; as root, detach one or reload the driver with "
        "more: modprobe -r nbd && modprobe nbd nbds_max=%u",
        scanned, scanned * 2 + 16);
  }
  char source[48], sys[96];
  DeviceNames(n, (unsigned)a->partition, source, sys);

  /* 3. Record the attachment first (mount id still 0), so that no step
   *    below can leave a device or mount that nobody accounts for. */
  struct Record r = {.device = n, .partition = (unsigned)a->partition, .uid = g_uid};
  snprintf(r.mountpoint, sizeof r.mountpoint, "%s", a->mountpoint);
  char name[32];
  snprintf(name, sizeof name, "nbd%u", n);
  if (!WriteRecord(run_fd, &r)) {
    Undo(-1, nbd_fd, 0, run_fd, name);
    Die("cannot write %s/%s: %m", RUN_DIR, name);
  }

  /* 4. Start the device, then mount it on the pinned directory. */
  pid_t child = fork();
  if (child < 0) {
    Undo(-1, nbd_fd, 0, run_fd, name);
    Die("fork failed: %m");
  }
  if (child == 0) RunDeviceChild(nbd_fd);
  int child_errno = 0;
  if (!WaitDeviceUp(n, a->size, child, &child_errno)) {
    Undo(-1, nbd_fd, 0, run_fd, name);
    Die("/dev/nbd%u did not start: %s", n, child_errno ? strerror(child_errno) : "unknown error");
  }
  if (a->partition != 0 && !WaitPartition(n, (unsigned)a->partition, source)) {
    Undo(-1, nbd_fd, child, run_fd, name);
    Die("the disk has no partition %u (%s did not appear; the nbd driver shows at most "
        "max_part partitions: see /sys/module/nbd/parameters/max_part)",
        (unsigned)a->partition, source);
  }
  const char* what;
  int mnt_fd = MountFs(a, source, mp_fd, &what);
  if (mnt_fd < 0) {
    int e = errno;
    Undo(-1, nbd_fd, child, run_fd, name);
    Die("%s of %s (%s) on %s failed: %s", what, source, a->fs->name, a->mountpoint, MountError(e));
  }

  /* 5. Complete the record with the mount's id and the device process. */
  r.pid = (long)child;
  r.mnt_id = MountIdOf(mnt_fd, "", NULL);
  if (!WriteRecord(run_fd, &r)) {
    int e = errno;
    Undo(mnt_fd, nbd_fd, child, run_fd, name);
    Die("cannot complete the record %s/%s (%s); unmounted %s again", RUN_DIR, name, strerror(e),
        a->mountpoint);
  }
  printf("%s %s\n", source, a->mountpoint);
  return kExitOk;
}

/* Splits "/a/b/c" into the parent "/a/b" (opened as the user) and "c". */
static int OpenParent(const char* path, const char** last) {
  char parent[PATH_MAX];
  const char* slash = strrchr(path, '/');
  size_t len = slash == path ? 1 : (size_t)(slash - path);
  memcpy(parent, path, len);
  parent[len] = '\0';
  *last = slash + 1;
  int fd = open(parent, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) Die("cannot open %s as uid %u: %m", parent, (unsigned)g_uid);
  return fd;
}

static int Detach(const struct Args* a) {
  /* 1. As the user: the mountpoint must be the root of a mount. Who may
   *    detach it is decided by the record, not by the mounted directory. */
  AsUser();
  const char* last;
  int parent_fd = OpenParent(a->mountpoint, &last);
  struct stat st;
  int mp_fd = OpenMountpointAt(parent_fd, last, a->mountpoint, false, &st);
  bool is_root = false;
  uint64_t mnt_id = MountIdOf(mp_fd, "", &is_root);
  if (!is_root) Die("nothing is mounted on %s", a->mountpoint);
  close(mp_fd);
  AsRoot();

  /* 2. The record must exist and belong to this user (root may detach all). */
  CheckProc();
  int run_fd = OpenRunDir();
  struct Record r;
  if (!FindRecord(run_fd, mnt_id, &r)) {
    Die("the mount on %s was not made by hexz-nbd-helper; refusing to unmount it", a->mountpoint);
  }
  if (r.uid != g_uid && g_uid != 0) {
    Die("the mount on %s was attached by uid %u, not by you (uid %u); refusing", a->mountpoint,
        (unsigned)r.uid, (unsigned)g_uid);
  }
  if (LockDevice(run_fd, r.device, WAIT_STEPS) < 0) {
    Die("/dev/nbd%u is being attached or detached by another hexz-nbd-helper; try again", r.device);
  }
  /* Mount ids are reused and a FUSE mount may call itself /dev/nbdN: the
   * record, read again under the lock, must still name this mount, the mount
   * must be on this very device (its number, from the kernel), and the
   * recorded process must still serve it. */
  char source[48], sys[96], pid_path[64], name[32];
  DeviceNames(r.device, r.partition, source, sys);
  snprintf(pid_path, sizeof pid_path, "/sys/block/nbd%u/pid", r.device);
  snprintf(name, sizeof name, "nbd%u", r.device);
  long long pid = ReadSysNumber(pid_path);
  dev_t want = ReadSysDev(sys);
  if (!ReadRecord(run_fd, name, &r) || r.mnt_id != mnt_id || st.st_dev != want || pid != r.pid) {
    Die("stale record %s/%s: the mount on %s (device %u:%u) is not %s (%u:%u) served by pid %ld; "
        "refusing (ask root to remove the record)",
        RUN_DIR, name, a->mountpoint, major(st.st_dev), minor(st.st_dev), source, major(want),
        minor(want), r.pid);
  }

  /* 3. Unmount, walking the user's directory with the user's rights. The
   *    name cannot be swapped meanwhile: a mountpoint cannot be renamed or
   *    removed, and only root can move mounts. */
  char target[PATH_MAX + 32];
  snprintf(target, sizeof target, "/proc/self/fd/%d/%s", parent_fd, last);
  AsUser();
  if (umount2(target, UMOUNT_NOFOLLOW) != 0) {
    if (errno == EBUSY) {
      Die("%s is busy: a process still uses files under it (see: fuser -vm %s); close them "
          "and run detach again",
          a->mountpoint, a->mountpoint);
    }
    Die("unmounting %s failed: %m", a->mountpoint);
  }
  if (MountIdOf(parent_fd, last, NULL) == mnt_id) {
    Die("%s is still mounted after umount", a->mountpoint);
  }
  AsRoot();

  /* 4. Disconnect the device; the child running NBD_DO_IT then exits. */
  int nbd_fd = OpenNbdDevice(r.device);
  DisconnectDevice(nbd_fd);
  close(nbd_fd);
  if (!WaitDeviceDown(r.device)) Die("/dev/nbd%u did not disconnect within 10 s", r.device);
  if (unlinkat(run_fd, name, 0) != 0) Die("cannot remove %s/%s: %m", RUN_DIR, name);
  printf("%s %s detached\n", source, a->mountpoint);
  return kExitOk;
}

int main(int argc, char** argv) {
  EnsureStdFds();
  RequireRoot();
  CleanProcess();
  g_uid = getuid();
  g_gid = getgid();

  const char* cmd = argc >= 2 ? argv[1] : "";
  bool attach = strcmp(cmd, "attach") == 0;
  CloseInheritedFds(attach);
  if (strcmp(cmd, "--version") == 0 && argc == 2) {
    printf("hexz-nbd-helper %s\n", HEXZ_VERSION);
    return kExitOk;
  }
  if (argc < 2) Usage("missing subcommand");
  if (!attach && strcmp(cmd, "detach") != 0) Usage("unknown subcommand '%s'", cmd);
  struct Args args;
  ParseArgs(argc, argv, attach, &args);
  return attach ? Attach(&args) : Detach(&args);
}
