// Volume: a byte-addressable stream that FUSE and NBD serve.
//
// A snapshot stream (read-only), or a snapshot disk plus a copy-on-write
// overlay (read-write), are both Volumes. The FUSE worker and the NBD server
// only ever talk to this interface, so both edges behave alike.
//
// Thread safety: every method may be called concurrently from many threads.
// Implementations must make Read() of a range concurrent with Write() of an
// overlapping range return, per 4 KiB block, either the old or the new bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/base/status.h"

namespace hexz::io {

struct Extent {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool zero = false;  // reads return zeros
  bool hole = false;  // no storage allocated (implies zero)
};

class Volume {
 public:
  virtual ~Volume() = default;

  virtual uint64_t Size() const = 0;
  // The natural I/O unit (the snapshot's block size), a power of two.
  virtual uint32_t BlockSize() const = 0;
  virtual bool Writable() const { return false; }

  // Reads exactly len bytes; the range must lie within Size().
  virtual base::Status Read(uint64_t offset, void* buf, size_t len) = 0;

  // With fua, the data is durable when the call returns.
  virtual base::Status Write(uint64_t offset, const void* buf, size_t len, bool fua);
  virtual base::Status WriteZeroes(uint64_t offset, uint64_t len, bool fua);
  virtual base::Status Trim(uint64_t offset, uint64_t len);
  // Makes every write acknowledged so far durable.
  virtual base::Status Flush();

  // Describes [offset, offset+len) as a list of extents in order, covering
  // at least the first byte. The default reports one data extent.
  virtual base::Status Extents(uint64_t offset, uint64_t len, std::vector<Extent>* out);
};

}  // namespace hexz::io
