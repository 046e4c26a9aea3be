// `conveyor schedule list|pause|resume|backfill|backfills|cancel-backfill`
// (runbook 002's scheduler jobs; runbook 001's catch-up after a long
// downtime). The scheduler itself runs in conveyor-creation; these commands
// read and write its rows (conveyor.schedule_state, conveyor.backfill_request).
// A backfill is a request that conveyor-creation works through in batches,
// with the schedule's idempotency keys (schedule:<slot>), so a backfill and
// the scheduler never double a slot.
#include <ostream>

#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "conveyor/error/error.hpp"
#include "conveyor/model/job_type.hpp"
#include "conveyor/model/queue.hpp"
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
    "       conveyor schedule backfill TYPE --from TIME [--to TIME] [--policy all|collapse] [--apply] [--yes]\n"
    "                 the runs of every slot in [FROM, TO] (TO: now), or with collapse one run for them all;\n"
    "                 a dry run unless --apply, which requests them: conveyor-creation creates them in batches\n"
    "       conveyor schedule backfills [--all]             the open backfill requests (--all: the finished too)\n"
    "       conveyor schedule cancel-backfill ID            no more runs of that request are created\n"
    "TIME: 2026-11-20 or 2026-11-20T06:00:00Z (UTC).\n";

constexpr db::Statement kStates{
    "cli_schedule_states",
    "SELECT job_type, to_char(last_slot AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS last_slot, "
    "  coalesce(to_char(next_slot AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '') AS next_slot, "
    "  created_count, skipped_count, coalesce(last_error, '') AS last_error, paused, "
    "  coalesce(paused_reason, '') AS paused_reason FROM conveyor.schedule_state"};

constexpr db::Statement kNow{"cli_schedule_now", model::kScheduleNowSql};

constexpr db::Statement kInsertBackfill{
    "cli_backfill_insert",
    "INSERT INTO conveyor.backfill_request (job_type, from_slot, to_slot, policy, next_after, slot_count) "
    "VALUES ($1, $2::timestamptz, $3::timestamptz, $4, $5::timestamptz, $6) RETURNING id"};

// $1: every request, or only the open ones; newest first.
constexpr db::Statement kBackfills{
    "cli_backfills",
    "SELECT id, job_type, policy, slot_count, created_count, skipped_count, state, coalesce(last_error, '') AS last_error, "
    "  requested_by, to_char(from_slot AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS from_slot, "
    "  to_char(to_slot AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS to_slot, "
    "  to_char(next_after AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS next_after, "
    "  to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS created_at "
    "FROM conveyor.backfill_request WHERE $1 OR state IN ('pending', 'running') ORDER BY id DESC LIMIT 200"};

constexpr db::Statement kCancelBackfill{
    "cli_backfill_cancel",
    "UPDATE conveyor.backfill_request SET state = 'canceled', canceled_by = conveyor.current_actor(), "
    "  finished_at = now(), updated_at = now() "
    "WHERE id = $1 AND state IN ('pending', 'running') RETURNING created_count, slot_count"};

constexpr db::Statement kBackfillState{"cli_backfill_state",
                                       "SELECT state FROM conveyor.backfill_request WHERE id = $1"};

// Shared with the console (libs/core model/queue.hpp).
model::JobType scheduled_type(db::Tx& tx, const std::string& name) { return model::require_scheduled(tx, name); }

json backfill_rows(db::Tx& tx, bool all);
void print_backfills(std::ostream& out, const json& rows);

// Each scheduled job type with its schedule state and its open backfills.
json schedule_rows(db::Tx& tx, const json& open_backfills) {
  std::map<std::string, json> states;
  for (const db::Row r : tx.exec(kStates)) {
    states[r["job_type"].as_string()] = {
        {"last_slot", r["last_slot"].as_string()},        {"next_slot", r["next_slot"].as_string()},
        {"created", r["created_count"].as_int()},         {"skipped", r["skipped_count"].as_int()},
        {"last_error", r["last_error"].as_string()},      {"paused", r["paused"].as_bool()},
        {"paused_reason", r["paused_reason"].as_string()}};
  }
  json rows = json::array();
  for (const auto& t : model::load_job_types(tx)) {
    if (t.schedule.empty()) continue;
    json row = {{"job_type", t.name},
                {"schedule", t.schedule},
                {"catchup_policy", t.catchup_policy},
                {"catchup_window_s", t.catchup_window_s ? json(*t.catchup_window_s) : json()},
                {"enabled", t.enabled}};
    const auto it = states.find(t.name);
    row["state"] = it == states.end() ? json() : it->second;
    row["backfills"] = json::array();  // its open backfill requests
    for (const auto& b : open_backfills) {
      if (b["job_type"] == t.name) row["backfills"].push_back(b);
    }
    rows.push_back(row);
  }
  return rows;
}

