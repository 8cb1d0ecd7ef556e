// What a worker serves, opened from the descriptors the front-end sent: the
// shared block cache, the snapshot chain, its disk (read-only, or read-write
// over the overlay) and memory streams. Both modes (FUSE and NBD) open them
// here, so an overlay is named the same way in both: by the path the
// front-end opened it as (WorkerConfig::overlay_name), its meta file beside it
// (or "<name> meta" for an ephemeral overlay, whose files are unlinked).
//
// Ownership: WorkerVolumes owns everything; the cache must outlive the
// snapshot and the volumes, which is why it is declared first. Thread
// safety: opened on the main thread before the sandbox; the volumes are then
// as thread-safe as io::Volume says.
#pragma once

#include <sys/types.h>
#include <time.h>

#include <memory>
#include <string>

#include "common/base/status.h"
#include "common/cache/shm_cache.h"
#include "common/format/snapshot.h"
#include "common/io/volume.h"
#include "common/ipc/worker_protocol.h"

namespace hexz::fused {

struct WorkerVolumes {
  std::shared_ptr<cache::ShmCache> cache;  // null without --cache-size
  std::string cache_note;                  // for the user ("" when nothing to say)
  std::shared_ptr<format::Snapshot> snapshot;
  struct timespec mtime = {};  // of the top snapshot file, shown as the files' mtime
  // The disk: the overlay volume with read_write, else the snapshot's
  // stream. Null when the snapshot has none (only a FUSE mount allows that).
  std::unique_ptr<io::Volume> disk;
  io::Volume* writable = nullptr;      // the disk when read_write, else null
  std::unique_ptr<io::Volume> memory;  // null when the snapshot has no memory
  std::string disk_description;        // "disk of NAME" or "disk of NAME + OVERLAY"
};

// Opens the volumes from `config`, taking its chain and overlay descriptors.
base::Result<WorkerVolumes> OpenWorkerVolumes(ipc::WorkerConfig& config);

}  // namespace hexz::fused
