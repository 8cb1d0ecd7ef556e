// Front-end side of overlays: opening, creating and locking the two files of
// an overlay as the user, and the ephemeral overlay of `--rw` without
// `--overlay`.
//
// The front-end calls these (with the user's rights), then hands the two
// descriptors to the worker, which calls Overlay::OpenOrCreate on them. The
// lock is a flock() on the data file's open file description, so it follows
// the descriptor into the worker and is released when the last copy of it is
// closed (also when the worker is killed).
//
// Ephemeral overlays live in a private 0700 directory (under $XDG_RUNTIME_DIR,
// else $TMPDIR, else /tmp) named hexz-overlay.XXXXXX. Their files are locked
// and then unlinked, and the directory removed, right away: the worker keeps
// only descriptors, so nothing is left behind at unmount or after any crash
// (the kernel frees the space on the last close). ReclaimEphemeralDirs()
// removes what a crash inside the short creation window could leave.
//
// Thread safety: free functions with no shared state.
#pragma once

#include <string>

#include "common/base/fd.h"
#include "common/base/status.h"
#include "common/overlay/overlay.h"

namespace hexz::overlay {

enum class LockMode {
  kExclusive,  // read-write mounts
  kShared,     // hexz commit / hexz overlay info: refuse a mounted overlay
  // No lock: hexz vm snapshot reads the overlay of a paused guest's disk
  // server, which holds the exclusive lock; the caller makes sure nothing
  // writes meanwhile (the guest is paused and the server flushed).
  kNone,
};

struct OverlayFiles {
  UniqueFd data;
  UniqueFd meta;
  OverlayNames names;  // names.base is left for the caller to fill in
  bool ephemeral = false;
};

// Who holds a flock() on the file behind fd, from /proc/locks: "a reader
// (hexz commit, overlay info or overlay verify), pid 123 (hexz commit ...)"
// or "a read-write mount or serve, pid 456 (...)". Empty when unknown.
std::string DescribeLockHolders(int fd);

// "PATH.meta".
std::string MetaPathFor(const std::string& data_path);

// Opens PATH and PATH.meta (relative to the working directory, or absolute).
// With create, a missing PATH is created (0600) together with PATH.meta; an
// existing non-empty PATH whose meta is missing is refused, and so is a
// missing PATH whose meta holds a log (kCorruption; nothing is created). The
// data file is locked with flock(): a conflicting holder gets kBusy with
// "overlay PATH is in use by " + DescribeLockHolders().
Result<OverlayFiles> OpenOverlayFiles(const std::string& path, LockMode mode, bool create);

// The front-end's check before it hands the files to the worker: a new
// (empty) data file passes; an existing overlay must open read-only (headers
// and log) and belong to base_id and disk_size, else the error says why (for
// another base it names both ids and paths). Reads only; `files` stays usable.
Status ValidateOverlayFiles(const OverlayFiles& files, const format::SnapshotId& base_id,
                            uint64_t disk_size);

// Creates an ephemeral overlay (files already unlinked; see above). `dir`
// overrides the parent directory (tests); empty means the default.
Result<OverlayFiles> CreateEphemeralOverlayFiles(const std::string& dir = "");

// The directory ephemeral overlays are created in.
std::string EphemeralParentDir();

// Removes hexz-overlay.* directories of this user under `dir` (default:
// EphemeralParentDir()) whose data file is not locked by a live process.
// Returns how many were removed. Errors on single entries are logged and
// skipped.
Result<int> ReclaimEphemeralDirs(const std::string& dir = "");

}  // namespace hexz::overlay
