// `conveyor system waves --auto` / `--stop` (issue 13, item 8): --auto records
// a wave run and admits wave 1 only (job_types_list through the parameters'
// one rule, so the history has it); a second --auto is refused while one
// runs; status shows the wave; --stop ends the run and leaves the list to the
// operator. The CLI runs as a real process against a migrated database; no
// service runs (the monitor's advancing is in tests/e2e/waves_test.cpp).
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "conveyor/db/db.hpp"
#include "conveyor/model/waves.hpp"
#include "conveyor/testing/testing.hpp"
#include "cli_test.hpp"

namespace {

namespace fs = std::filesystem;
using conveyor::testing::RunResult;
using conveyor::testing::cli::CliTest;
using conveyor::testing::cli::has;
using nlohmann::json;

class WavesCli : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    // a -> b -> c by triggers: three waves.
    db_.exec(R"(INSERT INTO conveyor.job_type (name, command, triggers) VALUES
      ('wa', '["true"]', '[{"job_type": "wb"}]'),
      ('wb', '["true"]', '[{"job_type": "wc"}]'),
      ('wc', '["true"]', '[]'))");
  }
  std::string types_list() {
    return db_.query_value("SELECT coalesce(job_types_list::text, 'NULL') FROM conveyor.system_parameters");
  }
};

TEST_F(WavesCli, WavesAutoStartsWaveOneAndStopStops) {
  auto r = conveyor({"system", "waves"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "wave 1: wa")) << r.output;
  EXPECT_TRUE(has(r, "wave 3: wc   (after wb)")) << r.output;

  r = conveyor({"system", "waves", "--auto", "--threshold", "5"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "wave 1 of 3 admitted (wa)")) << r.output;
  EXPECT_EQ(types_list(), "{wa}");
  EXPECT_EQ(db_.query_value("SELECT current || ' ' || threshold || ' ' || state FROM conveyor.wave_run"),
            "1 5 running");
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.system_parameters_history "
                            "WHERE 'job_types_list' = ANY(changed_keys) AND new_values->'job_types_list' = '[\"wa\"]'"),
            "1")
      << "the wave is set through the parameters, with its history";

  r = conveyor({"system", "waves", "--auto"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "already running")) << r.output;

  r = conveyor({"system", "status"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "1 of 3 (auto")) << r.output;
  r = conveyor({"--json", "system", "status"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(json::parse(r.output).at("waves").at("current"), 1) << r.output;

  r = conveyor({"system", "waves"});
  EXPECT_TRUE(has(r, "running, wave 1 of 3")) << r.output;
  // The next step it suggests is one it would take: not --start, refused
  // while the run is active (a new user's trial, stop 44).
  EXPECT_FALSE(has(r, "--start 1")) << r.output;
  EXPECT_TRUE(has(r, "`conveyor system waves --stop` ends it")) << r.output;

  r = conveyor({"system", "waves", "--stop"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "stopped at wave 1 of 3")) << r.output;
  EXPECT_EQ(db_.query_value("SELECT state FROM conveyor.wave_run"), "stopped");
  EXPECT_EQ(types_list(), "{wa}") << "the operator takes over from where the run stopped";
  r = conveyor({"system", "status"});
  EXPECT_FALSE(has(r, "(auto")) << r.output;

  r = conveyor({"system", "waves", "--stop"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "no wave run is running")) << r.output;

  r = conveyor({"system", "waves", "--threshold", "3"});
  EXPECT_EQ(r.status, 2) << r.output;
  r = conveyor({"system", "waves", "--auto", "--threshold", "-1"});
  EXPECT_NE(r.status, 0) << r.output;

  // A new run may start once the last one stopped.
  r = conveyor({"system", "waves", "--auto"});
  EXPECT_EQ(r.status, 0) << r.output;
}

// The monitor's step (model::advance_waves), run as the monitor's database
// role: it holds while the current wave's backlog is above the threshold,
// then admits the next wave, and after the last one sets job_types_list back
// to NULL and the run to done. The role may do exactly that (migration
// 20261210000400 grants UPDATE on job_types_list only).
TEST_F(WavesCli, TheMonitorsRoleAdvancesTheRunWaveByWaveToEveryType) {
  const std::string held = db_.query_value("INSERT INTO conveyor.job (job_type) VALUES ('wa') RETURNING id");
  ASSERT_EQ(conveyor({"system", "waves", "--auto"}).status, 0);
  conveyor::db::Session monitor(db_.url());
  auto step = [&] {
    return monitor.transact([](conveyor::db::Tx& tx) {
      tx.exec_script("SET LOCAL ROLE conveyor_monitor");
      return conveyor::model::advance_waves(tx);
    });
  };
  EXPECT_FALSE(step()) << "wa has a job waiting: wave 1 is not drained (threshold 0)";
  EXPECT_EQ(types_list(), "{wa}");

  db_.exec("UPDATE conveyor.job SET status = 'canceled' WHERE id = " + held);
  auto s = step();
  ASSERT_TRUE(s);
  EXPECT_EQ(s->from, 1);
  EXPECT_EQ(s->to, 2);
  EXPECT_EQ(types_list(), "{wa,wb}");
  s = step();
  ASSERT_TRUE(s);
  EXPECT_EQ(s->to, 3);
  EXPECT_EQ(types_list(), "{wa,wb,wc}");
  s = step();
  ASSERT_TRUE(s);
  EXPECT_TRUE(s->done);
  EXPECT_EQ(types_list(), "NULL");
  EXPECT_EQ(db_.query_value("SELECT state FROM conveyor.wave_run"), "done");
  EXPECT_FALSE(step()) << "no run is running";
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.system_parameters_history "
                            "WHERE 'job_types_list' = ANY(changed_keys)"),
            "4")
      << "wave 1, 2, 3 and NULL, each in the history";
}

