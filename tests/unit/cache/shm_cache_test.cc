#include "common/cache/shm_cache.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <functional>
#include <map>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>

#include "common/base/size.h"
#include "common/cache/shm_layout.h"

namespace hexz::cache {
namespace {

// A segment prefix no other test (or real user) uses.
std::string UniquePrefix() {
  static std::atomic<int> counter{0};
  return "hexz-cache-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

AttachOptions Opts(const std::string& prefix) {
  AttachOptions o;
  o.name_prefix = prefix;
  return o;
}

bool SegmentExists(const std::string& prefix) {
  std::string path = "/dev/shm/" + ShmCache::SegmentName(prefix);
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Removes the test's segment whatever happens to the test.
class SegmentCleanup {
 public:
  explicit SegmentCleanup(std::string prefix) : prefix_(std::move(prefix)) {}
  ~SegmentCleanup() {
    DropInfo info;
    (void)ShmCache::Drop(ShmCache::SegmentName(prefix_), /*force=*/true, &info);
  }

 private:
  std::string prefix_;
};

BlockKey Key(uint64_t block, uint8_t snapshot = 1, uint32_t stream = 0) {
  BlockKey k;
  k.snapshot_id.fill(snapshot);
  k.snapshot_id[15] = static_cast<uint8_t>(snapshot * 7 + 3);
  k.stream = stream;
  k.block = block;
  return k;
}

// Deterministic content of (key, version): any process can check a block.
void Fill(const BlockKey& key, uint32_t version, uint8_t* out, size_t len) {
  uint64_t x = key.block * 0x9e3779b97f4a7c15ull ^ (uint64_t{key.stream} << 40) ^
               (uint64_t{key.snapshot_id[0]} << 48) ^ (uint64_t{version} << 20) ^ len;
  for (size_t i = 0; i < len; i += 8) {
    x += 0x9e3779b97f4a7c15ull;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    std::memcpy(out + i, &z, std::min<size_t>(8, len - i));
  }
}

std::vector<uint8_t> Content(const BlockKey& key, size_t len, uint32_t version = 0) {
  std::vector<uint8_t> v(len);
  Fill(key, version, v.data(), len);
  return v;
}

// Runs fn in a child process; its return value is the exit code.
pid_t Spawn(const std::function<int()>& fn) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int rc = 99;
    rc = fn();
    ::_exit(rc);
  }
  return pid;
}

int WaitExit(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

std::unique_ptr<ShmCache> MustAttach(uint64_t size, const std::string& prefix,
                                     AttachInfo* info = nullptr) {
  AttachInfo local;
  auto r = ShmCache::Attach(size, info != nullptr ? info : &local, Opts(prefix));
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(r).value() : nullptr;
}

uint64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

TEST(ShmCacheGeometryTest, UsualSizes) {
  for (const char* text : {"256M", "1G", "4G"}) {
    auto size = base::ParseSize(text);
    ASSERT_TRUE(size.ok());
    auto g = layout::ComputeGeometry(*size);
    ASSERT_TRUE(g.ok()) << text << ": " << g.status().ToString();
    EXPECT_EQ(g->segment_size, *size);
    EXPECT_GE(g->shard_capacity(), 1u << 20) << text;    // holds the largest block size
    EXPECT_GE(g->capacity(), *size / 100 * 95) << text;  // metadata stays under 5%
    EXPECT_LE(g->shard_offset + uint64_t{g->shard_count} * g->shard_stride, *size);
    EXPECT_LE(g->data_offset + uint64_t{g->chunks_per_shard} * layout::kChunkSize, g->shard_stride);
    EXPECT_EQ(g->data_offset % 4096, 0u);
    EXPECT_TRUE(ShmCache::CheckSizeForBlock(*size, 1u << 20).ok()) << text;
  }
  EXPECT_EQ(layout::ComputeGeometry(256ull << 20)->shard_count, 16u);
  EXPECT_EQ(layout::ComputeGeometry(1ull << 30)->shard_count, 64u);
  EXPECT_EQ(layout::ComputeGeometry(4ull << 30)->shard_count, 64u);
}

TEST(ShmCacheGeometryTest, TooSmallSizesGetClearErrors) {
  auto g = layout::ComputeGeometry(64 << 10);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("cache size 64 KiB is too small: the minimum is 1 MiB"),
            std::string::npos)
      << g.status().message();

  Status s = ShmCache::CheckSizeForBlock(1 << 20, 1 << 20);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), base::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("a cache of 1 MiB holds blocks of at most"), std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("too small for blocks of 1 MiB; use --cache-size 2M or more"),
            std::string::npos)
      << s.message();
  EXPECT_TRUE(ShmCache::CheckSizeForBlock(2 << 20, 1 << 20).ok());
  EXPECT_TRUE(ShmCache::CheckSizeForBlock(1 << 20, 64 << 10).ok());

  std::string prefix = UniquePrefix();
  AttachInfo info;
  auto r = ShmCache::Attach(64 << 10, &info, Opts(prefix));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("64 KiB"), std::string::npos);
  EXPECT_FALSE(SegmentExists(prefix));
}

