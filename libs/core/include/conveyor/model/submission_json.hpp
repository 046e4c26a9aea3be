#pragma once
// The JSON form of submissions, one copy for the REST API (POST /v1/jobs,
// POST /v1/jobs/batch) and the CLI (`conveyor job submit --file`). Checks
// the shape only (fields, types, ranges); submit_job(s) checks the rest
// against the database. Every problem is a FieldError naming the field
// ("priority", "jobs[2].params"). Thread-safe: pure functions.
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "conveyor/model/submission.hpp"

namespace conveyor::model {

// A submission's body (already parsed as JSON), and the Idempotency-Key
// header's value.
SubmitRequest parse_submit(const nlohmann::json& body, const std::optional<std::string>& idempotency_key);

// {"jobs": [...]}, 1 to kMaxBatchJobs items, each a submission's body plus
// an optional "idempotency_key" (that job's key) and "after" (indices of
// earlier items it depends on). A problem names its item: "jobs[2].priority".
std::vector<SubmitRequest> parse_submit_batch(const nlohmann::json& body);

}  // namespace conveyor::model
