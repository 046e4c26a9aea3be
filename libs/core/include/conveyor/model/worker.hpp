#pragma once
// Workers as the database sees them (conveyor.worker) and the recovery of
// their jobs when they stop heartbeating or their process is seen to exit.
// Used by conveyor-workerpool (which replaces lost workers, and marks its own
// exited ones with mark_workers_gone()) and conveyor-monitor (the reconciler): both call
// reap_lost_workers() and whichever runs first does the work; the updates
// are conditional, so running it twice or concurrently changes nothing more.
// Thread-safe: the functions use the caller's transaction.
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "conveyor/db/db.hpp"

namespace conveyor::model {

struct ReapResult {
  std::vector<std::string> lost_workers;  // names marked lost by this call
  int requeued = 0;                       // started jobs moved back to ready (attempt + 1)
  int failed = 0;                         // started jobs moved to internal_error (worker_lost): attempts spent
  int canceled = 0;                       // started jobs whose cancel was asked: moved to canceled
  int orphaned = 0;                       // of those three, jobs of live workers that no longer ran them (step 3)
};

// 1. Marks `active` and `draining` workers whose last_heartbeat is older than
//    `heartbeat_timeout` as `lost` (PostgreSQL's clock, not ours).
// 2. Moves every `started` job whose worker is lost, stopped or gone:
//    to `canceled` when canceled_at is set; else to `ready` with attempt + 1
//    while attempt + 1 < max_attempts; else to `internal_error` with
//    error_subtype `worker_lost`. At most `limit` jobs per call.
// 3. Moves the same way every `started` job of a live (active or draining)
//    worker that has been missing from the worker's reported running_jobs
//    since before running_jobs_at - heartbeat_timeout (error_subtype
//    `worker_not_running`): its outcome was lost while the worker lived on.
// A worker that heartbeats again after being marked lost becomes active and
// finds its jobs no longer started by it (the worker drops their results).
ReapResult reap_lost_workers(db::Tx& tx, std::chrono::seconds heartbeat_timeout, int limit = 1000);

// For workers whose process is known to have ended (conveyor-workerpool
// reaped its own child, e.g. one killed -9): marks the `active` and
// `draining` rows of `names` as `lost` at once, without waiting for the
// heartbeat timeout, then recovers started jobs exactly as steps 2 and 3 of
// reap_lost_workers() do (same statement; `heartbeat_timeout` is step 3's).
// Rows already stopped or lost are left alone, so a clean exit changes nothing.
ReapResult mark_workers_gone(db::Tx& tx, const std::vector<std::string>& names, std::chrono::seconds heartbeat_timeout,
                             int limit = 1000);

// The one rule for a run stopped on purpose, not by a fault of the job: a
// worker's own shutdown and prepare_for_reboot() both use this statement (a
// lost worker is another rule: reap_lost_workers(), attempt + 1, because the
// job may be what killed it). The job goes back to `ready` as if the run had
// not happened: attempt unchanged, so no retry is used (the next run's
// job_attempt row carries the same number as the stopped one's; the worker
// closes its row with what it cost, after a reboot the next claim closes it
// as `lost`); worker and back-off cleared; `canceled` instead when its cancel was asked. A started
// job's error_subtype and error_message say why. Returns each job's new status.
// $1: the job id, or NULL for all; $2: the worker id, or NULL for all;
// $3: error_subtype; $4: error_message.
extern const db::Statement kRequeueStoppedRuns;

struct RebootPreparation {
  std::vector<std::string> stopped_workers;  // active/draining rows now stopped
  int requeued = 0;                          // started or queued jobs now ready, attempt unchanged
  int canceled = 0;                          // started or queued jobs whose cancel was asked
};

// Runbook 003's prepare_for_reboot, after the workers were stopped: every
// `started` or `queued` job goes back to `ready` as if it had not run (its
// attempt unchanged, worker cleared; `canceled` when its cancel was asked)
// and every active or draining worker row becomes `stopped`, so after the
// reboot the jobs run again and nobody waits for a heartbeat timeout. A
// worker still alive finds its jobs no longer its own and stops them. One
// transaction: the caller's.
RebootPreparation prepare_for_reboot(db::Tx& tx);

}  // namespace conveyor::model