// 256M, 1G and 4G segments are created without touching their memory: only
// the header and the shard headers are written, pages come as blocks arrive.
// The memory is reserved when the segment is created (posix_fallocate): a
// /dev/shm that fills up later must not kill the workers with SIGBUS.
TEST(ShmCacheTest, UsualSizesAreReservedUpFront) {
  struct statvfs vfs;
  ASSERT_EQ(::statvfs("/dev/shm", &vfs), 0);
  uint64_t avail = uint64_t{vfs.f_bavail} * vfs.f_frsize;
  for (const char* text : {"256M", "1G"}) {
    uint64_t size = *base::ParseSize(text);
    std::string prefix = UniquePrefix();
    SegmentCleanup cleanup(prefix);
    if (avail < size) {  // a small /dev/shm (containers): a clear refusal instead
      AttachInfo info;
      auto r = ShmCache::Attach(size, &info, Opts(prefix));
      ASSERT_FALSE(r.ok()) << text;
      EXPECT_EQ(r.status().code(), base::Code::kNoSpace);
      EXPECT_NE(r.status().message().find("does not fit in /dev/shm"), std::string::npos)
          << r.status().message();
      EXPECT_FALSE(SegmentExists(prefix));
      continue;
    }
    AttachInfo info;
    auto cache = MustAttach(size, prefix, &info);
    ASSERT_TRUE(cache);
    EXPECT_EQ(info.actual_size, size);
    EXPECT_TRUE(cache->CheckBlockSize(1 << 20).ok());
    auto c = Content(Key(1), 1 << 20);
    cache->Insert(Key(1), c.data(), c.size());
    std::vector<uint8_t> buf(c.size());
    ASSERT_TRUE(cache->Lookup(Key(1), buf.data(), buf.size()));
    EXPECT_EQ(buf, c);
    struct stat st;
    ASSERT_EQ(::stat(("/dev/shm" + info.name).c_str(), &st), 0);
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), size);
    uint64_t reserved = static_cast<uint64_t>(st.st_blocks) * 512;
    EXPECT_GE(reserved, size) << text << ": " << reserved << " bytes allocated";
  }
  // More than /dev/shm can hold: refused up front, rather than SIGBUS later.
  uint64_t too_big = (avail + (1ull << 30)) & ~((1ull << 20) - 1);
  if (too_big <= layout::kMaxSegmentSize) {
    std::string prefix = UniquePrefix();
    SegmentCleanup cleanup(prefix);
    AttachInfo info;
    auto r = ShmCache::Attach(too_big, &info, Opts(prefix));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), base::Code::kNoSpace);
    EXPECT_NE(r.status().message().find("does not fit in /dev/shm"), std::string::npos)
        << r.status().message();
    EXPECT_FALSE(SegmentExists(prefix));
  }
}

TEST(ShmCacheTest, InsertLookupAndEvict) {
  std::string prefix = UniquePrefix();
  SegmentCleanup cleanup(prefix);
  AttachInfo info;
  auto cache = MustAttach(4 << 20, prefix, &info);
  ASSERT_TRUE(cache);
  EXPECT_TRUE(info.created);
  EXPECT_FALSE(info.reclaimed_stale);
  EXPECT_EQ(info.actual_size, 4u << 20);
  EXPECT_EQ(info.participants, 1u);

  const size_t kLen = 64 << 10;
  std::vector<uint8_t> buf(kLen);
  EXPECT_FALSE(cache->Lookup(Key(0), buf.data(), kLen));
  auto c0 = Content(Key(0), kLen);
  cache->Insert(Key(0), c0.data(), kLen);
  ASSERT_TRUE(cache->Lookup(Key(0), buf.data(), kLen));
  EXPECT_EQ(buf, c0);
  // Same block of another snapshot or stream, or another length: misses.
  EXPECT_FALSE(cache->Lookup(Key(0, 2), buf.data(), kLen));
  EXPECT_FALSE(cache->Lookup(Key(0, 1, 1), buf.data(), kLen));
  // Asking for another length is a mismatch: the entry is dropped.
  EXPECT_FALSE(cache->Lookup(Key(0), buf.data(), kLen / 2));
  EXPECT_EQ(cache->Stats().invalid, 1u);
  EXPECT_FALSE(cache->Lookup(Key(0), buf.data(), kLen));

  // Fill well past capacity: old blocks are evicted, the cache never exceeds
  // its capacity, and whatever hits is right.
  const uint64_t kBlocks = 200;  // 12.5 MiB of blocks in a 4 MiB cache
  for (uint64_t b = 0; b < kBlocks; ++b) {
    auto c = Content(Key(b), kLen);
    cache->Insert(Key(b), c.data(), kLen);
  }
  CacheStats st = cache->Stats();
  EXPECT_GT(st.evictions, 0u);
  EXPECT_LE(st.used_bytes, cache->max_block_size());
  EXPECT_EQ(st.used_bytes, st.entries * kLen);
  uint64_t hits = 0;
  for (uint64_t b = 0; b < kBlocks; ++b) {
    std::fill(buf.begin(), buf.end(), 0);
    if (cache->Lookup(Key(b), buf.data(), kLen)) {
      ++hits;
      EXPECT_EQ(buf, Content(Key(b), kLen)) << "block " << b;
    }
  }
  EXPECT_EQ(hits, st.entries);
  EXPECT_GT(hits, 40u);
  // The most recent block is always there.
  EXPECT_TRUE(cache->Lookup(Key(kBlocks - 1), buf.data(), kLen));
  EXPECT_EQ(cache->Stats().invalid, 1u);
}

TEST(ShmCacheTest, MixedBlockSizesAndReplacement) {
  std::string prefix = UniquePrefix();
  SegmentCleanup cleanup(prefix);
  auto cache = MustAttach(8 << 20, prefix);
  ASSERT_TRUE(cache);
  for (size_t len : {size_t{4096}, size_t{5000}, size_t{65536}, size_t{1} << 20, size_t{100}}) {
    BlockKey k = Key(len, 3);
    auto c = Content(k, len);
    cache->Insert(k, c.data(), len);
    std::vector<uint8_t> buf(len);
    ASSERT_TRUE(cache->Lookup(k, buf.data(), len)) << len;
    EXPECT_EQ(buf, c) << len;
  }
  // A new version of a block replaces the old one.
  BlockKey k = Key(7);
  auto v1 = Content(k, 8192, 1);
  auto v2 = Content(k, 8192, 2);
  cache->Insert(k, v1.data(), v1.size());
  cache->Insert(k, v2.data(), v2.size());
  std::vector<uint8_t> buf(8192);
  ASSERT_TRUE(cache->Lookup(k, buf.data(), buf.size()));
  EXPECT_EQ(buf, v2);
  // Too large for a shard: declined, not an error.
  std::vector<uint8_t> huge(cache->max_block_size() + 4096);
  cache->Insert(Key(99), huge.data(), huge.size());
  EXPECT_EQ(cache->Stats().declined, 1u);
  EXPECT_FALSE(cache->CheckBlockSize(huge.size()).ok());
  EXPECT_TRUE(cache->CheckBlockSize(1 << 20).ok());
}

