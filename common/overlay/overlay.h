// Overlay: the copy-on-write store of a read-write mount, at 4 KiB granularity.
//
// An overlay is two files: the data file (PATH), which holds 4 KiB slots of
// block contents, and the meta file (PATH.meta), which holds a checksummed,
// append-only log that maps disk blocks to slots (or to "zero") and records
// the XXH3-64 checksum of every stored block. Both record the id of the base
// snapshot and the disk size; opening against another base is refused. The
// byte layout (format 2) and the rule that tells a crash from damage are
// specified in FORMAT.md (overlay part); the durability design is described
// at the top of overlay.cc.
//
// Damage is never served: opening a damaged overlay fails (kCorruption,
// naming the file, offset and record), and reading a block whose data fails
// its checksum fails (kCorruption, which becomes EIO at the FUSE and NBD
// edges). A read-write open that fails has written nothing. Salvage mode
// (OverlayOptions::salvage) is the explicit recovery path: it opens what can
// be proven intact and reports the rest.
//
// The overlay only stores blocks; merging them with the base snapshot (and the
// read-modify-write of partial blocks) is OverlayVolume's job.
//
// Ownership: an Overlay owns the two descriptors it was given. It never opens
// a path itself, so the sandboxed worker can use it; the front-end opens the
// files as the user with OpenOverlayFiles() (overlay_files.h).
//
// Thread safety: every method may be called from many threads. The caller
// serializes operations on the SAME block (ReadBlock vs WriteBlock/ZeroBlock
// of one block index must not overlap); OverlayVolume does this with striped
// per-block locks. Flush() may run concurrently with everything.
#pragma once

#include <pthread.h>
#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

#include <shared_mutex>
#include <string>
#include <utility>
#include <vector>

#include "common/base/fd.h"
#include "common/base/status.h"
#include "common/format/snapshot.h"

namespace hexz::overlay {

using base::Result;
using base::Status;
using base::UniqueFd;

inline constexpr uint32_t kBlockSize = 4096;
// Block indexes and slot numbers are 32-bit on disk: at most 2^32 - 2 blocks.
inline constexpr uint64_t kMaxBlocks = (uint64_t{1} << 32) - 2;

// Names used in messages only.
struct OverlayNames {
  std::string data;  // e.g. "disk.ovl"
  std::string meta;  // e.g. "disk.ovl.meta"
  std::string base;  // the base snapshot, e.g. "disk.st"
};

struct OverlayOptions {
  // Refuses every change (hexz commit, hexz overlay info). Nothing is written,
  // not even the recovery truncation of a torn log tail.
  bool read_only = false;
  // Flush() makes data durable with fdatasync. Ephemeral overlays turn this
  // off: nothing of them survives a crash anyway.
  bool durable = true;
  // Recovery (read-only): instead of refusing a damaged log, skip what is
  // damaged, keep every record that checks, and describe each problem in
  // Overlay::problems(). Use CheckBlocks(true) afterwards to drop blocks whose
  // data fails its checksum.
  bool salvage = false;
  // The log is rewritten as one checkpoint record when it grows beyond
  // max(compact_min_bytes, 4 x the size of a checkpoint).
  uint64_t compact_min_bytes = uint64_t{4} << 20;
};

enum class BlockState : uint8_t {
  kBase = 0,  // not in the overlay: read the base snapshot
  kZero = 1,  // reads as zeros (written zeroes or trimmed)
  kData = 2,  // stored in a slot of the data file
};

// A stored block whose data fails its checksum (see CheckBlocks).
struct DamagedBlock {
  uint64_t block = 0;
  std::string message;  // names both files, the offsets and the record
};

struct OverlayStats {
  uint64_t data_blocks = 0;    // blocks stored in slots
  uint64_t zero_blocks = 0;    // blocks that read as zeros
  uint64_t changed_bytes = 0;  // bytes of the disk the overlay replaces
  uint64_t slots = 0;          // slots in the data file (used + free)
  uint64_t data_file_bytes = 0;
  uint64_t meta_file_bytes = 0;
  uint64_t records = 0;     // records in the active log
  uint64_t generation = 0;  // of the active log
};

class Overlay {
 public:
  ~Overlay();
  Overlay(const Overlay&) = delete;
  Overlay& operator=(const Overlay&) = delete;

