#include "common/overlay/overlay.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "common/overlay/overlay_files.h"
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

// Disk size deliberately not a multiple of 4 KiB.
constexpr uint64_t kDiskSize = 1024 * 1024 + 1000;

struct Fixture {
  TempDir dir;
  std::string path = dir.File("disk.ovl");
  std::shared_ptr<MemVolume> base = std::make_shared<MemVolume>(RandomBytes(kDiskSize, 7));
  format::SnapshotId id = MakeId(0xab);

  std::unique_ptr<OverlayVolume> Open(OverlayOptions options = {}) {
    auto ov = OpenPath(path, id, kDiskSize, options);
    EXPECT_TRUE(ov.ok()) << ov.status().ToString();
    if (!ov.ok()) return nullptr;
    auto vol = OverlayVolume::Create(base, std::shared_ptr<Overlay>(std::move(ov).value()));
    EXPECT_TRUE(vol.ok()) << vol.status().ToString();
    return vol.ok() ? std::move(vol).value() : nullptr;
  }
};

std::vector<uint8_t> ReadAll(io::Volume& v) {
  std::vector<uint8_t> out(v.Size());
  EXPECT_TRUE(v.Read(0, out.data(), out.size()).ok());
  return out;
}

TEST(OverlayTest, FreshOverlayReadsBase) {
  Fixture f;
  auto vol = f.Open();
  ASSERT_TRUE(vol);
  EXPECT_TRUE(vol->Writable());
  EXPECT_EQ(vol->Size(), kDiskSize);
  EXPECT_EQ(ReadAll(*vol), f.base->Contents());
  EXPECT_TRUE(std::filesystem::exists(f.path + ".meta"));
}

// Random writes, zeroes and trims against a plain byte-array model, with
// reopens (after Flush) in between.
TEST(OverlayTest, RandomOpsMatchModel) {
  Fixture f;
  std::vector<uint8_t> model = f.base->Contents();
  std::mt19937 rng(42);
  auto vol = f.Open();
  ASSERT_TRUE(vol);
  for (int round = 0; round < 6; ++round) {
    for (int i = 0; i < 300; ++i) {
      uint64_t off = rng() % kDiskSize;
      uint64_t len = 1 + rng() % std::min<uint64_t>(3 * kBlockSize, kDiskSize - off);
      if (rng() % 4 == 0) {  // block aligned
        off = off / kBlockSize * kBlockSize;
        len = std::min<uint64_t>(kBlockSize * (1 + rng() % 4), kDiskSize - off);
      }
      int op = rng() % 10;
      if (op < 7) {
        auto data = RandomBytes(len, rng());
        ASSERT_TRUE(vol->Write(off, data.data(), len, rng() % 20 == 0).ok());
        std::copy(data.begin(), data.end(), model.begin() + off);
      } else if (op < 9) {
        ASSERT_TRUE(vol->WriteZeroes(off, len, false).ok());
        std::fill(model.begin() + off, model.begin() + off + len, 0);
      } else {
        ASSERT_TRUE(vol->Trim(off, len).ok());
        // Whole blocks read as zeros afterwards; partial ones are unchanged.
        for (uint64_t b = off / kBlockSize; b * kBlockSize < off + len; ++b) {
          uint64_t lo = b * kBlockSize, hi = std::min<uint64_t>(lo + kBlockSize, kDiskSize);
          if (lo >= off && hi <= off + len) std::fill(model.begin() + lo, model.begin() + hi, 0);
        }
      }
      if (i % 50 == 0) {
        uint64_t roff = rng() % kDiskSize;
        uint64_t rlen = 1 + rng() % (kDiskSize - roff);
        std::vector<uint8_t> got(rlen);
        ASSERT_TRUE(vol->Read(roff, got.data(), rlen).ok());
        ASSERT_TRUE(std::equal(got.begin(), got.end(), model.begin() + roff));
      }
    }
    ASSERT_EQ(ReadAll(*vol), model);
    ASSERT_TRUE(vol->Flush().ok());
    vol.reset();
    vol = f.Open();
    ASSERT_TRUE(vol);
    ASSERT_EQ(ReadAll(*vol), model) << "after reopen, round " << round;
  }
  EXPECT_EQ(f.base->Contents(), RandomBytes(kDiskSize, 7)) << "the base must never change";
}

