#include "common/base/size.h"

#include <cctype>
#include <cstdio>

#include "common/base/checked_math.h"

namespace hexz::base {

namespace {

Status SizeError(std::string_view text, std::string_view why) {
  std::string msg = "invalid size '";
  msg += text;
  msg += "': ";
  msg += why;
  return Status::InvalidArgument(std::move(msg));
}

}  // namespace

Result<uint64_t> ParseSize(std::string_view text) {
  if (text.empty()) return SizeError(text, "empty (expected a number such as 256M)");
  size_t i = 0;
  uint64_t value = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    auto times_ten = CheckedMul<uint64_t>(value, 10);
    auto next = times_ten ? CheckedAdd<uint64_t>(*times_ten, text[i] - '0') : std::nullopt;
    if (!next) return SizeError(text, "too large (the limit is 16 EiB - 1)");
    value = *next;
    ++i;
  }
  if (i == 0) {
    return SizeError(text, "must start with a digit (no sign, no spaces; e.g. 512K, 256M, 1G)");
  }
  std::string_view suffix = text.substr(i);
  unsigned shift = 0;
  if (!suffix.empty()) {
    switch (std::toupper(static_cast<unsigned char>(suffix[0]))) {
      case 'B':
        shift = 0;
        break;
      case 'K':
        shift = 10;
        break;
      case 'M':
        shift = 20;
        break;
      case 'G':
        shift = 30;
        break;
      case 'T':
        shift = 40;
        break;
      case 'P':
        shift = 50;
        break;
      default:
        return SizeError(text, "unknown suffix (use K, M, G, T or P; powers of 1024)");
    }
    std::string_view rest = suffix.substr(1);
    bool rest_ok = rest.empty() || (shift != 0 && (rest == "B" || rest == "b" || rest == "iB" ||
                                                   rest == "ib" || rest == "IB"));
    if (!rest_ok) return SizeError(text, "unknown suffix (use K, M, G, T or P; powers of 1024)");
  }
  if (shift != 0 && value > (UINT64_MAX >> shift)) {
    return SizeError(text, "too large (the limit is 16 EiB - 1)");
  }
  return value << shift;
}

std::string FormatSize(uint64_t bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  unsigned unit = 0;
  double v = static_cast<double>(bytes);
  uint64_t whole = bytes;
  bool exact = true;
  while (whole >= 1024 && unit + 1 < sizeof kUnits / sizeof kUnits[0]) {
    if (whole % 1024 != 0) exact = false;
    whole /= 1024;
    v /= 1024.0;
    ++unit;
  }
  char buf[32];
  if (exact || unit == 0) {
    std::snprintf(buf, sizeof buf, "%llu %s", static_cast<unsigned long long>(whole), kUnits[unit]);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[unit]);
  }
  return buf;
}

}  // namespace hexz::base
