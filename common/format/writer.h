// SnapshotWriter: writes one hexz snapshot file, streaming and multi-threaded.
//
// Usage: Create(); optionally SetParent() (thin output); then for each stream
// (the disk, and optionally the memory, in either order): BeginStream(), one
// Add*() per block in block order, EndStream(); finally Finish(). A memory
// stream written first (hexz vm snapshot --continue migrates the memory while
// the guest is paused and writes the disk after it runs again) keeps its
// stored bytes in an unlinked temp file in the output's directory until
// Finish appends them after the disk's: the file is laid out as FORMAT.md
// says whatever the order, and dedup works across both streams. PackStream() and
// CopyStream() are helpers that drive the Add* calls from a file or from an
// existing snapshot.
//
// Pipeline: the caller's thread submits blocks into a bounded queue; N
// compressor threads detect zero blocks, compress and hash; one writer thread
// deduplicates and appends them in order. Memory stays bounded: about
// (2 * threads + 4) * 2 * block_size of buffers, the dedup table (bounded by
// WriterOptions::dedup_entries), 1 MiB of index entries (the rest waits
// in a temp file, see index_spill.h), and for stored extents (hexz commit)
// a 4 MiB copy buffer and 24 bytes per run of blocks copied back to back.
//
// The output appears atomically: everything goes to a temp file in the
// output's directory, which Finish() fsyncs and renames over the output (and
// fsyncs the directory). Any failure, Abort(), or destroying the writer before
// Finish() removes the temp file and leaves the output path untouched.
//
// Thread safety: one thread drives a writer; `progress` is called from that
// thread; `cancel` may be set from any thread or a signal handler.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/format/snapshot.h"

namespace hexz::format {

struct WriterOptions {
  Codec codec = Codec::kLz4;
  // 0 picks the codec's default (LZ4: 1 = fast; 2..12 = LZ4HC level; Zstd:
  // 1..19, default 3). Must be 0 for kRaw.
  int level = 0;
  uint32_t block_size = 64 * 1024;  // power of two, 4 KiB .. 1 MiB
  unsigned threads = 0;             // compressor threads; 0 = number of CPUs
  // Called after each block is submitted, with the logical bytes of all
  // streams submitted so far and the total announced by BeginStream calls.
  std::function<void(uint64_t done, uint64_t total)> progress;
  // When it becomes true, the next Add*/Finish returns kCancelled.
  const std::atomic<bool>* cancel = nullptr;
  // Dedup table capacity (distinct stored blocks remembered); 0 disables dedup.
  size_t dedup_entries = 1u << 18;
  // Copy stored extents (AddStoredExtent) with copy_file_range where the
  // file system offers it; false reads and writes them (tests use it to
  // cover that path).
  bool copy_file_range = true;
  // Fixed id (golden files, tests); by default a random one from getrandom.
  std::optional<SnapshotId> id;
};

// A run of consecutive blocks of one file of a snapshot chain, all stored
// (kStored entries of that file), whose stored bytes lie back to back in the
// file: entries[i + 1].offset == entries[i].offset + entries[i].stored_length.
// Or a single kDedup entry of that file: it becomes a dedup entry of the
// output when an earlier extent of the same `fd` copied its target, else its
// bytes are copied. `hexz commit` hands unchanged runs of its base over this
// way.
struct StoredExtent {
  std::shared_ptr<const base::UniqueFd> fd;  // the file; kept open by the writer as needed
  std::string name;                          // for messages
  std::vector<BlockEntry> entries;
};

// Checks options against the format's limits (kInvalidArgument with a message
// naming the bad option).
Status ValidateWriterOptions(const WriterOptions& options);

class SnapshotWriter {
 public:
  static Result<std::unique_ptr<SnapshotWriter>> Create(const std::string& output_path,
                                                        const WriterOptions& options);
  virtual ~SnapshotWriter() = default;

  virtual const SnapshotId& id() const = 0;
  virtual uint32_t block_size() const = 0;

  // Makes the output thin. Must come before the first BeginStream (after
  // it, only the same path and id again are accepted, and change nothing). The path
  // is stored as given and resolved by readers relative to the output's
  // directory; the parent's block size must equal this writer's.
  virtual Status SetParent(const std::string& relative_path, const SnapshotId& parent_id) = 0;

