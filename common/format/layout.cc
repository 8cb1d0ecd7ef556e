// Encoding and decoding of each snapshot structure, beside the others, in
// the order of FORMAT.md. See layout.h for the contract.
#include "common/format/layout.h"

#include <cstdio>
#include <cstring>
#include <new>

#include "common/base/bytes.h"
#include "common/base/checked_math.h"
#include "common/base/endian.h"
#include "common/base/xxh3.h"

namespace hexz::format::layout {

using base::AllZero;
using base::GetLe16;
using base::GetLe32;
using base::GetLe64;
using base::PutLe16;
using base::PutLe32;
using base::PutLe64;

const char* KindName(Kind kind) {
  switch (kind) {
    case Kind::kZero:
      return "zero";
    case Kind::kStored:
      return "stored";
    case Kind::kDedup:
      return "dedup";
    case Kind::kParent:
      return "parent";
  }
  return "unknown";
}

uint64_t Checksum(const void* data, size_t len) { return XXH3_64bits(data, len); }

Hasher::Hasher() : state_(XXH3_createState()) {
  if (state_ == nullptr) throw std::bad_alloc();
  XXH3_64bits_reset(state_);
}

Hasher::~Hasher() { XXH3_freeState(state_); }

void Hasher::Update(const void* data, size_t len) { XXH3_64bits_update(state_, data, len); }

uint64_t Hasher::Digest() const { return XXH3_64bits_digest(state_); }

std::string AtOffset(uint64_t offset) { return " at offset " + std::to_string(offset); }

// ---- header ----

void EncodeHeader(const Header& h, uint8_t out[kHeaderSize]) {
  std::memset(out, 0, kHeaderSize);
  std::memcpy(out + kHeaderMagicAt, kHeaderMagic.data(), kHeaderMagic.size());
  PutLe32(out + kHeaderVersionAt, h.version);
  PutLe32(out + kHeaderSizeAt, h.header_size);
  PutLe32(out + kHeaderBlockSizeAt, h.block_size_log2);
  PutLe32(out + kHeaderFlagsAt, h.flags);
  PutLe32(out + kHeaderHintsAt, h.hints);
  std::memcpy(out + kHeaderIdAt, h.id.data(), h.id.size());
  PutLe64(out + kHeaderChecksumAt, Checksum(out, kHeaderChecksumAt));
}

bool HeaderChecksumOk(const uint8_t* in, size_t header_size) {
  return header_size >= 8 && Checksum(in, header_size - 8) == GetLe64(in + header_size - 8);
}

Result<Header> DecodeHeader(const uint8_t in[kHeaderSize]) {
  Header h;
  h.version = GetLe32(in + kHeaderVersionAt);
  h.header_size = GetLe32(in + kHeaderSizeAt);
  h.block_size_log2 = GetLe32(in + kHeaderBlockSizeAt);
  h.flags = GetLe32(in + kHeaderFlagsAt);
  h.hints = GetLe32(in + kHeaderHintsAt);
  std::memcpy(h.id.data(), in + kHeaderIdAt, h.id.size());
  if (h.version > kVersion) {
    return Status::Unsupported("format version " + std::to_string(h.version) +
                               " is newer than this hexz supports (version " +
                               std::to_string(kVersion) + "); upgrade hexz");
  }
  if (h.version == 0)
    return Status::Corruption("format version 0 is invalid" + AtOffset(kHeaderVersionAt));
  if (h.header_size != kHeaderSize)
    return Status::Corruption("header size must be 64 in version 1" + AtOffset(kHeaderSizeAt));
  if (h.block_size_log2 < kMinBlockSizeLog2 || h.block_size_log2 > kMaxBlockSizeLog2) {
    return Status::Corruption("block size 2^" + std::to_string(h.block_size_log2) +
                              " is outside 4 KiB..1 MiB" + AtOffset(kHeaderBlockSizeAt));
  }
  if ((h.flags & ~kKnownFlags) != 0) {
    char buf[16];
    std::snprintf(buf, sizeof(buf), "0x%08x", h.flags & ~kKnownFlags);
    return Status::Unsupported(std::string("unknown feature flags ") + buf +
                               " (written by a newer hexz?)" + AtOffset(kHeaderFlagsAt));
  }
  if (!AllZero(in + kHeaderReservedAt, kHeaderIdAt - kHeaderReservedAt) ||
      !AllZero(in + kHeaderReserved2At, kHeaderChecksumAt - kHeaderReserved2At)) {
    return Status::Corruption("reserved header bytes are not zero" + AtOffset(kHeaderReservedAt));
  }
  return h;
}

// ---- footer ----

void EncodeFooter(const Footer& f, uint8_t out[kFooterSize]) {
  std::memset(out, 0, kFooterSize);
  std::memcpy(out + kFooterMagicAt, kFooterMagic.data(), kFooterMagic.size());
  PutLe64(out + kFooterIndexOffsetAt, f.index_offset);
  PutLe64(out + kFooterIndexLengthAt, f.index_length);
  PutLe64(out + kFooterIndexChecksumAt, f.index_checksum);
  PutLe64(out + kFooterFileSizeAt, f.file_size);
  std::memcpy(out + kFooterIdAt, f.id.data(), f.id.size());
  PutLe64(out + kFooterChecksumAt, Checksum(out, kFooterChecksumAt));
}

bool FooterMagicOk(const uint8_t in[kFooterSize]) {
  return std::memcmp(in + kFooterMagicAt, kFooterMagic.data(), kFooterMagic.size()) == 0;
}

bool FooterChecksumOk(const uint8_t in[kFooterSize]) {
  return Checksum(in, kFooterChecksumAt) == GetLe64(in + kFooterChecksumAt);
}

Result<Footer> DecodeFooter(const uint8_t in[kFooterSize], uint64_t file_size, const Header& h) {
  const uint64_t at = file_size - kFooterSize;
  if (!FooterMagicOk(in)) {
    return Status::Corruption(
        "no footer at the end of the file (truncated or not completely written; file is " +
        std::to_string(file_size) + " bytes)");
  }
  if (!FooterChecksumOk(in)) return Status::Corruption("footer checksum mismatch" + AtOffset(at));
  Footer f;
  f.index_offset = GetLe64(in + kFooterIndexOffsetAt);
  f.index_length = GetLe64(in + kFooterIndexLengthAt);
  f.index_checksum = GetLe64(in + kFooterIndexChecksumAt);
  f.file_size = GetLe64(in + kFooterFileSizeAt);
  std::memcpy(f.id.data(), in + kFooterIdAt, f.id.size());
  if (f.file_size != file_size) {
    return Status::Corruption("file is " + std::to_string(file_size) +
                              " bytes but its footer records " + std::to_string(f.file_size) +
                              " (truncated or extended)" + AtOffset(at + kFooterFileSizeAt));
  }
  if (f.id != h.id)
    return Status::Corruption("footer id differs from header id" + AtOffset(at + kFooterIdAt));
  if (f.index_length < kIndexHeaderSize || f.index_length > kMaxIndexSize ||
      f.index_offset < kHeaderSize || !base::RangeWithin(f.index_offset, f.index_length, at) ||
      f.index_offset + f.index_length != at) {
    return Status::Corruption("footer index location is invalid" +
                              AtOffset(at + kFooterIndexOffsetAt));
  }
  return f;
}

// ---- index header and parent path ----

void EncodeIndexHeader(const IndexHeader& h, uint8_t out[kIndexHeaderSize]) {
  std::memset(out, 0, kIndexHeaderSize);
  for (int s = 0; s < 2; ++s) {
    PutLe64(out + kIndexStreamSizeAt + 8 * s, h.stream_size[s]);
    PutLe64(out + kIndexEntryCountAt + 8 * s, h.entry_count[s]);
  }
  std::memcpy(out + kIndexParentIdAt, h.parent_id.data(), h.parent_id.size());
  PutLe32(out + kIndexParentPathLengthAt, h.parent_path_length);
  PutLe32(out + kIndexMetadataLengthAt, h.metadata_length);
}

std::optional<uint64_t> IndexLength(const IndexHeader& ih) {
  auto entries = base::CheckedAdd(ih.entry_count[0], ih.entry_count[1]);
  if (!entries) return std::nullopt;
  auto bytes = base::CheckedMul<uint64_t>(*entries, kEntrySize);
  if (!bytes) return std::nullopt;
  return base::CheckedAdd<uint64_t>(*bytes,
                                    kIndexHeaderSize + PaddedPathLength(ih.parent_path_length));
}

Result<IndexHeader> DecodeIndexHeader(const uint8_t in[kIndexHeaderSize], const Header& h,
                                      const Footer& ft) {
  const uint64_t at = ft.index_offset;
  IndexHeader ih;
  for (int s = 0; s < 2; ++s) {
    ih.stream_size[s] = GetLe64(in + kIndexStreamSizeAt + 8 * s);
    ih.entry_count[s] = GetLe64(in + kIndexEntryCountAt + 8 * s);
  }
  std::memcpy(ih.parent_id.data(), in + kIndexParentIdAt, ih.parent_id.size());
  ih.parent_path_length = GetLe32(in + kIndexParentPathLengthAt);
  ih.metadata_length = GetLe32(in + kIndexMetadataLengthAt);
  if (!AllZero(in + kIndexReservedAt, kIndexHeaderSize - kIndexReservedAt))
    return Status::Corruption("reserved index bytes are not zero" +
                              AtOffset(at + kIndexReservedAt));
  for (int s = 0; s < 2; ++s) {
    const char* name = s == 0 ? "disk" : "memory";
    if (s == 1 && !h.has_memory() && (ih.stream_size[s] != 0 || ih.entry_count[s] != 0)) {
      return Status::Corruption("index describes an absent memory stream" +
                                AtOffset(at + kIndexStreamSizeAt + 8));
    }
    if (ih.stream_size[s] > kMaxStreamSize) {
      return Status::Corruption(std::string(name) + " stream size is beyond the format limit" +
                                AtOffset(at + kIndexStreamSizeAt + 8 * s));
    }
    if (ih.entry_count[s] != *base::CeilDiv<uint64_t>(ih.stream_size[s], h.block_size())) {
      return Status::Corruption(std::string(name) + " block count does not match its size" +
                                AtOffset(at + kIndexEntryCountAt + 8 * s));
    }
  }
  if (h.thin() != (ih.parent_path_length != 0)) {
    return Status::Corruption("parent path presence disagrees with the thin flag" +
                              AtOffset(at + kIndexParentPathLengthAt));
  }
  if (ih.parent_path_length > kMaxParentPath) {
    return Status::Corruption("parent path is longer than 4096 bytes" +
                              AtOffset(at + kIndexParentPathLengthAt));
  }
  if (!h.thin() && !AllZero(ih.parent_id.data(), ih.parent_id.size())) {
    return Status::Corruption("parent id set in a snapshot without parent" +
                              AtOffset(at + kIndexParentIdAt));
  }
  if (h.has_metadata() != (ih.metadata_length != 0)) {
    return Status::Corruption("metadata length disagrees with the metadata flag" +
                              AtOffset(at + kIndexMetadataLengthAt));
  }
  if (h.has_metadata() &&
      (ih.metadata_length < kMinMetadataSize || ih.metadata_length > kMaxMetadataSize ||
       ih.metadata_length % 8 != 0 || ih.metadata_length > ft.index_offset - kHeaderSize)) {
    return Status::Corruption("metadata length " + std::to_string(ih.metadata_length) +
                              " is invalid" + AtOffset(at + kIndexMetadataLengthAt));
  }
  std::optional<uint64_t> length = IndexLength(ih);
  if (!length || *length != ft.index_length) {
    return Status::Corruption("index length does not match its contents" +
                              AtOffset(ft.offset() + kFooterIndexLengthAt));
  }
  return ih;
}

Result<std::string> DecodeParentPath(const uint8_t* in, const IndexHeader& ih, const Footer& ft) {
  const uint64_t at = ft.index_offset + kIndexParentPathAt;
  std::string path(reinterpret_cast<const char*>(in), ih.parent_path_length);
  if (path.find('\0') != std::string::npos)
    return Status::Corruption("parent path contains a NUL byte" + AtOffset(at));
  if (!AllZero(in + ih.parent_path_length,
               PaddedPathLength(ih.parent_path_length) - ih.parent_path_length)) {
    return Status::Corruption("parent path padding is not zero" + AtOffset(at));
  }
  return path;
}

// ---- metadata section ----

namespace {

bool ValidKey(std::string_view key) {
  if (key.empty() || key.size() > kMaxMetadataKey) return false;
  for (char c : key) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
      return false;
  }
  return true;
}

uint64_t Pad8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

}  // namespace