TEST(OverlayTest, UnflushedWritesAreNotInTheLog) {
  Fixture f;
  auto vol = f.Open();
  std::vector<uint8_t> a(kBlockSize, 0xaa), b(kBlockSize, 0xbb);
  ASSERT_TRUE(vol->Write(8192, a.data(), a.size(), false).ok());
  ASSERT_TRUE(vol->Flush().ok());
  ASSERT_TRUE(vol->Write(8192, b.data(), b.size(), false).ok());
  ASSERT_TRUE(vol->Write(16384, b.data(), b.size(), false).ok());
  vol.reset();  // no flush: the second writes were never acknowledged as durable
  vol = f.Open();
  std::vector<uint8_t> got(kBlockSize);
  ASSERT_TRUE(vol->Read(8192, got.data(), got.size()).ok());
  EXPECT_EQ(got, a);
  ASSERT_TRUE(vol->Read(16384, got.data(), got.size()).ok());
  EXPECT_TRUE(std::equal(got.begin(), got.end(), f.base->Contents().begin() + 16384));
}

TEST(OverlayTest, StatsCountChangedBlocks) {
  Fixture f;
  auto vol = f.Open();
  std::vector<uint8_t> d(10000, 1);
  ASSERT_TRUE(vol->Write(100, d.data(), d.size(), false).ok());               // blocks 0..2
  ASSERT_TRUE(vol->WriteZeroes(8 * kBlockSize, 2 * kBlockSize, false).ok());  // 8, 9
  ASSERT_TRUE(vol->Write(kDiskSize - 10, d.data(), 10, false).ok());  // the short last block
  OverlayStats s = vol->overlay().Stats();
  EXPECT_EQ(s.data_blocks, 4u);
  EXPECT_EQ(s.zero_blocks, 2u);
  EXPECT_EQ(s.changed_bytes, 5 * kBlockSize + kDiskSize % kBlockSize);
  EXPECT_TRUE(vol->overlay().AnyChanged(0, 1));
  EXPECT_FALSE(vol->overlay().AnyChanged(3, 5));
  EXPECT_TRUE(vol->overlay().AnyChanged(3, 6));
}

TEST(OverlayTest, WritePastEndFailsAndWritesNothing) {
  Fixture f;
  auto vol = f.Open();
  std::vector<uint8_t> d(8192, 1);
  Status s = vol->Write(kDiskSize - 4096, d.data(), d.size(), false);
  EXPECT_EQ(s.code(), base::Code::kNoSpace);
  EXPECT_EQ(s.ToErrno(), ENOSPC);
  EXPECT_NE(s.message().find("size is fixed"), std::string::npos) << s.message();
  EXPECT_EQ(vol->overlay().Stats().data_blocks, 0u);
  EXPECT_FALSE(vol->Write(UINT64_MAX - 10, d.data(), 100, false).ok());
  EXPECT_FALSE(vol->Read(kDiskSize, d.data(), 1).ok());
}

TEST(OverlayTest, ExtentsMergeOverlayAndBase) {
  Fixture f;
  auto vol = f.Open();
  std::vector<uint8_t> d(kBlockSize, 3);
  ASSERT_TRUE(vol->Write(4 * kBlockSize, d.data(), d.size(), false).ok());
  ASSERT_TRUE(vol->WriteZeroes(5 * kBlockSize, 2 * kBlockSize, false).ok());
  std::vector<io::Extent> ext;
  ASSERT_TRUE(vol->Extents(0, 10 * kBlockSize, &ext).ok());
  // The MemVolume base reports one data extent per call; overlay zeroes are holes.
  bool saw_zero = false;
  uint64_t pos = 0;
  for (const auto& e : ext) {
    EXPECT_EQ(e.offset, pos);
    pos += e.length;
    if (e.zero) {
      saw_zero = true;
      EXPECT_EQ(e.offset, 5 * kBlockSize);
      EXPECT_EQ(e.length, 2 * kBlockSize);
    }
  }
  EXPECT_EQ(pos, 10 * kBlockSize);
  EXPECT_TRUE(saw_zero);
}

TEST(OverlayTest, RefusesAnotherBase) {
  Fixture f;
  {
    auto vol = f.Open();
    ASSERT_TRUE(vol);
  }
  auto other = OpenPath(f.path, MakeId(0xcd), kDiskSize);
  ASSERT_FALSE(other.ok());
  const std::string& m = other.status().message();
  EXPECT_NE(m.find(MakeId(0xab).ToHex()), std::string::npos) << m;
  EXPECT_NE(m.find(MakeId(0xcd).ToHex()), std::string::npos) << m;
  EXPECT_NE(m.find(f.path), std::string::npos) << m;
  EXPECT_NE(m.find("base.st"), std::string::npos) << m;

  auto resized = OpenPath(f.path, f.id, kDiskSize + 4096);
  ASSERT_FALSE(resized.ok());
  EXPECT_NE(resized.status().message().find("covers a disk of"), std::string::npos);
}

