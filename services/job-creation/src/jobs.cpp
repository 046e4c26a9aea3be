#include "jobs.hpp"

#include <algorithm>
#include <string>

#include "conveyor/error/error.hpp"
#include "conveyor/model/job_type.hpp"

namespace conveyor::creation {
namespace {

using model::JobStatus;

constexpr db::Statement kExistingJobs{
    "creation_existing_jobs", "SELECT id FROM conveyor.job WHERE id = ANY($1::bigint[])"};

// Checked on its own so that a value PostgreSQL refuses (2026-13-45) is
// reported against not_before rather than as a failed insert.
constexpr db::Statement kCheckTimestamp{"creation_check_timestamp",
                                        "SELECT $1::timestamptz IS NOT NULL"};

// NULL idempotency keys never conflict (NULLs are distinct in a unique constraint).
constexpr db::Statement kInsertJob{
    "creation_insert_job",
    "INSERT INTO conveyor.job (job_type, params, priority, max_attempts, depends_on, not_before, "
    "idempotency_key) "
    "VALUES ($1, $2::jsonb, $3, $4, $5::bigint[], $6::timestamptz, $7) "
    "ON CONFLICT (job_type, idempotency_key) DO NOTHING RETURNING id"};

constexpr db::Statement kJobByIdempotencyKey{
    "creation_job_by_idempotency_key",
    "SELECT id FROM conveyor.job WHERE job_type = $1 AND idempotency_key = $2"};

constexpr db::Statement kCountJobs{
    "creation_count_jobs",
    "SELECT count(*) FROM conveyor.job "
    "WHERE ($1::text IS NULL OR status = $1::text) AND ($2::text IS NULL OR job_type = $2::text)"};

constexpr db::Statement kListJobIds{
    "creation_list_job_ids",
    "SELECT id FROM conveyor.job "
    "WHERE ($1::text IS NULL OR status = $1::text) AND ($2::text IS NULL OR job_type = $2::text) "
    "ORDER BY id DESC LIMIT $3 OFFSET $4"};

// The row stays locked until commit, so no stage moves the job under us
// (their claims use SKIP LOCKED or conditional updates).
constexpr db::Statement kLockJob{"creation_lock_job",
                                 "SELECT status FROM conveyor.job WHERE id = $1 FOR UPDATE"};

constexpr db::Statement kRequestCancel{
    "creation_request_cancel",
    "UPDATE conveyor.job SET canceled_at = now() WHERE id = $1 AND canceled_at IS NULL"};

constexpr db::Statement kMoveStatus{
    "creation_move_status",
    "UPDATE conveyor.job SET status = $3 WHERE id = $1 AND status = $2"};

// A fresh run: attempts, errors and the previous result are forgotten; the
// configuration service writes config again.
constexpr db::Statement kRestart{
    "creation_restart",
    "UPDATE conveyor.job SET status = 'initialized', attempt = 0, error_subtype = NULL, "
    "error_message = NULL, result = NULL, worker_id = NULL, canceled_at = NULL "
    "WHERE id = $1 AND status = $2"};

// Publication failed: publish the result already there again.
constexpr db::Statement kResumeProcessed{
    "creation_resume_processed",
    "UPDATE conveyor.job SET status = 'processed', error_subtype = NULL, error_message = NULL, "
    "canceled_at = NULL WHERE id = $1 AND status = 'error_checked'"};

// The current run starts at the job's last move to initialized.
constexpr db::Statement kProcessedInCurrentRun{
    "creation_processed_in_current_run",
    "SELECT EXISTS (SELECT 1 FROM conveyor.job_status_change c "
    "WHERE c.job_id = $1 AND c.to_status = 'processed' AND c.id > coalesce("
    "(SELECT max(s.id) FROM conveyor.job_status_change s "
    "WHERE s.job_id = $1 AND s.to_status = 'initialized'), 0))"};

std::string job_name(model::JobId id) { return "job " + std::to_string(id.value()); }

model::Job must_load(db::Tx& tx, model::JobId id) {
  auto job = model::load_job(tx, id);
  if (!job) throw Error(errc::not_found, job_name(id) + " does not exist");
  return std::move(*job);
}

JobStatus lock_job(db::Tx& tx, model::JobId id) {
  const auto rows = tx.exec(kLockJob, {id.value()});
  if (rows.empty()) throw Error(errc::not_found, job_name(id) + " does not exist");
  const auto status = model::parse_status(rows[0][0].view());
  if (!status) throw Error(errc::internal, "database: unknown job status " + rows[0][0].as_string());
  return *status;
}

// A conditional update on a row we hold locked: not matching is a bug.
void move(db::Tx& tx, model::JobId id, JobStatus from, JobStatus to) {
  const auto r = tx.exec(kMoveStatus, {id.value(), std::string(model::to_string(from)),
                                       std::string(model::to_string(to))});
  if (r.affected_rows() != 1) {
    throw Error(errc::conflict, job_name(id) + " is no longer " + std::string(model::to_string(from)));
  }
}

void check_affected(const db::Result& r, model::JobId id, const char* what) {
  if (r.affected_rows() != 1) throw Error(errc::conflict, job_name(id) + ": could not " + what);
}

std::optional<std::string> status_text(const std::optional<JobStatus>& s) {
  if (!s) return std::nullopt;
  return std::string(model::to_string(*s));
}

}  // namespace

SubmitResult submit_job(db::Tx& tx, const model::SystemParameters& parameters,
                        const SubmitRequest& request) {
  const auto type = model::load_job_type(tx, request.job_type);
  if (!type || !type->enabled) {
    throw UnprocessableError("job_type",
                             "job_type: unknown job type '" + request.job_type + "'" +
                                 (type ? " (disabled)" : ""));
  }
  if (!parameters.handles(request.job_type)) {
    throw UnprocessableError("job_type", "job_type: job type '" + request.job_type +
                                             "' is not in system_parameters.job_types_list");
  }
  const auto problems = model::validate_params(type->params_schema, request.params);
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
      throw http::FieldError("not_before", "not_before: '" + *request.not_before +
                                               "' is not a valid date-time: " + e.what());
    }
  }

  const auto inserted = tx.exec(
      kInsertJob, {request.job_type, request.params.dump(), request.priority.value_or(type->priority),
                   std::max(1, type->max_attempts), request.depends_on, request.not_before,
                   request.idempotency_key});
  if (!inserted.empty()) {
    return {must_load(tx, model::JobId(inserted[0][0].as_int())), true};
  }
  // Conflict: ON CONFLICT waited for the other insert to commit, and this
  // statement's fresh snapshot sees its row.
  const auto existing = tx.exec(kJobByIdempotencyKey, {request.job_type, request.idempotency_key});
  if (existing.empty()) {
    throw Error(errc::conflict, "a job with the same Idempotency-Key was being created; try again");
  }
  return {must_load(tx, model::JobId(existing[0][0].as_int())), false};
}

