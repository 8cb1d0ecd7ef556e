#include "common/sandbox/sandbox.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>
#include <utility>

namespace hexz::sandbox {

using base::Status;

namespace {

// Syscalls every hexz worker needs once it only serves already-open
// descriptors: I/O on them, memory, threads (see clone below), futexes,
// signals, time and exit.
constexpr const char* kBaseAllowlist[] = {
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "lseek",
    "close",
    "fstat",
    "fsync",
    "fdatasync",
    "munmap",
    "mremap",
    "madvise",
    "brk",
    "futex",
    "set_robust_list",
    "rseq",
    "sched_yield",
    "sched_getaffinity",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sigaltstack",
    "restart_syscall",
    "exit",
    "exit_group",
    "getpid",
    "gettid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "clock_gettime",
    "clock_getres",
    "gettimeofday",
    "nanosleep",
    "clock_nanosleep",
    "poll",
    "ppoll",
    "sendmsg",
    "recvmsg",
    "sendto",
    "recvfrom",
    "shutdown",
    "getrandom",
};

// fstat() after the lockdown. glibc implements it as newfstatat(fd, "", buf,
// AT_EMPTY_PATH), and seccomp cannot read the path: AT_EMPTY_PATH does not
// make it empty, so allowing the call would let a compromised worker stat any
// path. newfstatat therefore traps, and this handler performs the fstat
// itself with the plain fstat system call, which takes no path at all; any
// other use fails with EACCES. Checking the string here is not a race: what
// reaches the kernel never contains it. (A worker that removes the handler
// is killed by the SIGSYS instead.) With HEXZ_SECCOMP_DEBUG every refused
// call traps here too, and is reported and failed with ENOSYS.
void OnSigsys(int, siginfo_t* info, void* context) {
  auto* uc = static_cast<ucontext_t*>(context);
  greg_t* regs = uc->uc_mcontext.gregs;
  if (info->si_syscall == __NR_newfstatat) {
    const char* path = reinterpret_cast<const char*>(regs[REG_RSI]);
    if (regs[REG_R10] == AT_EMPTY_PATH && path != nullptr && path[0] == '\0') {
      int saved = errno;
      long r = syscall(SYS_fstat, static_cast<int>(regs[REG_RDI]),
                       reinterpret_cast<struct stat*>(regs[REG_RDX]));
      regs[REG_RAX] = r == -1 ? -errno : r;
      errno = saved;
    } else {
      regs[REG_RAX] = -EACCES;
    }
    return;
  }
#ifdef HEXZ_SECCOMP_DEBUG
  char msg[96];
  int nr = info->si_syscall;
  // Async-signal-safe formatting.
  const char prefix[] = "hexz sandbox: refused syscall ";
  size_t len = sizeof prefix - 1;
  std::memcpy(msg, prefix, len);
  char digits[12];
  int d = 0;
  unsigned v = static_cast<unsigned>(nr);
  do {
    digits[d++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0 && d < 11);
  while (d > 0) msg[len++] = digits[--d];
  msg[len++] = '\n';
  ssize_t ignored = ::write(STDERR_FILENO, msg, len);
  (void)ignored;
#endif
  regs[REG_RAX] = -ENOSYS;
}

Status DropCapabilities() {
  // Ambient and bounding sets: only meaningful (and permitted) with
  // CAP_SETPCAP; without it there is nothing to drop there.
  prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  for (int cap = 0; cap <= 63; ++cap) {
    if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) != 1) continue;
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EPERM) {
      return Status::FromErrno(errno, "sandbox: dropping capability " + std::to_string(cap));
    }
  }
  struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2] = {};
  if (syscall(SYS_capset, &header, data) != 0) {
    return Status::FromErrno(errno, "sandbox: clearing capabilities");
  }
  // Check that it took effect.
  struct __user_cap_data_struct check[2];
  std::memset(check, 0xff, sizeof check);
  if (syscall(SYS_capget, &header, check) != 0) {
    return Status::FromErrno(errno, "sandbox: reading capabilities back");
  }
  for (const auto& c : check) {
    if (c.effective != 0 || c.permitted != 0 || c.inheritable != 0) {
      return Status::Internal("sandbox: capabilities still present after dropping them");
    }
  }
  return Status::Ok();
}

Status SetLimit(int resource, rlim_t value, const char* name) {
  struct rlimit cur;
  if (getrlimit(resource, &cur) != 0) return Status::FromErrno(errno, name);
  struct rlimit lim = {value, value};
  if (cur.rlim_max != RLIM_INFINITY && cur.rlim_max < value) lim = {cur.rlim_max, cur.rlim_max};
  if (setrlimit(resource, &lim) != 0) {
    return Status::FromErrno(errno, std::string("sandbox: setting ") + name);
  }
  return Status::Ok();
}

