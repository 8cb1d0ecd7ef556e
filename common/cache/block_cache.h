// BlockCache: where the snapshot reader looks for decompressed blocks before
// decompressing them, and where it puts them after.
//
// Implemented by the shared-memory cache (common/cache/shm_cache.h). A cache
// never owns the bytes it hands out: Lookup copies into the caller's buffer,
// and must re-validate what it copies (a torn or half-written entry is a miss,
// never data).
//
// Thread safety: both methods are safe from many threads and many processes.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace hexz::cache {

struct BlockKey {
  std::array<uint8_t, 16> snapshot_id{};  // id of the snapshot file the block is stored in
  uint32_t stream = 0;                    // 0 = disk, 1 = memory
  uint64_t block = 0;                     // block index within the stream
  bool operator==(const BlockKey&) const = default;
};

class BlockCache {
 public:
  virtual ~BlockCache() = default;
  // Copies the cached block into dst (len bytes exactly) and returns true on a
  // hit; returns false on a miss or when the entry failed validation.
  virtual bool Lookup(const BlockKey& key, void* dst, size_t len) = 0;
  // Offers a block; the cache may decline (too big, under pressure).
  virtual void Insert(const BlockKey& key, const void* src, size_t len) = 0;
};

}  // namespace hexz::cache
