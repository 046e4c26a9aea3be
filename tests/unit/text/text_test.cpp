// conveyor::text: untrusted text is checked within limits, linearly, before
// anything recursive runs (issue 9: a message or request nested 150k deep,
// or a timestamp with a 200 KB fraction, crashed services).
#include "conveyor/text/text.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "conveyor/error/error.hpp"

namespace conveyor::text {
namespace {

using ::testing::HasSubstr;

std::string refusal(std::string_view t, const JsonLimits& limits = {}) {
  try {
    parse_json(t, limits);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), errc::bad_input);
    return e.what();
  }
  return "(accepted)";
}

std::string nested(int depth, const char* open = "[", const char* close = "]") {
  std::string s;
  for (int i = 0; i < depth; ++i) s += open;
  for (int i = 0; i < depth; ++i) s += close;
  return s;
}

TEST(ParseJson, AcceptsOrdinaryDocuments) {
  const auto j = parse_json(R"({"a": [1, 2.5, "x\"]{[", {"b": null}], "c": "\\u0000"})");
  EXPECT_EQ(j["a"][2], "x\"]{[");
  EXPECT_EQ(j["c"], "\\u0000") << "an escaped backslash before u0000 is no NUL";
  EXPECT_EQ(parse_json(nested(64)).size(), 1u) << "exactly the limit";
}

TEST(ParseJson, RefusesNestingBeyondTheLimitBeforeParsing) {
  EXPECT_THAT(refusal(nested(65)), HasSubstr("nested deeper than 64 levels at byte 64"));
  // 150k levels (the poison of issue 9) are refused without recursion.
  const std::string deep = R"({"data":)" + nested(150000, "{\"a\":", "}") + "}";
  JsonLimits big;
  big.max_bytes = deep.size();
  EXPECT_THAT(refusal(deep, big), HasSubstr("nested deeper"));
  // Brackets inside strings do not count.
  EXPECT_NO_THROW(parse_json("[\"" + std::string(1000, '[') + "\"]"));
  JsonLimits shallow;
  shallow.max_depth = 2;
  EXPECT_THAT(refusal(R"({"a": {"b": {}}})", shallow), HasSubstr("deeper than 2"));
}

TEST(ParseJson, RefusesNulInStringsAndKeys) {
  EXPECT_THAT(refusal(R"({"job_type": "sleep\u0000x"})"), HasSubstr("NUL character"));
  EXPECT_THAT(refusal(R"({"a\u0000": 1})"), HasSubstr("NUL character"));
  JsonLimits allow;
  allow.allow_nul = true;
  EXPECT_EQ(parse_json(R"(["a\u0000b"])", allow)[0].get<std::string>().size(), 3u);
}

TEST(ParseJson, RefusesLargeAndMalformedDocuments) {
  JsonLimits small;
  small.max_bytes = 10;
  EXPECT_THAT(refusal("[1,2,3,4,5,6]", small), HasSubstr("larger than the limit of 10"));
  EXPECT_THAT(refusal("{\"a\": "), HasSubstr("malformed JSON"));
  EXPECT_THAT(refusal("[1e999999]"), HasSubstr("malformed JSON")) << "number overflow";
  EXPECT_THAT(refusal(""), HasSubstr("malformed JSON"));
  EXPECT_THAT(refusal(std::string("[\"a\0b\"]", 7)), HasSubstr("malformed JSON"));
}

TEST(Rfc3339, AcceptsTheFormAndRefusesTheRest) {
  EXPECT_TRUE(is_rfc3339("2026-12-02T10:00:00Z"));
  EXPECT_TRUE(is_rfc3339("2026-12-02t10:00:00.123456789+01:00"));
  EXPECT_TRUE(is_rfc3339("2026-12-02 10:00:00Z", /*allow_space=*/true));
  EXPECT_FALSE(is_rfc3339("2026-12-02 10:00:00Z"));
  EXPECT_FALSE(is_rfc3339("2026-13-02T10:00:00Z"));
  EXPECT_FALSE(is_rfc3339("2026-12-02T24:00:00Z"));
  EXPECT_FALSE(is_rfc3339("2026-12-02T10:00:00"));
  EXPECT_FALSE(is_rfc3339("2026-12-02T10:00:00.Z"));
  EXPECT_FALSE(is_rfc3339("2026-12-02T10:00:00.1234567890Z")) << "more than 9 fraction digits";
  EXPECT_FALSE(is_rfc3339("2026-12-02T10:00:00+0100"));
  EXPECT_FALSE(is_rfc3339("2026-12-02T10:00:00Zjunk"));
  // The poison of issue 9: a 200 KB fraction, answered at once.
  EXPECT_FALSE(is_rfc3339("2026-01-01T00:00:00." + std::string(200000, '1') + "Z"));
}

}  // namespace
}  // namespace conveyor::text

namespace conveyor::text {
namespace {

TEST(Base64, DecodesPaddedUnpaddedAndWrappedText) {
  EXPECT_EQ(base64_decode("aGVsbG8="), "hello");
  EXPECT_EQ(base64_decode("aGVsbG8"), "hello");
  EXPECT_EQ(base64_decode("aGVs\nbG8h"), "hello!");
  EXPECT_EQ(base64_decode(""), "");
  EXPECT_EQ(base64_decode("/+8="), std::string("\xff\xef"));
}

TEST(Base64, RefusesWhatIsNotBase64) {
  EXPECT_EQ(base64_decode("aGVsbG8*"), std::nullopt);
  EXPECT_EQ(base64_decode("a"), std::nullopt) << "a lone digit is no byte";
  EXPECT_EQ(base64_decode("aG=Vs"), std::nullopt) << "data after padding";
  EXPECT_EQ(base64_decode("aGVsbG8==="), std::nullopt);
}

}  // namespace
}  // namespace conveyor::text
