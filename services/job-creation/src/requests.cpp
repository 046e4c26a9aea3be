#include "requests.hpp"

#include "conveyor/text/text.hpp"

#include <charconv>
#include <limits>
#include <set>

namespace conveyor::creation {
namespace {

// A decimal integer in [min, max]; nullopt otherwise (signs, spaces, overflow).
std::optional<std::int64_t> parse_int(const std::string& s, std::int64_t min, std::int64_t max) {
  std::int64_t v = 0;
  const auto* end = s.data() + s.size();
  const auto [ptr, ec] = std::from_chars(s.data(), end, v);
  if (s.empty() || ec != std::errc() || ptr != end || v < min || v > max) return std::nullopt;
  return v;
}

}  // namespace

bool is_rfc3339(const std::string& s) { return text::is_rfc3339(s, /*allow_space=*/true); }

ListQuery parse_list_query(const std::map<std::string, std::string>& query) {
  ListQuery q;
  for (const auto& [key, value] : query) {
    if (key == "status") {
      if (value.empty()) continue;                          // status=: no filter
      q.statuses = model::statuses_named(value, "status");  // one, or several: failed,internal_error
    } else if (key == "type") {
      if (!value.empty()) q.job_type = value;
    } else if (key == "page") {
      const auto v = parse_int(value, 1, std::numeric_limits<std::int32_t>::max());
      if (!v) throw http::FieldError("page", "page: expected an integer >= 1, got '" + value + "'");
      q.page = *v;
    } else if (key == "size") {
      const auto v = parse_int(value, 1, kMaxPageSize);
      if (!v) {
        throw http::FieldError(
            "size", "size: expected an integer from 1 to " + std::to_string(kMaxPageSize) + ", got '" + value + "'");
      }
      q.size = *v;
    } else {
      throw http::FieldError(key, key +
                                      ": unknown query parameter (expected status, type, "
                                      "page, size)");
    }
  }
  return q;
}

model::JobId parse_job_id(const std::string& segment) {
  const auto v = parse_int(segment, 1, std::numeric_limits<std::int64_t>::max());
  if (!v) throw http::FieldError("id", "id: '" + segment + "' is not a job id (positive integer)");
  return model::JobId(*v);
}

}  // namespace conveyor::creation
