// hexz unmount (also `hexz vm unmount`): takes a hexz FUSE mount away
// (fusermount3 -u as a user, umount2 as root). Nothing mounted there is a
// success with a note; a busy mount is reported as such; a dead worker's
// mount ("Transport endpoint is not connected") is detached lazily.
#include <cerrno>
#include <cstdio>
#include <memory>
#include <string>

#include "hexz/commands.h"
#include "hexz/mount_table.h"
#include "hexz/nbd_mount.h"

namespace hexz::cli {

namespace {

using base::Status;

int RunUnmount(const std::string& mnt) {
  auto canonical = CanonicalMountPath(mnt);
  if (!canonical.ok()) return Fail(canonical.status().WithContext("mountpoint"));
  auto entry = FindMount(*canonical);
  if (!entry.ok()) return Fail(entry.status());
  if (!*entry) {
    std::printf("hexz: nothing is mounted on %s; nothing to do\n", mnt.c_str());
    return 0;
  }
  if ((*entry)->source.rfind("/dev/nbd", 0) == 0) return RunNbdUnmount(*canonical);
  if ((*entry)->fstype != kHexzFsType) {
    return Fail(Status::InvalidArgument(mnt + " is not a hexz mount (it is a " + (*entry)->fstype +
                                        " mount); not touching it"));
  }
  bool dead = IsDeadFuseMount(*canonical);
  Status st = UnmountFuse(*canonical, /*lazy=*/dead);
  auto after = FindMount(*canonical);
  if (!st.ok()) {
    // A dead worker's auto-unmount helper may have removed it meanwhile.
    if (after.ok() && !*after) {
      std::printf("hexz: %s went away while unmounting it; nothing left to do\n", mnt.c_str());
      return 0;
    }
    return Fail(st);
  }
  if (after.ok() && *after && (*after)->fstype == kHexzFsType) {
    return Fail(Status::Internal(mnt + " is still mounted after unmounting it"));
  }
  if (dead) {
    std::printf(
        "hexz: %s: its worker was gone (Transport endpoint is not connected); "
        "detached the dead mount\n",
        mnt.c_str());
  } else {
    std::printf("hexz: unmounted %s\n", mnt.c_str());
  }
  return 0;
}

}  // namespace

void AddUnmountCommand(CLI::App& parent, int* rc) {
  auto mnt = std::make_shared<std::string>();
  CLI::App* cmd = parent.add_subcommand("unmount", "Unmount a hexz mount");
  cmd->add_option("mountpoint", *mnt, "Where the snapshot is mounted")->required();
  cmd->callback([rc, mnt] { *rc = RunUnmount(*mnt); });
}

}  // namespace hexz::cli
