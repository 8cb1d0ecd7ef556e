// VolumeFs in read-write mode over an in-memory writable volume, mounted
// for real when the test can (root and /dev/fuse): writes reach the volume,
// fsync and close flush it (and report its errors), sizes and metadata are
// fixed (EPERM), writes past the end get ENOSPC and change nothing, memory
// stays read-only (EACCES), fallocate punches holes.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>

#include "common/base/checked_math.h"
#include "common/fuse/volume_fs.h"
#include "tests/unit/fuse/fuse_test_util.h"

namespace hexz::fuse {
namespace {

using base::Status;

using testing::MemVolume;
using testing::RandomBytes;

class ReadWriteFsTest : public testing::MountedFixture {
 protected:
  void SetUp() override {
    if (std::string why = WhyCannotMount(); !why.empty()) GTEST_SKIP() << why;
    disk_ = RandomBytes(2 * 1024 * 1024 + 1000, 1);
    memory_ = RandomBytes(100000, 2);
    auto disk = std::make_unique<MemVolume>(disk_, 4096, /*writable=*/true);
    volume_ = disk.get();
    std::vector<File> files;
    File d{"disk", std::move(disk)};
    d.writable = true;
    d.io_size = 65536;
    files.push_back(std::move(d));
    files.push_back(File{"memory", std::make_unique<MemVolume>(memory_)});
    FsOptions opts;
    opts.read_write = true;
    ASSERT_NO_FATAL_FAILURE(MountFiles("hexz-fuse-rw-test", std::move(files), opts));
  }

