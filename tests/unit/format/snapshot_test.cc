// Round trips, thin chains, errors, block-level access and the writer's
// atomic output.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include "common/base/endian.h"
#include "common/cache/block_cache.h"
#include "common/format/layout.h"
#include "common/io/file.h"
#include "common/io/source.h"
#include "tests/unit/format/format_test_util.h"

namespace hexz::format {
namespace {

using namespace testing;  // NOLINT

bool Contains(const Status& st, const std::string& text) {
  return st.message().find(text) != std::string::npos;
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  closedir(d);
  return out;
}

struct RoundTripCase {
  Codec codec;
  uint32_t block_size;
};

class RoundTripTest : public ::testing::TestWithParam<RoundTripCase> {};

TEST_P(RoundTripTest, EveryKindOfData) {
  TempDir dir;
  const auto [codec, bs] = GetParam();
  // Sizes not a multiple of the block size; zero, random, repeated, text.
  Bytes disk;
  Bytes r = RandomBytes(2 * bs + 123, 1);
  Bytes z(3 * bs + 7, 0);
  Bytes rep = RepeatedBytes(5 * bs, bs, 2);
  Bytes t = TextBytes(2 * bs + 999, 3);
  for (const Bytes* b : {&rep, &r, &z, &t}) disk.insert(disk.end(), b->begin(), b->end());
  Bytes memory = TextBytes(bs / 2 + 5, 4);
  WriterOptions o;
  o.codec = codec;
  o.block_size = bs;
  o.threads = 3;
  std::string path = dir / "rt.st";
  SnapshotId id = PackBuffers(path, disk, memory, o);
  auto snap = Snapshot::Open(path);
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  EXPECT_EQ((*snap)->id(), id);
  EXPECT_EQ((*snap)->block_size(), bs);
  EXPECT_EQ(ReadAll(**snap, StreamId::kDisk), disk);
  EXPECT_EQ(ReadAll(**snap, StreamId::kMemory), memory);
  StreamStats st = (*snap)->Stats(StreamId::kDisk);
  EXPECT_GE(st.zero_blocks, 2u);
  EXPECT_GE(st.dedup_blocks, 2u);
  EXPECT_EQ(st.logical_size, disk.size());
  // Unaligned reads at assorted offsets.
  uint64_t seed = 9;
  for (int i = 0; i < 20; ++i) {
    uint64_t off = Mix(&seed) % disk.size();
    uint64_t len = Mix(&seed) % std::min<uint64_t>(disk.size() - off, 3 * bs + 17);
    Bytes got(len);
    ASSERT_TRUE((*snap)->Read(StreamId::kDisk, off, got.data(), len).ok());
    EXPECT_TRUE(std::equal(got.begin(), got.end(), disk.begin() + off));
  }
  EXPECT_TRUE((*snap)->Verify().ok());
  // Past the end.
  uint8_t b;
  EXPECT_EQ((*snap)->Read(StreamId::kDisk, disk.size(), &b, 1).code(), base::Code::kOutOfRange);
  EXPECT_EQ((*snap)->Read(StreamId::kDisk, UINT64_MAX, &b, 2).code(), base::Code::kOutOfRange);
}

INSTANTIATE_TEST_SUITE_P(
    CodecsAndBlockSizes, RoundTripTest,
    ::testing::Values(RoundTripCase{Codec::kLz4, 4096}, RoundTripCase{Codec::kLz4, 65536},
                      RoundTripCase{Codec::kZstd, 16384}, RoundTripCase{Codec::kZstd, 1 << 20},
                      RoundTripCase{Codec::kRaw, 4096}, RoundTripCase{Codec::kRaw, 1 << 20},
                      RoundTripCase{Codec::kLz4, 1 << 20}, RoundTripCase{Codec::kZstd, 4096}),
    [](const ::testing::TestParamInfo<RoundTripCase>& info) {
      return std::string(CodecName(info.param.codec)) + "_" + std::to_string(info.param.block_size);
    });

TEST(SnapshotTest, EmptyMemoryStreamAndNoMemory) {
  TempDir dir;
  Bytes disk = TextBytes(10000, 5);
  PackBuffers(dir / "a.st", disk, Bytes{});
  PackBuffers(dir / "b.st", disk, std::nullopt);
  auto a = Snapshot::Open(dir / "a.st");
  auto b = Snapshot::Open(dir / "b.st");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE((*a)->HasStream(StreamId::kMemory));
  EXPECT_EQ((*a)->StreamSize(StreamId::kMemory), 0u);
  EXPECT_FALSE((*b)->HasStream(StreamId::kMemory));
  uint8_t x;
  EXPECT_EQ((*b)->Read(StreamId::kMemory, 0, &x, 0).code(), base::Code::kNotFound);
  EXPECT_EQ(ReadAll(**a, StreamId::kDisk), disk);
}

TEST(SnapshotTest, LevelsAndLz4Hc) {
  TempDir dir;
  Bytes disk = TextBytes(200000, 6);
  for (auto [codec, level] : {std::pair{Codec::kLz4, 9}, std::pair{Codec::kZstd, 19}}) {
    WriterOptions o;
    o.codec = codec;
    o.level = level;
    PackBuffers(dir / "l.st", disk, std::nullopt, o);
    auto s = Snapshot::Open(dir / "l.st");
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(ReadAll(**s, StreamId::kDisk), disk);
  }
  WriterOptions bad;
  bad.block_size = 3000;
  EXPECT_FALSE(SnapshotWriter::Create(dir / "x.st", bad).ok());
  bad.block_size = 2 << 20;
  EXPECT_FALSE(SnapshotWriter::Create(dir / "x.st", bad).ok());
  bad = {};
  bad.codec = Codec::kZstd;
  bad.level = 40;
  EXPECT_FALSE(SnapshotWriter::Create(dir / "x.st", bad).ok());
}

// A thin child over a parent: some blocks new, some zero, the rest inherited.
struct Chain {
  Bytes parent_disk, child_disk;
  SnapshotId parent_id;
};

Chain MakeChain(const TempDir& dir, const std::string& parent_name, const std::string& child_name,
                uint32_t bs = 4096) {
  Chain c;
  c.parent_disk = RandomBytes(10 * bs + 100, 11);
  WriterOptions o;
  o.block_size = bs;
  c.parent_id = PackBuffers(dir / parent_name, c.parent_disk, TextBytes(bs, 12), o);
  c.child_disk = c.parent_disk;
  auto w = SnapshotWriter::Create(dir / child_name, o);
  EXPECT_TRUE(w.ok());
  EXPECT_TRUE((*w)->SetParent(parent_name, c.parent_id).ok());
  EXPECT_TRUE((*w)->BeginStream(StreamId::kDisk, c.child_disk.size()).ok());
  for (uint64_t b = 0; b < 11; ++b) {
    uint32_t len = static_cast<uint32_t>(std::min<uint64_t>(bs, c.child_disk.size() - b * bs));
    if (b % 3 == 0) {
      Bytes fresh = TextBytes(len, 100 + b);
      std::copy(fresh.begin(), fresh.end(), c.child_disk.begin() + b * bs);
      EXPECT_TRUE((*w)->AddData(fresh.data(), len).ok());
    } else if (b == 4) {
      std::fill_n(c.child_disk.begin() + b * bs, len, 0);
      EXPECT_TRUE((*w)->AddZero().ok());
    } else {
      EXPECT_TRUE((*w)->AddParent().ok());
    }
  }
  EXPECT_TRUE((*w)->EndStream().ok());
  EXPECT_TRUE((*w)->Finish().ok());
  return c;
}

TEST(ThinTest, ReadsThroughParentAndMovesTogether) {
  TempDir dir;
  Chain c = MakeChain(dir, "base.st", "child.st");
  auto s = Snapshot::Open(dir / "child.st");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(ReadAll(**s, StreamId::kDisk), c.child_disk);
  EXPECT_EQ((*s)->parent_path(), "base.st");
  EXPECT_EQ((*s)->parent()->id(), c.parent_id);
  EXPECT_EQ((*s)->Stats(StreamId::kDisk).parent_blocks, 6u);
  EXPECT_FALSE((*s)->HasStream(StreamId::kMemory));
  EXPECT_TRUE((*s)->Verify().ok());
  EXPECT_EQ((*s)->ChainNames().size(), 2u);

  // Move both into a subdirectory: the parent is found relative to the child.
  std::string sub = dir / "moved";
  ASSERT_EQ(mkdir(sub.c_str(), 0755), 0);
  ASSERT_EQ(rename((dir / "base.st").c_str(), (sub + "/base.st").c_str()), 0);
  ASSERT_EQ(rename((dir / "child.st").c_str(), (sub + "/child.st").c_str()), 0);
  auto moved = Snapshot::Open(sub + "/child.st");
  ASSERT_TRUE(moved.ok()) << moved.status().ToString();
  EXPECT_EQ(ReadAll(**moved, StreamId::kDisk), c.child_disk);

  // The chain handed over as descriptors reads the same.
  auto fds = (*moved)->DupChainFds();
  ASSERT_TRUE(fds.ok());
  auto via_fds = Snapshot::OpenFds(std::move(*fds), (*moved)->ChainNames());
  ASSERT_TRUE(via_fds.ok()) << via_fds.status().ToString();
  EXPECT_EQ(ReadAll(**via_fds, StreamId::kDisk), c.child_disk);

  // Extents: block 4 is a hole, inherited data is data.
  std::vector<io::Extent> ext;
  ASSERT_TRUE((*moved)->Extents(StreamId::kDisk, 0, c.child_disk.size(), &ext).ok());
  bool saw_hole = false;
  uint64_t covered = 0;
  for (const io::Extent& e : ext) {
    EXPECT_EQ(e.offset, covered);
    covered += e.length;
    if (e.hole) {
      saw_hole = true;
      EXPECT_EQ(e.offset, 4u * 4096);
    }
  }
  EXPECT_EQ(covered, c.child_disk.size());
  EXPECT_TRUE(saw_hole);
}

TEST(ThinTest, MissingWrongAndLoopingParentsEachHaveTheirOwnError) {
  TempDir dir;
  MakeChain(dir, "base.st", "child.st");
  // Wrong parent: same name, different id.
  ASSERT_EQ(rename((dir / "base.st").c_str(), (dir / "base.orig").c_str()), 0);
  WriterOptions o;
  o.block_size = 4096;
  PackBuffers(dir / "base.st", RandomBytes(10 * 4096 + 100, 11), std::nullopt, o);
  auto wrong = Snapshot::Open(dir / "child.st");
  ASSERT_FALSE(wrong.ok());
  EXPECT_TRUE(Contains(wrong.status(), "has id")) << wrong.status().ToString();
  EXPECT_TRUE(Contains(wrong.status(), "child.st"));
  // Missing parent.
  unlink((dir / "base.st").c_str());
  OpenOptions alone;
  alone.skip_parents = true;
  auto self = Snapshot::Open(dir / "child.st", alone);
  ASSERT_TRUE(self.ok()) << self.status().ToString();
  EXPECT_EQ((*self)->parent(), nullptr);
  EXPECT_EQ((*self)->parent_path(), "base.st");
  uint8_t blk[4096];
  EXPECT_TRUE((*self)->ReadBlock(StreamId::kDisk, 0, blk).ok());
  EXPECT_EQ((*self)->ReadBlock(StreamId::kDisk, 1, blk).code(), base::Code::kUnavailable);
  auto missing = Snapshot::Open(dir / "child.st");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), base::Code::kNotFound);
  EXPECT_TRUE(Contains(missing.status(), "parent base.st")) << missing.status().ToString();
  EXPECT_TRUE(Contains(missing.status(), "not found"));
  // A snapshot that names itself as its parent.
  auto w = SnapshotWriter::Create(dir / "self.st", o);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->SetParent("self.st", (*w)->id()).ok());
  ASSERT_TRUE((*w)->BeginStream(StreamId::kDisk, 4096).ok());
  ASSERT_TRUE((*w)->AddParent().ok());
  ASSERT_TRUE((*w)->EndStream().ok());
  ASSERT_TRUE((*w)->Finish().ok());
  auto loop = Snapshot::Open(dir / "self.st");
  ASSERT_FALSE(loop.ok());
  EXPECT_TRUE(Contains(loop.status(), "loops")) << loop.status().ToString();
}

