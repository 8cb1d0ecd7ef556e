// Block codecs of the snapshot format: raw, LZ4 (and LZ4HC), Zstd.
//
// Decompress treats its input as untrusted: it refuses output that is not
// exactly the expected length and never writes past dst. Thread safety: all
// functions are safe from many threads (per-thread contexts).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/base/status.h"
#include "common/format/snapshot.h"

namespace hexz::format {

// Compresses src into *out (resized to the compressed length). Returns false
// when the result would not be smaller than src (the caller stores raw).
bool CompressBlock(Codec codec, int level, const void* src, size_t len, std::vector<uint8_t>* out);

// Decompresses exactly dst_len bytes; false when the input is malformed or
// does not decode to exactly dst_len bytes.
bool DecompressBlock(Codec codec, const void* src, size_t src_len, void* dst, size_t dst_len);

}  // namespace hexz::format
