#pragma once
// Pause and resume of queues (a job type or a pool: conveyor.queue_state,
// runbook 002) and of schedules (conveyor.schedule_state), and the queue
// list. One copy, used by the CLI (`conveyor queue pause|resume|list`,
// `conveyor schedule pause|resume`) and the monitor's console (/queues), so a
// pause means the same whoever asked. The transaction's actor is recorded as
// paused_by. Thread-safe: stateless functions using the caller's transaction.
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "conveyor/db/db.hpp"
#include "conveyor/model/job_type.hpp"

namespace conveyor::model {

struct QueueRef {
  std::string kind;  // "job_type" | "pool"
  std::string name;
};

// Error(not_found) naming the queue when no job type has that name (kind
// job_type) or runs in that pool (kind pool); Error(bad_input) for another kind.
void require_known_queue(db::Tx& tx, const QueueRef& queue);

// Pauses a known queue (admission holds its ready jobs); pausing it again
// keeps the first paused_at and takes the new reason.
void pause_queue(db::Tx& tx, const QueueRef& queue, const std::optional<std::string>& reason);

// Resumes a known queue; false when it was not paused.
bool resume_queue(db::Tx& tx, const QueueRef& queue);

// Every queue (job types, their pools, and any with a queue_state row), or the
// one `only` names: [{kind, name, ready, queued, started, paused, reason,
// paused_by, paused_at (RFC 3339 or ""), drained}], job types first, by name.
nlohmann::json list_queues(db::Tx& tx, const std::optional<QueueRef>& only = std::nullopt);

// The job type `name` with a schedule: Error(not_found) when there is no such
// type, Error(conflict) when it has no schedule.
JobType require_scheduled(db::Tx& tx, const std::string& name);

// Holds a schedule: the scheduler creates no run until resume_schedule (the
// missed slots then follow its catch-up policy).
void pause_schedule(db::Tx& tx, const std::string& job_type, const std::optional<std::string>& reason);

// false when it was not paused.
bool resume_schedule(db::Tx& tx, const std::string& job_type);

}  // namespace conveyor::model