TEST(ThinTest, DepthLimit) {
  TempDir dir;
  MakeChain(dir, "base.st", "child.st");
  OpenOptions o;
  o.max_chain_depth = 0;
  auto s = Snapshot::Open(dir / "child.st", o);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s.status(), "too deep")) << s.status().ToString();
  o.max_chain_depth = 1;
  EXPECT_TRUE(Snapshot::Open(dir / "child.st", o).ok());
}

TEST(ThinTest, StoredBlocksCopyVerbatim) {
  TempDir dir;
  Chain c = MakeChain(dir, "base.st", "child.st");
  auto s = Snapshot::Open(dir / "child.st");
  ASSERT_TRUE(s.ok());
  // Flatten the chain into a standalone snapshot without recompressing.
  WriterOptions o;
  o.block_size = 4096;
  o.codec = Codec::kZstd;  // would differ from the parent's lz4 if recompressed
  auto w = SnapshotWriter::Create(dir / "flat.st", o);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(CopyStream(w->get(), **s, StreamId::kDisk).ok());
  ASSERT_TRUE((*w)->Finish().ok());
  auto flat = Snapshot::Open(dir / "flat.st");
  ASSERT_TRUE(flat.ok());
  EXPECT_EQ(ReadAll(**flat, StreamId::kDisk), c.child_disk);
  EXPECT_EQ((*flat)->parent(), nullptr);
  for (uint64_t b = 0; b < (*flat)->BlockCount(StreamId::kDisk); ++b) {
    auto e = (*flat)->GetBlockEntry(StreamId::kDisk, b);
    ASSERT_TRUE(e.ok());
    EXPECT_NE(e->codec, Codec::kZstd) << "block " << b << " was recompressed";
  }
  auto sb = (*s)->ReadStoredBlock(StreamId::kDisk, 0);
  ASSERT_TRUE(sb.ok());
  EXPECT_EQ(sb->kind, BlockKind::kStored);
  auto pb = (*s)->ReadStoredBlock(StreamId::kDisk, 1);
  ASSERT_TRUE(pb.ok());
  EXPECT_EQ(pb->kind, BlockKind::kParent);
  // A stored block with a bad checksum is refused by the writer.
  auto w2 = SnapshotWriter::Create(dir / "bad.st", o);
  ASSERT_TRUE(w2.ok());
  ASSERT_TRUE((*w2)->BeginStream(StreamId::kDisk, 4096).ok());
  StoredBlock broken = *sb;
  broken.checksum ^= 1;
  Status st = (*w2)->AddStored(broken);
  if (st.ok()) st = (*w2)->EndStream();
  if (st.ok()) st = (*w2)->Finish().status();
  EXPECT_FALSE(st.ok());
  w2->reset();
  EXPECT_EQ(ListDir(dir.path()).size(), 3u);  // base, child, flat; no bad.st, no temp
}

