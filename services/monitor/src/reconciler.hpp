#pragma once
// The reconciler of conveyor-monitor (runbook 000's scan_for_stalled_pipelines,
// DESIGN §2 "no correctness depends on an event arriving"). Each part is one
// short transaction that first takes a transaction-level advisory lock with
// pg_try_advisory_xact_lock(<key>): when another replica holds it, the part is
// skipped (nullopt) and that replica does the work; the lock ends with the
// transaction. Every status change is a conditional UPDATE through libs/core
// (model::reap_lost_workers, model::finish_cancel, model::restart_canceled),
// so even without the lock nothing would be done twice.
//
// Lock keys ("cvmon" + a letter, in ASCII, like execution's "cvexec"):
//   kLostWorkersLockKey "cvmonL", kCancelsLockKey "cvmonC",
//   kRestartsLockKey "cvmonR", kStalledLockKey "cvmonS",
//   kInstancesLockKey "cvmonI", kRetentionLockKey "cvmonP".
//
// Stateless functions; safe to call from any thread.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "conveyor/db/db.hpp"
#include "conveyor/model/status.hpp"
#include "conveyor/model/worker.hpp"

namespace conveyor::monitor {

inline constexpr std::int64_t kLostWorkersLockKey = 0x63766d6f6e4c;  // "cvmonL"
inline constexpr std::int64_t kCancelsLockKey = 0x63766d6f6e43;      // "cvmonC"
inline constexpr std::int64_t kRestartsLockKey = 0x63766d6f6e52;     // "cvmonR"
inline constexpr std::int64_t kStalledLockKey = 0x63766d6f6e53;      // "cvmonS"
inline constexpr std::int64_t kInstancesLockKey = 0x63766d6f6e49;    // "cvmonI"
inline constexpr std::int64_t kRetentionLockKey = 0x63766d6f6e50;    // "cvmonP"

// a. Marks workers whose heartbeat is older than `heartbeat_timeout` lost
//    and recovers the started jobs of lost, stopped or missing workers
//    (model::reap_lost_workers), at most `limit` jobs.
std::optional<model::ReapResult> reap_workers(db::Pool& pool, std::chrono::seconds heartbeat_timeout, int limit);

struct CancelPass {
  int canceled = 0;                      // jobs moved to canceled
  std::map<model::JobStatus, int> from;  // by the status they left
};
// b. Jobs with canceled_at set and not done/canceled end canceled
//    (model::finish_cancel): errored ones through error_checked; started
//    ones only when their worker is not active/draining (a live worker
//    kills the process and records canceled itself). At most `limit` jobs.
std::optional<CancelPass> apply_cancels(db::Pool& pool, int limit);

// c. Canceled jobs whose canceled_at was set back to null go to initialized
//    (model::restart_canceled). Returns how many, at most `limit`.
std::optional<int> apply_restarts(db::Pool& pool, int limit);

// d. Re-emits the event of jobs in `status` whose updated_at and reemitted_at
//    are both older than `threshold`: an outbox row like the status trigger's
//    (topic 'jobs', key and subject the job id, type io.conveyor.job.<status>,
//    the payload of the job's last status change plus "reemitted": true),
//    pg_notify('conveyor_outbox'), reemitted_at = now(). No status change and
//    no history row. Skips jobs whose cancel is pending (part b ends them)
//    and ready jobs admission holds on purpose (not_before in the future, a
//    type outside `job_types_list`, a paused type or pool). Returns how
//    many, at most `limit`.
std::optional<int> reemit_stalled(db::Pool& pool, model::JobStatus status, std::chrono::seconds threshold, int limit,
                                  const std::optional<std::vector<std::string>>& job_types_list);

struct InstancePass {
  std::vector<std::string> marked_down;  // instance ids
  int purged = 0;
};
// e. Service instances `up` or `draining` whose last_heartbeat is older than
//    `heartbeat_timeout` become `down`; instances stopped or down for more
//    than `retention` are deleted.
std::optional<InstancePass> reconcile_instances(db::Pool& pool, std::chrono::seconds heartbeat_timeout,
                                                std::chrono::seconds retention);

struct RetentionPass {
  std::vector<std::int64_t> jobs;  // ids of the jobs deleted (their history went with them)
  int workers = 0;                 // stopped or lost worker rows deleted
};
// f. Retention: at most `limit` finished jobs (done, canceled, failed,
//    internal_error) not updated for `job_retention` are deleted, oldest
//    first, except a canceled job whose canceled_at is null (a restart
//    request) and a job that a job still in progress depends on; and worker
//    rows stopped or lost for longer than `worker_retention`.
std::optional<RetentionPass> purge_expired(db::Pool& pool, std::chrono::seconds job_retention,
                                           std::chrono::seconds worker_retention, int limit);

// The month folders of <data_dir>/logs (YYYY-MM) whose month ended more than
// `retention` ago are removed; returns their names. Only where the monitor
// sees the workers' data dir (one host, or a shared volume); elsewhere the
// folder is missing and nothing happens.
std::vector<std::string> purge_log_months(const std::filesystem::path& data_dir,
                                          std::chrono::system_clock::time_point now, std::chrono::seconds retention);

}  // namespace conveyor::monitor
