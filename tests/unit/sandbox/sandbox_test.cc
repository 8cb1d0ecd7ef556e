// Each test forks a child that locks itself down and then tries something;
// the parent checks how the child ended. The children leave with _exit so that
// no at-exit machinery (e.g. LeakSanitizer, which starts a tracer process)
// runs under the filter.
#include "common/sandbox/sandbox.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace hexz::sandbox {
namespace {

constexpr int kLockDownFailed = 90;

#if defined(__SANITIZE_ADDRESS__)
#define HEXZ_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HEXZ_TEST_ASAN 1
#endif
#endif

// The production policy, plus what the AddressSanitizer runtime itself needs
// when the tests are built with it (it probes memory through a pipe when a
// thread starts).
Policy TestPolicy() {
  Policy policy;
#ifdef HEXZ_TEST_ASAN
  policy.extra_syscalls = {"pipe2"};
#endif
  return policy;
}

// Runs body() in a locked-down child; returns its wait status.
int RunLockedDown(const std::function<int()>& body) {
  pid_t pid = fork();
  if (pid == 0) {
    if (!LockDown(TestPolicy()).ok()) _exit(kLockDownFailed);
    _exit(body());
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

bool KilledBySeccomp(int status) { return WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS; }

TEST(SandboxTest, AllowedCallsWork) {
  int pipefd[2];
  ASSERT_EQ(pipe2(pipefd, O_CLOEXEC), 0);
  int status = RunLockedDown([&] {
    // Memory, threads (clone with CLONE_THREAD), futexes, I/O on open fds.
    std::vector<char> big(8 << 20, 'x');
    std::atomic<int> sum{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) threads.emplace_back([&sum, i] { sum += i; });
    for (auto& t : threads) t.join();
    if (sum != 6 || big[12345] != 'x') return 2;
    if (write(pipefd[1], "ok", 2) != 2) return 3;
    return 0;
  });
  ASSERT_TRUE(WIFEXITED(status)) << "child died with signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
  char buf[2] = {};
  close(pipefd[1]);
  EXPECT_EQ(read(pipefd[0], buf, 2), 2);
  close(pipefd[0]);
}

TEST(SandboxTest, OpenFailsWithEacces) {
  int status = RunLockedDown([] {
    int fd = ::open("/etc/hostname", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) return 1;
    if (errno != EACCES) return 2;
    fd = ::openat(AT_FDCWD, "/etc/hostname", O_RDONLY | O_CLOEXEC);
    return fd < 0 && errno == EACCES ? 0 : 3;
  });
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(SandboxTest, FstatWorksButStatOfAPathFails) {
  int fd = ::open("/etc/hostname", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  int status = RunLockedDown([fd] {
    struct stat st;
    if (fstat(fd, &st) != 0) return 1;
    if (stat("/etc/hostname", &st) == 0) return 2;
    if (errno != EACCES) return 10 + (errno & 0x7f);
    return 0;
  });
  close(fd);
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// The security review stat'ed /etc/shadow from a locked-down worker with
// newfstatat(AT_FDCWD, path, AT_EMPTY_PATH): the flag does not make the path
// empty. Raw syscalls, so that glibc cannot rewrite the call.
long RawStatAt(long dirfd, const char* path, int flags) {
  struct stat st;
  return syscall(SYS_newfstatat, dirfd, path, &st, flags);
}

TEST(SandboxTest, StatOfAPathWithEmptyPathFlagFails) {
  int file = ::open("/etc/hostname", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(file, 0);
  int dir = ::open("/etc", O_PATH | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(dir, 0);
  int status = RunLockedDown([file, dir] {
    if (RawStatAt(file, "", AT_EMPTY_PATH) != 0) return 1;  // fstat still works
    if (RawStatAt(AT_FDCWD, "/etc/shadow", AT_EMPTY_PATH) == 0) return 2;
    if (errno != EACCES) return 10 + (errno & 0x7f);
    if (RawStatAt(AT_FDCWD, "etc/shadow", AT_EMPTY_PATH) == 0) return 3;  // cwd-relative
    // Upper bits set on AT_FDCWD: the kernel only looks at the low 32 bits.
    if (RawStatAt(static_cast<long>(0xffffff9cUL), "/etc/shadow", AT_EMPTY_PATH) == 0) return 4;
    if (RawStatAt(file, "/etc/shadow", AT_EMPTY_PATH) == 0) return 5;  // absolute: dirfd ignored
    if (RawStatAt(dir, "shadow", AT_EMPTY_PATH) == 0) return 6;        // relative to a directory
    if (RawStatAt(dir, "", AT_EMPTY_PATH) != 0) return 7;  // fstat of the directory itself
    struct stat st;
    if (fstat(file, &st) != 0 || st.st_size <= 0) return 8;  // glibc's fstat
    return 0;
  });
  close(file);
  close(dir);
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(SandboxTest, ForkIsRefused) {
  int status = RunLockedDown([] {
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    return pid > 0 ? 0 : 12;
  });
  if (DebugBuild()) {
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 12);
  } else {
    EXPECT_TRUE(KilledBySeccomp(status)) << "status " << status;
  }
}

TEST(SandboxTest, ExecIsRefused) {
  int status = RunLockedDown([] {
    char* argv[] = {const_cast<char*>("/bin/true"), nullptr};
    execv("/bin/true", argv);
    return 13;
  });
  if (DebugBuild()) {
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 13);
  } else {
    EXPECT_TRUE(KilledBySeccomp(status)) << "status " << status;
  }
}

TEST(SandboxTest, Clone3FailsWithEnosys) {
  int status = RunLockedDown([] {
    long rc = syscall(435 /* clone3 */, nullptr, 0);
    return rc == -1 && errno == ENOSYS ? 0 : 14;
  });
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(SandboxTest, StatusShowsSeccompAndNoNewPrivs) {
  int to_child[2], from_child[2];
  ASSERT_EQ(pipe2(to_child, O_CLOEXEC), 0);
  ASSERT_EQ(pipe2(from_child, O_CLOEXEC), 0);
  pid_t pid = fork();
  if (pid == 0) {
    if (!LockDown(TestPolicy()).ok()) _exit(kLockDownFailed);
    char c = 'L';
    if (write(from_child[1], &c, 1) != 1) _exit(2);
    if (read(to_child[0], &c, 1) != 1) _exit(3);
    _exit(0);
  }
  char c = 0;
  ASSERT_EQ(read(from_child[0], &c, 1), 1);
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line, seccomp, nnp, capeff;
  while (std::getline(in, line)) {
    if (line.rfind("Seccomp:", 0) == 0) seccomp = line;
    if (line.rfind("NoNewPrivs:", 0) == 0) nnp = line;
    if (line.rfind("CapEff:", 0) == 0) capeff = line;
  }
  ASSERT_EQ(write(to_child[1], "x", 1), 1);
  int status = 0;
  waitpid(pid, &status, 0);
  for (int fd : {to_child[0], to_child[1], from_child[0], from_child[1]}) close(fd);
  EXPECT_EQ(seccomp, "Seccomp:\t2");
  EXPECT_EQ(nnp, "NoNewPrivs:\t1");
  EXPECT_EQ(capeff, "CapEff:\t0000000000000000");
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// The fetcher's policy (Policy::network): read-only opens and TCP/IP
// sockets work; an open for writing, an AF_UNIX or raw-packet socket, fork
// and exec do not.
int RunNetworkLockedDown(const std::function<int()>& body) {
  pid_t pid = fork();
  if (pid == 0) {
    Policy policy = TestPolicy();
    policy.network = true;
    if (!LockDown(policy).ok()) _exit(kLockDownFailed);
    _exit(body());
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

TEST(SandboxTest, NetworkPolicyReadsButNeverWrites) {
  std::string dir = ::testing::TempDir() + "/hexz-sandbox-net-XXXXXX";
  ASSERT_NE(mkdtemp(dir.data()), nullptr);
  const std::string existing = dir + "/existing";
  { std::ofstream(existing) << "x"; }
  int status = RunNetworkLockedDown([&] {
    int fd = ::open("/etc/hostname", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 1;
    close(fd);
    struct stat st;
    if (stat("/etc/hostname", &st) != 0) return 2;
    if (::open(existing.c_str(), O_WRONLY | O_CLOEXEC) >= 0 || errno != EACCES) return 3;
    if (::open(existing.c_str(), O_RDWR | O_CLOEXEC) >= 0 || errno != EACCES) return 4;
    if (::openat(AT_FDCWD, existing.c_str(), O_RDONLY | O_TRUNC) >= 0 || errno != EACCES) {
      return 5;
    }
    if (::openat(AT_FDCWD, (dir + "/new").c_str(), O_RDONLY | O_CREAT, 0600) >= 0 ||
        errno != EACCES) {
      return 6;
    }
    if (::open(existing.c_str(), O_WRONLY | O_APPEND) >= 0 || errno != EACCES) return 7;
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return 8;
    close(s);
    s = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s >= 0) close(s);
    if (socket(AF_UNIX, SOCK_STREAM, 0) >= 0 || errno != EACCES) return 10;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 9;
    close(sv[0]);
    close(sv[1]);
    return 0;
  });
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
  struct stat st;
  EXPECT_NE(stat((dir + "/new").c_str(), &st), 0) << "the locked-down child created a file";
  std::ifstream in(existing);
  std::string content;
  in >> content;
  EXPECT_EQ(content, "x");
  unlink(existing.c_str());
  rmdir(dir.c_str());
}

TEST(SandboxTest, NetworkPolicyKillsRawSocketsForkAndExec) {
  for (int what = 0; what < 3; ++what) {
    int status = RunNetworkLockedDown([what] {
      if (what == 0) (void)socket(AF_PACKET, SOCK_RAW, 0);
      if (what == 1) (void)syscall(SYS_fork);
      if (what == 2) execl("/bin/true", "true", static_cast<char*>(nullptr));
      return 0;
    });
    EXPECT_TRUE(KilledBySeccomp(status)) << "case " << what << ": status " << status;
  }
}

}  // namespace
}  // namespace hexz::sandbox
