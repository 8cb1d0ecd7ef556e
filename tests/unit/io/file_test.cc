#include "common/io/file.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

namespace hexz::io {
namespace {

TEST(FileTest, WriteThenReadBack) {
  char path[] = "/tmp/hexz-filetest-XXXXXX";
  int raw = mkstemp(path);
  ASSERT_GE(raw, 0);
  UniqueFd fd(raw);
  std::string data = "hello, hexz";
  ASSERT_TRUE(PwriteFull(fd.get(), data.data(), data.size(), 100, path).ok());
  EXPECT_EQ(*FileSize(fd.get(), path), 100 + data.size());
  std::string back(data.size(), '\0');
  ASSERT_TRUE(PreadFull(fd.get(), back.data(), back.size(), 100, path).ok());
  EXPECT_EQ(back, data);

  Status past_end = PreadFull(fd.get(), back.data(), back.size(), 105, path);
  EXPECT_EQ(past_end.code(), base::Code::kCorruption);
  EXPECT_NE(past_end.message().find("unexpected end of file"), std::string::npos);
  unlink(path);
}

TEST(FileTest, OpenMissingNamesPath) {
  auto r = OpenFile("/nonexistent/hexz", O_RDONLY);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), base::Code::kNotFound);
  EXPECT_NE(r.status().message().find("/nonexistent/hexz"), std::string::npos);
}

}  // namespace
}  // namespace hexz::io
