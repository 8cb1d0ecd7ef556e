// MemoryFeed: feeds a snapshot's memory stream (a QEMU migration stream) to a
// QEMU started with `-incoming fd:N`, from this process.
//
// Prepare() makes a socketpair and returns QEMU's end (the caller passes it
// to QEMU as fd N). QEMU starts its incoming migration on it as soon as it
// has initialized, and waits for bytes. Start() then writes the stream into
// our end from a thread, each block checked as it is read; nothing is sent
// before Start, so the caller can still refuse (a QEMU too old). Finish()
// waits for that thread: once QEMU has the whole stream, or has stopped
// reading it (it failed, or exited), or at once when `abort` (the bytes left
// are not sent). Compared with `-incoming exec:hexz cat ...`: no shell, no
// second hexz start, no QMP round trips, and the snapshot is the one already
// opened and checked.
//
// Ownership: shares the snapshot; owns our socket and the thread.
// Thread safety: one thread calls Prepare, Start and Finish; the destructor
// aborts and joins.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "common/base/fd.h"
#include "common/base/status.h"
#include "common/format/snapshot.h"

namespace hexz::cli {

class MemoryFeed {
 public:
  MemoryFeed() = default;
  MemoryFeed(const MemoryFeed&) = delete;
  MemoryFeed& operator=(const MemoryFeed&) = delete;
  ~MemoryFeed() { (void)Finish(/*abort=*/true); }

  // QEMU's end of the stream (close it here once QEMU has it).
  base::Result<base::UniqueFd> Prepare();

  // Starts sending; `name` names the snapshot in errors.
  void Start(std::shared_ptr<const format::Snapshot> snapshot, const std::string& name);

  // Joins the thread; its error (a damaged block, or QEMU stopped reading
  // before the end), or Ok. With `abort`, stops sending first.
  base::Status Finish(bool abort);

  // Bytes sent so far (any thread): the progress of the incoming migration.
  uint64_t sent() const { return sent_.load(std::memory_order_relaxed); }

 private:
  void Run();

  std::shared_ptr<const format::Snapshot> snapshot_;
  std::string name_;
  base::UniqueFd socket_;  // our end; QEMU holds the other
  std::thread thread_;
  base::Status status_;  // written by the thread, read after join
  std::atomic<uint64_t> sent_{0};
};

}  // namespace hexz::cli
