// ShmCache: the BlockCache shared by every hexz worker of one user, in a
// POSIX shared-memory segment (/dev/shm/hexz-cache-<uid>, mode 0600). Its
// memory is reserved when it is created (posix_fallocate), so a /dev/shm that
// fills up later gives an error at attach, never a SIGBUS while serving.
//
// What Boost.Interprocess does and what native calls do:
// - Create: boost::interprocess::shared_memory_object(create_only, 0600),
//   i.e. glibc shm_open with O_RDWR|O_CREAT|O_EXCL (glibc adds O_NOFOLLOW and
//   O_CLOEXEC) and fchmod 0600. O_EXCL never opens a file planted there.
// - Open an existing segment: open(2) of /dev/shm/<name> with
//   O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC, not Boost. shm_open (and so Boost) has
//   no way to pass O_NONBLOCK, and without it another user's file under the
//   name can hold the open before any check runs: a FIFO opened read-only
//   blocks until a writer comes, a file they hold a lease on (F_SETLEASE)
//   blocks for /proc/sys/fs/lease-break-time (45 s). With O_NONBLOCK both
//   fail at once.
// - Checks, on the native descriptor (the Boost object's
//   get_mapping_handle().handle, or the open(2) one), before any lock or
//   mapping: fstat for owner, type (regular) and mode 0600; then flock
//   (LOCK_NB, retried for at most 5 s); fstatvfs, ftruncate and
//   posix_fallocate size and reserve a new segment. Boost has no hook for any
//   of these.
// - Map: boost::interprocess::mapped_region (mmap MAP_SHARED of the whole
//   segment; munmap when the region is destroyed), over either descriptor.
// - Remove: boost::interprocess::shared_memory_object::remove, i.e. glibc
//   shm_unlink, which is unlink(2) of /dev/shm/<name>.
// Boost's interprocess mutexes are not used: the shard locks are ShardLock
// words (shard_lock.h), which hold no pointers.
//
// Worker usage (see also README.md, "Cache"):
//   cache::AttachInfo info;
//   HEXZ_ASSIGN_OR_RETURN(auto shm, cache::ShmCache::Attach(size, &info));  // before seccomp
//   HEXZ_RETURN_IF_ERROR(shm->CheckBlockSize(snapshot->block_size()));
//   HEXZ_LOG_INFO("%s", info.Describe().c_str());  // says when it joined a different size
//   options.cache = shm.get();  // format::OpenOptions
//   ... serve ...
//   shm.reset();  // detaches; the last participant removes the segment
//
// What it holds: decompressed blocks keyed by BlockKey, stored as chains of
// 4 KiB chunks in sharded CLOCK caches (layout in shm_layout.h). A hit is a
// copy out of shared memory under the shard's lock (shard_lock.h), checked against
// the entry's key, length and XXH3-64 checksum (hashed chunk by chunk as it is
// copied); a mismatch is a miss, never data.
//
// Life cycle: participants (pid + process start time) are listed in the
// segment header. Detach removes the caller and unlinks the segment when no
// other listed participant's pid still exists. Attach and `hexz cache drop` reclaim a segment
// whose participants are all dead (SIGKILLed workers). Attach, Detach and Drop
// check the file's owner, type and mode on the descriptor first (another
// user's planted file is refused at once), then serialise on flock(2) of the
// segment itself, taken without blocking and given up after 5 s, and re-check
// after locking that the name still refers to the object they opened, so a
// last detacher unlinking never races a new attacher into a removed segment.
//
// Crash safety: a participant killed at any instant cannot hang the others
// (the kernel frees a dead holder's shard lock; locking also gives up after a
// timeout and counts a miss)
// nor make them read a torn block (the shard it died in is reset; every read
// is re-validated).
//
// System calls used after attaching (for a seccomp allowlist): Lookup and
// Insert use only futex, gettid and clock_gettime, and set_robust_list once
// per thread (shard_lock.h): allow it, or a thread that dies holding a shard
// lock leaves that shard locked for good (every later lock waits out the
// timeout). Detach uses flock, fstat,
// kill with signal 0 (is a participant's pid still there? no file is opened), unlink of
// /dev/shm/<name> (the last participant, through shm_unlink), munmap and close. A worker whose
// sandbox forbids those may set reap_on_detach = false (no kill) or skip
// Detach; the next Attach or `hexz cache drop` reclaims the segment.
//
// Thread safety: Lookup, Insert, Stats and CheckBlockSize are safe from many
// threads and processes. Detach (and destruction) must not race other calls
// on the same object.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/base/status.h"
#include "common/cache/block_cache.h"

