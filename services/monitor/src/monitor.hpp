#pragma once
// conveyor-monitor (DESIGN §1, §2): the reconciler and the service registry.
//
// One scan (on start, on every cancel_requested / restart_requested event,
// on a parameters change, and every CONVEYOR_POLL_INTERVAL_MS) runs the
// parts of reconciler.hpp in turn, each its own short transaction guarded by
// an advisory lock so replicas share the work instead of doubling it:
//   a. lost workers and their started jobs     (model::reap_lost_workers)
//   b. cancels: canceled_at set -> canceled    (model::finish_cancel)
//   c. restarts: canceled, canceled_at null -> initialized
//   d. stalled jobs: their event re-emitted, per stall_<status>_s
//   e. service registry: missed heartbeats -> down; old rows purged
//   f. waves: the running wave run (`conveyor system waves --auto`) to its
//      next wave once the current one drained (model::advance_waves; the
//      run's row is locked SKIP LOCKED instead of an advisory lock)
// and, every CONVEYOR_GAUGE_INTERVAL_MS, the gauges conveyor_jobs{status},
// conveyor_workers{status} and conveyor_service_instances{service,status}.
// A part that fills its batch (CONVEYOR_BATCH_SIZE) makes the next scan
// start at once. HTTP: GET /v1/services, GET /v1/workers (registry.hpp).
//
// Monitor is owned by loop() and used by the main thread only.
#include <chrono>
#include <set>
#include <string>
#include <utility>

#include <map>
#include <string>

#include "conveyor/config/config.hpp"
#include "alerts.hpp"
#include "conveyor/runtime/runtime.hpp"

namespace conveyor::monitor {

inline constexpr const char* kServiceName = "conveyor-monitor";
// Service instances stopped or down for longer than this are deleted.
inline constexpr std::chrono::hours kInstanceRetention{24};

// Worker rows stopped or lost for longer than this are deleted.
inline constexpr std::chrono::hours kWorkerRetention{24};

// runtime::service_schema() plus CONVEYOR_GAUGE_INTERVAL_MS,
// CONVEYOR_RETENTION_INTERVAL_MS and CONVEYOR_ALERT_WEBHOOK_URL.
config::Schema schema();

class Monitor {
 public:
  explicit Monitor(runtime::Context& ctx);

  // One pass over every part; returns true when a part filled its batch
  // (more work is waiting). A part that fails is logged and counted; the
  // others still run.
  bool scan();
  // Recomputes the gauges (a count over conveyor.job: not on every scan).
  void update_gauges();
  // Evaluates the alerts (alerts.hpp); logs, counts and posts to
  // CONVEYOR_ALERT_WEBHOOK_URL each one that starts or stops firing.
  void check_alerts();
  // Retention (part f): deletes finished jobs past job_retention_days (and
  // their outputs), old worker rows, and log months past log_retention_days.
  // Returns true when it filled its batch. Every CONVEYOR_RETENTION_INTERVAL_MS.
  bool purge();

 private:
  template <typename F>
  void part(const char* name, F&& fn);
  // The parts of a scan, a to f above; each sets more_ when it filled its batch.
  void recover_lost_workers(const model::SystemParameters& params);
  void finish_cancels();
  void restart_uncanceled();
  void reemit_stalled_jobs(const model::SystemParameters& params);
  void mark_instances(const model::SystemParameters& params);
  void advance_wave_run();

  runtime::Context& ctx_;
  int batch_;
  bool more_ = false;
  void hold_back_at_start(db::Tx& tx, const model::SystemParameters& p, std::vector<Alert>& firing) const;
  void set_alert_series(const std::vector<Alert>& firing);
  void announce(const Alert& a, bool fired);

  // The severity of each alert's conveyor_alerts_firing series set so far.
  std::map<std::string, std::string> alert_series_;
  std::string alert_webhook_;
  std::chrono::steady_clock::time_point started_;
  // (service, status) series set before: zeroed when they disappear.
  std::set<std::pair<std::string, std::string>> instance_series_;
};

runtime::ServiceSpec spec();
void setup(runtime::Context& ctx);
void loop(runtime::Context& ctx);

}  // namespace conveyor::monitor