  std::vector<uint8_t> disk_, memory_;
  MemVolume* volume_ = nullptr;
};

TEST_F(ReadWriteFsTest, ModesAndStatfsShowAWritableDisk) {
  struct stat st;
  ASSERT_EQ(stat(Path("disk").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0644u);
  EXPECT_EQ(static_cast<size_t>(st.st_size), disk_.size());
  ASSERT_EQ(stat(Path("memory").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0444u);
  struct statvfs sv;
  ASSERT_EQ(statvfs(dir_.c_str(), &sv), 0);
  EXPECT_FALSE(sv.f_flag & ST_RDONLY);
}

TEST_F(ReadWriteFsTest, WritesReadBackAndReachTheVolume) {
  int fd = ::open(Path("disk").c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  std::vector<uint8_t> data = RandomBytes(300000, 3);  // spans several io_size pieces
  ASSERT_EQ(pwrite(fd, data.data(), data.size(), 65530), static_cast<ssize_t>(data.size()));
  std::vector<uint8_t> back(data.size());
  ASSERT_EQ(pread(fd, back.data(), back.size(), 65530), static_cast<ssize_t>(back.size()));
  EXPECT_EQ(back, data);
  std::memcpy(disk_.data() + 65530, data.data(), data.size());
  EXPECT_EQ(volume_->Contents(), disk_);
  // The last bytes of the disk.
  ASSERT_EQ(pwrite(fd, "xyz", 3, static_cast<off_t>(disk_.size() - 3)), 3);
  close(fd);
  std::memcpy(disk_.data() + disk_.size() - 3, "xyz", 3);
  EXPECT_EQ(volume_->Contents(), disk_);
}

TEST_F(ReadWriteFsTest, FsyncAndCloseFlushAndReportErrors) {
  int fd = ::open(Path("disk").c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pwrite(fd, "abc", 3, 0), 3);
  int before = volume_->flushes.load();
  ASSERT_EQ(fsync(fd), 0);
  EXPECT_GT(volume_->flushes.load(), before);
  before = volume_->flushes.load();
  ASSERT_EQ(fdatasync(fd), 0);
  EXPECT_GT(volume_->flushes.load(), before);
  volume_->fail_flush = true;
  errno = 0;
  EXPECT_NE(fsync(fd), 0);
  EXPECT_EQ(errno, EIO);
  before = volume_->flushes.load();
  errno = 0;
  EXPECT_NE(close(fd), 0);  // flush on close reports the error too
  EXPECT_EQ(errno, EIO);
  EXPECT_GT(volume_->flushes.load(), before);
  volume_->fail_flush = false;
}

// A writer's error (a sticky ENOSPC of the overlay) belongs to writers: a
// reader's close() neither flushes nor fails.
TEST_F(ReadWriteFsTest, ReadOnlyCloseNeitherFlushesNorFails) {
  volume_->fail_flush = true;
  int fd = ::open(Path("disk").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  char buf[4096];
  ASSERT_EQ(pread(fd, buf, sizeof buf, 0), static_cast<ssize_t>(sizeof buf));
  int before = volume_->flushes.load();
  errno = 0;
  EXPECT_EQ(close(fd), 0) << std::strerror(errno);
  EXPECT_EQ(volume_->flushes.load(), before);
  volume_->fail_flush = false;
}

TEST_F(ReadWriteFsTest, WritePastTheEndFailsWholeWithEnospc) {
  int fd = ::open(Path("disk").c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  int writes = volume_->writes.load();
  std::vector<uint8_t> data(10000, 0x5a);
  errno = 0;
  EXPECT_LT(pwrite(fd, data.data(), data.size(), static_cast<off_t>(disk_.size() - 100)), 0);
  EXPECT_EQ(errno, ENOSPC);
  errno = 0;
  EXPECT_LT(pwrite(fd, data.data(), 1, static_cast<off_t>(disk_.size())), 0);
  EXPECT_EQ(errno, ENOSPC);
  close(fd);
  EXPECT_EQ(volume_->writes.load(), writes);
  EXPECT_EQ(volume_->Contents(), disk_);
  struct stat st;
  ASSERT_EQ(stat(Path("disk").c_str(), &st), 0);
  EXPECT_EQ(static_cast<size_t>(st.st_size), disk_.size());
}

TEST_F(ReadWriteFsTest, SizeAndMetadataAreFixed) {
  errno = 0;
  EXPECT_NE(truncate(Path("disk").c_str(), 0), 0);
  EXPECT_EQ(errno, EPERM);
  errno = 0;
  EXPECT_NE(truncate(Path("disk").c_str(), static_cast<off_t>(disk_.size() + 4096)), 0);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(truncate(Path("disk").c_str(), static_cast<off_t>(disk_.size())), 0);
  errno = 0;
  EXPECT_LT(::open(Path("disk").c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC), 0);
  EXPECT_EQ(errno, EPERM);
  errno = 0;
  EXPECT_NE(chmod(Path("disk").c_str(), 0600), 0);
  EXPECT_EQ(errno, EPERM);
  errno = 0;
  EXPECT_NE(chown(Path("disk").c_str(), 1, 1), 0);
  EXPECT_EQ(errno, EPERM);
  errno = 0;
  EXPECT_NE(utimensat(AT_FDCWD, Path("disk").c_str(), nullptr, 0), 0);
  EXPECT_EQ(errno, EPERM);
  errno = 0;
  EXPECT_LT(::open(Path("new").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644), 0);
  EXPECT_EQ(errno, EPERM);
  errno = 0;
  EXPECT_NE(unlink(Path("disk").c_str()), 0);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(volume_->Contents(), disk_);
}

TEST_F(ReadWriteFsTest, MemoryStaysReadOnly) {
  errno = 0;
  EXPECT_LT(::open(Path("memory").c_str(), O_WRONLY | O_CLOEXEC), 0);
  EXPECT_EQ(errno, EACCES);
  errno = 0;
  EXPECT_LT(::open(Path("memory").c_str(), O_RDWR | O_CLOEXEC), 0);
  EXPECT_EQ(errno, EACCES);
  int fd = ::open(Path("memory").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::vector<uint8_t> back(memory_.size());
  EXPECT_EQ(pread(fd, back.data(), back.size(), 0), static_cast<ssize_t>(back.size()));
  EXPECT_EQ(back, memory_);
  close(fd);
}

TEST_F(ReadWriteFsTest, FallocatePunchHoleZeroesAndAllocationIsRefused) {
  int fd = ::open(Path("disk").c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 5000, 20000), 0)
      << std::strerror(errno);
  std::memset(disk_.data() + 5000, 0, 20000);
  EXPECT_EQ(volume_->Contents(), disk_);
  std::vector<uint8_t> back(20000, 1);
  ASSERT_EQ(pread(fd, back.data(), back.size(), 5000), 20000);
  EXPECT_EQ(back, std::vector<uint8_t>(20000, 0));
  errno = 0;
  EXPECT_NE(fallocate(fd, 0, 0, 4096), 0);
  EXPECT_EQ(errno, EOPNOTSUPP);
  errno = 0;
  EXPECT_NE(fallocate(fd, 0, static_cast<off_t>(disk_.size()), 4096), 0);
  EXPECT_EQ(errno, ENOSPC);
  close(fd);
}

}  // namespace
}  // namespace hexz::fuse
