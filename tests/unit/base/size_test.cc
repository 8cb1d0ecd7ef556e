#include "common/base/size.h"

#include <gtest/gtest.h>

namespace hexz::base {
namespace {

TEST(ParseSizeTest, Accepts) {
  EXPECT_EQ(*ParseSize("0"), 0u);
  EXPECT_EQ(*ParseSize("4096"), 4096u);
  EXPECT_EQ(*ParseSize("512K"), 512u * 1024);
  EXPECT_EQ(*ParseSize("256M"), 256ull << 20);
  EXPECT_EQ(*ParseSize("1G"), 1ull << 30);
  EXPECT_EQ(*ParseSize("4G"), 4ull << 30);
  EXPECT_EQ(*ParseSize("2T"), 2ull << 40);
  EXPECT_EQ(*ParseSize("1P"), 1ull << 50);
  EXPECT_EQ(*ParseSize("64k"), 64u * 1024);
  EXPECT_EQ(*ParseSize("1g"), 1ull << 30);
  EXPECT_EQ(*ParseSize("1GiB"), 1ull << 30);
  EXPECT_EQ(*ParseSize("1GB"), 1ull << 30);
  EXPECT_EQ(*ParseSize("100B"), 100u);
  EXPECT_EQ(*ParseSize("18446744073709551615"), UINT64_MAX);
  EXPECT_EQ(*ParseSize("16383P"), 16383ull << 50);
}

void ExpectRejected(const char* text, const char* why) {
  Result<uint64_t> r = ParseSize(text);
  ASSERT_FALSE(r.ok()) << text;
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << text;
  EXPECT_NE(r.status().message().find(std::string("'") + text + "'"), std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find(why), std::string::npos) << r.status().message();
}

TEST(ParseSizeTest, Rejects) {
  ExpectRejected("", "empty");
  ExpectRejected("-1", "must start with a digit");
  ExpectRejected("+1", "must start with a digit");
  ExpectRejected(" 1G", "must start with a digit");
  ExpectRejected("G", "must start with a digit");
  ExpectRejected("1X", "unknown suffix");
  ExpectRejected("1 G", "unknown suffix");
  ExpectRejected("1.5G", "unknown suffix");
  ExpectRejected("1GX", "unknown suffix");
  ExpectRejected("1BB", "unknown suffix");
  ExpectRejected("18446744073709551616", "too large");
  ExpectRejected("99999999999999999999999", "too large");
  ExpectRejected("16384P", "too large");
  ExpectRejected("17179869184G", "too large");
}

TEST(FormatSizeTest, Formats) {
  EXPECT_EQ(FormatSize(0), "0 B");
  EXPECT_EQ(FormatSize(1023), "1023 B");
  EXPECT_EQ(FormatSize(1536), "1.5 KiB");
  EXPECT_EQ(FormatSize(256ull << 20), "256 MiB");
  EXPECT_EQ(FormatSize(4ull << 30), "4 GiB");
}

}  // namespace
}  // namespace hexz::base
