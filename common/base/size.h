// Human-readable byte sizes: "512K", "256M", "1G", "4G" (powers of 1024).
//
// ParseSize accepts a decimal integer and an optional suffix K, M, G, T or P
// (case-insensitive, optionally followed by "iB" or "B"). It rejects empty
// input, signs, spaces, fractions, unknown suffixes and values that overflow
// 64 bits, each with a message that quotes the input. Thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/base/status.h"

namespace hexz::base {

Result<uint64_t> ParseSize(std::string_view text);

// 1536 -> "1.5 KiB"; exact powers print without decimals ("256 MiB").
std::string FormatSize(uint64_t bytes);

}  // namespace hexz::base
