#pragma once
// Alerts of conveyor-monitor (DESIGN §1 "alerts"; runbook 004: what pages the
// person on call). Each alert is a condition on PostgreSQL, evaluated afresh
// (no state), so every monitor replica and `GET /v1/alerts` agree:
//
//   service_down     critical  an instance is down (conveyor.service_instance_live:
//                              heartbeat older than service_heartbeat_timeout_s,
//                              or marked down; a worker the pool replaced is not)
//   service_missing  critical  a service with no live instance, a stopped one
//                              too (conveyor.service_health state down; idle
//                              workers are not missing)
//   outbox_stuck     critical  events unsent for over 60 s (broker away?)
//   outbox_refused   critical  the relay refuses to publish
//                              (conveyor.outbox_relay_refusal: its place past
//                              the cluster's transaction ids, or none)
//   jobs_stuck       warning   jobs re-emitted for being stalled that still
//                              have not moved after twice their threshold
//   workers_lost     warning   workers marked lost in the last hour
//   trigger_failed   warning   downstream jobs that could not be created
//   schedule_error   warning   schedules whose last pass failed
//   not_accepting    info      accepting_new_jobs is false
//
// The monitor's loop logs each alert when it starts and stops firing, sets
// the gauge conveyor_alerts_firing{alert,severity}, and POSTs the change to
// CONVEYOR_ALERT_WEBHOOK_URL when set. Thread-safe: stateless functions.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "conveyor/db/db.hpp"
#include "conveyor/metrics/metrics.hpp"
#include "conveyor/model/system_parameters.hpp"

namespace conveyor::monitor {

struct Alert {
  std::string name;
  std::string severity;  // critical | warning | info
  std::string summary;   // for a person: what and how many, the first names
  nlohmann::json to_json() const { return {{"name", name}, {"severity", severity}, {"summary", summary}}; }
};

// Firing now, most severe first. With `gauges`, also sets the quantities
// each alert tests, so that the Prometheus rules of
// deploy/observability/conveyor-alerts.yml can test the same (all 0 when
// nothing is wrong): conveyor_service_instances (set by the gauge pass),
// conveyor_outbox_stuck_events, conveyor_outbox_oldest_unsent_seconds,
// conveyor_outbox_relay_refusing,
// conveyor_jobs_stuck, conveyor_workers_lost_last_hour,
// conveyor_triggers_failed, conveyor_schedules_in_error and
// conveyor_accepting_new_jobs.
std::vector<Alert> evaluate_alerts(db::Tx& tx, const model::SystemParameters& parameters,
                                   metrics::Registry* gauges = nullptr);

}  // namespace conveyor::monitor
