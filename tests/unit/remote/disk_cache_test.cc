// The disk cache of remote chains (common/remote/disk_cache.h) over a local
// file: hits, misses for another key or chunk, damaged and truncated
// entries as misses, the bound, direct-mapped eviction, and CachedSource
// reading whole missing runs once from its inner source. The fetcher's use
// over HTTP is tested against nginx (tests/integration/remote_disk_cache.sh).
#include "common/remote/disk_cache.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <random>
#include <vector>

namespace hexz::remote {
namespace {

namespace fs = std::filesystem;

std::string TempDir() {
  char tmpl[] = "/tmp/hexz-disk-cache-XXXXXX";
  EXPECT_NE(mkdtemp(tmpl), nullptr);
  return tmpl;
}

std::vector<uint8_t> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

DiskCacheKey Key(uint8_t first, uint64_t size) {
  DiskCacheKey k;
  k.id[0] = first;
  k.size = size;
  return k;
}

// A source over memory that counts its reads.
class CountingSource final : public io::Source {
 public:
  explicit CountingSource(std::vector<uint8_t> data) : data_(std::move(data)) {}
  const std::string& name() const override { return name_; }
  uint64_t size() const override { return data_.size(); }
  std::string identity() const override { return name_; }
  Status ReadAt(void* buf, size_t len, uint64_t offset) const override {
    reads_++;
    bytes_ += len;
    std::memcpy(buf, data_.data() + offset, len);
    return Status::Ok();
  }
  mutable std::atomic<int> reads_{0};
  mutable std::atomic<uint64_t> bytes_{0};