  // Initializes an empty overlay in two empty (or to-be-overwritten) files.
  static Result<std::unique_ptr<Overlay>> Create(UniqueFd data, UniqueFd meta, OverlayNames names,
                                                 const format::SnapshotId& base_id,
                                                 uint64_t disk_size,
                                                 const OverlayOptions& options = {});

  // Opens an existing overlay and replays its log. Refuses (kInvalidArgument)
  // an overlay made for another base id or disk size, naming both.
  static Result<std::unique_ptr<Overlay>> Open(UniqueFd data, UniqueFd meta, OverlayNames names,
                                               const format::SnapshotId& base_id,
                                               uint64_t disk_size,
                                               const OverlayOptions& options = {});

  // Create when the data file is empty (new, or a creation that was
  // interrupted before it completed), Open otherwise.
  static Result<std::unique_ptr<Overlay>> OpenOrCreate(UniqueFd data, UniqueFd meta,
                                                       OverlayNames names,
                                                       const format::SnapshotId& base_id,
                                                       uint64_t disk_size,
                                                       const OverlayOptions& options = {});

  // Opens whatever base the overlay records (for info and commit, which then
  // check base_id() themselves).
  static Result<std::unique_ptr<Overlay>> OpenAnyBase(UniqueFd data, UniqueFd meta,
                                                      OverlayNames names,
                                                      const OverlayOptions& options = {});

  const format::SnapshotId& base_id() const { return base_id_; }
  uint64_t disk_size() const { return disk_size_; }
  uint64_t block_count() const { return block_count_; }
  const OverlayNames& names() const { return names_; }
  bool read_only() const { return options_.read_only; }

  // The state of one block. For kData, copies its 4 KiB into buf (which may
  // be null to only ask) and checks them against the block's checksum: a
  // mismatch is kCorruption naming the data file, the slot's offset, the
  // block and the log record that stored it. block < block_count().
  Result<BlockState> ReadBlock(uint64_t block, void* buf) const;
  BlockState State(uint64_t block) const;
  // True when any block of [first, first + count) is kZero or kData.
  bool AnyChanged(uint64_t first, uint64_t count) const;

  // Stores a whole 4 KiB block (the caller pads the last block of a disk
  // whose size is not a multiple of 4 KiB with zeros).
  Status WriteBlock(uint64_t block, const void* data);
  // Makes a block read as zeros without storing data.
  Status ZeroBlock(uint64_t block);

  // Makes every WriteBlock/ZeroBlock that returned before this call durable
  // (data, then the log record, each fdatasync'ed). After an I/O error on
  // the data or meta file, every later write and flush fails with that
  // error (sticky) until the overlay is reopened: nothing is silently lost.
  Status Flush();

  OverlayStats Stats() const;

  // Reads every stored block and checks its checksum; returns the ones that
  // fail. With forget (salvage mode only), those blocks are then treated as
  // unchanged (they read from the base). Errors other than checksum
  // mismatches (an I/O error) are returned as such.
  Result<std::vector<DamagedBlock>> CheckBlocks(bool forget);

  // Problems that an open tolerated: in salvage mode, every piece of damage it
  // skipped; in any mode, an interrupted compaction it completed or would
  // complete (a note, not damage).
  const std::vector<std::string>& problems() const { return problems_; }

 private:
  struct Superblock;
  class BlockMap;

  Overlay(UniqueFd data, UniqueFd meta, OverlayNames names, const OverlayOptions& options);

