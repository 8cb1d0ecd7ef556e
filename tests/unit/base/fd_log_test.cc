#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "common/base/fd.h"
#include "common/base/log.h"

namespace hexz::base {
namespace {

bool IsOpen(int fd) { return fcntl(fd, F_GETFD) != -1; }

TEST(UniqueFdTest, ClosesOnDestruction) {
  int raw = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(raw, 0);
  {
    UniqueFd fd(raw);
    EXPECT_TRUE(fd.valid());
    EXPECT_EQ(fd.get(), raw);
  }
  EXPECT_FALSE(IsOpen(raw));
}

TEST(UniqueFdTest, MoveAndRelease) {
  UniqueFd a(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  int raw = a.get();
  UniqueFd b(std::move(a));
  EXPECT_FALSE(a.valid());  // NOLINT: testing moved-from state
  EXPECT_EQ(b.get(), raw);
  int released = b.release();
  EXPECT_FALSE(b.valid());
  EXPECT_TRUE(IsOpen(released));
  ::close(released);
}

TEST(UniqueFdTest, ResetClosesOld) {
  int r1 = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  int r2 = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  UniqueFd fd(r1);
  fd.reset(r2);
  EXPECT_FALSE(IsOpen(r1));
  EXPECT_TRUE(IsOpen(r2));
}

TEST(LogTest, WritesLinesToFileWithLevelFilter) {
  char dir[] = "/tmp/hexz-logtest-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string path = std::string(dir) + "/log";
  SetLogProgram("unit");
  ASSERT_TRUE(SetLogFile(path).ok());
  SetLogLevel(LogLevel::kInfo);
  HEXZ_LOG_INFO("hello %d", 42);
  HEXZ_LOG_DEBUG("hidden %s", "debug");
  HEXZ_LOG_ERROR("bad thing on %s", "/x");
  SetLogFd(STDERR_FILENO, false);

  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  EXPECT_NE(text.find("unit["), std::string::npos) << text;
  EXPECT_NE(text.find("info: hello 42\n"), std::string::npos) << text;
  EXPECT_NE(text.find("error: bad thing on /x\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("hidden"), std::string::npos) << text;
  EXPECT_EQ(text[4], '-');  // timestamp "YYYY-MM-DD..."
  std::remove(path.c_str());
  rmdir(dir);
}

// --log-file in a directory others can write to: only a regular file of
// ours is appended to; a FIFO (nobody reading) must not block.
TEST(LogTest, OpenLogForAppendRefusesWhatIsNotOurRegularFile) {
  char dir[] = "/tmp/hexz-logtest.XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string fifo = std::string(dir) + "/fifo";
  std::string link = std::string(dir) + "/link";
  std::string mine = std::string(dir) + "/mine.log";
  std::string theirs = std::string(dir) + "/theirs.log";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0666), 0);
  ASSERT_EQ(symlink(mine.c_str(), link.c_str()), 0);
  auto r = OpenLogForAppend(fifo);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("is not a regular file"), std::string::npos);
  r = OpenLogForAppend(link);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("is a symbolic link"), std::string::npos);
  r = OpenLogForAppend(mine);  // created 0600
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  struct stat st;
  ASSERT_EQ(fstat(r->get(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(fcntl(r->get(), F_GETFL) & (O_NONBLOCK | O_APPEND), O_APPEND);
  r = OpenLogForAppend(mine);  // and appended to when it exists
  EXPECT_TRUE(r.ok());
  if (geteuid() == 0) {
    int fd = open(theirs.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0666);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(fchown(fd, 4242, 4242), 0);
    close(fd);
    r = OpenLogForAppend(theirs);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("is owned by uid 4242, not by you"), std::string::npos);
    unlink(theirs.c_str());
  }
  unlink(fifo.c_str());
  unlink(link.c_str());
  unlink(mine.c_str());
  rmdir(dir);
}

TEST(LogTest, UnwritableFileIsAnError) {
  Status s = SetLogFile("/nonexistent-dir/hexz.log");
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("/nonexistent-dir/hexz.log"), std::string::npos);
}

}  // namespace
}  // namespace hexz::base
