// Removes a writer's temporary output (.NAME.tmp-XXXXXX, see
// format::SnapshotWriter) if this process is killed: SIGKILL leaves no chance
// to clean up, so a watchdog child holds the read end of a pipe; when that
// reaches end of file without "done", the writer died, and the child unlinks
// the file, but only if that name is still the very file (device and inode)
// this process had open. Used by `hexz pack` and `hexz commit`.
//
// Ownership: owns the watchdog child and the pipe's write end; Stop (or the
// destructor) ends and reaps the child. Thread safety: one thread; the child
// uses async-signal-safe calls only, as the parent may have threads.
#pragma once

#include <sys/types.h>

#include <string>

namespace hexz::cli {

class TempFileWatchdog {
 public:
  TempFileWatchdog() = default;
  TempFileWatchdog(const TempFileWatchdog&) = delete;
  TempFileWatchdog& operator=(const TempFileWatchdog&) = delete;
  ~TempFileWatchdog() { Stop(); }

  // Finds the temporary file for `output` that this process holds open and
  // starts watching it. Best effort: without one (or when fork fails),
  // nothing is watched.
  void Start(const std::string& output);

  // The write finished (the file was renamed or removed): the watchdog exits.
  void Stop();

 private:
  int pipe_ = -1;
  pid_t pid_ = -1;
};

}  // namespace hexz::cli