// One argument comparison: for SCMP_CMP_MASKED_EQ, a is the mask and b the
// value; otherwise a is the value.
scmp_arg_cmp Arg(unsigned arg, scmp_compare op, scmp_datum_t a, scmp_datum_t b = 0) {
  scmp_arg_cmp c;
  c.arg = arg;
  c.op = op;
  c.datum_a = a;
  c.datum_b = b;
  return c;
}

struct FilterDeleter {
  void operator()(scmp_filter_ctx ctx) const { seccomp_release(ctx); }
};

Status Rule(scmp_filter_ctx ctx, uint32_t action, const char* name, unsigned arg_count = 0,
            scmp_arg_cmp arg = {}) {
  int nr = seccomp_syscall_resolve_name(name);
  if (nr == __NR_SCMP_ERROR) {
    return Status::Internal(std::string("sandbox: unknown syscall name ") + name);
  }
  int rc = arg_count == 0 ? seccomp_rule_add(ctx, action, nr, 0)
                          : seccomp_rule_add(ctx, action, nr, 1, arg);
  if (rc != 0) return Status::FromErrno(-rc, std::string("sandbox: seccomp rule for ") + name);
  return Status::Ok();
}

// Policy::network: what libcurl needs to reach a server, and read-only opens.
Status NetworkRules(scmp_filter_ctx ctx) {
  for (int family : {AF_INET, AF_INET6}) {
    HEXZ_RETURN_IF_ERROR(Rule(ctx, SCMP_ACT_ALLOW, "socket", 1,
                              Arg(0, SCMP_CMP_EQ, static_cast<scmp_datum_t>(family))));
  }
  // glibc's resolver tries nscd (AF_UNIX) and, for AI_ADDRCONFIG, a
  // netlink socket; both cope with EACCES. Any other family kills.
  for (int family : {AF_UNIX, AF_NETLINK}) {
    HEXZ_RETURN_IF_ERROR(Rule(ctx, SCMP_ACT_ERRNO(EACCES), "socket", 1,
                              Arg(0, SCMP_CMP_EQ, static_cast<scmp_datum_t>(family))));
  }
  HEXZ_RETURN_IF_ERROR(Rule(ctx, SCMP_ACT_ALLOW, "socketpair", 1,
                            Arg(0, SCMP_CMP_EQ, static_cast<scmp_datum_t>(AF_UNIX))));
  for (const char* name :
       {"connect",    "getsockopt", "setsockopt", "getsockname", "getpeername", "bind",
        "pipe2",      "eventfd2",   "newfstatat", "statx",       "uname",       "sysinfo",
        "getdents64", "access",     "faccessat",  "faccessat2",  "readlink",    "epoll_create1",
        "epoll_ctl",  "epoll_wait", "epoll_pwait"}) {
    HEXZ_RETURN_IF_ERROR(Rule(ctx, SCMP_ACT_ALLOW, name));
  }
  // Opens for reading only; any bit that writes, creates, truncates or
  // appends fails with EACCES.
  constexpr scmp_datum_t kWriteBits = O_ACCMODE | O_CREAT | O_TRUNC | O_APPEND;
  for (auto [name, flags_arg] : {std::pair<const char*, unsigned>{"open", 1}, {"openat", 2}}) {
    HEXZ_RETURN_IF_ERROR(
        Rule(ctx, SCMP_ACT_ALLOW, name, 1, Arg(flags_arg, SCMP_CMP_MASKED_EQ, kWriteBits, 0)));
    for (scmp_datum_t bit : {static_cast<scmp_datum_t>(O_WRONLY), static_cast<scmp_datum_t>(O_RDWR),
                             static_cast<scmp_datum_t>(O_CREAT), static_cast<scmp_datum_t>(O_TRUNC),
                             static_cast<scmp_datum_t>(O_APPEND)}) {
      HEXZ_RETURN_IF_ERROR(
          Rule(ctx, SCMP_ACT_ERRNO(EACCES), name, 1, Arg(flags_arg, SCMP_CMP_MASKED_EQ, bit, bit)));
    }
  }
  for (const char* name : {"openat2", "creat"}) {
    HEXZ_RETURN_IF_ERROR(Rule(ctx, SCMP_ACT_ERRNO(EACCES), name));
  }
  return Status::Ok();
}

Status InstallFilter(const Policy& policy) {
  struct sigaction sa = {};
  sa.sa_sigaction = OnSigsys;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGSYS, &sa, nullptr) != 0) return Status::FromErrno(errno, "sandbox: SIGSYS");
