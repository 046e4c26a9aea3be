#include "conveyor/model/system_parameters.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cctype>

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
    " array_to_json(sink_allowed_hosts)::text AS sink_allowed_hosts,"
    " publication_max_attempts, image_tags::text AS image_tags, log_retention_days,"
    " job_retention_days, outbox_retention_hours,"
    " schedule_catchup_start::text AS schedule_catchup_start, parameter_reload_interval_s,"
    " priority_aging_per_minute,"
    " " CONVEYOR_RFC3339("updated_at") " AS updated_at, xmin::text AS version"
    " FROM conveyor.system_parameters WHERE id"};

// The stall_<status>_s columns, by the status they watch.
constexpr std::pair<JobStatus, std::string_view> kStallColumns[] = {
    {JobStatus::initialized, "stall_initialized_s"},
    {JobStatus::configured, "stall_configured_s"},
    {JobStatus::ready, "stall_ready_s"},
    {JobStatus::queued, "stall_queued_s"},
    {JobStatus::processed, "stall_processed_s"},
    {JobStatus::error_checked, "stall_error_checked_s"},
};

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Only digits and dots: an IPv4 address (or a number inet_aton would take
// for one), never a DNS name under a suffix.
bool numeric_host(std::string_view h) {
  return !h.empty() && std::all_of(h.begin(), h.end(),
                                   [](char c) { return c == '.' || std::isdigit(static_cast<unsigned char>(c)); });
}

}  // namespace

std::string canonical_host(std::string_view host) {
  std::string h = lower(host);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  if (h.find(':') != std::string::npos) {
    in6_addr addr{};
    std::array<char, INET6_ADDRSTRLEN> text{};
    if (::inet_pton(AF_INET6, h.c_str(), &addr) == 1 &&
        ::inet_ntop(AF_INET6, &addr, text.data(), text.size()) != nullptr) {
      return text.data();
    }
    return h;
  }
  if (h.size() > 1 && h.back() == '.') h.pop_back();
  return h;
}

bool valid_sink_host_entry(std::string_view entry, std::string& why) {
  const std::string kForm =
      "an entry is a host name (hooks.example.org), an IP address, or .example.org for every host "
      "under example.org; no scheme, port or path";
  if (entry.empty()) {
    why = "is empty";
    return false;
  }
  if (entry.size() > 255) {
    why = "is longer than a host name can be";
    return false;
  }
  if (entry.find('*') != std::string_view::npos) {
    why = "holds a wildcard: write .example.org for every host under example.org";
    return false;
  }
  if (entry.front() == '[' || entry.find(':') != std::string_view::npos) {
    std::string h(entry);
    if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
    in6_addr addr{};
    if (::inet_pton(AF_INET6, h.c_str(), &addr) != 1) {
      why = "is neither a host name nor an IPv6 address (" + kForm + ")";
      return false;
    }
    return true;
  }
  std::string_view name = entry;
  const bool suffix = name.front() == '.';
  if (suffix) name.remove_prefix(1);
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  if (name.empty()) {
    why = "names no host (" + kForm + ")";
    return false;
  }
  std::size_t start = 0;
  std::string_view last;
  while (true) {
    const auto dot = name.find('.', start);
    const auto label = name.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    const bool ok = !label.empty() && label.size() <= 63 && std::all_of(label.begin(), label.end(), [](char c) {
      return c == '-' || c == '_' || std::isalnum(static_cast<unsigned char>(c));
    });
    if (!ok) {
      why = "is not a host name (" + kForm + ")";
      return false;
    }
    last = label;
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  if (suffix && numeric_host(last)) {
    why = "is a suffix of an address: a suffix matches host names, list addresses whole";
    return false;
  }
  return true;
}

bool SystemParameters::sink_host_allowed(std::string_view host) const {
  if (!sink_allowed_hosts || sink_allowed_hosts->empty()) return true;
  const std::string h = canonical_host(host);
  if (h.empty()) return false;
  // A suffix names DNS names under it, never an address.
  const bool address = numeric_host(h) || h.find(':') != std::string::npos;
  for (const auto& entry : *sink_allowed_hosts) {
    if (!entry.empty() && entry.front() == '.') {
      std::string suffix = lower(entry);
      if (suffix.size() > 1 && suffix.back() == '.') suffix.pop_back();
      if (!address && suffix.size() > 1 && h.size() > suffix.size() &&
          h.compare(h.size() - suffix.size(), suffix.size(), suffix) == 0) {
        return true;
      }
    } else if (!entry.empty() && canonical_host(entry) == h) {
      return true;
    }
  }
  return false;
}

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
          {"sink_allowed_hosts", sink_allowed_hosts ? nlohmann::json(*sink_allowed_hosts) : nlohmann::json(nullptr)},
          {"image_tags", image_tags},
          {"log_retention_days", log_retention_days},
          {"job_retention_days", job_retention_days},
          {"outbox_retention_hours", outbox_retention_hours},
          {"schedule_catchup_start", schedule_catchup_start},
          {"parameter_reload_interval_s", parameter_reload_interval_s},
          {"priority_aging_per_minute", priority_aging_per_minute},
          {"updated_at", updated_at}};
}

const SystemParameters& parameters_in(db::Tx& tx, const SystemParameters& copy,
                                      std::optional<SystemParameters>& fresh) {
  static constexpr db::Statement kVersion{"model_system_parameters_version",
                                          "SELECT xmin::text FROM conveyor.system_parameters WHERE id"};
  const db::Result rows = tx.exec(kVersion);
  if (!copy.version.empty() && !rows.empty() && rows[0][0].as_string() == copy.version) return copy;
  fresh = load_system_parameters(tx);
  return *fresh;
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
  if (!row["sink_allowed_hosts"].is_null()) {
    p.sink_allowed_hosts = nlohmann::json::parse(row["sink_allowed_hosts"].as_string()).get<std::vector<std::string>>();
  }
  p.image_tags = nlohmann::json::parse(row["image_tags"].as_string());
  p.log_retention_days = row["log_retention_days"].as<int>();
  p.job_retention_days = row["job_retention_days"].as<int>();
  p.outbox_retention_hours = row["outbox_retention_hours"].as<int>();
  p.schedule_catchup_start = nlohmann::json::parse(row["schedule_catchup_start"].as_string());
  p.parameter_reload_interval_s = row["parameter_reload_interval_s"].as<int>();
  p.priority_aging_per_minute = row["priority_aging_per_minute"].as<double>();
  p.updated_at = row["updated_at"].as_string();
  p.version = row["version"].as_string();
  return p;
}

}  // namespace conveyor::model