// Randomised against a model: a hit always returns the latest version.
TEST(ShmCacheTest, RandomOpsAgainstModel) {
  std::string prefix = UniquePrefix();
  SegmentCleanup cleanup(prefix);
  auto cache = MustAttach(1 << 20, prefix);  // ~240 chunks: constant eviction
  ASSERT_TRUE(cache);
  std::mt19937_64 rng(42);
  std::map<uint64_t, std::pair<uint32_t, size_t>> model;  // block -> (version, len)
  std::vector<uint8_t> buf(32 << 10);
  uint64_t hits = 0;
  for (int op = 0; op < 20000; ++op) {
    uint64_t b = rng() % 400;
    if (rng() % 3 == 0) {
      uint32_t version = static_cast<uint32_t>(rng() % 1000);
      size_t len = size_t{4096} * (1 + rng() % 8);
      auto c = Content(Key(b), len, version);
      cache->Insert(Key(b), c.data(), len);
      model[b] = {version, len};
    } else if (model.count(b) != 0) {
      auto [version, len] = model[b];
      if (cache->Lookup(Key(b), buf.data(), len)) {
        ++hits;
        ASSERT_EQ(std::memcmp(buf.data(), Content(Key(b), len, version).data(), len), 0)
            << "op " << op << " block " << b;
      }
    }
  }
  EXPECT_GT(hits, 100u);
  CacheStats st = cache->Stats();
  EXPECT_EQ(st.invalid, 0u);
  EXPECT_GT(st.evictions, 1000u);
}

TEST(ShmCacheTest, SegmentIsPrivateAndNamedForTheUser) {
  std::string prefix = UniquePrefix();
  SegmentCleanup cleanup(prefix);
  AttachInfo info;
  auto cache = MustAttach(2 << 20, prefix, &info);
  ASSERT_TRUE(cache);
  std::string uid = std::to_string(::getuid());
  EXPECT_EQ(info.name, "/" + prefix + "-" + uid);
  EXPECT_EQ(ShmCache::SegmentName("hexz-cache"), "hexz-cache-" + uid);
  struct stat st;
  ASSERT_EQ(::stat(("/dev/shm" + info.name).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, ::getuid());

  // A segment that someone made readable by others is refused.
  ASSERT_EQ(::chmod(("/dev/shm" + info.name).c_str(), 0644), 0);
  AttachInfo info2;
  auto r = ShmCache::Attach(2 << 20, &info2, Opts(prefix));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("has mode 0644, expected 0600"), std::string::npos)
      << r.status().message();
  ASSERT_EQ(::chmod(("/dev/shm" + info.name).c_str(), 0600), 0);
}

// A file of the segment's name that belongs to someone else is refused, not
// used; the message names its owner.
TEST(ShmCacheTest, RefusesSegmentOwnedBySomeoneElse) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to make files owned by other uids";
  std::string prefix = UniquePrefix();
  auto squat = [&](const std::string& path, mode_t mode) {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) return false;
    bool ok = ::fchmod(fd, mode) == 0 && ::fchown(fd, 4242, 4242) == 0;
    ::close(fd);
    return ok;
  };
  // Unreadable to the attacher (uid 4343): shm_open fails with EACCES.
  std::string other = "/dev/shm/" + prefix + "-4343";
  ASSERT_TRUE(squat(other, 0600));
  pid_t child = Spawn([&] {
    if (::setgid(4343) != 0 || ::setuid(4343) != 0) return 10;
    AttachInfo info;
    auto r = ShmCache::Attach(2 << 20, &info, Opts(prefix));
    if (r.ok()) return 1;
    if (r.status().message().find("/" + prefix + "-4343 is owned by uid 4242, not by you") ==
        std::string::npos) {
      std::fprintf(stderr, "%s\n", r.status().message().c_str());
      return 2;
    }
    return 0;
  });
  EXPECT_EQ(WaitExit(child), 0);
  EXPECT_EQ(::unlink(other.c_str()), 0);
  // Readable and writable (0666): opened, then refused for its owner.
  std::string mine = "/dev/shm/" + ShmCache::SegmentName(prefix);
  ASSERT_TRUE(squat(mine, 0666));
  AttachInfo info;
  auto r = ShmCache::Attach(2 << 20, &info, Opts(prefix));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), base::Code::kPermissionDenied);
  EXPECT_NE(r.status().message().find("is owned by uid 4242, not by you"), std::string::npos)
      << r.status().message();
  EXPECT_EQ(::unlink(mine.c_str()), 0);
}

// Another user plants a 0666 file under our segment's name and holds flock on
// it: the attach must be refused at once for the owner, not wait for the lock.
TEST(ShmCacheTest, PlantedLockedSegmentIsRefusedWithoutWaiting) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to make files owned by other uids";
  std::string prefix = UniquePrefix();
  std::string mine = "/dev/shm/" + ShmCache::SegmentName(prefix);
  int fd = ::open(mine.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::fchmod(fd, 0666), 0);
  ASSERT_EQ(::fchown(fd, 4242, 4242), 0);
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t holder = Spawn([&] {
    if (::flock(fd, LOCK_EX) != 0) return 1;
    (void)!::write(ready[1], "x", 1);
    ::sleep(30);
    return 0;
  });
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  auto start = std::chrono::steady_clock::now();
  AttachInfo info;
  auto r = ShmCache::Attach(2 << 20, &info, Opts(prefix));
  DropInfo dropped;
  Status drop = ShmCache::Drop(ShmCache::SegmentName(prefix), true, &dropped);
  auto elapsed = std::chrono::steady_clock::now() - start;
  ::kill(holder, SIGKILL);
  WaitExit(holder);
  ::close(fd);
  ::close(ready[0]);
  ::close(ready[1]);
  EXPECT_EQ(::unlink(mine.c_str()), 0);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("is owned by uid 4242, not by you"), std::string::npos)
      << r.status().message();
  ASSERT_FALSE(drop.ok());
  EXPECT_NE(drop.message().find("is owned by uid 4242, not by you"), std::string::npos)
      << drop.message();
  EXPECT_LT(elapsed, std::chrono::seconds(1));
}

