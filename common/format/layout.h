// layout.h: the on-disk constants, field offsets and structures of the hexz
// snapshot format.
//
// FORMAT.md is the prose specification; this header (with layout.cc) is its
// only encoding in code. Every field offset is named here, and each structure
// is encoded and decoded beside its struct, as leveldb's Footer::DecodeFrom.
// The Decode* functions check what their structure (with those decoded before
// it) can tell, in the order of FORMAT.md's "Reader obligations", and return
// kCorruption or kUnsupported naming the field and its file offset; the
// caller prefixes the file name. Rules that need more than one structure at a
// time (the tiling of the data area, dedup targets, the parent chain) are
// the reader's, in snapshot.cc.
//
// Everything is little-endian and fixed-width (common/base/endian.h).
//
// Thread safety: constants and pure functions; a Hasher is one thread's.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/base/status.h"
#include "common/format/codec.h"

struct XXH3_state_s;

namespace hexz::format::layout {

using base::Result;
using base::Status;

// ---- header (offset 0, kHeaderSize bytes) ----
inline constexpr std::array<uint8_t, 8> kHeaderMagic = {'H', 'E', 'X', 'Z', 'S', 'N', 'A', 'P'};
inline constexpr uint32_t kVersion = 1;
inline constexpr uint32_t kHeaderSize = 64;
// A later version may grow the header up to this (a multiple of 8); its
// checksum stays in its last 8 bytes.
inline constexpr uint32_t kMaxHeaderSize = 4096;
inline constexpr size_t kHeaderMagicAt = 0;       // 8 bytes
inline constexpr size_t kHeaderVersionAt = 8;     // u32
inline constexpr size_t kHeaderSizeAt = 12;       // u32
inline constexpr size_t kHeaderBlockSizeAt = 16;  // u32, log2 of the block size
inline constexpr size_t kHeaderFlagsAt = 20;      // u32
inline constexpr size_t kHeaderHintsAt = 24;      // u32, unused: ignored
inline constexpr size_t kHeaderReservedAt = 28;   // 4 bytes, zero
inline constexpr size_t kHeaderIdAt = 32;         // 16 bytes
inline constexpr size_t kHeaderReserved2At = 48;  // 8 bytes, zero
inline constexpr size_t kHeaderChecksumAt = 56;   // u64: XXH3-64 of bytes [0, 56)
// Header feature flags. Bits not listed are reserved: a reader rejects them.
inline constexpr uint32_t kFlagThin = 1u << 0;         // the snapshot has a parent
inline constexpr uint32_t kFlagHasMemory = 1u << 1;    // the memory stream is present
inline constexpr uint32_t kFlagHasMetadata = 1u << 2;  // a metadata section precedes the index
inline constexpr uint32_t kKnownFlags = kFlagThin | kFlagHasMemory | kFlagHasMetadata;

// ---- footer (the last kFooterSize bytes of the file) ----
inline constexpr std::array<uint8_t, 8> kFooterMagic = {'H', 'E', 'X', 'Z', 'F', 'O', 'O', 'T'};
inline constexpr uint32_t kFooterSize = 64;
inline constexpr size_t kFooterMagicAt = 0;           // 8 bytes
inline constexpr size_t kFooterIndexOffsetAt = 8;     // u64
inline constexpr size_t kFooterIndexLengthAt = 16;    // u64
inline constexpr size_t kFooterIndexChecksumAt = 24;  // u64: XXH3-64 of the whole index
inline constexpr size_t kFooterFileSizeAt = 32;       // u64
inline constexpr size_t kFooterIdAt = 40;             // 16 bytes
inline constexpr size_t kFooterChecksumAt = 56;       // u64: XXH3-64 of bytes [0, 56)

// ---- index (at footer.index_offset): header, parent path, entries ----
inline constexpr uint32_t kIndexHeaderSize = 64;
inline constexpr size_t kIndexStreamSizeAt = 0;                 // u64 per stream: disk, memory
inline constexpr size_t kIndexEntryCountAt = 16;                // u64 per stream: disk, memory
inline constexpr size_t kIndexParentIdAt = 32;                  // 16 bytes
inline constexpr size_t kIndexParentPathLengthAt = 48;          // u32
inline constexpr size_t kIndexMetadataLengthAt = 52;            // u32
inline constexpr size_t kIndexReservedAt = 56;                  // 8 bytes, zero
inline constexpr size_t kIndexParentPathAt = kIndexHeaderSize;  // padded to 8 bytes

// ---- block entry (kEntrySize bytes each, after the parent path) ----
inline constexpr uint32_t kEntrySize = 24;
inline constexpr size_t kEntryOffsetAt = 0;        // u64
inline constexpr size_t kEntryStoredLengthAt = 8;  // u32
inline constexpr size_t kEntryKindAt = 12;         // u8
inline constexpr size_t kEntryCodecAt = 13;        // u8
inline constexpr size_t kEntryReservedAt = 14;     // u16, zero
inline constexpr size_t kEntryChecksumAt = 16;     // u64: XXH3-64 of the stored bytes

// ---- metadata section (HAS_METADATA only): the metadata_length bytes that
// end at index_offset; its own checksum in its last 8 bytes ----
inline constexpr std::array<uint8_t, 8> kMetadataMagic = {'H', 'E', 'X', 'Z', 'M', 'E', 'T', 'A'};
inline constexpr uint32_t kMetadataHeaderSize = 16;
inline constexpr size_t kMetadataMagicAt = 0;      // 8 bytes
inline constexpr size_t kMetadataCountAt = 8;      // u32: number of entries
inline constexpr size_t kMetadataReservedAt = 12;  // u32, zero
inline constexpr size_t kMetadataEntriesAt = kMetadataHeaderSize;
// Each entry: u16 key length, u16 reserved (zero), u32 value length, the key,
// the value, zero padding to a multiple of 8.
inline constexpr uint32_t kMetadataEntryHeaderSize = 8;
inline constexpr size_t kMetadataKeyLengthAt = 0;      // u16
inline constexpr size_t kMetadataEntryReservedAt = 2;  // u16, zero
inline constexpr size_t kMetadataValueLengthAt = 4;    // u32

// ---- limits: the writer never exceeds them, the reader refuses beyond ----
inline constexpr uint32_t kMinBlockSizeLog2 = 12;  // 4 KiB
inline constexpr uint32_t kMaxBlockSizeLog2 = 20;  // 1 MiB
inline constexpr uint32_t kDefaultBlockSize = 64 * 1024;
inline constexpr uint32_t kMaxParentPath = 4096;        // bytes, no NUL
inline constexpr uint64_t kMaxIndexSize = 1ull << 30;   // 1 GiB
inline constexpr uint64_t kMaxStreamSize = 1ull << 52;  // 4 PiB
inline constexpr uint32_t kMaxChainDepth = 64;          // hard cap on parents
inline constexpr uint32_t kMaxZstdWindow = 2u << 20;    // bytes a Zstd frame may ask for
inline constexpr uint32_t kMinMetadataSize = kMetadataHeaderSize + 8;  // no entries
inline constexpr uint32_t kMaxMetadataSize = 1u << 20;                 // 1 MiB
inline constexpr uint32_t kMaxMetadataEntries = 256;
inline constexpr uint32_t kMaxMetadataKey = 64;  // bytes: a-z 0-9 . _ -

// How one block of a stream is represented (entry byte kEntryKindAt). Other
// values are reserved: rejected.
enum class Kind : uint8_t {
  kZero = 0,    // all zeros, no storage
  kStored = 1,  // stored bytes in this file
  kDedup = 2,   // shares the stored bytes of another block of this file
  kParent = 3,  // read from the parent at the same position (thin snapshots)
};
const char* KindName(Kind kind);  // "zero", "stored", "dedup", "parent"

struct Header {
  uint32_t version = kVersion;
  uint32_t header_size = kHeaderSize;
  uint32_t block_size_log2 = 16;
  uint32_t flags = 0;
  uint32_t hints = 0;  // the writer's advisory bits; readers ignore them (still checksummed)
  std::array<uint8_t, 16> id{};

