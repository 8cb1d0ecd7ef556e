// json.h: a small JSON value, parser and string quoting, for the one JSON
// peer hexz talks to (QEMU's QMP, RFC 8259 text). Not a general library: it
// parses one value, keeps numbers as their text (with an integer view),
// keeps object members in their order, and refuses what it cannot hold
// safely (nesting deeper than a limit, invalid UTF-16 escapes, trailing
// bytes) with a message naming the byte offset.
//
// Ownership: a JsonValue owns its children.
// Thread safety: values are plain data; functions are pure.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/base/status.h"

namespace hexz::base {

class JsonValue {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

  JsonValue() = default;
  static JsonValue Null() { return JsonValue(); }
  static JsonValue Bool(bool b);
  static JsonValue Number(std::string text);  // text must be a valid JSON number
  static JsonValue String(std::string s);
  static JsonValue Array(std::vector<JsonValue> items);
  static JsonValue Object(std::vector<std::pair<std::string, JsonValue>> members);

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_object() const { return type_ == Type::kObject; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_array() const { return type_ == Type::kArray; }

  // The value of a bool; false for anything else.
  bool AsBool() const { return type_ == Type::kBool && bool_; }
  // The text of a string or number; empty for anything else.
  const std::string& AsString() const { return text_; }
  // A number that is an integer within int64; nullopt otherwise.
  std::optional<int64_t> AsInt() const;
  const std::vector<JsonValue>& items() const { return items_; }
  const std::vector<std::pair<std::string, JsonValue>>& members() const { return members_; }
  // The first member named `key` of an object, or null when there is none
  // (or this is not an object).
  const JsonValue* Find(std::string_view key) const;

  // Compact JSON text of the value.
  std::string Serialize() const;

 private:
  Type type_ = Type::kNull;
  bool bool_ = false;
  std::string text_;  // string contents, or a number's text
  std::vector<JsonValue> items_;
  std::vector<std::pair<std::string, JsonValue>> members_;
};

// Parses exactly one JSON value (surrounding whitespace allowed). kInvalidArgument
// names the problem and its byte offset; nesting deeper than max_depth is refused.
Result<JsonValue> ParseJson(std::string_view text, int max_depth = 64);

// `s` as a JSON string literal, quotes included (control characters escaped;
// other bytes passed through).
std::string JsonQuote(std::string_view s);

}  // namespace hexz::base
