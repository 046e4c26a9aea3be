#pragma once
// conveyor::text — reading untrusted text (request bodies, Kafka messages)
// within limits, before anything recursive touches it. Every function here
// is linear in its input and uses no recursion and no backtracking regex.
// Thread-safe: free functions on values.
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace conveyor::text {

struct JsonLimits {
  std::size_t max_bytes = 1024 * 1024;
  // Nesting of arrays and objects; the document itself is depth 1. 64 is far
  // more than any Conveyor document needs and far less than what copies,
  // dumps and PostgreSQL's jsonb (SQLSTATE 54001) can take.
  int max_depth = 64;
  // A NUL inside a string ("\u0000") would be cut by C APIs and refused by
  // PostgreSQL's jsonb: refuse it here, naming where it is.
  bool allow_nul = false;
};

// Parses `text` as one JSON document after checking the limits with one
// linear scan. Throws conveyor::Error(bad_input) naming what was wrong: too
// large, nested too deep (with the byte offset), a NUL in a string, or the
// JSON syntax error.
nlohmann::json parse_json(std::string_view text, const JsonLimits& limits = {});

// True for an RFC 3339 date-time: YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM),
// 'T' or 't' (or ' ' when allow_space), at most max_fraction_digits digits
// of fraction. Field ranges are checked loosely (month 01-12, day 01-31,
// hour 00-23, minute 00-59, second 00-60).
bool is_rfc3339(std::string_view s, bool allow_space = false, std::size_t max_fraction_digits = 9);

// Decodes standard base64 (RFC 4648 §4, '=' padding optional; ASCII
// whitespace ignored, as in PEM and kubeconfig "*-data" fields). nullopt for
// any other character or a truncated quantum.
std::optional<std::string> base64_decode(std::string_view s);

}  // namespace conveyor::text
