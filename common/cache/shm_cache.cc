#include "common/cache/shm_cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/permissions.hpp>
#include <boost/interprocess/shared_memory_object.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>
#include <optional>
#include <utility>

#include "common/base/copy_hash.h"
#include "common/base/fd.h"
#include "common/base/log.h"
#include "common/base/size.h"
#include "common/base/xxh3.h"
#include "common/cache/shard_lock.h"
#include "common/cache/shm_layout.h"
#include "common/io/file.h"

namespace hexz::cache {

using layout::Entry;
using layout::Geometry;
using layout::kChunkSize;
using layout::kNone;
using layout::Participant;
using layout::SegmentHeader;
using layout::ShardHeader;

namespace bip = boost::interprocess;

namespace {

constexpr char kShmDir[] = "/dev/shm";

std::string Slashed(const std::string& name) { return "/" + name; }

// How long Attach, Detach and Drop wait for another process of this user to
// release the segment's flock (held only for a few system calls).
constexpr int kFlockTimeoutMs = 5000;

std::string ShmPath(const std::string& name) { return std::string(kShmDir) + "/" + name; }

// The descriptor of a segment, and what boost::interprocess::mapped_region
// maps. Two origins (see the header comment for why):
// - Create: boost::interprocess::shared_memory_object(create_only), that is
//   glibc shm_open(O_RDWR|O_CREAT|O_EXCL, plus O_NOFOLLOW|O_CLOEXEC) and
//   fchmod(0600). O_EXCL never opens an existing (planted) file.
// - Open: an existing segment, with open(2) on /dev/shm/<name> with
//   O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC. shm_open cannot take O_NONBLOCK, without
//   which another user's FIFO or a file they hold a lease on (F_SETLEASE)
//   blocks the open (a lease for 45 s, /proc/sys/fs/lease-break-time) before
//   any check can run.
// Either way the caller checks the descriptor with fstat before using it.
class SegmentFile {
 public:
  SegmentFile() = default;
  SegmentFile(SegmentFile&&) noexcept = default;
  SegmentFile& operator=(SegmentFile&&) noexcept = default;

  // Fails with errno EEXIST when the name exists.
  static Result<SegmentFile> Create(const std::string& name, const std::string& what) {
    SegmentFile f;
    try {
      bip::shared_memory_object shm(bip::create_only, Slashed(name).c_str(), bip::read_write,
                                    bip::permissions(0600));
      f.shm_.swap(shm);
    } catch (const bip::interprocess_exception& e) {
      if (e.get_native_error() != 0) return Status::FromErrno(e.get_native_error(), what);
      return Status::Internal(what + ": creating it: " + e.what());
    }
    return f;
  }
  // Sets errno on failure (the descriptor is then invalid).
  static SegmentFile Open(const std::string& name, int flags) {
    SegmentFile f;
    f.fd_.reset(::open(ShmPath(name).c_str(), flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    return f;
  }

  int fd() const { return fd_ ? fd_.get() : shm_.get_mapping_handle().handle; }
  explicit operator bool() const { return fd() >= 0; }
  // For the constructor of boost::interprocess::mapped_region.
  bip::mapping_handle_t get_mapping_handle() const {
    bip::mapping_handle_t h;
    h.handle = fd();
    h.is_xsi = false;
    return h;
  }

 private:
  bip::shared_memory_object shm_;  // created by us; closes its descriptor
  base::UniqueFd fd_;              // opened by us
};

// A shared mapping of the whole segment (mmap through Boost; unmapped when
// the region is destroyed or reset).
Result<bip::mapped_region> MapSegment(const SegmentFile& file, uint64_t len, bool writable,
                                      const std::string& what) {
  try {
    return bip::mapped_region(file, writable ? bip::read_write : bip::read_only, 0,
                              static_cast<size_t>(len));
  } catch (const bip::interprocess_exception& e) {
    if (e.get_native_error() != 0) return Status::FromErrno(e.get_native_error(), what + ": mmap");
    return Status::Internal(what + ": mapping it: " + e.what());
  }
}

// Removes the name (shm_unlink through Boost); errno says why on failure.
bool RemoveSegment(const std::string& name) {
  return bip::shared_memory_object::remove(Slashed(name).c_str());
}

// The segment must be a regular file of ours with mode 0600. Checked on the
// descriptor before it is locked or mapped, so another user's planted file is
// refused at once.
Status CheckOwnSegment(const struct stat& st, const std::string& what) {
  if (!S_ISREG(st.st_mode)) {
    return Status(base::Code::kPermissionDenied,
                  what + " is not a regular file; refusing to use it", EPERM);
  }
  if (st.st_uid != ::getuid()) {
    return Status(
        base::Code::kPermissionDenied,
        what + " is owned by uid " + std::to_string(st.st_uid) + ", not by you; refusing to use it",
        EPERM);
  }
  if ((st.st_mode & 07777) != 0600) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status(base::Code::kPermissionDenied,
                  what + " has mode " + mode + ", expected 0600; refusing to use it", EPERM);
  }
  return Status::Ok();
}

// Why SegmentFile::Open failed with err: names the owner of a file planted
// under the name whose owner holds a lease on it (EWOULDBLOCK; with
// check_owner also EACCES, not ours to open), or a symbolic link.
Status OpenError(const std::string& name, int err, const std::string& what,
                 bool check_owner = false) {
  struct stat st;
  if ((err == EWOULDBLOCK || (check_owner && err == EACCES)) &&
      ::lstat(ShmPath(name).c_str(), &st) == 0) {
    HEXZ_RETURN_IF_ERROR(CheckOwnSegment(st, what));
  }
  if (err == ELOOP) {
    return Status(base::Code::kPermissionDenied, what + " is a symbolic link; refusing to use it",
                  EPERM);
  }
  if (err == EWOULDBLOCK) {
    return Status::Busy(what + " is leased by another process of yours (F_SETLEASE); try again");
  }
  return Status::FromErrno(err, what);
}

// ---- processes -------------------------------------------------------------

struct ProcState {
  char state = '?';
  uint64_t start_time = 0;
};

// Reads /proc/<pid>/stat. nullopt with *gone = true when the process does not
// exist; nullopt with *gone = false when it could not be read (unknown).
std::optional<ProcState> ReadProcStat(pid_t pid, bool* gone) {
  *gone = false;
  std::string path = "/proc/" + std::to_string(pid) + "/stat";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *gone = (errno == ENOENT || errno == ESRCH);
    return std::nullopt;
  }
  base::UniqueFd owned(fd);
  char buf[1024];
  Result<size_t> n = io::ReadUpTo(fd, buf, sizeof buf - 1, path);
  if (!n.ok()) {
    *gone = (n.status().sys_errno() == ESRCH);
    return std::nullopt;
  }
  buf[*n] = '\0';
  // "pid (comm) S ppid ..." where comm may hold spaces and parentheses.
  const char* close = std::strrchr(buf, ')');
  if (close == nullptr || close[1] != ' ') return std::nullopt;
  const char* p = close + 2;
  ProcState st;
  st.state = *p;
  // Field 3 is the state; field 22 the start time: 19 spaces further.
  for (int field = 3; field < 22; ++field) {
    p = std::strchr(p, ' ');
    if (p == nullptr) return std::nullopt;
    ++p;
  }
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(p, &end, 10);
  if (end == p || errno != 0) return std::nullopt;
  st.start_time = v;
  return st;
}

// True unless the process is known to be gone: no such pid, a zombie, or a
// different process that reused the pid.
bool ProcessAlive(pid_t pid, uint64_t start_time) {
  if (pid <= 0) return false;
  bool gone = false;
  std::optional<ProcState> st = ReadProcStat(pid, &gone);
  if (!st) return !gone;
  if (st->state == 'Z' || st->state == 'X') return false;
  return st->start_time == start_time;
}

// ---- flock on the segment --------------------------------------------------

// Takes flock(LOCK_EX) without ever blocking for longer than timeout_ms: the
// lock is only held for a few system calls by hexz processes of this user.
class FlockGuard {
 public:
  explicit FlockGuard(int fd, int timeout_ms = kFlockTimeoutMs) : fd_(fd) {
    for (int waited_ms = 0;; waited_ms += 10) {
      if (::flock(fd_, LOCK_EX | LOCK_NB) == 0) {
        locked_ = true;
        return;
      }
      if (errno == EINTR) continue;
      if (errno != EWOULDBLOCK || waited_ms >= timeout_ms) {
        err_ = errno;
        return;
      }
      struct timespec ts = {0, 10'000'000};
      ::nanosleep(&ts, nullptr);
    }
  }
  ~FlockGuard() {
    if (locked_) ::flock(fd_, LOCK_UN);
  }
  FlockGuard(const FlockGuard&) = delete;
  FlockGuard& operator=(const FlockGuard&) = delete;
  bool locked() const { return locked_; }
  int error() const { return err_; }
  Status Why(const std::string& what) const {
    if (err_ == EWOULDBLOCK) {
      return Status::Busy(what + " stayed locked by another process for " +
                          std::to_string(kFlockTimeoutMs / 1000) + " s; try again");
    }
    return Status::FromErrno(err_, what + ": flock");
  }