#ifdef HEXZ_SECCOMP_DEBUG
  const uint32_t default_action = SCMP_ACT_TRAP;
#else
  const uint32_t default_action = SCMP_ACT_KILL_PROCESS;
#endif
  std::unique_ptr<void, FilterDeleter> ctx(seccomp_init(default_action));
  if (!ctx) return Status::Internal("sandbox: seccomp_init failed");
  int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_TSYNC, 1);
  if (rc != 0) return Status::FromErrno(-rc, "sandbox: seccomp TSYNC");

  for (const char* name : kBaseAllowlist)
    HEXZ_RETURN_IF_ERROR(Rule(ctx.get(), SCMP_ACT_ALLOW, name));
  for (const auto& name : policy.extra_syscalls) {
    HEXZ_RETURN_IF_ERROR(Rule(ctx.get(), SCMP_ACT_ALLOW, name.c_str()));
  }
  if (policy.network) {
    HEXZ_RETURN_IF_ERROR(NetworkRules(ctx.get()));
  } else {
    // Opening files fails with EACCES instead of killing: glibc opens files
    // lazily on its own (malloc sizing its arenas reads
    // /sys/devices/system/cpu/online when a new thread first allocates) and
    // copes with a failure, while a kill would take the mount down.
    for (const char* name : {"open", "openat", "openat2", "creat"}) {
      HEXZ_RETURN_IF_ERROR(Rule(ctx.get(), SCMP_ACT_ERRNO(EACCES), name));
    }
    // fstat(): glibc issues newfstatat(fd, "", buf, AT_EMPTY_PATH); it traps
    // and OnSigsys performs a plain fstat instead (see there). In a
    // HEXZ_SECCOMP_DEBUG build the default action is already the trap, and
    // libseccomp refuses a rule that repeats the default.
    if (default_action != SCMP_ACT_TRAP) {
      HEXZ_RETURN_IF_ERROR(Rule(ctx.get(), SCMP_ACT_TRAP, "newfstatat"));
    }
    HEXZ_RETURN_IF_ERROR(Rule(ctx.get(), SCMP_ACT_ERRNO(EACCES), "statx"));
  }
  // Threads yes, processes no.
  HEXZ_RETURN_IF_ERROR(Rule(ctx.get(), SCMP_ACT_ALLOW, "clone", 1,
                            Arg(0, SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD)));
  HEXZ_RETURN_IF_ERROR(Rule(ctx.get(), SCMP_ACT_ERRNO(ENOSYS), "clone3"));
  // Signals only to this process (abort() raises SIGABRT with tgkill).
  HEXZ_RETURN_IF_ERROR(Rule(ctx.get(), SCMP_ACT_ALLOW, "tgkill", 1,
                            Arg(0, SCMP_CMP_EQ, static_cast<scmp_datum_t>(getpid()))));
  // Memory may never become executable.
  for (const char* name : {"mmap", "mprotect"}) {
    HEXZ_RETURN_IF_ERROR(
        Rule(ctx.get(), SCMP_ACT_ALLOW, name, 1, Arg(2, SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)));
  }
  // fcntl: flag queries/changes only (no F_DUPFD, no locks needed).
  for (int cmd : {F_GETFL, F_SETFL, F_GETFD, F_SETFD}) {
    HEXZ_RETURN_IF_ERROR(Rule(ctx.get(), SCMP_ACT_ALLOW, "fcntl", 1,
                              Arg(1, SCMP_CMP_EQ, static_cast<scmp_datum_t>(cmd))));
  }
  rc = seccomp_load(ctx.get());
  if (rc != 0) return Status::FromErrno(-rc, "sandbox: loading the seccomp filter");
  return Status::Ok();
}

}  // namespace

bool DebugBuild() {
#ifdef HEXZ_SECCOMP_DEBUG
  return true;
#else
  return false;
#endif
}

Status LockDown(const Policy& policy) {
  // glibc loads some things lazily by opening files: the time zone (strftime
  // calls tzset, which reads /etc/localtime the first time). Do it now.
  tzset();
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    return Status::FromErrno(errno, "sandbox: PR_SET_NO_NEW_PRIVS");
  }
  HEXZ_RETURN_IF_ERROR(DropCapabilities());
  HEXZ_RETURN_IF_ERROR(SetLimit(RLIMIT_CORE, 0, "RLIMIT_CORE"));
  HEXZ_RETURN_IF_ERROR(SetLimit(RLIMIT_NOFILE, policy.max_open_files, "RLIMIT_NOFILE"));
  // A dumpable process can be ptrace'd by its user; keep that (it is the
  // user's own process) but no core file is written (RLIMIT_CORE above).
  return InstallFilter(policy);
}

}  // namespace hexz::sandbox
