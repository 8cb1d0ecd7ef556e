#include "common/io/fanout.h"

#include <algorithm>
#include <atomic>
#include <string>

#include "common/base/checked_math.h"

namespace hexz::io {

using base::Status;

struct PieceFanout::Job {
  uint64_t offset = 0;
  uint64_t len = 0;
  uint32_t piece_size = 0;
  uint64_t pieces = 0;
  const PieceFn* fn = nullptr;
  std::atomic<uint64_t> next{0};
  std::mutex mu;
  std::condition_variable done_cv;
  uint64_t done = 0;   // guarded by mu
  Status first_error;  // guarded by mu
};

PieceFanout::PieceFanout(uint32_t threads) {
  for (uint32_t i = 1; i < std::max<uint32_t>(threads, 1); ++i) {
    threads_.emplace_back([this] { WorkerLoop(); });
  }
}

PieceFanout::~PieceFanout() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void PieceFanout::RunPieces(Job& job) {
  for (;;) {
    uint64_t i = job.next.fetch_add(1);
    if (i >= job.pieces) return;
    // Piece i covers [start, end) clipped to the request.
    uint64_t first_piece = job.offset / job.piece_size;
    uint64_t start = std::max(job.offset, (first_piece + i) * job.piece_size);
    uint64_t end = std::min(job.offset + job.len, (first_piece + i + 1) * job.piece_size);
    Status st = (*job.fn)(start, end - start, start - job.offset);
    std::lock_guard<std::mutex> lock(job.mu);
    if (!st.ok() && job.first_error.ok()) job.first_error = st;
    if (++job.done == job.pieces) job.done_cv.notify_all();
  }
}

void PieceFanout::WorkerLoop() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      job = queue_.front();
      // Leave the job queued while pieces remain, so other threads help too.
      if (job->next.load() + 1 >= job->pieces) queue_.pop_front();
    }
    RunPieces(*job);
    std::lock_guard<std::mutex> lock(mu_);
    if (!queue_.empty() && queue_.front() == job) queue_.pop_front();
  }
}

Status PieceFanout::ForEachPiece(uint64_t offset, uint64_t len, uint32_t piece_size,
                                 const PieceFn& fn) {
  if (len == 0) return Status::Ok();
  if (piece_size == 0 || (piece_size & (piece_size - 1)) != 0) {
    return Status::Internal("fan-out: piece size " + std::to_string(piece_size) +
                            " is not a power of two");
  }
  auto end = base::CheckedAdd(offset, len);
  if (!end) return Status::OutOfRange("fan-out: offset + length overflows");
  uint64_t first = offset / piece_size;
  uint64_t last = (*end - 1) / piece_size;
  uint64_t pieces = last - first + 1;
  if (pieces == 1 || threads_.empty()) return fn(offset, len, 0);

  auto job = std::make_shared<Job>();
  job->offset = offset;
  job->len = len;
  job->piece_size = piece_size;
  job->pieces = pieces;
  job->fn = &fn;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(job);
  }
  cv_.notify_all();
  RunPieces(*job);
  std::unique_lock<std::mutex> lock(job->mu);
  job->done_cv.wait(lock, [&] { return job->done == job->pieces; });
  return job->first_error;
}

}  // namespace hexz::io
