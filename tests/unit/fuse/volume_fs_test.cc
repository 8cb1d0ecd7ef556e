// VolumeFs over in-memory volumes, mounted for real when the test can (root
// and /dev/fuse).
#include "common/fuse/volume_fs.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <dirent.h>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "hexz/mount_table.h"
#include "tests/unit/fuse/fuse_test_util.h"

namespace hexz::fuse {
namespace {

using base::Status;

using testing::MemVolume;
using testing::RandomBytes;

class MountedFsTest : public testing::MountedFixture {
 protected:
  void SetUp() override {
    if (std::string why = WhyCannotMount(); !why.empty()) GTEST_SKIP() << why;
    disk_ = RandomBytes(3 * 1024 * 1024 + 777, 1);  // not a multiple of anything
    memory_ = RandomBytes(200000, 2);
    std::vector<File> files;
    files.push_back(File{"disk", std::make_unique<MemVolume>(disk_, 65536)});
    files.push_back(File{"memory", std::make_unique<MemVolume>(memory_, 4096)});
    FsOptions opts;
    opts.uid = 4321;
    opts.gid = 8765;
    opts.on_ready = [this] { ready_ = true; };
    ASSERT_NO_FATAL_FAILURE(MountFiles("hexz-fuse-test", std::move(files), opts));
  }
  std::vector<uint8_t> ReadAll(const std::string& path, size_t chunk) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_GE(fd, 0) << path;
    std::vector<uint8_t> out;
    std::vector<uint8_t> buf(chunk);
    for (;;) {
      ssize_t n = read(fd, buf.data(), buf.size());
      if (n <= 0) break;
      out.insert(out.end(), buf.begin(), buf.begin() + n);
    }
    close(fd);
    return out;
  }

  std::vector<uint8_t> disk_, memory_;
  std::atomic<bool> ready_{false};
};

TEST_F(MountedFsTest, ShowsFilesWithExactSizesAndOwner) {
  struct stat st;
  ASSERT_EQ(stat(Path("disk").c_str(), &st), 0);
  EXPECT_TRUE(ready_);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0444u);
  EXPECT_EQ(static_cast<size_t>(st.st_size), disk_.size());
  EXPECT_EQ(st.st_uid, 4321u);
  EXPECT_EQ(st.st_gid, 8765u);
  ASSERT_EQ(stat(Path("memory").c_str(), &st), 0);
  EXPECT_EQ(static_cast<size_t>(st.st_size), memory_.size());
  ASSERT_EQ(stat(dir_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_NE(stat(Path("other").c_str(), &st), 0);
  EXPECT_EQ(errno, ENOENT);

  DIR* d = opendir(dir_.c_str());
  ASSERT_NE(d, nullptr);
  std::set<std::string> names;
  while (struct dirent* e = readdir(d)) names.insert(e->d_name);
  closedir(d);
  EXPECT_EQ(names, (std::set<std::string>{".", "..", "disk", "memory"}));

  struct statvfs sv;
  ASSERT_EQ(statvfs(dir_.c_str(), &sv), 0);
  EXPECT_TRUE(sv.f_flag & ST_RDONLY);

  auto entry = cli::FindMount(dir_);
  ASSERT_TRUE(entry.ok());
  ASSERT_TRUE(entry->has_value());
  EXPECT_EQ((*entry)->fstype, cli::kHexzFsType);
  EXPECT_EQ((*entry)->source, "hexz");
}

TEST_F(MountedFsTest, ContentsMatchInSmallAndLargeReads) {
  EXPECT_EQ(ReadAll(Path("disk"), 4096), disk_);
  EXPECT_EQ(ReadAll(Path("disk"), 1 << 20), disk_);
  EXPECT_EQ(ReadAll(Path("memory"), 1 << 20), memory_);
  // Unaligned pread across block boundaries, and at the very end.
  int fd = ::open(Path("disk").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::vector<uint8_t> buf(300000);
  ASSERT_EQ(pread(fd, buf.data(), buf.size(), 65530), static_cast<ssize_t>(buf.size()));
  EXPECT_EQ(std::memcmp(buf.data(), disk_.data() + 65530, buf.size()), 0);
  ASSERT_EQ(pread(fd, buf.data(), buf.size(), disk_.size() - 10), 10);
  EXPECT_EQ(pread(fd, buf.data(), buf.size(), disk_.size() + 10), 0);
  close(fd);
}

TEST_F(MountedFsTest, WritesAreRefusedWithErofs) {
  errno = 0;
  EXPECT_LT(::open(Path("disk").c_str(), O_WRONLY | O_CLOEXEC), 0);
  EXPECT_EQ(errno, EROFS);
  errno = 0;
  EXPECT_LT(::open(Path("new").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644), 0);
  EXPECT_EQ(errno, EROFS);
  EXPECT_NE(chmod(Path("disk").c_str(), 0666), 0);
  EXPECT_EQ(errno, EROFS);
  EXPECT_NE(truncate(Path("disk").c_str(), 0), 0);
  EXPECT_EQ(errno, EROFS);
  EXPECT_NE(mkdir(Path("d").c_str(), 0755), 0);
  EXPECT_EQ(errno, EROFS);
  EXPECT_NE(unlink(Path("disk").c_str()), 0);
  EXPECT_EQ(errno, EROFS);
}

}  // namespace
}  // namespace hexz::fuse