// Another user plants a 0666 file under our segment's name and holds a lease
// on it (F_SETLEASE, ignoring SIGIO): an open without O_NONBLOCK, as
// shm_open and so boost::interprocess::shared_memory_object(open_only) do
// it, would wait /proc/sys/fs/lease-break-time (45 s). Refused at once.
TEST(ShmCacheTest, PlantedLeasedSegmentIsRefusedWithoutWaiting) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to make files owned by other uids";
  std::string prefix = UniquePrefix();
  std::string mine = "/dev/shm/" + ShmCache::SegmentName(prefix);
  int fd = ::open(mine.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::fchmod(fd, 0666), 0);
  ASSERT_EQ(::fchown(fd, 4242, 4242), 0);
  ::close(fd);
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t holder = Spawn([&] {
    ::signal(SIGIO, SIG_IGN);
    int rd = ::open(mine.c_str(), O_RDONLY | O_CLOEXEC);
    if (rd < 0 || ::fcntl(rd, F_SETLEASE, F_RDLCK) != 0) return 1;
    (void)!::write(ready[1], "x", 1);
    ::sleep(60);
    return 0;
  });
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  auto start = std::chrono::steady_clock::now();
  AttachInfo info;
  auto r = ShmCache::Attach(2 << 20, &info, Opts(prefix));
  DropInfo dropped;
  Status drop = ShmCache::Drop(ShmCache::SegmentName(prefix), true, &dropped);
  auto elapsed = std::chrono::steady_clock::now() - start;
  ::kill(holder, SIGKILL);
  WaitExit(holder);
  ::close(ready[0]);
  ::close(ready[1]);
  EXPECT_EQ(::unlink(mine.c_str()), 0);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("is owned by uid 4242, not by you"), std::string::npos)
      << r.status().message();
  ASSERT_FALSE(drop.ok());
  EXPECT_NE(drop.message().find("is owned by uid 4242, not by you"), std::string::npos)
      << drop.message();
  EXPECT_LT(elapsed, std::chrono::seconds(1));
}

// The segment is a Boost.Interprocess shared_memory_object: Boost opens and
// maps what hexz created, and sees it gone after the last detach.
TEST(ShmCacheTest, SegmentIsABoostSharedMemoryObject) {
  std::string prefix = UniquePrefix();
  SegmentCleanup cleanup(prefix);
  AttachInfo info;
  auto r = ShmCache::Attach(2 << 20, &info, Opts(prefix));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const std::string name = "/" + ShmCache::SegmentName(prefix);
  {
    namespace bip = boost::interprocess;
    bip::shared_memory_object shm(bip::open_only, name.c_str(), bip::read_only);
    bip::offset_t size = 0;
    ASSERT_TRUE(shm.get_size(size));
    EXPECT_EQ(static_cast<uint64_t>(size), (*r)->size());
    bip::mapped_region region(shm, bip::read_only);
    const auto* h = static_cast<const layout::SegmentHeader*>(region.get_address());
    EXPECT_EQ(h->magic.load(), layout::MagicValue());
    EXPECT_EQ(h->version, layout::kVersion);
  }
  r->reset();
  EXPECT_FALSE(SegmentExists(prefix));
}

// A symlink or a FIFO under the segment's name is refused, never followed or
// waited on.
TEST(ShmCacheTest, SymlinkOrFifoSegmentIsRefused) {
  std::string prefix = UniquePrefix();
  std::string mine = "/dev/shm/" + ShmCache::SegmentName(prefix);
  ASSERT_EQ(::symlink("/dev/null", mine.c_str()), 0);
  AttachInfo info;
  auto r = ShmCache::Attach(2 << 20, &info, Opts(prefix));
  EXPECT_EQ(::unlink(mine.c_str()), 0);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("symbolic link"), std::string::npos) << r.status().message();
  ASSERT_EQ(::mkfifo(mine.c_str(), 0600), 0);
  r = ShmCache::Attach(2 << 20, &info, Opts(prefix));
  EXPECT_EQ(::unlink(mine.c_str()), 0);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("not a regular file"), std::string::npos)
      << r.status().message();
}

TEST(ShmCacheTest, DifferentSizeJoinsAndLastDetachRemoves) {
  std::string prefix = UniquePrefix();
  SegmentCleanup cleanup(prefix);
  AttachInfo a_info, b_info;
  auto a = MustAttach(4 << 20, prefix, &a_info);
  auto b = MustAttach(16 << 20, prefix, &b_info);
  ASSERT_TRUE(a && b);
  EXPECT_TRUE(a_info.created);
  EXPECT_FALSE(b_info.created);
  EXPECT_EQ(b_info.requested_size, 16u << 20);
  EXPECT_EQ(b_info.actual_size, 4u << 20);
  EXPECT_EQ(b_info.participants, 2u);
  EXPECT_EQ(b->size(), 4u << 20);
  EXPECT_EQ(a_info.Describe(), "created the shared cache " + a_info.name + " (4 MiB)");
  EXPECT_EQ(b_info.Describe(), "joined the shared cache " + a_info.name +
                                   " (4 MiB, not the 16 MiB asked for; 2 processes use it)");

  auto c = Content(Key(1), 4096);
  a->Insert(Key(1), c.data(), c.size());
  std::vector<uint8_t> buf(4096);
  EXPECT_TRUE(b->Lookup(Key(1), buf.data(), buf.size()));

  // Blocks that fit the size b asked for but not the segment it joined.
  Status too_big = b->CheckBlockSize(8 << 20);
  ASSERT_FALSE(too_big.ok());
  EXPECT_NE(too_big.message().find("created by another worker with a smaller size"),
            std::string::npos)
      << too_big.message();
  EXPECT_EQ(a->CheckBlockSize(8 << 20).message().find("another worker"), std::string::npos);

  a.reset();
  EXPECT_TRUE(SegmentExists(prefix));
  b.reset();
  EXPECT_FALSE(SegmentExists(prefix));
}

