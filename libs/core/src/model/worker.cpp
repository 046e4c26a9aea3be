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
  for (auto row : tx.exec(kRecoverJobs, {limit})) {
    const auto status = row[0].view();
    if (status == "ready") {
      ++out.requeued;
    } else if (status == "canceled") {
      ++out.canceled;
    } else {
      ++out.failed;
    }
  }
  return out;
}

}  // namespace conveyor::model
