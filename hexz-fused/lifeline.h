// The worker's one watcher for "time to stop": SIGTERM, SIGINT or SIGHUP
// (when it catches them), or the front-end gone (the control channel at end
// of file: a foreground `hexz mount`/`hexz serve` exited or was killed). A
// --daemon worker does not watch the channel: its front-end has returned.
//
// Ownership: a Lifeline owns its self-pipe and its thread; the signal
// handlers it installs write to that pipe, so only one Lifeline that catches
// signals may exist at a time. Thread safety: Start and Stop from the main
// thread; `on_end` runs on the watcher's thread, at most once, and so does
// every `on_message`.
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
  // With `on_message`, bytes arriving on the watched channel are a request
  // of the front-end: the watcher's thread calls on_message(channel), which
  // reads and answers it; an error from it (the channel is out of step)
  // stops the channel being watched. Without it, such bytes do that at once.
  static base::Result<std::unique_ptr<Lifeline>> Start(
      int channel, bool watch_frontend, bool catch_signals, std::function<void(Cause)> on_end,
      std::function<base::Status(int channel)> on_message = nullptr);

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
  std::function<base::Status(int)> on_message_;
  std::thread thread_;
};

}  // namespace hexz::fused
