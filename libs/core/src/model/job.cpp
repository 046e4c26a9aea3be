#include "conveyor/model/job.hpp"

#include <unordered_map>

namespace conveyor::model {
namespace {

// Timestamps leave the database as RFC 3339 text in UTC (CONVEYOR_RFC3339, db.hpp).
constexpr db::Statement kLoadJobs{"model_load_jobs",
                                  "SELECT " CONVEYOR_JOB_COLUMNS " FROM conveyor.job WHERE id = ANY($1::bigint[])"};

constexpr db::Statement kLoadHistory{
    "model_load_job_history",
    "SELECT id, from_status, to_status, " CONVEYOR_RFC3339("at") " AS at, actor, error_subtype, "
    "message FROM conveyor.job_status_change WHERE job_id = $1 ORDER BY id"};

constexpr db::Statement kLoadAudit{
    "model_load_job_audit",
    "SELECT id, " CONVEYOR_RFC3339("at") " AS at, actor, field, old_value::text AS old_value, "
    "new_value::text AS new_value FROM conveyor.job_audit WHERE job_id = $1 ORDER BY id"};

JobStatus status_of(const db::Field& f) {
  const auto s = parse_status(f.view());
  if (!s) throw Error(errc::internal, "database: unknown job status '" + f.as_string() + "'");
  return *s;
}

nlohmann::json json_of(const db::Field& f) {
  if (f.is_null()) return nullptr;
  return nlohmann::json::parse(f.view());
}

template <typename T>
nlohmann::json or_null(const std::optional<T>& v) {
  if (!v) return nullptr;
  return *v;
}

}  // namespace

Job job_from_row(const db::Row& r) {
  Job j;
  j.id = JobId(r["id"].as_int());
  j.job_type = r["job_type"].as_string();
  j.status = status_of(r["status"]);
  j.priority = r["priority"].as<int>();
  j.attempt = r["attempt"].as<int>();
  j.max_attempts = r["max_attempts"].as<int>();
  j.params = json_of(r["params"]);
  j.config = json_of(r["config"]);
  j.result = json_of(r["result"]);
  j.depends_on = r["depends_on"].as_int_array();
  j.worker_id = r["worker_id"].opt<std::int64_t>();
  j.canceled_at = r["canceled_at"].opt<std::string>();
  j.held_at = r["held_at"].opt<std::string>();
  j.not_before = r["not_before"].opt<std::string>();
  j.created_at = r["created_at"].as_string();
  j.updated_at = r["updated_at"].as_string();
  j.idempotency_key = r["idempotency_key"].opt<std::string>();
  j.error_subtype = r["error_subtype"].opt<std::string>();
  j.error_message = r["error_message"].opt<std::string>();
  return j;
}

nlohmann::json Job::to_json() const {
  return {
      {"id", id.value()},
      {"job_type", job_type},
      {"status", std::string(to_string(status))},
      {"priority", priority},
      {"attempt", attempt},
      {"max_attempts", max_attempts},
      {"params", params},
      {"config", config},
      {"result", result},
      {"depends_on", depends_on},
      {"worker_id", or_null(worker_id)},
      {"canceled_at", or_null(canceled_at)},
      {"held_at", or_null(held_at)},
      {"not_before", or_null(not_before)},
      {"created_at", created_at},
      {"updated_at", updated_at},
      {"idempotency_key", or_null(idempotency_key)},
      {"error_subtype", or_null(error_subtype)},
      {"error_message", or_null(error_message)},
  };
}

nlohmann::json StatusChange::to_json() const {
  return {
      {"from_status", from_status ? nlohmann::json(std::string(to_string(*from_status))) : nullptr},
      {"to_status", std::string(to_string(to_status))},
      {"at", at},
      {"actor", actor},
      {"error_subtype", or_null(error_subtype)},
      {"message", or_null(message)},
  };
}

nlohmann::json AuditEntry::to_json() const {
  return {
      {"at", at}, {"actor", actor}, {"field", field}, {"old_value", old_value}, {"new_value", new_value},
  };
}

std::optional<Job> load_job(db::Tx& tx, JobId id) {
  auto jobs = load_jobs(tx, {id.value()});
  if (jobs.empty()) return std::nullopt;
  return std::move(jobs.front());
}

std::vector<Job> load_jobs(db::Tx& tx, const std::vector<std::int64_t>& ids) {
  if (ids.empty()) return {};
  const db::Result rows = tx.exec(kLoadJobs, {ids});
  std::unordered_map<std::int64_t, Job> by_id;
  for (const db::Row row : rows) {
    Job j = job_from_row(row);
    const auto key = j.id.value();
    by_id.emplace(key, std::move(j));
  }
  std::vector<Job> out;
  out.reserve(by_id.size());
  for (const auto id : ids) {
    const auto it = by_id.find(id);
    if (it != by_id.end()) out.push_back(it->second);
  }
  return out;
}

std::vector<StatusChange> load_history(db::Tx& tx, JobId id) {
  std::vector<StatusChange> out;
  for (const db::Row r : tx.exec(kLoadHistory, {id.value()})) {
    StatusChange c;
    c.id = r["id"].as_int();
    if (!r["from_status"].is_null()) c.from_status = status_of(r["from_status"]);
    c.to_status = status_of(r["to_status"]);
    c.at = r["at"].as_string();
    c.actor = r["actor"].as_string();
    c.error_subtype = r["error_subtype"].opt<std::string>();
    c.message = r["message"].opt<std::string>();
    out.push_back(std::move(c));
  }
  return out;
}

std::vector<AuditEntry> load_audit(db::Tx& tx, JobId id) {
  std::vector<AuditEntry> out;
  for (const db::Row r : tx.exec(kLoadAudit, {id.value()})) {
    out.push_back({.id = r["id"].as_int(),
                   .at = r["at"].as_string(),
                   .actor = r["actor"].as_string(),
                   .field = r["field"].as_string(),
                   .old_value = json_of(r["old_value"]),
                   .new_value = json_of(r["new_value"])});
  }
  return out;
}

std::filesystem::path job_log_dir(const std::filesystem::path& data_dir, const std::string& month,
                                  std::int64_t job_id) {
  return data_dir / "logs" / month / ("job-" + std::to_string(job_id));
}

std::filesystem::path job_output_dir(const std::filesystem::path& data_dir, std::int64_t job_id) {
  return data_dir / "outputs" / ("job-" + std::to_string(job_id));
}

std::string job_log_month(const Job& job) { return job.created_at.substr(0, 7); }

}  // namespace conveyor::model
