// Small helpers over byte buffers, the one copy in hexz: all-zero tests and
// hex encoding.
//
// Stateless, thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace hexz::base {

// True when the n bytes at p are all zero (true for n == 0).
bool AllZero(const void* p, size_t n);

// Lowercase hex digits of the n bytes at p, two per byte.
std::string HexEncode(const void* p, size_t n);

// Decodes exactly 2 * n hex digits (either case) into out[0..n). Returns
// false, leaving out unspecified, when hex has another length or a non-digit.
bool HexDecode(std::string_view hex, void* out, size_t n);

// Appends the UTF-8 encoding of the code point cp (at most 0x10ffff; the
// caller has mapped surrogates and anything invalid) to out.
void AppendUtf8(uint32_t cp, std::string* out);

}  // namespace hexz::base
