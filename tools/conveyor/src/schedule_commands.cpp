// `conveyor schedule list|pause|resume|backfill` (runbook 002's scheduler
// jobs; runbook 001's catch-up after a long downtime). The scheduler itself
// runs in conveyor-creation; these commands read and write the same rows
// (conveyor.schedule_state) and create runs with the same idempotency keys
// (schedule:<slot>), so a backfill and the scheduler never double a slot.
#include <ostream>

#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "conveyor/error/error.hpp"
#include "conveyor/model/job_type.hpp"
#include "conveyor/model/schedule.hpp"
#include "conveyor/model/submission.hpp"
#include "conveyor/model/system_parameters.hpp"

namespace conveyor::cli {

namespace {

using nlohmann::json;
using model::TimePoint;

constexpr const char* kScheduleUsage =
    "usage: conveyor schedule list\n"
    "       conveyor schedule pause TYPE [--reason TEXT]   the scheduler creates no run of TYPE\n"
    "       conveyor schedule resume TYPE                  runs again; missed slots follow its catch-up policy\n"
    "       conveyor schedule backfill TYPE --from TIME [--to TIME] [--apply] [--yes]\n"
    "                 create the runs of every slot in (FROM, TO] (TO: now); a dry run unless --apply\n"
    "TIME: 2026-11-20 or 2026-11-20T06:00:00Z (UTC).\n";

constexpr db::Statement kStates{
    "cli_schedule_states",
    "SELECT job_type, to_char(last_slot AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS last_slot, "
    "  coalesce(to_char(next_slot AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '') AS next_slot, "
    "  created_count, skipped_count, coalesce(last_error, '') AS last_error, paused, "
    "  coalesce(paused_reason, '') AS paused_reason FROM conveyor.schedule_state"};

constexpr db::Statement kNow{"cli_schedule_now", "SELECT extract(epoch FROM now())::bigint"};

constexpr db::Statement kPause{
    "cli_schedule_pause",
    "INSERT INTO conveyor.schedule_state (job_type, last_slot, paused, paused_reason, paused_by) "
    "VALUES ($1, now(), true, $2, conveyor.current_actor()) "
    "ON CONFLICT (job_type) DO UPDATE SET paused = true, paused_reason = EXCLUDED.paused_reason, "
    "  paused_by = EXCLUDED.paused_by, updated_at = now()"};

constexpr db::Statement kResume{
    "cli_schedule_resume",
    "UPDATE conveyor.schedule_state SET paused = false, paused_reason = NULL, paused_by = NULL, updated_at = now() "
    "WHERE job_type = $1 AND paused RETURNING 1"};

TimePoint time_option(const std::string& option, const std::string& value) {
  try {
    return model::parse_utc(value.size() == 10 ? value + "T00:00:00Z" : value);
  } catch (const Error&) {
    throw FieldError(option, option + ": '" + value + "' is not a UTC time like 2026-11-20 or 2026-11-20T06:00:00Z");
  }
}

model::JobType scheduled_type(db::Tx& tx, const std::string& name) {
  const auto t = model::load_job_type(tx, name);
  if (!t) throw Error(errc::not_found, "job type '" + name + "' does not exist (see `conveyor job-type list`)");
  if (t->schedule.empty()) throw Error(errc::conflict, "job type '" + name + "' has no schedule");
  return *t;
}

int list(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "schedule list", {});
  if (!o.positional.empty()) throw FieldError(o.positional[0], "schedule list: unexpected argument '" + o.positional[0] + "'");
  db::Pool pool(pool_options(ctx));
  const json out = pool.transact([](db::Tx& tx) {
    std::map<std::string, json> states;
    for (const db::Row r : tx.exec(kStates)) {
      states[r["job_type"].as_string()] = {{"last_slot", r["last_slot"].as_string()},
                                           {"next_slot", r["next_slot"].as_string()},
                                           {"created", r["created_count"].as_int()},
                                           {"skipped", r["skipped_count"].as_int()},
                                           {"last_error", r["last_error"].as_string()},
                                           {"paused", r["paused"].as_bool()},
                                           {"paused_reason", r["paused_reason"].as_string()}};
    }
    json rows = json::array();
    for (const auto& t : model::load_job_types(tx)) {
      if (t.schedule.empty()) continue;
      json row = {{"job_type", t.name}, {"schedule", t.schedule}, {"catchup_policy", t.catchup_policy},
                  {"catchup_window_s", t.catchup_window_s ? json(*t.catchup_window_s) : json()},
                  {"enabled", t.enabled}};
      const auto it = states.find(t.name);
      row["state"] = it == states.end() ? json() : it->second;
      rows.push_back(row);
    }
    return rows;
  });
  if (ctx.json) {
    ctx.out << out.dump() << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& r : out) {
    const json& st = r["state"];
    std::string status = !r["enabled"].get<bool>() ? "disabled" : st.is_null() ? "not started" : "active";
    if (!st.is_null() && st["paused"].get<bool>()) {
      status = "paused" + (st["paused_reason"].get<std::string>().empty() ? "" : " (" + st["paused_reason"].get<std::string>() + ")");
    }
    if (!st.is_null() && !st["last_error"].get<std::string>().empty()) status += "; error: " + st["last_error"].get<std::string>();
    rows.push_back({r["job_type"].get<std::string>(), r["schedule"].get<std::string>(),
                    r["catchup_policy"].get<std::string>() +
                        (r["catchup_window_s"].is_null() ? "" : " (" + std::to_string(r["catchup_window_s"].get<int>()) + "s)"),
                    st.is_null() ? "N/A" : st["last_slot"].get<std::string>(),
                    st.is_null() || st["next_slot"].get<std::string>().empty() ? "N/A" : st["next_slot"].get<std::string>(),
                    st.is_null() ? "0" : std::to_string(st["created"].get<std::int64_t>()),
                    st.is_null() ? "0" : std::to_string(st["skipped"].get<std::int64_t>()), status});
  }
  print_table(ctx.out, {"TYPE", "SPEC", "CATCH-UP", "PREV", "NEXT", "CREATED", "SKIPPED", "STATUS"}, rows);
  return kExitOk;
}

int pause(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "schedule pause", {"--reason"});
  if (o.positional.size() != 1) throw FieldError("TYPE", "schedule pause: one job TYPE is required\n" + std::string(kScheduleUsage));
  db::Pool pool(pool_options(ctx));
  pool.transact([&](db::Tx& tx) {
    scheduled_type(tx, o.positional[0]);
    tx.exec(kPause, {o.positional[0], o.get("--reason")});
  });
  ctx.out << "schedule " << o.positional[0] << " paused: no run is created until `conveyor schedule resume "
          << o.positional[0] << "`\n";
  return kExitOk;
}

