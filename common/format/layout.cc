#include "common/format/layout.h"

#include <xxhash.h>

namespace hexz::format::layout {

uint64_t Checksum(const void* data, size_t len) { return XXH3_64bits(data, len); }

void EncodeHeader(const Header& h, uint8_t out[kHeaderSize]) {
  std::memset(out, 0, kHeaderSize);
  std::memcpy(out, kHeaderMagic.data(), 8);
  Put32(out + 8, h.version);
  Put32(out + 12, h.header_size);
  Put32(out + 16, h.block_size_log2);
  Put32(out + 20, h.flags);
  Put32(out + 24, h.unused);
  std::memcpy(out + 32, h.id.data(), 16);
  Put64(out + 56, Checksum(out, 56));
}

Header DecodeHeader(const uint8_t in[kHeaderSize]) {
  Header h;
  h.version = Get32(in + 8);
  h.header_size = Get32(in + 12);
  h.block_size_log2 = Get32(in + 16);
  h.flags = Get32(in + 20);
  h.unused = Get32(in + 24);
  std::memcpy(h.id.data(), in + 32, 16);
  return h;
}

void EncodeFooter(const Footer& f, uint8_t out[kFooterSize]) {
  std::memset(out, 0, kFooterSize);
  std::memcpy(out, kFooterMagic.data(), 8);
  Put64(out + 8, f.index_offset);
  Put64(out + 16, f.index_length);
  Put64(out + 24, f.index_checksum);
  Put64(out + 32, f.file_size);
  std::memcpy(out + 40, f.id.data(), 16);
  Put64(out + 56, Checksum(out, 56));
}

Footer DecodeFooter(const uint8_t in[kFooterSize]) {
  Footer f;
  f.index_offset = Get64(in + 8);
  f.index_length = Get64(in + 16);
  f.index_checksum = Get64(in + 24);
  f.file_size = Get64(in + 32);
  std::memcpy(f.id.data(), in + 40, 16);
  return f;
}

void EncodeIndexHeader(const IndexHeader& h, uint8_t out[kIndexHeaderSize]) {
  std::memset(out, 0, kIndexHeaderSize);
  Put64(out + 0, h.stream_size[0]);
  Put64(out + 8, h.stream_size[1]);
  Put64(out + 16, h.entry_count[0]);
  Put64(out + 24, h.entry_count[1]);
  std::memcpy(out + 32, h.parent_id.data(), 16);
  Put32(out + 48, h.parent_path_length);
}

IndexHeader DecodeIndexHeader(const uint8_t in[kIndexHeaderSize]) {
  IndexHeader h;
  h.stream_size[0] = Get64(in + 0);
  h.stream_size[1] = Get64(in + 8);
  h.entry_count[0] = Get64(in + 16);
  h.entry_count[1] = Get64(in + 24);
  std::memcpy(h.parent_id.data(), in + 32, 16);
  h.parent_path_length = Get32(in + 48);
  return h;
}

void EncodeEntry(const Entry& e, uint8_t out[kEntrySize]) {
  Put64(out + 0, e.offset);
  Put32(out + 8, e.stored_length);
  out[12] = static_cast<uint8_t>(e.kind);
  out[13] = e.codec;
  Put16(out + 14, 0);
  Put64(out + 16, e.checksum);
}

Entry DecodeEntry(const uint8_t in[kEntrySize], uint16_t* reserved) {
  Entry e;
  e.offset = Get64(in + 0);
  e.stored_length = Get32(in + 8);
  e.kind = static_cast<Kind>(in[12]);
  e.codec = in[13];
  *reserved = Get16(in + 14);
  e.checksum = Get64(in + 16);
  return e;
}

}  // namespace hexz::format::layout
