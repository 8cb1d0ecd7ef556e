// Mount table queries and unmounting for the front-end: `hexz mount` (is the
// mountpoint free? clean up after a failure or Ctrl+C), `hexz mount --nbd`
// (is the NBD device still mounted?) and `hexz unmount`.
//
// A hexz FUSE mount has the filesystem type "fuse.hexz" (subtype=hexz) and the
// source "hexz" (fsname=hexz). Unmounting uses /usr/bin/fusermount3 -u as a
// user (it checks that the user owns the mount) and umount2(2) as root.
//
// Thread safety: stateless; safe from any thread (Unmount forks a child).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "common/base/status.h"

namespace hexz::cli {

inline constexpr const char* kHexzFsType = "fuse.hexz";

struct MountEntry {
  std::string mountpoint;
  std::string fstype;
  std::string source;
};

// The absolute, canonical form of `path` for comparing with the mount table.
// Unlike realpath(3) it works on a dead FUSE mountpoint (ENOTCONN): only the
// parent directory is resolved.
base::Result<std::string> CanonicalMountPath(const std::string& path);

// The topmost mount on `mountpoint` (canonical), from /proc/self/mountinfo.
base::Result<std::optional<MountEntry>> FindMount(const std::string& mountpoint);

// True when statfs() or stat() on the path fails with ENOTCONN (a FUSE mount
// whose worker is gone; statfs is never answered from the attribute cache).
bool IsDeadFuseMount(const std::string& mountpoint);

// Unmounts a FUSE mount; lazy detaches even when busy (MNT_DETACH / -z).
// A busy mount gives kBusy with a message that says what to do. A non-lazy
// unmount then waits (up to 30 s) until the workers serving it have exited
// (or are zombies): a read-write worker flushes and closes its overlay after
// the kernel lets go of the mount, and `hexz unmount && hexz commit` must
// find the overlay complete and unlocked.
base::Status UnmountFuse(const std::string& mountpoint, bool lazy);

// The program name of the worker (its /proc/PID/comm).
inline constexpr const char* kWorkerProgram = "hexz-fused";

// The workers (processes named hexz-fused that the caller may inspect)
// serving `mountpoint` (canonical): each keeps an O_PATH descriptor of the
// mountpoint directory, opened before it mounts, which identifies it.
std::vector<pid_t> WorkersOf(const std::string& mountpoint);

}  // namespace hexz::cli
