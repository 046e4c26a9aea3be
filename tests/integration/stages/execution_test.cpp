// conveyor-execution as a real process against a real PostgreSQL and
// devbroker: admission ready -> queued by priority then age, per-type
// concurrency_limit, pool capacity, job_types_list, paused job types and
// not_before. No worker runs, so queued jobs stay in flight until the test
// moves them on.
#include <nlohmann/json.hpp>

#include "stage_fixture.hpp"

namespace conveyor::stages_test {
namespace {

class ExecutionTest : public StageTest {
 protected:
  void SetUp() override {
    StageTest::SetUp();
    db_.exec(R"(INSERT INTO conveyor.job_type (name, command, concurrency_limit) VALUES
                  ('free', '["true"]', NULL), ('limited', '["true"]', 1), ('other', '["true"]', NULL))");
  }
  // A job already configured, as conveyor-configuration leaves it.
  std::string ready_job(const std::string& type, int priority = 0, const std::string& not_before = "NULL") const {
    const auto id = db_.query_value(
        "INSERT INTO conveyor.job (job_type, priority, not_before, config) VALUES ('" + type + "', " +
        std::to_string(priority) + ", " + not_before + ", '{\"pool\": \"default\"}') RETURNING id");
    db_.exec("UPDATE conveyor.job SET status = 'configured' WHERE id = " + id);
    db_.exec("UPDATE conveyor.job SET status = 'ready' WHERE id = " + id);
    return id;
  }
  int count(const std::string& type, const std::string& st) const {
    return std::stoi(db_.query_value("SELECT count(*) FROM conveyor.job WHERE job_type = '" + type +
                                     "' AND status = '" + st + "'"));
  }
  // What a worker does with an admitted job: it runs and ends, freeing its slot.
  void complete(const std::string& id) const {
    db_.exec("UPDATE conveyor.job SET status = 'started' WHERE id = " + id);
    db_.exec("UPDATE conveyor.job SET status = 'processed' WHERE id = " + id);
  }
  std::string queued_id() const {
    return db_.query_value("SELECT string_agg(id::text, ',') FROM conveyor.job WHERE status = 'queued'");
  }
};

TEST_F(ExecutionTest, AdmitsByPriorityThenAge) {
  // Capacity 1: admission order becomes visible one job at a time.
  db_.exec("UPDATE conveyor.system_parameters SET max_number_of_worker_instances = 1, worker_concurrency = 1");
  const auto low = ready_job("free", 1);
  const auto high = ready_job("free", 5);
  const auto mid_old = ready_job("free", 3);
  const auto mid_new = ready_job("free", 3);
  start(CONVEYOR_EXECUTION_PATH);

  for (const auto& expected : {high, mid_old, mid_new, low}) {
    ASSERT_TRUE(reaches(expected, "queued"));
    EXPECT_EQ(queued_id(), expected) << "only one job may be in flight";
    complete(expected);
  }
  EXPECT_EQ(db_.query_value("SELECT actor FROM conveyor.job_status_change WHERE to_status = 'queued' LIMIT 1"),
            "conveyor-execution");
}

TEST_F(ExecutionTest, ConcurrencyLimitOneAdmitsOneAtATime) {
  const auto a = ready_job("limited");
  const auto b = ready_job("limited");
  const auto c = ready_job("limited");
  start(CONVEYOR_EXECUTION_PATH);
  ASSERT_TRUE(reaches(a, "queued"));

  // A later job of another type is admitted past the limited ones, which
  // proves an admission pass ran while `a` was in flight.
  const auto marker = ready_job("free");
  ASSERT_TRUE(reaches(marker, "queued"));
  EXPECT_EQ(count("limited", "queued"), 1);

  // Started still counts as in flight.
  db_.exec("UPDATE conveyor.job SET status = 'started' WHERE id = " + a);
  const auto marker2 = ready_job("free");
  ASSERT_TRUE(reaches(marker2, "queued"));
  EXPECT_EQ(status(b), "ready");

  db_.exec("UPDATE conveyor.job SET status = 'processed' WHERE id = " + a);
  ASSERT_TRUE(reaches(b, "queued"));
  EXPECT_EQ(status(c), "ready");
  complete(b);
  ASSERT_TRUE(reaches(c, "queued"));
}

TEST_F(ExecutionTest, TypesOutsideJobTypesListWaitUntilTheListAllowsThem) {
  db_.exec("UPDATE conveyor.system_parameters SET job_types_list = '{free}'");
  const auto excluded = ready_job("other", 10);
  const auto allowed = ready_job("free");
  start(CONVEYOR_EXECUTION_PATH);
  ASSERT_TRUE(reaches(allowed, "queued"));
  EXPECT_EQ(status(excluded), "ready");

  // Live parameters: no restart needed.
  db_.exec("UPDATE conveyor.system_parameters SET job_types_list = NULL");
  ASSERT_TRUE(reaches(excluded, "queued", 40s));
}

TEST_F(ExecutionTest, PausedJobTypeIsNotAdmitted) {
  db_.exec("INSERT INTO conveyor.queue_state (kind, name, paused, reason, paused_at, paused_by) "
           "VALUES ('job_type', 'other', true, 'maintenance', now(), 'test')");
  const auto paused = ready_job("other", 10);
  const auto marker = ready_job("free");
  start(CONVEYOR_EXECUTION_PATH);
  ASSERT_TRUE(reaches(marker, "queued"));
  EXPECT_EQ(status(paused), "ready");

  db_.exec("UPDATE conveyor.queue_state SET paused = false WHERE kind = 'job_type' AND name = 'other'");
  ASSERT_TRUE(reaches(paused, "queued"));
}

TEST_F(ExecutionTest, PausedPoolIsNotAdmitted) {
  db_.exec("INSERT INTO conveyor.queue_state (kind, name, paused) VALUES ('pool', 'default', true)");
  const auto paused = ready_job("free");
  const auto other_pool = db_.query_value(
      "INSERT INTO conveyor.job (job_type, config) VALUES ('free', '{\"pool\": \"gpu\"}') RETURNING id");
  db_.exec("UPDATE conveyor.job SET status = 'configured' WHERE id = " + other_pool);
  db_.exec("UPDATE conveyor.job SET status = 'ready' WHERE id = " + other_pool);
  start(CONVEYOR_EXECUTION_PATH);
  ASSERT_TRUE(reaches(other_pool, "queued"));
  EXPECT_EQ(status(paused), "ready");
}

TEST_F(ExecutionTest, NotBeforeIsRespectedAndWakesTheLoopWithoutPolling) {
  const auto later = ready_job("free", 10, "now() + interval '3 seconds'");
  const auto now_job = ready_job("free");
  // A long poll interval: only the not_before timer can wake the loop in time.
  start(CONVEYOR_EXECUTION_PATH, {{"CONVEYOR_POLL_INTERVAL_MS", "1h"}});
  ASSERT_TRUE(reaches(now_job, "queued"));
  ASSERT_TRUE(reaches(later, "queued", 15s));
  EXPECT_EQ(db_.query_value("SELECT (c.at >= j.not_before)::text FROM conveyor.job j "
                            "JOIN conveyor.job_status_change c ON c.job_id = j.id AND c.to_status = 'queued' "
                            "WHERE j.id = " + later),
            "true");
}

}  // namespace
}  // namespace conveyor::stages_test
