#include "conveyor/model/worker.hpp"

namespace conveyor::model {
namespace {

constexpr db::Statement kMarkLost{
    "model_mark_workers_lost",
    "UPDATE conveyor.worker SET status = 'lost' "
    "WHERE status IN ('active', 'draining') "
    "  AND last_heartbeat < now() - make_interval(secs => $1::float8) "
    "RETURNING name"};

// The job rows are locked SKIP LOCKED: a job a live transaction is moving
// right now is left for the next call.
constexpr db::Statement kRecoverJobs{
    "model_recover_jobs_of_lost_workers",
    "UPDATE conveyor.job j SET "
    "  status = CASE WHEN j.canceled_at IS NOT NULL THEN 'canceled' "
    "                WHEN j.attempt + 1 < j.max_attempts THEN 'ready' "
    "                ELSE 'internal_error' END, "
    "  attempt = CASE WHEN j.canceled_at IS NULL AND j.attempt + 1 < j.max_attempts "
    "                 THEN j.attempt + 1 ELSE j.attempt END, "
    "  not_before = NULL, "
    "  error_subtype = 'worker_lost', "
    "  error_message = 'worker ' || coalesce(w.name, '#' || j.worker_id::text, '(none)') || "
    "                  ' stopped heartbeating while the job ran' "
    "FROM (SELECT c.id, c.worker_id FROM conveyor.job c "
    "      LEFT JOIN conveyor.worker cw ON cw.id = c.worker_id "
    "      WHERE c.status = 'started' "
    "        AND (cw.id IS NULL OR cw.status IN ('lost', 'stopped')) "
    "      ORDER BY c.id LIMIT $1 FOR UPDATE OF c SKIP LOCKED) victim "
    "LEFT JOIN conveyor.worker w ON w.id = victim.worker_id "
    "WHERE j.id = victim.id AND j.status = 'started' "
    "RETURNING j.status"};

// Started jobs of a live worker that its heartbeats have not reported as
// running since before the heartbeat timeout: their outcome was lost (a
// claim whose commit the worker never saw, an outcome it could not write).
// started_at comes from the history, so nothing else that touches the job
// row (a cancel request, a re-emit) delays or hastens this.
constexpr db::Statement kRecoverOrphans{
    "model_recover_orphaned_jobs",
    "UPDATE conveyor.job j SET "
    "  status = CASE WHEN j.canceled_at IS NOT NULL THEN 'canceled' "
    "                WHEN j.attempt + 1 < j.max_attempts THEN 'ready' "
    "                ELSE 'internal_error' END, "
    "  attempt = CASE WHEN j.canceled_at IS NULL AND j.attempt + 1 < j.max_attempts "
    "                 THEN j.attempt + 1 ELSE j.attempt END, "
    "  not_before = NULL, "
    "  error_subtype = 'worker_not_running', "
    "  error_message = 'worker ' || victim.name || ' is alive but no longer runs the job' "
    "FROM (SELECT c.id, w.name FROM conveyor.job c "
    "      JOIN conveyor.worker w ON w.id = c.worker_id "
    "      WHERE c.status = 'started' AND w.status IN ('active', 'draining') "
    "        AND w.running_jobs_at IS NOT NULL AND NOT (c.id = ANY (w.running_jobs)) "
    "        AND (SELECT max(h.at) FROM conveyor.job_status_change h "
    "             WHERE h.job_id = c.id AND h.to_status = 'started') "
    "            < w.running_jobs_at - make_interval(secs => $1::float8) "
    "      ORDER BY c.id LIMIT $2 FOR UPDATE OF c SKIP LOCKED) victim "
    "WHERE j.id = victim.id AND j.status = 'started' "
    "RETURNING j.status"};

constexpr db::Statement kStopWorkers{
    "model_reboot_stop_workers",
    "UPDATE conveyor.worker SET status = 'stopped', stopped_at = now(), running = 0 "
    "WHERE status IN ('active', 'draining') RETURNING name"};

constexpr db::Statement kRequeueForReboot{
    "model_reboot_requeue_jobs",
    "UPDATE conveyor.job SET "
    "  status = CASE WHEN canceled_at IS NOT NULL THEN 'canceled' ELSE 'ready' END, "
    "  worker_id = NULL, not_before = NULL "
    "WHERE status IN ('started', 'queued') RETURNING status"};

}  // namespace

RebootPreparation prepare_for_reboot(db::Tx& tx) {
  RebootPreparation out;
  for (const db::Row r : tx.exec(kStopWorkers)) out.stopped_workers.push_back(r[0].as_string());
  for (const db::Row r : tx.exec(kRequeueForReboot)) {
    if (r[0].as_string() == "canceled") ++out.canceled;
    else ++out.requeued;
  }
  return out;
}

ReapResult reap_lost_workers(db::Tx& tx, std::chrono::seconds heartbeat_timeout, int limit) {
  ReapResult out;
  for (auto row : tx.exec(kMarkLost, {static_cast<double>(heartbeat_timeout.count())})) {
    out.lost_workers.push_back(row[0].as_string());
  }
  auto tally = [&out](const db::Result& rows) {
    for (auto row : rows) {
      const auto status = row[0].view();
      if (status == "ready") {
        ++out.requeued;
      } else if (status == "canceled") {
        ++out.canceled;
      } else {
        ++out.failed;
      }
    }
    return rows.size();
  };
  tally(tx.exec(kRecoverJobs, {limit}));
  out.orphaned = static_cast<int>(
      tally(tx.exec(kRecoverOrphans, {static_cast<double>(heartbeat_timeout.count()), limit})));
  return out;
}

}  // namespace conveyor::model
