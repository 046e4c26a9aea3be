#include "reconciler.hpp"

#include <algorithm>
#include <cstdio>

#include "conveyor/model/ids.hpp"
#include "conveyor/model/job_control.hpp"

namespace conveyor::monitor {
namespace {

constexpr db::Statement kTryLock{"monitor_try_lock", "SELECT pg_try_advisory_xact_lock($1)"};

// Pending cancels (canceled_at set, not yet final). A started job is taken
// only when no live worker runs it: a live worker kills the process itself.
constexpr db::Statement kCancelCandidates{"monitor_cancel_candidates",
                                          "SELECT j.id FROM conveyor.job j "
                                          "WHERE j.canceled_at IS NOT NULL AND j.status NOT IN ('done', 'canceled') "
                                          "  AND (j.status <> 'started' OR NOT EXISTS ("
                                          "       SELECT 1 FROM conveyor.worker w "
                                          "       WHERE w.id = j.worker_id AND w.status IN ('active', 'draining'))) "
                                          "ORDER BY j.canceled_at, j.id LIMIT $1 FOR UPDATE OF j SKIP LOCKED"};

// Runbook 000's restart: `UPDATE conveyor.job SET canceled_at = null` on a
// canceled job (the status trigger sets canceled_at whenever a job becomes
// canceled, so a null one was cleared on purpose).
constexpr db::Statement kRestartCandidates{
    "monitor_restart_candidates",
    "SELECT id FROM conveyor.job WHERE status = 'canceled' AND canceled_at IS NULL "
    "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"};

// One statement: pick, stamp reemitted_at, write the outbox rows. The
// redundant NOT IN lets the planner use the partial index job_active_idx.
// Ready jobs that admission leaves on purpose (not
// conveyor.job_admission_eligible, admission's own rule: held, a back-off
// not_before, a type outside job_types_list $4, a paused type or pool) are
// waiting, not stalled.
// The payload is the job's last status change as the status trigger wrote it
// (conveyor.job_event_payload, same change_id), plus who re-emitted it.
constexpr db::Statement kReemitStalled{
    "monitor_reemit_stalled",
    "WITH stalled AS ("
    "  SELECT j.id FROM conveyor.job j"
    "  WHERE j.status = $1 AND j.status NOT IN ('done', 'canceled', 'failed')"
    "    AND j.canceled_at IS NULL"
    "    AND j.updated_at < now() - make_interval(secs => $2::float8)"
    "    AND (j.reemitted_at IS NULL OR j.reemitted_at < now() - make_interval(secs => $2::float8))"
    "    AND ($1 <> 'ready' OR conveyor.job_admission_eligible(j, now(), $4::text[],"
    "                                                       (SELECT conveyor.paused_queues())))"
    "  ORDER BY j.updated_at, j.id LIMIT $3 FOR UPDATE SKIP LOCKED),"
    " marked AS ("
    "  UPDATE conveyor.job j SET reemitted_at = now() FROM stalled s"
    "  WHERE j.id = s.id AND j.status = $1"
    "  RETURNING j.id, j.job_type, j.status, j.attempt, j.priority),"
    " emitted AS ("
    "  INSERT INTO conveyor.outbox (topic, key, type, subject, payload)"
    "  SELECT 'jobs', m.id::text, 'io.conveyor.job.' || m.status, m.id::text,"
    "    conveyor.job_event_payload(m.id, m.job_type, c.from_status, m.status, m.attempt, m.priority,"
    "                               c.id, c.at, c.actor, c.error_subtype)"
    "    || jsonb_build_object("
    "      'reemitted', true,"
    "      'reemitted_at', now(),"
    "      'reemitted_by', conveyor.current_actor())"
    "  FROM marked m"
    "  LEFT JOIN LATERAL (SELECT h.id, h.from_status, h.at, h.actor, h.error_subtype"
    "                     FROM conveyor.job_status_change h WHERE h.job_id = m.id"
    "                     ORDER BY h.id DESC LIMIT 1) c ON true"
    "  ORDER BY m.id"
    "  RETURNING 1)"
    " SELECT count(*) AS n FROM emitted"};

constexpr db::Statement kNotifyOutbox{"monitor_notify_outbox", "SELECT pg_notify('conveyor_outbox', '')"};

constexpr db::Statement kMarkInstancesDown{"monitor_mark_instances_down",
                                           "UPDATE conveyor.service_instance SET status = 'down' "
                                           "WHERE status IN ('up', 'draining') AND last_heartbeat "
                                           "< now() - make_interval(secs => $1::float8) "
                                           "RETURNING id"};

constexpr db::Statement kPurgeInstances{"monitor_purge_instances",
                                        "DELETE FROM conveyor.service_instance "
                                        "WHERE status IN ('stopped', 'down') AND last_heartbeat < "
                                        "now() - make_interval(secs => $1::float8)"};

// The status list is job_finished_updated_idx's predicate, word for word.
constexpr db::Statement kPurgeJobs{
    "monitor_purge_jobs",
    "WITH doomed AS ("
    "  SELECT j.id FROM conveyor.job j"
    "  WHERE j.status IN ('done', 'canceled', 'failed', 'internal_error')"
    "    AND j.updated_at < now() - make_interval(secs => $1::float8)"
    "    AND NOT (j.status = 'canceled' AND j.canceled_at IS NULL)"
    // depends_on <> '{}': job_depends_on_idx's predicate (migration 20261219000000).
    "    AND NOT EXISTS (SELECT 1 FROM conveyor.job d WHERE d.depends_on @> ARRAY[j.id] AND d.depends_on <> '{}'"
    "                    AND d.status NOT IN ('done', 'canceled', 'failed', 'internal_error'))"
    "  ORDER BY j.updated_at LIMIT $2 FOR UPDATE OF j SKIP LOCKED)"
    "DELETE FROM conveyor.job j USING doomed WHERE j.id = doomed.id RETURNING j.id"};

constexpr db::Statement kPurgeWorkers{"monitor_purge_workers",
                                      "DELETE FROM conveyor.worker WHERE status IN ('stopped', 'lost') "
                                      "AND last_heartbeat < now() - make_interval(secs => $1::float8)"};

bool try_lock(db::Tx& tx, std::int64_t key) { return tx.exec(kTryLock, {key})[0][0].as_bool(); }

double seconds(std::chrono::seconds s) { return static_cast<double>(s.count()); }

}  // namespace

std::optional<model::ReapResult> reap_workers(db::Pool& pool, std::chrono::seconds heartbeat_timeout, int limit) {
  return pool.transact([&](db::Tx& tx) -> std::optional<model::ReapResult> {
    if (!try_lock(tx, kLostWorkersLockKey)) return std::nullopt;
    return model::reap_lost_workers(tx, heartbeat_timeout, limit);
  });
}

std::optional<CancelPass> apply_cancels(db::Pool& pool, int limit) {
  return pool.transact([&](db::Tx& tx) -> std::optional<CancelPass> {
    if (!try_lock(tx, kCancelsLockKey)) return std::nullopt;
    CancelPass pass;
    for (const db::Row r : tx.exec(kCancelCandidates, {limit})) {
      if (const auto from = model::finish_cancel(tx, model::JobId(r[0].as_int()))) {
        ++pass.canceled;
        ++pass.from[*from];
      }
    }
    return pass;
  });
}

std::optional<int> apply_restarts(db::Pool& pool, int limit) {
  return pool.transact([&](db::Tx& tx) -> std::optional<int> {
    if (!try_lock(tx, kRestartsLockKey)) return std::nullopt;
    int restarted = 0;
    for (const db::Row r : tx.exec(kRestartCandidates, {limit})) {
      if (model::restart_canceled(tx, model::JobId(r[0].as_int()))) ++restarted;
    }
    return restarted;
  });
}

std::optional<int> reemit_stalled(db::Pool& pool, model::JobStatus status, std::chrono::seconds threshold, int limit,
                                  const std::optional<std::vector<std::string>>& job_types_list) {
  return pool.transact([&](db::Tx& tx) -> std::optional<int> {
    if (!try_lock(tx, kStalledLockKey)) return std::nullopt;
    const db::Result r =
        tx.exec(kReemitStalled, {std::string(model::to_string(status)), seconds(threshold), limit, job_types_list});
    const auto n = static_cast<int>(r[0][0].as_int());
    if (n > 0) tx.exec(kNotifyOutbox);  // delivered at commit: the relay wakes
    return n;
  });
}

std::optional<InstancePass> reconcile_instances(db::Pool& pool, std::chrono::seconds heartbeat_timeout,
                                                std::chrono::seconds retention) {
  return pool.transact([&](db::Tx& tx) -> std::optional<InstancePass> {
    if (!try_lock(tx, kInstancesLockKey)) return std::nullopt;
    InstancePass pass;
    for (const db::Row r : tx.exec(kMarkInstancesDown, {seconds(heartbeat_timeout)})) {
      pass.marked_down.push_back(r[0].as_string());
    }
    pass.purged = static_cast<int>(tx.exec(kPurgeInstances, {seconds(retention)}).affected_rows());
    return pass;
  });
}

std::optional<RetentionPass> purge_expired(db::Pool& pool, std::chrono::seconds job_retention,
                                           std::chrono::seconds worker_retention, int limit) {
  return pool.transact([&](db::Tx& tx) -> std::optional<RetentionPass> {
    if (!try_lock(tx, kRetentionLockKey)) return std::nullopt;
    RetentionPass pass;
    for (const db::Row r : tx.exec(kPurgeJobs, {seconds(job_retention), limit})) pass.jobs.push_back(r[0].as_int());
    pass.workers = static_cast<int>(tx.exec(kPurgeWorkers, {seconds(worker_retention)}).affected_rows());
    return pass;
  });
}

std::vector<std::string> purge_log_months(const std::filesystem::path& data_dir,
                                          std::chrono::system_clock::time_point now, std::chrono::seconds retention) {
  namespace fs = std::filesystem;
  using namespace std::chrono;
  std::vector<std::string> removed;
  std::error_code ec;
  const fs::path logs = data_dir / "logs";
  for (const auto& entry : fs::directory_iterator(logs, ec)) {
    const std::string name = entry.path().filename().string();
    int y = 0;
    unsigned m = 0;
    // Only YYYY-MM folders (the workers' layout); anything else is not ours.
    if (name.size() != 7 || name[4] != '-' || std::sscanf(name.c_str(), "%4d-%2u", &y, &m) != 2 || m < 1 || m > 12 ||
        !entry.is_directory(ec)) {
      continue;
    }
    const year_month next = year{y} / month{m} + months{1};
    const sys_days month_end{next / day{1}};
    if (month_end + retention > now) continue;
    fs::remove_all(entry.path(), ec);
    if (!ec) removed.push_back(name);
  }
  std::sort(removed.begin(), removed.end());
  return removed;
}

}  // namespace conveyor::monitor
