#include "conveyor/model/submission.hpp"

#include <algorithm>
#include <string>

#include "conveyor/error/error.hpp"
#include "conveyor/model/job_type.hpp"

namespace conveyor::model {
namespace {

constexpr db::Statement kExistingJobs{"model_existing_jobs",
                                      "SELECT id FROM conveyor.job WHERE id = ANY($1::bigint[])"};

// Checked on its own so that a value PostgreSQL refuses (2026-13-45) is
// reported against not_before rather than as a failed insert.
constexpr db::Statement kCheckTimestamp{"model_check_timestamp", "SELECT $1::timestamptz IS NOT NULL"};

// Only keyed jobs are in the unique index (job_type_idempotency_key_key, partial
// since migration 20261219000000): a job without a key never conflicts.
constexpr db::Statement kInsertJob{
    "model_insert_job",
    "INSERT INTO conveyor.job (job_type, params, priority, max_attempts, depends_on, not_before, "
    "idempotency_key) "
    "VALUES ($1, $2::jsonb, $3, $4, $5::bigint[], $6::timestamptz, $7) "
    "ON CONFLICT (job_type, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING "
    // The job as inserted, BEFORE triggers included: no read back.
    "RETURNING " CONVEYOR_JOB_COLUMNS};

constexpr db::Statement kJobByIdempotencyKey{
    "model_job_by_idempotency_key", "SELECT id FROM conveyor.job WHERE job_type = $1 AND idempotency_key = $2"};

constexpr db::Statement kCountJobs{
    "model_count_jobs",
    "SELECT count(*) FROM conveyor.job "
    "WHERE ($1::text IS NULL OR status = $1::text) AND ($2::text IS NULL OR job_type = $2::text)"};

constexpr db::Statement kListJobIds{
    "model_list_job_ids",
    "SELECT id FROM conveyor.job "
    "WHERE ($1::text IS NULL OR status = $1::text) AND ($2::text IS NULL OR job_type = $2::text) "
    "ORDER BY id DESC LIMIT $3 OFFSET $4"};

std::string job_name(JobId id) { return "job " + std::to_string(id.value()); }

Job must_load(db::Tx& tx, JobId id) {
  auto job = load_job(tx, id);
  if (!job) throw Error(errc::not_found, job_name(id) + " does not exist");
  return std::move(*job);
}

std::optional<std::string> status_text(const std::optional<JobStatus>& s) {
  if (!s) return std::nullopt;
  return std::string(to_string(*s));
}

}  // namespace

SubmitResult submit_job(db::Tx& tx, const SystemParameters& parameters, const SubmitRequest& request) {
  const auto type = load_job_type(tx, request.job_type);
  if (!type || !type->enabled) {
    throw UnprocessableError("job_type",
                             "job_type: unknown job type '" + request.job_type + "'" + (type ? " (disabled)" : ""));
  }
  if (!parameters.handles(request.job_type)) {
    throw UnprocessableError(
        "job_type", "job_type: job type '" + request.job_type + "' is not in system_parameters.job_types_list");
  }
  const auto problems = validate_params(type->params_schema, request.params);
  if (!problems.empty()) {
    std::string detail = "params do not match the schema of job type '" + request.job_type + "': ";
    for (std::size_t i = 0; i < problems.size(); ++i) detail += (i ? "; " : "") + problems[i];
    throw UnprocessableError("params", detail, problems);
  }
  if (!request.depends_on.empty()) {
    std::vector<std::int64_t> found;
    for (const db::Row r : tx.exec(kExistingJobs, {request.depends_on})) {
      found.push_back(r[0].as_int());
    }
    std::string missing;
    for (const auto id : request.depends_on) {
      if (std::find(found.begin(), found.end(), id) == found.end()) {
        missing += (missing.empty() ? "" : ", ") + std::to_string(id);
      }
    }
    if (!missing.empty()) {
      throw UnprocessableError("depends_on", "depends_on: no such job(s): " + missing);
    }
  }
  if (request.not_before) {
    try {
      tx.exec(kCheckTimestamp, {*request.not_before});
    } catch (const db::DbError& e) {
      if (e.code() != errc::bad_input) throw;
      throw FieldError("not_before", "not_before: '" + *request.not_before + "' is not a valid date-time: " + e.what());
    }
  }

  const auto inserted = tx.exec(
      kInsertJob, {request.job_type, request.params.dump(), request.priority.value_or(type->priority),
                   std::max(1, type->max_attempts), request.depends_on, request.not_before, request.idempotency_key});
  if (!inserted.empty()) return {job_from_row(inserted[0]), true};
  // Conflict: ON CONFLICT waited for the other insert to commit, and this
  // statement's fresh snapshot sees its row.
  const auto existing = tx.exec(kJobByIdempotencyKey, {request.job_type, request.idempotency_key});
  if (existing.empty()) {
    throw Error(errc::conflict, "a job with the same Idempotency-Key was being created; try again");
  }
  return {must_load(tx, JobId(existing[0][0].as_int())), false};
}

JobPage list_jobs(db::Tx& tx, const JobQuery& query) {
  const auto status = status_text(query.status);
  JobPage page;
  page.total = tx.exec(kCountJobs, {status, query.job_type})[0][0].as_int();
  std::vector<std::int64_t> ids;
  for (const db::Row r : tx.exec(kListJobIds, {status, query.job_type, query.size, (query.page - 1) * query.size})) {
    ids.push_back(r[0].as_int());
  }
  page.items = load_jobs(tx, ids);
  return page;
}

Job get_job(db::Tx& tx, JobId id) { return must_load(tx, id); }

SubmitRequest scheduled_request(const JobType& type, TimePoint slot) {
  SubmitRequest r;
  r.job_type = type.name;
  r.idempotency_key = "schedule:" + format_utc(slot);
  const nlohmann::json props = type.params_schema.value("properties", nlohmann::json::object());
  if (props.is_object() && props.contains("scheduled_for")) r.params["scheduled_for"] = format_utc(slot);
  return r;
}

SubmitRequest collapsed_request(const JobType& type, const SlotRange& range) {
  SubmitRequest r;
  r.job_type = type.name;
  r.idempotency_key = "backfill:" + format_utc(range.first) + ".." + format_utc(range.last);
  const nlohmann::json props = type.params_schema.value("properties", nlohmann::json::object());
  if (!props.is_object()) return r;
  if (props.contains("scheduled_from")) r.params["scheduled_from"] = format_utc(range.first);
  if (props.contains("scheduled_to")) r.params["scheduled_to"] = format_utc(range.last);
  if (props.contains("slot_count")) r.params["slot_count"] = range.count;
  if (props.contains("scheduled_for")) r.params["scheduled_for"] = format_utc(range.last);
  return r;
}

SubmitRequest triggered_request(const Job& upstream, const nlohmann::json& trigger, std::size_t index) {
  SubmitRequest r;
  r.job_type = trigger.at("job_type").get<std::string>();
  r.depends_on = {upstream.id.value()};
  r.idempotency_key = "trigger:" + std::to_string(upstream.id.value()) + ":" + std::to_string(index);
  const nlohmann::json params = trigger.value("params", nlohmann::json::object());
  for (const auto& [key, value] : params.items()) {
    const bool placeholder = value.is_string() && value.get<std::string>().size() > 2 &&
                             value.get<std::string>().front() == '{' && value.get<std::string>().back() == '}';
    if (!placeholder) {
      r.params[key] = value;
      continue;
    }
    const std::string name = value.get<std::string>().substr(1, value.get<std::string>().size() - 2);
    if (name == "job_id") {
      r.params[key] = upstream.id.value();
    } else if (upstream.params.contains(name)) {
      r.params[key] = upstream.params[name];
    } else {
      throw FieldError("triggers[" + std::to_string(index) + "].params." + key,
                       "trigger " + std::to_string(index) + " of job type '" + upstream.job_type + "': params." + key +
                           " takes {" + name + "}, but job " + std::to_string(upstream.id.value()) + " has no param '" +
                           name + "'");
    }
  }
  return r;
}

}  // namespace conveyor::model
