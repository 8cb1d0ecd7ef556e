// layout.h: the on-disk constants and structures of the hexz snapshot format.
//
// FORMAT.md is the prose specification; this header is its only encoding in
// code. Everything is little-endian and fixed-width. Encode/Decode functions
// convert between the packed byte form and plain structs; they check nothing
// beyond what their comments say (validation lives in the reader).
//
// Thread safety: constants and pure functions only.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace hexz::format::layout {

// ---- header (offset 0, kHeaderSize bytes) ----
inline constexpr std::array<uint8_t, 8> kHeaderMagic = {'H', 'E', 'X', 'Z', 'S', 'N', 'A', 'P'};
inline constexpr uint32_t kVersion = 1;
inline constexpr uint32_t kHeaderSize = 64;
// Header feature flags. Bits not listed are reserved: a reader rejects them.
inline constexpr uint32_t kFlagThin = 1u << 0;       // the snapshot has a parent
inline constexpr uint32_t kFlagHasMemory = 1u << 1;  // the memory stream is present
inline constexpr uint32_t kKnownFlags = kFlagThin | kFlagHasMemory;

// ---- footer (the last kFooterSize bytes of the file) ----
inline constexpr std::array<uint8_t, 8> kFooterMagic = {'H', 'E', 'X', 'Z', 'F', 'O', 'O', 'T'};
inline constexpr uint32_t kFooterSize = 64;

// ---- index (at footer.index_offset) ----
inline constexpr uint32_t kIndexHeaderSize = 64;
inline constexpr uint32_t kEntrySize = 24;

// ---- limits: the writer never exceeds them, the reader refuses beyond ----
inline constexpr uint32_t kMinBlockSizeLog2 = 12;  // 4 KiB
inline constexpr uint32_t kMaxBlockSizeLog2 = 20;  // 1 MiB
inline constexpr uint32_t kDefaultBlockSize = 64 * 1024;
inline constexpr uint32_t kMaxParentPath = 4096;        // bytes, no NUL
inline constexpr uint64_t kMaxIndexSize = 1ull << 30;   // 1 GiB
inline constexpr uint64_t kMaxStreamSize = 1ull << 52;  // 4 PiB
inline constexpr uint32_t kMaxChainDepth = 64;          // hard cap on parents

// Block kinds (entry byte 12). Other values are reserved: rejected.
enum class Kind : uint8_t { kZero = 0, kStored = 1, kDedup = 2, kParent = 3 };

struct Header {
  uint32_t version = kVersion;
  uint32_t header_size = kHeaderSize;
  uint32_t block_size_log2 = 16;
  uint32_t flags = 0;
  uint32_t unused = 0;  // writer's hint bits; readers ignore them (still checksummed)
  std::array<uint8_t, 16> id{};
};

struct Footer {
  uint64_t index_offset = 0;
  uint64_t index_length = 0;
  uint64_t index_checksum = 0;
  uint64_t file_size = 0;
  std::array<uint8_t, 16> id{};
};

struct IndexHeader {
  uint64_t stream_size[2] = {0, 0};  // disk, memory (logical bytes)
  uint64_t entry_count[2] = {0, 0};
  std::array<uint8_t, 16> parent_id{};
  uint32_t parent_path_length = 0;
};

struct Entry {
  uint64_t offset = 0;  // file offset of the stored bytes (stored/dedup), else 0
  uint32_t stored_length = 0;
  Kind kind = Kind::kZero;
  uint8_t codec = 0;      // Codec value
  uint64_t checksum = 0;  // XXH3-64 of the stored bytes (stored/dedup), else 0
  bool operator==(const Entry&) const = default;
};

// Little-endian helpers.
inline void Put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
inline void Put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline void Put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline uint16_t Get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline uint32_t Get32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
inline uint64_t Get64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// XXH3-64 (seed 0): the one checksum of the format.
uint64_t Checksum(const void* data, size_t len);

// Encoders write the full structure including its checksum field.
void EncodeHeader(const Header& h, uint8_t out[kHeaderSize]);
void EncodeFooter(const Footer& f, uint8_t out[kFooterSize]);
void EncodeIndexHeader(const IndexHeader& h, uint8_t out[kIndexHeaderSize]);
void EncodeEntry(const Entry& e, uint8_t out[kEntrySize]);
// Decoders copy fields out; the reader validates them.
Header DecodeHeader(const uint8_t in[kHeaderSize]);
Footer DecodeFooter(const uint8_t in[kFooterSize]);
IndexHeader DecodeIndexHeader(const uint8_t in[kIndexHeaderSize]);
// Returns the reserved bytes of an entry (must be zero) through *reserved.
Entry DecodeEntry(const uint8_t in[kEntrySize], uint16_t* reserved);

}  // namespace hexz::format::layout