class CountingCache : public cache::BlockCache {
 public:
  bool Lookup(const cache::BlockKey& key, void* dst, size_t len) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++lookups;
    auto it = map_.find(Key(key));
    if (it == map_.end() || it->second.size() != len) return false;
    std::memcpy(dst, it->second.data(), len);
    ++hits;
    return true;
  }
  void Insert(const cache::BlockKey& key, const void* src, size_t len) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++inserts;
    map_[Key(key)] =
        Bytes(static_cast<const uint8_t*>(src), static_cast<const uint8_t*>(src) + len);
  }
  int lookups = 0, hits = 0, inserts = 0;

 private:
  static std::string Key(const cache::BlockKey& k) {
    return std::string(k.snapshot_id.begin(), k.snapshot_id.end()) + std::to_string(k.stream) +
           "/" + std::to_string(k.block);
  }
  std::mutex mu_;
  std::map<std::string, Bytes> map_;
};

TEST(SnapshotTest, UsesTheBlockCacheKeyedByTheStoringFile) {
  TempDir dir;
  Chain c = MakeChain(dir, "base.st", "child.st");
  CountingCache cache;
  OpenOptions o;
  o.cache = &cache;
  auto s = Snapshot::Open(dir / "child.st", o);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(ReadAll(**s, StreamId::kDisk), c.child_disk);
  EXPECT_GT(cache.inserts, 0);
  EXPECT_EQ(cache.hits, 0);
  EXPECT_EQ(ReadAll(**s, StreamId::kDisk), c.child_disk);
  EXPECT_EQ(cache.hits, cache.inserts);
}

