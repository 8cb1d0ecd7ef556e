// `hexz mount --nbd` and the NBD side of `hexz unmount`.
//
// The front-end starts hexz-fused in NBD mode on one end of a socketpair (no
// path, no port: no other process can connect), negotiates the export on the
// other end as the user (nbd::NegotiateClient), then runs the setuid helper
// hexz-nbd-helper with that socket as fd 3 to attach it as /dev/nbdN and
// mount the filesystem (nosuid, nodev). The partition table and the
// filesystem type are read through the snapshot, as the user (the helper is
// only told the partition number, and the kernel reads the table itself). Teardown, on a signal
// or `hexz unmount`: helper detach (unmount + disconnect), then the worker
// sees the disconnect, flushes the overlay and exits.
//
// Thread safety: front-end main thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common/base/status.h"
#include "hexz/cli_checks.h"
#include "hexz/remote_cli.h"

namespace hexz::cli {

struct NbdMountArgs {
  std::string snapshot;
  std::string mountpoint;
  bool rw = false;
  std::string overlay;
  WorkerOptions worker;  // --daemon is refused: an NBD mount runs in the foreground
  bool uid_gid = false;  // --uid/--gid given (FUSE only)
  // --partition N: mount partition N (the kernel's /dev/nbdXpN). Without it,
  // the only mountable filesystem (the whole disk's, or a single partition's).
  std::optional<uint32_t> partition;
  // --ca-file, --remote-timeout, --s3-endpoint: a URL is read through a
  // fetcher (hexz/fetcher.h), a sibling of the worker. Null: local files only.
  std::shared_ptr<RemoteFlags> remote;
};

// Returns the process exit code (0, 1, 2).
int RunNbdMount(const NbdMountArgs& args);

// `hexz unmount` on a mount whose source is /dev/nbdN: runs the helper's
// detach. Returns the exit code.
int RunNbdUnmount(const std::string& canonical_mountpoint);

// The filesystem type found in the first bytes of a disk ("ext4", "xfs",
// "btrfs", "vfat"), or "" when none is recognized. `head` holds the first
// `len` bytes (at least 65608 for btrfs).
std::string DetectFsType(const uint8_t* head, size_t len);

}  // namespace hexz::cli
