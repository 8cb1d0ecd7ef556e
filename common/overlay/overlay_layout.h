// The byte layout of overlay files (format version 1), as specified in
// FORMAT.md (overlay part). Offsets and sizes only; the code that reads and writes
// them is overlay.cc. Header-only constants; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>

namespace hexz::overlay::layout {

inline constexpr char kDataMagic[8] = {'H', 'X', 'Z', 'O', 'V', 'D', 'A', 'T'};
inline constexpr char kMetaMagic[8] = {'H', 'X', 'Z', 'O', 'V', 'M', 'E', 'T'};
inline constexpr char kRecordMagic[4] = {'H', 'X', 'Z', 'R'};
inline constexpr uint32_t kVersion = 1;

// Data header (offset 0 of the data file) and superblocks: 128 bytes used,
// XXH64 (seed 0) of bytes [0, 120) at offset 120.
inline constexpr size_t kHeaderBytes = 128;
inline constexpr size_t kHeaderChecksumAt = 120;
// Superblock copy g % 2 holds generation g.
inline constexpr uint64_t kSuperblockOffset[2] = {0, 4096};
// The log area of the meta file starts here.
inline constexpr uint64_t kLogBase = 8192;

// Log records: a 40-byte header, then count 8-byte entries. The checksum at
// offset 32 is XXH64 over header bytes [0, 32) followed by the entries.
inline constexpr size_t kRecordHeaderBytes = 40;
inline constexpr size_t kRecordChecksumAt = 32;
inline constexpr size_t kRecordCountAt = 24;
inline constexpr size_t kEntryBytes = 8;
inline constexpr uint16_t kRecordDelta = 1;
inline constexpr uint16_t kRecordCheckpoint = 2;
inline constexpr uint64_t kFirstSeq = 1;

// Entry values (in memory and in log records).
inline constexpr uint32_t kEntryBase = 0;
inline constexpr uint32_t kEntryZero = 1;
inline constexpr uint32_t kEntryFirstSlot = 2;  // slot s is stored as s + 2

}  // namespace hexz::overlay::layout
