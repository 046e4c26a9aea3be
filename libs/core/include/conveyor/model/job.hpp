#pragma once
// A row of conveyor.job and its history (conveyor.job_status_change) as typed
// values, with the JSON the REST API and the CLI show. Reading only: status
// changes are conditional UPDATEs written by the stage that owns them.
// Thread-safe: plain values; the functions use the caller's transaction.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "conveyor/db/db.hpp"
#include "conveyor/model/ids.hpp"
#include "conveyor/model/status.hpp"

namespace conveyor::model {

struct Job {
  JobId id;
  std::string job_type;
  JobStatus status = JobStatus::initialized;
  int priority = 0;
  int attempt = 0;
  int max_attempts = 1;
  nlohmann::json params = nlohmann::json::object();
  nlohmann::json config;  // null until configured
  nlohmann::json result;  // null until processed
  std::vector<std::int64_t> depends_on;
  std::optional<std::int64_t> worker_id;
  // Timestamps are RFC 3339 in UTC ("2026-11-22T10:00:00.123456Z").
  std::optional<std::string> canceled_at;
  // Set by `conveyor job hold`: admission skips the job until it is cleared.
  std::optional<std::string> held_at;
  std::optional<std::string> not_before;
  std::string created_at;
  std::string updated_at;
  std::optional<std::string> idempotency_key;
  std::optional<std::string> error_subtype;
  std::optional<std::string> error_message;

  // {id, job_type, status, priority, attempt, max_attempts, params, config,
  //  result, depends_on, worker_id, canceled_at, held_at, not_before, created_at,
  //  updated_at, idempotency_key, error_subtype, error_message}; absent
  // optionals are null.
  nlohmann::json to_json() const;
};

// One row of conveyor.job_status_change.
struct StatusChange {
  std::int64_t id = 0;
  std::optional<JobStatus> from_status;  // nullopt for the insert
  JobStatus to_status = JobStatus::initialized;
  std::string at;  // RFC 3339, UTC
  std::string actor;
  std::optional<std::string> error_subtype;
  std::optional<std::string> message;

  nlohmann::json to_json() const;  // {from_status, to_status, at, actor, error_subtype, message}
};

// One row of conveyor.job_audit: a change of a job's params or config (by
// the CLI's `job patch --set-param`, psql, or a service), recorded by the
// trigger conveyor.record_job_audit.
struct AuditEntry {
  std::int64_t id = 0;
  std::string at;  // RFC 3339, UTC
  std::string actor;
  std::string field;  // "params", "config"
  nlohmann::json old_value;
  nlohmann::json new_value;

  nlohmann::json to_json() const;  // {at, actor, field, old_value, new_value}
};

// The columns job_from_row reads, as a SELECT list or a RETURNING list of
// conveyor.job (timestamps as RFC 3339 text in UTC).
#define CONVEYOR_JOB_COLUMNS \
  "id, job_type, status, priority, attempt, max_attempts, params::text AS params, config::text AS config, "     \
  "result::text AS result, depends_on, worker_id, " CONVEYOR_RFC3339("canceled_at") " AS canceled_at, "         \
  CONVEYOR_RFC3339("held_at") " AS held_at, " CONVEYOR_RFC3339("not_before") " AS not_before, "                 \
  CONVEYOR_RFC3339("created_at") " AS created_at, " CONVEYOR_RFC3339("updated_at") " AS updated_at, "           \
  "idempotency_key, error_subtype, error_message"

// A job from a row of CONVEYOR_JOB_COLUMNS.
Job job_from_row(const db::Row& row);

std::optional<Job> load_job(db::Tx& tx, JobId id);
// The jobs that exist among `ids`, in the order of `ids`.
std::vector<Job> load_jobs(db::Tx& tx, const std::vector<std::int64_t>& ids);
// The job's status changes, oldest first.
std::vector<StatusChange> load_history(db::Tx& tx, JobId id);
// The job's audited changes, oldest first.
std::vector<AuditEntry> load_audit(db::Tx& tx, JobId id);

// <data_dir>/logs/<YYYY-MM>/job-<id>/ (DESIGN §6: logs.txt, metadata.json),
// YYYY-MM the month the job was created in UTC, so every attempt of a job
// writes to one folder. Written by the worker, read by `conveyor job logs`.
std::filesystem::path job_log_dir(const std::filesystem::path& data_dir, const std::string& month, std::int64_t job_id);
// <data_dir>/outputs/job-<id>/: the files a job wrote (`{outputs}`), the
// inputs of its downstream jobs. `conveyor job kill --cleanup` removes it.
std::filesystem::path job_output_dir(const std::filesystem::path& data_dir, std::int64_t job_id);
// The month of job_log_dir for a job: "2026-11" of its created_at.
std::string job_log_month(const Job& job);

}  // namespace conveyor::model