TEST(OverlayTest, LockRefusesSecondWriter) {
  Fixture f;
  auto first = OpenOverlayFiles(f.path, LockMode::kExclusive, true);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto second = OpenOverlayFiles(f.path, LockMode::kExclusive, true);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), base::Code::kBusy);
  const std::string pid = std::to_string(getpid());
  EXPECT_EQ(
      second.status().message().rfind(
          "overlay " + f.path + " is in use by a read-write mount or serve, pid " + pid + " (", 0),
      0u)
      << second.status().message();
  auto reader = OpenOverlayFiles(f.path, LockMode::kShared, false);
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.status().code(), base::Code::kBusy);
  first = base::Status::Cancelled("closed");  // drops the descriptors and the lock
  {
    // A reader (hexz commit) holds it: a writer's refusal names the reader.
    auto commit = OpenOverlayFiles(f.path, LockMode::kShared, false);
    ASSERT_TRUE(commit.ok()) << commit.status().ToString();
    auto writer = OpenOverlayFiles(f.path, LockMode::kExclusive, true);
    ASSERT_FALSE(writer.ok());
    EXPECT_NE(writer.status().message().find("in use by a reader (hexz commit, overlay info or "
                                             "overlay verify), pid " +
                                             pid),
              std::string::npos)
        << writer.status().message();
  }
  auto again = OpenOverlayFiles(f.path, LockMode::kExclusive, true);
  EXPECT_TRUE(again.ok()) << again.status().ToString();
}

TEST(OverlayTest, MissingMetaIsRefusedNotRecreated) {
  Fixture f;
  {
    auto vol = f.Open();
    std::vector<uint8_t> d(kBlockSize, 9);
    ASSERT_TRUE(vol->Write(0, d.data(), d.size(), true).ok());
  }
  ASSERT_EQ(::unlink((f.path + ".meta").c_str()), 0);
  auto r = OpenOverlayFiles(f.path, LockMode::kExclusive, true);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("cannot be used without its meta file"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(f.path + ".meta"));
}

TEST(OverlayTest, RelativePathIsCreatedInWorkingDirectory) {
  TempDir dir;
  char old[4096];
  ASSERT_NE(getcwd(old, sizeof old), nullptr);
  ASSERT_EQ(chdir(dir.path().c_str()), 0);
  auto ov = OpenPath("rel.ovl", MakeId(1), 65536);
  ASSERT_EQ(chdir(old), 0);
  ASSERT_TRUE(ov.ok()) << ov.status().ToString();
  EXPECT_TRUE(std::filesystem::exists(dir.File("rel.ovl")));
  EXPECT_TRUE(std::filesystem::exists(dir.File("rel.ovl.meta")));
  struct stat st;
  ASSERT_EQ(stat(dir.File("rel.ovl").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(OverlayTest, EmptyDataFileIsAnUnfinishedCreation) {
  Fixture f;
  {  // A crash right after the files were created leaves them empty.
    int fd = ::open(f.path.c_str(), O_CREAT | O_WRONLY, 0600);
    ASSERT_GE(fd, 0);
    ::close(fd);
    fd = ::open((f.path + ".meta").c_str(), O_CREAT | O_WRONLY, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, "junk", 4), 4);
    ::close(fd);
  }
  auto vol = f.Open();
  ASSERT_TRUE(vol);
  EXPECT_EQ(ReadAll(*vol), f.base->Contents());
}

TEST(OverlayTest, DamagedHeadersAreReportedNotServed) {
  Fixture f;
  { auto vol = f.Open(); }
  {
    int fd = ::open(f.path.c_str(), O_RDWR);
    uint8_t b = 0;
    ASSERT_EQ(::pread(fd, &b, 1, 50), 1);
    b ^= 1;
    ASSERT_EQ(::pwrite(fd, &b, 1, 50), 1);
    ::close(fd);
  }
  auto r = OpenPath(f.path, f.id, kDiskSize);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), base::Code::kCorruption);
  EXPECT_NE(r.status().message().find("checksum mismatch"), std::string::npos);
}

