#include "common/cache/worker_cache.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace hexz::cache {
namespace {

std::string ShmPath(const std::string& prefix) {
  return "/dev/shm/" + prefix + "-" + std::to_string(::getuid());
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Polls for up to 10 s.
bool GoneWithin10s(const std::string& path) {
  for (int i = 0; i < 1000; ++i) {
    if (!Exists(path)) return true;
    ::usleep(10 * 1000);
  }
  return false;
}

TEST(ParseCacheSize, AcceptsSizesThatHoldABlock) {
  EXPECT_EQ(*ParseCacheSize("256M", 65536), 256ull << 20);
  EXPECT_EQ(*ParseCacheSize("1G", 65536), 1ull << 30);
  EXPECT_EQ(*ParseCacheSize("4G", 1 << 20), 4ull << 30);
}

TEST(ParseCacheSize, RefusesMalformedAndTooSmall) {
  auto bad = ParseCacheSize("1X", 65536);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--cache-size"), std::string::npos);
  EXPECT_NE(bad.status().message().find("1X"), std::string::npos);

  auto small = ParseCacheSize("1M", 1 << 20);
  ASSERT_FALSE(small.ok());
  EXPECT_NE(small.status().message().find("too small for blocks of 1 MiB"), std::string::npos)
      << small.status().message();
  EXPECT_NE(small.status().message().find("--cache-size 1M"), std::string::npos);

  EXPECT_FALSE(ParseCacheSize("512K", 4096).ok());
  EXPECT_FALSE(ParseCacheSize("", 4096).ok());
}

TEST(AttachForWorker, ZeroMeansNoCache) {
  std::string note = "x";
  auto shm = AttachForWorker(0, &note);
  ASSERT_TRUE(shm.ok());
  EXPECT_EQ(*shm, nullptr);
  EXPECT_TRUE(note.empty());
}

// A worker that attaches and then dies without detaching (SIGKILL, or the
// sandboxed _exit): its cleanup process removes the segment.
void AttachAndDie(const std::string& prefix, bool sigkill) {
  std::string path = ShmPath(prefix);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::setenv("HEXZ_CACHE_NAME_PREFIX", prefix.c_str(), 1);
    std::string note;
    auto shm = AttachForWorker(2 << 20, &note);
    if (!shm.ok() || *shm == nullptr) _exit(2);
    if (note.find("created the shared cache /" + prefix) != 0) _exit(3);
    if (sigkill) ::raise(SIGKILL);
    _exit(0);  // no Detach, as the sandboxed worker does
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  if (sigkill) {
    ASSERT_TRUE(WIFSIGNALED(status)) << status;
  } else {
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  EXPECT_TRUE(GoneWithin10s(path)) << path << " is left";
}

TEST(AttachForWorker, SegmentRemovedAfterExitWithoutDetach) {
  AttachAndDie("hexz-cache-wtest-" + std::to_string(::getpid()) + "-a", false);
}

TEST(AttachForWorker, SegmentRemovedAfterSigkill) {
  AttachAndDie("hexz-cache-wtest-" + std::to_string(::getpid()) + "-b", true);
}

TEST(AttachForWorker, SegmentKeptWhileAnotherWorkerUsesIt) {
  std::string prefix = "hexz-cache-wtest-" + std::to_string(::getpid()) + "-c";
  std::string path = ShmPath(prefix);
  ::setenv("HEXZ_CACHE_NAME_PREFIX", prefix.c_str(), 1);
  std::string note;
  auto mine = AttachForWorker(2 << 20, &note);
  ASSERT_TRUE(mine.ok()) << mine.status().ToString();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::string n;
    auto shm = AttachForWorker(8 << 20, &n);
    if (!shm.ok() || n.find("joined") != 0 ||
        n.find("not the 8 MiB asked for") == std::string::npos)
      _exit(2);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  ::usleep(300 * 1000);  // the other worker's cleanup has run by now
  EXPECT_TRUE(Exists(path)) << "removed while still in use";
  EXPECT_TRUE(CheckWorkerBlockSize(mine->get(), 65536).ok());
  EXPECT_FALSE(CheckWorkerBlockSize(mine->get(), 4 << 20).ok());
  EXPECT_TRUE(CheckWorkerBlockSize(nullptr, 4 << 20).ok());
  mine->reset();  // Detach (outside a sandbox): the last one removes it
  ::unsetenv("HEXZ_CACHE_NAME_PREFIX");
  EXPECT_TRUE(GoneWithin10s(path));
}

}  // namespace
}  // namespace hexz::cache
