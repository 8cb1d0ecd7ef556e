// ProgressBar: a one-line progress bar on stderr, for long front-end work
// (pack, commit). Callers only create one when stderr is a
// terminal. Not thread-safe: update it from one thread.
#pragma once

#include <cstdint>

namespace hexz::cli {

class ProgressBar {
 public:
  ProgressBar();
  // Redraws at most every 0.1 s, unless final (which also ends the line).
  void Update(uint64_t done, uint64_t total, bool final = false);

 private:
  double start_;
  double last_ = 0;
};

}  // namespace hexz::cli
