#include "common/base/copy_hash.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "common/base/xxh3.h"

namespace hexz::base {
namespace {

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// Copies src through a CopyHasher in pieces of `piece` bytes.
uint64_t CopyInPieces(const std::vector<uint8_t>& src, std::vector<uint8_t>* dst, size_t piece) {
  dst->assign(src.size(), 0xAA);
  CopyHasher h(dst->data(), src.size());
  for (size_t off = 0; off < src.size(); off += piece) {
    h.Copy(src.data() + off, std::min(piece, src.size() - off));
  }
  return h.Digest();
}

class CopyHashTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override { CopyHasher::UsePortableKernelForTest(GetParam()); }
  void TearDown() override { CopyHasher::UsePortableKernelForTest(false); }
};

TEST_P(CopyHashTest, EqualsXxh3OfTheCopyForEveryLengthAndPiece) {
  const size_t lengths[] = {0,    1,     17,    64,    129,   240,    241,     1023,         1024,
                            1025, 2047,  2048,  3071,  3072,  3073,   4095,    4096,         4097,
                            8191, 12345, 65535, 65536, 65537, 100000, 1 << 20, (1 << 20) + 3};
  const size_t pieces[] = {4096, 1024, 65536, 64, 1000, 1 << 21};
  uint32_t seed = 1;
  for (size_t len : lengths) {
    std::vector<uint8_t> src = RandomBytes(len, seed++);
    for (size_t piece : pieces) {
      std::vector<uint8_t> dst;
      uint64_t got = CopyInPieces(src, &dst, piece);
      ASSERT_EQ(dst, src) << "len " << len << " piece " << piece;
      ASSERT_EQ(got, XXH3_64bits(src.data(), len)) << "len " << len << " piece " << piece;
    }
  }
}

TEST_P(CopyHashTest, AFlippedBitInTheSourceChangesTheDigest) {
  std::vector<uint8_t> src = RandomBytes(65536, 7);
  std::vector<uint8_t> dst;
  const uint64_t good = CopyInPieces(src, &dst, 4096);
  for (size_t bit : {size_t{0}, size_t{8 * 1000 + 3}, size_t{8 * 40000 + 7}, 8 * src.size() - 1}) {
    std::vector<uint8_t> bad = src;
    bad[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    EXPECT_NE(CopyInPieces(bad, &dst, 4096), good) << "bit " << bit;
  }
}

INSTANTIATE_TEST_SUITE_P(Kernels, CopyHashTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Portable" : "Native"; });

}  // namespace
}  // namespace hexz::base
