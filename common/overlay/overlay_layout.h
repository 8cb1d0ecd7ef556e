// The byte layout of overlay files (format version 2), as specified in
// FORMAT.md (overlay part). Offsets and sizes only; the code that reads and writes
// them is overlay.cc. Header-only constants; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>

namespace hexz::overlay::layout {

inline constexpr char kDataMagic[8] = {'H', 'X', 'Z', 'O', 'V', 'D', 'A', 'T'};
inline constexpr char kMetaMagic[8] = {'H', 'X', 'Z', 'O', 'V', 'M', 'E', 'T'};
inline constexpr char kRecordMagic[4] = {'H', 'X', 'Z', 'R'};
inline constexpr uint32_t kVersion = 2;
// Format 1 (XXH64, no data checksums) is recognized only to be refused.
inline constexpr uint32_t kOldVersion = 1;

// Data header (offset 0 of the data file) and superblocks: 128 bytes used,
// XXH3-64 of bytes [0, 120) at offset 120.
inline constexpr size_t kHeaderBytes = 128;
inline constexpr size_t kHeaderChecksumAt = 120;
// Superblock copy g % 2 holds generation g.
inline constexpr uint64_t kSuperblockOffset[2] = {0, 4096};
// The log area of the meta file starts here.
inline constexpr uint64_t kLogBase = 8192;

// Log records start at a multiple of kSector and are zero-padded to a
// multiple of it. A 48-byte header, then count 16-byte entries. The body
// checksum (offset 32) is XXH3-64 of the entries; the header checksum
// (offset 40) is XXH3-64 of header bytes [0, 40).
inline constexpr size_t kSector = 512;
inline constexpr size_t kRecordHeaderBytes = 48;
inline constexpr size_t kRecordCountAt = 24;
inline constexpr size_t kRecordBodyChecksumAt = 32;
inline constexpr size_t kRecordHeaderChecksumAt = 40;
inline constexpr size_t kEntryBytes = 16;
inline constexpr uint16_t kRecordDelta = 1;
inline constexpr uint16_t kRecordCheckpoint = 2;
inline constexpr uint64_t kFirstSeq = 1;
// Checkpoints start at a multiple of this.
inline constexpr uint64_t kCheckpointAlign = 4096;

// Entry values (in memory and in log records). 0 never appears in a record.
inline constexpr uint32_t kEntryBase = 0;
inline constexpr uint32_t kEntryZero = 1;
inline constexpr uint32_t kEntryFirstSlot = 2;  // slot s is stored as s + 2

}  // namespace hexz::overlay::layout