 private:
  int fd_;
  bool locked_ = false;
  int err_ = 0;
};

// ---- header helpers --------------------------------------------------------

// Checks that the header describes exactly the geometry of a segment of
// `file_size` bytes. Returns an explanation when it does not.
std::optional<std::string> HeaderProblem(const SegmentHeader* h, uint64_t file_size,
                                         Geometry* geo_out) {
  if (h->magic.load(std::memory_order_acquire) != layout::MagicValue()) {
    return std::string("not initialised or not a hexz cache (bad magic)");
  }
  if (h->version != layout::kVersion) {
    return "layout version " + std::to_string(h->version) + ", this hexz uses " +
           std::to_string(layout::kVersion);
  }
  if (h->header_size != sizeof(SegmentHeader) || h->segment_size != file_size ||
      h->chunk_size != kChunkSize) {
    return std::string("header does not match the segment size");
  }
  Result<Geometry> g = layout::ComputeGeometry(file_size);
  if (!g.ok() || g->segment_size != h->segment_size || g->shard_count != h->shard_count ||
      g->chunks_per_shard != h->chunks_per_shard || g->index_capacity != h->index_capacity ||
      g->shard_offset != h->shard_offset || g->shard_stride != h->shard_stride ||
      g->entries_offset != h->entries_offset || g->index_offset != h->index_offset ||
      g->next_offset != h->next_offset || g->data_offset != h->data_offset) {
    return std::string("geometry in the header is inconsistent");
  }
  if (geo_out != nullptr) *geo_out = *g;
  return std::nullopt;
}

// Without opening anything (for Detach inside a seccomp sandbox): false only
// when no process has this pid. Zombies and reused pids count as alive, which
// only keeps a segment until the next Attach reclaims it.
bool PidExists(pid_t pid) { return pid > 0 && (::kill(pid, 0) == 0 || errno != ESRCH); }

// Clears the slots of dead participants; returns how many live ones remain.
// With /proc (Attach, Drop) a zombie or a reused pid is recognised as dead.
uint32_t ReapDead(SegmentHeader* h, bool use_proc = true) {
  uint32_t live = 0;
  for (Participant& p : h->participants) {
    pid_t pid = p.pid.load(std::memory_order_relaxed);
    if (pid == 0) continue;
    uint64_t start = p.start_time.load(std::memory_order_relaxed);
    if (use_proc ? ProcessAlive(pid, start) : PidExists(pid)) {
      ++live;
    } else {
      p.pid.store(0, std::memory_order_relaxed);
      p.start_time.store(0, std::memory_order_relaxed);
    }
  }
  return live;
}

// The first unused participant slot, or kNone.
uint32_t FreeSlot(const SegmentHeader* h) {
  for (uint32_t i = 0; i < layout::kMaxParticipants; ++i) {
    if (h->participants[i].pid.load(std::memory_order_relaxed) == 0) return i;
  }
  return kNone;
}

uint32_t CountListed(const SegmentHeader* h) {
  uint32_t n = 0;
  for (const Participant& p : h->participants) n += p.pid.load(std::memory_order_relaxed) != 0;
  return n;
}

const ShardHeader* ShardAt(const uint8_t* base, const Geometry& g, uint32_t i) {
  return reinterpret_cast<const ShardHeader*>(base + g.shard_offset + i * g.shard_stride);
}

CacheStats SumStats(const uint8_t* base, const Geometry& g) {
  CacheStats s;
  for (uint32_t i = 0; i < g.shard_count; ++i) {
    const ShardHeader* sh = ShardAt(base, g, i);
    auto rd = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
    s.hits += rd(sh->hits);
    s.misses += rd(sh->misses);
    s.insertions += rd(sh->insertions);
    s.evictions += rd(sh->evictions);
    s.invalid += rd(sh->invalid);
    s.declined += rd(sh->declined);
    s.recoveries += rd(sh->recoveries);
    s.lock_timeouts += rd(sh->lock_timeouts);
    s.slow_lock_waits += rd(sh->slow_lock_waits);
    s.entries += rd(sh->used_entries);
    s.used_bytes += rd(sh->used_bytes);
  }
  return s;
}

std::string SizeAdvice(uint64_t block_size) {
  // The smallest whole number of MiB whose geometry holds the block.
  for (uint64_t mib = 1; mib <= 4096; ++mib) {
    Result<Geometry> g = layout::ComputeGeometry(mib << 20);
    if (g.ok() && g->shard_capacity() >= block_size) return std::to_string(mib) + "M";
  }
  return "a larger size";
}

Status BlockTooBig(const std::string& what, uint64_t max_block, uint64_t block_size) {
  return Status::InvalidArgument(what + " holds blocks of at most " + base::FormatSize(max_block) +
                                 ", too small for blocks of " + base::FormatSize(block_size) +
                                 "; use --cache-size " + SizeAdvice(block_size) + " or more");
}

uint64_t HashKey(const BlockKey& key) {
  uint8_t buf[28];
  std::memcpy(buf, key.snapshot_id.data(), 16);
  std::memcpy(buf + 16, &key.stream, 4);
  std::memcpy(buf + 20, &key.block, 8);
  return XXH3_64bits(buf, sizeof buf);
}

bool KeyEquals(const Entry& e, const BlockKey& key) {
  return e.block == key.block && e.stream == key.stream &&
         std::memcmp(e.snapshot_id, key.snapshot_id.data(), 16) == 0;
}

uint32_t ChunksFor(uint64_t len) {
  return static_cast<uint32_t>((len + kChunkSize - 1) / kChunkSize);
}

// Sizes a new, empty segment and reserves its memory: tmpfs pages are
// otherwise allocated on first touch, and a /dev/shm that fills up later
// would kill every worker with SIGBUS. Any failure removes the segment again.
Result<bip::mapped_region> CreateSegment(const SegmentFile& file, const std::string& name,
                                         uint64_t size, const std::string& what) {
  const int fd = file.fd();
  auto fail = [&](Status s) {
    RemoveSegment(name);
    return s;
  };
  struct statvfs vfs;
  if (::fstatvfs(fd, &vfs) == 0) {
    uint64_t avail = uint64_t{vfs.f_bavail} * vfs.f_frsize;
    if (avail < size) {
      return fail(Status::NoSpace(what + ": cache size " + base::FormatSize(size) +
                                  " does not fit in " + kShmDir + " (" + base::FormatSize(avail) +
                                  " free)"));
    }
  }
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    return fail(Status::FromErrno(errno, what + ": setting its size"));
  }
  int err = ::posix_fallocate(fd, 0, static_cast<off_t>(size));
  if (err == ENOSPC || err == ENOMEM) {
    return fail(Status(base::Code::kNoSpace,
                       what + ": cannot reserve " + base::FormatSize(size) + " in " + kShmDir +
                           " (it is full); use a smaller --cache-size or free space there",
                       err));
  }
  if (err != 0) return fail(Status::FromErrno(err, what + ": reserving its memory"));
  Result<bip::mapped_region> m = MapSegment(file, size, true, what);
  if (!m.ok()) return fail(m.status());
  return m;
}

}  // namespace

