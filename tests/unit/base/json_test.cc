// The small JSON parser QMP replies go through: what RFC 8259 allows is
// read, what it does not is refused with the byte offset, and nothing deep
// or long can exhaust the stack.
#include "common/base/json.h"

#include <gtest/gtest.h>

namespace hexz::base {
namespace {

TEST(JsonTest, ParsesAQmpGreeting) {
  auto v =
      ParseJson(R"({"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": )"
                R"("Debian 1:7.2+dfsg-7"}, "capabilities": ["oob"]}})"
                "\r\n");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  const JsonValue* q = v->Find("QMP")->Find("version")->Find("qemu");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->Find("major")->AsInt(), 7);
  EXPECT_EQ(q->Find("micro")->AsInt(), 22);
  EXPECT_EQ(v->Find("QMP")->Find("capabilities")->items()[0].AsString(), "oob");
  EXPECT_EQ(v->Find("nothing"), nullptr);
}

TEST(JsonTest, ScalarsEscapesAndRoundTrip) {
  auto v = ParseJson(R"([true, false, null, -0, 12.5e-3, "a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"])");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  const auto& a = v->items();
  ASSERT_EQ(a.size(), 6u);
  EXPECT_TRUE(a[0].AsBool());
  EXPECT_FALSE(a[1].AsBool());
  EXPECT_TRUE(a[2].is_null());
  EXPECT_EQ(a[3].AsInt(), 0);
  EXPECT_EQ(a[4].AsString(), "12.5e-3");
  EXPECT_EQ(a[4].AsInt(), std::nullopt);
  EXPECT_EQ(a[5].AsString(), "a\"\\/\b\f\n\r\t\xc3\xa9\xf0\x9f\x98\x80");
  auto again = ParseJson(v->Serialize());
  ASSERT_TRUE(again.ok()) << v->Serialize();
  EXPECT_EQ(again->Serialize(), v->Serialize());
  EXPECT_EQ(ParseJson("99999999999999999999")->AsInt(), std::nullopt);  // beyond int64
}

TEST(JsonTest, RefusesWhatIsNotJson) {
  const std::pair<const char*, const char*> cases[] = {
      {"", "unexpected end of input at byte 0"},
      {"{", "expected a member name at byte 1"},
      {"{\"a\" 1}", "expected ':' at byte 5"},
      {"[1 2]", "expected ',' or ']' at byte 3"},
      {"{\"a\":1,}", "expected a member name at byte 7"},
      {"\"abc", "unterminated string"},
      {"\"a\x01\"", "control character in a string at byte 2"},
      {"\"\\x\"", "unknown escape at byte 2"},
      {"\"\\u12\"", "short \\u escape at byte 3"},
      {"\"\\u12g4\"", "bad hex digit in a \\u escape"},
      {"\"\\udc00\"", "lone low surrogate"},
      {"\"\\ud800x\"", "high surrogate without its low half"},
      {"01", "unexpected bytes after the value at byte 1"},
      {"1.", "a digit must follow '.'"},
      {"1e", "a digit must follow the exponent"},
      {"tru", "unexpected character at byte 0"},
      {"{} {}", "unexpected bytes after the value at byte 3"},
  };
  for (const auto& [text, want] : cases) {
    auto v = ParseJson(text);
    ASSERT_FALSE(v.ok()) << text;
    EXPECT_NE(v.status().message().find(want), std::string::npos)
        << text << ": " << v.status().ToString();
  }
}

TEST(JsonTest, DepthIsLimited) {
  std::string deep(100000, '[');
  auto v = ParseJson(deep);
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.status().message().find("nesting deeper than 64"), std::string::npos);
  EXPECT_TRUE(ParseJson(std::string(64, '[') + std::string(64, ']')).ok());
  EXPECT_FALSE(ParseJson(std::string(65, '[') + std::string(65, ']')).ok());
}

TEST(JsonTest, QuoteEscapesControlCharacters) {
  EXPECT_EQ(JsonQuote("a\"b\\c\n\x01"), "\"a\\\"b\\\\c\\u000a\\u0001\"");
}

}  // namespace
}  // namespace hexz::base