  static Result<std::unique_ptr<Overlay>> OpenImpl(UniqueFd data, UniqueFd meta, OverlayNames names,
                                                   const format::SnapshotId* expect_base,
                                                   const uint64_t* expect_size,
                                                   OverlayOptions options);
  struct Entry;
  struct Record;
  Status LoadHeaders(const format::SnapshotId* expect_base, const uint64_t* expect_size);
  Status LoadSuperblocks();
  Status ReplayLog();
  Status ReplayFrom(uint64_t pos, uint64_t seq, uint64_t* end, uint64_t* next_seq, Record* stop);
  Status ApplyRecord(const Record& r, uint64_t pos, uint64_t full_slots);
  Status CheckTail(uint64_t pos, uint64_t expected_seq, const Record& first);
  Status CountSlots(uint64_t data_size);
  Status RecoverForWriting();
  Status ZeroMeta(uint64_t from, uint64_t to);
  Result<Record> ReadRecord(uint64_t pos, uint64_t meta_size, bool want_entries) const;
  // Salvage: the next record of this log after pos that checks, or meta_size.
  uint64_t NextValidRecord(uint64_t pos, uint64_t meta_size, uint64_t min_seq) const;
  Status Damage(const std::string& what);
  std::string BlockDamage(uint64_t block, const Entry& e, uint64_t got) const;
  Status WriteSuperblock(uint64_t generation, uint64_t log_start, uint64_t first_seq);
  Status AppendRecord(uint16_t type, const std::vector<std::pair<uint32_t, Entry>>& batch,
                      uint64_t* record_at);
  Status Sticky() const;
  // Whether `block` may be changed now: open read-write, within the disk, and
  // no earlier failure is pending (Sticky).
  Status CheckWritable(uint64_t block) const;
  void SetSticky(const Status& status);
  uint32_t AllocateSlotLocked();
  void ReleaseSlotLocked(uint32_t slot);

  const UniqueFd data_fd_;
  const UniqueFd meta_fd_;
  const OverlayNames names_;
  const OverlayOptions options_;

  // Set once while opening, then constant.
  format::SnapshotId base_id_;
  std::array<uint8_t, 16> overlay_uuid_{};
  uint64_t disk_size_ = 0;
  uint64_t block_count_ = 0;

  // A reader/writer lock that prefers the exclusive side, so that a steady
  // stream of writes cannot starve a flush (glibc's default prefers readers).
  class Gate {
   public:
    Gate();
    ~Gate();
    Gate(const Gate&) = delete;
    Gate& operator=(const Gate&) = delete;
    void lock_shared() { pthread_rwlock_rdlock(&lock_); }
    void unlock_shared() { pthread_rwlock_unlock(&lock_); }
    void lock() { pthread_rwlock_wrlock(&lock_); }
    void unlock() { pthread_rwlock_unlock(&lock_); }

   private:
    pthread_rwlock_t lock_;
  };

  // Writers hold gate_ shared while they touch the data file and the map;
  // Flush holds it exclusively only while it takes its batch, so a batch
  // never includes a half-done write.
  Gate gate_;

  // mu_ guards the map and the slot bookkeeping below.
  mutable std::mutex mu_;
  std::unique_ptr<BlockMap> map_;      // block -> entry (see overlay.cc)
  std::vector<uint8_t> slot_state_;    // per slot: free / pending / committed
  std::vector<std::string> problems_;  // set while opening, then constant
  // An interrupted compaction found while opening: a read-write open writes
  // the missing superblock (generation_) before anything else.
  bool finish_compaction_ = false;
  // The superblock copy that failed its checks while the other one is valid
  // (-1: none), and why; set while opening.
  int bad_copy_ = -1;
  std::string bad_copy_why_;
  std::vector<uint32_t> free_slots_;
  std::vector<uint32_t> release_after_commit_;  // committed slots superseded
  std::vector<uint32_t> dirty_blocks_;          // map changed since last batch
  uint64_t data_blocks_ = 0;
  uint64_t zero_blocks_ = 0;

  // flush_mu_ serializes Flush (and guards the log position below).
  mutable std::mutex flush_mu_;
  uint64_t generation_ = 0;  // of the active superblock
  uint64_t records_ = 0;     // in the active log
  uint64_t log_start_ = 0;
  uint64_t log_end_ = 0;
  uint64_t next_seq_ = 0;
  uint64_t first_seq_ = 0;

  mutable std::mutex sticky_mu_;
  Status sticky_;  // guarded by sticky_mu_
  std::atomic<bool> failed_{false};
};

}  // namespace hexz::overlay