// Reads smaller than the block (128 KiB FUSE reads of 256 KiB blocks) decode
// each block once when they come in order, also without a cache (the cache
// here counts decodes and never hits); parts of other blocks and of the
// other stream in between still read the right bytes.
class DecodeCounter : public cache::BlockCache {
 public:
  bool Lookup(const cache::BlockKey&, void*, size_t) override { return false; }
  void Insert(const cache::BlockKey&, const void*, size_t) override { ++decodes; }
  std::atomic<int> decodes{0};
};

TEST(SnapshotTest, PartsOfABlockReadInOrderDecodeItOnce) {
  TempDir dir;
  constexpr uint32_t kBs = 256 * 1024;
  Bytes disk = TextBytes(4 * kBs, 11);
  Bytes memory = RandomBytes(kBs, 12);
  WriterOptions wo;
  wo.block_size = kBs;
  PackBuffers(dir / "big.st", disk, memory, wo);
  DecodeCounter counter;
  OpenOptions o;
  o.cache = &counter;
  auto snap = Snapshot::Open(dir / "big.st", o);
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  constexpr size_t kPart = 128 * 1024;
  Bytes got(disk.size());
  for (size_t off = 0; off < disk.size(); off += kPart) {
    ASSERT_TRUE((*snap)->Read(StreamId::kDisk, off, got.data() + off, kPart).ok());
  }
  EXPECT_EQ(got, disk);
  EXPECT_EQ(counter.decodes.load(), 4);

  // Alternating between blocks and streams: each switch decodes again, and
  // every part is right.
  Bytes a(kPart), b(kPart);
  ASSERT_TRUE((*snap)->Read(StreamId::kDisk, kBs, a.data(), kPart).ok());
  ASSERT_TRUE((*snap)->Read(StreamId::kMemory, 0, b.data(), kPart).ok());
  EXPECT_TRUE(std::equal(a.begin(), a.end(), disk.begin() + kBs));
  EXPECT_TRUE(std::equal(b.begin(), b.end(), memory.begin()));
  ASSERT_TRUE((*snap)->Read(StreamId::kDisk, kBs + kPart, a.data(), kPart).ok());
  EXPECT_TRUE(std::equal(a.begin(), a.end(), disk.begin() + kBs + kPart));
  ASSERT_TRUE((*snap)->Read(StreamId::kMemory, kPart, b.data(), kPart).ok());
  EXPECT_TRUE(std::equal(b.begin(), b.end(), memory.begin() + kPart));
}