JobPage list_jobs(db::Tx& tx, const ListQuery& query) {
  const auto status = status_text(query.status);
  JobPage page;
  page.total = tx.exec(kCountJobs, {status, query.job_type})[0][0].as_int();
  std::vector<std::int64_t> ids;
  for (const db::Row r :
       tx.exec(kListJobIds, {status, query.job_type, query.size, (query.page - 1) * query.size})) {
    ids.push_back(r[0].as_int());
  }
  page.items = model::load_jobs(tx, ids);
  return page;
}

model::Job get_job(db::Tx& tx, model::JobId id) { return must_load(tx, id); }

CancelResult cancel_job(db::Tx& tx, model::JobId id) {
  const JobStatus status = lock_job(tx, id);
  switch (status) {
    case JobStatus::done:
      throw Error(errc::conflict, job_name(id) + " is done");
    case JobStatus::canceled:
      return {must_load(tx, id), true};
    default:
      break;
  }
  tx.exec(kRequestCancel, {id.value()});
  switch (status) {
    case JobStatus::started:
      // Its worker sees canceled_at, kills the process group and ends it canceled.
      return {must_load(tx, id), false};
    case JobStatus::failed:
    case JobStatus::internal_error:
    case JobStatus::external_error:
      move(tx, id, status, JobStatus::error_checked);
      move(tx, id, JobStatus::error_checked, JobStatus::canceled);
      break;
    default:  // initialized, configured, ready, queued, processed, error_checked
      move(tx, id, status, JobStatus::canceled);
      break;
  }
  return {must_load(tx, id), true};
}

model::Job retry_job(db::Tx& tx, model::JobId id) {
  const JobStatus status = lock_job(tx, id);
  switch (status) {
    case JobStatus::failed:
    case JobStatus::internal_error:
    case JobStatus::external_error: {
      move(tx, id, status, JobStatus::error_checked);
      const bool processed = tx.exec(kProcessedInCurrentRun, {id.value()})[0][0].as_bool();
      if (processed) {
        check_affected(tx.exec(kResumeProcessed, {id.value()}), id, "resume at processed");
      } else {
        check_affected(tx.exec(kRestart, {id.value(), "error_checked"}), id,
                       "restart at initialized");
      }
      break;
    }
    case JobStatus::canceled:
      check_affected(tx.exec(kRestart, {id.value(), "canceled"}), id, "restart at initialized");
      break;
    default:
      throw Error(errc::conflict, job_name(id) + " is " + std::string(model::to_string(status)) +
                                      ": only failed, internal_error, external_error or canceled "
                                      "jobs can be retried");
  }
  return must_load(tx, id);
}

}  // namespace conveyor::creation
