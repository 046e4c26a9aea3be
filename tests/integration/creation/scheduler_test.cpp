// conveyor-creation's background work as a real process: periodic schedules
// with their catch-up policies, and triggers (a done job creates its type's
// downstream jobs). Only conveyor-creation runs; jobs are moved by SQL, as a
// stage (or an operator) would, and every assertion reads PostgreSQL.
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <thread>
#include <utility>

#include "conveyor/db/db.hpp"
#include "conveyor/http/client.hpp"
#include "conveyor/testing/stack.hpp"

namespace {

namespace fs = std::filesystem;
using conveyor::testing::Stack;
using conveyor::testing::wait_until;
using nlohmann::json;
using namespace std::chrono_literals;

json type(const std::string& name, json extra = json::object()) {
  json t = {{"name", name},
            {"command", {"conveyor-example-task", "sleep", "0"}},
            {"params_schema", {{"type", "object"}}},
            {"sinks", json::array()}};
  for (const auto& [k, v] : extra.items()) t[k] = v;
  return t;
}

class Scheduler : public ::testing::Test {
 protected:
  Stack::Options options(const json& types, const std::string& setup_sql = "") {
    file_ = fs::temp_directory_path() / (conveyor::testing::unique_name("sched-types") + ".json");
    std::ofstream(file_) << json{{"job_types", types}}.dump(2);
    Stack::Options o;
    o.workers = 0;
    o.services = {"creation"};
    o.job_types_file = file_;
    o.setup_sql = setup_sql;
    o.env = {{"CONVEYOR_POLL_INTERVAL_MS", "200"}};
    return o;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove(file_, ec);
  }
  // Waits until conveyor-creation has made `n` more passes over schedules
  // and triggers: whatever it would do with the state as it is now, it did.
  static void wait_passes(Stack& s, int n) {
    auto passes = [&] {
      const auto r = conveyor::http::http_request(
          "GET", "http://127.0.0.1:" + std::to_string(s.port("creation")) + "/metrics", "", {}, 2s);
      const std::string key = "conveyor_creation_passes_total ";
      const auto at = r.body.find("\n" + key);
      return at == std::string::npos ? 0.0 : std::stod(r.body.substr(at + 1 + key.size()));
    };
    const double start = passes();
    ASSERT_TRUE(wait_until([&] { return passes() >= start + n; }, 20s));
  }
  // A backfill request's column, by id.
  static std::string backfill(Stack& s, const std::string& id, const std::string& column) {
    return s.db().query_value("SELECT " + column + " FROM conveyor.backfill_request WHERE id = " + id);
  }
  // The full hour `hours_ago` before the current one, as the CLI takes it.
  static std::string hour(Stack& s, int hours_ago) {
    return s.db().query_value("SELECT to_char(date_trunc('hour', now() AT TIME ZONE 'UTC') - interval '" +
                              std::to_string(hours_ago) + " hours', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')");
  }
  // The full hours `from_ago` and `to_ago` before the current one, read in one
  // query, so the hour cannot turn between them.
  static std::pair<std::string, std::string> hours(Stack& s, int from_ago, int to_ago) {
    const auto row = s.db().query(
        "SELECT to_char(h - make_interval(hours => " + std::to_string(from_ago) +
        "), f), "
        "to_char(h - make_interval(hours => " +
        std::to_string(to_ago) +
        "), f) "
        "FROM (SELECT date_trunc('hour', now() AT TIME ZONE 'UTC') AS h, 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"' AS f) x");
    return {row.at(0).at(0), row.at(0).at(1)};
  }
  static int count(Stack& s, const std::string& where) {
    return std::stoi(s.db().query_value("SELECT count(*) FROM conveyor.job WHERE " + where));
  }
  fs::path file_;
};

// Holds a backfill request's row lock (SELECT ... FOR UPDATE) in a test
// transaction on its own connection until release(): conveyor-creation's
// SKIP LOCKED leaves the request alone meanwhile, so its progress is frozen
// without relying on timing. Taking the lock waits for a batch in flight.
class RowHold {
 public:
  RowHold(const std::string& url, const std::string& id) {
    std::promise<void> held;
    auto held_future = held.get_future();
    thread_ = std::thread([this, url, id, held = std::move(held)]() mutable {
      conveyor::db::Session session(url, "scheduler-test-hold");
      bool told = false;
      session.transact([&](conveyor::db::Tx& tx) {
        tx.exec_script("SELECT 1 FROM conveyor.backfill_request WHERE id = " + id + " FOR UPDATE");
        if (!told) held.set_value();
        told = true;
        release_.get_future().wait();
      });
    });
    held_future.wait();
  }
  RowHold(const RowHold&) = delete;
  RowHold& operator=(const RowHold&) = delete;
  ~RowHold() { release(); }
  void release() {
    if (!thread_.joinable()) return;
    release_.set_value();
    thread_.join();
  }