// A source with a damaged local copy (a disk cache): ReadAt flips a byte at
// `damage`; ReadFreshAt reads the file, or the damaged copy again when the
// server is bad too.
class DamagedCopySource final : public io::Source {
 public:
  DamagedCopySource(std::unique_ptr<io::Source> inner, uint64_t damage, bool fresh_bad)
      : inner_(std::move(inner)), damage_(damage), fresh_bad_(fresh_bad) {}
  const std::string& name() const override { return inner_->name(); }
  uint64_t size() const override { return inner_->size(); }
  std::string identity() const override { return inner_->identity(); }
  Status ReadAt(void* buf, size_t len, uint64_t offset) const override {
    HEXZ_RETURN_IF_ERROR(inner_->ReadAt(buf, len, offset));
    if (damage_ >= offset && damage_ < offset + len)
      static_cast<uint8_t*>(buf)[damage_ - offset] ^= 1;
    return Status::Ok();
  }
  bool has_fresh_read() const override { return true; }
  Status ReadFreshAt(void* buf, size_t len, uint64_t offset) const override {
    ++fresh_reads;
    return fresh_bad_ ? ReadAt(buf, len, offset) : inner_->ReadAt(buf, len, offset);
  }
  mutable std::atomic<int> fresh_reads{0};

 private:
  std::unique_ptr<io::Source> inner_;
  uint64_t damage_;
  bool fresh_bad_;
};

