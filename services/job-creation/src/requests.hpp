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
#include "conveyor/model/submission_json.hpp"

namespace conveyor::creation {

using model::SubmitRequest;
using ListQuery = model::JobQuery;
using conveyor::UnprocessableError;
using model::kDefaultPageSize;
using model::kMaxIdempotencyKey;
using model::kMaxPageSize;

// The bodies of POST /v1/jobs and POST /v1/jobs/batch (the CLI's too).
using model::parse_submit;
using model::parse_submit_batch;

// GET /v1/jobs?status=&type=&page=&size=
ListQuery parse_list_query(const std::map<std::string, std::string>& query);

// A "{id}" path segment: a positive decimal integer.
model::JobId parse_job_id(const std::string& segment);

// Whether `s` looks like an RFC 3339 date-time (2026-11-22T10:00:00Z,
// with optional fraction and numeric offset).
bool is_rfc3339(const std::string& s);

}  // namespace conveyor::creation
