#include "conveyor/model/worker.hpp"

namespace conveyor::model {
namespace {

constexpr db::Statement kMarkLost{"model_mark_workers_lost",
                                  "UPDATE conveyor.worker SET status = 'lost' "
                                  "WHERE status IN ('active', 'draining') "
                                  "  AND last_heartbeat < now() - make_interval(secs => $1::float8) "
                                  "RETURNING name"};

// Workers whose process is known to have ended (the pool reaped its own
// child): lost at once, whatever their heartbeat. A row already stopped or
// lost (a clean exit, the heartbeat rule first) is left as it is.
constexpr db::Statement kMarkGone{"model_mark_workers_gone",
                                  "UPDATE conveyor.worker SET status = 'lost' "
                                  "WHERE status IN ('active', 'draining') AND name = ANY($1::text[]) "
                                  "RETURNING name"};

// The started jobs that no worker runs any more, in one statement (one
// rule for what becomes of them): those of workers that are lost, stopped
// or gone (`worker_lost`), and those of live workers that have not reported
// them as running since before running_jobs_at - heartbeat timeout
// (`worker_not_running`: an outcome the worker could not write, a claim
// whose commit it never saw). started_at comes from the history, so nothing
// else that touches the job row (a cancel request, a re-emit) moves it.
// The job rows are locked SKIP LOCKED: a job a live transaction is moving
// right now is left for the next call.
constexpr db::Statement kRecoverJobs{
    "model_recover_jobs_no_worker_runs",
    "WITH recovered AS ("
    "UPDATE conveyor.job j SET "
    "  status = CASE WHEN j.canceled_at IS NOT NULL THEN 'canceled' "
    "                WHEN j.attempt + 1 < j.max_attempts THEN 'ready' "
    "                ELSE 'internal_error' END, "
    "  attempt = CASE WHEN j.canceled_at IS NULL AND j.attempt + 1 < j.max_attempts "
    "                 THEN j.attempt + 1 ELSE j.attempt END, "
    "  not_before = NULL, "
    "  error_subtype = victim.subtype, "
    "  error_message = 'worker ' || coalesce(victim.name, '#' || victim.worker_id::text, '(none)') || "
    "    CASE WHEN victim.subtype = 'worker_lost' THEN ' was lost (no heartbeat, or its process ended) while the job ran' "
    "         ELSE ' is alive but no longer runs the job' END "
    "FROM (SELECT c.id, c.worker_id, w.name, c.attempt, "
    "             CASE WHEN w.status IN ('active', 'draining') THEN 'worker_not_running' "
    "                  ELSE 'worker_lost' END AS subtype "
    "      FROM conveyor.job c "
    "      LEFT JOIN conveyor.worker w ON w.id = c.worker_id "
    "      WHERE c.status = 'started' "
    "        AND (w.id IS NULL OR w.status IN ('lost', 'stopped') "
    "             OR (w.status IN ('active', 'draining') AND w.running_jobs_at IS NOT NULL "
    "                 AND NOT (c.id = ANY (w.running_jobs)) "
    "                 AND (SELECT max(h.at) FROM conveyor.job_status_change h "
    "                      WHERE h.job_id = c.id AND h.to_status = 'started') "
    "                     < w.running_jobs_at - make_interval(secs => $2::float8))) "
    "      ORDER BY c.id LIMIT $1 FOR UPDATE OF c SKIP LOCKED) victim "
    "WHERE j.id = victim.id AND j.status = 'started' "
    "RETURNING j.id, j.status, victim.subtype, victim.attempt), "
    // The attempt that no worker runs any more: lost (conveyor.job_attempt).
    "closed AS ("
    "  UPDATE conveyor.job_attempt a SET ended_at = now(), outcome = 'lost' "
    "  FROM recovered r WHERE a.job_id = r.id AND a.attempt = r.attempt AND a.ended_at IS NULL) "
    "SELECT status, subtype FROM recovered"};

constexpr db::Statement kStopWorkers{"model_reboot_stop_workers",
                                     "UPDATE conveyor.worker SET status = 'stopped', stopped_at = now(), running = 0 "
                                     "WHERE status IN ('active', 'draining') RETURNING name"};

}  // namespace

// A queued job (claimed by nobody yet) keeps its error columns: it had no run to stop.
const db::Statement kRequeueStoppedRuns{
    "model_requeue_stopped_runs",
    "UPDATE conveyor.job SET "
    "  status = CASE WHEN canceled_at IS NOT NULL THEN 'canceled' ELSE 'ready' END, "
    "  worker_id = NULL, not_before = NULL, "
    "  error_subtype = CASE WHEN status = 'started' THEN $3 ELSE error_subtype END, "
    "  error_message = CASE WHEN status = 'started' THEN $4 ELSE error_message END "
    "WHERE status IN ('started', 'queued') "
    "  AND ($1::bigint IS NULL OR id = $1) AND ($2::bigint IS NULL OR worker_id = $2) "
    "RETURNING status"};

RebootPreparation prepare_for_reboot(db::Tx& tx) {
  RebootPreparation out;
  for (const db::Row r : tx.exec(kStopWorkers)) out.stopped_workers.push_back(r[0].as_string());
  for (const db::Row r :
       tx.exec(kRequeueStoppedRuns, {nullptr, nullptr, "reboot", "requeued by conveyor system prepare-for-reboot"})) {
    if (r[0].as_string() == "canceled") ++out.canceled;
    else ++out.requeued;
  }
  return out;
}

namespace {

// Step 2 and 3 of reap_lost_workers(): the one rule for the started jobs no
// worker runs any more, whoever found the worker gone.
void recover_jobs(db::Tx& tx, double timeout_s, int limit, ReapResult& out) {
  for (auto row : tx.exec(kRecoverJobs, {limit, timeout_s})) {
    const auto status = row[0].view();
    if (status == "ready") {
      ++out.requeued;
    } else if (status == "canceled") {
      ++out.canceled;
    } else {
      ++out.failed;
    }
    if (row[1].view() == "worker_not_running") ++out.orphaned;
  }
}

}  // namespace

ReapResult reap_lost_workers(db::Tx& tx, std::chrono::seconds heartbeat_timeout, int limit) {
  ReapResult out;
  const double timeout_s = static_cast<double>(heartbeat_timeout.count());
  for (auto row : tx.exec(kMarkLost, {timeout_s})) out.lost_workers.push_back(row[0].as_string());
  recover_jobs(tx, timeout_s, limit, out);
  return out;
}

ReapResult mark_workers_gone(db::Tx& tx, const std::vector<std::string>& names, std::chrono::seconds heartbeat_timeout,
                             int limit) {
  ReapResult out;
  if (names.empty()) return out;
  for (auto row : tx.exec(kMarkGone, {names})) out.lost_workers.push_back(row[0].as_string());
  recover_jobs(tx, static_cast<double>(heartbeat_timeout.count()), limit, out);
  return out;
}

}  // namespace conveyor::model
