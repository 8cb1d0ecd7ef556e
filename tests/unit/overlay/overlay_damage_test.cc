// Damage versus crash (overlay format 2): a sweep of corruptions over a real
// overlay that has seen rewrites, zeroes and compactions. Every corruption
// must give exactly the written data or an error, never other data; a
// read-write open that refuses must leave both files byte-identical. Crash
// leftovers (torn tails, a torn superblock write) must still open.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <random>

#include "common/base/endian.h"
#include "common/overlay/overlay.h"
#include "common/overlay/overlay_files.h"
#include "common/overlay/overlay_layout.h"
#include "common/overlay/overlay_volume.h"
#include "tests/unit/overlay/overlay_test_util.h"

namespace hexz::overlay {
namespace {

using testing::MakeId;
using testing::MemVolume;
using testing::OpenPath;
using testing::RandomBytes;
using testing::Slurp;
using testing::Spit;
using testing::TempDir;
namespace L = layout;

constexpr uint64_t kBlocks = 48;
constexpr uint64_t kDisk = kBlocks * kBlockSize - 100;  // a short last block

struct Damaged : ::testing::Test {
  TempDir dir;
  std::string path = dir.File("d.ovl");
  std::string meta = path + ".meta";
  std::shared_ptr<MemVolume> base = std::make_shared<MemVolume>(RandomBytes(kDisk, 3));
  format::SnapshotId id = MakeId(0x5a);
  std::vector<uint8_t> model = base->Contents();  // the disk as of the last flush
  std::vector<uint8_t> data0, meta0;              // the files as written

  OverlayOptions Options() {
    OverlayOptions o;
    o.compact_min_bytes = 4096;  // compactions happen
    o.durable = false;
    return o;
  }

  // Writes, rewrites, zeroes and flushes until the log has been compacted
  // at least twice and holds deltas after its checkpoint.
  void Build(int flushes = 40) {
    auto ov = OpenPath(path, id, kDisk, Options());
    ASSERT_TRUE(ov.ok()) << ov.status().ToString();
    auto vol = OverlayVolume::Create(base, std::shared_ptr<Overlay>(std::move(ov).value()));
    ASSERT_TRUE(vol.ok());
    std::mt19937 rng(17);
    for (int f = 0; f < flushes; ++f) {
      for (int i = 0; i < 4; ++i) {
        uint64_t b = rng() % kBlocks;
        uint64_t off = b * kBlockSize;
        uint64_t len = std::min<uint64_t>(kBlockSize, kDisk - off);
        if (rng() % 6 == 0) {
          ASSERT_TRUE((*vol)->WriteZeroes(off, len, false).ok());
          std::fill(model.begin() + off, model.begin() + off + len, 0);
        } else {
          auto d = RandomBytes(len, rng());
          ASSERT_TRUE((*vol)->Write(off, d.data(), len, false).ok());
          std::copy(d.begin(), d.end(), model.begin() + off);
        }
      }
      ASSERT_TRUE((*vol)->Flush().ok());
    }
    OverlayStats s = (*vol)->overlay().Stats();
    if (flushes >= 40) {
      ASSERT_GE(s.generation, 3u);
      ASSERT_GE(s.records, 2u);
    }
    vol->reset();
    data0 = Slurp(path);
    meta0 = Slurp(meta);
  }

  // Opens (read-write unless ro) and reads every block. Returns "" when
  // the open was refused or every block read right or failed with
  // kCorruption; else what was wrong.
  std::string Check(bool ro, bool* opened = nullptr) {
    OverlayOptions o = Options();
    o.read_only = ro;
    auto ov = OpenPath(path, id, kDisk, o);
    if (opened != nullptr) *opened = ov.ok();
    if (!ov.ok()) {
      if (ov.status().code() != base::Code::kCorruption &&
          ov.status().code() != base::Code::kUnsupported) {
        return "open failed with an unexpected code: " + ov.status().ToString();
      }
      return "";
    }
    auto vol = OverlayVolume::Create(base, std::shared_ptr<Overlay>(std::move(ov).value()));
    if (!vol.ok()) return vol.status().ToString();
    std::vector<uint8_t> got(kBlockSize);
    for (uint64_t b = 0; b < kBlocks; ++b) {
      uint64_t off = b * kBlockSize;
      uint64_t len = std::min<uint64_t>(kBlockSize, kDisk - off);
      base::Status st = (*vol)->Read(off, got.data(), len);
      if (!st.ok()) {
        if (st.code() != base::Code::kCorruption || st.ToErrno() != EIO) {
          return "block " + std::to_string(b) + ": " + st.ToString();
        }
        continue;
      }
      if (!std::equal(got.begin(), got.begin() + len, model.begin() + off)) {
        return "block " + std::to_string(b) + " reads other data";
      }
    }
    return "";
  }