TEST(ShmCacheTest, TwoProcessesShareEntries) {
  std::string prefix = UniquePrefix();
  SegmentCleanup cleanup(prefix);
  auto parent = MustAttach(8 << 20, prefix);
  ASSERT_TRUE(parent);
  const size_t kLen = 64 << 10;
  const uint64_t kBlocks = 32;
  pid_t child = Spawn([&] {
    AttachInfo info;
    auto r = ShmCache::Attach(8 << 20, &info, Opts(prefix));
    if (!r.ok() || info.created || info.participants != 2) return 1;
    for (uint64_t b = 0; b < kBlocks; ++b) {
      auto c = Content(Key(b), kLen);
      (*r)->Insert(Key(b), c.data(), kLen);
    }
    return 0;  // detaches as r goes away
  });
  ASSERT_EQ(WaitExit(child), 0);
  EXPECT_TRUE(SegmentExists(prefix));  // the parent still uses it
  std::vector<uint8_t> buf(kLen);
  for (uint64_t b = 0; b < kBlocks; ++b) {
    ASSERT_TRUE(parent->Lookup(Key(b), buf.data(), kLen)) << b;
    EXPECT_EQ(buf, Content(Key(b), kLen));
  }
  CacheStats st = parent->Stats();
  EXPECT_EQ(st.insertions, kBlocks);
  EXPECT_EQ(st.hits, kBlocks);
  EXPECT_EQ(st.misses, 0u);

  auto seg = ShmCache::Inspect(ShmCache::SegmentName(prefix));
  ASSERT_TRUE(seg.ok()) << seg.status().ToString();
  EXPECT_TRUE(seg->valid);
  EXPECT_EQ(seg->stats.hits, kBlocks);
  EXPECT_EQ(seg->attaches, 2u);
  ASSERT_EQ(seg->participants.size(), 1u);
  EXPECT_EQ(seg->participants[0].pid, ::getpid());
  EXPECT_TRUE(seg->participants[0].alive);
}

TEST(ShmCacheTest, OtherLayoutVersionIsLeftAlone) {
  std::string prefix = UniquePrefix();
  SegmentCleanup cleanup(prefix);
  std::string name = ShmCache::SegmentName(prefix);
  {
    auto a = MustAttach(2 << 20, prefix);
    ASSERT_TRUE(a);
    // Pretend a future hexz made it.
    int fd = ::open(("/dev/shm/" + name).c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    uint32_t version = layout::kVersion + 1;
    ASSERT_EQ(::pwrite(fd, &version, sizeof version, offsetof(layout::SegmentHeader, version)),
              static_cast<ssize_t>(sizeof version));
    ::close(fd);
    AttachInfo info;
    auto r = ShmCache::Attach(2 << 20, &info, Opts(prefix));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), base::Code::kUnsupported);
    EXPECT_NE(r.status().message().find("layout version " + std::to_string(version) +
                                        ", this hexz uses " + std::to_string(layout::kVersion)),
              std::string::npos)
        << r.status().message();
    auto seg = ShmCache::Inspect(name);
    ASSERT_TRUE(seg.ok());
    EXPECT_FALSE(seg->valid);
    DropInfo drop;
    EXPECT_EQ(ShmCache::Drop(name, /*force=*/false, &drop).code(), base::Code::kBusy);
    EXPECT_TRUE(SegmentExists(prefix));
  }
  // a's detach still removed it: its own header is readable whatever version says.
  EXPECT_FALSE(SegmentExists(prefix));
}

// Several processes read and fill the same keys; every hit is checked.
TEST(ShmCacheTest, ConcurrentProcessesReadCorrectBytes) {
  std::string prefix = UniquePrefix();
  SegmentCleanup cleanup(prefix);
  auto parent = MustAttach(4 << 20, prefix);
  ASSERT_TRUE(parent);
  std::vector<pid_t> kids;
  for (int w = 0; w < 4; ++w) {
    kids.push_back(Spawn([&, w] {
      ::alarm(120);
      AttachInfo info;
      auto r = ShmCache::Attach(4 << 20, &info, Opts(prefix));
      if (!r.ok()) return 1;
      std::mt19937_64 rng(w);
      std::vector<uint8_t> buf(128 << 10);
      for (int op = 0; op < 3000; ++op) {
        uint64_t b = rng() % 96;
        size_t len = size_t{16384} * (1 + b % 8);  // fixed per key
        if ((*r)->Lookup(Key(b), buf.data(), len)) {
          if (std::memcmp(buf.data(), Content(Key(b), len).data(), len) != 0) return 2;
        } else {
          auto c = Content(Key(b), len);
          (*r)->Insert(Key(b), c.data(), len);
        }
      }
      return 0;
    }));
  }
  for (pid_t k : kids) EXPECT_EQ(WaitExit(k), 0);
  CacheStats st = parent->Stats();
  EXPECT_GT(st.hits, 1000u);
  EXPECT_EQ(st.invalid, 0u);
  EXPECT_EQ(st.recoveries, 0u);
}

