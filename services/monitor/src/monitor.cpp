#include "monitor.hpp"

#include <algorithm>
#include <filesystem>
#include <map>

#include "alert_history.hpp"
#include "alerts.hpp"
#include "conveyor/error/error.hpp"
#include "conveyor/http/client.hpp"
#include "conveyor/logging/logging.hpp"
#include "conveyor/model/job.hpp"
#include "conveyor/model/status.hpp"
#include "conveyor/model/waves.hpp"
#include "dashboard.hpp"
#include "reconciler.hpp"
#include "registry.hpp"

namespace conveyor::monitor {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr db::Statement kJobsByStatus{"monitor_jobs_by_status",
                                      "SELECT status, count(*) AS n FROM conveyor.job GROUP BY status"};
constexpr db::Statement kWorkersByStatus{
    "monitor_workers_by_status",
    "SELECT status, count(*) AS n, coalesce(sum(running), 0) AS running,"
    " coalesce(sum(concurrency), 0) AS concurrency FROM conveyor.worker GROUP BY status"};
// The live status, as GET /v1/services shows it.
constexpr db::Statement kInstancesByStatus{
    "monitor_instances_by_status",
    "SELECT service, live_status, count(*) AS n FROM conveyor.service_instance_live GROUP BY 1, 2"};

constexpr const char* kWorkerStatuses[] = {"active", "draining", "stopped", "lost"};
constexpr const char* kInstanceStatuses[] = {"up", "draining", "down", "stopped", "replaced"};

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

}  // namespace

config::Schema schema() {
  config::Schema s = runtime::service_schema();
  config::Key gauges;
  gauges.name = "CONVEYOR_GAUGE_INTERVAL_MS";
  gauges.type = config::Type::duration_ms;
  gauges.default_value = "15000";
  gauges.help =
      "how often the conveyor_jobs / conveyor_workers / conveyor_service_instances gauges are "
      "recomputed";
  gauges.min = 100;
  gauges.max = 3'600'000;
  s.add(std::move(gauges));
  config::Key retention;
  retention.name = "CONVEYOR_RETENTION_INTERVAL_MS";
  retention.type = config::Type::duration_ms;
  retention.default_value = "60000";
  retention.help = "how often finished jobs, old worker rows and log months past their retention are deleted";
  retention.min = 100;
  retention.max = 86'400'000;
  s.add(std::move(retention));
  config::Key hook;
  hook.name = "CONVEYOR_ALERT_WEBHOOK_URL";
  hook.type = config::Type::url;
  hook.default_value = "";
  hook.secret = true;  // may carry a token
  hook.help = "where alerts are POSTed when they start or stop firing (JSON); empty: logs and metrics only";
  s.add(std::move(hook));
  return s;
}

Monitor::Monitor(runtime::Context& ctx)
    : ctx_(ctx),
      batch_(static_cast<int>(ctx.config().get_int("CONVEYOR_BATCH_SIZE"))),
      alert_webhook_(ctx.config().get_string("CONVEYOR_ALERT_WEBHOOK_URL")),
      started_(std::chrono::steady_clock::now()) {}

template <typename F>
void Monitor::part(const char* name, F&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    // The database may be briefly away: the next scan retries this part.
    ctx_.log()->error("reconciler part '{}' failed: {}", name, logging::redact_url(e.what()));
    ctx_.metrics()
        .counter("conveyor_monitor_errors_total", "reconciler parts that failed, by part", {{"part", name}})
        .inc();
  }
}

bool Monitor::scan() {
  const auto params = ctx_.parameters();
  more_ = false;
  recover_lost_workers(*params);
  finish_cancels();
  restart_uncanceled();
  reemit_stalled_jobs(*params);
  mark_instances(*params);
  advance_wave_run();
  ctx_.metrics().counter("conveyor_monitor_scans_total", "reconciler scans").inc();
  return more_;
}

void Monitor::recover_lost_workers(const model::SystemParameters& params) {
  part("lost_workers", [&] {
    auto& metrics = ctx_.metrics();
    auto log = ctx_.log();
    const auto r = reap_workers(ctx_.db(), seconds(params.worker_heartbeat_timeout_s), batch_);
    if (!r) return;
    if (!r->lost_workers.empty()) {
      log->warn("lost workers (no heartbeat for {} s): {}", params.worker_heartbeat_timeout_s, join(r->lost_workers));
      metrics.counter("conveyor_monitor_workers_lost_total", "workers marked lost by the reconciler")
          .inc(static_cast<double>(r->lost_workers.size()));
    }
    const int recovered = r->requeued + r->failed + r->canceled;
    if (recovered > 0) {
      log->warn(
          "jobs of lost workers, or that their live worker no longer runs ({} of them): {} "
          "requeued (ready, attempt + 1), {} internal_error, {} canceled",
          r->orphaned, r->requeued, r->failed, r->canceled);
      metrics
          .counter("conveyor_monitor_orphaned_jobs_total",
                   "started jobs that their live worker no longer ran, recovered")
          .inc(r->orphaned);
      const char* help = "started jobs of lost workers recovered by the reconciler, by outcome";
      metrics.counter("conveyor_monitor_recovered_jobs_total", help, {{"outcome", "requeued"}}).inc(r->requeued);
      metrics.counter("conveyor_monitor_recovered_jobs_total", help, {{"outcome", "failed"}}).inc(r->failed);
      metrics.counter("conveyor_monitor_recovered_jobs_total", help, {{"outcome", "canceled"}}).inc(r->canceled);
    }
    if (recovered >= batch_) more_ = true;
  });
}

