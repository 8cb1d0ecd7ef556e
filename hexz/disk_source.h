// DiskSource: where `hexz pack` reads a disk (or memory) image from.
//
// A raw file or block device is read directly (holes found with
// SEEK_DATA/SEEK_HOLE). A container (qcow2, VMDK, VHDX, VDI, VPC), detected
// by its magic, is read through qemu-nbd, which libnbd starts with socket
// activation (read-only, with the format named explicitly, never probed) and
// asks for block status, so holes and zeros are skipped without reading; hexz
// parses no container bytes itself. An NBD URI is read through libnbd the
// same way, and "-" (stdin) is read as a stream of unknown length.
//
// This lives in the front-end only: qemu-nbd runs as the user, unsandboxed,
// like qemu-img would.
//
// Ownership: a DiskSource owns its descriptor or NBD handle (and so the
// qemu-nbd process, which ends when the source is destroyed).
// Thread safety: one thread at a time.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common/base/fd.h"
#include "common/base/status.h"
#include "common/format/snapshot.h"
#include "common/format/writer.h"

namespace hexz::cli {

using base::Result;
using base::Status;

// The formats hexz reads ("raw" and the containers it hands to qemu-nbd).
inline constexpr const char* kDiskFormats[] = {"raw", "qcow2", "vmdk", "vhdx", "vdi", "vpc"};

// What the first (`head`) and last (`tail`) bytes of an image say it is:
// "raw" or a container of kDiskFormats. A format hexz does not read (QED,
// LUKS, a compressed file, a hexz snapshot...) is refused by name with a
// hint on what to do. `name` is used in messages. tail may be empty.
Result<std::string> DetectFormat(const uint8_t* head, size_t head_len, const uint8_t* tail,
                                 size_t tail_len, const std::string& name);

class DiskSource {
 public:
  virtual ~DiskSource() = default;

  // Size in bytes, or nullopt for a stream whose size is known at its end.
  virtual std::optional<uint64_t> size() const = 0;
  // "raw", "qcow2", ..., or "nbd" for an NBD URI.
  virtual const std::string& format() const = 0;
  // The file read (for the "output is also an input" check), if any.
  virtual std::optional<std::pair<dev_t, ino_t>> file_id() const { return std::nullopt; }

  // Reads up to `len` bytes at `offset`; offsets come in increasing order.
  // Returns the bytes read: `len`, less only at the end of a stream, 0 at
  // its end. When the range is known to read as zeros, sets *zero and leaves
  // `buf` untouched.
  virtual Result<size_t> Read(uint64_t offset, void* buf, size_t len, bool* zero) = 0;
};

// Opens `spec`: a path (regular file, block device), "-" for stdin, or an NBD
// URI (nbd://, nbds://, nbd+unix://, nbds+unix://, nbd+vsock://).
// `forced_format` ("" = detect) overrides detection for a path.
// The qemu-nbd used is $HEXZ_QEMU_NBD if set, else the one in PATH.
Result<std::unique_ptr<DiskSource>> OpenDiskSource(const std::string& spec,
                                                   const std::string& forced_format);

// A stream of unknown length read from `fd` (a pipe), named `name` in
// messages; like "-" for stdin.
std::unique_ptr<DiskSource> OpenStreamSource(base::UniqueFd fd, const std::string& name);

struct PackSourceStats {
  uint64_t blocks = 0;         // blocks of the stream
  uint64_t parent_blocks = 0;  // blocks equal to the parent's, stored as references
};

// Packs `source` as `stream` of `writer` (BeginStream .. EndStream). With a
// `parent` (the writer is thin and names it), a block whose bytes equal the
// parent chain's at the same place becomes a parent reference; every other
// block is stored. Zero ranges are never read.
Result<PackSourceStats> PackSource(format::SnapshotWriter* writer, DiskSource* source,
                                   const std::string& name, format::StreamId stream,
                                   const format::Snapshot* parent);

}  // namespace hexz::cli