// Every cut of the meta file inside the last record leaves the state of the
// previous flush; the overlay always opens.
TEST(OverlayTest, TornLogTailFallsBackToPreviousFlush) {
  Fixture f;
  std::vector<uint8_t> a(kBlockSize, 0xa1), b(kBlockSize, 0xb2);
  uint64_t size_before = 0, size_after = 0;
  {
    auto vol = f.Open();
    ASSERT_TRUE(vol->Write(0, a.data(), a.size(), true).ok());
    size_before = std::filesystem::file_size(f.path + ".meta");
    ASSERT_TRUE(vol->Write(0, b.data(), b.size(), false).ok());
    ASSERT_TRUE(vol->Write(4096 * 7, b.data(), b.size(), false).ok());
    ASSERT_TRUE(vol->Flush().ok());
    size_after = std::filesystem::file_size(f.path + ".meta");
  }
  ASSERT_GT(size_after, size_before);
  std::vector<uint8_t> full(size_after);
  {
    int fd = ::open((f.path + ".meta").c_str(), O_RDONLY);
    ASSERT_EQ(::pread(fd, full.data(), full.size(), 0), static_cast<ssize_t>(full.size()));
    ::close(fd);
  }
  for (uint64_t cut = size_before; cut <= size_after; ++cut) {
    int fd = ::open((f.path + ".meta").c_str(), O_RDWR | O_TRUNC);
    ASSERT_EQ(::pwrite(fd, full.data(), cut, 0), static_cast<ssize_t>(cut));
    if (cut < size_after && cut % 512 == 0) {
      // Sectors the write never reached read as zeros.
      std::vector<uint8_t> zeros(size_after - cut, 0);
      ASSERT_EQ(::pwrite(fd, zeros.data(), zeros.size(), cut), static_cast<ssize_t>(zeros.size()));
    }
    ::close(fd);
    auto vol = f.Open();
    ASSERT_TRUE(vol) << "cut at " << cut;
    std::vector<uint8_t> got(kBlockSize);
    ASSERT_TRUE(vol->Read(0, got.data(), got.size()).ok());
    EXPECT_EQ(got, cut == size_after ? b : a) << "cut at " << cut;
  }
}

TEST(OverlayTest, CompactionKeepsContentAndBoundsTheLog) {
  Fixture f;
  OverlayOptions opt;
  opt.compact_min_bytes = 4096;
  opt.durable = false;  // the log logic is the same; spare the disk 4000 fdatasyncs
  std::vector<uint8_t> model = f.base->Contents();
  std::mt19937 rng(5);
  auto vol = f.Open(opt);
  for (int i = 0; i < 2000; ++i) {
    uint64_t b = rng() % 40;  // a small working set, rewritten over and over
    std::vector<uint8_t> d(kBlockSize, static_cast<uint8_t>(i));
    ASSERT_TRUE(vol->Write(b * kBlockSize, d.data(), d.size(), false).ok());
    std::copy(d.begin(), d.end(), model.begin() + b * kBlockSize);
    ASSERT_TRUE(vol->Flush().ok());
    if (i % 300 == 299) {
      vol.reset();
      vol = f.Open(opt);
      ASSERT_EQ(ReadAll(*vol), model);
    }
  }
  EXPECT_LT(std::filesystem::file_size(f.path + ".meta"), 64u * 1024);
  EXPECT_LE(std::filesystem::file_size(f.path), 4096u * (1 + 80));
  vol.reset();
  vol = f.Open(opt);
  EXPECT_EQ(ReadAll(*vol), model);
}