// A wave's backlog counts only jobs that can still progress: a ready job
// that is held, or of a paused type or pool, waits for an operator and would
// keep the run at its wave forever. A back-off (not_before) ends by itself,
// so that job still counts.
TEST_F(WavesCli, HeldOrPausedReadyJobsDoNotHoldTheRunBack) {
  auto ready_job = [&](const std::string& pool, const std::string& not_before) {
    const std::string id = db_.query_value("INSERT INTO conveyor.job (job_type, not_before, config) VALUES ('wa', " +
                                           not_before + ", '{\"pool\": \"" + pool + "\"}') RETURNING id");
    db_.exec("UPDATE conveyor.job SET status = 'configured' WHERE id = " + id);
    db_.exec("UPDATE conveyor.job SET status = 'ready' WHERE id = " + id);
    return id;
  };
  const std::string held = ready_job("default", "NULL");
  const std::string in_paused_pool = ready_job("gpu", "NULL");
  const std::string backing_off = ready_job("default", "now() + interval '1 hour'");
  db_.exec("UPDATE conveyor.job SET held_at = now() WHERE id = " + held);
  db_.exec("INSERT INTO conveyor.queue_state (kind, name, paused) VALUES ('pool', 'gpu', true)");
  ASSERT_EQ(conveyor({"system", "waves", "--auto"}).status, 0);
  conveyor::db::Session monitor(db_.url());
  auto step = [&] {
    return monitor.transact([](conveyor::db::Tx& tx) {
      tx.exec_script("SET LOCAL ROLE conveyor_monitor");
      return conveyor::model::advance_waves(tx);
    });
  };
  auto s = step();
  EXPECT_FALSE(s) << "the backing-off job will be admitted: wave 1 is not drained";
  EXPECT_EQ(types_list(), "{wa}");

  db_.exec("UPDATE conveyor.job SET status = 'canceled' WHERE id = " + backing_off);
  s = step();
  ASSERT_TRUE(s) << "only a held job and one in a paused pool are left: they never drain";
  EXPECT_EQ(s->backlog, 0);
  EXPECT_EQ(s->to, 2);
  EXPECT_EQ(types_list(), "{wa,wb}");

  // A paused job type is the same; wave 2's job of type wb waits paused.
  const std::string id = db_.query_value("INSERT INTO conveyor.job (job_type) VALUES ('wb') RETURNING id");
  db_.exec("UPDATE conveyor.job SET status = 'configured' WHERE id = " + id);
  db_.exec("UPDATE conveyor.job SET status = 'ready' WHERE id = " + id);
  EXPECT_FALSE(step()) << "wb's ready job counts while wb is not paused";
  db_.exec("INSERT INTO conveyor.queue_state (kind, name, paused) VALUES ('job_type', 'wb', true)");
  s = step();
  ASSERT_TRUE(s) << "wb is paused: its ready job does not hold wave 3 back";
  EXPECT_EQ(s->to, 3);
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.job WHERE id = " + held), "ready");
}

// While a run is active, --start N and --all are refused: the monitor would
// overwrite the operator's job_types_list at its next wave.
TEST_F(WavesCli, StartOrAllDuringAnActiveRunIsRefused) {
  ASSERT_EQ(conveyor({"system", "waves", "--auto"}).status, 0);
  const std::string history = "SELECT count(*) FROM conveyor.system_parameters_history";
  const std::string before = db_.query_value(history);

  // Its start time in UTC and saying so, as `job ls` prints times.
  db_.exec("UPDATE conveyor.wave_run SET started_at = '2026-11-22 11:00:00+01'");
  auto r = conveyor({"system", "waves"});
  EXPECT_TRUE(has(r, " at 2026-11-22 10:00:00 UTC\n")) << r.output;
  r = conveyor({"system", "waves", "--start", "2"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "a wave run is active (started by ")) << r.output;
  EXPECT_TRUE(has(r, " at 2026-11-22 10:00:00 UTC, wave 1 of ")) << r.output;
  EXPECT_TRUE(has(r, "stop it first: conveyor system waves --stop")) << r.output;
  r = conveyor({"system", "waves", "--all"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_EQ(types_list(), "{wa}");
  EXPECT_EQ(db_.query_value(history), before) << "no parameter changed";
  EXPECT_EQ(db_.query_value("SELECT current || ' ' || state FROM conveyor.wave_run"), "1 running");

  ASSERT_EQ(conveyor({"system", "waves", "--stop"}).status, 0);
  r = conveyor({"system", "waves", "--start", "2"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(types_list(), "{wa,wb}") << "after --stop the operator takes over";
}

}  // namespace
