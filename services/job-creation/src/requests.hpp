#pragma once
// Parsing and validation of the REST API's inputs (bodies, query strings,
// path segments), independent of the database so unit tests can cover it.
// Every problem is an http::FieldError naming the field. Thread-safe: pure
// functions.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "conveyor/http/problem.hpp"
#include "conveyor/model/ids.hpp"
#include "conveyor/model/status.hpp"

namespace conveyor::creation {

// A semantically invalid request (unknown job type, params against the
// type's schema, missing dependencies): answered 422 by the routes. Still a
// FieldError, so anything else that catches it answers 400.
class UnprocessableError : public http::FieldError {
 public:
  UnprocessableError(std::string field, const std::string& message,
                     std::vector<std::string> problems = {})
      : http::FieldError(std::move(field), message), problems_(std::move(problems)) {}
  const std::vector<std::string>& problems() const noexcept { return problems_; }

 private:
  std::vector<std::string> problems_;
};

inline constexpr std::size_t kMaxIdempotencyKey = 200;

// POST /v1/jobs
struct SubmitRequest {
  std::string job_type;
  nlohmann::json params = nlohmann::json::object();
  std::optional<int> priority;  // nullopt: the type's priority
  std::vector<std::int64_t> depends_on;
  std::optional<std::string> not_before;  // RFC 3339
  std::optional<std::string> idempotency_key;
};

// Parses the body (already parsed as JSON) and the Idempotency-Key header.
SubmitRequest parse_submit(const nlohmann::json& body,
                           const std::optional<std::string>& idempotency_key);

// GET /v1/jobs?status=&type=&page=&size=
struct ListQuery {
  std::optional<model::JobStatus> status;
  std::optional<std::string> job_type;
  std::int64_t page = 1;  // from 1
  std::int64_t size = 50;
};
inline constexpr std::int64_t kDefaultPageSize = 50;
inline constexpr std::int64_t kMaxPageSize = 500;

ListQuery parse_list_query(const std::map<std::string, std::string>& query);

// A "{id}" path segment: a positive decimal integer.
model::JobId parse_job_id(const std::string& segment);

// Whether `s` looks like an RFC 3339 date-time (2026-11-22T10:00:00Z,
// with optional fraction and numeric offset).
bool is_rfc3339(const std::string& s);

}  // namespace conveyor::creation
