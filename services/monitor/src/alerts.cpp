#include "alerts.hpp"

#include <algorithm>

#include "conveyor/model/status.hpp"

namespace conveyor::monitor {
namespace {

// Both from the one live-status rule (conveyor.service_instance_live and
// conveyor.service_health, migration 20261210000100_service_health): a
// worker the pool replaced is history, not down.
constexpr db::Statement kDownInstances{
    "monitor_alert_down_instances",
    "SELECT service || '/' || id, extract(epoch FROM now() - last_heartbeat)::bigint "
    "FROM conveyor.service_instance_live WHERE live_status = 'down' ORDER BY service, id"};

// No live instance: a stopped service too. Workers with none live and none
// down are idle, not missing (the pool's min may be 0).
constexpr db::Statement kMissingServices{
    "monitor_alert_missing_services",
    "SELECT service FROM conveyor.service_health WHERE state = 'down' ORDER BY service"};

constexpr db::Statement kOutbox{"monitor_alert_outbox",
                                "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::bigint "
                                "FROM conveyor.outbox_unsent() WHERE created_at < now() - interval '60 seconds'"};

// Why the relay refuses to publish, or NULL (the relay's own rule).
constexpr db::Statement kRelayRefusal{"monitor_alert_relay_refusal", "SELECT conveyor.outbox_relay_refusal()"};

// Re-emitted (so stalled and not held on purpose) and still not moved. A
// ready job admission may not take (conveyor.job_admission_eligible: held,
// backing off, of an unhandled or paused type or pool) is waiting, not stuck.
constexpr db::Statement kStuckJobs{
    "monitor_alert_stuck_jobs",
    "SELECT count(*), min(j.id), (array_agg(j.status ORDER BY j.id))[1] FROM conveyor.job j "
    "JOIN unnest($1::text[], $2::bigint[]) AS t(status, secs) ON t.status = j.status "
    "WHERE j.status NOT IN ('done', 'canceled', 'failed') AND j.reemitted_at > j.updated_at "
    "  AND (j.status <> 'ready' OR conveyor.job_admission_eligible(j, now(), "
    "       (SELECT p.job_types_list FROM conveyor.system_parameters p), (SELECT conveyor.paused_queues()))) "
    "  AND j.updated_at < now() - make_interval(secs => 2 * t.secs)"};

constexpr db::Statement kLostWorkers{
    "monitor_alert_lost_workers",
    "SELECT count(*), coalesce(string_agg(name, ', ' ORDER BY name), '') FROM ("
    "  SELECT name FROM conveyor.worker WHERE status = 'lost' AND last_heartbeat > now() - interval '1 hour' "
    "  ORDER BY name LIMIT 50) w"};

constexpr db::Statement kTriggerFailures{
    "monitor_alert_trigger_failures",
    "SELECT count(*), min(job_id) FROM conveyor.trigger_pending WHERE failed_at IS NOT NULL"};

constexpr db::Statement kScheduleErrors{
    "monitor_alert_schedule_errors",
    "SELECT coalesce(string_agg(job_type, ', ' ORDER BY job_type), ''), count(*) FROM conveyor.schedule_state "
    "WHERE last_error IS NOT NULL"};

std::string first(const std::vector<std::string>& items, std::size_t n = 5) {
  std::string s;
  for (std::size_t i = 0; i < items.size() && i < n; ++i) s += (i ? ", " : "") + items[i];
  if (items.size() > n) s += ", ...";
  return s;
}

int rank(const std::string& severity) { return severity == "critical" ? 0 : severity == "warning" ? 1 : 2; }

// Sets a gauge of what an alert looks at; nothing when `gauges` is null.
void measure(metrics::Registry* gauges, const char* name, const char* help, double value) {
  if (gauges != nullptr) gauges->gauge(name, help).set(value);
}

// service_down and service_missing.
void check_services(db::Tx& tx, std::vector<Alert>& out) {
  std::vector<std::string> down;
  for (const db::Row r : tx.exec(kDownInstances)) {
    down.push_back(r[0].as_string() + " (" + std::to_string(r[1].as_int()) + " s)");
  }
  if (!down.empty()) {
    out.push_back({"service_down", "critical",
                   std::to_string(down.size()) + " service instance(s) stopped heartbeating: " + first(down)});
  }
  std::vector<std::string> missing;
  for (const db::Row r : tx.exec(kMissingServices)) missing.push_back(r[0].as_string());
  if (!missing.empty()) {
    out.push_back({"service_missing", "critical", "no live instance of " + first(missing, 10)});
  }
}

void check_outbox(db::Tx& tx, metrics::Registry* gauges, std::vector<Alert>& out) {
  const db::Result r = tx.exec(kOutbox);  // a Row points into its Result
  measure(gauges, "conveyor_outbox_stuck_events", "events unsent for over 60 s (alert outbox_stuck)",
          static_cast<double>(r[0][0].as_int()));
  measure(gauges, "conveyor_outbox_oldest_unsent_seconds", "age of the oldest event unsent for over 60 s, else 0",
          static_cast<double>(r[0][1].as_int()));
  if (r[0][0].as_int() > 0) {
    out.push_back({"outbox_stuck", "critical",
                   std::to_string(r[0][0].as_int()) + " event(s) unsent for over 60 s (oldest " +
                       std::to_string(r[0][1].as_int()) + " s): is the broker reachable?"});
  }
}

// A relay that refuses to publish: outbox_stuck cannot see it, since a
// place past the cluster's ids counts every event as sent.
void check_relay(db::Tx& tx, metrics::Registry* gauges, std::vector<Alert>& out) {
  const db::Result r = tx.exec(kRelayRefusal);
  const bool refused = !r[0][0].is_null();
  measure(gauges, "conveyor_outbox_relay_refusing",
          "1 while the outbox relay refuses to publish (alert outbox_refused)", refused ? 1.0 : 0.0);
  if (!refused) return;
  const std::string why = r[0][0].as_string();
  out.push_back({"outbox_refused", "critical",
                 why == "past_cluster_ids"
                     ? "no event is published: the relay's place or the outbox is past this cluster's transaction "
                       "ids (a backup restored into another cluster?). Stop the services, run SELECT "
                       "conveyor.outbox_renumber(), start them"
                     : "no event is published: the relay has no place (" + why + ": conveyor.outbox_relay is empty)"});
}

void check_stuck_jobs(db::Tx& tx, const model::SystemParameters& p, metrics::Registry* gauges,
                      std::vector<Alert>& out) {
  std::vector<std::string> statuses;
  std::vector<std::int64_t> secs;
  for (const auto& [status, s] : p.stall_threshold_s) {
    statuses.emplace_back(model::to_string(status));
    secs.push_back(s);
  }
  const db::Result r = tx.exec(kStuckJobs, {statuses, secs});
  measure(gauges, "conveyor_jobs_stuck", "jobs still not moving after their event was re-emitted (alert jobs_stuck)",
          static_cast<double>(r[0][0].as_int()));
  if (r[0][0].as_int() > 0) {
    out.push_back({"jobs_stuck", "warning",
                   std::to_string(r[0][0].as_int()) +
                       " job(s) still not moving after their event was re-emitted (first: job " +
                       std::to_string(r[0][1].as_int()) + ", " + r[0][2].as_string() +
                       "): is the service of that stage running?"});
  }
}

void check_lost_workers(db::Tx& tx, metrics::Registry* gauges, std::vector<Alert>& out) {
  const db::Result r = tx.exec(kLostWorkers);
  measure(gauges, "conveyor_workers_lost_last_hour", "workers marked lost in the last hour (alert workers_lost)",
          static_cast<double>(r[0][0].as_int()));
  if (r[0][0].as_int() > 0) {
    out.push_back({"workers_lost", "warning",
                   std::to_string(r[0][0].as_int()) + " worker(s) lost in the last hour: " + r[0][1].as_string()});
  }
}

void check_trigger_failures(db::Tx& tx, metrics::Registry* gauges, std::vector<Alert>& out) {
  const db::Result r = tx.exec(kTriggerFailures);
  measure(gauges, "conveyor_triggers_failed",
          "done jobs whose downstream jobs could not be created (alert trigger_failed)",
          static_cast<double>(r[0][0].as_int()));
  if (r[0][0].as_int() > 0) {
    out.push_back({"trigger_failed", "warning",
                   std::to_string(r[0][0].as_int()) +
                       " done job(s) whose downstream jobs could not be created "
                       "(first: job " +
                       std::to_string(r[0][1].as_int()) + "; conveyor.trigger_pending.last_error)"});
  }
}

void check_schedule_errors(db::Tx& tx, metrics::Registry* gauges, std::vector<Alert>& out) {
  const db::Result r = tx.exec(kScheduleErrors);
  measure(gauges, "conveyor_schedules_in_error", "schedules whose last pass failed (alert schedule_error)",
          static_cast<double>(r[0][1].as_int()));
  if (!r[0][0].as_string().empty()) {
    out.push_back(
        {"schedule_error", "warning", "schedules in error: " + r[0][0].as_string() + " (`conveyor schedule list`)"});
  }
}

void check_accepting(const model::SystemParameters& p, metrics::Registry* gauges, std::vector<Alert>& out) {
  measure(gauges, "conveyor_accepting_new_jobs", "system_parameters.accepting_new_jobs: 1 or 0 (alert not_accepting)",
          p.accepting_new_jobs ? 1 : 0);
  if (!p.accepting_new_jobs) {
    out.push_back({"not_accepting", "info",
                   "not accepting new jobs: " +
                       (p.not_accepting_reason.empty() ? std::string("no reason given") : p.not_accepting_reason)});
  }
}

}  // namespace

std::vector<Alert> evaluate_alerts(db::Tx& tx, const model::SystemParameters& p, metrics::Registry* gauges) {
  std::vector<Alert> out;
  check_services(tx, out);
  check_outbox(tx, gauges, out);
  check_relay(tx, gauges, out);
  check_stuck_jobs(tx, p, gauges, out);
  check_lost_workers(tx, gauges, out);
  check_trigger_failures(tx, gauges, out);
  check_schedule_errors(tx, gauges, out);
  check_accepting(p, gauges, out);
  std::stable_sort(out.begin(), out.end(),
                   [](const Alert& a, const Alert& b) { return rank(a.severity) < rank(b.severity); });
  return out;
}

}  // namespace conveyor::monitor