// "active", "disabled", "not started" or "paused (reason)", and its last error.
std::string schedule_status(const json& r) {
  const json& st = r["state"];
  std::string status = !r["enabled"].get<bool>() ? "disabled" : st.is_null() ? "not started" : "active";
  if (!st.is_null() && st["paused"].get<bool>()) {
    status =
        "paused" +
        (st["paused_reason"].get<std::string>().empty() ? "" : " (" + st["paused_reason"].get<std::string>() + ")");
  }
  if (!st.is_null() && !st["last_error"].get<std::string>().empty())
    status += "; error: " + st["last_error"].get<std::string>();
  return status;
}

void print_schedules(std::ostream& out, const json& schedules) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& r : schedules) {
    const json& st = r["state"];
    rows.push_back(
        {r["job_type"].get<std::string>(), r["schedule"].get<std::string>(),
         r["catchup_policy"].get<std::string>() +
             (r["catchup_window_s"].is_null() ? "" : " (" + std::to_string(r["catchup_window_s"].get<int>()) + "s)"),
         st.is_null() ? "N/A" : display_time(st["last_slot"].get<std::string>()),
         st.is_null() || st["next_slot"].get<std::string>().empty() ? "N/A"
                                                                    : display_time(st["next_slot"].get<std::string>()),
         st.is_null() ? "0" : std::to_string(st["created"].get<std::int64_t>()),
         st.is_null() ? "0" : std::to_string(st["skipped"].get<std::int64_t>()), schedule_status(r)});
  }
  print_table(out, {"TYPE", "SPEC", "CATCH-UP", "PREV", "NEXT", "CREATED", "SKIPPED", "STATUS"}, rows);
}

int list(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "schedule list", {});
  if (!o.positional.empty())
    throw FieldError(o.positional[0], "schedule list: unexpected argument '" + o.positional[0] + "'");
  db::Pool pool(pool_options(ctx));
  json open_backfills;
  const json out = pool.transact([&](db::Tx& tx) {
    open_backfills = backfill_rows(tx, false);
    return schedule_rows(tx, open_backfills);
  });
  if (ctx.json) {
    ctx.out << out.dump() << "\n";
    return kExitOk;
  }
  print_schedules(ctx.out, out);
  if (!open_backfills.empty()) {
    ctx.out << "\n";
    print_backfills(ctx.out, open_backfills);
  }
  return kExitOk;
}

int pause(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "schedule pause", {"--reason"});
  if (o.positional.size() != 1)
    throw FieldError("TYPE", "schedule pause: one job TYPE is required\n" + std::string(kScheduleUsage));
  db::Pool pool(pool_options(ctx));
  pool.transact([&](db::Tx& tx) { model::pause_schedule(tx, o.positional[0], o.get("--reason")); });
  ctx.out << "schedule " << o.positional[0] << " paused: no run is created until `conveyor schedule resume "
          << o.positional[0] << "`\n";
  return kExitOk;
}

int resume(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "schedule resume", {});
  if (o.positional.size() != 1)
    throw FieldError("TYPE", "schedule resume: one job TYPE is required\n" + std::string(kScheduleUsage));
  db::Pool pool(pool_options(ctx));
  const bool resumed = pool.transact([&](db::Tx& tx) { return model::resume_schedule(tx, o.positional[0]); });
  ctx.out << "schedule " << o.positional[0]
          << (resumed ? " resumed: the slots it missed follow its catch-up policy\n" : " was not paused\n");
  return kExitOk;
}

std::string backfill_policy(const Options& o) {
  const std::string policy = o.get("--policy").value_or("all");
  if (policy != "all" && policy != "collapse") {
    throw FieldError("--policy",
                     "--policy: '" + policy + "' is not all (a run per slot) or collapse (one run for the range)");
  }
  return policy;
}

// What a backfill would request: the type's slots in [from, to].
struct BackfillPlan {
  model::JobType type;
  model::SlotRange slots;
  TimePoint to;
};

