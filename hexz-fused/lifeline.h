// The worker's one watcher for "time to stop": SIGTERM, SIGINT or SIGHUP
// (when it catches them), or the front-end gone (the control channel at end
// of file: a foreground `hexz mount`/`hexz serve` exited or was killed). A
// --daemon worker does not watch the channel: its front-end has returned.
//
// Ownership: a Lifeline owns its self-pipe and its thread; the signal
// handlers it installs write to that pipe, so only one Lifeline that catches
// signals may exist at a time. Thread safety: Start and Stop from the main
// thread; `on_end` runs on the watcher's thread, at most once.
#pragma once

#include <functional>
#include <memory>
#include <thread>

#include "common/base/fd.h"
#include "common/base/status.h"

namespace hexz::fused {

class Lifeline {
 public:
  enum class Cause { kSignal, kFrontendGone };

  // Starts watching `channel` (when watch_frontend) and, when catch_signals,
  // SIGTERM/SIGINT/SIGHUP (SIGPIPE is then ignored: a vanished client must
  // not kill the worker). `on_end` gets the first cause seen.
  static base::Result<std::unique_ptr<Lifeline>> Start(int channel, bool watch_frontend,
                                                       bool catch_signals,
                                                       std::function<void(Cause)> on_end);

  // Readable once a signal arrived (for loops that poll it themselves).
  int signal_fd() const { return stop_read_.get(); }

  // Stops watching (on_end is not called after this returns) and joins.
  void Stop();
  ~Lifeline() { Stop(); }

 private:
  Lifeline() = default;
  void Watch(int channel, bool watch_frontend);

  base::UniqueFd stop_read_, stop_write_;
  base::UniqueFd quit_read_, quit_write_;  // wakes the watcher for Stop
  std::function<void(Cause)> on_end_;
  std::thread thread_;
};

}  // namespace hexz::fused