// A model of a power cut: everything written to the data file after the last
// Flush may be torn (here: replaced by garbage), and the meta file is as the
// Flush left it. The overlay must still read exactly the flushed content.
// This catches an overwrite of a slot that the durable log references, which
// a SIGKILL test cannot see (the page cache survives a killed process).
TEST(OverlayTest, PowerCutModelTearsUnflushedSlots) {
  Fixture f;
  OverlayOptions opt;
  opt.compact_min_bytes = 2048;
  std::mt19937 rng(99);
  std::vector<uint8_t> model = f.base->Contents();
  for (int round = 0; round < 20; ++round) {
    auto vol = f.Open(opt);
    ASSERT_TRUE(vol);
    ASSERT_EQ(ReadAll(*vol), model) << "round " << round;
    for (int i = 0; i < 60; ++i) {
      uint64_t b = rng() % 64;
      auto d = RandomBytes(kBlockSize, rng());
      if (rng() % 5 == 0) {
        ASSERT_TRUE(vol->WriteZeroes(b * kBlockSize, kBlockSize, false).ok());
        std::fill(model.begin() + b * kBlockSize, model.begin() + (b + 1) * kBlockSize, 0);
      } else {
        ASSERT_TRUE(vol->Write(b * kBlockSize, d.data(), d.size(), false).ok());
        std::copy(d.begin(), d.end(), model.begin() + b * kBlockSize);
      }
      if (rng() % 10 == 0) {
        ASSERT_TRUE(vol->Flush().ok());
      }
    }
    ASSERT_TRUE(vol->Flush().ok());
    std::vector<uint8_t> data_at_flush = Slurp(f.path);
    std::vector<uint8_t> meta_at_flush = Slurp(f.path + ".meta");
    // Unflushed rewrites of the same (and other) blocks, then the power cut.
    for (int i = 0; i < 40; ++i) {
      uint64_t b = rng() % 64;
      auto d = RandomBytes(kBlockSize, rng());
      ASSERT_TRUE(vol->Write(b * kBlockSize, d.data(), d.size(), false).ok());
    }
    vol.reset();
    std::vector<uint8_t> data_now = Slurp(f.path);
    std::vector<uint8_t> torn = data_now;
    for (size_t off = 0; off < torn.size(); off += kBlockSize) {
      size_t n = std::min<size_t>(kBlockSize, torn.size() - off);
      bool changed =
          off + n > data_at_flush.size() ||
          !std::equal(torn.begin() + off, torn.begin() + off + n, data_at_flush.begin() + off);
      if (changed) {
        auto junk = RandomBytes(n, rng());
        std::copy(junk.begin(), junk.end(), torn.begin() + off);
      }
    }
    Spit(f.path, torn);
    Spit(f.path + ".meta", meta_at_flush);
  }
}

// Concurrent writers and readers: per 4 KiB block a read sees one whole
// version, never a mix.
TEST(OverlayTest, ConcurrentReadsSeeWholeBlocks) {
  Fixture f;
  auto vol = f.Open();
  constexpr int kBlocks = 16;
  std::vector<uint8_t> init(kBlocks * kBlockSize, 0);
  ASSERT_TRUE(vol->Write(0, init.data(), init.size(), false).ok());
  std::atomic<bool> stop{false};
  std::atomic<int> torn{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < 3000; ++i) {
        uint64_t b = rng() % kBlocks;
        std::vector<uint8_t> d(kBlockSize, static_cast<uint8_t>(rng()));
        EXPECT_TRUE(vol->Write(b * kBlockSize, d.data(), d.size(), false).ok());
        if (i % 500 == 0) {
          EXPECT_TRUE(vol->Flush().ok());
        }
      }
    });
  }
  threads.emplace_back([&] {
    std::vector<uint8_t> got(kBlocks * kBlockSize);
    while (!stop.load()) {
      EXPECT_TRUE(vol->Read(0, got.data(), got.size()).ok());
      for (int b = 0; b < kBlocks; ++b) {
        const uint8_t* p = got.data() + b * kBlockSize;
        if (!std::all_of(p, p + kBlockSize, [&](uint8_t x) { return x == p[0]; })) ++torn;
      }
    }
  });
  threads[0].join();
  threads[1].join();
  stop = true;
  threads[2].join();
  EXPECT_EQ(torn.load(), 0);
}

// A file size limit makes growing the data file fail with EFBIG: the writer
// gets the error, and what was flushed before stays intact.
TEST(OverlayTest, NoSpaceReachesTheWriter) {
  Fixture f;
  {
    auto vol = f.Open();
    ASSERT_TRUE(vol);  // created before the limit
  }
  struct rlimit old;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_handler = signal(SIGXFSZ, SIG_IGN);
  struct rlimit lim = old;
  lim.rlim_cur = 64 * 1024;  // header + 15 slots
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);

  auto vol = f.Open();
  std::vector<uint8_t> d(kBlockSize, 0x5a);
  int ok = 0;
  Status err;
  for (int b = 0; b < 40; ++b) {
    Status s = vol->Write(b * kBlockSize, d.data(), d.size(), false);
    if (!s.ok()) {
      err = s;
      break;
    }
    ++ok;
  }
  Status flushed = vol->Flush();
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &old), 0);
  signal(SIGXFSZ, old_handler);

  ASSERT_FALSE(err.ok()) << "the write past the file size limit must fail";
  EXPECT_EQ(err.code(), base::Code::kNoSpace) << err.ToString();
  EXPECT_EQ(ok, 15);
  EXPECT_TRUE(flushed.ok()) << flushed.ToString();
  vol.reset();
  vol = f.Open();
  std::vector<uint8_t> got(kBlockSize);
  for (int b = 0; b < 16; ++b) {
    ASSERT_TRUE(vol->Read(b * kBlockSize, got.data(), got.size()).ok());
    if (b < ok) {
      EXPECT_EQ(got, d) << "block " << b;
    } else {
      EXPECT_TRUE(std::equal(got.begin(), got.end(), f.base->Contents().begin() + b * kBlockSize));
    }
  }
}

