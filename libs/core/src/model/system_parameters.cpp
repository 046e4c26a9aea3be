#include "conveyor/model/system_parameters.hpp"

#include <algorithm>

#include "conveyor/error/error.hpp"

namespace conveyor::model {
namespace {

// Arrays and timestamps are converted to JSON text in SQL so that the db
// module needs no array parser for text[].
constexpr db::Statement kSelectParameters{
    "model_select_system_parameters",
    "SELECT max_number_of_worker_instances, min_number_of_worker_instances, worker_concurrency,"
    " array_to_json(job_types_list)::text AS job_types_list, accepting_new_jobs,"
    " coalesce(not_accepting_reason, '') AS not_accepting_reason,"
    " stall_initialized_s, stall_configured_s, stall_ready_s, stall_queued_s,"
    " stall_processed_s, stall_error_checked_s,"
    " worker_heartbeat_interval_s, worker_heartbeat_timeout_s, service_heartbeat_timeout_s,"
    " coalesce(publication_endpoint_url, '') AS publication_endpoint_url,"
    " publication_max_attempts, image_tags::text AS image_tags, log_retention_days,"
    " job_retention_days, outbox_retention_hours,"
    " schedule_catchup_start::text AS schedule_catchup_start, parameter_reload_interval_s,"
    " to_json(updated_at) #>> '{}' AS updated_at"
    " FROM conveyor.system_parameters WHERE id"};

// The stall_<status>_s columns, by the status they watch.
constexpr std::pair<JobStatus, std::string_view> kStallColumns[] = {
    {JobStatus::initialized, "stall_initialized_s"},   {JobStatus::configured, "stall_configured_s"},
    {JobStatus::ready, "stall_ready_s"},               {JobStatus::queued, "stall_queued_s"},
    {JobStatus::processed, "stall_processed_s"},       {JobStatus::error_checked, "stall_error_checked_s"},
};

}  // namespace

bool SystemParameters::handles(const std::string& job_type) const {
  if (!job_types_list) return true;
  return std::find(job_types_list->begin(), job_types_list->end(), job_type) != job_types_list->end();
}

nlohmann::json SystemParameters::to_json() const {
  nlohmann::json stall = nlohmann::json::object();
  for (const auto& [status, seconds] : stall_threshold_s) stall[std::string(to_string(status))] = seconds;
  nlohmann::json types = nullptr;
  if (job_types_list) types = *job_types_list;
  return {{"max_number_of_worker_instances", max_number_of_worker_instances},
          {"min_number_of_worker_instances", min_number_of_worker_instances},
          {"worker_concurrency", worker_concurrency},
          {"job_types_list", types},
          {"accepting_new_jobs", accepting_new_jobs},
          {"not_accepting_reason", not_accepting_reason},
          {"stall_threshold_s", stall},
          {"worker_heartbeat_interval_s", worker_heartbeat_interval_s},
          {"worker_heartbeat_timeout_s", worker_heartbeat_timeout_s},
          {"service_heartbeat_timeout_s", service_heartbeat_timeout_s},
          {"publication_endpoint_url", publication_endpoint_url},
          {"publication_max_attempts", publication_max_attempts},
          {"image_tags", image_tags},
          {"log_retention_days", log_retention_days},
          {"job_retention_days", job_retention_days},
          {"outbox_retention_hours", outbox_retention_hours},
          {"schedule_catchup_start", schedule_catchup_start},
          {"parameter_reload_interval_s", parameter_reload_interval_s},
          {"updated_at", updated_at}};
}

SystemParameters load_system_parameters(db::Tx& tx) {
  db::Result rows = tx.exec(kSelectParameters);
  if (rows.empty()) {
    throw Error(errc::not_found,
                "conveyor.system_parameters has no row: the database is not migrated (run `conveyor db migrate`)");
  }
  const db::Row row = rows[0];
  SystemParameters p;
  p.max_number_of_worker_instances = row["max_number_of_worker_instances"].as<int>();
  p.min_number_of_worker_instances = row["min_number_of_worker_instances"].as<int>();
  p.worker_concurrency = row["worker_concurrency"].as<int>();
  if (!row["job_types_list"].is_null()) {
    p.job_types_list = nlohmann::json::parse(row["job_types_list"].as_string()).get<std::vector<std::string>>();
  }
  p.accepting_new_jobs = row["accepting_new_jobs"].as_bool();
  p.not_accepting_reason = row["not_accepting_reason"].as_string();
  for (const auto& [status, column] : kStallColumns) p.stall_threshold_s[status] = row[column].as<int>();
  p.worker_heartbeat_interval_s = row["worker_heartbeat_interval_s"].as<int>();
  p.worker_heartbeat_timeout_s = row["worker_heartbeat_timeout_s"].as<int>();
  p.service_heartbeat_timeout_s = row["service_heartbeat_timeout_s"].as<int>();
  p.publication_endpoint_url = row["publication_endpoint_url"].as_string();
  p.publication_max_attempts = row["publication_max_attempts"].as<int>();
  p.image_tags = nlohmann::json::parse(row["image_tags"].as_string());
  p.log_retention_days = row["log_retention_days"].as<int>();
  p.job_retention_days = row["job_retention_days"].as<int>();
  p.outbox_retention_hours = row["outbox_retention_hours"].as<int>();
  p.schedule_catchup_start = nlohmann::json::parse(row["schedule_catchup_start"].as_string());
  p.parameter_reload_interval_s = row["parameter_reload_interval_s"].as<int>();
  p.updated_at = row["updated_at"].as_string();
  return p;
}

}  // namespace conveyor::model
