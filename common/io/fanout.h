// PieceFanout: runs one request as pieces on several threads at once.
//
// ForEachPiece splits [offset, offset+len) at multiples of a piece size (a
// power of two: a Volume's block size, so one piece decompresses one
// snapshot block) and calls fn once per piece, on the caller's thread and on
// up to threads-1 helper threads the fan-out owns. It returns when every
// piece has run, with the first error. The FUSE filesystem splits reads and
// writes this way and the NBD server its reads, so a large request
// decompresses its blocks in parallel.
//
// Ownership: owns its helper threads (joined by the destructor). Thread
// safety: ForEachPiece may be called from many threads at once; the pieces
// of concurrent requests share the helpers. fn must be safe to call
// concurrently with itself.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/base/status.h"

namespace hexz::io {

class PieceFanout {
 public:
  // fn(offset, len, buf_pos): one piece; buf_pos is offset minus the
  // request's offset (where the piece's bytes go in the caller's buffer).
  using PieceFn = std::function<base::Status(uint64_t offset, uint64_t len, uint64_t buf_pos)>;

  // At most `threads` pieces of one request run at once (the caller plus
  // threads-1 helpers). With 1 (or 0), fn gets the whole request as one
  // call on the caller's thread.
  explicit PieceFanout(uint32_t threads);
  ~PieceFanout();
  PieceFanout(const PieceFanout&) = delete;
  PieceFanout& operator=(const PieceFanout&) = delete;

  // A request within one piece runs on the caller's thread alone. Fails
  // (without calling fn) when piece_size is not a power of two or the range
  // overflows.
  base::Status ForEachPiece(uint64_t offset, uint64_t len, uint32_t piece_size, const PieceFn& fn);

 private:
  struct Job;
  void WorkerLoop();
  static void RunPieces(Job& job);

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;  // guarded by mu_
  bool stop_ = false;                       // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace hexz::io