  uint32_t block_size() const { return 1u << block_size_log2; }
  bool thin() const { return (flags & kFlagThin) != 0; }
  bool has_memory() const { return (flags & kFlagHasMemory) != 0; }
  bool has_metadata() const { return (flags & kFlagHasMetadata) != 0; }
};

struct Footer {
  uint64_t index_offset = 0;
  uint64_t index_length = 0;
  uint64_t index_checksum = 0;
  uint64_t file_size = 0;
  std::array<uint8_t, 16> id{};

  uint64_t offset() const { return file_size - kFooterSize; }  // where the footer starts
};

struct IndexHeader {
  uint64_t stream_size[2] = {0, 0};  // disk, memory (logical bytes)
  uint64_t entry_count[2] = {0, 0};
  std::array<uint8_t, 16> parent_id{};
  uint32_t parent_path_length = 0;
  uint32_t metadata_length = 0;  // bytes of the metadata section; 0 unless HAS_METADATA
};

// The metadata section's entries, key -> value, in key order (the order of
// the file). Values are bytes; FORMAT.md gives the meaning of known keys.
using Metadata = std::map<std::string, std::string>;

// One block entry, decoded. The reader keeps one per block in memory, so its
// size is what FORMAT.md promises per block.
struct Entry {
  uint64_t offset = 0;  // file offset of the stored bytes (stored/dedup), else 0
  uint32_t stored_length = 0;
  Kind kind = Kind::kZero;
  Codec codec = Codec::kRaw;  // any byte value until DecodeEntry has checked it
  uint64_t checksum = 0;      // XXH3-64 of the stored bytes (stored/dedup), else 0
  bool operator==(const Entry&) const = default;
};
static_assert(sizeof(Entry) == kEntrySize, "FORMAT.md promises 24 bytes of memory per block");

// XXH3-64 (seed 0): the one checksum of the format.
uint64_t Checksum(const void* data, size_t len);

// The same checksum over data that arrives in pieces (the index, which may be
// up to 1 GiB, is checked while it streams in). Not copyable.
class Hasher {
 public:
  Hasher();
  ~Hasher();
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;
  void Update(const void* data, size_t len);
  uint64_t Digest() const;  // Checksum() of everything passed to Update