  // Restores the files, applies `corrupt`, and checks both opens. A refused
  // read-write open must leave the files as they were.
  void Sweep(const std::string& what, const std::function<void()>& corrupt) {
    Spit(path, data0);
    Spit(meta, meta0);
    corrupt();
    const std::vector<uint8_t> d1 = Slurp(path), m1 = Slurp(meta);
    std::string ro = Check(true);
    ASSERT_EQ(ro, "") << what << " (read-only)";
    bool opened = false;
    std::string rw = Check(false, &opened);
    ASSERT_EQ(rw, "") << what << " (read-write)";
    if (!opened) {
      ASSERT_TRUE(Slurp(path) == d1 && Slurp(meta) == m1) << what << ": a refused open wrote";
    }
  }

  static void Flip(const std::string& file, uint64_t off, uint8_t mask) {
    int fd = ::open(file.c_str(), O_RDWR);
    uint8_t b = 0;
    ASSERT_EQ(::pread(fd, &b, 1, static_cast<off_t>(off)), 1);
    b ^= mask;
    ASSERT_EQ(::pwrite(fd, &b, 1, static_cast<off_t>(off)), 1);
    ::close(fd);
  }

  uint64_t ActiveLogStart() const {
    uint64_t g0 = base::GetLe64(meta0.data() + 16), g1 = base::GetLe64(meta0.data() + 4096 + 16);
    return base::GetLe64(meta0.data() + (g0 > g1 ? 0 : 4096) + 72);
  }
};

TEST_F(Damaged, EveryHeaderByteAndRandomBitFlips) {
  Build();
  uint64_t flips = 0;
  for (uint64_t off = 0; off < L::kHeaderBytes; ++off) {
    Sweep("data header byte " + std::to_string(off),
          [&] { Flip(path, off, static_cast<uint8_t>(1u << (off % 8))); });
    for (uint64_t sb : L::kSuperblockOffset) {
      Sweep("superblock byte " + std::to_string(sb + off),
            [&] { Flip(meta, sb + off, static_cast<uint8_t>(1u << (off % 8))); });
    }
    flips += 3;
  }
  // Every byte of the active checkpoint (its header, entries and padding).
  const uint64_t start = ActiveLogStart();
  const uint64_t count = meta0[start + L::kRecordCountAt] | (meta0[start + 25] << 8);
  const uint64_t ckpt = (L::kRecordHeaderBytes + count * L::kEntryBytes + 511) / 512 * 512;
  ASSERT_GT(count, 10u);
  for (uint64_t off = start; off < start + ckpt; ++off) {
    Sweep("checkpoint byte " + std::to_string(off),
          [&] { Flip(meta, off, static_cast<uint8_t>(1u << (off % 8))); });
    ++flips;
  }
  // Random single-bit flips across the records and the data slots.
  std::mt19937 rng(2024);
  for (int i = 0; i < 400; ++i) {
    const bool in_data = i % 2 == 0;
    const std::string& file = in_data ? path : meta;
    uint64_t lo = in_data ? kBlockSize : L::kLogBase;
    uint64_t size = in_data ? data0.size() : meta0.size();
    uint64_t off = lo + rng() % (size - lo);
    uint8_t mask = static_cast<uint8_t>(1u << (rng() % 8));
    Sweep(std::string(in_data ? "data" : "meta") + " bit flip at " + std::to_string(off),
          [&] { Flip(file, off, mask); });
    ++flips;
  }
  EXPECT_GT(flips, 300u + 3 * L::kHeaderBytes);
}

TEST_F(Damaged, MidLogRecordIsDamageNamedAndKept) {
  Build();
  const uint64_t start = ActiveLogStart();
  const uint64_t count = meta0[start + L::kRecordCountAt] | (meta0[start + 25] << 8);
  const uint64_t first_delta = start + (L::kRecordHeaderBytes + count * 16 + 511) / 512 * 512;
  ASSERT_LT(first_delta + 512, meta0.size()) << "need two deltas after the checkpoint";
  Flip(meta, first_delta + 60, 0x10);  // an entry of the first delta
  const auto m1 = Slurp(meta), d1 = Slurp(path);
  auto ov = OpenPath(path, id, kDisk, Options());
  ASSERT_FALSE(ov.ok());
  EXPECT_EQ(ov.status().code(), base::Code::kCorruption);
  const std::string& msg = ov.status().message();
  EXPECT_NE(msg.find("offset " + std::to_string(first_delta)), std::string::npos) << msg;
  EXPECT_NE(msg.find("d.ovl.meta"), std::string::npos) << msg;
  EXPECT_NE(msg.find("follows at offset"), std::string::npos) << msg;
  EXPECT_TRUE(Slurp(meta) == m1 && Slurp(path) == d1);

  // Salvage keeps every record that checks and says what it skipped.
  OverlayOptions s;
  s.salvage = true;
  auto sv = OpenPath(path, id, kDisk, s);
  ASSERT_TRUE(sv.ok()) << sv.status().ToString();
  EXPECT_FALSE((*sv)->problems().empty());
  EXPECT_TRUE((*sv)->read_only());
  EXPECT_TRUE(Slurp(meta) == m1);
}

TEST_F(Damaged, DataFlipFailsTheReadWithEioAndIsListed) {
  Build();
  Spit(path, data0);
  // Find a stored block and damage its slot.
  auto ov = OpenPath(path, id, kDisk, Options());
  ASSERT_TRUE(ov.ok());
  uint64_t victim = kBlocks;
  for (uint64_t b = 0; b < kBlocks && victim == kBlocks; ++b) {
    if ((*ov)->State(b) == BlockState::kData) victim = b;
  }
  ASSERT_LT(victim, kBlocks);
  ov = base::Status::Cancelled("closed");
  const auto before = Slurp(path);
  bool hit = false;
  for (uint64_t off = kBlockSize; off < before.size() && !hit; off += kBlockSize) {
    Spit(path, before);
    Flip(path, off + 77, 0x04);
    auto o = OpenPath(path, id, kDisk, Options());
    ASSERT_TRUE(o.ok());
    std::vector<uint8_t> buf(kBlockSize);
    auto st = (*o)->ReadBlock(victim, buf.data());
    if (st.ok()) continue;
    hit = true;
    EXPECT_EQ(st.status().code(), base::Code::kCorruption);
    EXPECT_EQ(st.status().ToErrno(), EIO);
    const std::string& m = st.status().message();
    EXPECT_NE(m.find("block " + std::to_string(victim)), std::string::npos) << m;
    EXPECT_NE(m.find("at offset " + std::to_string(off)), std::string::npos) << m;
    EXPECT_NE(m.find("log record at offset"), std::string::npos) << m;
    auto damaged = (*o)->CheckBlocks(false);
    ASSERT_TRUE(damaged.ok());
    ASSERT_EQ(damaged->size(), 1u);
    EXPECT_EQ((*damaged)[0].block, victim);
  }
  EXPECT_TRUE(hit);
}

TEST_F(Damaged, TruncatedMetaAndDamagedCheckpointAreRefused) {
  Build();
  const uint64_t start = ActiveLogStart();
  for (uint64_t cut : {uint64_t{4096}, L::kLogBase, start, start + 100}) {
    Spit(meta, std::vector<uint8_t>(meta0.begin(), meta0.begin() + cut));
    auto ov = OpenPath(path, id, kDisk, Options());
    EXPECT_FALSE(ov.ok()) << "meta cut at " << cut;
    EXPECT_EQ(Slurp(meta).size(), cut);
  }
}

TEST_F(Damaged, EmptiedOrMissingDataFileWithALogIsRefused) {
  Build();
  Spit(path, {});
  auto ov = OpenPath(path, id, kDisk, Options());
  ASSERT_FALSE(ov.ok());
  EXPECT_NE(ov.status().message().find("holds a log"), std::string::npos) << ov.status().message();
  EXPECT_EQ(Slurp(meta), meta0);
  EXPECT_EQ(Slurp(path).size(), 0u);

  std::filesystem::remove(path);
  auto files = OpenOverlayFiles(path, LockMode::kExclusive, true);
  ASSERT_FALSE(files.ok());
  EXPECT_NE(files.status().message().find("holds a log"), std::string::npos)
      << files.status().message();
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_EQ(Slurp(meta), meta0);
}

TEST_F(Damaged, FormatOneIsRefusedWithWhatToDo) {
  Build();
  std::vector<uint8_t> d = data0;
  d[8] = 1;  // version 1 (its checksum does not matter: version 1 is refused first)
  Spit(path, d);
  auto ov = OpenPath(path, id, kDisk, Options());
  ASSERT_FALSE(ov.ok());
  EXPECT_EQ(ov.status().code(), base::Code::kUnsupported);
  EXPECT_NE(ov.status().message().find("format 1"), std::string::npos);
  EXPECT_NE(ov.status().message().find("hexz commit"), std::string::npos);
  EXPECT_EQ(Slurp(path), d);
}

// Crash leftovers are not damage: a torn last record (cut anywhere, or with
// sectors that never reached the disk), and a torn superblock write.
TEST_F(Damaged, CrashLeftoversStillOpen) {
  Build();
  // One more delta (not a checkpoint), then tear its record.
  std::vector<uint8_t> full, model_after, model_new;
  {
    auto ov = OpenPath(path, id, kDisk, Options());
    ASSERT_TRUE(ov.ok());
    for (int i = 0;; ++i) {
      ASSERT_LT(i, 10);
      full = Slurp(meta);
      model_after = model;
      uint64_t gen = (*ov)->Stats().generation;
      std::vector<uint8_t> d(kBlockSize, static_cast<uint8_t>(0x66 + i));
      ASSERT_TRUE((*ov)->WriteBlock(3, d.data()).ok());
      ASSERT_TRUE((*ov)->Flush().ok());
      std::copy(d.begin(), d.end(), model.begin() + 3 * kBlockSize);
      if ((*ov)->Stats().generation == gen) break;
    }
    model_new = model;
  }
  const std::vector<uint8_t> longer = Slurp(meta), data1 = Slurp(path);
  ASSERT_GT(longer.size(), full.size());
  for (uint64_t cut = full.size(); cut <= longer.size(); cut += 7) {
    for (int zero_fill = 0; zero_fill < 2; ++zero_fill) {
      std::vector<uint8_t> m(longer.begin(), longer.begin() + cut);
      if (zero_fill) {
        m.resize((cut + 511) / 512 * 512, 0);  // the sector holding the cut was torn
        m.resize(longer.size(), 0);            // unwritten sectors read as zero
        if (cut % 512 != 0) std::fill(m.begin() + cut / 512 * 512, m.begin() + cut, 0);
      }
      Spit(meta, m);
      Spit(path, data1);
      model = m == longer ? model_new : model_after;
      ASSERT_EQ(Check(true), "") << "cut " << cut;
      bool opened = false;
      ASSERT_EQ(Check(false, &opened), "") << "cut " << cut;
      ASSERT_TRUE(opened) << "a torn tail at " << cut << " must open";
    }
  }
}

TEST_F(Damaged, TornSuperblockWriteUsesTheNewCheckpoint) {
  Build(10);
  // Flush until the next compaction, keeping the files just before it.
  std::vector<uint8_t> meta_before, data_before, model_before;
  {
    auto ov = OpenPath(path, id, kDisk, Options());
    ASSERT_TRUE(ov.ok());
    uint64_t gen = (*ov)->Stats().generation;
    std::vector<uint8_t> d(kBlockSize);
    for (int i = 0; i < 100 && (*ov)->Stats().generation == gen; ++i) {
      meta_before = Slurp(meta);
      data_before = Slurp(path);
      model_before = model;
      std::fill(d.begin(), d.end(), static_cast<uint8_t>(i + 1));
      ASSERT_TRUE((*ov)->WriteBlock(i % 5, d.data()).ok());
      std::copy(d.begin(), d.end(), model.begin() + (i % 5) * kBlockSize);
      ASSERT_TRUE((*ov)->Flush().ok());
    }
    ASSERT_GT((*ov)->Stats().generation, gen);
  }
  const std::vector<uint8_t> meta_after = Slurp(meta), data_after = Slurp(path);
  const uint64_t g0 = base::GetLe64(meta_after.data() + 16),
                 g1 = base::GetLe64(meta_after.data() + 4096 + 16);
  const uint64_t new_copy = g0 > g1 ? 0 : 4096;
  // The superblock write torn: garbage, or half old and half new.
  for (int variant = 0; variant < 2; ++variant) {
    std::vector<uint8_t> m = meta_after;
    if (variant == 0) {
      for (int i = 0; i < 128; ++i) m[new_copy + i] ^= 0x5a;
    } else {
      std::copy(meta_before.begin() + new_copy, meta_before.begin() + new_copy + 64,
                m.begin() + new_copy);
    }
    Spit(meta, m);
    Spit(path, data_after);
    bool opened = false;
    ASSERT_EQ(Check(true, &opened), "") << "variant " << variant;
    ASSERT_TRUE(opened);
    ASSERT_EQ(Check(false, &opened), "") << "variant " << variant;
    ASSERT_TRUE(opened);
    // The read-write open finished the compaction: the copy is whole again.
    EXPECT_EQ(base::GetLe64(Slurp(meta).data() + new_copy + 16), std::max(g0, g1));
  }
}

}  // namespace
}  // namespace hexz::overlay