Result<std::vector<uint8_t>> EncodeMetadata(const Metadata& m) {
  if (m.size() > kMaxMetadataEntries)
    return Status::InvalidArgument("metadata: more than 256 entries");
  uint64_t size = kMetadataHeaderSize + 8;
  for (const auto& [key, value] : m) {
    if (!ValidKey(key))
      return Status::InvalidArgument("metadata key '" + key +
                                     "': must be 1..64 bytes of a-z, 0-9, '.', '_', '-'");
    size += kMetadataEntryHeaderSize + Pad8(key.size() + uint64_t{value.size()});
    if (size > kMaxMetadataSize)
      return Status::InvalidArgument("metadata: larger than the 1 MiB the format allows");
  }
  std::vector<uint8_t> out(size, 0);
  std::memcpy(out.data() + kMetadataMagicAt, kMetadataMagic.data(), kMetadataMagic.size());
  PutLe32(out.data() + kMetadataCountAt, static_cast<uint32_t>(m.size()));
  size_t pos = kMetadataEntriesAt;
  for (const auto& [key, value] : m) {
    uint8_t* e = out.data() + pos;
    PutLe16(e + kMetadataKeyLengthAt, static_cast<uint16_t>(key.size()));
    PutLe32(e + kMetadataValueLengthAt, static_cast<uint32_t>(value.size()));
    std::memcpy(e + kMetadataEntryHeaderSize, key.data(), key.size());
    std::memcpy(e + kMetadataEntryHeaderSize + key.size(), value.data(), value.size());
    pos += kMetadataEntryHeaderSize + Pad8(key.size() + value.size());
  }
  PutLe64(out.data() + size - 8, Checksum(out.data(), size - 8));
  return out;
}

