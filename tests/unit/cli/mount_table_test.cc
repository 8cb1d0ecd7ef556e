#include "hexz/mount_table.h"

#include <gtest/gtest.h>
#include <unistd.h>

namespace hexz::cli {
namespace {

TEST(MountTableTest, FindsProcAndNothingOnAPlainDirectory) {
  auto proc = FindMount("/proc");
  ASSERT_TRUE(proc.ok()) << proc.status().ToString();
  ASSERT_TRUE(proc->has_value());
  EXPECT_EQ((*proc)->fstype, "proc");
  auto none = FindMount("/proc/self");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST(MountTableTest, CanonicalPathResolvesRelativeAndTrailingSlashes) {
  char tmpl[] = "/tmp/hexz-mounts-test.XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  auto a = CanonicalMountPath(dir + "//");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a, dir);
  char cwd[4096];
  ASSERT_NE(getcwd(cwd, sizeof cwd), nullptr);
  ASSERT_EQ(chdir("/tmp"), 0);
  auto b = CanonicalMountPath(dir.substr(5));  // relative to /tmp
  ASSERT_EQ(chdir(cwd), 0);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, dir);
  auto missing = CanonicalMountPath(dir + "/missing");
  EXPECT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find(dir + "/missing"), std::string::npos);
  EXPECT_FALSE(IsDeadFuseMount(dir));
  rmdir(dir.c_str());
}

}  // namespace
}  // namespace hexz::cli
