// The fixed layout of a hexz block-cache segment in POSIX shared memory.
//
// Internal to common/cache (shm_cache.cc and its tests). Every process of one
// user that serves snapshots maps the same segment; this header is the whole
// contract between them, so its version changes with any change here.
//
//   offset 0          SegmentHeader (magic, version, geometry, participants)
//   shard_offset      shard 0: ShardHeader | Entry[chunks] | index u64[index_capacity]
//                              | next u32[chunks] | chunk data (chunks x 4 KiB)
//   + shard_stride    shard 1 ...
//
// Why 4 KiB chunks: snapshot block sizes range from 4 KiB to 1 MiB and differ
// per snapshot, while one segment serves every snapshot of the user. A block
// is stored as a chain of 4 KiB chunks (next[] links them), so any size fits
// without per-size-class partitioning or fragmentation, and nothing is wasted
// for the usual power-of-two block sizes. A hit copies the chain out chunk by
// chunk (4 KiB memcpy is as fast as a large one).
//
// Locking: SegmentHeader::participants change only under flock(2) of the
// segment's descriptor (attach, detach, drop). Everything inside a shard is
// protected by that shard's lock word (shard_lock.h: the holder's thread id,
// never a pointer); a holder that dies leaves the word marked by the kernel
// and the next locker resets the whole shard (drops its entries). Counters are
// atomics, read without locks by `hexz cache stats`.
//
// Thread safety: this header only describes memory; see shm_cache.h.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "common/base/status.h"

namespace hexz::cache::layout {

inline constexpr char kMagic[8] = {'H', 'E', 'X', 'Z', 'C', 'S', 'H', 'M'};
inline constexpr uint32_t kVersion = 2;  // 2: lock word instead of a pthread mutex
inline constexpr uint32_t kChunkSize = 4096;
inline constexpr uint32_t kMaxParticipants = 64;
inline constexpr uint32_t kMaxShards = 64;
// One shard per this many bytes of cache (rounded down to a power of two).
inline constexpr uint64_t kBytesPerShard = 16ull << 20;
// Smallest segment accepted: room for a few chunks after the metadata.
inline constexpr uint64_t kMinSegmentSize = 1ull << 20;
// Largest segment accepted (keeps chunk indices in 32 bits per shard).
inline constexpr uint64_t kMaxSegmentSize = 1ull << 40;
inline constexpr uint32_t kNone = UINT32_MAX;

static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::atomic<uint32_t>::is_always_lock_free);
static_assert(std::atomic<int32_t>::is_always_lock_free);

// A process that uses the segment. Slot free when pid == 0.
struct Participant {
  std::atomic<int32_t> pid;
  uint32_t reserved;
  std::atomic<uint64_t> start_time;  // /proc/<pid>/stat field 22 (clock ticks since boot)
};
static_assert(sizeof(Participant) == 16);

struct SegmentHeader {
  std::atomic<uint64_t> magic;  // kMagic as little-endian u64; written last at creation
  uint32_t version;
  uint32_t header_size;  // sizeof(SegmentHeader)
  uint64_t segment_size;
  uint64_t requested_size;
  uint32_t shard_count;
  uint32_t chunk_size;
  uint32_t chunks_per_shard;
  uint32_t index_capacity;  // u64 slots per shard
  uint64_t shard_offset;    // of shard 0 from the segment start
  uint64_t shard_stride;
  uint64_t entries_offset;  // the following four are relative to a shard's start
  uint64_t index_offset;
  uint64_t next_offset;
  uint64_t data_offset;
  uint64_t created_unix;
  int32_t creator_pid;
  uint32_t creator_uid;
  std::atomic<uint64_t> attaches;  // successful attaches over the segment's life
  std::atomic<uint64_t> stale_reclaimed;
  uint8_t reserved[64];
  Participant participants[kMaxParticipants];
};

// One cached block. Free when state != kValid.
struct Entry {
  uint8_t snapshot_id[16];
  uint64_t block;
  uint32_t stream;
  uint32_t len;
  uint64_t checksum;     // XXH3-64 of the block bytes
  uint32_t first_chunk;  // when free: next free entry (free-entry stack)
  uint32_t nchunks;
  uint32_t state;
  uint32_t referenced;  // CLOCK bit, set on hit and insert
  uint64_t reserved;
};
static_assert(sizeof(Entry) == 64);
inline constexpr uint32_t kEntryFree = 0;
inline constexpr uint32_t kEntryWriting = 1;
inline constexpr uint32_t kEntryValid = 2;

struct alignas(64) ShardHeader {
  std::atomic<uint32_t> lock;  // ShardLock word (shard_lock.h)
  // Protected by lock.
  uint32_t fresh_chunks;     // chunks [0, fresh_chunks) have been handed out before
  uint32_t free_chunk_head;  // stack of recycled chunks linked through next[]
  uint32_t free_chunks;      // recycled + never used
  uint32_t fresh_entries;    // entries [0, fresh_entries) have been used before
  uint32_t free_entry_head;  // stack of recycled entries linked through first_chunk
  uint32_t clock_hand;
  // Written under lock, read anywhere.
  std::atomic<uint64_t> used_entries;
  std::atomic<uint64_t> used_bytes;
  // Counters (relaxed).
  std::atomic<uint64_t> hits;
  std::atomic<uint64_t> misses;
  std::atomic<uint64_t> insertions;
  std::atomic<uint64_t> evictions;
  std::atomic<uint64_t> invalid;          // entries that failed validation when read
  std::atomic<uint64_t> declined;         // inserts refused (too big, lock unavailable)
  std::atomic<uint64_t> recoveries;       // shard resets after a holder died
  std::atomic<uint64_t> lock_timeouts;    // gave up after lock_timeout_ms
  std::atomic<uint64_t> slow_lock_waits;  // waits longer than one 20 ms slice
};

// Sizes and offsets derived from a segment size. Pure; the same input gives
// the same geometry in every process, which is how a joiner validates a
// segment's header.
struct Geometry {
  uint64_t segment_size = 0;
  uint32_t shard_count = 0;
  uint32_t chunks_per_shard = 0;
  uint32_t index_capacity = 0;
  uint64_t shard_offset = 0;
  uint64_t shard_stride = 0;
  uint64_t entries_offset = 0;
  uint64_t index_offset = 0;
  uint64_t next_offset = 0;
  uint64_t data_offset = 0;
  // Bytes of block data one shard holds: also the largest cacheable block.
  uint64_t shard_capacity() const { return uint64_t{chunks_per_shard} * kChunkSize; }
  uint64_t capacity() const { return shard_capacity() * shard_count; }
};

// Fails (kInvalidArgument, naming the sizes) below kMinSegmentSize or above
// kMaxSegmentSize. The segment size is `size` rounded down to 4 KiB.
base::Result<Geometry> ComputeGeometry(uint64_t size);

uint64_t MagicValue();

}  // namespace hexz::cache::layout
