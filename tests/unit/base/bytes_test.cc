// The one copy of the byte, integer-encoding and path helpers.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "common/base/bytes.h"
#include "common/base/endian.h"
#include "common/base/path.h"

namespace hexz::base {
namespace {

TEST(EndianTest, LittleAndBigEndianRoundTripAtAnyAlignment) {
  uint8_t buf[20] = {};
  PutLe16(buf + 1, 0x0102);
  EXPECT_EQ(buf[1], 0x02);
  EXPECT_EQ(buf[2], 0x01);
  PutLe32(buf + 3, 0x01020304u);
  EXPECT_EQ(buf[3], 0x04);
  EXPECT_EQ(buf[6], 0x01);
  PutLe64(buf + 7, 0x0102030405060708ull);
  EXPECT_EQ(buf[7], 0x08);
  EXPECT_EQ(buf[14], 0x01);
  EXPECT_EQ(GetLe16(buf + 1), 0x0102);
  EXPECT_EQ(GetLe32(buf + 3), 0x01020304u);
  EXPECT_EQ(GetLe64(buf + 7), 0x0102030405060708ull);

  PutBe16(buf + 1, 0x0102);
  EXPECT_EQ(buf[1], 0x01);
  PutBe32(buf + 3, 0x01020304u);
  EXPECT_EQ(buf[3], 0x01);
  PutBe64(buf + 7, 0x0102030405060708ull);
  EXPECT_EQ(buf[7], 0x01);
  EXPECT_EQ(buf[14], 0x08);
  EXPECT_EQ(GetBe16(buf + 1), 0x0102);
  EXPECT_EQ(GetBe32(buf + 3), 0x01020304u);
  EXPECT_EQ(GetBe64(buf + 7), 0x0102030405060708ull);
}

TEST(BytesTest, AllZeroLooksAtEveryByte) {
  std::vector<uint8_t> b(37, 0);
  EXPECT_TRUE(AllZero(b.data(), b.size()));
  EXPECT_TRUE(AllZero(nullptr, 0));
  for (size_t i = 0; i < b.size(); ++i) {
    b[i] = 1;
    EXPECT_FALSE(AllZero(b.data(), b.size())) << i;
    EXPECT_TRUE(AllZero(b.data(), i)) << i;
    b[i] = 0;
  }
}

TEST(BytesTest, HexRoundTripAndRefusals) {
  const uint8_t bytes[] = {0x00, 0x9f, 0xa0, 0xff};
  EXPECT_EQ(HexEncode(bytes, sizeof bytes), "009fa0ff");
  uint8_t out[4];
  ASSERT_TRUE(HexDecode("009FA0ff", out, sizeof out));
  EXPECT_EQ(std::vector<uint8_t>(out, out + 4), std::vector<uint8_t>(bytes, bytes + 4));
  EXPECT_FALSE(HexDecode("009fa0f", out, sizeof out));     // odd length
  EXPECT_FALSE(HexDecode("009fa0ff00", out, sizeof out));  // too long
  EXPECT_FALSE(HexDecode("009fa0fg", out, sizeof out));    // not a digit
  EXPECT_EQ(HexEncode(nullptr, 0), "");
}

TEST(PathTest, DirNameBaseNameAndResolveBeside) {
  EXPECT_EQ(DirName("a/b/c.st"), "a/b");
  EXPECT_EQ(DirName("c.st"), ".");
  EXPECT_EQ(DirName("/c.st"), "/");
  EXPECT_EQ(BaseName("a/b/c.st"), "c.st");
  EXPECT_EQ(BaseName("c.st"), "c.st");
  EXPECT_EQ(BaseName("a/"), "");
  EXPECT_EQ(ResolveBeside("dir/child.st", "base.st"), "dir/base.st");
  EXPECT_EQ(ResolveBeside("child.st", "../base.st"), "./../base.st");
  EXPECT_EQ(ResolveBeside("dir/child.st", "/abs/base.st"), "/abs/base.st");
}

}  // namespace
}  // namespace hexz::base