  // Starts a stream of `logical_size` bytes (ceil(size / block_size) blocks).
  // kUnknownSize starts a stream whose size is known only at its end (a
  // pipe): every block then is a whole block except the last, which may be
  // short (AddData with fewer bytes); AddZero and AddParent add whole blocks;
  // EndStream fixes the size at the bytes added.
  static constexpr uint64_t kUnknownSize = ~uint64_t{0};
  virtual Status BeginStream(StreamId stream, uint64_t logical_size) = 0;
  // Raw data of the next block: exactly BlockLength bytes (the last block of
  // a stream may be short). Compressed (or stored raw if that is not smaller),
  // zero-detected, deduplicated.
  virtual Status AddData(const void* data, size_t len) = 0;
  // The next block is all zeros.
  virtual Status AddZero() = 0;
  // The next block comes from the parent (thin output only).
  virtual Status AddParent() = 0;
  // The next block, already in stored form (from Snapshot::ReadStoredBlock):
  // copied verbatim, never recompressed. Its checksum is re-verified.
  // kZero / kParent blocks are accepted too.
  virtual Status AddStored(const StoredBlock& block) = 0;
  // `count` blocks in a row of one kind, kZero or kParent (thin output
  // only), in one step whatever the count. The stream's size must be known.
  virtual Status AddRun(BlockKind kind, uint64_t count) = 0;
  // The next extent.entries.size() blocks, copied from extent.fd in large
  // pieces (copy_file_range where the file system offers it, else read and
  // write), never recompressed nor deduplicated. Each block's checksum is
  // checked once, on the bytes as they lie in the output (read back after
  // the copy): damage in the source fails the write with kCorruption naming
  // the source and offset; it is never copied silently. The stream's size
  // must be known.
  virtual Status AddStoredExtent(const StoredExtent& extent) = 0;
  virtual Status EndStream() = 0;

  // Records the metadata section (FORMAT.md); any time before Finish, which
  // writes it. Empty: no section. kInvalidArgument for a key or size the
  // format does not allow.
  virtual Status SetMetadata(const Metadata& metadata) = 0;

  // Writes index and footer, syncs, renames into place. Returns the id.
  virtual Result<SnapshotId> Finish() = 0;
  // Gives up: removes the temp file. Safe to call more than once.
  virtual void Abort() = 0;
};

// Feeds a whole stream of `size` bytes from `fd` (regular file, block device,
// or anything pread works on) into `writer`: BeginStream, Add*, EndStream.
// Holes found with SEEK_DATA/SEEK_HOLE become zero blocks without reading.
Status PackStream(SnapshotWriter* writer, int fd, const std::string& name, StreamId stream,
                  uint64_t size);

// Adds block `b` of `stream` of `source` to `writer` (the current stream),
// in stored form when a file of the chain holds it with the same length,
// else (a parent whose stream is shorter) read through `source` and
// recompressed. `buf` is scratch space reused across calls.
Status CopyBlock(SnapshotWriter* writer, const Snapshot& source, StreamId stream, uint64_t b,
                 std::vector<uint8_t>* buf);

// Adds blocks [from, to) of `stream` of `source` to `writer` as CopyBlock
// would, batched: runs of zero blocks in one AddRun, runs of stored blocks
// that lie back to back in one file of the chain in AddStoredExtent pieces
// of up to 16 MiB, and duplicates (kDedup) as dedup entries into what was
// copied (when the chain's files are local), the rest block by block. The
// writer's output is standalone (parent blocks are resolved).
// Ownership: borrows the writer and the source, which must outlive it; keeps
// duplicates of the chain's descriptors, which the writer holds on to until
// it has copied from them. Thread safety: the writer's driving thread.
class BlockCopier {
 public:
  BlockCopier(SnapshotWriter* writer, const Snapshot& source);
  Status Copy(StreamId stream, uint64_t from, uint64_t to);

 private:
  Status Flush();

  SnapshotWriter* writer_;
  const Snapshot& source_;
  std::vector<std::shared_ptr<const base::UniqueFd>> fds_;  // per chain depth; empty if remote
  std::vector<std::string> names_;
  StoredExtent extent_;
  size_t extent_depth_ = 0;
  uint64_t extent_bytes_ = 0;
  uint64_t zeros_ = 0;
  std::vector<uint8_t> buf_;
};

// Copies a stream of `source` into `writer` block by block in stored form
// (no recompression): BeginStream, AddStored..., EndStream. Parent blocks of
// `source` are resolved from its chain (the output is standalone).
Status CopyStream(SnapshotWriter* writer, const Snapshot& source, StreamId stream);

// Allowed levels per codec, for option parsing and messages.
int DefaultLevel(Codec codec);
int MaxLevel(Codec codec);
Result<Codec> ParseCodec(std::string_view name);  // "lz4" | "zstd" | "none"

}  // namespace hexz::format
