// Commit: turns a base snapshot plus an overlay into the streams of a new
// snapshot (the work behind `hexz commit`).
//
// The disk stream is walked in the base's blocks. A block none of whose
// 4 KiB parts the overlay changes is taken over without decompressing it:
// as a "from parent" reference in a thin output, or in its stored
// (compressed) form, found by walking the base's chain, in a standalone
// output. A block with changed parts is read through an OverlayVolume (base
// merged with overlay) and handed to the writer as raw data, which compresses
// it. The memory stream of the base is carried over the same way, unless
// the caller replaces it (then it writes the memory stream itself, after
// WriteCommit and before Finish). Without an overlay, the disk is the
// base's, copied (or referenced) block for block.
//
// Ownership: borrows everything; the caller creates the writer (with the
// base's block size), and calls Finish() or Abort() on it.
// Thread safety: one call at a time per writer.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/format/snapshot.h"
#include "common/format/writer.h"
#include "common/overlay/overlay.h"

namespace hexz::overlay {

struct CommitStats {
  uint64_t disk_blocks = 0;       // blocks of the output's disk stream
  uint64_t rewritten_blocks = 0;  // blocks with changed parts, compressed anew
  uint64_t copied_blocks = 0;     // unchanged blocks copied in stored form (or zero)
  uint64_t parent_blocks = 0;     // unchanged blocks referenced in the parent (thin)
  uint64_t memory_blocks = 0;     // blocks of the carried-over memory stream
};

// thin_parent_path empty: standalone output. Otherwise the output is thin and
// names the base by this path (relative to the output's directory) and by
// its id. overlay may be null (no changes); else overlay->base_id() must be
// base->id() (checked). carry_memory false leaves the memory stream out.
Result<CommitStats> WriteCommit(const std::shared_ptr<const format::Snapshot>& base,
                                const std::shared_ptr<Overlay>& overlay,
                                format::SnapshotWriter* writer, const std::string& thin_parent_path,
                                bool carry_memory = true);

// The path of `base` as seen from the directory of `output` (for --thin).
std::string RelativeParentPath(const std::string& base, const std::string& output);

}  // namespace hexz::overlay
