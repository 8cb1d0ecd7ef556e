// Snapshot: read access to a hexz snapshot file and its parent chain.
//
// A Snapshot is opened once (validating header, footer, index and the whole
// parent chain) and then serves reads of its streams ("disk", "memory") at any
// offset and length. Blocks are decompressed on demand and checked against
// their checksums; a mismatch is reported as kCorruption, never served.
// Decompressed blocks go through OpenOptions::cache when one is given, keyed
// by {id of the file that stores the block, stream, block index}.
//
// Block-level access (GetBlockEntry, ReadStoredBlock, ReadBlock) serves
// `hexz commit`, which copies stored blocks verbatim into a SnapshotWriter
// (common/format/writer.h) and reads the others whole. Every read goes down
// the chain only: a block of this file, or a part of the same block of the
// parent, never back up into the range API. Reads are serial; a caller that
// wants a large read decompressed in parallel splits it by blocks.
//
// Ownership: a Snapshot owns the sources (io::Source: a file descriptor or a
// remote object) of every file in its chain.
// Thread safety: after Open*, every const method is safe to call from many
// threads at once (positional reads; no shared cursor).
//
// The on-disk layout is specified in FORMAT.md; its constants, field offsets
// and per-structure decoders live in common/format/layout.h.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/base/fd.h"
#include "common/base/status.h"
#include "common/format/codec.h"
#include "common/format/layout.h"
#include "common/io/volume.h"

namespace hexz::cache {
class BlockCache;
}
namespace hexz::io {
class Source;
class SourceOpener;
}  // namespace hexz::io

namespace hexz::format {

using base::Result;
using base::Status;
using base::UniqueFd;

enum class StreamId : uint8_t { kDisk = 0, kMemory = 1 };
inline constexpr int kStreamCount = 2;
const char* StreamName(StreamId id);  // "disk" / "memory"

// 128-bit random identity of one snapshot file.
struct SnapshotId {
  std::array<uint8_t, 16> bytes{};
  std::string ToHex() const;
  static Result<SnapshotId> FromHex(std::string_view hex);
  bool operator==(const SnapshotId&) const = default;
};

// How one block of a stream is represented in the file that holds the index
// (zero, stored, dedup, parent): the format's own enum.
using BlockKind = layout::Kind;

// One index entry, decoded. offset/stored_length/checksum are zero unless
// kind is kStored or kDedup; codec is kRaw unless so.
using BlockEntry = layout::Entry;

// A block in its stored (possibly compressed) form, as `hexz commit` copies
// it verbatim. For kZero and kParent, bytes is empty.
struct StoredBlock {
  BlockKind kind = BlockKind::kZero;
  Codec codec = Codec::kRaw;
  uint32_t logical_length = 0;  // bytes once decompressed
  uint64_t checksum = 0;        // XXH3-64 of bytes
  std::vector<uint8_t> bytes;
};

// The metadata section (FORMAT.md): key -> value; empty when the file has
// none. Known keys are below.
using Metadata = layout::Metadata;
inline constexpr const char* kMetaMemoryKind = "memory.kind";  // "raw" | "qemu-migration"
inline constexpr const char* kMetaQemuVersion = "qemu.version";
inline constexpr const char* kMetaQemuMachine = "qemu.machine";
inline constexpr const char* kMetaQemuArgs = "qemu.args";  // each argument ends with a NUL byte
inline constexpr const char* kMetaQemuProgram = "qemu.program";  // e.g. qemu-system-x86_64
inline constexpr const char* kMetaQemuDisk = "qemu.disk";        // the id of the disk's -drive
inline constexpr const char* kMemoryKindRaw = "raw";
inline constexpr const char* kMemoryKindQemu = "qemu-migration";

struct OpenOptions {
  // Parents deeper than this are refused ("parent chain too deep").
  uint32_t max_chain_depth = 16;
  // Optional shared cache of decompressed blocks; not owned; may be null.
  cache::BlockCache* cache = nullptr;
  // Open only this file, not its parents (for `hexz info` on a thin snapshot
  // whose parent is missing). Reads of parent blocks then fail with
  // kUnavailable; Verify checks this file only.
  bool skip_parents = false;
  // Opens each file of the chain and resolves parent locations (Open only);
  // not owned; null means local files (io::LocalOpener). A remote opener
  // (common/remote) also takes URLs: a parent then resolves relative to its
  // child's URL.
  const io::SourceOpener* opener = nullptr;
};

// What `hexz info` prints, per stream.
struct StreamStats {
  bool present = false;
  uint64_t logical_size = 0;
  uint64_t block_count = 0;
  uint64_t stored_bytes = 0;   // compressed bytes of blocks stored in this file
  uint64_t zero_blocks = 0;    // all-zero blocks (no storage)
  uint64_t dedup_blocks = 0;   // blocks that point at another block's storage
  uint64_t parent_blocks = 0;  // blocks inherited from the parent (thin snapshots)
  uint32_t codecs_used = 0;    // bit (1 << Codec) for each codec of a stored block
};

class Snapshot {
 public:
  virtual ~Snapshot() = default;