 private:
  std::promise<void> release_;
  std::thread thread_;
};

TEST_F(Scheduler, AnEveryScheduleCreatesOneRunPerSlotWithItsSlotInTheKeyAndParams) {
  json props = {{"scheduled_for", {{"type", "string"}}}};
  Stack stack(options(json::array(
      {type("tick", {{"schedule", "@every 1s"}, {"params_schema", {{"type", "object"}, {"properties", props}}}})})));
  ASSERT_TRUE(wait_until([&] { return count(stack, "job_type = 'tick'") >= 3; }, 20s)) << stack.logs_tail();
  auto rows = stack.db().query(
      "SELECT idempotency_key, params->>'scheduled_for' FROM conveyor.job WHERE job_type = 'tick' ORDER BY id");
  for (const auto& r : rows) EXPECT_EQ(r[0], "schedule:" + r[1]) << "the slot is the key and the param";
  // created_at is the now() the scheduler read: a run is created once its
  // slot's second has begun, not up to half a second before (the epoch was
  // rounded to whole seconds, not truncated, before stop 44).
  EXPECT_EQ(stack.db().query_value("SELECT string_agg(params->>'scheduled_for' || ' at ' || created_at, ', ') "
                                   "FROM conveyor.job WHERE job_type = 'tick' "
                                   "AND created_at < (params->>'scheduled_for')::timestamptz"),
            "")
      << "runs created before their slot";
  EXPECT_EQ(stack.db().query_value("SELECT count(DISTINCT idempotency_key) = count(*) FROM conveyor.job"), "t");
  EXPECT_EQ(stack.db().query_value("SELECT created_count > 0 AND next_slot > last_slot FROM conveyor.schedule_state "
                                   "WHERE job_type = 'tick'"),
            "t");
  EXPECT_EQ(stack.db().query_value("SELECT min(actor) FROM conveyor.job_status_change WHERE from_status IS NULL"),
            "conveyor-creation");
}

// Runbook 001 after a long stop: schedule_catchup_start says where each
// schedule starts again; the policy and the window say what is created.
TEST_F(Scheduler, CatchUpFromTheStartDateFollowsEachPolicy) {
  // Six hourly slots are missed: [start, now] with start 5 h before the last
  // full hour (the start's own slot is due, as `schedule backfill --from`'s).
  const std::string setup =
      "UPDATE conveyor.system_parameters SET schedule_catchup_start = jsonb_build_object("
      "'all-hourly', s, 'latest-hourly', s, 'windowed', s) FROM (SELECT to_char(date_trunc('hour', now() AT TIME "
      "ZONE 'UTC') - interval '5 hours', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS s) x";
  Stack stack(options(
      json::array(
          {type("all-hourly", {{"schedule", "0 * * * *"}, {"catchup_policy", "all"}}),
           type("latest-hourly", {{"schedule", "0 * * * *"}, {"catchup_policy", "latest"}}),
           type("windowed", {{"schedule", "0 * * * *"}, {"catchup_policy", "all"}, {"catchup_window_s", 7200}})}),
      setup));
  ASSERT_TRUE(wait_until([&] { return count(stack, "job_type = 'all-hourly'") == 6; }, 20s)) << stack.logs_tail();
  ASSERT_TRUE(wait_until([&] { return count(stack, "job_type = 'latest-hourly'") == 1; }, 20s)) << stack.logs_tail();
  ASSERT_TRUE(wait_until([&] { return count(stack, "job_type = 'windowed'") == 2; }, 20s)) << stack.logs_tail();
  EXPECT_EQ(
      stack.db().query_value("SELECT skipped_count FROM conveyor.schedule_state WHERE job_type = 'latest-hourly'"),
      "5");
  EXPECT_EQ(stack.db().query_value(
                "SELECT idempotency_key = 'schedule:' || to_char(date_trunc('hour', now() AT TIME ZONE 'UTC'), "
                "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM conveyor.job WHERE job_type = 'latest-hourly'"),
            "t")
      << "latest: the newest slot";
  // Passes go on; nothing is created twice.
  const std::string scans = stack.db().query_value("SELECT max(updated_at) FROM conveyor.schedule_state");
  ASSERT_TRUE(wait_until(
      [&] {
        return stack.db().query_value("SELECT max(updated_at) > '" + scans + "' FROM conveyor.schedule_state") == "t";
      },
      10s));
  EXPECT_EQ(count(stack, "job_type = 'all-hourly'"), 6);

  // A new start date (an operator after a downtime) starts the schedule again
  // from there; the slots it already made are not made again.
  stack.db().exec(
      "UPDATE conveyor.system_parameters SET schedule_catchup_start = jsonb_build_object('all-hourly', "
      "to_char(date_trunc('hour', now() AT TIME ZONE 'UTC') - interval '7 hours', "
      "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))");
  ASSERT_TRUE(wait_until([&] { return count(stack, "job_type = 'all-hourly'") == 8; }, 40s)) << stack.logs_tail();
  EXPECT_EQ(stack.db().query_value("SELECT count(*) FROM conveyor.job WHERE job_type = 'all-hourly' AND "
                                   "idempotency_key = 'schedule:' || to_char(date_trunc('hour', now() AT TIME ZONE "
                                   "'UTC') - interval '7 hours', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"),
            "1")
      << "the start's own slot";
}

// A schedule removed, added again or changed by `job-type apply` starts
// again from now, as a new one: the hours it had no schedule, or the old
// spec's slots, are not caught up (they were with catch-up policy all), and
// the next slot shown is the new spec's at once, not after the next pass.
TEST_F(Scheduler, ARemovedReaddedOrChangedScheduleStartsAgainFromNow) {
  const json hourly = type("hourly", {{"schedule", "0 * * * *"}, {"catchup_policy", "all"}});
  Stack stack(options(json::array({hourly})));
  const std::string state = "SELECT count(*) FROM conveyor.schedule_state WHERE job_type = 'hourly'";
  ASSERT_TRUE(wait_until([&] { return stack.db().query_value(state) == "1"; }, 20s)) << stack.logs_tail();
  auto apply = [&](const json& t) {
    const fs::path file = fs::path(file_).replace_extension(".apply.json");
    std::ofstream(file) << json{{"job_types", json::array({t})}}.dump(2);
    const auto r = stack.cli({"job-type", "apply", file.string(), "--yes"});
    ASSERT_EQ(r.status, 0) << r.output;
  };
  // As if its last slot were 5 hours ago, when its schedule was removed;
  // paused, so that the scheduler does not catch up before the apply.
  auto five_hours_ago = [&] {
    ASSERT_EQ(stack.cli({"schedule", "pause", "hourly"}).status, 0);
    stack.db().exec("UPDATE conveyor.schedule_state SET last_slot = date_trunc('hour', now()) - interval '5 hours'");
  };
  five_hours_ago();
  json unscheduled = hourly;
  unscheduled.erase("schedule");
  unscheduled.erase("catchup_policy");
  apply(unscheduled);
  EXPECT_EQ(stack.db().query_value("SELECT last_slot > now() - interval '1 minute' AND next_slot IS NULL "
                                   "FROM conveyor.schedule_state"),
            "t")
      << "a removed schedule's state starts again from now";
  // Runs created since `since` for slots before it (a slot after it may
  // fall due while the test runs, at the turn of an hour, as may one
  // before the first pause).
  auto caught_up = [&](const std::string& since) {
    return count(stack, "job_type = 'hourly' AND created_at >= '" + since +
                            "' AND substr(idempotency_key, 10)::timestamptz < '" + since + "'");
  };
  const std::string readded = stack.db().query_value("SELECT now()");
  apply(hourly);
  EXPECT_EQ(stack.db().query_value("SELECT paused FROM conveyor.schedule_state"), "t") << "a pause is kept";
  ASSERT_EQ(stack.cli({"schedule", "resume", "hourly"}).status, 0);
  wait_passes(stack, 2);
  EXPECT_EQ(stack.db().query_value(state), "1");
  EXPECT_EQ(caught_up(readded), 0) << "the hours without a schedule were caught up";

  // A changed spec: the same, and its next slot at once (after the apply's
  // now(), which is the row's updated_at).
  five_hours_ago();
  json half_past = hourly;
  half_past["schedule"] = "30 * * * *";
  const std::string changed = stack.db().query_value("SELECT now()");
  apply(half_past);
  EXPECT_EQ(stack.db().query_value("SELECT next_slot = date_trunc('hour', updated_at) + CASE WHEN updated_at < "
                                   "date_trunc('hour', updated_at) + interval '30 minutes' THEN interval '30 minutes' "
                                   "ELSE interval '90 minutes' END FROM conveyor.schedule_state"),
            "t")
      << stack.db().query_value("SELECT next_slot || ' ' || updated_at FROM conveyor.schedule_state");
  EXPECT_EQ(stack.db().query_value("SELECT paused FROM conveyor.schedule_state"), "t") << "a pause is kept";
  ASSERT_EQ(stack.cli({"schedule", "resume", "hourly"}).status, 0);
  wait_passes(stack, 2);
  EXPECT_EQ(caught_up(changed), 0) << "the old spec's slots were caught up";
}

TEST_F(Scheduler, NoRunsWhileNotAcceptingOrOutsideTheWaveThenRuns) {
  Stack stack(options(json::array({type("paused-tick", {{"schedule", "@every 1s"}, {"catchup_policy", "all"}})}),
                      "UPDATE conveyor.system_parameters SET accepting_new_jobs = false"));
  wait_passes(stack, 3);  // passes run, with the system paused
  EXPECT_EQ(count(stack, "job_type = 'paused-tick'"), 0);
  stack.db().exec("UPDATE conveyor.system_parameters SET accepting_new_jobs = true, job_types_list = '{other}'");
  wait_passes(stack, 3);  // outside job_types_list now
  EXPECT_EQ(count(stack, "job_type = 'paused-tick'"), 0);
  stack.db().exec("UPDATE conveyor.system_parameters SET job_types_list = NULL");
  ASSERT_TRUE(wait_until([&] { return count(stack, "job_type = 'paused-tick'") >= 2; }, 60s)) << stack.logs_tail();
}

TEST_F(Scheduler, ADoneJobCreatesItsTriggeredJobsOnceAndABadTriggerIsKeptAsADeadLetter) {
  json down_schema = {{"type", "object"},
                      {"properties", {{"tile", {{"type", "string"}}}, {"upstream", {{"type", "integer"}}}}},
                      {"required", {"tile"}},
                      {"additionalProperties", false}};
  Stack stack(options(json::array(
      {type("up", {{"params_schema", {{"type", "object"}, {"properties", {{"tile", {{"type", "string"}}}}}}},
                   {"triggers", {{{"job_type", "down"}, {"params", {{"tile", "{tile}"}, {"upstream", "{job_id}"}}}}}}}),
       type("bad-up", {{"triggers", {{{"job_type", "down"}, {"params", {{"tile", "{nope}"}}}}}}}),
       type("down", {{"params_schema", down_schema}})})));
  auto done = [&](const std::string& type_name, const std::string& params) {
    const std::string id = stack.db().query_value("INSERT INTO conveyor.job (job_type, params) VALUES ('" + type_name +
                                                  "', '" + params + "') RETURNING id");
    for (const char* s : {"configured", "ready", "queued", "started", "processed", "done"})
      stack.db().exec("UPDATE conveyor.job SET status = '" + std::string(s) + "' WHERE id = " + id);
    return id;
  };
  const std::string up = done("up", R"({"tile": "T31TCH"})");
  ASSERT_TRUE(wait_until([&] { return count(stack, "job_type = 'down'") == 1; }, 20s)) << stack.logs_tail();
  EXPECT_EQ(stack.db().query_value("SELECT params->>'tile' || ' ' || (params->>'upstream') || ' ' || "
                                   "array_to_string(depends_on, ',') || ' ' || idempotency_key "
                                   "FROM conveyor.job WHERE job_type = 'down'"),
            "T31TCH " + up + " " + up + " trigger:" + up + ":0");
  ASSERT_TRUE(
      wait_until([&] { return stack.db().query_value("SELECT count(*) FROM conveyor.trigger_pending") == "0"; }, 10s));

  const std::string bad = done("bad-up", "{}");
  ASSERT_TRUE(wait_until(
      [&] {
        return stack.db().query_value("SELECT failed_at IS NOT NULL FROM conveyor.trigger_pending WHERE job_id = " +
                                      bad) == "t";
      },
      20s))
      << stack.logs_tail();
  EXPECT_NE(stack.db()
                .query_value("SELECT last_error FROM conveyor.trigger_pending WHERE job_id = " + bad)
                .find("has no param 'nope'"),
            std::string::npos);
  EXPECT_EQ(count(stack, "job_type = 'down'"), 1);

  // Outside job_types_list: kept for its wave, created once it comes.
  stack.db().exec("UPDATE conveyor.system_parameters SET job_types_list = '{up}'");
  const std::string waiting = done("up", R"({"tile": "T32ULU"})");
  wait_passes(stack, 3);
  EXPECT_EQ(count(stack, "job_type = 'down'"), 1);
  EXPECT_EQ(stack.db().query_value("SELECT count(*) FROM conveyor.trigger_pending WHERE job_id = " + waiting), "1");
  stack.db().exec("UPDATE conveyor.system_parameters SET job_types_list = NULL");
  ASSERT_TRUE(wait_until([&] { return count(stack, "job_type = 'down'") == 2; }, 20s)) << stack.logs_tail();
}

// Issue 14: creation read conveyor.trigger_pending after every job's done.
// Now only a done job whose type has triggers wakes it (its pending row
// NOTIFYs conveyor_trigger_pending): with the poll a minute away, a done job
// of a type without triggers makes no trigger pass, and the next one of a
// type with triggers makes one, which creates its downstream job.
TEST_F(Scheduler, OnlyADoneJobWithTriggersWakesTheTriggerPass) {
  Stack::Options o = options(json::array(
      {type("plain"), type("up", {{"triggers", {{{"job_type", "down"}, {"params", json::object()}}}}}), type("down")}));
  o.env = {{"CONVEYOR_POLL_INTERVAL_MS", "60000"}};
  Stack stack(o);
  const auto sample = [&](const std::string& name) {
    return conveyor::testing::metric_sample("127.0.0.1:" + std::to_string(stack.port("creation")), name);
  };
  // Wake-ups by NOTIFY alone (a Kafka event, the start-up's parameters, may
  // still wake the loop), once the listener hears the channel: a NOTIFY of
  // it by hand has woken creation.
  const auto notified = [&] { return sample("conveyor_notify_wakeups_total"); };
  ASSERT_TRUE(wait_until(
      [&] {
        const double seen = notified();
        stack.db().exec("SELECT pg_notify('conveyor_trigger_pending', '')");
        return wait_until([&] { return notified() > seen; }, 300ms);
      },
      20s))
      << "creation never heard conveyor_trigger_pending";
  const double before = notified();
  auto done = [&](const std::string& type_name) {
    const std::string id =
        stack.db().query_value("INSERT INTO conveyor.job (job_type) VALUES ('" + type_name + "') RETURNING id");
    for (const char* s : {"configured", "ready", "queued", "started", "processed", "done"})
      stack.db().exec("UPDATE conveyor.job SET status = '" + std::string(s) + "' WHERE id = " + id);
  };
  done("plain");
  done("up");
  ASSERT_TRUE(wait_until([&] { return count(stack, "job_type = 'down'") == 1; }, 10s))
      << "not woken by the trigger's NOTIFY (the poll is a minute)\n"
      << stack.logs_tail();
  EXPECT_EQ(notified(), before + 1) << "the plain job's done woke creation";
}

// Issue 14: PostgreSQL 15 signals every listening backend on every
// notifying commit, whatever the channel, so creation listens for pending
// triggers only while a job type has triggers. Here none has at first; once
// one has, the next timed pass (the poll, 200 ms) listens, and a done job of
// that type creates its downstream job.
TEST_F(Scheduler, CreationListensForTriggersOnlyWhileATypeHasThem) {
  Stack::Options o = options(json::array({type("up"), type("down")}));
  o.env = {{"CONVEYOR_POLL_INTERVAL_MS", "200"}};
  Stack stack(o);
  const auto sample = [&](const std::string& name) {
    return conveyor::testing::metric_sample("127.0.0.1:" + std::to_string(stack.port("creation")), name);
  };
  const auto wanted = [&] { return sample("conveyor_listen_wanted{channel=\"conveyor_trigger_pending\"}"); };
  // Whether a NOTIFY of the channel, by hand, wakes creation within `within`.
  const auto heard = [&](std::chrono::milliseconds within) {
    const double seen = sample("conveyor_notify_wakeups_total");
    stack.db().exec("SELECT pg_notify('conveyor_trigger_pending', '')");
    return wait_until([&] { return sample("conveyor_notify_wakeups_total") > seen; }, within);
  };
  ASSERT_TRUE(wait_until([&] { return sample("conveyor_creation_passes_total") >= 1.0; }, 20s)) << stack.logs_tail();
  EXPECT_EQ(wanted(), 0.0) << "no type has triggers";
  EXPECT_FALSE(heard(1s)) << "it listens with no type having triggers";

  stack.db().exec(
      "UPDATE conveyor.job_type SET triggers = '[{\"job_type\": \"down\", \"params\": {}}]' WHERE name = 'up'");
  ASSERT_TRUE(wait_until([&] { return wanted() == 1.0; }, 10s)) << "the next timed pass did not want it";
  EXPECT_TRUE(wait_until([&] { return heard(300ms); }, 10s)) << "it does not listen";
  const std::string id = stack.db().query_value("INSERT INTO conveyor.job (job_type) VALUES ('up') RETURNING id");
  for (const char* st : {"configured", "ready", "queued", "started", "processed", "done"})
    stack.db().exec("UPDATE conveyor.job SET status = '" + std::string(st) + "' WHERE id = " + id);
  EXPECT_TRUE(wait_until([&] { return count(stack, "job_type = 'down'") == 1; }, 10s)) << stack.logs_tail();

  stack.db().exec("UPDATE conveyor.job_type SET triggers = '[]' WHERE name = 'up'");
  ASSERT_TRUE(wait_until([&] { return wanted() == 0.0; }, 10s)) << "still wanted with no triggers left";
  // The listener drops the channel within a slice (250 ms).
  EXPECT_TRUE(wait_until([&] { return !heard(500ms); }, 10s)) << "still listening with no triggers left";
}

// The database refusing one schedule's run (here a trigger on conveyor.job,
// standing in for a constraint, a lock timeout or any error of the
// database) rolls back that schedule alone: the schedules after it in the
// pass and the triggers still run; the error is in its schedule_state and
// the log with its name. An upstream job whose downstream insert is refused
// the same way is kept as failed, and the next upstream job goes on.
TEST_F(Scheduler, ADatabaseErrorInOneScheduleOrTriggerLeavesTheOthersRunning) {
  // "a-broken" sorts first: before the fix its error ended each whole pass.
  Stack stack(options(json::array({type("a-broken", {{"schedule", "@every 1s"}, {"catchup_policy", "latest"}}),
                                   type("tick", {{"schedule", "@every 1s"}, {"catchup_policy", "latest"}}),
                                   type("up-bad", {{"triggers", {{{"job_type", "a-broken"}}}}}),
                                   type("up", {{"triggers", {{{"job_type", "down"}}}}}), type("down")})));
  // Its first run is made, so its schedule_state row exists; then the database refuses it.
  ASSERT_TRUE(wait_until([&] { return count(stack, "job_type = 'a-broken'") >= 1; }, 20s)) << stack.logs_tail();
  stack.db().exec(
      "CREATE FUNCTION conveyor.test_refuse_broken() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
      "IF NEW.job_type = 'a-broken' THEN RAISE EXCEPTION 'test: a-broken refused'; END IF; RETURN NEW; END $$");
  stack.db().exec(
      "CREATE TRIGGER test_refuse_broken BEFORE INSERT ON conveyor.job FOR EACH ROW "
      "EXECUTE FUNCTION conveyor.test_refuse_broken()");
  const int broken = count(stack, "job_type = 'a-broken'");
  const int ticks = count(stack, "job_type = 'tick'");
  ASSERT_TRUE(wait_until([&] { return count(stack, "job_type = 'tick'") >= ticks + 3; }, 20s))
      << "the next schedule runs on: " << stack.logs_tail();
  EXPECT_EQ(count(stack, "job_type = 'a-broken'"), broken);
  EXPECT_NE(stack.db()
                .query_value("SELECT coalesce(last_error, '') FROM conveyor.schedule_state WHERE job_type = 'a-broken'")
                .find("test: a-broken refused"),
            std::string::npos);
  EXPECT_NE(stack.logs_tail(400).find("schedule a-broken: "), std::string::npos) << stack.logs_tail();

  auto done = [&](const std::string& type_name) {
    const std::string id =
        stack.db().query_value("INSERT INTO conveyor.job (job_type) VALUES ('" + type_name + "') RETURNING id");
    for (const char* st : {"configured", "ready", "queued", "started", "processed", "done"})
      stack.db().exec("UPDATE conveyor.job SET status = '" + std::string(st) + "' WHERE id = " + id);
    return id;
  };
  const std::string bad = done("up-bad");  // pending first: before the fix it ended each pass of the triggers
  done("up");
  ASSERT_TRUE(wait_until([&] { return count(stack, "job_type = 'down'") == 1; }, 20s)) << stack.logs_tail();
  ASSERT_TRUE(wait_until(
      [&] {
        return stack.db().query_value("SELECT failed_at IS NOT NULL FROM conveyor.trigger_pending WHERE job_id = " +
                                      bad) == "t";
      },
      20s));
  EXPECT_NE(stack.db()
                .query_value("SELECT last_error FROM conveyor.trigger_pending WHERE job_id = " + bad)
                .find("test: a-broken refused"),
            std::string::npos);
}

// Issue 13, item 11: a backfill is a request conveyor-creation works through
// in batches; killed with -9 mid-way and started again, it goes on from its
// last committed batch: every slot has exactly one run, none doubled, and a
// slot that already had one (here: made by the scheduler) is skipped.
TEST_F(Scheduler, BackfillWorksInBatchesAndResumesAfterACrash) {
  auto o = options(json::array({type("hourly", {{"schedule", "0 * * * *"}, {"catchup_policy", "none"}})}));
  // Slow passes, so that the row hold below lands between two batches of 10.
  o.env = {{"CONVEYOR_POLL_INTERVAL_MS", "1500"}, {"CONVEYOR_BACKFILL_BATCH_SIZE", "10"}};
  Stack stack(o);
  const auto [from, to] = hours(stack, 60, 26);  // 35 hourly slots, both ends included
  const std::string in_range =
      "job_type = 'hourly' AND idempotency_key BETWEEN 'schedule:" + from + "' AND 'schedule:" + to + "'";
  // Three slots already have their run: the first, the 11th and the 21st (from `from`, not now()).
  stack.db().exec(
      "INSERT INTO conveyor.job (job_type, idempotency_key) SELECT 'hourly', 'schedule:' || "
      "to_char(('" +
      from +
      "'::timestamptz AT TIME ZONE 'UTC') + make_interval(hours => n), "
      "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM unnest(ARRAY[0, 10, 20]) n");
  auto r = stack.cli({"schedule", "backfill", "hourly", "--from", from, "--to", to});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("35 slot(s) of hourly"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("dry run"), std::string::npos) << r.output;
  EXPECT_EQ(stack.db().query_value("SELECT count(*) FROM conveyor.backfill_request"), "0");

  r = stack.cli({"schedule", "backfill", "hourly", "--from", from, "--to", to, "--apply", "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("backfill 1 requested"), std::string::npos) << r.output;
  EXPECT_EQ(backfill(stack, "1", "slot_count::text || ' ' || (requested_by <> '')"), "35 true");

  // The first batch committed, not the whole range: hold the request so no
  // batch starts, kill -9 now, then let go.
  ASSERT_TRUE(wait_until([&] { return std::stoi(backfill(stack, "1", "created_count + skipped_count")) >= 10; }, 30s))
      << stack.logs_tail();
  RowHold hold(stack.db().url(), "1");
  const int done_at_kill = std::stoi(backfill(stack, "1", "created_count + skipped_count"));
  wait_passes(stack, 2);
  EXPECT_EQ(std::stoi(backfill(stack, "1", "created_count + skipped_count")), done_at_kill)
      << "a held request is skipped, not waited for";
  stack.kill("creation", SIGKILL);
  hold.release();
  EXPECT_LT(done_at_kill, 35) << "batched, not one transaction";
  EXPECT_EQ(backfill(stack, "1", "state"), "running");
  EXPECT_EQ(count(stack, in_range), std::stoi(backfill(stack, "1", "created_count")) + 3)
      << "the cursor moved with the runs it created";
  r = stack.cli({"schedule", "list"});
  EXPECT_NE(r.output.find(std::to_string(done_at_kill) + "/35"), std::string::npos) << "progress shown: " << r.output;

  stack.start("creation");
  ASSERT_TRUE(wait_until([&] { return backfill(stack, "1", "state") == "done"; }, 60s)) << stack.logs_tail();
  EXPECT_EQ(count(stack, in_range), 35);
  EXPECT_EQ(stack.db().query_value("SELECT count(DISTINCT idempotency_key) FROM conveyor.job WHERE " + in_range), "35");
  EXPECT_EQ(backfill(stack, "1", "created_count::text || ' ' || skipped_count || ' ' || (finished_at IS NOT NULL)"),
            "32 3 true");
  // One transaction per batch: the 32 runs were created at (at least) 4 distinct times.
  EXPECT_GE(std::stoi(stack.db().query_value("SELECT count(DISTINCT created_at) FROM conveyor.job WHERE " + in_range +
                                             " AND id > 3")),
            4);
  // A finished request is left out of the open list, shown with --all.
  r = stack.cli({"schedule", "list"});
  EXPECT_EQ(r.output.find("BACKFILL  TYPE"), std::string::npos) << r.output;
  EXPECT_NE(stack.cli({"schedule", "backfills", "--all"}).output.find("35/35"), std::string::npos);
}

// Policy collapse: the slots of a range as one run whose params carry it,
// both as a schedule's catch-up policy and as a backfill's.
TEST_F(Scheduler, CollapseCreatesOneRunCarryingTheRange) {
  json props = {{"scheduled_from", {{"type", "string"}}},
                {"scheduled_to", {{"type", "string"}}},
                {"slot_count", {{"type", "integer"}}}};
  json schema = {{"type", "object"}, {"properties", props}, {"additionalProperties", false}};
  // Catch-up after a stop: the six hourly slots from the start date on are due.
  const std::string setup =
      "UPDATE conveyor.system_parameters SET schedule_catchup_start = jsonb_build_object('collapsed', "
      "to_char(date_trunc('hour', now() AT TIME ZONE 'UTC') - interval '5 hours', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))";
  Stack stack(options(
      json::array(
          {type("collapsed", {{"schedule", "0 * * * *"}, {"catchup_policy", "collapse"}, {"params_schema", schema}})}),
      setup));
  ASSERT_TRUE(wait_until([&] { return count(stack, "job_type = 'collapsed'") >= 1; }, 20s)) << stack.logs_tail();
  // (The hour may have turned meanwhile; the run's own range is what counts.)
  EXPECT_EQ(stack.db().query_value("SELECT idempotency_key = 'backfill:' || (params->>'scheduled_from') || '..' || "
                                   "(params->>'scheduled_to') FROM conveyor.job WHERE job_type = 'collapsed'"),
            "t");
  EXPECT_EQ(stack.db().query_value("SELECT params->>'slot_count' FROM conveyor.job WHERE job_type = 'collapsed'"), "6");
  EXPECT_EQ(stack.db().query_value("SELECT params->>'scheduled_from' FROM conveyor.job WHERE job_type = 'collapsed'"),
            hour(stack, 5));
  wait_passes(stack, 3);
  EXPECT_EQ(count(stack, "job_type = 'collapsed'"), 1) << "the catch-up is one run";

  // A backfill with --policy collapse: a day of slots, one run.
  const std::string from = hour(stack, 48), to = hour(stack, 25);
  auto r = stack.cli({"schedule", "backfill", "collapsed", "--from", from, "--to", to, "--policy", "collapse"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("24 slot(s)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("key backfill:" + from + ".." + to), std::string::npos) << r.output;
  r = stack.cli(
      {"schedule", "backfill", "collapsed", "--from", from, "--to", to, "--policy", "collapse", "--apply", "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  ASSERT_TRUE(wait_until([&] { return backfill(stack, "1", "state") == "done"; }, 20s)) << stack.logs_tail();
  EXPECT_EQ(backfill(stack, "1", "created_count::text || ' ' || skipped_count"), "1 0");
  EXPECT_EQ(stack.db().query_value("SELECT params = jsonb_build_object('scheduled_from', '" + from +
                                   "'::text, 'scheduled_to', '" + to +
                                   "'::text, 'slot_count', 24) "
                                   "FROM conveyor.job WHERE idempotency_key = 'backfill:" +
                                   from + ".." + to + "'"),
            "t");
  EXPECT_EQ(count(stack, "job_type = 'collapsed' AND idempotency_key LIKE 'schedule:%'"), 0) << "no run per slot";

  // The same range again: its run exists, nothing is doubled.
  r = stack.cli(
      {"schedule", "backfill", "collapsed", "--from", from, "--to", to, "--policy", "collapse", "--apply", "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  ASSERT_TRUE(wait_until([&] { return backfill(stack, "2", "state") == "done"; }, 20s)) << stack.logs_tail();
  EXPECT_EQ(backfill(stack, "2", "created_count::text || ' ' || skipped_count"), "0 1");
  EXPECT_EQ(count(stack, "job_type = 'collapsed' AND idempotency_key LIKE 'backfill:%'"), 2);
}

TEST_F(Scheduler, ACanceledBackfillStops) {
  auto o = options(json::array({type("hourly", {{"schedule", "0 * * * *"}, {"catchup_policy", "none"}})}));
  o.env = {{"CONVEYOR_POLL_INTERVAL_MS", "1500"}, {"CONVEYOR_BACKFILL_BATCH_SIZE", "10"}};
  Stack stack(o);
  const auto [from, to] = hours(stack, 100, 51);  // 50 slots
  auto r = stack.cli({"schedule", "backfill", "hourly", "--from", from, "--to", to, "--apply", "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  ASSERT_TRUE(wait_until([&] { return std::stoi(backfill(stack, "1", "created_count")) >= 10; }, 30s))
      << stack.logs_tail();
  // Held, the request makes no progress; the cancel waits for the hold and
  // lands as soon as it is let go, before another batch can start.
  RowHold hold(stack.db().url(), "1");
  auto cancel = std::async(std::launch::async, [&] { return stack.cli({"schedule", "cancel-backfill", "1"}); });
  ASSERT_TRUE(wait_until(
      [&] {
        return stack.db().query_value(
                   "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                   "AND wait_event_type = 'Lock'") != "0";
      },
      20s));
  hold.release();
  r = cancel.get();
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("backfill 1 canceled"), std::string::npos) << r.output;
  const std::string created = backfill(stack, "1", "created_count");
  EXPECT_LT(std::stoi(created), 50);
  wait_passes(stack, 3);  // passes go on: none takes the canceled request
  EXPECT_EQ(backfill(stack, "1", "state || ' ' || created_count || ' ' || (canceled_by <> '')"),
            "canceled " + created + " true");
  EXPECT_EQ(std::to_string(count(stack, "job_type = 'hourly' AND idempotency_key <= 'schedule:" + to + "'")), created);

  r = stack.cli({"schedule", "cancel-backfill", "1"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("backfill 1 is canceled: nothing to cancel"), std::string::npos) << r.output;
  r = stack.cli({"schedule", "cancel-backfill", "99"});
  EXPECT_NE(r.output.find("backfill 99 does not exist"), std::string::npos) << r.output;
}

// Issue 13, item 11 (review): a batch that fails with anything but a refused
// run (here a database error raised on one slot's insert) rolls back and is
// retried; meanwhile the pass goes on with the triggers, and after
// kBackfillMaxFailures (5) failed batches in a row the request is failed with
// the error.
TEST_F(Scheduler, ABackfillThatKeepsFailingIsFailedAndDoesNotStopTheTriggers) {
  auto o = options(
      json::array({type("hourly", {{"schedule", "0 * * * *"}, {"catchup_policy", "none"}}),
                   type("up", {{"triggers", {{{"job_type", "down"}, {"params", json::object()}}}}}), type("down")}));
  o.env = {{"CONVEYOR_POLL_INTERVAL_MS", "500"}, {"CONVEYOR_BACKFILL_BATCH_SIZE", "10"}};
  Stack stack(o);
  const auto [from, to] = hours(stack, 30, 21);  // 10 slots
  stack.db().exec(
      "CREATE FUNCTION conveyor.test_refuse_slot() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
      "IF NEW.idempotency_key = 'schedule:" +
      from +
      "' THEN RAISE EXCEPTION 'test: slot refused'; END IF; "
      "RETURN NEW; END $$");
  stack.db().exec(
      "CREATE TRIGGER test_refuse_slot BEFORE INSERT ON conveyor.job FOR EACH ROW "
      "EXECUTE FUNCTION conveyor.test_refuse_slot()");
  auto r = stack.cli({"schedule", "backfill", "hourly", "--from", from, "--to", to, "--apply", "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;

  const std::string up = stack.db().query_value("INSERT INTO conveyor.job (job_type) VALUES ('up') RETURNING id");
  for (const char* s : {"configured", "ready", "queued", "started", "processed", "done"})
    stack.db().exec("UPDATE conveyor.job SET status = '" + std::string(s) + "' WHERE id = " + up);
  ASSERT_TRUE(wait_until([&] { return count(stack, "job_type = 'down'") == 1; }, 20s))
      << "triggers run while the backfill fails: " << stack.logs_tail();

  ASSERT_TRUE(wait_until([&] { return backfill(stack, "1", "state") == "failed"; }, 30s)) << stack.logs_tail();
  const std::string error = backfill(stack, "1", "last_error");
  EXPECT_NE(error.find("failed 5 batches in a row"), std::string::npos) << error;
  EXPECT_NE(error.find("test: slot refused"), std::string::npos) << error;
  EXPECT_EQ(backfill(stack, "1", "created_count::text || ' ' || (finished_at IS NOT NULL)"), "0 true")
      << "each failed batch rolled back";
  EXPECT_EQ(count(stack, "job_type = 'hourly' AND idempotency_key <= 'schedule:" + to + "'"), 0);
}

}  // namespace
