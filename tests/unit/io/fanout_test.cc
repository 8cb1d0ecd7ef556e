// PieceFanout: pieces split at piece boundaries cover the request, run in
// parallel, and report the first error.
#include "common/io/fanout.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <tuple>
#include <vector>

namespace hexz::io {
namespace {

using base::Status;

TEST(PieceFanoutTest, SplitsAtBlockBoundariesAndCoversTheRange) {
  PieceFanout fanout(4);
  std::mutex mu;
  std::vector<std::tuple<uint64_t, uint64_t, uint64_t>> pieces;
  Status st =
      fanout.ForEachPiece(1000, 300000, 65536, [&](uint64_t off, uint64_t len, uint64_t pos) {
        std::lock_guard<std::mutex> lock(mu);
        pieces.emplace_back(off, len, pos);
        return Status::Ok();
      });
  ASSERT_TRUE(st.ok());
  std::sort(pieces.begin(), pieces.end());
  ASSERT_EQ(pieces.size(), 5u);  // [1000,65536) ... [262144,301000)
  uint64_t expect = 1000;
  for (auto [off, len, pos] : pieces) {
    EXPECT_EQ(off, expect);
    EXPECT_EQ(pos, off - 1000);
    EXPECT_TRUE(off % 65536 == 0 || off == 1000);
    expect = off + len;
  }
  EXPECT_EQ(expect, 301000u);
}

TEST(PieceFanoutTest, RunsPiecesInParallel) {
  PieceFanout fanout(4);
  std::mutex mu;
  std::condition_variable cv;
  int running = 0, max_running = 0;
  Status st = fanout.ForEachPiece(0, 16 * 4096, 4096, [&](uint64_t, uint64_t, uint64_t) {
    std::unique_lock<std::mutex> lock(mu);
    max_running = std::max(max_running, ++running);
    cv.notify_all();
    // Wait (bounded) until a second piece runs at the same time.
    cv.wait_for(lock, std::chrono::seconds(10), [&] { return max_running >= 2; });
    --running;
    return Status::Ok();
  });
  ASSERT_TRUE(st.ok());
  EXPECT_GE(max_running, 2);
}

TEST(PieceFanoutTest, ReportsAnError) {
  PieceFanout fanout(3);
  Status st = fanout.ForEachPiece(0, 10 * 512, 512, [](uint64_t off, uint64_t, uint64_t) {
    return off == 3 * 512 ? Status::Corruption("block 3 checksum mismatch") : Status::Ok();
  });
  EXPECT_EQ(st.code(), base::Code::kCorruption);
  EXPECT_EQ(st.message(), "block 3 checksum mismatch");
}

TEST(PieceFanoutTest, RefusesAPieceSizeThatIsNotAPowerOfTwo) {
  PieceFanout fanout(2);
  int calls = 0;
  Status st = fanout.ForEachPiece(0, 100000, 3000, [&](uint64_t, uint64_t, uint64_t) {
    ++calls;
    return Status::Ok();
  });
  EXPECT_EQ(st.code(), base::Code::kInternal);
  EXPECT_EQ(calls, 0);
}

TEST(PieceFanoutTest, ManyRequestsAtOnceShareTheHelpers) {
  PieceFanout fanout(3);
  std::vector<std::thread> callers;
  std::atomic<uint64_t> covered{0};
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        Status st = fanout.ForEachPiece(4096 * i + 7, 20 * 4096, 4096,
                                        [&](uint64_t, uint64_t len, uint64_t) {
                                          covered += len;
                                          return Status::Ok();
                                        });
        EXPECT_TRUE(st.ok()) << st.ToString();
      }
    });
  }
  for (auto& c : callers) c.join();
  EXPECT_EQ(covered.load(), 4u * 50 * 20 * 4096);
}

}  // namespace
}  // namespace hexz::io