std::string AttachInfo::Describe() const {
  std::string out = created ? "created the shared cache " : "joined the shared cache ";
  out += name + " (" + base::FormatSize(actual_size);
  if (actual_size != requested_size) {
    out += ", not the " + base::FormatSize(requested_size) + " asked for";
  }
  if (!created) out += "; " + std::to_string(participants) + " processes use it";
  out += ")";
  if (reclaimed_stale) out += " after removing a stale one";
  return out;
}

uint32_t SegmentInfo::live_participants() const {
  uint32_t n = 0;
  for (const ParticipantInfo& p : participants) n += p.alive;
  return n;
}

// ---- the attached cache ----------------------------------------------------

struct ShmCache::Impl {
  std::string name;  // without the leading slash
  AttachOptions options;
  SegmentFile file;
  bip::mapped_region region;  // destroyed (unmapped) before file is closed
  uint8_t* base = nullptr;
  SegmentHeader* header = nullptr;
  Geometry geo;
  pid_t owner_pid = 0;
  uint64_t owner_start = 0;
  uint32_t slot = 0;
  uint64_t requested_size = 0;
  bool attached = false;

  int fd() const { return file.fd(); }

  uint8_t* ShardBase(uint32_t i) const { return base + geo.shard_offset + i * geo.shard_stride; }
  ShardHeader* Shard(uint32_t i) const { return reinterpret_cast<ShardHeader*>(ShardBase(i)); }
  Entry* Entries(ShardHeader* s) const {
    return reinterpret_cast<Entry*>(reinterpret_cast<uint8_t*>(s) + geo.entries_offset);
  }
  uint64_t* Index(ShardHeader* s) const {
    return reinterpret_cast<uint64_t*>(reinterpret_cast<uint8_t*>(s) + geo.index_offset);
  }
  uint32_t* Next(ShardHeader* s) const {
    return reinterpret_cast<uint32_t*>(reinterpret_cast<uint8_t*>(s) + geo.next_offset);
  }
  uint8_t* Chunk(ShardHeader* s, uint32_t c) const {
    return reinterpret_cast<uint8_t*>(s) + geo.data_offset + uint64_t{c} * kChunkSize;
  }
  ShardHeader* ShardFor(uint64_t hash) const { return Shard(hash & (geo.shard_count - 1)); }

