#include "conveyor/model/job_control.hpp"

#include <string>

#include "conveyor/error/error.hpp"
#include "conveyor/model/job_type.hpp"

namespace conveyor::model {
namespace {

// The row stays locked until commit, so no stage moves the job under us
// (their claims use SKIP LOCKED or conditional updates).
constexpr db::Statement kLockJob{"model_job_control_lock",
                                 "SELECT status, canceled_at IS NOT NULL AS cancel_requested FROM "
                                 "conveyor.job WHERE id = $1 FOR UPDATE"};

constexpr db::Statement kRequestCancel{
    "model_job_control_request_cancel",
    "UPDATE conveyor.job SET canceled_at = now() WHERE id = $1 AND canceled_at IS NULL"};

constexpr db::Statement kMoveStatus{"model_job_control_move",
                                    "UPDATE conveyor.job SET status = $3 WHERE id = $1 AND status = $2"};

// A fresh run: attempts, errors and the previous result are forgotten; the
// configuration service writes config again.
constexpr db::Statement kRestart{"model_job_control_restart",
                                 "UPDATE conveyor.job SET status = 'initialized', attempt = 0, error_subtype = NULL, "
                                 "error_message = NULL, result = NULL, worker_id = NULL, canceled_at = NULL "
                                 "WHERE id = $1 AND status = $2"};

// Publication failed: publish the result already there again.
constexpr db::Statement kResumeProcessed{
    "model_job_control_resume_processed",
    "UPDATE conveyor.job SET status = 'processed', error_subtype = NULL, error_message = NULL, "
    "canceled_at = NULL WHERE id = $1 AND status = 'error_checked'"};

// The current run starts at the job's last move to initialized.
constexpr db::Statement kProcessedInCurrentRun{"model_job_control_processed_in_current_run",
                                               "SELECT EXISTS (SELECT 1 FROM conveyor.job_status_change c "
                                               "WHERE c.job_id = $1 AND c.to_status = 'processed' AND c.id > coalesce("
                                               "(SELECT max(s.id) FROM conveyor.job_status_change s "
                                               "WHERE s.job_id = $1 AND s.to_status = 'initialized'), 0))"};

// An operator's step out of error_checked or canceled: the error is
// history, and canceled_at would make every stage skip the job.
constexpr db::Statement kOperatorMove{
    "model_job_control_operator_move",
    "UPDATE conveyor.job SET status = $3, error_subtype = NULL, error_message = NULL, "
    "  canceled_at = CASE WHEN $3 = 'canceled' THEN canceled_at ELSE NULL END, "
    "  not_before = CASE WHEN $3 = 'ready' THEN NULL ELSE not_before END "
    "WHERE id = $1 AND status = $2"};

constexpr db::Statement kSetParams{"model_job_control_set_params",
                                   "UPDATE conveyor.job SET params = $2::jsonb WHERE id = $1 AND status = $3"};

std::string job_name(JobId id) { return "job " + std::to_string(id.value()); }

struct Locked {
  JobStatus status;
  bool cancel_requested;
};

std::optional<Locked> lock_job(db::Tx& tx, JobId id) {
  const auto rows = tx.exec(kLockJob, {id.value()});
  if (rows.empty()) return std::nullopt;
  const auto status = parse_status(rows[0]["status"].view());
  if (!status) throw Error(errc::internal, "database: unknown job status " + rows[0]["status"].as_string());
  return Locked{*status, rows[0]["cancel_requested"].as_bool()};
}

Locked must_lock(db::Tx& tx, JobId id) {
  const auto locked = lock_job(tx, id);
  if (!locked) throw Error(errc::not_found, job_name(id) + " does not exist");
  return *locked;
}

Job must_load(db::Tx& tx, JobId id) {
  auto job = load_job(tx, id);
  if (!job) throw Error(errc::not_found, job_name(id) + " does not exist");
  return std::move(*job);
}

// A conditional update on a row we hold locked: not matching is a bug.
void move(db::Tx& tx, JobId id, JobStatus from, JobStatus to) {
  const auto r = tx.exec(kMoveStatus, {id.value(), std::string(to_string(from)), std::string(to_string(to))});
  if (r.affected_rows() != 1) {
    throw Error(errc::conflict, job_name(id) + " is no longer " + std::string(to_string(from)));
  }
}

void check_affected(const db::Result& r, JobId id, const char* what) {
  if (r.affected_rows() != 1) throw Error(errc::conflict, job_name(id) + ": could not " + what);
}

// Moves a locked job with canceled_at set to canceled; returns false when
// its status has no way to canceled (done, canceled).
bool end_canceled(db::Tx& tx, JobId id, JobStatus status) {
  switch (status) {
    case JobStatus::done:
    case JobStatus::canceled:
      return false;
    case JobStatus::failed:
    case JobStatus::internal_error:
    case JobStatus::external_error:
      move(tx, id, status, JobStatus::error_checked);
      move(tx, id, JobStatus::error_checked, JobStatus::canceled);
      return true;
    default:  // initialized, configured, ready, queued, started, processed, error_checked
      move(tx, id, status, JobStatus::canceled);
      return true;
  }
}

}  // namespace

CancelResult cancel_job(db::Tx& tx, JobId id) {
  const Locked locked = must_lock(tx, id);
  switch (locked.status) {
    case JobStatus::done:
      throw Error(errc::conflict, job_name(id) + " is done");
    case JobStatus::canceled:
      return {must_load(tx, id), true};
    default:
      break;
  }
  tx.exec(kRequestCancel, {id.value()});
  if (locked.status == JobStatus::started) {
    // Its worker sees canceled_at, kills the process group and ends it canceled.
    return {must_load(tx, id), false};
  }
  end_canceled(tx, id, locked.status);
  return {must_load(tx, id), true};
}

std::optional<JobStatus> finish_cancel(db::Tx& tx, JobId id) {
  const auto locked = lock_job(tx, id);
  if (!locked || !locked->cancel_requested) return std::nullopt;
  if (!end_canceled(tx, id, locked->status)) return std::nullopt;
  return locked->status;
}

Job retry_job(db::Tx& tx, JobId id) {
  const JobStatus status = must_lock(tx, id).status;
  switch (status) {
    case JobStatus::failed:
    case JobStatus::internal_error:
    case JobStatus::external_error: {
      move(tx, id, status, JobStatus::error_checked);
      const bool processed = tx.exec(kProcessedInCurrentRun, {id.value()})[0][0].as_bool();
      if (processed) {
        check_affected(tx.exec(kResumeProcessed, {id.value()}), id, "resume at processed");
      } else {
        check_affected(tx.exec(kRestart, {id.value(), "error_checked"}), id, "restart at initialized");
      }
      break;
    }
    case JobStatus::canceled:
      if (!restart_canceled(tx, id)) throw Error(errc::conflict, job_name(id) + ": could not restart at initialized");
      break;
    default:
      throw Error(errc::conflict, job_name(id) + " is " + std::string(to_string(status)) +
                                      ": only failed, internal_error, external_error or canceled "
                                      "jobs can be retried");
  }
  return must_load(tx, id);
}

// The worker that runs job $1 now: its row active or draining and its
// heartbeat younger than the timeout (the reconciler's rule for a live one).
constexpr db::Statement kLiveRunner{
    "model_job_live_runner",
    "SELECT w.name FROM conveyor.job j JOIN conveyor.worker w ON w.id = j.worker_id "
    "CROSS JOIN conveyor.system_parameters p "
    "WHERE j.id = $1 AND j.status = 'started' AND w.status IN ('active', 'draining') "
    "  AND w.last_heartbeat > now() - make_interval(secs => p.worker_heartbeat_timeout_s)"};

// A started job whose worker is alive still runs: an operator's move may end
// it (failed, canceled, an error: its worker kills the process), not put it
// back to run again beside the process still running, nor hand its result
// on before it has one (a new user's trial, stop 46: the worker claimed it
// again, and the first run's end was taken for the second's).
void refuse_while_it_runs(db::Tx& tx, JobId id, JobStatus to) {
  if (to != JobStatus::ready && to != JobStatus::processed) return;
  const db::Result runner = tx.exec(kLiveRunner, {id.value()});
  if (runner.empty()) return;
  throw Error(errc::conflict, job_name(id) + " runs on worker " + runner[0][0].as_string() +
                                  ", which is alive: moving it to " + std::string(to_string(to)) + " would " +
                                  (to == JobStatus::ready ? "run it twice" : "publish a run that has not ended") +
                                  ". `conveyor job cancel " + std::to_string(id.value()) +
                                  "` stops it (then `job retry`), or wait for it to end");
}

Job set_status(db::Tx& tx, JobId id, const std::vector<JobStatus>& path, std::optional<JobStatus> expected) {
  if (path.empty()) throw FieldError("status", "no status to move " + job_name(id) + " to");
  JobStatus status = must_lock(tx, id).status;
  if (expected && status != *expected) {
    throw Error(errc::conflict, job_name(id) + " is " + std::string(to_string(status)) + " now, not " +
                                    std::string(to_string(*expected)) + ": left alone");
  }
  if (status == JobStatus::started) refuse_while_it_runs(tx, id, path.front());
  JobStatus from = status;
  for (const JobStatus to : path) {  // the whole path is checked before anything is written
    if (!is_valid_transition(from, to)) {
      throw Error(errc::invalid_transition, job_name(id) + ": " + std::string(to_string(from)) + " -> " +
                                                std::string(to_string(to)) + " is not allowed by the status machine");
    }
    from = to;
  }
  for (const JobStatus to : path) {
    const std::string f(to_string(status)), t(to_string(to));
    if (to == JobStatus::initialized) {
      check_affected(tx.exec(kRestart, {id.value(), f}), id, "restart at initialized");
    } else if (status == JobStatus::error_checked || status == JobStatus::canceled) {
      check_affected(tx.exec(kOperatorMove, {id.value(), f, t}), id, ("move to " + t).c_str());
    } else {
      move(tx, id, status, to);
    }
    status = to;
  }
  return must_load(tx, id);
}

std::optional<std::string> params_frozen_reason(JobStatus status) {
  switch (status) {
    case JobStatus::initialized:
    case JobStatus::failed:
    case JobStatus::internal_error:
    case JobStatus::external_error:
    case JobStatus::error_checked:
    case JobStatus::canceled:
      return std::nullopt;
    case JobStatus::configured:
    case JobStatus::ready:
      return "its command was already rendered from its params (at configured); start it afresh in the "
             "same change (job patch ... --to canceled,initialized) so configuration renders the new ones";
    case JobStatus::queued:
    case JobStatus::started:
      return "it is admitted and a worker runs its command as configured from its params; cancel it "
             "first (job cancel), then patch the canceled job";
    case JobStatus::processed:
    case JobStatus::done:
      return "it has run: its params are the record of that run";
  }
  return "unknown status";
}

nlohmann::json patched_params(db::Tx& tx, const Job& job, const nlohmann::json& patch) {
  if (!patch.is_object()) throw FieldError("params", "params: the change must be a JSON object");
  nlohmann::json params = job.params.is_object() ? job.params : nlohmann::json::object();
  params.merge_patch(patch);
  const auto type = load_job_type(tx, job.job_type);
  if (!type) {
    throw Error(errc::not_found, job_name(job.id) + ": its job type '" + job.job_type +
                                     "' no longer exists, so new params cannot be checked");
  }
  const auto problems = validate_params(type->params_schema, params);
  if (!problems.empty()) {
    std::string detail =
        job_name(job.id) + ": the new params do not match the schema of job type '" + job.job_type + "': ";
    for (std::size_t i = 0; i < problems.size(); ++i) detail += (i ? "; " : "") + problems[i];
    throw UnprocessableError("params", detail, problems);
  }
  return params;
}

ParamsChange patch_params(db::Tx& tx, JobId id, const nlohmann::json& patch, std::optional<JobStatus> expected) {
  const JobStatus status = must_lock(tx, id).status;
  if (expected && status != *expected) {
    throw Error(errc::conflict, job_name(id) + " is " + std::string(to_string(status)) + " now, not " +
                                    std::string(to_string(*expected)) + ": left alone");
  }
  if (const auto reason = params_frozen_reason(status)) {
    throw Error(errc::conflict,
                job_name(id) + " is " + std::string(to_string(status)) + ": its params cannot change: " + *reason);
  }
  ParamsChange change{must_load(tx, id), {}, false};
  const nlohmann::json params = patched_params(tx, change.before, patch);
  change.changed = params != change.before.params;
  if (change.changed) {
    check_affected(tx.exec(kSetParams, {id.value(), params.dump(), std::string(to_string(status))}), id,
                   "change its params");
  }
  change.after = must_load(tx, id);
  return change;
}

namespace {

constexpr db::Statement kLockForHold{
    "model_job_control_lock_for_hold",
    "SELECT status, held_at IS NOT NULL AS held FROM conveyor.job WHERE id = $1 FOR UPDATE"};

constexpr db::Statement kSetHeld{"model_job_control_hold",
                                 "UPDATE conveyor.job SET held_at = now() WHERE id = $1 AND held_at IS NULL"};

constexpr db::Statement kClearHeld{"model_job_control_release",
                                   "UPDATE conveyor.job SET held_at = NULL WHERE id = $1 AND held_at IS NOT NULL"};

struct HoldState {
  JobStatus status;
  bool held;
};

HoldState lock_for_hold(db::Tx& tx, JobId id) {
  const auto rows = tx.exec(kLockForHold, {id.value()});
  if (rows.empty()) throw Error(errc::not_found, job_name(id) + " does not exist");
  const auto status = parse_status(rows[0]["status"].view());
  if (!status) throw Error(errc::internal, "database: unknown job status " + rows[0]["status"].as_string());
  return {*status, rows[0]["held"].as_bool()};
}

}  // namespace

HoldChange hold_job(db::Tx& tx, JobId id) {
  const HoldState state = lock_for_hold(tx, id);
  const std::string is = job_name(id) + " is " + std::string(to_string(state.status));
  switch (state.status) {
    case JobStatus::queued:
    case JobStatus::started:
    case JobStatus::processed:
      throw Error(errc::conflict, is + ": already admitted, a hold would not stop it (cancel it instead)");
    case JobStatus::done:
    case JobStatus::canceled:
    case JobStatus::failed:
    case JobStatus::internal_error:
      throw Error(errc::conflict, is + ": it is not waiting for admission (retry it first to run it again)");
    default:  // initialized, configured, ready, external_error, error_checked
      break;
  }
  if (state.held) return {must_load(tx, id), false};
  check_affected(tx.exec(kSetHeld, {id.value()}), id, "hold it");
  return {must_load(tx, id), true};
}

HoldChange release_job(db::Tx& tx, JobId id) {
  const HoldState state = lock_for_hold(tx, id);
  if (!state.held) return {must_load(tx, id), false};
  check_affected(tx.exec(kClearHeld, {id.value()}), id, "release it");
  return {must_load(tx, id), true};
}

bool restart_canceled(db::Tx& tx, JobId id) {
  const auto locked = lock_job(tx, id);
  if (!locked || locked->status != JobStatus::canceled) return false;
  return tx.exec(kRestart, {id.value(), "canceled"}).affected_rows() == 1;
}

}  // namespace conveyor::model
