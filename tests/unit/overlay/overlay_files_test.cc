#include "common/overlay/overlay_files.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "tests/unit/overlay/overlay_test_util.h"

namespace hexz::overlay {
namespace {

using testing::MakeId;
using testing::TempDir;

int CountEntries(const std::string& dir) {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

void MakeStaleDir(const std::string& dir) {
  std::filesystem::create_directory(dir);
  for (const char* f : {"/overlay", "/overlay.meta"}) {
    int fd = ::open((dir + f).c_str(), O_CREAT | O_WRONLY, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, "x", 1), 1);
    ::close(fd);
  }
}

TEST(OverlayFilesTest, EphemeralLeavesNothingBehind) {
  TempDir dir;
  auto files = CreateEphemeralOverlayFiles(dir.path());
  ASSERT_TRUE(files.ok()) << files.status().ToString();
  EXPECT_TRUE(files->ephemeral);
  EXPECT_EQ(CountEntries(dir.path()), 0) << "files and directory are unlinked at once";
  OverlayOptions opt;
  opt.durable = false;
  auto ov = Overlay::OpenOrCreate(std::move(files->data), std::move(files->meta), files->names,
                                  MakeId(3), 1 << 20, opt);
  ASSERT_TRUE(ov.ok()) << ov.status().ToString();
  std::vector<uint8_t> d(kBlockSize, 0x77), got(kBlockSize);
  ASSERT_TRUE((*ov)->WriteBlock(5, d.data()).ok());
  ASSERT_TRUE((*ov)->Flush().ok());
  auto st = (*ov)->ReadBlock(5, got.data());
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(*st, BlockState::kData);
  EXPECT_EQ(got, d);
  EXPECT_EQ(CountEntries(dir.path()), 0);
}

TEST(OverlayFilesTest, EphemeralDefaultsToXdgRuntimeDir) {
  TempDir dir;
  const char* old = getenv("XDG_RUNTIME_DIR");
  std::string saved = old ? old : "";
  setenv("XDG_RUNTIME_DIR", dir.path().c_str(), 1);
  EXPECT_EQ(EphemeralParentDir(), dir.path());
  setenv("XDG_RUNTIME_DIR", "relative/dir", 1);
  EXPECT_NE(EphemeralParentDir(), "relative/dir");
  if (old) {
    setenv("XDG_RUNTIME_DIR", saved.c_str(), 1);
  } else {
    unsetenv("XDG_RUNTIME_DIR");
  }
}

TEST(OverlayFilesTest, ReclaimRemovesOnlyUnlockedDirs) {
  TempDir dir;
  std::string stale = dir.File("hexz-overlay.stale1");
  std::string live = dir.File("hexz-overlay.live1");
  std::string other = dir.File("not-hexz");
  MakeStaleDir(stale);
  MakeStaleDir(live);
  std::filesystem::create_directory(other);
  int fd = ::open((live + "/overlay").c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX), 0);
  auto n = ReclaimEphemeralDirs(dir.path());
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 1);
  EXPECT_FALSE(std::filesystem::exists(stale));
  EXPECT_TRUE(std::filesystem::exists(live));
  EXPECT_TRUE(std::filesystem::exists(other));
  ::close(fd);  // the holder is gone
  n = ReclaimEphemeralDirs(dir.path());
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1);
  EXPECT_FALSE(std::filesystem::exists(live));
}

// A worker killed while it holds an ephemeral dir: the next start reclaims it.
TEST(OverlayFilesTest, ReclaimAfterKilledHolder) {
  TempDir dir;
  std::string crashed = dir.File("hexz-overlay.crash1");
  MakeStaleDir(crashed);
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int fd = ::open((crashed + "/overlay").c_str(), O_RDWR);
    if (fd < 0 || ::flock(fd, LOCK_EX) != 0) _exit(1);
    if (::write(pipefd[1], "r", 1) != 1) _exit(1);
    for (;;) pause();
  }
  char c;
  ASSERT_EQ(::read(pipefd[0], &c, 1), 1);
  auto n = ReclaimEphemeralDirs(dir.path());
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0) << "a live holder keeps its overlay";
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  ASSERT_EQ(waitpid(pid, nullptr, 0), pid);
  n = ReclaimEphemeralDirs(dir.path());
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1);
  EXPECT_FALSE(std::filesystem::exists(crashed));
  ::close(pipefd[0]);
  ::close(pipefd[1]);
}

TEST(OverlayFilesTest, OpenWithoutCreateNamesTheMissingPath) {
  TempDir dir;
  auto r = OpenOverlayFiles(dir.File("nope.ovl"), LockMode::kShared, false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), base::Code::kNotFound);
  EXPECT_NE(r.status().message().find("nope.ovl does not exist"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir.File("nope.ovl")));
}

}  // namespace
}  // namespace hexz::overlay