void Monitor::finish_cancels() {
  part("cancels", [&] {
    const auto r = apply_cancels(ctx_.db(), batch_);
    if (!r || r->canceled == 0) return;
    std::string detail;
    for (const auto& [from, n] : r->from) {
      detail += (detail.empty() ? "" : ", ") + std::string(model::to_string(from)) + ": " + std::to_string(n);
      ctx_.metrics()
          .counter("conveyor_monitor_canceled_total", "jobs the reconciler moved to canceled, by the status they left",
                   {{"from_status", std::string(model::to_string(from))}})
          .inc(n);
    }
    ctx_.log()->info("canceled {} job(s) whose canceled_at is set ({})", r->canceled, detail);
    if (r->canceled >= batch_) more_ = true;
  });
}

void Monitor::restart_uncanceled() {
  part("restarts", [&] {
    const auto r = apply_restarts(ctx_.db(), batch_);
    if (!r || *r == 0) return;
    ctx_.log()->info("restarted {} canceled job(s) whose canceled_at was set back to null (-> initialized)", *r);
    ctx_.metrics().counter("conveyor_monitor_restarted_total", "canceled jobs restarted by the reconciler").inc(*r);
    if (*r >= batch_) more_ = true;
  });
}

void Monitor::reemit_stalled_jobs(const model::SystemParameters& params) {
  part("stalled", [&] {
    for (const auto& [status, threshold] : params.stall_threshold_s) {
      const auto n = reemit_stalled(ctx_.db(), status, seconds(threshold), batch_, params.job_types_list);
      if (!n) return;  // another replica holds the lock: it does this part
      if (*n == 0) continue;
      const std::string name(model::to_string(status));
      ctx_.log()->info("re-emitted the {} event of {} job(s) not moved for over {} s", name, *n, threshold);
      ctx_.metrics()
          .counter("conveyor_monitor_reemitted_total", "job events re-emitted for stalled jobs, by status",
                   {{"status", name}})
          .inc(*n);
      if (*n >= batch_) more_ = true;
    }
  });
}

void Monitor::mark_instances(const model::SystemParameters& params) {
  part("instances", [&] {
    const auto r = reconcile_instances(ctx_.db(), seconds(params.service_heartbeat_timeout_s), kInstanceRetention);
    if (!r) return;
    if (!r->marked_down.empty()) {
      ctx_.log()->warn("service instances down (no heartbeat for {} s): {}", params.service_heartbeat_timeout_s,
                       join(r->marked_down));
      ctx_.metrics()
          .counter("conveyor_monitor_instances_down_total", "service instances marked down by the reconciler")
          .inc(static_cast<double>(r->marked_down.size()));
    }
    if (r->purged > 0) ctx_.log()->info("purged {} service instance row(s) stopped or down for over a day", r->purged);
  });
}

// Runbook 001's restart in waves (`conveyor system waves --auto`): the next
// wave once the current one drained to the run's threshold.
void Monitor::advance_wave_run() {
  part("waves", [&] {
    const auto step = ctx_.db().transact([](db::Tx& tx) { return model::advance_waves(tx); });
    if (!step) return;
    if (step->done) {
      ctx_.log()->info("wave run {}: wave {} drained (backlog {}); done, every job type admitted again", step->run_id,
                       step->from, step->backlog);
    } else {
      ctx_.log()->info("wave run {}: wave {} drained (backlog {}); wave {} admitted", step->run_id, step->from,
                       step->backlog, step->to);
      more_ = true;  // the next wave may be drained already
    }
    ctx_.metrics().counter("conveyor_monitor_wave_steps_total", "waves advanced by the monitor").inc();
  });
}

// A service that starts with the monitor (a stack brought up) has one
// heartbeat timeout to show itself: until then service_missing is not
// raised, unless it was open already (before a restart of this monitor).
void Monitor::hold_back_at_start(db::Tx& tx, const model::SystemParameters& p, std::vector<Alert>& firing) const {
  if (std::chrono::steady_clock::now() - started_ >= std::chrono::seconds(p.service_heartbeat_timeout_s)) return;
  const std::vector<std::string> open = open_alerts(tx);
  std::erase_if(firing, [&](const Alert& a) {
    return a.name == "service_missing" && std::find(open.begin(), open.end(), a.name) == open.end();
  });
}