Result<Metadata> DecodeMetadata(const uint8_t* in, size_t len, uint64_t at) {
  if (len < kMinMetadataSize || len % 8 != 0 || Checksum(in, len - 8) != GetLe64(in + len - 8))
    return Status::Corruption("metadata section checksum mismatch" + AtOffset(at));
  if (std::memcmp(in + kMetadataMagicAt, kMetadataMagic.data(), kMetadataMagic.size()) != 0)
    return Status::Corruption("metadata section has no magic" + AtOffset(at));
  if (GetLe32(in + kMetadataReservedAt) != 0) {
    return Status::Corruption("reserved metadata bytes are not zero" +
                              AtOffset(at + kMetadataReservedAt));
  }
  const uint32_t count = GetLe32(in + kMetadataCountAt);
  if (count > kMaxMetadataEntries) {
    return Status::Corruption("metadata section has more than 256 entries" +
                              AtOffset(at + kMetadataCountAt));
  }
  Metadata m;
  const size_t end = len - 8;
  size_t pos = kMetadataEntriesAt;
  for (uint32_t i = 0; i < count; ++i) {
    const std::string where = "metadata entry " + std::to_string(i) + AtOffset(at + pos);
    if (end - pos < kMetadataEntryHeaderSize)
      return Status::Corruption(where + " runs past the end of the section");
    const uint8_t* e = in + pos;
    const uint64_t klen = GetLe16(e + kMetadataKeyLengthAt);
    const uint64_t vlen = GetLe32(e + kMetadataValueLengthAt);
    if (GetLe16(e + kMetadataEntryReservedAt) != 0)
      return Status::Corruption(where + " has reserved bits set");
    const uint64_t body = Pad8(klen + vlen);
    if (body > end - pos - kMetadataEntryHeaderSize)
      return Status::Corruption(where + " runs past the end of the section");
    const uint8_t* k = e + kMetadataEntryHeaderSize;
    std::string key(reinterpret_cast<const char*>(k), klen);
    if (!ValidKey(key)) return Status::Corruption(where + " has an invalid key");
    if (!m.empty() && key <= m.rbegin()->first)
      return Status::Corruption(where + " is out of key order (or repeats a key)");
    if (!AllZero(k + klen + vlen, body - klen - vlen))
      return Status::Corruption(where + " has padding that is not zero");
    m.emplace_hint(m.end(), std::move(key),
                   std::string(reinterpret_cast<const char*>(k + klen), vlen));
    pos += kMetadataEntryHeaderSize + body;
  }
  if (pos != end)
    return Status::Corruption("metadata section has bytes after its last entry" +
                              AtOffset(at + pos));
  return m;
}

