// Crash tests without FUSE: a child process writes versioned block patterns
// through an OverlayVolume and flushes now and then; the parent SIGKILLs it at
// a random moment, reopens the overlay and checks that every 4 KiB block holds
// one whole version (old or new, never a mix), and that no block is older
// than what the last successful Flush covered. Repeated many times on the
// same overlay, so recovery from one crash is the start of the next run.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <random>
#include <thread>

#include "tests/unit/overlay/overlay_test_util.h"

namespace hexz::overlay {
namespace {

using testing::MakeId;
using testing::MemVolume;
using testing::OpenPath;
using testing::TempDir;

constexpr uint64_t kBlocks = 96;

// Shared between parent and child (MAP_SHARED).
struct Shared {
  std::atomic<uint32_t> next_version;
  std::atomic<uint32_t> started[kBlocks];  // highest version whose write began
  std::atomic<uint32_t> flushed[kBlocks];  // highest version a Flush covered
  std::atomic<uint32_t> flushes;
};

void Fill(uint8_t* p, uint64_t block, uint32_t version) {
  uint64_t word = (block << 32) | version;
  for (size_t i = 0; i < kBlockSize; i += 8) std::memcpy(p + i, &word, 8);
}

std::vector<uint8_t> BaseImage() {
  std::vector<uint8_t> v(kBlocks * kBlockSize);
  for (uint64_t b = 0; b < kBlocks; ++b) Fill(v.data() + b * kBlockSize, b, 0);
  return v;
}

OverlayOptions CrashOptions() {
  OverlayOptions o;
  o.compact_min_bytes = 2048;  // checkpoints happen often, so they get killed too
  return o;
}

[[noreturn]] void ChildLoop(const std::string& path, Shared* sh, uint32_t seed) {
  auto ov = OpenPath(path, MakeId(0x11), kBlocks * kBlockSize, CrashOptions());
  if (!ov.ok()) _exit(3);
  auto vol = OverlayVolume::Create(std::make_shared<MemVolume>(BaseImage()),
                                   std::shared_ptr<Overlay>(std::move(ov).value()));
  if (!vol.ok()) _exit(4);
  std::mt19937 rng(seed);
  std::vector<uint32_t> written(kBlocks, 0);
  for (uint64_t b = 0; b < kBlocks; ++b) written[b] = sh->flushed[b].load();
  std::vector<uint8_t> buf(4 * kBlockSize);
  for (uint64_t i = 0;; ++i) {
    // One to four consecutive whole blocks per write.
    uint64_t first = rng() % kBlocks;
    uint64_t n = std::min<uint64_t>(1 + rng() % 4, kBlocks - first);
    for (uint64_t k = 0; k < n; ++k) {
      uint32_t v = sh->next_version.fetch_add(1) + 1;
      sh->started[first + k].store(v);
      Fill(buf.data() + k * kBlockSize, first + k, v);
    }
    if (!(*vol)->Write(first * kBlockSize, buf.data(), n * kBlockSize, false).ok()) _exit(5);
    for (uint64_t k = 0; k < n; ++k) {
      uint64_t word;
      std::memcpy(&word, buf.data() + k * kBlockSize, 8);
      written[first + k] = static_cast<uint32_t>(word);
    }
    if (rng() % 8 == 0) {
      std::vector<uint32_t> covered = written;
      if (!(*vol)->Flush().ok()) _exit(6);
      for (uint64_t b = 0; b < kBlocks; ++b) sh->flushed[b].store(covered[b]);
      sh->flushes.fetch_add(1);
    }
  }
}

TEST(OverlayCrashTest, KillAtRandomMomentsLeavesOldOrNewBlocks) {
  TempDir dir;
  const std::string path = dir.File("crash.ovl");
  void* mem =
      mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  auto* sh = new (mem) Shared();
  std::mt19937 rng(1234);
  constexpr int kRounds = 100;
  uint32_t total_flushes = 0;
  for (int round = 0; round < kRounds; ++round) {
    uint32_t flushes_before = sh->flushes.load();
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) ChildLoop(path, sh, static_cast<uint32_t>(round));
    // Let it make progress (at least one flush), then kill at a random moment.
    for (int i = 0; i < 2000 && sh->flushes.load() == flushes_before; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 20000));
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exited early with status " << WEXITSTATUS(status);
    total_flushes += sh->flushes.load() - flushes_before;

    auto ov = OpenPath(path, MakeId(0x11), kBlocks * kBlockSize, CrashOptions());
    ASSERT_TRUE(ov.ok()) << "round " << round << ": " << ov.status().ToString();
    auto vol = OverlayVolume::Create(std::make_shared<MemVolume>(BaseImage()),
                                     std::shared_ptr<Overlay>(std::move(ov).value()));
    ASSERT_TRUE(vol.ok());
    std::vector<uint8_t> all(kBlocks * kBlockSize);
    ASSERT_TRUE((*vol)->Read(0, all.data(), all.size()).ok());
    for (uint64_t b = 0; b < kBlocks; ++b) {
      const uint8_t* p = all.data() + b * kBlockSize;
      uint64_t word;
      std::memcpy(&word, p, 8);
      for (size_t i = 8; i < kBlockSize; i += 8) {
        ASSERT_EQ(std::memcmp(p, p + i, 8), 0)
            << "round " << round << ": block " << b << " is torn at byte " << i;
      }
      ASSERT_EQ(word >> 32, b) << "round " << round << ": block " << b << " holds another block";
      uint32_t v = static_cast<uint32_t>(word);
      ASSERT_GE(v, sh->flushed[b].load())
          << "round " << round << ": block " << b << " lost a flushed write";
      ASSERT_LE(v, sh->started[b].load())
          << "round " << round << ": block " << b << " holds a version never written";
      // What survived is now the durable state the next round builds on.
      sh->flushed[b].store(v);
    }
    ASSERT_TRUE((*vol)->Flush().ok());
  }
  EXPECT_GT(total_flushes, static_cast<uint32_t>(kRounds));
  munmap(mem, sizeof(Shared));
}

}  // namespace
}  // namespace hexz::overlay
