#pragma once
// Operator control of one job: cancel, retry, the restart of a canceled
// job (runbook 000, DESIGN §3) and the edit of its params (runbook 001). One copy, used by the REST API
// (conveyor-creation: POST /v1/jobs/{id}/cancel and /retry) and by the
// reconciler (conveyor-monitor: canceled_at changes made by SQL), so a job
// moves the same way whoever asked.
//
// Every function locks the job's row (SELECT ... FOR UPDATE, a no-op when the
// caller's transaction already holds it) and then moves the status only with
// conditional UPDATEs (`WHERE id = $1 AND status = $expected`); the status
// triggers write the history and outbox rows. Thread-safe: stateless
// functions using the caller's transaction.
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "conveyor/db/db.hpp"
#include "conveyor/model/ids.hpp"
#include "conveyor/model/job.hpp"
#include "conveyor/model/status.hpp"

namespace conveyor::model {

struct CancelResult {
  Job job;
  // false when the job is running: canceled_at is set and its worker stops
  // it (or the reconciler ends it if the worker is gone).
  bool completed = true;
};

// Sets canceled_at and moves a job that is not running to canceled
// (finish_cancel). A done job: Error(conflict). An already canceled job:
// returned unchanged. A missing job: Error(not_found).
CancelResult cancel_job(db::Tx& tx, JobId id);

// Ends a job whose canceled_at is set: failed / internal_error /
// external_error go through error_checked, every other non-final status
// (started included) goes to canceled directly. Call it for a started job
// only when its worker no longer runs it; a live worker kills the process
// and records canceled itself. Returns the status the job left, or nullopt
// when there was nothing to do (gone, done, already canceled, or
// canceled_at is null again).
std::optional<JobStatus> finish_cancel(db::Tx& tx, JobId id);

// Restarts a failed, internal_error, external_error or canceled job (else
// Error(conflict) naming the status). Error statuses go through
// error_checked to processed when the current run reached processed (it
// failed in publication), else to initialized with attempt 0 (restart_canceled
// semantics). A missing job: Error(not_found).
Job retry_job(db::Tx& tx, JobId id);

// An operator's status change (runbook 001's update_jobs_status, `conveyor
// job set-status|patch`): moves the job along `path` one transition at a
// time, each checked against the status machine first (Error(
// invalid_transition) naming both statuses, nothing written) and applied as
// a conditional update, so the history shows every step. A move to
// initialized is a fresh run (restart_canceled semantics); leaving
// error_checked clears the error; leaving canceled or error_checked for
// anything but canceled clears canceled_at, so no stage skips the job and
// the reconciler does not cancel it again. `expected` (when given) must be
// the job's status now, else Error(conflict): a bulk patch changes only
// what it showed. A missing job: Error(not_found).
Job set_status(db::Tx& tx, JobId id, const std::vector<JobStatus>& path,
               std::optional<JobStatus> expected = std::nullopt);

// Why a job in `status` may not have its params changed, or nullopt when it
// may. Params are read when configuration renders the job's command
// (initialized -> configured): they may change while the job is initialized,
// or in a status it leaves only through a fresh run (failed, internal_error,
// external_error, error_checked, canceled: a retry starts at initialized).
// configured and ready jobs have their command rendered already; queued and
// started ones are with a worker; processed and done ones have run.
std::optional<std::string> params_frozen_reason(JobStatus status);

// The params `job` would have after `patch`, a JSON merge patch (RFC 7386:
// keys replace the job's, a null removes one, nested objects merge), checked
// against its type's schema: UnprocessableError("params") listing every
// problem as "params.<key>: ...". A type that no longer exists:
// Error(not_found). Writes nothing and does not look at the status.
nlohmann::json patched_params(db::Tx& tx, const Job& job, const nlohmann::json& patch);

struct ParamsChange {
  Job before;
  Job after;
  bool changed = false;  // false: the patch left the params as they were
};

// An operator's edit of a job's params (runbook 001, `conveyor job patch
// --set-param|--params-file`): locks the job, refuses its status when
// params_frozen_reason says so (Error(conflict) with the reason) or when it
// is not `expected` (as set_status), then writes patched_params when they
// differ. The trigger conveyor.record_job_audit records the change with the
// transaction's actor. A missing job: Error(not_found).
ParamsChange patch_params(db::Tx& tx, JobId id, const nlohmann::json& patch,
                          std::optional<JobStatus> expected = std::nullopt);

struct HoldChange {
  Job job;
  bool changed = false;  // false: already held (hold_job) or not held (release_job)
};

// Holds a job that admission has not taken: sets held_at, and admission
// skips it (conveyor.job_admissible) until release_job. The job still moves
// up to ready and waits there. Idempotent: a held job is left as it is
// (changed false). Refused with Error(conflict): a job already admitted
// (queued, started, processed: holding it would not stop it; cancel it
// instead) and a final one (done, canceled, failed, internal_error: not
// waiting for admission; retry it first). A missing job: Error(not_found).
// The trigger conveyor.record_job_audit records field 'hold' with the
// transaction's actor.
HoldChange hold_job(db::Tx& tx, JobId id);

// Clears held_at, in any status (a held job that was canceled meanwhile must
// still be releasable before a restart). Idempotent: a job that is not held
// is left as it is (changed false). Recorded as field 'release'; the
// io.conveyor.job.released event wakes admission.
HoldChange release_job(db::Tx& tx, JobId id);

// canceled -> initialized: a fresh run (attempt 0; errors, result, worker and
// canceled_at cleared; the configuration service writes config again).
// Returns false when the job is not canceled (any more).
bool restart_canceled(db::Tx& tx, JobId id);

}  // namespace conveyor::model
