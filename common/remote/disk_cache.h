// The disk cache of a remote chain (`--disk-cache DIR[:SIZE]`): byte ranges
// of remote snapshot files kept in one local file, DIR/blocks.cache, across
// mounts and by every mount of the user that names the same DIR.
//
// Layout: the file is an array of sets of four slots (a slot: a 64-byte
// entry header and kChunkBytes of data; a set: its four headers, then their
// data); its size is the bound. Chunk c of an object (bytes
// [c * kChunkBytes, (c + 1) * kChunkBytes) of the file) may live only in set
// (hash(key) + c) % sets, so an object's chunks lie in consecutive sets and a
// sequential read reads the file sequentially (a 4-way set-associative
// cache): it goes into a free slot of its set, else evicts the set's slots
// in turn. Data is written before its header. The entry header holds the key,
// the chunk index, the data's length and an XXH3 checksum over header and
// data; a read that finds another key or chunk, or a checksum that does not
// match (a torn write by a concurrent mount, a damaged or truncated file), is
// a miss and the range is fetched again. No lock is needed: every entry is
// checked on every read.
//
// The key is the snapshot file's 128-bit id (random, made when it was
// packed or committed; FORMAT.md) and its size, so an object replaced by
// another snapshot never hits the old entries. The worker checks every
// block besides, as for a local file.
//
// Ownership: a DiskCache owns its descriptor; a CachedSource borrows its
// cache (which must outlive it) and owns the inner source. Thread safety:
// Get, Put and ReadAt may be called from many threads and processes at once.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/base/fd.h"
#include "common/base/status.h"
#include "common/io/source.h"

namespace hexz::remote {

using base::Result;
using base::Status;
using base::UniqueFd;

inline constexpr uint32_t kChunkBytes = 64 * 1024;
inline constexpr uint32_t kEntryHeaderBytes = 64;
inline constexpr uint64_t kDefaultDiskCacheBytes = uint64_t{1} << 30;

struct DiskCacheKey {
  std::array<uint8_t, 16> id{};
  uint64_t size = 0;
};

class DiskCache {
 public:
  static constexpr uint64_t SlotBytes() { return kEntryHeaderBytes + kChunkBytes; }
  // The number of slots of a cache bounded by `bytes` (at least one).
  static uint64_t SlotsFor(uint64_t bytes);

  // Parses "DIR[:SIZE]" (SIZE as base::ParseSize, at least one slot);
  // creates DIR (0700) if missing, refuses a DIR that is a symlink, not the
  // user's or writable by others; opens or creates DIR/blocks.cache (0600,
  // not a symlink, the user's regular file) and sets its size to the bound:
  // SIZE, else the existing file's size, else 1G. Another number of slots
  // maps chunks to other sets, so a new SIZE starts the cache afresh.
  // Messages name the directory or file.
  static Result<UniqueFd> OpenFile(const std::string& spec);

  // Over a file that OpenFile returned (in another process, perhaps).
  static Result<std::unique_ptr<DiskCache>> FromFd(UniqueFd fd);

  // Copies chunk `chunk` of `key` (`len` bytes, at most kChunkBytes) into
  // `buf` when the cache holds it intact; false otherwise.
  bool Get(const DiskCacheKey& key, uint64_t chunk, void* buf, uint32_t len) const;
  // Stores it (best effort: a failed write is a later miss).
  void Put(const DiskCacheKey& key, uint64_t chunk, const void* buf, uint32_t len) const;

  uint64_t slots() const { return slots_; }

 private:
  static constexpr uint64_t kWays = 4;
  // A set: `ways` entry headers at `base`, then their data.
  struct Set {
    uint64_t base = 0, ways = 0;
    uint64_t DataOffset(int way) const {
      return base + ways * kEntryHeaderBytes + static_cast<uint64_t>(way) * kChunkBytes;
    }
  };
  DiskCache(UniqueFd fd, uint64_t slots) : fd_(std::move(fd)), slots_(slots) {}
  Set SetOf(const DiskCacheKey& key, uint64_t chunk) const;
  int FindWay(const DiskCacheKey& key, uint64_t chunk, const Set& set, uint8_t* headers) const;

  UniqueFd fd_;
  uint64_t slots_;
  mutable std::atomic<uint64_t> next_way_{0};
};

// An io::Source that reads through `cache`: whole chunks found intact come
// from it, runs of missing chunks are read from `inner` in one ReadAt each
// and stored; ReadFreshAt replaces the cached chunks of a range.
class CachedSource final : public io::Source {
 public:
  CachedSource(std::unique_ptr<io::Source> inner, const DiskCache* cache,
               const std::array<uint8_t, 16>& id);
  Status ReadAt(void* buf, size_t len, uint64_t offset) const override;
  // Reads the chunks the range touches from `inner` whatever the cache
  // holds, and stores them over the cached copies.
  bool has_fresh_read() const override { return true; }
  Status ReadFreshAt(void* buf, size_t len, uint64_t offset) const override;
  uint64_t size() const override { return inner_->size(); }
  const std::string& name() const override { return inner_->name(); }
  std::string identity() const override { return inner_->identity(); }

 private:
  uint32_t ChunkLength(uint64_t chunk) const;
  Status FetchRun(uint64_t first, uint64_t end, std::vector<uint8_t>* data) const;

  std::unique_ptr<io::Source> inner_;
  const DiskCache* cache_;
  DiskCacheKey key_;
};

}  // namespace hexz::remote
