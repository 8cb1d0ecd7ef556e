#include "common/cache/shm_layout.h"

#include <cstring>
#include <string>

#include "common/base/size.h"

namespace hexz::cache::layout {

namespace {

constexpr uint64_t RoundUp(uint64_t v, uint64_t align) { return (v + align - 1) / align * align; }

// Bytes one chunk costs in a shard: its data, its entry (a shard holds at most
// one entry per chunk), two index slots (load factor <= 1/2) and its link.
constexpr uint64_t kPerChunkCost = kChunkSize + sizeof(Entry) + 2 * sizeof(uint64_t) + 4;

}  // namespace

uint64_t MagicValue() {
  uint64_t v;
  std::memcpy(&v, kMagic, sizeof v);
  return v;
}

base::Result<Geometry> ComputeGeometry(uint64_t size) {
  if (size < kMinSegmentSize) {
    return base::Status::InvalidArgument("cache size " + base::FormatSize(size) +
                                         " is too small: the minimum is " +
                                         base::FormatSize(kMinSegmentSize));
  }
  if (size > kMaxSegmentSize) {
    return base::Status::InvalidArgument("cache size " + base::FormatSize(size) +
                                         " is too large: the maximum is " +
                                         base::FormatSize(kMaxSegmentSize));
  }
  Geometry g;
  g.segment_size = size / kChunkSize * kChunkSize;
  uint32_t shards = 1;
  while (shards < kMaxShards && uint64_t{shards} * 2 * kBytesPerShard <= g.segment_size) {
    shards *= 2;
  }
  g.shard_count = shards;
  g.shard_offset = RoundUp(sizeof(SegmentHeader), kChunkSize);
  g.shard_stride = (g.segment_size - g.shard_offset) / shards / kChunkSize * kChunkSize;
  g.entries_offset = RoundUp(sizeof(ShardHeader), 64);
  // Leave one chunk of slack for aligning the data area to 4 KiB.
  uint64_t budget = g.shard_stride - g.entries_offset - kChunkSize;
  uint64_t chunks = budget / kPerChunkCost;
  for (;; --chunks) {
    if (chunks == 0) {
      return base::Status::InvalidArgument("cache size " + base::FormatSize(size) +
                                           " is too small to hold a single block");
    }
    g.chunks_per_shard = static_cast<uint32_t>(chunks);
    g.index_capacity = static_cast<uint32_t>(2 * chunks);
    g.index_offset = g.entries_offset + chunks * sizeof(Entry);
    g.next_offset = g.index_offset + uint64_t{g.index_capacity} * sizeof(uint64_t);
    g.data_offset = RoundUp(g.next_offset + chunks * sizeof(uint32_t), kChunkSize);
    if (g.data_offset + chunks * kChunkSize <= g.shard_stride) break;
  }
  return g;
}

}  // namespace hexz::cache::layout
