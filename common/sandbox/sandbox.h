// The worker's lockdown: after it has everything it needs open and mounted,
// hexz-fused calls LockDown() once and can no longer open files, execute
// programs, create processes or regain privileges.
//
// What LockDown does, in order:
//   1. PR_SET_NO_NEW_PRIVS (no setuid/file-capability gains, required for 3.);
//   2. drops every capability (bounding, ambient, effective/permitted/
//      inheritable), so a worker started as root keeps no privilege either;
//   3. rlimits: RLIMIT_CORE 0 (no core files with snapshot data in them),
//      RLIMIT_NOFILE capped at `max_open_files`. RLIMIT_NPROC is deliberately
//      NOT used: Linux counts threads against it per user, so a cap low enough
//      to stop fork would also starve libfuse's thread pool (and the user's
//      other processes count too). New processes are forbidden by seccomp
//      instead: clone only with CLONE_THREAD, clone3 fails with ENOSYS (glibc
//      then falls back to clone), fork/vfork/execve are not allowed at all;
//   4. a libseccomp allowlist applied to every thread (TSYNC) whose default
//      action kills the process. open/openat/openat2/creat fail with EACCES
//      rather than kill, because glibc itself opens files lazily (malloc reads
//      /sys/devices/system/cpu/online when a new thread needs an arena) and
//      handles the failure; so do stat/statx of a path. newfstatat, which
//      glibc's fstat uses with an empty path and AT_EMPTY_PATH, traps: a
//      SIGSYS handler (installed here) performs a plain fstat(2) of the
//      descriptor instead, and fails anything else with EACCES, since seccomp
//      cannot see the path and AT_EMPTY_PATH does not make it empty (a
//      compromised worker cannot stat /etc/shadow). The process must keep
//      that handler for SIGSYS. exec, fork and everything unlisted still
//      kill. Built with
//      -DHEXZ_SECCOMP_DEBUG=ON the default becomes a trap instead: a SIGSYS handler prints the
//      refused syscall's number to stderr and the call fails with ENOSYS, so a missing entry can be
//      found without losing the process.
//
// Thread safety: call once, from any thread; it applies to all threads.
#pragma once

#include <string>
#include <vector>

#include "common/base/status.h"

namespace hexz::sandbox {

struct Policy {
  // Extra syscalls (by name, as libseccomp spells them) a caller needs on top
  // of the base allowlist, e.g. "accept4" for an NBD server.
  std::vector<std::string> extra_syscalls;
  // RLIMIT_NOFILE soft and hard limit after lockdown.
  unsigned long max_open_files = 256;
  // The fetcher's additions (hexz/fetcher.h): TCP/IP sockets (socket for
  // AF_INET and AF_INET6; AF_UNIX and AF_NETLINK fail with EACCES, others
  // kill; AF_UNIX socketpairs for libcurl's wakeups),
  // connect and socket options; open/openat for reading only (the resolver
  // reads /etc/hosts and /etc/resolv.conf, TLS its CA file), while an open
  // for writing, creating, truncating or appending still fails with EACCES;
  // stat of a path. Still no exec, no fork.
  bool network = false;
};

base::Status LockDown(const Policy& policy);

// True when this build traps instead of killing (HEXZ_SECCOMP_DEBUG).
bool DebugBuild();

}  // namespace hexz::sandbox