// Threads of one process share a cache object.
TEST(ShmCacheTest, ManyThreadsOneObject) {
  std::string prefix = UniquePrefix();
  SegmentCleanup cleanup(prefix);
  auto cache = MustAttach(4 << 20, prefix);
  ASSERT_TRUE(cache);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      std::vector<uint8_t> buf(64 << 10);
      for (int op = 0; op < 2000; ++op) {
        uint64_t b = rng() % 128;
        size_t len = size_t{8192} * (1 + b % 8);
        if (cache->Lookup(Key(b), buf.data(), len)) {
          if (std::memcmp(buf.data(), Content(Key(b), len).data(), len) != 0) ++wrong;
        } else {
          auto c = Content(Key(b), len);
          cache->Insert(Key(b), c.data(), len);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  CacheStats st = cache->Stats();
  EXPECT_GT(st.hits, 1000u);
  EXPECT_EQ(st.invalid, 0u);
  EXPECT_EQ(st.hits + st.misses, 8000u);
}

// Attaches and detaches racing from several processes: every attach succeeds
// (none lands in a segment being removed), and nothing is left at the end.
TEST(ShmCacheTest, AttachDetachRaces) {
  std::string prefix = UniquePrefix();
  SegmentCleanup cleanup(prefix);
  std::vector<pid_t> kids;
  for (int w = 0; w < 4; ++w) {
    kids.push_back(Spawn([&, w] {
      ::alarm(120);
      std::vector<uint8_t> buf(4096);
      for (int i = 0; i < 100; ++i) {
        AttachInfo info;
        auto r =
            ShmCache::Attach(uint64_t{2 + static_cast<uint64_t>(w)} << 20, &info, Opts(prefix));
        if (!r.ok()) {
          std::fprintf(stderr, "attach %d/%d: %s\n", w, i, r.status().ToString().c_str());
          return 1;
        }
        auto c = Content(Key(static_cast<uint64_t>(w)), 4096);
        (*r)->Insert(Key(static_cast<uint64_t>(w)), c.data(), c.size());
        if (!(*r)->Lookup(Key(static_cast<uint64_t>(w)), buf.data(), buf.size()) || buf != c) {
          return 2;
        }
      }
      return 0;
    }));
  }
  for (pid_t k : kids) EXPECT_EQ(WaitExit(k), 0);
  EXPECT_FALSE(SegmentExists(prefix));
}

TEST(ShmCacheTest, StaleSegmentIsReclaimed) {
  std::string prefix = UniquePrefix();
  SegmentCleanup cleanup(prefix);
  pid_t child = Spawn([&] {
    AttachInfo info;
    auto r = ShmCache::Attach(2 << 20, &info, Opts(prefix));
    if (!r.ok()) return 1;
    auto c = Content(Key(5), 4096);
    (*r)->Insert(Key(5), c.data(), c.size());
    ::raise(SIGKILL);  // dies attached
    return 2;
  });
  ASSERT_EQ(WaitExit(child), 128 + SIGKILL);
  ASSERT_TRUE(SegmentExists(prefix));
  auto seg = ShmCache::Inspect(ShmCache::SegmentName(prefix));
  ASSERT_TRUE(seg.ok());
  ASSERT_EQ(seg->participants.size(), 1u);
  EXPECT_FALSE(seg->participants[0].alive);
  EXPECT_EQ(seg->live_participants(), 0u);

  AttachInfo info;
  auto cache = MustAttach(4 << 20, prefix, &info);
  ASSERT_TRUE(cache);
  EXPECT_TRUE(info.reclaimed_stale);
  EXPECT_TRUE(info.created);
  EXPECT_EQ(info.actual_size, 4u << 20);  // a fresh segment of the requested size
  EXPECT_NE(info.Describe().find("after removing a stale one"), std::string::npos);
  std::vector<uint8_t> buf(4096);
  EXPECT_FALSE(cache->Lookup(Key(5), buf.data(), buf.size()));
  cache.reset();
  EXPECT_FALSE(SegmentExists(prefix));
}

TEST(ShmCacheTest, DropRefusesLiveSegmentUnlessForced) {
  std::string prefix = UniquePrefix();
  SegmentCleanup cleanup(prefix);
  std::string name = ShmCache::SegmentName(prefix);
  auto a = MustAttach(2 << 20, prefix);
  ASSERT_TRUE(a);
  auto names = ShmCache::ListSegments(prefix);
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, std::vector<std::string>{name});

  DropInfo info;
  Status s = ShmCache::Drop(name, /*force=*/false, &info);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), base::Code::kBusy);
  EXPECT_NE(s.message().find("in use by 1 live process (pid " + std::to_string(::getpid())),
            std::string::npos)
      << s.message();
  EXPECT_EQ(info.live_participants, 1u);
  EXPECT_TRUE(SegmentExists(prefix));

  ASSERT_TRUE(ShmCache::Drop(name, /*force=*/true, &info).ok());
  EXPECT_TRUE(info.removed);
  EXPECT_FALSE(SegmentExists(prefix));
  // The old participant keeps working on its mapping ...
  auto c = Content(Key(1), 4096);
  a->Insert(Key(1), c.data(), c.size());
  // ... a new attacher gets a new segment, which the old one's detach leaves alone.
  AttachInfo b_info;
  auto b = MustAttach(2 << 20, prefix, &b_info);
  ASSERT_TRUE(b);
  EXPECT_TRUE(b_info.created);
  a.reset();
  EXPECT_TRUE(SegmentExists(prefix));
  b.reset();
  EXPECT_FALSE(SegmentExists(prefix));

  // A stale segment is dropped without --force.
  pid_t child = Spawn([&] {
    AttachInfo i;
    auto r = ShmCache::Attach(2 << 20, &i, Opts(prefix));
    if (!r.ok()) return 1;
    ::raise(SIGKILL);
    return 2;
  });
  ASSERT_EQ(WaitExit(child), 128 + SIGKILL);
  ASSERT_TRUE(SegmentExists(prefix));
  EXPECT_TRUE(ShmCache::Drop(name, /*force=*/false, &info).ok());
  EXPECT_FALSE(SegmentExists(prefix));
  EXPECT_EQ(ShmCache::Drop(name, false, &info).code(), base::Code::kNotFound);
}