// Counted, not kept: a request may cover any number of slots (conveyor-creation works in batches).
BackfillPlan plan_backfill(db::Pool& pool, const Options& o, TimePoint from) {
  return pool.transact([&](db::Tx& tx) {
    BackfillPlan p{scheduled_type(tx, o.positional[0]), {}, TimePoint{}};
    const TimePoint now{std::chrono::seconds(tx.exec(kNow)[0][0].as_int())};
    p.to = o.get("--to") ? time_option("--to", *o.get("--to")) : now;
    if (p.to > now) throw FieldError("--to", "--to: the future is the scheduler's, not a backfill's");
    if (p.to <= from) {
      if (!o.get("--to")) throw FieldError("--from", "--from: the future is the scheduler's, not a backfill's");
      throw FieldError("--to", "--to must be after --from");
    }
    p.slots = model::slots_between(model::Schedule::parse(p.type.schedule), from, p.to);
    return p;
  });
}

void print_backfill_plan(std::ostream& talk, const BackfillPlan& plan, TimePoint from, const std::string& policy) {
  const std::int64_t slots = plan.slots.count;
  talk << slots << " slot(s) of " << plan.type.name << " (" << plan.type.schedule << ") in [" << model::format_utc(from)
       << ", " << model::format_utc(plan.to) << "]";
  if (slots > 0)
    talk << ": first " << model::format_utc(plan.slots.first) << ", last " << model::format_utc(plan.slots.last);
  talk << "\n";
  if (slots > 0 && policy == "collapse") {
    talk << "collapse: one run for them all, key " << *model::collapsed_request(plan.type, plan.slots).idempotency_key
         << "\n";
  }
}

int backfill(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "schedule backfill", {"--from", "--to", "--policy"}, {"--apply", "--yes"});
  if (o.positional.size() != 1)
    throw FieldError("TYPE", "schedule backfill: one job TYPE is required\n" + std::string(kScheduleUsage));
  const auto from_text = o.get("--from");
  if (!from_text) throw FieldError("--from", "schedule backfill: --from TIME is required");
  const TimePoint from = time_option("--from", *from_text);
  const std::string policy = backfill_policy(o);
  db::Pool pool(pool_options(ctx));
  const BackfillPlan plan = plan_backfill(pool, o, from);
  const std::int64_t slots = plan.slots.count;
  std::ostream& talk = ctx.json ? ctx.err : ctx.out;
  print_backfill_plan(talk, plan, from, policy);
  if (slots == 0 || !o.has("--apply")) {
    if (slots > 0)
      talk << "dry run: nothing requested; add --apply to have conveyor-creation create the runs not created yet\n";
    if (ctx.json)
      ctx.out << json{{"slots", slots}, {"policy", policy}, {"request", nullptr}, {"applied", false}}.dump() << "\n";
    return kExitOk;
  }
  const std::string what = policy == "collapse" ? "one run for " + std::to_string(slots) + " slot(s)"
                                                : "the runs of " + std::to_string(slots) + " slot(s)";
  if (!o.has("--yes") && !confirm(ctx, talk, "request " + what + "?")) {
    talk << "not applied: nothing requested\n";
    return kExitFailed;
  }
  const std::int64_t id = pool.transact([&](db::Tx& tx) {
    return tx
        .exec(kInsertBackfill, {plan.type.name, model::format_utc(from), model::format_utc(plan.to), policy,
                                model::format_utc(from - std::chrono::seconds(1)), slots})[0][0]
        .as_int();
  });
  if (ctx.json)
    ctx.out << json{{"slots", slots}, {"policy", policy}, {"request", id}, {"applied", true}}.dump() << "\n";
  talk << "backfill " << id << " requested: conveyor-creation creates " << what
       << " in batches (a slot that has a run is skipped); follow it with `conveyor schedule backfills`, stop it with "
          "`conveyor schedule cancel-backfill "
       << id << "`\n";
  return kExitOk;
}

json backfill_rows(db::Tx& tx, bool all) {
  json rows = json::array();
  for (const db::Row r : tx.exec(kBackfills, {all})) {
    rows.push_back({{"id", r["id"].as_int()},
                    {"job_type", r["job_type"].as_string()},
                    {"from", r["from_slot"].as_string()},
                    {"to", r["to_slot"].as_string()},
                    {"policy", r["policy"].as_string()},
                    {"slots", r["slot_count"].as_int()},
                    {"created", r["created_count"].as_int()},
                    {"skipped", r["skipped_count"].as_int()},
                    {"next_after", r["next_after"].as_string()},
                    {"state", r["state"].as_string()},
                    {"last_error", r["last_error"].as_string()},
                    {"requested_by", r["requested_by"].as_string()},
                    {"requested_at", r["created_at"].as_string()}});
  }
  return rows;
}

