// libFuzzer harness for the JSON parser that reads QEMU's QMP replies: any
// input parses or fails cleanly, and what parses serializes to text that
// parses to the same serialization. Seeds: tests/fuzz/corpus/json.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/base/json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto v = hexz::base::ParseJson(text);
  if (!v.ok()) return 0;
  const std::string once = v->Serialize();
  auto again = hexz::base::ParseJson(once);
  if (!again.ok() || again->Serialize() != once) std::abort();
  return 0;
}
