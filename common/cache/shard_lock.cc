#include "common/cache/shard_lock.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace hexz::cache {

namespace {

constexpr uint64_t kSliceNs = 20'000'000;

// This thread's robust-futex registration: a private list head and node.
struct RobustState {
  robust_list_head head;
  robust_list node;
  pid_t tid = 0;
  uint64_t forks = 0;  // fork_count when tid was taken
};

// Counts forks in this process (the child's handler bumps it): a thread
// that forked is another thread in the child, with another tid and without
// the kernel registration.
std::atomic<uint64_t> fork_count{1};
void CountFork() { fork_count.fetch_add(1, std::memory_order_relaxed); }

RobustState* Self() {
  static const bool registered = (::pthread_atfork(nullptr, nullptr, CountFork), true);
  (void)registered;
  thread_local RobustState state;
  // gettid is a system call: asked once per thread, and again after a fork.
  const uint64_t forks = fork_count.load(std::memory_order_relaxed);
  if (state.forks != forks) {
    state.head.list.next = &state.head.list;  // empty list
    state.head.futex_offset = 0;
    state.head.list_op_pending = nullptr;
    state.node.next = &state.head.list;
    // Without it a holder that dies leaves the lock to the waiters' timeout.
    (void)::syscall(SYS_set_robust_list, &state.head, sizeof state.head);
    state.tid = static_cast<pid_t>(::syscall(SYS_gettid));
    state.forks = forks;
  }
  return &state;
}

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000 + static_cast<uint64_t>(ts.tv_nsec);
}

void FutexWait(std::atomic<uint32_t>* word, uint32_t expected, uint64_t ns) {
  timespec rel{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  // Shared between processes: no FUTEX_PRIVATE_FLAG.
  (void)::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, &rel, nullptr,
                  0);
}

}  // namespace

LockResult LockShard(std::atomic<uint32_t>* word, uint32_t timeout_ms, bool* slow) {
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));
  RobustState* self = Self();
  const uint32_t tid = static_cast<uint32_t>(self->tid) & FUTEX_TID_MASK;
  // Point the kernel at this word while the outcome is pending.
  self->head.futex_offset =
      reinterpret_cast<intptr_t>(word) - reinterpret_cast<intptr_t>(&self->node);
  self->head.list_op_pending = &self->node;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  uint64_t start = 0;  // the clock is read only once the lock is found taken
  uint64_t deadline = 0;
  bool waited = false;
  for (;;) {
    uint32_t v = word->load(std::memory_order_relaxed);
    if ((v & FUTEX_TID_MASK) == 0) {
      // Free (or freed by the kernel for a dead holder). After sleeping, keep
      // the waiters bit: others may still sleep.
      uint32_t mine = tid | (waited ? FUTEX_WAITERS : (v & FUTEX_WAITERS));
      if (!word->compare_exchange_weak(v, mine, std::memory_order_acquire)) continue;
      self->head.list.next = &self->node;  // now held: on the list
      std::atomic_signal_fence(std::memory_order_seq_cst);
      self->head.list_op_pending = nullptr;
      return (v & FUTEX_OWNER_DIED) != 0 ? LockResult::kRecovered : LockResult::kLocked;
    }
    if ((v & FUTEX_WAITERS) == 0 &&
        !word->compare_exchange_weak(v, v | FUTEX_WAITERS, std::memory_order_relaxed)) {
      continue;
    }
    uint64_t now = NowNs();
    if (start == 0) {
      start = now;
      deadline = start + uint64_t{timeout_ms} * 1'000'000;
    }
    if (now >= deadline) {
      self->head.list_op_pending = nullptr;
      return LockResult::kTimedOut;
    }
    FutexWait(word, v | FUTEX_WAITERS, std::min(kSliceNs, deadline - now));
    waited = true;
    if (slow != nullptr && NowNs() - start >= kSliceNs) *slow = true;
  }
}

void UnlockShard(std::atomic<uint32_t>* word) {
  RobustState* self = Self();
  self->head.list_op_pending = &self->node;
  self->head.list.next = &self->head.list;  // off the list
  std::atomic_signal_fence(std::memory_order_seq_cst);
  uint32_t v = word->exchange(0, std::memory_order_release);
  if ((v & FUTEX_WAITERS) != 0) {
    (void)::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, 1, nullptr, nullptr,
                    0);
  }
  std::atomic_signal_fence(std::memory_order_seq_cst);
  self->head.list_op_pending = nullptr;
}

}  // namespace hexz::cache