void print_backfills(std::ostream& out, const json& rows) {
  std::vector<std::vector<std::string>> table;
  for (const auto& r : rows) {
    const std::int64_t done = r["created"].get<std::int64_t>() + r["skipped"].get<std::int64_t>();
    std::string state = r["state"].get<std::string>();
    if (!r["last_error"].get<std::string>().empty()) state += ": " + r["last_error"].get<std::string>();
    table.push_back({std::to_string(r["id"].get<std::int64_t>()), r["job_type"].get<std::string>(),
                     display_time(r["from"].get<std::string>()) + " .. " + display_time(r["to"].get<std::string>()),
                     r["policy"].get<std::string>(),
                     r["policy"] == "collapse"
                         ? std::to_string(r["slots"].get<std::int64_t>()) + " slot(s) in 1 run"
                         : std::to_string(done) + "/" + std::to_string(r["slots"].get<std::int64_t>()),
                     std::to_string(r["created"].get<std::int64_t>()), std::to_string(r["skipped"].get<std::int64_t>()),
                     state, r["requested_by"].get<std::string>()});
  }
  print_table(out, {"BACKFILL", "TYPE", "RANGE", "POLICY", "PROGRESS", "CREATED", "SKIPPED", "STATE", "BY"}, table);
}

int backfills(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "schedule backfills", {}, {"--all"});
  if (!o.positional.empty())
    throw FieldError(o.positional[0], "schedule backfills: unexpected argument '" + o.positional[0] + "'");
  db::Pool pool(pool_options(ctx));
  const json rows = pool.transact([&](db::Tx& tx) { return backfill_rows(tx, o.has("--all")); });
  if (ctx.json) {
    ctx.out << rows.dump() << "\n";
    return kExitOk;
  }
  if (rows.empty()) {
    ctx.out << (o.has("--all") ? "no backfill requests\n"
                               : "no open backfill requests (--all: the finished ones too)\n");
    return kExitOk;
  }
  print_backfills(ctx.out, rows);
  return kExitOk;
}

int cancel_backfill(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "schedule cancel-backfill", {});
  if (o.positional.size() != 1)
    throw FieldError("ID", "schedule cancel-backfill: one backfill ID is required\n" + std::string(kScheduleUsage));
  std::int64_t id = 0;
  try {
    std::size_t used = 0;
    id = std::stoll(o.positional[0], &used);
    if (used != o.positional[0].size() || id <= 0) throw std::invalid_argument("id");
  } catch (const std::exception&) {
    throw FieldError("ID", "schedule cancel-backfill: '" + o.positional[0] +
                               "' is not a backfill id (see `conveyor schedule backfills`)");
  }
  db::Pool pool(pool_options(ctx));
  // Waits for a batch in flight (it holds the row): what it created stays.
  const json done = pool.transact([&](db::Tx& tx) -> json {
    const auto r = tx.exec(kCancelBackfill, {id});
    if (!r.empty()) return {{"created", r[0]["created_count"].as_int()}, {"slots", r[0]["slot_count"].as_int()}};
    const auto state = tx.exec(kBackfillState, {id});
    if (state.empty())
      throw Error(errc::not_found,
                  "backfill " + std::to_string(id) + " does not exist (see `conveyor schedule backfills --all`)");
    throw Error(errc::conflict,
                "backfill " + std::to_string(id) + " is " + state[0][0].as_string() + ": nothing to cancel");
  });
  if (ctx.json) {
    ctx.out << json{{"id", id}, {"state", "canceled"}, {"created", done["created"]}}.dump() << "\n";
    return kExitOk;
  }
  ctx.out << "backfill " << id << " canceled: no more runs are created; the " << done["created"].get<std::int64_t>()
          << " run(s) it created stay\n";
  return kExitOk;
}

}  // namespace

int schedule_command(Context& ctx, const std::vector<std::string>& args) {
  return dispatch(ctx, args, "schedule", kScheduleUsage,
                  {{"list", list},
                   {"ls", list},
                   {"pause", pause},
                   {"resume", resume},
                   {"backfill", backfill},
                   {"backfills", backfills},
                   {"cancel-backfill", cancel_backfill}});
}

}  // namespace conveyor::cli