// Each alert's series in conveyor_alerts_firing: 1 while it fires, 0 once
// it stopped (a series, once set, stays).
void Monitor::set_alert_series(const std::vector<Alert>& firing) {
  auto& metrics = ctx_.metrics();
  std::map<std::string, std::string> now;
  for (const auto& a : firing) now[a.name] = a.severity;
  for (const auto& [name, severity] : alert_series_) {
    if (!now.count(name)) {
      metrics
          .gauge("conveyor_alerts_firing", "alerts firing now (1) or not (0), by alert and severity",
                 {{"alert", name}, {"severity", severity}})
          .set(0);
    }
  }
  for (const auto& [name, severity] : now) {
    metrics
        .gauge("conveyor_alerts_firing", "alerts firing now (1) or not (0), by alert and severity",
               {{"alert", name}, {"severity", severity}})
        .set(1);
    alert_series_[name] = severity;
  }
}

// Logs an alert that started or stopped firing and posts it to the webhook.
void Monitor::announce(const Alert& a, bool fired) {
  if (!fired) {
    ctx_.log()->info("alert {} resolved", a.name);
  } else if (a.severity == "info") {
    ctx_.log()->info("alert {} firing: {}", a.name, a.summary);
  } else {
    ctx_.log()->warn("alert {} ({}) firing: {}", a.name, a.severity, a.summary);
  }
  if (alert_webhook_.empty()) return;
  const nlohmann::json change = {
      {"status", fired ? "firing" : "resolved"}, {"name", a.name}, {"severity", a.severity}, {"summary", a.summary}};
  try {
    const auto r = http::http_request("POST", alert_webhook_, change.dump(), {{"Content-Type", "application/json"}},
                                      std::chrono::seconds(2));
    if (r.status >= 300) throw Error(errc::unavailable, "answered " + std::to_string(r.status));
  } catch (const Error& e) {
    ctx_.log()->error("alert webhook: {} not delivered: {}", a.name, logging::redact_url(e.what()));
    ctx_.metrics()
        .counter("conveyor_monitor_alert_webhook_failures_total", "alert changes the webhook did not take")
        .inc();
  }
}

// The alerts, evaluated and recorded (conveyor.alert_event) in one
// transaction; what started or stopped firing is what the record changed,
// so an alert still firing across a restart of the monitor, or seen by
// another replica first, is announced once.
void Monitor::check_alerts() {
  part("alerts", [&] {
    const auto [firing, changes] = ctx_.db().transact([&](db::Tx& tx) {
      const model::SystemParameters params = model::load_system_parameters(tx);
      auto now_firing = evaluate_alerts(tx, params, &ctx_.metrics());
      hold_back_at_start(tx, params, now_firing);
      AlertChanges recorded = record_alert_history(tx, now_firing);
      return std::pair{now_firing, recorded};
    });
    set_alert_series(firing);
    for (const auto& a : changes.fired) announce(a, true);
    for (const auto& a : changes.resolved) announce(a, false);
  });
}

bool Monitor::purge() {
  bool more = false;
  part("retention", [&] {
    const auto params = ctx_.parameters();
    const auto days = [](int n) { return std::chrono::duration_cast<seconds>(std::chrono::days(n)); };
    const auto r = purge_expired(ctx_.db(), days(params->job_retention_days), kWorkerRetention, batch_);
    if (!r) return;  // another replica holds the lock
    auto& metrics = ctx_.metrics();
    const char* help = "rows and folders deleted by retention, by kind";
    if (!r->jobs.empty()) {
      const std::filesystem::path data_dir = ctx_.config().get_string("CONVEYOR_DATA_DIR");
      for (const auto id : r->jobs) {
        std::error_code ec;  // outputs live where the workers write; a missing folder is fine
        std::filesystem::remove_all(model::job_output_dir(data_dir, id), ec);
      }
      ctx_.log()->info("retention: deleted {} job(s) finished more than {} day(s) ago, with their history and outputs",
                       r->jobs.size(), params->job_retention_days);
      metrics.counter("conveyor_monitor_purged_total", help, {{"kind", "jobs"}})
          .inc(static_cast<double>(r->jobs.size()));
      more = static_cast<int>(r->jobs.size()) >= batch_;
    }
    if (r->workers > 0) {
      ctx_.log()->info("retention: deleted {} worker row(s) stopped or lost for over a day", r->workers);
      metrics.counter("conveyor_monitor_purged_total", help, {{"kind", "workers"}}).inc(r->workers);
    }
    const auto months = purge_log_months(ctx_.config().get_string("CONVEYOR_DATA_DIR"),
                                         std::chrono::system_clock::now(), days(params->log_retention_days));
    if (!months.empty()) {
      ctx_.log()->info("retention: removed log month(s) {} (older than {} day(s))", join(months),
                       params->log_retention_days);
      metrics.counter("conveyor_monitor_purged_total", help, {{"kind", "log_months"}})
          .inc(static_cast<double>(months.size()));
    }
  });
  return more;
}

