// VolumeFs: a libfuse low-level filesystem that shows a few Volumes as
// regular files in one flat directory (hexz-fused shows `disk` and, when
// present, `memory`). Read-only by default; with FsOptions::read_write the
// files marked `writable` (the disk of a --rw mount) take writes.
//
// Life cycle: construct with the files and options, Mount() (creates the
// session and mounts; this is the last step that needs to open anything),
// then Serve() runs the multi-threaded session loop until the mount goes away
// (unmount, or the kernel aborts the connection) or Exit() is called.
// `on_ready` is called once, from a loop thread, when the kernel's INIT has
// been answered: from then on the mount is usable.
//
// Reads: a request is clamped to the file size and split at block boundaries;
// a request spanning several blocks is read by up to `read_threads` threads at
// once (the requesting thread plus the helpers of an io::PieceFanout), so
// decompression runs in parallel. In a read-only mount, a file read
// sequentially (each request starting where the previous one ended) has the
// range after each request read ahead on a thread of its own (io::Readahead,
// FsOptions::readahead), so that the next request only copies it. In
// read-only mode every modifying operation answers EROFS.
//
// Read-write mode (FsOptions::read_write; mount option rw):
//   - a writable file takes write (split like reads and fanned out alike),
//     fallocate PUNCH_HOLE / ZERO_RANGE (Volume::WriteZeroes); other
//     fallocate modes get EOPNOTSUPP;
//   - durability: fsync, flush (every close(2)) and release of a writable
//     file call Volume::Flush() and report its error;
//   - sizes are fixed: a write, or zeroing, that ends past the end fails as
//     a whole with ENOSPC (the Volume says so); truncate to another size
//     (also open with O_TRUNC) fails with EPERM; truncate to the same size
//     succeeds and changes nothing;
//   - mode, owner and times are fixed: chmod, chown and utimens fail with
//     EPERM; the directory takes no new entries (EPERM);
//   - a file that is not writable (memory) refuses open for writing with
//     EACCES and shows mode 0444 (a writable one 0644).
//
// Ownership: owns the volumes, the session, the fan-out and the readahead. Thread safety: the
// libfuse callbacks run concurrently; the volumes must allow concurrent reads
// (io::Volume promises that). Mount/Serve/Exit are called by one thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/base/status.h"
#include "common/io/fanout.h"
#include "common/io/readahead.h"
#include "common/io/volume.h"

struct fuse_session;

namespace hexz::fuse {

struct File {
  std::string name;
  std::unique_ptr<io::Volume> volume;
  bool writable = false;  // takes writes when FsOptions::read_write
  // Requests are split into pieces of this many bytes (a power of two) for
  // the fan-out; 0 means volume->BlockSize(). The disk of a --rw mount uses the
  // snapshot's block size, so one piece decompresses one snapshot block.
  uint32_t io_size = 0;
  // Reads and writes bypass the page cache (FOPEN_DIRECT_IO): for files that
  // alias each other's bytes while one of them takes writes (the disk and
  // its partition files in a --rw mount), so no file shows stale pages.
  bool direct_io = false;
};

struct FsOptions {
  uid_t uid = 0;
  gid_t gid = 0;
  struct timespec mtime = {};  // shown for every entry
  uint32_t read_threads = 4;   // parallel block reads per request (>= 1)
  // Sequential readers of a read-only mount get the next range read ahead;
  // ignored (off) in read-write mode, where ranges kept would go stale.
  bool readahead = true;
  // Kernel allow_other, with libfuse's check that the caller is the owner
  // or root (allow_root), or for everybody (allow_other). Off by default:
  // the mount is then the user's alone, and nobody else's process can hang
  // on it when the worker stops answering.
  bool allow_root = false;
  bool allow_other = false;
  bool auto_unmount = false;
  bool read_write = false;  // mount rw; files marked writable take writes
  // Serve() returns on SIGTERM, SIGINT or SIGHUP (libfuse's handlers), so
  // that the caller can flush before it exits.
  bool exit_on_signals = false;
  std::string fsname = "hexz";
  std::function<void()> on_ready;
};

class VolumeFs {
 public:
  VolumeFs(std::vector<File> files, FsOptions options);
  ~VolumeFs();
  VolumeFs(const VolumeFs&) = delete;
  VolumeFs& operator=(const VolumeFs&) = delete;

  // Creates the session and mounts it on `mountpoint` (which must exist).
  base::Status Mount(const std::string& mountpoint);
  // Appends files after Mount() and before Serve(), from the thread that
  // calls both: no request is answered before Serve(), and the callbacks
  // read the list without a lock. (hexz-fused adds the partition files
  // here, once sandboxed.)
  void AddFiles(std::vector<File> files);
  // Runs the session loop until the filesystem is unmounted.
  base::Status Serve();
  // Makes Serve() return (the mount stays until someone unmounts it).
  void Exit();
  // Unmounts (only before lockdown or in tests: it may run fusermount3).
  void Unmount();

  // For the callbacks.
  const std::vector<File>& files() const { return files_; }
  const FsOptions& options() const { return options_; }
  io::PieceFanout& fanout() { return fanout_; }
  io::Readahead* readahead() { return readahead_.get(); }  // null when off
  void NotifyReady();

 private:
  std::vector<File> files_;
  FsOptions options_;
  io::PieceFanout fanout_;
  std::unique_ptr<io::Readahead> readahead_;
  struct fuse_session* session_ = nullptr;
  bool mounted_ = false;
  std::once_flag ready_once_;
};

// Checks that /dev/fuse (or `path`) can be opened read-write and is the FUSE
// character device; the message says what to do when it is not.
base::Status CheckFuseDevice(const std::string& path = "/dev/fuse");

}  // namespace hexz::fuse
