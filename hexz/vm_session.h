// What `hexz vm resume` and `hexz vm snapshot` share about a guest whose
// disk hexz serves.
//
// vm resume serves the snapshot's disk read-write on a unix socket in a
// private directory (PrivateRuntimeDir()/resume-XXXXXX, 0700) and starts
// QEMU with `-drive file=nbd+unix:///disk?socket=SOCKET,...`. Next to the
// socket it writes disk.json: the snapshot served (the base) and the
// overlay that takes the guest's writes, both absolute. vm snapshot finds
// that file from the guest's own command line (the -drive of its disk), and
// then takes the disk as of the pause from the base and the overlay (thin
// against the base, or standalone) instead of through QEMU's NBD export.
// It trusts the file only in a directory that is ours, 0700, and not a
// symlink, and only a regular file of ours.
//
// Thread safety: free functions with no shared state.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/base/status.h"

namespace hexz::cli {

// Splits -drive's option string at single commas (",," is a literal comma,
// kept as ",,").
std::vector<std::string> SplitDriveOptions(const std::string& s);

// The export URI of a unix socket as a -drive file= value (commas doubled).
std::string DriveNbdUri(const std::string& socket);

struct ServedDisk {
  std::string snapshot;  // the snapshot whose disk is served (absolute)
  std::string overlay;   // the overlay taking the guest's writes (absolute)
  std::string socket;    // the NBD socket QEMU reads the disk from
};

// Writes `dir`/disk.json (0600) for `disk`, replacing it atomically.
base::Status WriteServedDisk(const std::string& dir, const ServedDisk& disk);

// The guest's disk as served by hexz vm resume, from QEMU's arguments
// (`args`, without the program) and the disk's -drive id; nullopt when that
// -drive is not an NBD export of a vm resume (any other disk).
base::Result<std::optional<ServedDisk>> FindServedDisk(const std::vector<std::string>& args,
                                                       const std::string& drive_id);

// Sends NBD_CMD_FLUSH to the export at `socket` (libnbd): the server makes
// every write it acknowledged durable in its overlay.
base::Status FlushServedDisk(const std::string& socket);

}  // namespace hexz::cli
