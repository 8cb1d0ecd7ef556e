// WindowVolume: a byte range of another volume, with its bounds enforced.
#include "common/io/window.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "tests/unit/testing/mem_volume.h"

namespace hexz::io {
namespace {

using base::Status;
using testing::MemVolume;

std::vector<uint8_t> Pattern(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 7 + 1);
  return v;
}

TEST(WindowVolumeTest, ReadsAtTheWindowsOffset) {
  MemVolume base(Pattern(64 * 1024));
  auto w = WindowVolume::Create(&base, 4096, 8192, /*writable=*/false);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ((*w)->Size(), 8192u);
  EXPECT_FALSE((*w)->Writable());
  uint8_t got[16], want[16];
  ASSERT_TRUE((*w)->Read(100, got, sizeof got).ok());
  ASSERT_TRUE(base.Read(4096 + 100, want, sizeof want).ok());
  EXPECT_EQ(0, std::memcmp(got, want, sizeof got));
  Status past = (*w)->Read(8192 - 8, got, sizeof got);
  EXPECT_EQ(past.code(), base::Code::kOutOfRange);
  EXPECT_EQ((*w)->Read(UINT64_MAX - 4, got, sizeof got).code(), base::Code::kOutOfRange);
}

TEST(WindowVolumeTest, WindowMustLieWithinTheVolume) {
  MemVolume base(Pattern(8192));
  EXPECT_FALSE(WindowVolume::Create(&base, 4096, 8192, false).ok());
  EXPECT_FALSE(WindowVolume::Create(&base, UINT64_MAX, 2, false).ok());
  EXPECT_TRUE(WindowVolume::Create(&base, 8192, 0, false).ok());
}

TEST(WindowVolumeTest, ReadOnlyWindowRefusesWrites) {
  MemVolume base(Pattern(8192), 4096, /*writable=*/true);
  auto w = WindowVolume::Create(&base, 0, 4096, /*writable=*/false);
  ASSERT_TRUE(w.ok());
  uint8_t b[4] = {};
  EXPECT_EQ((*w)->Write(0, b, sizeof b, false).code(), base::Code::kReadOnly);
  EXPECT_EQ((*w)->WriteZeroes(0, 4, false).code(), base::Code::kReadOnly);
  EXPECT_EQ(base.writes.load(), 0);
  // A writable window of a read-only volume is read-only too.
  MemVolume ro(Pattern(8192));
  auto w2 = WindowVolume::Create(&ro, 0, 4096, /*writable=*/true);
  ASSERT_TRUE(w2.ok());
  EXPECT_FALSE((*w2)->Writable());
}

TEST(WindowVolumeTest, WritesStayInsideTheWindow) {
  MemVolume base(std::vector<uint8_t>(16384, 0xaa), 4096, /*writable=*/true);
  auto w = WindowVolume::Create(&base, 4096, 4096, /*writable=*/true);
  ASSERT_TRUE(w.ok());
  const uint8_t data[4] = {1, 2, 3, 4};
  ASSERT_TRUE((*w)->Write(10, data, sizeof data, false).ok());
  uint8_t got[4];
  ASSERT_TRUE(base.Read(4096 + 10, got, sizeof got).ok());
  EXPECT_EQ(0, std::memcmp(got, data, sizeof got));
  // Ending past the window fails as a whole: the byte after it is untouched.
  Status across = (*w)->Write(4094, data, sizeof data, false);
  EXPECT_EQ(across.code(), base::Code::kNoSpace);
  EXPECT_EQ((*w)->WriteZeroes(4000, 200, false).code(), base::Code::kNoSpace);
  EXPECT_EQ((*w)->Trim(4096, 1).code(), base::Code::kNoSpace);
  ASSERT_TRUE(base.Read(4094, got, sizeof got).ok());
  for (uint8_t b : got) EXPECT_EQ(b, 0xaa);
  ASSERT_TRUE(base.Read(8190, got, sizeof got).ok());
  for (uint8_t b : got) EXPECT_EQ(b, 0xaa);
}

TEST(WindowVolumeTest, ExtentsAreInTheWindowsOffsets) {
  MemVolume base(std::vector<uint8_t>(16384, 0));
  base.set_hole_from(8192);
  auto w = WindowVolume::Create(&base, 4096, 8192, false);
  ASSERT_TRUE(w.ok());
  std::vector<Extent> out;
  ASSERT_TRUE((*w)->Extents(1000, 7000, &out).ok());
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].offset, 1000u);
  EXPECT_EQ(out[0].length, 3096u);
  EXPECT_FALSE(out[0].hole);
  EXPECT_EQ(out[1].offset, 4096u);
  EXPECT_EQ(out[1].length, 3904u);
  EXPECT_TRUE(out[1].hole);
}

}  // namespace
}  // namespace hexz::io
