// Readahead: reads the next range of a sequential stream ahead, on a thread
// of its own, so that the next request of a sequential reader finds its
// bytes already read (decompressed) and only copies them.
//
// Each stream (one per file the caller serves, numbered from 0) is
// detected as sequential when a request starts where the previous one of
// the same stream ended; only then is the range of the same length after it
// read ahead, clipped at the end of the volume. Random requests never start
// a read ahead. A stream keeps at most kSlots ranges of at most kMaxRange
// bytes each, so the memory is bounded per stream.
//
// The bytes are read with Volume::Read, which checks them exactly as a
// request would; a failed read ahead is dropped and the request reads (and
// reports) normally. The ranges are kept without invalidation: use this only
// for volumes whose contents never change (a read-only mount).
//
// Ownership: owns its thread (joined by the destructor) and the buffers; the
// volumes passed to Read must outlive it. Thread safety: Read may be called
// from many threads at once, for any streams.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/base/status.h"
#include "common/io/volume.h"

namespace hexz::io {

class Readahead {
 public:
  static constexpr int kSlots = 3;
  static constexpr size_t kMaxRange = 256 * 1024;

  Readahead();
  ~Readahead();
  Readahead(const Readahead&) = delete;
  Readahead& operator=(const Readahead&) = delete;

  // When a range read ahead covers [offset, offset + len) of `volume`
  // (stream `stream`), waits for it if it is still being read, calls
  // use(bytes) with a pointer to those len bytes (valid during the call) and
  // returns true; otherwise returns false and the caller reads the volume
  // itself. Either way, starts the read ahead of the next range when the
  // request is sequential. use must not call Read.
  template <typename Fn>
  bool Read(size_t stream, Volume* volume, uint64_t offset, size_t len, const Fn& use) {
    Slot* slot = Claim(stream, volume, offset, len);
    if (slot == nullptr) return false;
    use(SlotBytes(slot, offset));
    Release(slot);
    return true;
  }

  // Counters for tests and logs.
  uint64_t hits() const;
  uint64_t ahead_reads() const;

 private:
  struct Slot;
  struct Stream;
  // The slot holding the range, held for the caller (nullptr: none).
  Slot* Claim(size_t stream, Volume* volume, uint64_t offset, size_t len);
  static const uint8_t* SlotBytes(const Slot* slot, uint64_t offset);
  void Release(Slot* slot);
  void Schedule(Stream& s, Volume* volume, uint64_t offset, size_t len);
  void Loop();

  mutable std::mutex mu_;
  std::condition_variable work_cv_;               // Loop waits for queue_ or stop_
  std::condition_variable done_cv_;               // Take waits for a slot being read
  std::vector<std::unique_ptr<Stream>> streams_;  // guarded by mu_; grown on first use
  std::deque<Slot*> queue_;                       // guarded by mu_
  bool stop_ = false;                             // guarded by mu_
  uint64_t hits_ = 0;                             // guarded by mu_
  uint64_t ahead_reads_ = 0;                      // guarded by mu_
  std::thread thread_;
};

}  // namespace hexz::io