  void Hook(const char* point) const {
    if (options.test_hook != nullptr) options.test_hook(point);
  }

  // Puts every chunk and entry of a shard back to fresh (none in use).
  void EmptyLists(ShardHeader* s) const {
    s->fresh_chunks = 0;
    s->free_chunk_head = kNone;
    s->free_chunks = geo.chunks_per_shard;
    s->fresh_entries = 0;
    s->free_entry_head = kNone;
    s->clock_hand = 0;
  }

  // Empties a shard: after a holder died mid-operation, or when its
  // bookkeeping is out of bounds.
  void ResetShard(ShardHeader* s) const {
    EmptyLists(s);
    s->used_entries.store(0, std::memory_order_relaxed);
    s->used_bytes.store(0, std::memory_order_relaxed);
    std::memset(Index(s), 0, uint64_t{geo.index_capacity} * sizeof(uint64_t));
  }

  // Takes the shard lock, waiting up to lock_timeout_ms (shard_lock.h).
  bool Lock(ShardHeader* s) const {
    bool slow = false;
    LockResult r = LockShard(&s->lock, options.lock_timeout_ms, &slow);
    if (slow) s->slow_lock_waits.fetch_add(1, std::memory_order_relaxed);
    switch (r) {
      case LockResult::kLocked:
        if (!ShardSane(s)) {
          ResetShard(s);
          s->invalid.fetch_add(1, std::memory_order_relaxed);
        }
        return true;
      case LockResult::kRecovered:
        // The previous holder died inside an operation: nothing in this
        // shard can be trusted any more, so drop it all.
        ResetShard(s);
        s->recoveries.fetch_add(1, std::memory_order_relaxed);
        return true;
      case LockResult::kTimedOut:
        break;
    }
    s->lock_timeouts.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  static void Unlock(ShardHeader* s) { UnlockShard(&s->lock); }

  // Index slot holding `key`, or nullptr. Index values are
  // (entry + 1) << 32 | hash32, with the home slot hash32 % capacity.
  uint64_t* Find(ShardHeader* s, uint64_t hash, const BlockKey& key, uint32_t* entry) const {
    uint64_t* index = Index(s);
    uint32_t cap = geo.index_capacity;
    uint32_t h32 = static_cast<uint32_t>(hash >> 32);
    uint32_t i = h32 % cap;
    for (uint32_t probes = 0; probes < cap; ++probes, i = (i + 1 == cap ? 0 : i + 1)) {
      uint64_t v = index[i];
      if (v == 0) return nullptr;
      if (static_cast<uint32_t>(v) != h32) continue;
      uint32_t e = static_cast<uint32_t>(v >> 32) - 1;
      if (e >= s->fresh_entries) continue;
      if (Entries(s)[e].state != layout::kEntryFree && KeyEquals(Entries(s)[e], key)) {
        *entry = e;
        return &index[i];
      }
    }
    return nullptr;
  }

  // Index slot pointing at entry e, or nullptr.
  uint64_t* FindEntrySlot(ShardHeader* s, uint32_t e) const {
    const Entry& en = Entries(s)[e];
    BlockKey key;
    std::memcpy(key.snapshot_id.data(), en.snapshot_id, 16);
    key.stream = en.stream;
    key.block = en.block;
    uint32_t found = kNone;
    uint64_t* slot = Find(s, HashKey(key), key, &found);
    return found == e ? slot : nullptr;
  }

  // Linear-probing delete with backward shift (no tombstones).
  void IndexErase(ShardHeader* s, uint64_t* slot) const {
    uint64_t* index = Index(s);
    uint32_t cap = geo.index_capacity;
    uint32_t i = static_cast<uint32_t>(slot - index);
    uint32_t j = i;
    for (uint32_t n = 0; n < cap; ++n) {
      j = (j + 1 == cap) ? 0 : j + 1;
      if (index[j] == 0) break;
      uint32_t home = static_cast<uint32_t>(index[j]) % cap;
      bool stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
      if (!stays) {
        index[i] = index[j];
        i = j;
      }
    }
    index[i] = 0;
  }

  bool IndexInsert(ShardHeader* s, uint64_t hash, uint32_t entry) const {
    uint64_t* index = Index(s);
    uint32_t cap = geo.index_capacity;
    uint32_t h32 = static_cast<uint32_t>(hash >> 32);
    uint32_t i = h32 % cap;
    for (uint32_t probes = 0; probes < cap; ++probes, i = (i + 1 == cap ? 0 : i + 1)) {
      if (index[i] == 0) {
        index[i] = (uint64_t{entry} + 1) << 32 | h32;
        return true;
      }
    }
    return false;
  }

  // Removes entry e (whose index slot is `slot`, or nullptr if unindexed) and
  // frees its chunks. Returns false if the shard's links are damaged (the
  // caller then resets the shard).
  bool Erase(ShardHeader* s, uint64_t* slot, uint32_t e) const {
    if (slot != nullptr) IndexErase(s, slot);
    Entry& en = Entries(s)[e];
    uint32_t* next = Next(s);
    uint32_t c = en.first_chunk;
    if (en.nchunks > s->fresh_chunks) return false;
    for (uint32_t i = 0; i < en.nchunks; ++i) {
      if (c >= s->fresh_chunks) return false;
      uint32_t following = next[c];
      next[c] = s->free_chunk_head;
      s->free_chunk_head = c;
      ++s->free_chunks;
      c = following;
    }
    s->used_entries.fetch_sub(1, std::memory_order_relaxed);
    s->used_bytes.fetch_sub(en.len, std::memory_order_relaxed);
    en.state = layout::kEntryFree;
    en.first_chunk = s->free_entry_head;
    s->free_entry_head = e;
    return true;
  }

  // CLOCK: clears reference bits until it finds an unreferenced entry and
  // evicts it. False when nothing can be evicted.
  bool EvictOne(ShardHeader* s) const {
    if (s->used_entries.load(std::memory_order_relaxed) == 0 || s->fresh_entries == 0) {
      return false;
    }
    Entry* entries = Entries(s);
    uint64_t limit = 2ull * s->fresh_entries + 1;
    for (uint64_t step = 0; step < limit; ++step) {
      uint32_t i = s->clock_hand;
      if (i >= s->fresh_entries) i = 0;
      s->clock_hand = (i + 1 >= s->fresh_entries) ? 0 : i + 1;
      Entry& en = entries[i];
      if (en.state != layout::kEntryValid) continue;
      if (en.referenced != 0) {
        en.referenced = 0;
        continue;
      }
      if (!Erase(s, FindEntrySlot(s, i), i)) {  // damaged links: start afresh
        ResetShard(s);
        s->invalid.fetch_add(1, std::memory_order_relaxed);
        return true;
      }
      s->evictions.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
    return false;
  }

  // Both allocators return kNone when the shard's free lists are damaged
  // (the caller resets the shard).
  uint32_t AllocEntry(ShardHeader* s) const {
    if (s->free_entry_head != kNone) {
      uint32_t e = s->free_entry_head;
      if (e >= s->fresh_entries) return kNone;
      s->free_entry_head = Entries(s)[e].first_chunk;
      return e;
    }
    if (s->fresh_entries < geo.chunks_per_shard) return s->fresh_entries++;
    return kNone;
  }

  uint32_t AllocChunk(ShardHeader* s) const {
    uint32_t c;
    if (s->free_chunk_head != kNone) {
      c = s->free_chunk_head;
      if (c >= s->fresh_chunks) return kNone;
      s->free_chunk_head = Next(s)[c];
    } else if (s->fresh_chunks < geo.chunks_per_shard) {
      c = s->fresh_chunks++;
    } else {
      return kNone;
    }
    --s->free_chunks;
    return c;
  }

  // Whether a shard's bookkeeping is within bounds. Everything in the segment
  // is written only by hexz processes of this user, but a bug there must not
  // make another process read or write outside its mapping.
  bool ShardSane(const ShardHeader* s) const {
    const uint32_t n = geo.chunks_per_shard;
    return s->fresh_chunks <= n && s->fresh_entries <= n && s->free_chunks <= n &&
           (s->free_chunk_head == kNone || s->free_chunk_head < s->fresh_chunks) &&
           (s->free_entry_head == kNone || s->free_entry_head < s->fresh_entries) &&
           s->clock_hand <= n;
  }

  void InitSegment(uint64_t requested) {
    header = new (base) SegmentHeader;
    header->version = layout::kVersion;
    header->header_size = sizeof(SegmentHeader);
    header->segment_size = geo.segment_size;
    header->requested_size = requested;
    header->shard_count = geo.shard_count;
    header->chunk_size = kChunkSize;
    header->chunks_per_shard = geo.chunks_per_shard;
    header->index_capacity = geo.index_capacity;
    header->shard_offset = geo.shard_offset;
    header->shard_stride = geo.shard_stride;
    header->entries_offset = geo.entries_offset;
    header->index_offset = geo.index_offset;
    header->next_offset = geo.next_offset;
    header->data_offset = geo.data_offset;
    header->created_unix = static_cast<uint64_t>(::time(nullptr));
    header->creator_pid = ::getpid();
    header->creator_uid = ::getuid();
    for (uint32_t i = 0; i < geo.shard_count; ++i) {
      ShardHeader* s = new (ShardBase(i)) ShardHeader;
      s->lock.store(0, std::memory_order_relaxed);
      // The index is already zero (fresh pages of the segment).
      EmptyLists(s);
    }
    header->magic.store(layout::MagicValue(), std::memory_order_release);
  }
};

ShmCache::ShmCache(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ShmCache::~ShmCache() { Detach(); }

std::string ShmCache::NamePrefix(const std::string& prefix) {
  if (!prefix.empty()) return prefix;
  const char* env = std::getenv("HEXZ_CACHE_NAME_PREFIX");
  return (env != nullptr && env[0] != '\0') ? env : kDefaultNamePrefix;
}

std::string ShmCache::SegmentName(const std::string& prefix) {
  return NamePrefix(prefix) + "-" + std::to_string(::getuid());
}

Result<std::unique_ptr<ShmCache>> ShmCache::Attach(uint64_t requested_size, AttachInfo* info) {
  return Attach(requested_size, info, AttachOptions{});
}

Result<std::unique_ptr<ShmCache>> ShmCache::Attach(uint64_t requested_size, AttachInfo* info,
                                                   const AttachOptions& options) {
  HEXZ_ASSIGN_OR_RETURN(Geometry want, layout::ComputeGeometry(requested_size));
  const std::string name = SegmentName(options.name_prefix);
  const std::string what = "shared cache " + Slashed(name);
  if (name.find('/') != std::string::npos || name.size() > 200) {
    return Status::InvalidArgument(what + ": invalid segment name");
  }
  bool gone = false;
  std::optional<ProcState> self = ReadProcStat(::getpid(), &gone);
  if (!self) return Status::Unavailable(what + ": cannot read /proc/self/stat");

  bool reclaimed = false;
  for (int attempt = 0; attempt < 16; ++attempt) {
    auto impl = std::make_unique<Impl>();
    impl->name = name;
    impl->options = options;
    bool created = false;
    impl->file = SegmentFile::Open(name, O_RDWR);
    if (!impl->file && errno == ENOENT) {
      Result<SegmentFile> made = SegmentFile::Create(name, what);
      if (!made.ok() && made.status().sys_errno() == EEXIST) continue;
      if (!made.ok()) return made.status();
      impl->file = std::move(*made);
      created = true;
    }
    if (!impl->file) return OpenError(name, errno, what, /*check_owner=*/true);
    const int fd = impl->fd();
    struct stat st;
    if (::fstat(fd, &st) != 0) return Status::FromErrno(errno, what);
    HEXZ_RETURN_IF_ERROR(CheckOwnSegment(st, what));  // before waiting for its lock
    FlockGuard lock(fd);
    if (!lock.locked()) return lock.Why(what);
    if (::fstat(fd, &st) != 0) return Status::FromErrno(errno, what);
    if (st.st_nlink == 0) continue;  // removed while we waited; open the new one
    HEXZ_RETURN_IF_ERROR(CheckOwnSegment(st, what));

    if (st.st_size == 0) {
      // New (ours, or another attacher created it and has not locked yet).
      HEXZ_ASSIGN_OR_RETURN(impl->region, CreateSegment(impl->file, name, want.segment_size, what));
      impl->base = static_cast<uint8_t*>(impl->region.get_address());
      impl->geo = want;
      impl->InitSegment(requested_size);
      created = true;
    } else {
      HEXZ_ASSIGN_OR_RETURN(impl->region,
                            MapSegment(impl->file, static_cast<uint64_t>(st.st_size), true, what));
      impl->base = static_cast<uint8_t*>(impl->region.get_address());
      impl->header = reinterpret_cast<SegmentHeader*>(impl->base);
      created = false;
      uint64_t file_size = static_cast<uint64_t>(st.st_size);
      std::optional<std::string> problem =
          file_size < sizeof(SegmentHeader) ? std::optional<std::string>("too small for a header")
                                            : HeaderProblem(impl->header, file_size, &impl->geo);
      if (problem) {
        bool version_mismatch = file_size >= sizeof(SegmentHeader) &&
                                impl->header->magic.load() == layout::MagicValue() &&
                                impl->header->version != layout::kVersion;
        if (version_mismatch) {  // its layout is not ours: do not write to it
          return Status::Unsupported(
              what + ": " + *problem +
              "; stop the hexz workers of the other version, or remove it with 'hexz cache drop "
              "--force'");
        }
        HEXZ_LOG_WARN("%s: %s; removing it", what.c_str(), problem->c_str());
        RemoveSegment(name);
        reclaimed = true;
        continue;
      }
      uint32_t listed = CountListed(impl->header);
      uint32_t live = ReapDead(impl->header);
      if (live == 0) {
        HEXZ_LOG_INFO("%s: reclaiming a stale segment (%u participant(s), none alive)",
                      what.c_str(), listed);
        RemoveSegment(name);
        reclaimed = true;
        continue;
      }
    }

    // Register.
    SegmentHeader* h = impl->header;
    uint32_t slot = FreeSlot(h);
    if (slot == kNone && ReapDead(h) < layout::kMaxParticipants) slot = FreeSlot(h);
    if (slot == kNone) {
      return Status::Busy(what + " already has " + std::to_string(layout::kMaxParticipants) +
                          " live participants");
    }
    impl->requested_size = requested_size;
    impl->owner_pid = ::getpid();
    impl->owner_start = self->start_time;
    impl->slot = slot;
    h->participants[slot].start_time.store(self->start_time, std::memory_order_relaxed);
    h->participants[slot].pid.store(impl->owner_pid, std::memory_order_relaxed);
    h->attaches.fetch_add(1, std::memory_order_relaxed);
    if (reclaimed) h->stale_reclaimed.fetch_add(1, std::memory_order_relaxed);
    impl->attached = true;

    if (info != nullptr) {
      info->name = Slashed(name);
      info->created = created;
      info->reclaimed_stale = reclaimed;
      info->requested_size = requested_size;
      info->actual_size = impl->geo.segment_size;
      info->participants = CountListed(h);
    }
    return std::unique_ptr<ShmCache>(new ShmCache(std::move(impl)));
  }
  return Status::Busy(what + ": the segment kept changing while attaching; try again");
}

void ShmCache::Detach() {
  Impl* m = impl_.get();
  if (m == nullptr || !m->attached) return;
  m->attached = false;
  if (::getpid() == m->owner_pid) {  // not in a child that inherited the mapping
    FlockGuard lock(m->fd());
    Participant& p = m->header->participants[m->slot];
    if (p.pid.load() == m->owner_pid && p.start_time.load() == m->owner_start) {
      p.pid.store(0);
      p.start_time.store(0);
    }
    uint32_t live = m->options.reap_on_detach ? ReapDead(m->header, /*use_proc=*/false)
                                              : CountListed(m->header);
    struct stat st;
    if (live == 0 && lock.locked() && ::fstat(m->fd(), &st) == 0 && st.st_nlink > 0) {
      // Still the object the name refers to: remove it while we hold the lock.
      RemoveSegment(m->name);
    }
  }
  m->region = bip::mapped_region();
  m->file = SegmentFile();
  m->base = nullptr;
  m->header = nullptr;
}

const std::string& ShmCache::name() const { return impl_->name; }
uint64_t ShmCache::size() const { return impl_->geo.segment_size; }
uint64_t ShmCache::max_block_size() const { return impl_->geo.shard_capacity(); }

CacheStats ShmCache::Stats() const {
  if (!impl_->attached) return {};
  return SumStats(impl_->base, impl_->geo);
}

Status ShmCache::CheckBlockSize(uint64_t block_size) const {
  if (block_size <= max_block_size()) return Status::Ok();
  Status s = BlockTooBig("shared cache " + Slashed(impl_->name) + " (" +
                             base::FormatSize(impl_->geo.segment_size) + ")",
                         max_block_size(), block_size);
  Result<Geometry> asked = layout::ComputeGeometry(impl_->requested_size);
  if (asked.ok() && asked->shard_capacity() >= block_size) {
    // The segment was made smaller by a worker that asked for less.
    return Status::InvalidArgument(
        s.message() +
        " (it was created by another worker with a smaller size; stop the workers "
        "that use it, see 'hexz cache stats', so that a new one is created)");
  }
  return s;
}

Status ShmCache::CheckSizeForBlock(uint64_t cache_size, uint64_t block_size) {
  HEXZ_ASSIGN_OR_RETURN(Geometry g, layout::ComputeGeometry(cache_size));
  if (block_size <= g.shard_capacity()) return Status::Ok();
  return BlockTooBig("a cache of " + base::FormatSize(cache_size), g.shard_capacity(), block_size);
}

bool ShmCache::Lookup(const BlockKey& key, void* dst, size_t len) {
  Impl* m = impl_.get();
  if (!m->attached) return false;
  const uint64_t hash = HashKey(key);
  ShardHeader* s = m->ShardFor(hash);
  if (len == 0 || len > m->geo.shard_capacity()) {
    s->misses.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  // The key's home slot in the index is fetched while the lock is taken (a
  // hint: the slot is read under the lock).
  __builtin_prefetch(m->Index(s) + static_cast<uint32_t>(hash >> 32) % m->geo.index_capacity);
  if (!m->Lock(s)) {
    s->misses.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  uint32_t e = kNone;
  uint64_t* slot = m->Find(s, hash, key, &e);
  if (slot == nullptr) {
    Impl::Unlock(s);
    s->misses.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  Entry& en = m->Entries(s)[e];
  bool ok = en.state == layout::kEntryValid && en.len == len && en.nchunks == ChunksFor(len);
  uint8_t* out = static_cast<uint8_t*>(dst);
  const uint32_t* next = m->Next(s);
  uint32_t c = en.first_chunk;
  // With the check on, each chunk is hashed as it is copied, in one pass
  // (base::CopyHasher: a stripe is loaded once, stored and hashed from the
  // registers), while the rest of the chunk and the start of the next one
  // (its address from the chain) are already on their way from memory.
  const bool verify = m->options.verify_checksums;
  std::optional<base::CopyHasher> copy;
  if (verify) copy.emplace(out, len);
  for (size_t off = 0; ok && off < len; off += kChunkSize) {
    if (c >= s->fresh_chunks) {
      ok = false;
      break;
    }
    size_t n = std::min<size_t>(kChunkSize, len - off);
    // The link is read only when there is a next chunk: for a one-chunk
    // block it would be one more cache miss to wait for before the copy.
    const bool more = off + n < len;
    const uint32_t following = more ? next[c] : kNone;
    if (verify) {
      const bool known = more && following < s->fresh_chunks;
      copy->Copy(m->Chunk(s, c), n, known ? m->Chunk(s, following) : nullptr);
    } else {
      std::memcpy(out + off, m->Chunk(s, c), n);
    }
    c = following;
  }
  const uint64_t checksum = en.checksum;
  if (ok) {
    en.referenced = 1;
  } else if (!m->Erase(s, slot, e)) {
    m->ResetShard(s);
  }
  Impl::Unlock(s);
  // The copy is checked, not the shared bytes: what the caller gets is what
  // was hashed.
  if (ok && verify && copy->Digest() != checksum) {
    ok = false;
    if (m->Lock(s)) {  // drop the bad entry unless it was replaced meanwhile
      uint32_t e2 = kNone;
      uint64_t* slot2 = m->Find(s, hash, key, &e2);
      if (slot2 != nullptr && m->Entries(s)[e2].checksum == checksum && !m->Erase(s, slot2, e2)) {
        m->ResetShard(s);
      }
      Impl::Unlock(s);
    }
  }
  if (!ok) {
    s->invalid.fetch_add(1, std::memory_order_relaxed);
    s->misses.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  s->hits.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void ShmCache::Insert(const BlockKey& key, const void* src, size_t len) {
  Impl* m = impl_.get();
  if (!m->attached) return;
  const uint64_t hash = HashKey(key);
  ShardHeader* s = m->ShardFor(hash);
  if (len == 0 || len > m->geo.shard_capacity()) {
    s->declined.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const uint64_t checksum = XXH3_64bits(src, len);
  const uint32_t need = ChunksFor(len);
  if (!m->Lock(s)) {
    s->declined.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  m->Hook("locked");
  uint32_t old = kNone;
  uint64_t* slot = m->Find(s, hash, key, &old);
  if (slot != nullptr) {
    Entry& en = m->Entries(s)[old];
    if (en.state == layout::kEntryValid && en.len == len && en.checksum == checksum) {
      en.referenced = 1;
      Impl::Unlock(s);
      return;
    }
    if (!m->Erase(s, slot, old)) m->ResetShard(s);
  }
  while (s->free_chunks < need) {
    if (!m->EvictOne(s)) break;
  }
  uint32_t e = s->free_chunks >= need ? m->AllocEntry(s) : kNone;
  if (e == kNone || !m->IndexInsert(s, hash, e)) {
    if (e != kNone) {  // cannot happen (load factor <= 1/2); undo
      m->Entries(s)[e].state = layout::kEntryFree;
      m->Entries(s)[e].first_chunk = s->free_entry_head;
      s->free_entry_head = e;
    }
    Impl::Unlock(s);
    s->declined.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  Entry& en = m->Entries(s)[e];
  en.state = layout::kEntryWriting;
  std::memcpy(en.snapshot_id, key.snapshot_id.data(), 16);
  en.block = key.block;
  en.stream = key.stream;
  en.len = static_cast<uint32_t>(len);
  en.checksum = checksum;
  en.nchunks = need;
  en.referenced = 1;
  uint32_t* next = m->Next(s);
  const uint8_t* in = static_cast<const uint8_t*>(src);
  uint32_t prev = kNone;
  for (uint32_t i = 0; i < need; ++i) {
    uint32_t c = m->AllocChunk(s);
    if (c == kNone) {  // damaged free list: start the shard afresh
      m->ResetShard(s);
      Impl::Unlock(s);
      s->invalid.fetch_add(1, std::memory_order_relaxed);
      s->declined.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (i == 0) {
      en.first_chunk = c;
    } else {
      next[prev] = c;
    }
    next[c] = kNone;
    size_t off = size_t{i} * kChunkSize;
    size_t n = std::min<size_t>(kChunkSize, len - off);
    if (i == need / 2) {
      std::memcpy(m->Chunk(s, c), in + off, n / 2);
      m->Hook("mid-copy");
      std::memcpy(m->Chunk(s, c) + n / 2, in + off + n / 2, n - n / 2);
    } else {
      std::memcpy(m->Chunk(s, c), in + off, n);
    }
    prev = c;
  }
  en.state = layout::kEntryValid;
  s->used_entries.fetch_add(1, std::memory_order_relaxed);
  s->used_bytes.fetch_add(len, std::memory_order_relaxed);
  s->insertions.fetch_add(1, std::memory_order_relaxed);
  Impl::Unlock(s);
}

// ---- admin -----------------------------------------------------------------

Result<std::vector<std::string>> ShmCache::ListSegments(const std::string& prefix) {
  std::string p = NamePrefix(prefix);
  std::string suffix = "-" + std::to_string(::getuid());
  DIR* dir = ::opendir(kShmDir);
  if (dir == nullptr) return Status::FromErrno(errno, kShmDir);
  std::vector<std::string> out;
  while (dirent* d = ::readdir(dir)) {
    std::string n = d->d_name;
    if (n.size() < p.size() + suffix.size() || n.compare(0, p.size(), p) != 0 ||
        n.compare(n.size() - suffix.size(), suffix.size(), suffix) != 0) {
      continue;
    }
    struct stat st;
    std::string path = std::string(kShmDir) + "/" + n;
    if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != ::getuid()) {
      continue;
    }
    out.push_back(n);
  }
  ::closedir(dir);
  std::sort(out.begin(), out.end());
  return out;
}

Result<SegmentInfo> ShmCache::Inspect(const std::string& name) {
  std::string what = "shared cache " + Slashed(name);
  SegmentInfo info;
  info.name = Slashed(name);
  if (name.empty() || name.find('/') != std::string::npos) {
    return Status::InvalidArgument(what + ": invalid segment name");
  }
  SegmentFile fd = SegmentFile::Open(name, O_RDONLY);
  if (!fd) return OpenError(name, errno, what);
  struct stat st;
  if (::fstat(fd.fd(), &st) != 0) return Status::FromErrno(errno, what);
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument(what + " is not a regular file");
  info.size = static_cast<uint64_t>(st.st_size);
  info.uid = st.st_uid;
  info.mode = st.st_mode & 07777;
  if (info.size < sizeof(SegmentHeader)) {
    info.problem = "not initialised";
    return info;
  }
  HEXZ_ASSIGN_OR_RETURN(bip::mapped_region region, MapSegment(fd, info.size, false, what));
  const uint8_t* base = static_cast<const uint8_t*>(region.get_address());
  const SegmentHeader* h = reinterpret_cast<const SegmentHeader*>(base);
  Geometry g;
  if (std::optional<std::string> problem = HeaderProblem(h, info.size, &g)) {
    info.problem = *problem;
    return info;
  }
  info.valid = true;
  info.version = h->version;
  info.requested_size = h->requested_size;
  info.shard_count = g.shard_count;
  info.capacity = g.capacity();
  info.max_block_size = g.shard_capacity();
  info.created_unix = h->created_unix;
  info.creator_pid = h->creator_pid;
  info.attaches = h->attaches.load(std::memory_order_relaxed);
  for (const Participant& p : h->participants) {
    pid_t pid = p.pid.load(std::memory_order_relaxed);
    if (pid == 0) continue;
    ParticipantInfo pi;
    pi.pid = pid;
    pi.start_time = p.start_time.load(std::memory_order_relaxed);
    pi.alive = ProcessAlive(pid, pi.start_time);
    info.participants.push_back(pi);
  }
  info.stats = SumStats(base, g);
  return info;
}

Status ShmCache::Drop(const std::string& name, bool force, DropInfo* info) {
  std::string what = "shared cache " + Slashed(name);
  if (info != nullptr) *info = DropInfo{};
  if (name.empty() || name.find('/') != std::string::npos) {
    return Status::InvalidArgument(what + ": invalid segment name");
  }
  SegmentFile file = SegmentFile::Open(name, O_RDWR);
  if (!file) return OpenError(name, errno, what);
  const int fd = file.fd();
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::FromErrno(errno, what);
  if (st.st_uid != ::getuid() || !S_ISREG(st.st_mode)) {  // before waiting for its lock
    return Status(base::Code::kPermissionDenied,
                  what + " is owned by uid " + std::to_string(st.st_uid) + ", not by you", EPERM);
  }
  FlockGuard lock(fd);
  if (!lock.locked()) return lock.Why(what);
  if (::fstat(fd, &st) != 0) return Status::FromErrno(errno, what);
  if (st.st_nlink == 0) return Status::NotFound(what + ": already removed");
  uint32_t live = 0;
  std::string pids;
  if (static_cast<uint64_t>(st.st_size) >= sizeof(SegmentHeader)) {
    HEXZ_ASSIGN_OR_RETURN(bip::mapped_region region,
                          MapSegment(file, static_cast<uint64_t>(st.st_size), true, what));
    auto* h = reinterpret_cast<SegmentHeader*>(region.get_address());
    std::optional<std::string> problem =
        HeaderProblem(h, static_cast<uint64_t>(st.st_size), nullptr);
    if (problem && h->magic.load() == layout::MagicValue() && h->version != layout::kVersion &&
        !force) {
      // Another hexz version's segment: whether it is in use cannot be told.
      return Status::Busy(what + ": " + *problem + "; use --force to remove it anyway");
    }
    if (!problem) {
      live = ReapDead(h);
      for (const Participant& p : h->participants) {
        pid_t pid = p.pid.load();
        if (pid != 0) pids += (pids.empty() ? "" : ", ") + std::to_string(pid);
      }
    }
  }
  if (info != nullptr) info->live_participants = live;
  if (live > 0 && !force) {
    return Status::Busy(what + " is in use by " + std::to_string(live) + " live process" +
                        (live == 1 ? "" : "es") + " (pid " + pids +
                        "); use --force to remove it anyway");
  }
  if (!RemoveSegment(name)) return Status::FromErrno(errno, what);
  if (info != nullptr) info->removed = true;
  return Status::Ok();
}

}  // namespace hexz::cache
