// The JSON bodies of submissions (POST /v1/jobs, POST /v1/jobs/batch, and
// `conveyor job submit --file`), parsed into SubmitRequests. Every problem
// is a FieldError naming the field. Thread-safe: pure functions.
#include "conveyor/model/submission_json.hpp"

#include <limits>
#include <set>

#include "conveyor/error/error.hpp"
#include "conveyor/text/text.hpp"

namespace conveyor::model {
namespace {

const char* json_type_name(const nlohmann::json& j) {
  if (j.is_number_integer()) return "an integer";
  if (j.is_number()) return "a number";
  if (j.is_string()) return "a string";
  if (j.is_boolean()) return "a boolean";
  if (j.is_array()) return "an array";
  if (j.is_object()) return "an object";
  return "null";
}

[[noreturn]] void wrong_type(const std::string& field, const char* expected, const nlohmann::json& got) {
  throw FieldError(field, field + ": expected " + expected + ", got " + json_type_name(got));
}

// An integer JSON value in [min, max]. nlohmann keeps integers above
// INT64_MAX as unsigned; get<int64_t>() would wrap them to negatives.
std::int64_t integer_in(const nlohmann::json& j, const std::string& field, std::int64_t min, std::int64_t max) {
  const bool too_large = j.is_number_unsigned() && j.get<std::uint64_t>() > static_cast<std::uint64_t>(max);
  const std::int64_t v = too_large ? max : j.get<std::int64_t>();
  if (too_large || v < min || v > max) {
    throw FieldError(field, field + ": " + j.dump() + " is out of range (" + std::to_string(min) + " to " +
                                std::to_string(max) + ")");
  }
  return v;
}

// The body is an object of known fields only.
void check_submit_fields(const nlohmann::json& body) {
  if (!body.is_object()) {
    throw FieldError("body", std::string("body: expected a JSON object, got ") + json_type_name(body));
  }
  static const std::set<std::string> known = {"job_type", "params", "priority", "depends_on", "not_before"};
  for (const auto& [key, value] : body.items()) {
    if (!known.contains(key)) {
      throw FieldError(key, key +
                                ": unknown field (expected job_type, params, priority, "
                                "depends_on, not_before; in a batch, idempotency_key and after too)");
    }
  }
}

std::string job_type_field(const nlohmann::json& body) {
  const auto type = body.find("job_type");
  if (type == body.end()) throw FieldError("job_type", "job_type: required");
  if (!type->is_string()) wrong_type("job_type", "a string", *type);
  std::string job_type = type->get<std::string>();
  if (job_type.empty()) throw FieldError("job_type", "job_type: must not be empty");
  return job_type;
}

// depends_on: an array of job ids (positive integers).
std::vector<std::int64_t> depends_on_field(const nlohmann::json& d) {
  if (!d.is_array()) wrong_type("depends_on", "an array of job ids", d);
  std::vector<std::int64_t> ids;
  for (std::size_t i = 0; i < d.size(); ++i) {
    const auto& e = d[i];
    const std::string field = "depends_on[" + std::to_string(i) + "]";
    if (!e.is_number_integer()) wrong_type(field, "a job id (positive integer)", e);
    ids.push_back(integer_in(e, field, 1, std::numeric_limits<std::int64_t>::max()));
  }
  return ids;
}

// after (a batch item's): indices of earlier items of the batch, below `index`.
std::vector<std::size_t> after_field(const nlohmann::json& a, std::size_t index) {
  if (!a.is_array()) wrong_type("after", "an array of indices of earlier jobs of this batch", a);
  std::vector<std::size_t> items;
  for (std::size_t j = 0; j < a.size(); ++j) {
    const std::string field = "after[" + std::to_string(j) + "]";
    if (!a[j].is_number_integer()) wrong_type(field, "an index of an earlier job of this batch", a[j]);
    if (index == 0) throw FieldError(field, field + ": the first job of a batch has no earlier one");
    items.push_back(static_cast<std::size_t>(integer_in(a[j], field, 0, static_cast<std::int64_t>(index) - 1)));
  }
  return items;
}

std::string not_before_field(const nlohmann::json& n) {
  if (!n.is_string()) wrong_type("not_before", "an RFC 3339 date-time string", n);
  auto s = n.get<std::string>();
  if (!text::is_rfc3339(s, /*allow_space=*/true)) {
    throw FieldError("not_before", "not_before: '" + s +
                                       "' is not an RFC 3339 date-time "
                                       "(e.g. 2026-11-22T10:00:00Z)");
  }
  return s;
}

// `field`: the header (Idempotency-Key), or a batch item's idempotency_key.
void check_idempotency_key(const std::string& key, const std::string& field = "Idempotency-Key") {
  if (key.empty()) throw FieldError(field, field + ": must not be empty");
  if (key.size() > kMaxIdempotencyKey) {
    throw FieldError(field, field + ": longer than " + std::to_string(kMaxIdempotencyKey) + " characters");
  }
  try {
    (void)nlohmann::json(key).dump();  // what the insert sends
  } catch (const nlohmann::json::type_error&) {
    throw FieldError(field, field + ": not valid UTF-8");
  }
}

}  // namespace

SubmitRequest parse_submit(const nlohmann::json& body, const std::optional<std::string>& idempotency_key) {
  check_submit_fields(body);
  SubmitRequest r;
  r.job_type = job_type_field(body);

  if (const auto p = body.find("params"); p != body.end() && !p->is_null()) {
    if (!p->is_object()) wrong_type("params", "an object", *p);
    r.params = *p;
  }

  if (const auto p = body.find("priority"); p != body.end() && !p->is_null()) {
    if (!p->is_number_integer()) wrong_type("priority", "an integer", *p);
    r.priority =
        static_cast<int>(integer_in(*p, "priority", std::numeric_limits<int>::min(), std::numeric_limits<int>::max()));
  }

  if (const auto d = body.find("depends_on"); d != body.end() && !d->is_null()) r.depends_on = depends_on_field(*d);
  if (const auto n = body.find("not_before"); n != body.end() && !n->is_null()) r.not_before = not_before_field(*n);
  if (idempotency_key) {
    check_idempotency_key(*idempotency_key);
    r.idempotency_key = idempotency_key;
  }
  return r;
}

std::vector<SubmitRequest> parse_submit_batch(const nlohmann::json& body) {
  if (!body.is_object()) wrong_type("body", "a JSON object", body);
  for (const auto& [key, value] : body.items()) {
    if (key != "jobs") throw FieldError(key, key + ": unknown field (expected jobs)");
  }
  const auto jobs = body.find("jobs");
  if (jobs == body.end()) throw FieldError("jobs", "jobs: required");
  if (!jobs->is_array()) wrong_type("jobs", "an array of jobs", *jobs);
  if (jobs->empty()) throw FieldError("jobs", "jobs: must not be empty");
  if (jobs->size() > model::kMaxBatchJobs) {
    throw FieldError("jobs", "jobs: " + std::to_string(jobs->size()) + " jobs; at most " +
                                 std::to_string(model::kMaxBatchJobs) + " per request");
  }
  std::vector<SubmitRequest> requests;
  requests.reserve(jobs->size());
  for (std::size_t i = 0; i < jobs->size(); ++i) {
    const std::string name = "jobs[" + std::to_string(i) + "]";
    nlohmann::json item = (*jobs)[i];
    if (!item.is_object()) wrong_type(name, "a job (a JSON object)", item);
    try {
      std::optional<std::string> key;
      if (const auto k = item.find("idempotency_key"); k != item.end()) {
        if (!k->is_null()) {
          if (!k->is_string()) wrong_type("idempotency_key", "a string", *k);
          key = k->get<std::string>();
          check_idempotency_key(*key, "idempotency_key");
        }
        item.erase("idempotency_key");
      }
      std::vector<std::size_t> after;
      if (const auto a = item.find("after"); a != item.end()) {
        if (!a->is_null()) after = after_field(*a, i);
        item.erase("after");
      }
      requests.push_back(parse_submit(item, key));
      requests.back().after = std::move(after);
    } catch (const FieldError& e) {
      rethrow_within(name + ".", e);
    }
  }
  return requests;
}

}  // namespace conveyor::model