// Garbage written over a shard's bookkeeping and data (by a buggy process of
// the same user) never makes the cache touch memory outside the segment (ASan
// checks that) nor serve wrong bytes.
TEST(ShmCacheTest, SurvivesScribbledMetadata) {
  std::string prefix = UniquePrefix();
  SegmentCleanup cleanup(prefix);
  const uint64_t kSize = 2 << 20;  // one shard
  auto cache = MustAttach(kSize, prefix);
  ASSERT_TRUE(cache);
  auto geo = layout::ComputeGeometry(kSize);
  ASSERT_TRUE(geo.ok());
  std::string path = "/dev/shm/" + ShmCache::SegmentName(prefix);
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  void* map = ::mmap(nullptr, geo->segment_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  ASSERT_NE(map, MAP_FAILED);
  uint8_t* shard = static_cast<uint8_t*>(map) + geo->shard_offset;
  // Everything after the lock word: counters, entries, index, links, data.
  const size_t skip = sizeof(std::atomic<uint32_t>);
  const size_t span = geo->shard_stride - skip;

  std::mt19937_64 rng(1234);
  std::vector<uint8_t> buf(64 << 10);
  uint64_t hits = 0;
  for (int round = 0; round < 40; ++round) {
    for (int op = 0; op < 300; ++op) {
      uint64_t b = rng() % 64;
      size_t len = size_t{4096} << (b % 5);
      if (cache->Lookup(Key(b), buf.data(), len)) {
        ++hits;
        ASSERT_EQ(std::memcmp(buf.data(), Content(Key(b), len).data(), len), 0) << "block " << b;
      } else {
        auto c = Content(Key(b), len);
        cache->Insert(Key(b), c.data(), len);
      }
    }
    // Scribble: some random bytes here and there, sometimes a whole region.
    int writes = 1 + static_cast<int>(rng() % 64);
    for (int w = 0; w < writes; ++w) {
      size_t at = skip + rng() % span;
      size_t n = std::min<size_t>(1 + rng() % 64, geo->shard_stride - at);
      for (size_t i = 0; i < n; ++i) shard[at + i] = static_cast<uint8_t>(rng());
    }
    if (round % 8 == 7) {
      std::memset(shard + skip, 0xff, geo->data_offset - skip);  // all bookkeeping
    }
  }
  ::munmap(map, geo->segment_size);
  EXPECT_GT(hits, 100u);
  EXPECT_GT(cache->Stats().invalid, 0u);
}

// One bit flipped in a cached block's bytes in the segment (by a stray
// write of another process) is caught on the next hit wherever it lies: in a
// chunk hashed while it is copied, in the tail that is hashed after the copy,
// in the last byte, and in blocks too short for the one-pass copy.
TEST(ShmCacheTest, AFlippedBitInTheSegmentIsNeverServed) {
  std::string prefix = UniquePrefix();
  SegmentCleanup cleanup(prefix);
  const uint64_t kSize = 8 << 20;
  auto cache = MustAttach(kSize, prefix);
  ASSERT_TRUE(cache);
  auto geo = layout::ComputeGeometry(kSize);
  ASSERT_TRUE(geo.ok());
  std::string path = "/dev/shm/" + ShmCache::SegmentName(prefix);
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  void* map = ::mmap(nullptr, geo->segment_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  ASSERT_NE(map, MAP_FAILED);
  auto* seg = static_cast<uint8_t*>(map);

  struct Case {
    size_t len;
    size_t at;  // byte of the block whose bit 3 is flipped
  };
  const Case cases[] = {
      {200, 17},          {4096, 0},      {4096, 3000},   {4096, 3500},   {4096, 4095},
      {65536, 100},       {65536, 33000}, {65536, 64600}, {65536, 65535}, {65536 + 700, 65900},
      {256 << 10, 200000}};
  uint64_t b = 1000;
  for (const Case& c : cases) {
    ++b;
    std::vector<uint8_t> want = Content(Key(b), c.len);
    cache->Insert(Key(b), want.data(), c.len);
    std::vector<uint8_t> got(c.len);
    ASSERT_TRUE(cache->Lookup(Key(b), got.data(), c.len)) << c.len;
    ASSERT_EQ(got, want);
    // The byte's 64-byte neighbourhood is unique: find it in the segment.
    size_t from = c.at / 64 * 64;
    size_t n = std::min<size_t>(64, c.len - from);
    void* hit = ::memmem(seg, geo->segment_size, want.data() + from, n);
    ASSERT_NE(hit, nullptr) << c.len << " at " << c.at;
    static_cast<uint8_t*>(hit)[c.at - from] ^= 8;
    EXPECT_FALSE(cache->Lookup(Key(b), got.data(), c.len)) << c.len << " at " << c.at;
    EXPECT_FALSE(cache->Lookup(Key(b), got.data(), c.len)) << "the bad entry was dropped";
  }
  ::munmap(map, geo->segment_size);
  EXPECT_EQ(cache->Stats().invalid, std::size(cases));
}

void DieAt(const char* point, const char* wanted) {
  if (std::strcmp(point, wanted) == 0) ::raise(SIGKILL);
}
void DieLocked(const char* point) { DieAt(point, "locked"); }
void DieMidCopy(const char* point) { DieAt(point, "mid-copy"); }

// A participant killed while holding a shard lock, or halfway through copying
// a block in, neither blocks the others nor leaves them a torn block.
TEST(ShmCacheTest, KilledHolderNeitherHangsNorTears) {
  std::string prefix = UniquePrefix();
  SegmentCleanup cleanup(prefix);
  auto cache = MustAttach(2 << 20, prefix);  // one shard: every key meets the dead lock
  ASSERT_TRUE(cache);
  const size_t kLen = 256 << 10;
  auto good = Content(Key(1), kLen);
  cache->Insert(Key(1), good.data(), kLen);

  for (auto hook : {&DieLocked, &DieMidCopy}) {
    pid_t child = Spawn([&] {
      AttachOptions o = Opts(prefix);
      o.test_hook = hook;
      AttachInfo info;
      auto r = ShmCache::Attach(2 << 20, &info, o);
      if (!r.ok()) return 1;
      auto bad = Content(Key(2), kLen, 9);
      (*r)->Insert(Key(2), bad.data(), kLen);  // dies inside
      return 2;
    });
    ASSERT_EQ(WaitExit(child), 128 + SIGKILL);
    uint64_t before = NowMs();
    std::vector<uint8_t> buf(kLen);
    EXPECT_FALSE(cache->Lookup(Key(2), buf.data(), kLen));  // never the torn block
    EXPECT_LT(NowMs() - before, 1000u);                     // recovered, not timed out
    // The shard was reset: it is empty but usable.
    EXPECT_FALSE(cache->Lookup(Key(1), buf.data(), kLen));
    cache->Insert(Key(1), good.data(), kLen);
    ASSERT_TRUE(cache->Lookup(Key(1), buf.data(), kLen));
    EXPECT_EQ(buf, good);
  }
  CacheStats st = cache->Stats();
  EXPECT_EQ(st.recoveries, 2u);
  EXPECT_EQ(st.lock_timeouts, 0u);
}

// The kill test: two workers loop over keys checking every hit while a third
// participant is SIGKILLed again and again at random moments (usually inside
// Insert, holding the only shard's lock, copying a large block).
TEST(ShmCacheTest, KillTest) {
  std::string prefix = UniquePrefix();
  SegmentCleanup cleanup(prefix);
  const uint64_t kSize = 4 << 20;  // one shard
  const int kKills = 50;
  // Set by the parent after the last kill; the workers run until then.
  void* flag_mem = ::mmap(nullptr, sizeof(std::atomic<int>), PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(flag_mem, MAP_FAILED);
  auto* stop = new (flag_mem) std::atomic<int>(0);
  auto len_of = [](uint64_t b) { return size_t{64 << 10} << (b % 5); };  // 64 KiB .. 1 MiB
  std::vector<std::vector<uint8_t>> contents;  // shared with every child (copy on write)
  for (uint64_t b = 0; b < 48; ++b) contents.push_back(Content(Key(b), len_of(b)));

  // The parent takes part too, to read the counters at the end.
  auto observer = MustAttach(kSize, prefix);
  ASSERT_TRUE(observer);
  std::vector<pid_t> workers;
  for (int w = 0; w < 2; ++w) {
    workers.push_back(Spawn([&, w] {
      ::alarm(240);  // a hang anywhere fails the test with SIGALRM
      AttachInfo info;
      auto r = ShmCache::Attach(kSize, &info, Opts(prefix));
      if (!r.ok()) return 1;
      std::mt19937_64 rng(100 + w);
      std::vector<uint8_t> buf(1 << 20);
      for (int op = 0; op < 500 || stop->load() == 0; ++op) {
        uint64_t b = rng() % 24;
        size_t len = len_of(b);
        uint64_t start = NowMs();
        if ((*r)->Lookup(Key(b), buf.data(), len)) {
          if (std::memcmp(buf.data(), contents[b].data(), len) != 0) return 2;
        } else {
          (*r)->Insert(Key(b), contents[b].data(), len);
        }
        if (NowMs() - start > 3000) return 3;  // an operation blocked
      }
      return 0;
    }));
  }
  // The victim spends most of its time holding the shard lock copying blocks.
  auto victim = [&] {
    AttachInfo info;
    auto r = ShmCache::Attach(kSize, &info, Opts(prefix));
    if (!r.ok()) return 1;
    std::mt19937_64 rng(::getpid());
    std::vector<uint8_t> buf(1 << 20);
    for (;;) {
      uint64_t b = rng() % 48;
      (*r)->Insert(Key(b), contents[b].data(), len_of(b));
      (void)(*r)->Lookup(Key(b), buf.data(), len_of(b));
    }
  };
  std::mt19937_64 rng(7);
  int kills = 0;
  auto workers_running = [&] {
    for (pid_t w : workers) {
      siginfo_t si{};
      if (::waitid(P_PID, static_cast<id_t>(w), &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
          si.si_pid == 0) {
        return true;
      }
    }
    return false;
  };
  while (kills < kKills && workers_running()) {
    pid_t v = Spawn(victim);
    ::usleep(static_cast<useconds_t>(1000 + rng() % 10000));
    ::kill(v, SIGKILL);
    EXPECT_EQ(WaitExit(v), 128 + SIGKILL);
    ++kills;
  }
  stop->store(1);
  for (pid_t w : workers) EXPECT_EQ(WaitExit(w), 0) << "worker " << w;
  CacheStats st = observer->Stats();
  std::printf(
      "kill test: %d kills, %llu shard recoveries, %llu hits, %llu invalid, %llu slow lock "
      "waits\n",
      kills, static_cast<unsigned long long>(st.recoveries),
      static_cast<unsigned long long>(st.hits), static_cast<unsigned long long>(st.invalid),
      static_cast<unsigned long long>(st.slow_lock_waits));
  EXPECT_EQ(kills, kKills);      // the workers were alive throughout
  EXPECT_GT(st.recoveries, 0u);  // some victims did die holding the lock
  EXPECT_GT(st.hits, 0u);
  EXPECT_EQ(st.lock_timeouts, 0u);

  // Everyone else is gone: the last detach sees only dead victims and
  // removes the segment.
  observer.reset();
  EXPECT_FALSE(SegmentExists(prefix));
  ::munmap(flag_mem, sizeof(std::atomic<int>));
}

}  // namespace
}  // namespace hexz::cache
