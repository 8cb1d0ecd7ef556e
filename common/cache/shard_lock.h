// ShardLock: a lock shared by processes in one 32-bit word of shared memory,
// for the shards of the shared block cache (shm_cache.h).
//
// Why not a robust pthread mutex: glibc links robust mutexes into a per-thread
// list through pointers stored inside the mutex, and follows them on unlock;
// in memory that every worker of the user can write, a compromised worker
// could make a sibling write wherever it likes. Here the shared word holds
// only the holder's thread id and two flag bits; nothing read from it is
// ever used as an address.
//
// Crash safety: the kernel's robust-futex mechanism still frees the lock of
// a thread that dies holding it, but the list it walks lives in the thread's
// own memory: each thread registers (set_robust_list) a private list head and
// one private node, and points the head's futex_offset at the one word it is
// taking (a thread holds at most one shard lock at a time). When the holder
// dies, the kernel marks the word FUTEX_OWNER_DIED and wakes a waiter, which
// gets kRecovered and must treat what the lock protects as torn. The same
// happens to a lock word whose holder died without the kernel's help (a
// forged or stale id): waiters give up after their timeout.
//
// Registering replaces glibc's own robust-list head for the calling thread,
// so the thread must not also use robust pthread mutexes (hexz does not).
// System calls: futex (only when another holder has the lock), gettid and
// set_robust_list once per thread (again in a child after fork(), which a
// pthread_atfork handler counts; a process made by a bare clone() without
// fork()'s handlers must not use the lock).
//
// Thread safety: any number of threads and processes; a thread must not take
// a second ShardLock before it releases the first.
#pragma once

#include <atomic>
#include <cstdint>

namespace hexz::cache {

enum class LockResult {
  kLocked,
  kRecovered,  // locked; the previous holder died holding it
  kTimedOut,
};

// Takes the lock at `word` (0 when free), sleeping in slices of 20 ms (a
// wake-up lost to a holder killed mid-unlock costs one slice) for up to
// timeout_ms. *slow is set when it waited longer than one slice.
LockResult LockShard(std::atomic<uint32_t>* word, uint32_t timeout_ms, bool* slow);
// Releases a lock taken by this thread.
void UnlockShard(std::atomic<uint32_t>* word);

}  // namespace hexz::cache
