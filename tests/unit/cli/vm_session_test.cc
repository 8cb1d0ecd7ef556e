// What vm resume leaves for vm snapshot (disk.json beside the NBD socket),
// and when vm snapshot trusts it: the -drive of the guest's disk must read
// an NBD socket in a private (0700, ours, real) directory holding a regular
// disk.json of ours. Anything else is "not served by hexz", or an error for
// a file that is there but cannot be trusted or parsed.
#include "hexz/vm_session.h"

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace hexz::cli {
namespace {

struct TempDir {
  TempDir() {
    char d[] = "/tmp/hexz-vm-session-test.XXXXXX";
    EXPECT_NE(mkdtemp(d), nullptr);
    path = d;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string path;
};

std::vector<std::string> Args(const std::string& socket, const std::string& id = "d0") {
  return {"-m",      "128",
          "-drive",  DriveNbdUri(socket).insert(0, "file=") + ",format=raw,id=" + id,
          "-device", "virtio-blk-pci,drive=d0"};
}

TEST(VmSession, SplitsDriveOptionsAndEscapesCommas) {
  EXPECT_EQ(SplitDriveOptions("file=a,,b,id=d0,if=none"),
            (std::vector<std::string>{"file=a,,b", "id=d0", "if=none"}));
  EXPECT_EQ(DriveNbdUri("/r/a,b/nbd.sock"), "nbd+unix:///disk?socket=/r/a,,b/nbd.sock");
}

TEST(VmSession, FindsTheServedDiskThroughItsDrive) {
  TempDir t;
  const std::string dir = t.path + "/resume,1";
  ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
  ASSERT_TRUE(WriteServedDisk(dir, {"/s/vm.st", "/s/vm.ov", ""}).ok());
  auto found = FindServedDisk(Args(dir + "/nbd.sock"), "d0");
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ((*found)->snapshot, "/s/vm.st");
  EXPECT_EQ((*found)->overlay, "/s/vm.ov");
  EXPECT_EQ((*found)->socket, dir + "/nbd.sock");
  // A capture with --continue moves the guest to a new snapshot: the file is
  // replaced (atomically, by a rename), and no temp file is left.
  ASSERT_TRUE(WriteServedDisk(dir, {"/x.st", "/x.ov", ""}).ok());
  found = FindServedDisk(Args(dir + "/nbd.sock"), "d0");
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ((*found)->snapshot, "/x.st");
  EXPECT_NE(access((dir + "/disk.json.new").c_str(), F_OK), 0);
}

TEST(VmSession, AnyOtherDiskIsNotServed) {
  TempDir t;
  const std::string dir = t.path + "/r";
  ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
  ASSERT_TRUE(WriteServedDisk(dir, {"/s/vm.st", "/s/vm.ov", ""}).ok());
  for (auto args :
       {Args(dir + "/nbd.sock", "other"), std::vector<std::string>{"-drive", "file=vm.qcow2,id=d0"},
        Args(t.path + "/nodir/nbd.sock")}) {
    auto found = FindServedDisk(args, "d0");
    ASSERT_TRUE(found.ok()) << found.status().ToString();
    EXPECT_FALSE(found->has_value());
  }
  // -blockdev (no drive id), and a directory that is not private.
  EXPECT_FALSE(FindServedDisk(Args(dir + "/nbd.sock"), "")->has_value());
  ASSERT_EQ(chmod(dir.c_str(), 0755), 0);
  EXPECT_FALSE(FindServedDisk(Args(dir + "/nbd.sock"), "d0")->has_value());
  // A symlink to a private directory is not one.
  ASSERT_EQ(chmod(dir.c_str(), 0700), 0);
  ASSERT_EQ(symlink(dir.c_str(), (t.path + "/link").c_str()), 0);
  EXPECT_FALSE(FindServedDisk(Args(t.path + "/link/nbd.sock"), "d0")->has_value());
}

TEST(VmSession, AnUntrustedOrBadDiskFileIsAnError) {
  TempDir t;
  const std::string dir = t.path + "/r";
  ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
  std::ofstream(t.path + "/elsewhere.json") << R"({"snapshot":"/a","overlay":"/b"})";
  ASSERT_EQ(symlink((t.path + "/elsewhere.json").c_str(), (dir + "/disk.json").c_str()), 0);
  auto found = FindServedDisk(Args(dir + "/nbd.sock"), "d0");
  EXPECT_FALSE(found.ok());
  ASSERT_EQ(unlink((dir + "/disk.json").c_str()), 0);
  std::ofstream(dir + "/disk.json") << R"({"snapshot":"/a"})";
  found = FindServedDisk(Args(dir + "/nbd.sock"), "d0");
  ASSERT_FALSE(found.ok());
  EXPECT_NE(found.status().message().find("lacks the snapshot or overlay"), std::string::npos)
      << found.status().ToString();
}

}  // namespace
}  // namespace hexz::cli
