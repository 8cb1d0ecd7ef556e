// The shard lock against dead holders and hostile lock words, across real
// processes sharing an anonymous MAP_SHARED page.
#include "common/cache/shard_lock.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

namespace hexz::cache {
namespace {

struct SharedPage {
  SharedPage() {
    mem = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    EXPECT_NE(mem, MAP_FAILED);
    std::memset(mem, 0xa5, 4096);
    word()->store(0);
  }
  ~SharedPage() { ::munmap(mem, 4096); }
  std::atomic<uint32_t>* word() { return static_cast<std::atomic<uint32_t>*>(mem) + 8; }
  void* mem;
};

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// What a holder leaves in shared memory is its thread id, nothing else: no
// address another process could be made to follow.
TEST(ShardLockTest, SharedMemoryHoldsOnlyTheThreadId) {
  SharedPage page;
  ASSERT_EQ(LockShard(page.word(), 1000, nullptr), LockResult::kLocked);
  EXPECT_EQ(page.word()->load(), static_cast<uint32_t>(::syscall(SYS_gettid)));
  const uint8_t* bytes = static_cast<const uint8_t*>(page.mem);
  for (size_t i = 0; i < 4096; ++i) {
    if (i >= 32 && i < 36) continue;  // the word
    ASSERT_EQ(bytes[i], 0xa5) << "byte " << i << " of the shared page was written";
  }
  UnlockShard(page.word());
  EXPECT_EQ(page.word()->load(), 0u);
}

TEST(ShardLockTest, HolderKilledIsRecoveredAtOnce) {
  SharedPage page;
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t holder = ::fork();
  if (holder == 0) {
    LockResult r = LockShard(page.word(), 1000, nullptr);
    (void)!::write(ready[1], r == LockResult::kLocked ? "y" : "n", 1);
    ::pause();
    _exit(0);
  }
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ASSERT_EQ(c, 'y');
  // Held by the child: a waiter times out.
  EXPECT_EQ(LockShard(page.word(), 50, nullptr), LockResult::kTimedOut);
  auto start = std::chrono::steady_clock::now();
  ::kill(holder, SIGKILL);
  ::waitpid(holder, nullptr, 0);
  EXPECT_EQ(LockShard(page.word(), 5000, nullptr), LockResult::kRecovered);
  EXPECT_LT(Seconds(start), 1.0);
  UnlockShard(page.word());
  EXPECT_EQ(LockShard(page.word(), 1000, nullptr), LockResult::kLocked);
  UnlockShard(page.word());
  ::close(ready[0]);
  ::close(ready[1]);
}

// A waiter sleeping in the kernel is woken by the holder's death.
TEST(ShardLockTest, WaiterIsWokenWhenTheHolderDies) {
  SharedPage page;
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t holder = ::fork();
  if (holder == 0) {
    (void)LockShard(page.word(), 1000, nullptr);
    (void)!::write(ready[1], "y", 1);
    ::usleep(300 * 1000);
    ::kill(::getpid(), SIGKILL);
  }
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(LockShard(page.word(), 5000, nullptr), LockResult::kRecovered);
  EXPECT_LT(Seconds(start), 2.0);
  UnlockShard(page.word());
  ::waitpid(holder, nullptr, 0);
  ::close(ready[0]);
  ::close(ready[1]);
}

// A word forged by a hostile participant (a thread id that holds nothing, or
// garbage) costs the others only their timeout; nothing follows it.
TEST(ShardLockTest, ForgedWordOnlyTimesOut) {
  SharedPage page;
  for (uint32_t forged : {0x3fffffffu, 0xffffffffu, 1u}) {
    page.word()->store(forged);
    auto start = std::chrono::steady_clock::now();
    EXPECT_EQ(LockShard(page.word(), 100, nullptr), LockResult::kTimedOut) << forged;
    EXPECT_LT(Seconds(start), 1.0);
  }
  // Only the owner-died bit: free, and the next locker is told to recover.
  page.word()->store(0x40000000u);
  EXPECT_EQ(LockShard(page.word(), 100, nullptr), LockResult::kRecovered);
  UnlockShard(page.word());
}

}  // namespace
}  // namespace hexz::cache
