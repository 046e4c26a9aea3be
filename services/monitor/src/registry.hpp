#pragma once
// The service registry and worker list as the monitor's HTTP API shows them:
//   GET /v1/services?service=&status=  every conveyor.service_instance row
//       with its live status (an `up` or `draining` row whose heartbeat is
//       older than system_parameters.service_heartbeat_timeout_s shows
//       `down` even before the reconciler marks it), version and uptime;
//   GET /v1/workers?pool=&status=      every conveyor.worker row;
//   GET /v1/sd                          Prometheus HTTP service discovery:
//       the /metrics address of every live instance, workers included.
// Bad query values are 400 problem+json naming the parameter.
// Thread-safe: stateless functions; handlers use the runtime's pool.
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "conveyor/db/db.hpp"
#include "conveyor/runtime/runtime.hpp"

namespace conveyor::monitor {

struct ServiceQuery {
  std::optional<std::string> service;  // "conveyor-creation" or "creation"
  std::optional<std::string> status;   // up, draining, down, stopped, replaced (the live status)
};
// Throws http::FieldError naming the parameter.
ServiceQuery parse_service_query(const std::map<std::string, std::string>& query);

struct WorkerQuery {
  std::optional<std::string> pool;
  std::optional<std::string> status;  // active, draining, stopped, lost
};
WorkerQuery parse_worker_query(const std::map<std::string, std::string>& query);

// {"services": [{service, instance_id, host, pid, version, image_tag, status,
//   recorded_status, started_at, last_heartbeat, uptime_s, heartbeat_age_s}],
//  "health": [{service, state, live, down, replaced, stopped}]}
// ordered by service then instance id. status is the live status of
// conveyor.service_instance_live (up, draining, down, stopped, replaced: a
// worker the pool replaced, history); health is conveyor.service_health
// (state up, degraded, down, idle) of the services the query selects.
// uptime_s runs to now for a live instance and to its last heartbeat for
// the others.
nlohmann::json list_services(db::Tx& tx, const ServiceQuery& query);

// {"workers": [{id, name, pool, host, pid, status, running, concurrency,
//   started_at, last_heartbeat, heartbeat_age_s, version}]} ordered by name.
nlohmann::json list_workers(db::Tx& tx, const WorkerQuery& query);

// Prometheus HTTP SD (https://prometheus.io/docs/prometheus/latest/http_sd/):
// [{"targets": ["host:port"], "labels": {"service", "instance",
//   "__meta_conveyor_version", "__meta_conveyor_host", "__meta_conveyor_status"}}]
// one group per live (up or draining) instance that recorded the address
// it listens on, ordered by service then instance id.
nlohmann::json scrape_targets(db::Tx& tx);

// Adds GET /v1/services, GET /v1/workers and GET /v1/sd to the service's HTTP server.
void add_routes(runtime::Context& ctx);

}  // namespace conveyor::monitor
