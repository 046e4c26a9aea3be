#include "conveyor/text/text.hpp"

#include <cstdint>
#include <string>

#include "conveyor/error/error.hpp"

namespace conveyor::text {
namespace {

bool digits(std::string_view s, std::size_t at, std::size_t n) {
  if (at + n > s.size()) return false;
  for (std::size_t i = at; i < at + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
  }
  return true;
}

int number(std::string_view s, std::size_t at, std::size_t n) {
  int v = 0;
  for (std::size_t i = at; i < at + n; ++i) v = v * 10 + (s[i] - '0');
  return v;
}

bool in(int v, int lo, int hi) { return v >= lo && v <= hi; }

// One pass over the text, outside and inside strings, counting the nesting
// of brackets and finding "\u0000" escapes (a raw NUL byte is a syntax error
// the parser reports itself). Returns an empty string when the limits hold.
std::string check_limits(std::string_view t, const JsonLimits& limits) {
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < t.size(); ++i) {
    const char c = t[i];
    if (in_string) {
      if (c == '"') {
        in_string = false;
      } else if (c == '\\' && i + 1 < t.size()) {
        if (t[i + 1] == 'u' && !limits.allow_nul && t.substr(i + 2, 4) == "0000") {
          return "a string contains a NUL character (\\u0000) at byte " + std::to_string(i);
        }
        ++i;  // the escaped character, whatever it is, does not end the string
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limits.max_depth) {
        return "nested deeper than " + std::to_string(limits.max_depth) + " levels at byte " + std::to_string(i);
      }
    } else if (c == ']' || c == '}') {
      --depth;  // unbalanced brackets are the parser's to report
    }
  }
  return {};
}

}  // namespace

nlohmann::json parse_json(std::string_view t, const JsonLimits& limits) {
  if (t.size() > limits.max_bytes) {
    throw Error(errc::bad_input, "JSON document of " + std::to_string(t.size()) +
                                     " bytes is larger than the limit of " + std::to_string(limits.max_bytes));
  }
  if (std::string problem = check_limits(t, limits); !problem.empty()) {
    throw Error(errc::bad_input, "JSON document refused: " + problem);
  }
  try {
    return nlohmann::json::parse(t.begin(), t.end());
  } catch (const nlohmann::json::exception& e) {
    // parse_error, and out_of_range for a number too large for a double.
    throw Error(errc::bad_input, std::string("malformed JSON: ") + e.what());
  }
}

bool is_rfc3339(std::string_view s, bool allow_space, std::size_t max_fraction_digits) {
  // 2026-12-02T10:00:00 is 19 characters; the rest is fraction and offset.
  if (s.size() < 20) return false;
  if (!digits(s, 0, 4) || s[4] != '-' || !digits(s, 5, 2) || s[7] != '-' || !digits(s, 8, 2)) {
    return false;
  }
  const char t = s[10];
  if (t != 'T' && t != 't' && !(allow_space && t == ' ')) return false;
  if (!digits(s, 11, 2) || s[13] != ':' || !digits(s, 14, 2) || s[16] != ':' || !digits(s, 17, 2)) {
    return false;
  }
  if (!in(number(s, 5, 2), 1, 12) || !in(number(s, 8, 2), 1, 31) || !in(number(s, 11, 2), 0, 23) ||
      !in(number(s, 14, 2), 0, 59) || !in(number(s, 17, 2), 0, 60)) {
    return false;
  }
  std::size_t i = 19;
  if (s[i] == '.') {
    const std::size_t start = ++i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    const std::size_t n = i - start;
    if (n == 0 || n > max_fraction_digits) return false;
  }
  if (i == s.size()) return false;
  if (s[i] == 'Z' || s[i] == 'z') return i + 1 == s.size();
  if (s[i] != '+' && s[i] != '-') return false;
  return s.size() == i + 6 && digits(s, i + 1, 2) && s[i + 3] == ':' && digits(s, i + 4, 2) &&
         in(number(s, i + 1, 2), 0, 23) && in(number(s, i + 4, 2), 0, 59);
}

std::optional<std::string> base64_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size() / 4 * 3);
  std::uint32_t acc = 0;
  int bits = 0;
  int digits = 0;  // base64 digits of the current quantum
  std::size_t pad = 0;
  for (const char c : s) {
    int v = -1;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '+') v = 62;
    else if (c == '/') v = 63;
    else if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    else if (c == '=') {
      ++pad;
      continue;
    } else return std::nullopt;
    if (pad > 0) return std::nullopt;  // data after padding
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    digits = (digits + 1) % 4;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  if (digits == 1 || pad > 2 || (pad > 0 && (digits + pad) % 4 != 0)) return std::nullopt;
  return out;
}

}  // namespace conveyor::text
