// IndexSpill: the index entries of a snapshot being written, in the order of
// the index, held in a bounded buffer and spilled to an unlinked temp file
// when the buffer fills. A writer's memory therefore does not grow with the
// size of its input: at 24 bytes per block, the index of a 1 TiB disk of
// 64 KiB blocks is 384 MiB, which pack keeps on disk instead of in RSS.
//
// The spill file is created on first need with O_TMPFILE in `dir` (the
// output's directory, where the index ends up anyway), or as a named temp
// file that is unlinked at once where O_TMPFILE is not supported: nothing is
// ever left behind. The bytes read back are checked against a checksum taken
// when they were written.
//
// Ownership: owns its buffer and the spill file's descriptor. Thread safety:
// one thread at a time (the writer thread appends; Finish reads it back).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/base/fd.h"
#include "common/base/status.h"
#include "common/format/layout.h"

namespace hexz::format {

// An unlinked temp file in `dir` for scratch data (O_TMPFILE, or a named temp
// file unlinked at once where that is not supported): nothing is ever left
// behind. An error names `what`.
base::Result<base::UniqueFd> CreateUnlinkedTemp(const std::string& dir, const std::string& what);

class IndexSpill {
 public:
  // `dir`: where the spill file goes; `name`: the output, for messages.
  // `buffer_bytes` is rounded down to whole entries (at least one).
  IndexSpill(std::string dir, std::string name, size_t buffer_bytes = size_t{1} << 20);
  ~IndexSpill();
  IndexSpill(const IndexSpill&) = delete;
  IndexSpill& operator=(const IndexSpill&) = delete;

  // Encodes `e` after the entries appended so far.
  base::Status Append(const layout::Entry& e);
  uint64_t count() const { return count_; }
  // Bytes written to the spill file so far (0 while everything fits in the buffer).
  uint64_t spilled_bytes() const { return spilled_; }

  // Calls `piece` with all encoded entries in order, in pieces of at most
  // the buffer size; stops at the first error. The spill file's bytes that
  // do not match what was written give kCorruption.
  base::Status ForEachPiece(const std::function<base::Status(const uint8_t*, size_t)>& piece);

 private:
  base::Status Spill();

  std::string dir_, name_;
  size_t capacity_;
  std::vector<uint8_t> buf_;
  base::UniqueFd fd_;
  uint64_t spilled_ = 0, count_ = 0;
  std::unique_ptr<layout::Hasher> written_hash_;
};

}  // namespace hexz::format