TEST(SnapshotTest, ABlockDamagedInTheSourcesCopyIsReadFreshOnce) {
  TempDir dir;
  // Random bytes are stored raw, text compressed: both read paths.
  for (bool text : {false, true}) {
    Bytes disk = text ? TextBytes(4 * 4096, 22) : RandomBytes(4 * 4096, 21);
    WriterOptions o;
    o.block_size = 4096;
    PackBuffers(dir / "s.st", disk, {}, o);
    auto plain = Snapshot::Open(dir / "s.st");
    ASSERT_TRUE(plain.ok());
    const uint64_t at = (*plain)->GetBlockEntry(StreamId::kDisk, 2)->offset + 1;
    for (bool fresh_bad : {false, true}) {
      auto file = io::FileSource(io::OpenFile(dir / "s.st", O_RDONLY).value(), dir / "s.st");
      ASSERT_TRUE(file.ok());
      auto src = std::make_unique<DamagedCopySource>(std::move(*file), at, fresh_bad);
      const DamagedCopySource* raw = src.get();
      std::vector<std::unique_ptr<io::Source>> chain;
      chain.push_back(std::move(src));
      auto s = Snapshot::OpenSources(std::move(chain));
      ASSERT_TRUE(s.ok()) << s.status().ToString();
      Bytes got(4096);
      Status st = (*s)->Read(StreamId::kDisk, 2 * 4096, got.data(), got.size());
      EXPECT_EQ(raw->fresh_reads, 1);
      if (fresh_bad) {
        EXPECT_EQ(st.code(), base::Code::kCorruption);
        EXPECT_TRUE(Contains(st, "disk block 2 checksum mismatch")) << st.ToString();
        EXPECT_TRUE(Contains(st, "past the disk cache")) << st.ToString();
      } else {
        ASSERT_TRUE(st.ok()) << st.ToString();
        EXPECT_EQ(got, Bytes(disk.begin() + 2 * 4096, disk.begin() + 3 * 4096));
      }
    }
  }
  // A local file has no fresher copy: a damaged block fails at once, as before.
  Bytes file = ReadFile(dir / "s.st");
  file[Snapshot::Open(dir / "s.st").value()->GetBlockEntry(StreamId::kDisk, 1)->offset + 1] ^= 1;
  WriteFile(dir / "bad.st", file);
  auto s = Snapshot::Open(dir / "bad.st");
  ASSERT_TRUE(s.ok());
  Bytes got(4096);
  Status st = (*s)->Read(StreamId::kDisk, 4096, got.data(), got.size());
  EXPECT_EQ(st.code(), base::Code::kCorruption);
  EXPECT_FALSE(Contains(st, "past the disk cache")) << st.ToString();
}

// A child shorter than its parent: its last block is inherited but shorter
// than the parent's block, so a (partial) read of it reads a part of the
// parent's block in turn, from several threads at once.
TEST(ThinTest, PartialReadsOfAShorterInheritedLastBlock) {
  TempDir dir;
  const uint32_t bs = 4096;
  Bytes parent_disk = RandomBytes(8 * bs, 21);
  WriterOptions o;
  o.block_size = bs;
  SnapshotId parent_id = PackBuffers(dir / "base.st", parent_disk, {}, o);
  Bytes child_disk(parent_disk.begin(), parent_disk.begin() + 3 * bs + 1000);
  {
    auto w = SnapshotWriter::Create(dir / "child.st", o);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->SetParent("base.st", parent_id).ok());
    ASSERT_TRUE((*w)->BeginStream(StreamId::kDisk, child_disk.size()).ok());
    Bytes fresh = TextBytes(bs, 22);
    std::copy(fresh.begin(), fresh.end(), child_disk.begin() + bs);
    ASSERT_TRUE((*w)->AddParent().ok());
    ASSERT_TRUE((*w)->AddData(fresh.data(), bs).ok());
    ASSERT_TRUE((*w)->AddParent().ok());
    ASSERT_TRUE((*w)->AddParent().ok());  // 1000 bytes here, 4096 in the parent
    ASSERT_TRUE((*w)->EndStream().ok());
    ASSERT_TRUE((*w)->Finish().ok());
  }
  CountingCache cache;
  OpenOptions with_cache;
  with_cache.cache = &cache;
  const std::vector<std::pair<uint64_t, size_t>> ranges = {{3 * bs + 10, 500},
                                                           {3 * bs, 999},
                                                           {3 * bs + 999, 1},
                                                           {bs + 7, 2 * bs + 900},
                                                           {0, 3 * bs + 1000}};
  for (const OpenOptions& oo : {OpenOptions{}, with_cache}) {
    auto s = Snapshot::Open(dir / "child.st", oo);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    for (int pass = 0; pass < 2; ++pass) {  // the second pass hits the cache
      EXPECT_EQ(ReadAll(**s, StreamId::kDisk), child_disk);
      std::atomic<int> bad{0};
      std::vector<std::thread> threads;
      for (int t = 0; t < 3; ++t) {
        threads.emplace_back([&] {
          for (auto [off, len] : ranges) {
            Bytes got(len, 0xee);
            if (!(*s)->Read(StreamId::kDisk, off, got.data(), len).ok() ||
                got != Bytes(child_disk.begin() + off, child_disk.begin() + off + len))
              ++bad;
          }
        });
      }
      for (auto& t : threads) t.join();
      EXPECT_EQ(bad.load(), 0);
    }
    Bytes last(1000);
    ASSERT_TRUE((*s)->ReadBlock(StreamId::kDisk, 3, last.data()).ok());
    EXPECT_EQ(last, Bytes(child_disk.begin() + 3 * bs, child_disk.end()));
  }
  EXPECT_GT(cache.hits, 0);
}

