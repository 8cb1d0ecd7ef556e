// ReadOnlyFs over in-memory volumes, mounted for real when the test can (root
// and /dev/fuse); ReadPool on its own always.
#include "common/fuse/read_only_fs.h"

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

TEST(ReadPoolTest, SplitsAtBlockBoundariesAndCoversTheRange) {
  ReadPool pool(4);
  std::mutex mu;
  std::vector<std::tuple<uint64_t, uint64_t, uint64_t>> pieces;
  Status st = pool.ForEachPiece(1000, 300000, 65536, [&](uint64_t off, uint64_t len, uint64_t pos) {
    std::lock_guard<std::mutex> lock(mu);
    pieces.emplace_back(off, len, pos);
    return Status::Ok();
  });
  ASSERT_TRUE(st.ok());
  std::sort(pieces.begin(), pieces.end());
  ASSERT_EQ(pieces.size(), 5u);  // [1000,65536) ... [262144,301000)
  uint64_t expect = 1000;
  for (auto [off, len, pos] : pieces) {
    EXPECT_EQ(off, expect);
    EXPECT_EQ(pos, off - 1000);
    EXPECT_TRUE(off % 65536 == 0 || off == 1000);
    expect = off + len;
  }
  EXPECT_EQ(expect, 301000u);
}

TEST(ReadPoolTest, RunsPiecesInParallel) {
  ReadPool pool(4);
  std::mutex mu;
  std::condition_variable cv;
  int running = 0, max_running = 0;
  Status st = pool.ForEachPiece(0, 16 * 4096, 4096, [&](uint64_t, uint64_t, uint64_t) {
    std::unique_lock<std::mutex> lock(mu);
    max_running = std::max(max_running, ++running);
    cv.notify_all();
    // Wait (bounded) until a second piece runs at the same time.
    cv.wait_for(lock, std::chrono::seconds(10), [&] { return max_running >= 2; });
    --running;
    return Status::Ok();
  });
  ASSERT_TRUE(st.ok());
  EXPECT_GE(max_running, 2);
}

TEST(ReadPoolTest, ReportsAnError) {
  ReadPool pool(3);
  Status st = pool.ForEachPiece(0, 10 * 512, 512, [](uint64_t off, uint64_t, uint64_t) {
    return off == 3 * 512 ? Status::Corruption("block 3 checksum mismatch") : Status::Ok();
  });
  EXPECT_EQ(st.code(), base::Code::kCorruption);
  EXPECT_EQ(st.message(), "block 3 checksum mismatch");
}

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