// ---- block entries ----

void EncodeEntry(const Entry& e, uint8_t out[kEntrySize]) {
  PutLe64(out + kEntryOffsetAt, e.offset);
  PutLe32(out + kEntryStoredLengthAt, e.stored_length);
  out[kEntryKindAt] = static_cast<uint8_t>(e.kind);
  out[kEntryCodecAt] = static_cast<uint8_t>(e.codec);
  PutLe16(out + kEntryReservedAt, 0);
  PutLe64(out + kEntryChecksumAt, e.checksum);
}

const char* DecodeEntry(const uint8_t in[kEntrySize], uint64_t length, bool thin, Entry* e) {
  e->offset = GetLe64(in + kEntryOffsetAt);
  e->stored_length = GetLe32(in + kEntryStoredLengthAt);
  e->kind = static_cast<Kind>(in[kEntryKindAt]);
  e->codec = static_cast<Codec>(in[kEntryCodecAt]);
  e->checksum = GetLe64(in + kEntryChecksumAt);
  if (GetLe16(in + kEntryReservedAt) != 0) return "has reserved bits set";
  switch (e->kind) {
    case Kind::kZero:
    case Kind::kParent:
      if (e->offset != 0 || e->stored_length != 0 || e->codec != Codec::kRaw || e->checksum != 0)
        return "has storage fields set";
      if (e->kind == Kind::kParent && !thin) return "refers to a parent, but the snapshot has none";
      return nullptr;
    case Kind::kStored:
    case Kind::kDedup:
      if (static_cast<uint8_t>(e->codec) > static_cast<uint8_t>(Codec::kZstd))
        return "has an unknown codec";
      if (e->stored_length == 0 || e->stored_length > length) return "has a bad stored length";
      if (e->codec == Codec::kRaw ? e->stored_length != length : e->stored_length >= length)
        return "has a stored length that does not fit its codec";
      return nullptr;
  }
  return "has an unknown kind";
}

}  // namespace hexz::format::layout
