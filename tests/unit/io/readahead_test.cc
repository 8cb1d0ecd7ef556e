// Readahead: a sequential stream has the range after each request read
// ahead, once, up to the end of the volume; random requests read nothing
// ahead.
#include "common/io/readahead.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <vector>

#include "tests/unit/testing/mem_volume.h"

namespace hexz::io {
namespace {

std::vector<uint8_t> Pattern(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 7 + i / 4096);
  return v;
}

// Reads [off, off + len) as the FUSE filesystem does: from the readahead, or
// from the volume.
void ReadThrough(Readahead& ra, testing::MemVolume& vol, uint64_t off, size_t len,
                 std::vector<uint8_t>* out) {
  out->assign(len, 0);
  auto copy = [&](const uint8_t* bytes) { std::memcpy(out->data(), bytes, len); };
  if (!ra.Read(0, &vol, off, len, copy)) {
    ASSERT_TRUE(vol.Read(off, out->data(), len).ok());
  }
}

TEST(ReadaheadTest, SequentialReadsAreReadAheadOnceUpToTheEnd) {
  constexpr size_t kReq = 128 * 1024;
  const std::vector<uint8_t> bytes = Pattern(8 * kReq + 5000);  // the last request is short
  testing::MemVolume vol(bytes, 65536);
  std::mutex mu;
  std::vector<uint64_t> read_at;
  vol.on_read = [&](uint64_t off, size_t) {
    std::lock_guard<std::mutex> lock(mu);
    read_at.push_back(off);
  };
  Readahead ra;
  std::vector<uint8_t> got;
  for (uint64_t off = 0; off < bytes.size(); off += kReq) {
    size_t len = static_cast<size_t>(std::min<uint64_t>(kReq, bytes.size() - off));
    ReadThrough(ra, vol, off, len, &got);
    ASSERT_TRUE(std::equal(got.begin(), got.end(), bytes.begin() + off)) << off;
  }
  // The first two requests read the volume themselves (the second is the
  // first to start where another ended); every later one was read ahead,
  // each range once, and nothing past the end.
  EXPECT_EQ(ra.hits(), 7u);
  EXPECT_EQ(ra.ahead_reads(), 7u);
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(read_at.size(), 9u);
  // In offset order: the second request's own read and the read ahead it
  // starts for the third run on two threads, in either order.
  std::sort(read_at.begin(), read_at.end());
  for (size_t i = 0; i < read_at.size(); ++i) EXPECT_EQ(read_at[i], i * kReq);
}

TEST(ReadaheadTest, RandomReadsReadNothingAhead) {
  constexpr size_t kReq = 128 * 1024;
  const std::vector<uint8_t> bytes = Pattern(16 * kReq);
  testing::MemVolume vol(bytes, 65536);
  Readahead ra;
  std::vector<uint8_t> got;
  // No request starts where the previous one ended.
  for (uint64_t block : {5, 2, 9, 0, 3, 14, 7, 11}) {
    ReadThrough(ra, vol, block * kReq, kReq, &got);
    ASSERT_TRUE(std::equal(got.begin(), got.end(), bytes.begin() + block * kReq));
  }
  for (uint64_t off : {40960u, 8192u, 1048576u, 4096u}) {
    ReadThrough(ra, vol, off, 4096, &got);
    ASSERT_TRUE(std::equal(got.begin(), got.end(), bytes.begin() + off));
  }
  EXPECT_EQ(ra.ahead_reads(), 0u);
  EXPECT_EQ(ra.hits(), 0u);
  EXPECT_EQ(vol.reads.load(), 12);
}

// Two files read sequentially at once keep separate streams, and neither
// gets the other's bytes.
TEST(ReadaheadTest, StreamsAreSeparate) {
  constexpr size_t kReq = 65536;
  const std::vector<uint8_t> a_bytes = Pattern(4 * kReq);
  std::vector<uint8_t> b_bytes = a_bytes;
  for (uint8_t& c : b_bytes) c ^= 0xff;
  testing::MemVolume a(a_bytes, 65536), b(b_bytes, 65536);
  Readahead ra;
  std::vector<uint8_t> got(kReq);
  for (uint64_t off = 0; off < a_bytes.size(); off += kReq) {
    for (size_t s = 0; s < 2; ++s) {
      testing::MemVolume& vol = s == 0 ? a : b;
      auto copy = [&](const uint8_t* bytes) { std::memcpy(got.data(), bytes, kReq); };
      if (!ra.Read(s, &vol, off, kReq, copy)) {
        ASSERT_TRUE(vol.Read(off, got.data(), kReq).ok());
      }
      const auto& want = s == 0 ? a_bytes : b_bytes;
      ASSERT_TRUE(std::equal(got.begin(), got.end(), want.begin() + off)) << s << " " << off;
    }
  }
  EXPECT_EQ(ra.hits(), 4u);  // the last two requests of each stream
}

}  // namespace
}  // namespace hexz::io