int resume(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "schedule resume", {});
  if (o.positional.size() != 1) throw FieldError("TYPE", "schedule resume: one job TYPE is required\n" + std::string(kScheduleUsage));
  db::Pool pool(pool_options(ctx));
  const bool resumed = pool.transact([&](db::Tx& tx) {
    scheduled_type(tx, o.positional[0]);
    return !tx.exec(kResume, {o.positional[0]}).empty();
  });
  ctx.out << "schedule " << o.positional[0]
          << (resumed ? " resumed: the slots it missed follow its catch-up policy\n" : " was not paused\n");
  return kExitOk;
}

int backfill(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "schedule backfill", {"--from", "--to"}, {"--apply", "--yes"});
  if (o.positional.size() != 1) throw FieldError("TYPE", "schedule backfill: one job TYPE is required\n" + std::string(kScheduleUsage));
  const auto from_text = o.get("--from");
  if (!from_text) throw FieldError("--from", "schedule backfill: --from TIME is required");
  const TimePoint from = time_option("--from", *from_text);
  constexpr std::size_t kMaxSlots = 10'000;
  db::Pool pool(pool_options(ctx));
  struct Plan {
    model::JobType type;
    std::vector<TimePoint> slots;
    TimePoint to;
  };
  const Plan plan = pool.transact([&](db::Tx& tx) {
    Plan p{scheduled_type(tx, o.positional[0]), {}, TimePoint{}};
    const TimePoint now{std::chrono::seconds(tx.exec(kNow)[0][0].as_int())};
    p.to = o.get("--to") ? time_option("--to", *o.get("--to")) : now;
    if (p.to > now) throw FieldError("--to", "--to: the future is the scheduler's, not a backfill's");
    if (p.to <= from) throw FieldError("--to", "--to must be after --from");
    const model::Schedule schedule = model::Schedule::parse(p.type.schedule);
    for (TimePoint t = schedule.next_after(from - std::chrono::seconds(1)); t <= p.to; t = schedule.next_after(t)) {
      p.slots.push_back(t);
      if (p.slots.size() > kMaxSlots) {
        throw FieldError("--from", "schedule backfill: more than " + std::to_string(kMaxSlots) +
                                       " slots in that range: backfill a shorter one at a time");
      }
    }
    return p;
  });
  std::ostream& talk = ctx.json ? ctx.err : ctx.out;
  talk << plan.slots.size() << " slot(s) of " << plan.type.name << " (" << plan.type.schedule << ") in ["
       << model::format_utc(from) << ", " << model::format_utc(plan.to) << "]";
  if (!plan.slots.empty()) talk << ": first " << model::format_utc(plan.slots.front()) << ", last " << model::format_utc(plan.slots.back());
  talk << "\n";
  if (plan.slots.empty() || !o.has("--apply")) {
    if (!plan.slots.empty()) talk << "dry run: nothing created; add --apply to create the runs not created yet\n";
    if (ctx.json) ctx.out << json{{"slots", plan.slots.size()}, {"created", 0}, {"applied", false}}.dump() << "\n";
    return kExitOk;
  }
  if (!o.has("--yes") && !confirm(ctx, talk, "create the runs of " + std::to_string(plan.slots.size()) + " slot(s)?")) {
    talk << "not applied: nothing created\n";
    return kExitFailed;
  }
  const int created = pool.transact([&](db::Tx& tx) {
    const model::SystemParameters p = model::load_system_parameters(tx);
    int n = 0;
    for (const TimePoint slot : plan.slots) {
      if (model::submit_job(tx, p, model::scheduled_request(plan.type, slot)).created) ++n;
    }
    return n;
  });
  if (ctx.json) ctx.out << json{{"slots", plan.slots.size()}, {"created", created}, {"applied", true}}.dump() << "\n";
  talk << "created " << created << " run(s); " << plan.slots.size() - static_cast<std::size_t>(created)
       << " slot(s) already had one\n";
  return kExitOk;
}

}  // namespace

int schedule_command(Context& ctx, const std::vector<std::string>& args) {
  return dispatch(ctx, args, "schedule", kScheduleUsage,
                  {{"list", list}, {"ls", list}, {"pause", pause}, {"resume", resume}, {"backfill", backfill}});
}

}  // namespace conveyor::cli
