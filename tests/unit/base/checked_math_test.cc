#include "common/base/checked_math.h"

#include <gtest/gtest.h>

namespace hexz::base {
namespace {

TEST(CheckedMathTest, Add) {
  EXPECT_EQ(CheckedAdd<uint64_t>(1, 2), 3u);
  EXPECT_EQ(CheckedAdd<uint64_t>(UINT64_MAX, 0), UINT64_MAX);
  EXPECT_FALSE(CheckedAdd<uint64_t>(UINT64_MAX, 1));
  EXPECT_FALSE(CheckedAdd<uint32_t>(0xffffffffu, 1));
}

TEST(CheckedMathTest, Sub) {
  EXPECT_EQ(CheckedSub<uint64_t>(5, 5), 0u);
  EXPECT_FALSE(CheckedSub<uint64_t>(4, 5));
}

TEST(CheckedMathTest, Mul) {
  EXPECT_EQ(CheckedMul<uint64_t>(1ull << 31, 1ull << 32), 1ull << 63);
  EXPECT_FALSE(CheckedMul<uint64_t>(1ull << 32, 1ull << 32));
  EXPECT_EQ(CheckedMul<uint64_t>(0, UINT64_MAX), 0u);
}

TEST(CheckedMathTest, CeilDiv) {
  EXPECT_EQ(CeilDiv<uint64_t>(0, 4), 0u);
  EXPECT_EQ(CeilDiv<uint64_t>(1, 4), 1u);
  EXPECT_EQ(CeilDiv<uint64_t>(8, 4), 2u);
  EXPECT_EQ(CeilDiv<uint64_t>(UINT64_MAX, 2), (UINT64_MAX / 2) + 1);
  EXPECT_FALSE(CeilDiv<uint64_t>(1, 0));
}

TEST(CheckedMathTest, RangeWithin) {
  EXPECT_TRUE(RangeWithin<uint64_t>(0, 10, 10));
  EXPECT_FALSE(RangeWithin<uint64_t>(1, 10, 10));
  EXPECT_TRUE(RangeWithin<uint64_t>(10, 0, 10));
  EXPECT_FALSE(RangeWithin<uint64_t>(UINT64_MAX, 2, UINT64_MAX));
}

TEST(CheckedMathTest, Cast) {
  EXPECT_EQ(CheckedCast<uint32_t>(uint64_t{7}), 7u);
  EXPECT_FALSE(CheckedCast<uint32_t>(uint64_t{1} << 32));
  EXPECT_FALSE(CheckedCast<uint64_t>(-1));
  EXPECT_FALSE(CheckedCast<int64_t>(UINT64_MAX));
}

}  // namespace
}  // namespace hexz::base
