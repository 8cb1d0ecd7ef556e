// Source: a read-only object that a snapshot is read from by position.
//
// A snapshot file and each of its parents are read through a Source: a local
// file (FileSource, pread on a descriptor) or a remote object (an HTTP(S) or
// S3 URL, common/remote). The snapshot reader needs nothing else: the size,
// and "these exact bytes at this offset", so a snapshot needs no change to be
// read from anywhere that can answer range reads.
//
// Ownership: a Source owns what it reads from (the descriptor, the
// connections). Thread safety: ReadAt and the accessors may be called from
// many threads at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "common/base/fd.h"
#include "common/base/status.h"

namespace hexz::io {

using base::Result;
using base::Status;
using base::UniqueFd;

class Source {
 public:
  virtual ~Source() = default;
  // The name used in messages: a path, or a URL without credentials or query.
  virtual const std::string& name() const = 0;
  // The object's size, fixed when the source was opened.
  virtual uint64_t size() const = 0;
  // Reads exactly len bytes at offset into buf; [offset, offset + len) lies
  // within size() (the caller checks). Errors name the source.
  virtual Status ReadAt(void* buf, size_t len, uint64_t offset) const = 0;
  // Whether ReadFreshAt may answer with other bytes than ReadAt: a remote
  // object read through a local copy (the disk cache of --disk-cache) that
  // can be damaged. False for a local file: it has nothing fresher.
  virtual bool has_fresh_read() const { return false; }
  // Reads like ReadAt, but from the object itself, past any local copy of
  // the range, which the fresh bytes then replace. Only when
  // has_fresh_read(); otherwise kUnsupported.
  virtual Status ReadFreshAt(void* buf, size_t len, uint64_t offset) const;
  // The local descriptor (borrowed), or -1 for a remote object.
  virtual int fd() const { return -1; }
  // What identifies the object for loop detection in a parent chain: the
  // device and inode of a file, the URL of a remote object.
  virtual std::string identity() const = 0;
};

// A Source over an open regular file or block device. Refuses a directory
// ("is a directory, not a snapshot") and anything whose size is unknown.
Result<std::unique_ptr<Source>> FileSource(UniqueFd fd, std::string name);

}  // namespace hexz::io

namespace hexz::io {

// Opens the objects of a snapshot chain by location (a path, or a URL for an
// opener that knows remote objects) and resolves a parent's location. This
// one opens local files only. Stateless and thread-safe; subclasses say.
class SourceOpener {
 public:
  virtual ~SourceOpener() = default;
  // Opens `location` read-only (a path: O_NONBLOCK, so a FIFO cannot stall).
  virtual Result<std::unique_ptr<Source>> Open(const std::string& location) const;
  // Where the parent named `parent_path` in the file at `child` lives: a
  // relative path is resolved beside the child (base::ResolveBeside).
  virtual Result<std::string> ResolveParent(const std::string& child,
                                            const std::string& parent_path) const;
};

// The shared local-only opener.
const SourceOpener& LocalOpener();

}  // namespace hexz::io
