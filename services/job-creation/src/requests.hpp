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
#include "conveyor/model/submission.hpp"

namespace conveyor::creation {

using model::SubmitRequest;
using ListQuery = model::JobQuery;
using conveyor::UnprocessableError;
using model::kDefaultPageSize;
using model::kMaxIdempotencyKey;
using model::kMaxPageSize;

// Parses the body (already parsed as JSON) and the Idempotency-Key header.
SubmitRequest parse_submit(const nlohmann::json& body, const std::optional<std::string>& idempotency_key);

// POST /v1/jobs/batch: {"jobs": [...]}, 1 to model::kMaxBatchJobs items,
// each a submission's body plus an optional "idempotency_key" (the header's
// value for that job) and "after" (indices of earlier items it depends on).
// A problem names its item: "jobs[2].priority: ...".
std::vector<SubmitRequest> parse_submit_batch(const nlohmann::json& body);

// GET /v1/jobs?status=&type=&page=&size=
ListQuery parse_list_query(const std::map<std::string, std::string>& query);

// A "{id}" path segment: a positive decimal integer.
model::JobId parse_job_id(const std::string& segment);

// Whether `s` looks like an RFC 3339 date-time (2026-11-22T10:00:00Z,
// with optional fraction and numeric offset).
bool is_rfc3339(const std::string& s);

}  // namespace conveyor::creation