TEST(SnapshotTest, UserErrorsNameThePath) {
  TempDir dir;
  auto missing = Snapshot::Open(dir / "nope.st");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), base::Code::kNotFound);
  EXPECT_TRUE(Contains(missing.status(), "nope.st"));

  WriteFile(dir / "text.st", TextBytes(5000, 1));
  auto notsnap = Snapshot::Open(dir / "text.st");
  ASSERT_FALSE(notsnap.ok());
  EXPECT_TRUE(Contains(notsnap.status(), "text.st: not a hexz snapshot"))
      << notsnap.status().ToString();

  Bytes disk = TextBytes(50000, 2);
  PackBuffers(dir / "good.st", disk, std::nullopt);
  Bytes file = ReadFile(dir / "good.st");
  Bytes truncated(file.begin(), file.end() - 100);
  WriteFile(dir / "trunc.st", truncated);
  auto tr = Snapshot::Open(dir / "trunc.st");
  ASSERT_FALSE(tr.ok());
  EXPECT_EQ(tr.status().code(), base::Code::kCorruption);
  EXPECT_TRUE(Contains(tr.status(), "trunc.st: no footer")) << tr.status().ToString();
  EXPECT_TRUE(Contains(tr.status(), "truncated"));

  Bytes newer = file;
  base::PutLe32(newer.data() + layout::kHeaderVersionAt, 2);
  ResealHeader(&newer);
  WriteFile(dir / "newer.st", newer);
  auto nv = Snapshot::Open(dir / "newer.st");
  ASSERT_FALSE(nv.ok());
  EXPECT_EQ(nv.status().code(), base::Code::kUnsupported);
  EXPECT_TRUE(Contains(nv.status(), "newer.st: format version 2 is newer"))
      << nv.status().ToString();

  Bytes flags = file;
  base::PutLe32(flags.data() + layout::kHeaderFlagsAt, 1u << 7);
  ResealHeader(&flags);
  WriteFile(dir / "flags.st", flags);
  auto fl = Snapshot::Open(dir / "flags.st");
  ASSERT_FALSE(fl.ok());
  EXPECT_TRUE(Contains(fl.status(), "unknown feature flags")) << fl.status().ToString();

  // Unused hint bits are ignored (the checksum still covers them).
  Bytes hints = file;
  base::PutLe32(hints.data() + layout::kHeaderHintsAt, 0xdeadbeef);
  ResealHeader(&hints);
  WriteFile(dir / "hints.st", hints);
  auto hi = Snapshot::Open(dir / "hints.st");
  ASSERT_TRUE(hi.ok()) << hi.status().ToString();
  EXPECT_EQ(ReadAll(**hi, StreamId::kDisk), disk);

  Bytes empty;
  WriteFile(dir / "empty.st", empty);
  EXPECT_TRUE(Contains(Snapshot::Open(dir / "empty.st").status(), "not a hexz snapshot"));
}

TEST(WriterTest, AbortAndCancelLeaveNothingBehind) {
  TempDir dir;
  {
    auto w = SnapshotWriter::Create(dir / "a.st", {});
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->BeginStream(StreamId::kDisk, 100000).ok());
    Bytes d = TextBytes(65536, 1);
    ASSERT_TRUE((*w)->AddData(d.data(), d.size()).ok());
    EXPECT_EQ(ListDir(dir.path()).size(), 1u);  // the temp file
  }
  EXPECT_TRUE(ListDir(dir.path()).empty());
  std::atomic<bool> cancel{false};
  WriterOptions o;
  o.cancel = &cancel;
  auto w = SnapshotWriter::Create(dir / "b.st", o);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->BeginStream(StreamId::kDisk, 1 << 20).ok());
  Bytes d = TextBytes(65536, 1);
  ASSERT_TRUE((*w)->AddData(d.data(), d.size()).ok());
  cancel = true;
  EXPECT_EQ((*w)->AddData(d.data(), d.size()).code(), base::Code::kCancelled);
  w->reset();
  EXPECT_TRUE(ListDir(dir.path()).empty());
}