 private:
  std::vector<uint8_t> data_;
  std::string name_ = "mem";
};

TEST(DiskCache, OpenFileCreatesAPrivateBoundedFile) {
  std::string dir = TempDir() + "/c";
  auto fd = DiskCache::OpenFile(dir + ":1M");
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  struct stat st;
  ASSERT_EQ(stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  ASSERT_EQ(stat((dir + "/blocks.cache").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_LE(static_cast<uint64_t>(st.st_size), uint64_t{1} << 20);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size),
            DiskCache::SlotsFor(1 << 20) * DiskCache::SlotBytes());
  // Reopened with a smaller bound, the file shrinks to it.
  ASSERT_TRUE(DiskCache::OpenFile(dir + ":200K").ok());
  ASSERT_EQ(stat((dir + "/blocks.cache").c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), 3 * DiskCache::SlotBytes());
  // Without SIZE, the existing file keeps its size.
  ASSERT_TRUE(DiskCache::OpenFile(dir).ok());
  ASSERT_EQ(stat((dir + "/blocks.cache").c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), 3 * DiskCache::SlotBytes());
  fs::remove_all(fs::path(dir).parent_path());
}

TEST(DiskCache, OpenFileRefusesBadSpecsAndOpenDirectories) {
  std::string base = TempDir();
  EXPECT_FALSE(DiskCache::OpenFile(base + "/c:1K").ok());  // less than a slot
  EXPECT_FALSE(DiskCache::OpenFile(base + "/c:lots").ok());
  EXPECT_FALSE(DiskCache::OpenFile(":1M").ok());
  std::string open_dir = base + "/shared";
  ASSERT_EQ(mkdir(open_dir.c_str(), 0777), 0);
  ASSERT_EQ(chmod(open_dir.c_str(), 0777), 0);
  auto r = DiskCache::OpenFile(open_dir);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("writable by group or others"), std::string::npos)
      << r.status().ToString();
  fs::create_directory_symlink(base, base + "/link");
  EXPECT_FALSE(DiskCache::OpenFile(base + "/link").ok());
  fs::remove_all(base);
}

TEST(DiskCache, HitsOnlyTheSameKeyAndChunk) {
  std::string dir = TempDir();
  auto fd = DiskCache::OpenFile(dir + ":4M");
  ASSERT_TRUE(fd.ok());
  auto cache = DiskCache::FromFd(std::move(*fd));
  ASSERT_TRUE(cache.ok());
  auto data = Random(kChunkBytes, 1);
  (*cache)->Put(Key(1, 1000000), 3, data.data(), kChunkBytes);
  std::vector<uint8_t> got(kChunkBytes);
  ASSERT_TRUE((*cache)->Get(Key(1, 1000000), 3, got.data(), kChunkBytes));
  EXPECT_EQ(got, data);
  EXPECT_FALSE((*cache)->Get(Key(2, 1000000), 3, got.data(), kChunkBytes));  // another snapshot
  EXPECT_FALSE((*cache)->Get(Key(1, 2000000), 3, got.data(), kChunkBytes));  // another size
  EXPECT_FALSE((*cache)->Get(Key(1, 1000000), 4, got.data(), kChunkBytes));  // another chunk
  EXPECT_FALSE((*cache)->Get(Key(1, 1000000), 3, got.data(), 100));          // another length
  fs::remove_all(dir);
}

TEST(DiskCache, DamagedOrTruncatedEntriesAreMisses) {
  std::string dir = TempDir();
  auto fd = DiskCache::OpenFile(dir + ":256K");  // 3 slots
  ASSERT_TRUE(fd.ok());
  int raw = fd->get();
  auto cache = DiskCache::FromFd(std::move(*fd));
  ASSERT_TRUE(cache.ok());
  std::vector<uint8_t> got(kChunkBytes);
  for (uint64_t c = 0; c < 3; ++c) {
    auto data = Random(kChunkBytes, static_cast<uint32_t>(c));
    (*cache)->Put(Key(7, 1 << 30), c, data.data(), kChunkBytes);
  }
  int hits = 0;
  for (uint64_t c = 0; c < 3; ++c)
    hits += (*cache)->Get(Key(7, 1 << 30), c, got.data(), kChunkBytes);
  ASSERT_GT(hits, 0);
  // One byte flipped every 4 KiB of the file: every entry is a miss.
  struct stat st;
  ASSERT_EQ(fstat(raw, &st), 0);
  for (off_t at = 100; at < st.st_size; at += 4096) {
    uint8_t b;
    ASSERT_EQ(pread(raw, &b, 1, at), 1);
    b ^= 0x10;
    ASSERT_EQ(pwrite(raw, &b, 1, at), 1);
  }
  for (uint64_t c = 0; c < 3; ++c)
    EXPECT_FALSE((*cache)->Get(Key(7, 1 << 30), c, got.data(), kChunkBytes));
  // Rewritten, then the file cut short: a miss, no error.
  auto data = Random(kChunkBytes, 9);
  (*cache)->Put(Key(7, 1 << 30), 0, data.data(), kChunkBytes);
  ASSERT_TRUE((*cache)->Get(Key(7, 1 << 30), 0, got.data(), kChunkBytes));
  ASSERT_EQ(ftruncate(raw, 100), 0);
  EXPECT_FALSE((*cache)->Get(Key(7, 1 << 30), 0, got.data(), kChunkBytes));
  fs::remove_all(dir);
}

TEST(CachedSource, FetchesEachMissingRunOnceThenReadsFromTheCache) {
  std::string dir = TempDir();
  auto fd = DiskCache::OpenFile(dir + ":16M");
  ASSERT_TRUE(fd.ok());
  auto cache = DiskCache::FromFd(std::move(*fd));
  ASSERT_TRUE(cache.ok());
  const auto data = Random(5 * kChunkBytes + 777, 3);  // a short last chunk
  std::array<uint8_t, 16> id{};
  id[5] = 9;
  auto inner = std::make_unique<CountingSource>(data);
  CountingSource* counter = inner.get();
  CachedSource source(std::move(inner), cache->get(), id);
  std::vector<uint8_t> got(data.size());
  // A read in the middle of chunk 1 fetches chunk 1 whole.
  ASSERT_TRUE(source.ReadAt(got.data(), 100, kChunkBytes + 50).ok());
  EXPECT_EQ(0, std::memcmp(got.data(), data.data() + kChunkBytes + 50, 100));
  EXPECT_EQ(counter->reads_, 1);
  EXPECT_EQ(counter->bytes_, kChunkBytes);
  // The whole object: chunk 0 and chunks 2..5 are two runs, chunk 1 a hit.
  ASSERT_TRUE(source.ReadAt(got.data(), data.size(), 0).ok());
  EXPECT_EQ(got, data);
  EXPECT_EQ(counter->reads_, 3);
  EXPECT_EQ(counter->bytes_, data.size());
  // Again, through a new source over the same cache (a second mount): no read.
  auto inner2 = std::make_unique<CountingSource>(data);
  CountingSource* counter2 = inner2.get();
  CachedSource again(std::move(inner2), cache->get(), id);
  std::fill(got.begin(), got.end(), 0);
  ASSERT_TRUE(again.ReadAt(got.data(), data.size(), 0).ok());
  EXPECT_EQ(got, data);
  EXPECT_EQ(counter2->reads_, 0);
  // Another snapshot id over the same bytes: nothing hits.
  id[5] = 10;
  auto inner3 = std::make_unique<CountingSource>(data);
  CountingSource* counter3 = inner3.get();
  CachedSource other(std::move(inner3), cache->get(), id);
  ASSERT_TRUE(other.ReadAt(got.data(), data.size(), 0).ok());
  EXPECT_EQ(counter3->bytes_, data.size());
  fs::remove_all(dir);
}

TEST(CachedSource, ABoundSmallerThanTheObjectStillReadsRight) {
  std::string dir = TempDir();
  auto fd = DiskCache::OpenFile(dir + ":200K");  // 3 slots for 40 chunks
  ASSERT_TRUE(fd.ok());
  auto cache = DiskCache::FromFd(std::move(*fd));
  ASSERT_TRUE(cache.ok());
  const auto data = Random(40 * kChunkBytes, 4);
  CachedSource source(std::make_unique<CountingSource>(data), cache->get(), {});
  std::vector<uint8_t> got(data.size());
  for (int pass = 0; pass < 2; ++pass) {
    std::fill(got.begin(), got.end(), 0);
    ASSERT_TRUE(source.ReadAt(got.data(), data.size(), 0).ok());
    EXPECT_EQ(got, data);
  }
  struct stat st;
  ASSERT_EQ(stat((dir + "/blocks.cache").c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), 3 * DiskCache::SlotBytes());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace hexz::remote
