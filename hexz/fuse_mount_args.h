// The mount.fuse calling convention: `mount -t fuse.hexz SNAP MNT -o OPTS`
// and /etc/fstab lines of type fuse.hexz make mount.fuse3 run
//   hexz SNAP MNT [-o OPTIONS]
// TranslateMountFuseArgs recognizes that form and rewrites it into the
// equivalent `hexz mount SNAP MNT --daemon ...` command line.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/base/status.h"

namespace hexz::cli {

// Returns nullopt when argv is not in the mount.fuse form (so normal parsing
// applies), the rewritten argv on success, or an error for an unknown option.
std::optional<base::Result<std::vector<std::string>>> TranslateMountFuseArgs(
    const std::vector<std::string>& args, const std::vector<std::string>& subcommands);

}  // namespace hexz::cli