TEST(WriterTest, AStreamThatCannotFitTheIndexIsRefusedWhenItBegins) {
  TempDir dir;
  WriterOptions o;
  o.block_size = 4096;
  auto w = SnapshotWriter::Create(dir / "big.st", o);
  ASSERT_TRUE(w.ok());
  // 50 million blocks need 1.2 GB of index, over the format's 1 GiB.
  Status st = (*w)->BeginStream(StreamId::kDisk, 50'000'000ull * 4096);
  EXPECT_EQ(st.code(), base::Code::kNoSpace) << st.ToString();
  EXPECT_TRUE(Contains(st, "too many blocks for one index")) << st.ToString();
  EXPECT_TRUE(Contains(st, "--block-size")) << st.ToString();
  // The same size fits with 1 MiB blocks (195 thousand entries).
  w->reset();
  o.block_size = 1 << 20;
  w = SnapshotWriter::Create(dir / "big.st", o);
  ASSERT_TRUE(w.ok());
  EXPECT_TRUE((*w)->BeginStream(StreamId::kDisk, 50'000'000ull * 4096).ok());
}

TEST(WriterTest, PackStreamFromSparseFile) {
  TempDir dir;
  std::string img = dir / "sparse.img";
  auto fd = io::OpenFile(img, O_RDWR | O_CREAT | O_TRUNC, 0644);
  ASSERT_TRUE(fd.ok());
  ASSERT_EQ(ftruncate(fd->get(), 64 << 20), 0);
  Bytes d = TextBytes(100000, 3);
  ASSERT_TRUE(io::PwriteFull(fd->get(), d.data(), d.size(), 40 << 20, img).ok());
  auto w = SnapshotWriter::Create(dir / "s.st", {});
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(PackStream(w->get(), fd->get(), img, StreamId::kDisk, 64 << 20).ok());
  ASSERT_TRUE((*w)->Finish().ok());
  auto s = Snapshot::Open(dir / "s.st");
  ASSERT_TRUE(s.ok());
  Bytes want(64 << 20, 0);
  std::copy(d.begin(), d.end(), want.begin() + (40 << 20));
  EXPECT_EQ(ReadAll(**s, StreamId::kDisk), want);
  EXPECT_GE((*s)->Stats(StreamId::kDisk).zero_blocks, 1000u);
}

}  // namespace
}  // namespace hexz::format

namespace hexz::format {
namespace {

using namespace testing;  // NOLINT

TEST(SnapshotTest, ConcurrentReadersSeeTheSameBytes) {
  TempDir dir;
  Bytes disk = TextBytes(600000, 21);
  Bytes rnd = RandomBytes(200000, 22);
  disk.insert(disk.end(), rnd.begin(), rnd.end());
  WriterOptions o;
  o.block_size = 8192;
  PackBuffers(dir / "c.st", disk, std::nullopt, o);
  auto s = Snapshot::Open(dir / "c.st");
  ASSERT_TRUE(s.ok());
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      uint64_t seed = 100 + t;
      Bytes buf;
      for (int i = 0; i < 200; ++i) {
        uint64_t off = Mix(&seed) % disk.size();
        uint64_t len = Mix(&seed) % std::min<uint64_t>(disk.size() - off, 40000);
        buf.resize(len);
        if (!(*s)->Read(StreamId::kDisk, off, buf.data(), len).ok() ||
            !std::equal(buf.begin(), buf.end(), disk.begin() + off))
          ++bad;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST(WriterTest, OutputDoesNotDependOnThreadCount) {
  TempDir dir;
  Bytes disk = RepeatedBytes(300000, 4096, 31);
  Bytes text = TextBytes(300000, 32);
  disk.insert(disk.end(), text.begin(), text.end());
  WriterOptions o;
  o.block_size = 4096;
  o.id = SnapshotId{};
  o.threads = 1;
  PackBuffers(dir / "one.st", disk, text, o);
  o.threads = 4;
  PackBuffers(dir / "four.st", disk, text, o);
  EXPECT_EQ(ReadFile(dir / "one.st"), ReadFile(dir / "four.st"));
}

}  // namespace
}  // namespace hexz::format
