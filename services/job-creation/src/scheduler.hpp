#pragma once
// The background work of conveyor-creation (DESIGN §1): periodic schedules
// with catch-up, and triggers (a done job of type A creates its type's
// downstream jobs). Both read their work from PostgreSQL, so a lost event or
// a restart loses nothing; job events only wake the loop.
//
// Schedules: one pass over the enabled job types with a `schedule`, under a
// transaction-level advisory lock ("cvsched"), so one replica at a time
// creates runs; each run carries the idempotency key schedule:<slot>, so
// even two passes cannot double one. Nothing is created while
// accepting_new_jobs is false, for a type outside job_types_list (runbook
// 001's waves) or for a paused schedule; conveyor.schedule_state.last_slot
// stays, so the runs missed meanwhile follow the type's catch-up policy once
// it may run again. Setting system_parameters.schedule_catchup_start[type]
// to a new date starts the schedule again from that date. Each schedule runs
// in a savepoint of the pass: one the database refuses (a constraint, a
// trigger, a lock timeout) is rolled back alone, its error kept in
// schedule_state.last_error and returned; the others go on. Only the database
// being away (errc::unavailable) ends the pass.
//
// Triggers: conveyor.trigger_pending rows (written with the upstream's move
// to done), oldest first, each in its own transaction with SKIP LOCKED, so
// replicas share them. A downstream type outside job_types_list (or the
// system paused) leaves the row for later; a downstream job that cannot be
// created (its schema refuses the params, or the database refuses the
// insert: that transaction is rolled back and the row failed in another)
// marks the row failed with the reason: a dead letter an operator can see and
// retry (failed_at = NULL); the next upstream job goes on.
//
// Backfills (issue 13, item 11): conveyor.backfill_request rows, written by
// `conveyor schedule backfill --apply`. Each call takes the oldest open
// request of a type the system handles now (FOR UPDATE SKIP LOCKED, so
// replicas share them) and does one batch of it in one transaction: policy
// `all` creates the runs of up to `batch` slots after its cursor with the
// schedule's keys (schedule:<slot>; a slot that has a run is counted as
// skipped) and moves the cursor; policy `collapse` creates the one run of the
// whole range. A crash loses at most the batch in flight, which was not
// committed: the next call resumes after the last committed slot. A run the
// type's schema refuses fails the request (last_error), with what it created.
// Any other error in a batch (a conflict, a database error) rolls the batch
// back and is returned as rolled_back, not thrown, so the schedules and
// triggers of the pass still run; the caller fails the request with
// fail_backfill after kBackfillMaxFailures such batches in a row. Only the
// request worked on is locked: candidates are read unlocked, then each is
// locked by id with SKIP LOCKED until one is free.
//
// Stateless functions; thread-safe.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "conveyor/db/db.hpp"
#include "conveyor/model/system_parameters.hpp"

namespace conveyor::creation {

inline constexpr std::int64_t kSchedulerLockKey = 0x63767363686564;  // "cvsched"

struct ScheduleRun {
  std::string job_type;
  int created = 0;
  std::int64_t skipped = 0;
  std::string error;  // why a run could not be created, or the schedule is unusable
};

struct ScheduleTick {
  std::vector<ScheduleRun> runs;  // types that created, skipped or failed something
  bool more = false;              // a type filled its batch: call again at once
};

// nullopt: another replica holds the lock this time.
// Both read conveyor.system_parameters in their own transaction rather than
// a service's snapshot, so a pause or a new wave acts on the very next pass.
std::optional<ScheduleTick> run_schedules(db::Pool& pool, int batch);

struct BackfillTick {
  std::int64_t request_id = 0;
  std::string job_type;
  int created = 0;
  std::int64_t skipped = 0;  // slots that already had a run
  std::string state;         // the request's state after this batch
  std::string error;         // why it failed
  bool rolled_back = false;  // the batch failed and was rolled back: nothing of it committed
};

// Batches of one request that may fail in a row before it is marked failed.
inline constexpr int kBackfillMaxFailures = 5;

// nullopt: no open request (or the system is not accepting new jobs).
// Throws only when the database is unavailable or no request was taken yet.
std::optional<BackfillTick> run_backfills(db::Pool& pool, int batch);

// Marks an open request failed with `error`, in its own transaction; false
// when it is no longer open (finished, canceled) or another replica holds it.
bool fail_backfill(db::Pool& pool, std::int64_t request_id, const std::string& error);

struct TriggerTick {
  int created = 0;  // downstream jobs created
  int failed = 0;   // pending rows marked failed
  std::vector<std::string> errors;
  bool more = false;
};

TriggerTick run_triggers(db::Pool& pool, int batch);

// Whether any job type has triggers: only then can a done job leave a
// pending trigger (conveyor.record_trigger_pending), and only then does
// creation listen for them. One read.
bool any_triggers(db::Pool& pool);

}  // namespace conveyor::creation