 private:
  XXH3_state_s* state_;
};

// " at offset N": how every structure error names its place in the file.
std::string AtOffset(uint64_t offset);

// ---- header ----
// Writes the header, checksum included.
void EncodeHeader(const Header& h, uint8_t out[kHeaderSize]);
// True when the header_size bytes at `in` end with their own checksum.
bool HeaderChecksumOk(const uint8_t* in, size_t header_size);
// Reader obligations 4 and 5 for a header whose magic and checksum matched:
// version, header size, block size, flags, reserved bytes.
Result<Header> DecodeHeader(const uint8_t in[kHeaderSize]);

// ---- footer ----
void EncodeFooter(const Footer& f, uint8_t out[kFooterSize]);
// True when `in` starts with the footer magic / is an intact footer.
bool FooterMagicOk(const uint8_t in[kFooterSize]);
bool FooterChecksumOk(const uint8_t in[kFooterSize]);
// Reader obligation 6 for the last kFooterSize bytes of a file of file_size
// bytes whose header is h.
Result<Footer> DecodeFooter(const uint8_t in[kFooterSize], uint64_t file_size, const Header& h);

// ---- index header and parent path ----
void EncodeIndexHeader(const IndexHeader& h, uint8_t out[kIndexHeaderSize]);
// A parent path of n bytes takes this many bytes of the index (zero padded).
inline uint64_t PaddedPathLength(uint32_t n) { return (uint64_t{n} + 7) & ~uint64_t{7}; }
// The exact index length FORMAT.md requires for ih; nullopt on overflow.
std::optional<uint64_t> IndexLength(const IndexHeader& ih);
// Reader obligation 7 (after the index checksum) for the index header of a
// file with header h and footer ft.
Result<IndexHeader> DecodeIndexHeader(const uint8_t in[kIndexHeaderSize], const Header& h,
                                      const Footer& ft);
// Reader obligation 7, the parent path: `in` holds PaddedPathLength bytes
// from kIndexParentPathAt.
Result<std::string> DecodeParentPath(const uint8_t* in, const IndexHeader& ih, const Footer& ft);

// ---- metadata section ----
// Encodes `m` (checksum included); kInvalidArgument when it breaks a limit
// or a key is not 1..64 bytes of a-z 0-9 . _ -.
Result<std::vector<uint8_t>> EncodeMetadata(const Metadata& m);
// Reader obligation 9 for the metadata section: `in` holds the
// ih.metadata_length bytes at file offset `at`. Checks the checksum first
// ("metadata section checksum mismatch"), then every entry.
Result<Metadata> DecodeMetadata(const uint8_t* in, size_t len, uint64_t at);

// ---- block entries ----
void EncodeEntry(const Entry& e, uint8_t out[kEntrySize]);
// Reader obligation 8 for one entry: decodes it into *e and returns null, or
// returns why it breaks the rules of its fields ("has an unknown codec").
// `length` is the block's logical length; `thin` the header's THIN flag. The
// tiling of the data area and the targets of dedup entries are the reader's
// to check.
const char* DecodeEntry(const uint8_t in[kEntrySize], uint64_t length, bool thin, Entry* e);

}  // namespace hexz::format::layout
