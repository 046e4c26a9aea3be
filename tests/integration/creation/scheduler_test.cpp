// conveyor-creation's background work as a real process: periodic schedules
// with their catch-up policies, and triggers (a done job creates its type's
// downstream jobs). Only conveyor-creation runs; jobs are moved by SQL, as a
// stage (or an operator) would, and every assertion reads PostgreSQL.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

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
  static int count(Stack& s, const std::string& where) {
    return std::stoi(s.db().query_value("SELECT count(*) FROM conveyor.job WHERE " + where));
  }
  fs::path file_;
};

TEST_F(Scheduler, AnEveryScheduleCreatesOneRunPerSlotWithItsSlotInTheKeyAndParams) {
  json props = {{"scheduled_for", {{"type", "string"}}}};
  Stack stack(options(json::array({type("tick", {{"schedule", "@every 1s"},
                                                 {"params_schema", {{"type", "object"}, {"properties", props}}}})})));
  ASSERT_TRUE(wait_until([&] { return count(stack, "job_type = 'tick'") >= 3; }, 20s)) << stack.logs_tail();
  auto rows = stack.db().query(
      "SELECT idempotency_key, params->>'scheduled_for' FROM conveyor.job WHERE job_type = 'tick' ORDER BY id");
  for (const auto& r : rows) EXPECT_EQ(r[0], "schedule:" + r[1]) << "the slot is the key and the param";
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
  // Five hourly slots are missed: (start, now] with start 5 h before the last full hour.
  const std::string setup =
      "UPDATE conveyor.system_parameters SET schedule_catchup_start = jsonb_build_object("
      "'all-hourly', s, 'latest-hourly', s, 'windowed', s) FROM (SELECT to_char(date_trunc('hour', now() AT TIME "
      "ZONE 'UTC') - interval '5 hours', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS s) x";
  Stack stack(options(json::array({type("all-hourly", {{"schedule", "0 * * * *"}, {"catchup_policy", "all"}}),
                                   type("latest-hourly", {{"schedule", "0 * * * *"}, {"catchup_policy", "latest"}}),
                                   type("windowed", {{"schedule", "0 * * * *"},
                                                     {"catchup_policy", "all"},
                                                     {"catchup_window_s", 7200}})}),
                      setup));
  ASSERT_TRUE(wait_until([&] { return count(stack, "job_type = 'all-hourly'") == 5; }, 20s)) << stack.logs_tail();
  ASSERT_TRUE(wait_until([&] { return count(stack, "job_type = 'latest-hourly'") == 1; }, 20s)) << stack.logs_tail();
  ASSERT_TRUE(wait_until([&] { return count(stack, "job_type = 'windowed'") == 2; }, 20s)) << stack.logs_tail();
  EXPECT_EQ(stack.db().query_value("SELECT skipped_count FROM conveyor.schedule_state WHERE job_type = 'latest-hourly'"),
            "4");
  EXPECT_EQ(stack.db().query_value(
                "SELECT idempotency_key = 'schedule:' || to_char(date_trunc('hour', now() AT TIME ZONE 'UTC'), "
                "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM conveyor.job WHERE job_type = 'latest-hourly'"),
            "t")
      << "latest: the newest slot";
  // Passes go on; nothing is created twice.
  const std::string scans = stack.db().query_value("SELECT max(updated_at) FROM conveyor.schedule_state");
  ASSERT_TRUE(wait_until(
      [&] { return stack.db().query_value("SELECT max(updated_at) > '" + scans + "' FROM conveyor.schedule_state") == "t"; },
      10s));
  EXPECT_EQ(count(stack, "job_type = 'all-hourly'"), 5);

  // A new start date (an operator after a downtime) starts the schedule again
  // from there; the slots it already made are not made again.
  stack.db().exec(
      "UPDATE conveyor.system_parameters SET schedule_catchup_start = jsonb_build_object('all-hourly', "
      "to_char(date_trunc('hour', now() AT TIME ZONE 'UTC') - interval '7 hours', "
      "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))");
  ASSERT_TRUE(wait_until([&] { return count(stack, "job_type = 'all-hourly'") == 7; }, 40s)) << stack.logs_tail();
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
    const std::string id = stack.db().query_value("INSERT INTO conveyor.job (job_type, params) VALUES ('" +
                                                  type_name + "', '" + params + "') RETURNING id");
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
  ASSERT_TRUE(wait_until(
      [&] { return stack.db().query_value("SELECT count(*) FROM conveyor.trigger_pending") == "0"; }, 10s));

  const std::string bad = done("bad-up", "{}");
  ASSERT_TRUE(wait_until(
      [&] {
        return stack.db().query_value("SELECT failed_at IS NOT NULL FROM conveyor.trigger_pending WHERE job_id = " +
                                      bad) == "t";
      },
      20s))
      << stack.logs_tail();
  EXPECT_NE(stack.db().query_value("SELECT last_error FROM conveyor.trigger_pending WHERE job_id = " + bad)
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

}  // namespace
