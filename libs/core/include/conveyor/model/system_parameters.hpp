#pragma once
// The one row of conveyor.system_parameters as a typed snapshot. Services
// hold a shared_ptr to an immutable snapshot (runtime::Context::parameters)
// that the runtime replaces on the parameters event and on a timer.
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "conveyor/db/db.hpp"
#include "conveyor/model/status.hpp"

namespace conveyor::model {

struct SystemParameters {
  int max_number_of_worker_instances = 4;
  int min_number_of_worker_instances = 0;
  int worker_concurrency = 4;
  std::optional<std::vector<std::string>> job_types_list;  // nullopt: every enabled type
  bool accepting_new_jobs = true;
  std::string not_accepting_reason;
  std::map<JobStatus, int> stall_threshold_s;  // initialized, configured, ready, queued, processed, error_checked
  int worker_heartbeat_interval_s = 5;
  int worker_heartbeat_timeout_s = 30;
  // A service instance whose heartbeat is older than this is shown `down`.
  int service_heartbeat_timeout_s = 30;
  std::string publication_endpoint_url;
  int publication_max_attempts = 5;
  // Hosts webhook deliveries may reach (publication_endpoint_url and every
  // sink's url). nullopt or empty: any host. An entry is a host name, or a
  // suffix starting with '.' for every host under it; no port.
  std::optional<std::vector<std::string>> sink_allowed_hosts;
  nlohmann::json image_tags = nlohmann::json::object();
  int log_retention_days = 30;
  int job_retention_days = 90;
  int outbox_retention_hours = 24;
  nlohmann::json schedule_catchup_start = nlohmann::json::object();
  int parameter_reload_interval_s = 30;
  // Admission ages ready jobs: priority + this much per minute waited
  // (conveyor.effective_priority). 0: strict priority, then age.
  double priority_aging_per_minute = 0;
  std::string updated_at;
  // Which version of the row these are (its xmin): a statement that acts on
  // them can check that they are still the row's (submissions at once).
  std::string version;

  // Whether the system handles this job type now (job_types_list).
  bool handles(const std::string& job_type) const;
  // Whether a webhook may be delivered to `host` (the URL's host, without
  // port; an IPv6 address with or without brackets). Letter case and one
  // trailing dot do not matter, on either side.
  bool sink_host_allowed(std::string_view host) const;
  nlohmann::json to_json() const;
};

// A host as sink_allowed_hosts entries and URL hosts are compared:
// lower-case, without one trailing dot, an IPv6 address without brackets and
// in its shortest form ("[0:0::1]" -> "::1").
std::string canonical_host(std::string_view host);

// Whether `entry` can be a sink_allowed_hosts entry (a host name, an IP
// address, or ".suffix"); when not, `why` says what is wrong. No scheme,
// port, path, wildcard or space.
bool valid_sink_host_entry(std::string_view entry, std::string& why);

// Reads the row; throws Error(not_found) when the schema has no row (not migrated).
SystemParameters load_system_parameters(db::Tx& tx);
// The parameters as `tx` reads them: `copy` (a service's, from its last
// reload) while it is the row's version, one probe of the row's xmin; else
// the row itself, read into `fresh`. So a change committed elsewhere (params
// set, psql) applies to the next transaction, before its event arrives.
const SystemParameters& parameters_in(db::Tx& tx, const SystemParameters& copy, std::optional<SystemParameters>& fresh);

// The columns an operator may change (PATCH /v1/parameters, `conveyor params
// set`), in table order; id, updated_at and updated_by are not among them.
const std::vector<std::string>& patchable_parameters();

// Applies a JSON object of column -> new value in `tx` as one fixed UPDATE
// with every value bound as a parameter, so the row's CHECK constraints
// (including those spanning two columns, like min <= max workers) judge the
// final row. An unknown column, a value of the wrong type or a refused check
// is a FieldError naming the column. The trigger records the change in
// system_parameters_history and the outbox (io.conveyor.parameters.changed).
void patch_system_parameters(db::Tx& tx, const nlohmann::json& patch);

}  // namespace conveyor::model