// A failed write into a block's pending slot may have torn acknowledged (but
// unflushed) data: the error becomes sticky, so no later flush can claim
// durability; a reopen recovers the last successful flush.
TEST(OverlayTest, FailedInPlaceWriteIsSticky) {
  Fixture f;
  std::vector<uint8_t> a(kBlockSize, 0xa0), b(kBlockSize, 0xb0), c(kBlockSize, 0xc0);
  auto vol = f.Open();
  ASSERT_TRUE(vol->Write(0, a.data(), a.size(), true).ok());  // flushed
  for (int i = 1; i <= 10; ++i) {
    ASSERT_TRUE(vol->Write(i * kBlockSize, b.data(), b.size(), false).ok());  // pending
  }
  struct rlimit old;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_handler = signal(SIGXFSZ, SIG_IGN);
  struct rlimit lim = old;
  lim.rlim_cur = 4 * kBlockSize;  // below the pending slot of block 10
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
  Status in_place = vol->Write(10 * kBlockSize, c.data(), c.size(), false);
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &old), 0);
  signal(SIGXFSZ, old_handler);

  ASSERT_FALSE(in_place.ok());
  EXPECT_EQ(in_place.ToErrno(), EFBIG) << in_place.ToString();
  EXPECT_NE(in_place.message().find("refuses further writes"), std::string::npos);
  Status flush = vol->Flush();
  EXPECT_FALSE(flush.ok()) << "a flush after a torn pending write must not succeed";
  EXPECT_EQ(flush.ToErrno(), EFBIG);
  EXPECT_FALSE(vol->Write(20 * kBlockSize, c.data(), c.size(), false).ok());
  std::vector<uint8_t> got(kBlockSize);
  ASSERT_TRUE(vol->Read(0, got.data(), got.size()).ok()) << "reads still work";
  EXPECT_EQ(got, a);
  vol.reset();
  vol = f.Open();
  ASSERT_TRUE(vol->Read(0, got.data(), got.size()).ok());
  EXPECT_EQ(got, a);
  ASSERT_TRUE(vol->Read(10 * kBlockSize, got.data(), got.size()).ok());
  EXPECT_TRUE(std::equal(got.begin(), got.end(), f.base->Contents().begin() + 10 * kBlockSize));
  EXPECT_TRUE(vol->Write(20 * kBlockSize, c.data(), c.size(), true).ok()) << "reopen clears it";
}

TEST(OverlayTest, ReadOnlyOpenRefusesWrites) {
  Fixture f;
  {
    auto vol = f.Open();
    std::vector<uint8_t> d(kBlockSize, 1);
    ASSERT_TRUE(vol->Write(0, d.data(), d.size(), true).ok());
  }
  auto files = OpenOverlayFiles(f.path, LockMode::kShared, false);
  ASSERT_TRUE(files.ok()) << files.status().ToString();
  OverlayOptions ro;
  ro.read_only = true;
  auto ov = Overlay::OpenAnyBase(std::move(files->data), std::move(files->meta), files->names, ro);
  ASSERT_TRUE(ov.ok()) << ov.status().ToString();
  EXPECT_EQ((*ov)->base_id(), f.id);
  EXPECT_EQ((*ov)->disk_size(), kDiskSize);
  std::vector<uint8_t> d(kBlockSize, 2);
  EXPECT_EQ((*ov)->WriteBlock(1, d.data()).code(), base::Code::kReadOnly);
  EXPECT_EQ((*ov)->Stats().data_blocks, 1u);
}

}  // namespace
}  // namespace hexz::overlay
