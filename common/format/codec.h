// Block codecs of the snapshot format: raw, LZ4 (and LZ4HC), Zstd.
//
// Decompress treats its input as untrusted: it refuses output that is not
// exactly the expected length, Zstd frames that ask for a larger window than
// the format allows, and never writes past dst. Thread safety: all
// functions are safe from many threads (per-thread contexts).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/base/status.h"

namespace hexz::format {

// The codec of a stored block (FORMAT.md "Stored bytes, per codec"); the
// value is the entry's codec byte. Other byte values are reserved.
enum class Codec : uint8_t { kRaw = 0, kLz4 = 1, kZstd = 2 };
const char* CodecName(Codec codec);  // "none" / "lz4" / "zstd"

// Compresses src into *out (resized to the compressed length). Returns false
// when the result would not be smaller than src (the caller stores raw).
bool CompressBlock(Codec codec, int level, const void* src, size_t len, std::vector<uint8_t>* out);

// Decompresses exactly dst_len bytes. Otherwise returns kCorruption saying
// what is wrong with the stored bytes ("does not decompress (lz4)"); the
// caller names the block and its offset.
base::Status DecompressBlock(Codec codec, const void* src, size_t src_len, void* dst,
                             size_t dst_len);

}  // namespace hexz::format
