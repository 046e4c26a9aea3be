#include "scheduler.hpp"

#include <chrono>

#include "conveyor/error/error.hpp"
#include "conveyor/model/job_type.hpp"
#include "conveyor/model/schedule.hpp"
#include "conveyor/model/submission.hpp"

namespace conveyor::creation {
namespace {

using model::TimePoint;
using std::chrono::seconds;

constexpr db::Statement kTryLock{"creation_scheduler_try_lock", "SELECT pg_try_advisory_xact_lock($1)"};
constexpr db::Statement kRecordError{"creation_scheduler_record_error",
                                     "UPDATE conveyor.schedule_state SET last_error = $2 WHERE job_type = $1"};
constexpr db::Statement kNow{"creation_scheduler_now", model::kScheduleNowSql};

constexpr db::Statement kLockState{"creation_schedule_state_lock",
                                   "SELECT extract(epoch FROM last_slot)::bigint AS last_slot, paused, "
                                   "  extract(epoch FROM catchup_start_applied)::bigint AS catchup_start_applied "
                                   "FROM conveyor.schedule_state WHERE job_type = $1 FOR UPDATE"};

// The type's schedule as committed now, read once its state row is locked:
// `job-type apply` changes both in one transaction, and a pass that waited
// for that row lock must not act on the schedule it loaded before.
constexpr db::Statement kCurrentSchedule{"creation_schedule_current",
                                         "SELECT coalesce(schedule, '') FROM conveyor.job_type WHERE name = $1"};

constexpr db::Statement kInsertState{
    "creation_schedule_state_insert",
    "INSERT INTO conveyor.schedule_state (job_type, last_slot, catchup_start_applied) "
    "VALUES ($1, to_timestamp($2), to_timestamp($3)) ON CONFLICT (job_type) DO NOTHING"};

constexpr db::Statement kUpdateState{
    "creation_schedule_state_update",
    "UPDATE conveyor.schedule_state SET last_slot = to_timestamp($2), next_slot = to_timestamp($3), "
    "  last_job_id = coalesce($4, last_job_id), created_count = created_count + $5, "
    "  skipped_count = skipped_count + $6, last_error = $7, catchup_start_applied = to_timestamp($8), "
    "  updated_at = now() "
    "WHERE job_type = $1"};

constexpr db::Statement kPendingTriggers{
    "creation_pending_triggers",
    "SELECT job_id FROM conveyor.trigger_pending WHERE failed_at IS NULL ORDER BY created_at, job_id LIMIT $1"};
constexpr db::Statement kAnyTriggers{
    "creation_any_triggers", "SELECT EXISTS (SELECT 1 FROM conveyor.job_type WHERE jsonb_array_length(triggers) > 0)"};
constexpr db::Statement kLockPending{
    "creation_lock_pending_trigger",
    "SELECT 1 FROM conveyor.trigger_pending WHERE job_id = $1 AND failed_at IS NULL FOR UPDATE SKIP LOCKED"};
constexpr db::Statement kDonePending{"creation_done_pending_trigger",
                                     "DELETE FROM conveyor.trigger_pending WHERE job_id = $1"};
constexpr db::Statement kFailPending{
    "creation_fail_pending_trigger",
    "UPDATE conveyor.trigger_pending SET failed_at = now(), last_error = $2 WHERE job_id = $1"};

// The oldest open requests, unlocked: candidates. The first whose type the
// system handles now (a type outside job_types_list waits for its wave) and
// that no one else holds is done; only that row is locked, so other replicas
// and `schedule cancel-backfill` are kept waiting on one request, not twenty.
constexpr db::Statement kOpenBackfills{
    "creation_open_backfills",
    "SELECT id, job_type FROM conveyor.backfill_request WHERE state IN ('pending', 'running') ORDER BY id LIMIT 20"};
constexpr db::Statement kLockBackfill{
    "creation_lock_backfill",
    "SELECT id, job_type, policy, extract(epoch FROM from_slot)::bigint AS from_slot, "
    "  extract(epoch FROM to_slot)::bigint AS to_slot, extract(epoch FROM next_after)::bigint AS next_after "
    "FROM conveyor.backfill_request WHERE id = $1 AND state IN ('pending', 'running') FOR UPDATE SKIP LOCKED"};

constexpr db::Statement kAdvanceBackfill{
    "creation_advance_backfill",
    "UPDATE conveyor.backfill_request SET next_after = to_timestamp($2), created_count = created_count + $3, "
    "  skipped_count = skipped_count + $4, state = $5, last_error = $6, updated_at = now(), "
    "  finished_at = CASE WHEN $5 IN ('done', 'failed') THEN now() END "
    "WHERE id = $1"};

// SKIP LOCKED: a request another replica is working on is left to it.
constexpr db::Statement kFailBackfill{
    "creation_fail_backfill",
    "UPDATE conveyor.backfill_request SET state = 'failed', last_error = $2, updated_at = now(), finished_at = now() "
    "WHERE id = (SELECT id FROM conveyor.backfill_request WHERE id = $1 AND state IN ('pending', 'running') "
    "  FOR UPDATE SKIP LOCKED)"};

// A run of policy `none` is on time within this of its slot.
constexpr seconds kOnTime{60};

TimePoint at(std::int64_t epoch) { return TimePoint{seconds(epoch)}; }
std::int64_t epoch(TimePoint t) { return t.time_since_epoch().count(); }

// system_parameters.schedule_catchup_start[type]: "2026-01-01" or
// "2026-01-01T06:00:00Z" (UTC). A bad value is reported, not fatal.
std::optional<TimePoint> catchup_start(const model::SystemParameters& p, const std::string& type, std::string& error) {
  if (!p.schedule_catchup_start.is_object() || !p.schedule_catchup_start.contains(type)) return std::nullopt;
  const nlohmann::json v = p.schedule_catchup_start.at(type);
  if (v.is_null()) return std::nullopt;
  const std::string value = v.is_string() ? v.get<std::string>() : v.dump();
  try {
    if (!v.is_string()) throw Error(errc::bad_input, "not a string");
    return model::parse_utc_day_or_time(value);
  } catch (const Error&) {
    error =
        "schedule_catchup_start." + type + ": '" + value + "' is not a date like 2026-01-01 or 2026-01-01T06:00:00Z";
    return std::nullopt;
  }
}

// A catch-up start is inclusive, as `schedule backfill --from` is: its own
// slot is due, so the schedule resumes as if its last slot were just before.
TimePoint resume_at(TimePoint start) { return start - seconds(1); }

// Where a schedule's pass plans from, with its state row locked (inserted
// for a new schedule); nullopt when it is paused, or changed since the pass
// loaded it.
struct PassStart {
  TimePoint last;
  std::optional<std::int64_t> applied;  // the catch-up start the state records
  std::string error;                    // a bad catch-up start
};
std::optional<PassStart> lock_state(db::Tx& tx, const model::SystemParameters& p, const model::JobType& type,
                                    TimePoint now) {
  const auto state = tx.exec(kLockState, {type.name});
  const auto current = tx.exec(kCurrentSchedule, {type.name});
  if (current.empty() || current[0][0].as_string() != type.schedule) return std::nullopt;  // the next pass has it
  PassStart out{.last = now, .applied = std::nullopt, .error = {}};
  const auto start = catchup_start(p, type.name, out.error);
  if (start) out.applied = epoch(*start);
  if (state.empty()) {
    out.last = start ? resume_at(*start) : now;  // a new schedule starts now, or where the operator said
    tx.exec(kInsertState, {type.name, epoch(out.last), out.applied});
    return out;
  }
  out.last = at(state[0]["last_slot"].as_int());
  if (state[0]["paused"].as_bool()) return std::nullopt;
  const auto before = state[0]["catchup_start_applied"].opt<std::int64_t>();
  const bool new_start = start.has_value() && (!before.has_value() || *before != epoch(*start));
  if (new_start) out.last = resume_at(*start);  // the operator set a new start date
  else out.applied = before;
  return out;
}

ScheduleRun run_one(db::Tx& tx, const model::SystemParameters& p, const model::JobType& type, TimePoint now, int batch,
                    bool& more) {
  ScheduleRun run;
  run.job_type = type.name;
  const std::optional<PassStart> pass = lock_state(tx, p, type, now);
  if (!pass) return run;
  const TimePoint last = pass->last;
  const std::optional<std::int64_t> applied = pass->applied;
  const std::string& start_error = pass->error;
  const model::Schedule schedule = model::Schedule::parse(type.schedule);
  const auto policy = model::parse_catchup_policy(type.catchup_policy).value_or(model::CatchupPolicy::latest);
  const std::optional<seconds> window =
      type.catchup_window_s ? std::optional(seconds(*type.catchup_window_s)) : std::nullopt;
  const model::DuePlan plan =
      model::plan_due(schedule, last, now, policy, window, static_cast<std::size_t>(batch), kOnTime);
  std::optional<std::int64_t> last_job;
  run.skipped = plan.skipped;
  for (const TimePoint slot : plan.create) {
    try {
      const model::SubmitResult r = model::submit_job(tx, p, model::scheduled_request(type, slot));
      if (r.created) {
        ++run.created;
        last_job = r.job.id.value();
      }
    } catch (const UnprocessableError& e) {
      // Checked before any SQL ran: the transaction is still good.
      run.error = e.what();
      ++run.skipped;
    }
  }
  if (plan.collapsed) {
    try {
      const model::SubmitResult r = model::submit_job(tx, p, model::collapsed_request(type, *plan.collapsed));
      if (r.created) {
        ++run.created;
        last_job = r.job.id.value();
      }
    } catch (const UnprocessableError& e) {
      run.error = e.what();
      run.skipped += plan.collapsed->count;
    }
  }
  if (run.error.empty()) run.error = start_error;
  if (plan.create.size() >= static_cast<std::size_t>(batch)) more = true;
  tx.exec(kUpdateState, {type.name, epoch(plan.last_slot), epoch(schedule.next_after(now)), last_job, run.created,
                         run.skipped, run.error.empty() ? db::Param(nullptr) : db::Param(run.error), applied});
  return run;
}

}  // namespace

std::optional<ScheduleTick> run_schedules(db::Pool& pool, int batch) {
  return pool.transact([&](db::Tx& tx) -> std::optional<ScheduleTick> {
    if (!tx.exec(kTryLock, {kSchedulerLockKey})[0][0].as_bool()) return std::nullopt;
    ScheduleTick tick;
    const model::SystemParameters parameters = model::load_system_parameters(tx);
    if (!parameters.accepting_new_jobs) return tick;
    const TimePoint now = at(tx.exec(kNow)[0][0].as_int());
    for (const auto& type : model::load_job_types(tx)) {
      if (type.schedule.empty() || !type.enabled || !parameters.handles(type.name)) continue;
      ScheduleRun run;
      try {
        // Its own savepoint: a schedule the database refuses (a constraint,
        // a trigger, a lock timeout) is rolled back alone and the others go on.
        tx.savepoint([&](db::Tx& one) { run = run_one(one, parameters, type, now, batch, tick.more); });
      } catch (const Error& e) {
        if (e.code() == errc::unavailable) throw;  // the database is away: the whole pass again later
        run = ScheduleRun{};
        run.job_type = type.name;
        run.error = e.what();  // an unusable schedule: the others go on
        // Shown by `schedule list`; no row yet for a schedule that never ran.
        tx.exec(kRecordError, {type.name, run.error});
      }
      if (run.created > 0 || run.skipped > 0 || !run.error.empty()) tick.runs.push_back(std::move(run));
    }
    return tick;
  });
}

namespace {

// The first open backfill request of a handled type that no other replica
// holds, locked; nullopt when there is none. The result owns the row.
std::optional<db::Result> lock_open_backfill(db::Tx& tx, const model::SystemParameters& parameters) {
  for (const db::Row r : tx.exec(kOpenBackfills)) {
    if (!parameters.handles(r["job_type"].as_string())) continue;
    db::Result locked = tx.exec(kLockBackfill, {r["id"].as_int()});
    if (!locked.empty()) return locked;  // else another replica has it, or it was canceled meanwhile
  }
  return std::nullopt;
}

// One batch of the locked request's runs, from its cursor: one run of the
// whole range (collapse), else up to `batch` slots. Returns the new cursor;
// tick.state becomes done once the range is covered. A request refused
// before any SQL ran (the schema, an unusable schedule) ends failed with the
// reason, and the runs of this batch so far stay.
TimePoint create_backfill_runs(db::Tx& tx, const model::SystemParameters& parameters, const db::Row& request, int batch,
                               BackfillTick& tick) {
  const TimePoint from = at(request["from_slot"].as_int());
  const TimePoint to = at(request["to_slot"].as_int());
  TimePoint cursor = at(request["next_after"].as_int());
  try {
    const auto type = model::load_job_type(tx, tick.job_type);
    if (!type || type->schedule.empty())
      throw Error(errc::bad_input, "job type '" + tick.job_type + "' has no schedule now");
    const model::Schedule schedule = model::Schedule::parse(type->schedule);
    auto count = [&](bool created) {
      if (created) ++tick.created;
      else ++tick.skipped;
    };
    if (request["policy"].as_string() == "collapse") {
      const model::SlotRange range = model::slots_between(schedule, from, to);
      if (range.count > 0) count(model::submit_job(tx, parameters, model::collapsed_request(*type, range)).created);
      cursor = to;
    } else {
      for (int n = 0; n < batch; ++n) {
        const TimePoint slot = schedule.next_after(cursor);
        if (slot > to) break;
        count(model::submit_job(tx, parameters, model::scheduled_request(*type, slot)).created);
        cursor = slot;
      }
    }
    if (cursor >= to || schedule.next_after(cursor) > to) tick.state = "done";
  } catch (const Error& e) {
    if (e.code() != errc::bad_input) throw;
    tick.state = "failed";
    tick.error = e.what();
  }
  return cursor;
}

}  // namespace

std::optional<BackfillTick> run_backfills(db::Pool& pool, int batch) {
  // The request being worked on, known outside the transaction: a batch that
  // rolls back is reported against it rather than thrown, so the caller can
  // count its failures and go on with the schedules and triggers.
  std::optional<BackfillTick> current;
  try {
    return pool.transact([&](db::Tx& tx) -> std::optional<BackfillTick> {
      current.reset();
      const model::SystemParameters parameters = model::load_system_parameters(tx);
      if (!parameters.accepting_new_jobs) return std::nullopt;
      const std::optional<db::Result> locked = lock_open_backfill(tx, parameters);
      if (!locked) return std::nullopt;
      const db::Row request = (*locked)[0];
      BackfillTick tick;
      tick.request_id = request["id"].as_int();
      tick.job_type = request["job_type"].as_string();
      tick.state = "running";
      current = tick;
      const TimePoint cursor = create_backfill_runs(tx, parameters, request, batch, tick);
      tx.exec(kAdvanceBackfill, {tick.request_id, epoch(cursor), tick.created, tick.skipped, tick.state,
                                 tick.error.empty() ? db::Param(nullptr) : db::Param(tick.error)});
      return tick;
    });
  } catch (const Error& e) {
    // The database away is no fault of the request: the caller's pass fails.
    if (!current || e.code() == errc::unavailable) throw;
    current->state = "running";
    current->created = 0;
    current->skipped = 0;
    current->rolled_back = true;
    current->error = e.what();
    return current;
  }
}

bool fail_backfill(db::Pool& pool, std::int64_t request_id, const std::string& error) {
  return pool.transact([&](db::Tx& tx) { return tx.exec(kFailBackfill, {request_id, error}).affected_rows() > 0; });
}

namespace {

// One upstream job's triggers in one transaction: its downstream jobs, then
// its pending row done, or failed with the reason when a trigger is refused.
// The tick counts only what was committed.
void run_trigger(db::Pool& pool, std::int64_t upstream_id, TriggerTick& tick) {
  std::string error;
  int created = 0;
  pool.transact([&](db::Tx& tx) {
    error.clear();
    created = 0;
    if (tx.exec(kLockPending, {upstream_id}).empty()) return;  // another replica has it
    const model::SystemParameters parameters = model::load_system_parameters(tx);
    const model::Job upstream = model::get_job(tx, model::JobId(upstream_id));
    const auto type = model::load_job_type(tx, upstream.job_type);
    const nlohmann::json triggers = type ? type->triggers : nlohmann::json::array();
    for (std::size_t i = 0; i < triggers.size(); ++i) {
      const std::string downstream = triggers[i].value("job_type", "");
      if (!parameters.handles(downstream)) return;  // its wave has not come: keep the row for later
      try {
        if (model::submit_job(tx, parameters, model::triggered_request(upstream, triggers[i], i)).created) ++created;
      } catch (const FieldError& e) {  // refused before any SQL ran
        error += (error.empty() ? "" : "; ") + std::string(e.what());
      }
    }
    tx.exec(error.empty() ? kDonePending : kFailPending,
            error.empty() ? std::vector<db::Param>{upstream_id} : std::vector<db::Param>{upstream_id, error});
  });
  tick.created += created;
  if (!error.empty()) {
    ++tick.failed;
    tick.errors.push_back("job " + std::to_string(upstream_id) + ": " + error);
  }
}

}  // namespace

TriggerTick run_triggers(db::Pool& pool, int batch) {
  TriggerTick tick;
  std::vector<std::int64_t> pending;
  // The pending rows first, read alone (one round trip): a wake-up that
  // finds none (the poll, mostly) ends here, with no transaction and
  // without reading the parameters.
  for (const db::Row r : pool.exec_idempotent(kPendingTriggers, {batch})) pending.push_back(r[0].as_int());
  if (pending.empty()) return tick;
  const bool accepting =
      pool.transact([&](db::Tx& tx) { return model::load_system_parameters(tx).accepting_new_jobs; });
  if (!accepting) return tick;
  tick.more = static_cast<int>(pending.size()) >= batch;
  for (const auto upstream_id : pending) {
    try {
      run_trigger(pool, upstream_id, tick);
    } catch (const Error& e) {
      if (e.code() == errc::unavailable) throw;  // the database is away: the whole pass again later
      // The database refused this upstream's triggers (its transaction rolled
      // back): kept as failed with the reason, the other upstream jobs go on.
      const std::string error = e.what();
      pool.transact([&](db::Tx& tx) { tx.exec(kFailPending, {upstream_id, error}); });
      ++tick.failed;
      tick.errors.push_back("job " + std::to_string(upstream_id) + ": " + error);
    }
  }
  return tick;
}

bool any_triggers(db::Pool& pool) { return pool.exec_idempotent(kAnyTriggers)[0][0].as_bool(); }

}  // namespace conveyor::creation