void Monitor::update_gauges() {
  part("gauges", [&] {
    std::map<std::string, double> jobs;
    std::map<std::string, double> workers;
    std::map<std::pair<std::string, std::string>, double> instances;
    double busy = 0;
    double capacity = 0;
    ctx_.db().transact([&](db::Tx& tx) {
      jobs.clear();
      workers.clear();
      instances.clear();
      for (const db::Row r : tx.exec(kJobsByStatus)) jobs[r["status"].as_string()] = r["n"].as_double();
      busy = capacity = 0;
      for (const db::Row r : tx.exec(kWorkersByStatus)) {
        workers[r["status"].as_string()] = r["n"].as_double();
        // Slots of workers that still run jobs: busy versus capacity.
        if (r["status"].as_string() == "active" || r["status"].as_string() == "draining") {
          busy += r["running"].as_double();
          capacity += r["concurrency"].as_double();
        }
      }
      for (const db::Row r : tx.exec(kInstancesByStatus)) {
        instances[{r["service"].as_string(), r["live_status"].as_string()}] = r["n"].as_double();
      }
    });
    auto& m = ctx_.metrics();
    for (const auto status : model::kAllStatuses) {
      const std::string name(model::to_string(status));
      m.gauge("conveyor_jobs", "jobs by status", {{"status", name}}).set(jobs[name]);
    }
    for (const char* status : kWorkerStatuses) {
      m.gauge("conveyor_workers", "workers (conveyor.worker rows) by status", {{"status", status}})
          .set(workers[status]);
    }
    m.gauge("conveyor_worker_slots_busy", "jobs running on active and draining workers").set(busy);
    m.gauge("conveyor_worker_slots", "job slots (concurrency) of active and draining workers").set(capacity);
    // Every status of every service seen so far, so a series drops to 0
    // rather than freezing at its last value.
    for (const auto& [key, n] : instances) instance_series_.insert({key.first, key.second});
    std::set<std::string> services;
    for (const auto& [service, status] : instance_series_) services.insert(service);
    for (const auto& service : services) {
      for (const char* status : kInstanceStatuses) {
        const auto it = instances.find({service, status});
        m.gauge("conveyor_service_instances", "service instances by service and live status",
                {{"service", service}, {"status", status}})
            .set(it == instances.end() ? 0.0 : it->second);
      }
    }
  });
}

runtime::ServiceSpec spec() {
  runtime::ServiceSpec s;
  s.name = kServiceName;
  s.schema = schema();
  s.auth_cookie = kSessionCookie;
  // Runbook 000 by SQL: a cancel or restart acts within about a second.
  s.wake_on = {"io.conveyor.job.cancel_requested", "io.conveyor.job.restart_requested"};
  return s;
}

void setup(runtime::Context& ctx) {
  add_routes(ctx);
  add_dashboard_routes(ctx);
  const auto p = ctx.parameters();
  ctx.log()->info("monitor: worker heartbeat timeout {} s, service heartbeat timeout {} s",
                  p->worker_heartbeat_timeout_s, p->service_heartbeat_timeout_s);
}

void loop(runtime::Context& ctx) {
  const milliseconds poll = ctx.config().get_duration("CONVEYOR_POLL_INTERVAL_MS");
  const milliseconds gauge_every = ctx.config().get_duration("CONVEYOR_GAUGE_INTERVAL_MS");
  const milliseconds retention_every = ctx.config().get_duration("CONVEYOR_RETENTION_INTERVAL_MS");
  Monitor monitor(ctx);
  auto next_gauges = std::chrono::steady_clock::now();
  auto next_retention = std::chrono::steady_clock::now();
  milliseconds timeout = poll;
  do {
    bool more = monitor.scan();
    if (std::chrono::steady_clock::now() >= next_gauges) {
      monitor.update_gauges();
      monitor.check_alerts();
      next_gauges = std::chrono::steady_clock::now() + gauge_every;
    }
    if (std::chrono::steady_clock::now() >= next_retention) {
      // A full batch: the next one at once (but after a scan, which goes first).
      const bool backlog = monitor.purge();
      next_retention = backlog ? std::chrono::steady_clock::now() : std::chrono::steady_clock::now() + retention_every;
      more = more || backlog;
    }
    timeout = more ? milliseconds(0) : poll;
  } while (ctx.wait_for_work(timeout));
}

}  // namespace conveyor::monitor