namespace hexz::cache {

using base::Result;
using base::Status;

inline constexpr char kDefaultNamePrefix[] = "hexz-cache";

struct AttachOptions {
  // The segment is "/<name_prefix>-<uid>". Tests use a unique prefix so they
  // never meet a real user's cache. The environment variable
  // HEXZ_CACHE_NAME_PREFIX overrides the default (integration tests).
  std::string name_prefix;
  // Detach also forgets participants whose pid no longer exists (kill(pid, 0)),
  // so the last live worker removes the segment even after others were
  // killed. Without it, Detach removes the segment only when nobody else is
  // listed.
  bool reap_on_detach = true;
  // Give up a shard lock after this long (the operation counts as a miss or a
  // declined insert).
  uint32_t lock_timeout_ms = 2000;
  // Lookup checks the copy against the entry's XXH3-64 checksum. This costs
  // about as much as the copy itself (see bench/cache_bench.md). Without it a
  // hit still checks key, length and chain bounds under the shard lock, and a
  // block half-written by a process that died is still never served (its
  // shard is emptied); what is lost is the detection of stray writes into the
  // segment. Insert always stores the checksum.
  bool verify_checksums = true;
  // Testing only: called inside Insert at "locked" (shard lock held) and
  // "mid-copy" (half the block copied) so a test can kill the process there.
  void (*test_hook)(const char* point) = nullptr;
};

struct AttachInfo {
  std::string name;              // "/hexz-cache-1000"
  bool created = false;          // this process initialised the segment
  bool reclaimed_stale = false;  // a segment left by dead workers was removed first
  uint64_t requested_size = 0;
  uint64_t actual_size = 0;   // size of the segment joined (may differ from requested)
  uint32_t participants = 0;  // live participants after attaching, this one included
  // One line for the worker's log or the user: "created the shared cache
  // /hexz-cache-1000 (1 GiB)" or "joined the shared cache /hexz-cache-1000
  // (256 MiB, not the 1 GiB asked for; 2 processes use it)".
  std::string Describe() const;
};

struct CacheStats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t insertions = 0;
  uint64_t evictions = 0;
  uint64_t invalid = 0;  // torn or mismatching entries detected on read
  uint64_t declined = 0;
  uint64_t recoveries = 0;  // shards reset after a participant died holding the lock
  uint64_t lock_timeouts = 0;
  uint64_t slow_lock_waits = 0;  // lock waits longer than 20 ms (retried)
  uint64_t entries = 0;
  uint64_t used_bytes = 0;
};

struct ParticipantInfo {
  pid_t pid = 0;
  uint64_t start_time = 0;
  bool alive = false;
};

// What `hexz cache list|stats` shows; read without joining the segment.
struct SegmentInfo {
  std::string name;  // "/hexz-cache-1000"
  uint64_t size = 0;
  uid_t uid = 0;
  mode_t mode = 0;
  bool valid = false;   // header recognised (the fields below are meaningful)
  std::string problem;  // why not, when !valid
  uint32_t version = 0;
  uint64_t requested_size = 0;
  uint32_t shard_count = 0;
  uint64_t capacity = 0;        // bytes of block data
  uint64_t max_block_size = 0;  // largest block it can hold
  uint64_t created_unix = 0;
  pid_t creator_pid = 0;
  uint64_t attaches = 0;
  std::vector<ParticipantInfo> participants;
  CacheStats stats;
  uint32_t live_participants() const;
};

struct DropInfo {
  bool removed = false;
  uint32_t live_participants = 0;  // at the time of the drop
};

class ShmCache final : public BlockCache {
 public:
  // Creates the user's segment with requested_size bytes, or joins the
  // existing one whatever its size (info->actual_size says which). Reclaims a
  // stale segment first. Fails with a message naming the segment for: a size
  // out of range, a segment owned by someone else or not mode 0600, a segment
  // of another layout version, no space in /dev/shm, 64 live participants.
  static Result<std::unique_ptr<ShmCache>> Attach(uint64_t requested_size, AttachInfo* info);
  static Result<std::unique_ptr<ShmCache>> Attach(uint64_t requested_size, AttachInfo* info,
                                                  const AttachOptions& options);
  ~ShmCache() override;

  ShmCache(const ShmCache&) = delete;
  ShmCache& operator=(const ShmCache&) = delete;

  // On a miss dst may have been partly written (an entry that failed
  // validation is detected after the copy).
  bool Lookup(const BlockKey& key, void* dst, size_t len) override;
  void Insert(const BlockKey& key, const void* src, size_t len) override;

  // kInvalidArgument when blocks of block_size bytes cannot be cached (the
  // message names the cache size, the block size and the size needed).
  Status CheckBlockSize(uint64_t block_size) const;
  uint64_t max_block_size() const;

  // Leaves the segment (see the header comment). Idempotent; the destructor
  // calls it. After Detach, Lookup misses and Insert declines.
  void Detach();

  CacheStats Stats() const;
  const std::string& name() const;
  uint64_t size() const;

  // "<prefix>-<uid>" for the calling user; prefix defaults to
  // $HEXZ_CACHE_NAME_PREFIX or "hexz-cache". No leading slash.
  static std::string SegmentName(const std::string& prefix = "");
  // prefix, or $HEXZ_CACHE_NAME_PREFIX, or "hexz-cache".
  static std::string NamePrefix(const std::string& prefix = "");
  // Before attaching: whether a cache of cache_size bytes could hold blocks
  // of block_size bytes (same message as CheckBlockSize).
  static Status CheckSizeForBlock(uint64_t cache_size, uint64_t block_size);

  // Admin (hexz cache): segment names of the calling user starting with
  // prefix (no leading slash), read-only inspection, and removal. Drop
  // refuses a segment with live participants unless force; live workers keep
  // their mapping until they exit.
  static Result<std::vector<std::string>> ListSegments(const std::string& prefix = "");
  static Result<SegmentInfo> Inspect(const std::string& name);
  static Status Drop(const std::string& name, bool force, DropInfo* info);

  struct Impl;

 private:
  explicit ShmCache(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace hexz::cache