  // Opens `path` and its parents (each resolved relative to its child's
  // directory, or URL) with the caller's rights through options.opener, and
  // validates all of them.
  static Result<std::shared_ptr<Snapshot>> Open(const std::string& path,
                                                const OpenOptions& options = {});

  // Opens from descriptors that were opened elsewhere (the sandboxed worker
  // cannot open files): chain[0] is the snapshot, chain[i+1] the parent of
  // chain[i]; names[i] is used in messages. Ids and parent links are
  // re-validated exactly as Open does.
  static Result<std::shared_ptr<Snapshot>> OpenFds(std::vector<UniqueFd> chain,
                                                   std::vector<std::string> names,
                                                   const OpenOptions& options = {});
  // The same from sources opened elsewhere (the worker's view of a remote
  // chain, read through the fetcher); each source's name() is its name.
  static Result<std::shared_ptr<Snapshot>> OpenSources(
      std::vector<std::unique_ptr<io::Source>> sources, const OpenOptions& options = {});

  virtual const SnapshotId& id() const = 0;
  virtual const std::string& path() const = 0;
  virtual uint32_t format_version() const = 0;
  virtual uint32_t block_size() const = 0;

  virtual bool HasStream(StreamId stream) const = 0;
  virtual uint64_t StreamSize(StreamId stream) const = 0;
  virtual StreamStats Stats(StreamId stream) const = 0;

  // The parent, or null for a standalone snapshot; parent_path() is as stored
  // in the file (relative to this snapshot's directory).
  virtual std::shared_ptr<const Snapshot> parent() const = 0;
  virtual const std::string& parent_path() const = 0;
  // The metadata section of this file (not inherited from parents).
  virtual const Metadata& metadata() const = 0;
  // The parent's id as recorded in this file (all zero when standalone).
  virtual const SnapshotId& parent_id() const = 0;

  // Duplicates of the descriptors of the whole chain, in OpenFds order, with
  // the names to pass along. Used to hand a validated chain to the worker.
  // A chain with a remote file has no descriptors to hand on (kUnsupported).
  virtual Result<std::vector<UniqueFd>> DupChainFds() const = 0;
  virtual std::vector<std::string> ChainNames() const = 0;

  // Reads exactly len bytes at offset; [offset, offset+len) must lie within
  // the stream (kOutOfRange otherwise).
  virtual Status Read(StreamId stream, uint64_t offset, void* buf, size_t len) const = 0;

  // ---- block-level access (hexz commit) ----
  virtual uint64_t BlockCount(StreamId stream) const = 0;
  // Logical length of block `block` (block_size, or less for the last one).
  virtual uint32_t BlockLength(StreamId stream, uint64_t block) const = 0;
  // The index entry of a block of THIS file (kParent is not resolved).
  virtual Result<BlockEntry> GetBlockEntry(StreamId stream, uint64_t block) const = 0;
  // Reads the stored form of a block of this file and checks its checksum.
  // kDedup is returned as kStored (the bytes are the same); kZero and kParent
  // come back without bytes (ask parent() for the latter).
  virtual Result<StoredBlock> ReadStoredBlock(StreamId stream, uint64_t block) const = 0;
  // Reads one whole decompressed block (BlockLength bytes) into dst,
  // resolving the parent chain and using the cache.
  virtual Status ReadBlock(StreamId stream, uint64_t block, void* dst) const = 0;

  // Zero/data extents of [offset, offset+len), for NBD block status.
  virtual Status Extents(StreamId stream, uint64_t offset, uint64_t len,
                         std::vector<io::Extent>* out) const = 0;

  // A read-only Volume over one stream (shares ownership of the snapshot).
  static std::unique_ptr<io::Volume> StreamVolume(std::shared_ptr<const Snapshot> snapshot,
                                                  StreamId stream);

  // Checks every checksum of every block and structure, following the parent
  // chain. Returns the first problem found, naming the structure or block and
  // its file offset.
  virtual Status Verify() const = 0;
};

}  // namespace hexz::format
