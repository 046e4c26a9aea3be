// conveyor-execution as a real process against a real PostgreSQL and
// devbroker: admission ready -> queued by priority then age, per-type
// concurrency_limit, pool capacity, job_types_list, paused job types and
// not_before. No worker runs, so queued jobs stay in flight until the test
// moves them on.
#include <nlohmann/json.hpp>

#include "execution.hpp"
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
    const auto id =
        db_.query_value("INSERT INTO conveyor.job (job_type, priority, not_before, config) VALUES ('" + type + "', " +
                        std::to_string(priority) + ", " + not_before + ", '{\"pool\": \"default\"}') RETURNING id");
    db_.exec("UPDATE conveyor.job SET status = 'configured' WHERE id = " + id);
    db_.exec("UPDATE conveyor.job SET status = 'ready' WHERE id = " + id);
    return id;
  }
  int count(const std::string& type, const std::string& st) const {
    return std::stoi(
        db_.query_value("SELECT count(*) FROM conveyor.job WHERE job_type = '" + type + "' AND status = '" + st + "'"));
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

// Issue 14, the worker herd: admission assigns each job it queues to one
// worker of the job's pool with a free slot, the one with the most room, so
// that only that worker is woken. A job no worker has room for, and a
// container job (admitted first here, when every worker has room), is
// queued for any worker. A lost worker, one whose heartbeat is old (it may
// have died), and a worker of another pool, get none.
TEST_F(ExecutionTest, EachAdmittedJobIsAssignedToTheWorkerWithTheMostRoom) {
  const auto worker = [&](const std::string& name, int concurrency, const std::string& status,
                          const std::string& pool = "default") {
    return db_.query_value("INSERT INTO conveyor.worker (name, pool, concurrency, status) VALUES ('" + name + "', '" +
                           pool + "', " + std::to_string(concurrency) + ", '" + status + "') RETURNING id");
  };
  const auto one = worker("one", 1, "active");
  const auto two = worker("two", 2, "active");
  worker("lost", 8, "lost");
  worker("gpu", 8, "active", "gpu");
  const auto silent = worker("silent", 8, "active");
  db_.exec("UPDATE conveyor.worker SET last_heartbeat = now() - interval '1 hour' WHERE id = " + silent);
  std::vector<std::string> jobs;
  for (int i = 0; i < 4; ++i) jobs.push_back(ready_job("free"));
  const auto container = db_.query_value(
      "INSERT INTO conveyor.job (job_type, priority, config) VALUES ('free', 9, "
      "'{\"pool\": \"default\", \"image\": \"docker.io/library/alpine:3\"}') RETURNING id");
  db_.exec("UPDATE conveyor.job SET status = 'configured' WHERE id = " + container);
  db_.exec("UPDATE conveyor.job SET status = 'ready' WHERE id = " + container);
  start(CONVEYOR_EXECUTION_PATH);
  for (const auto& id : jobs) ASSERT_TRUE(reaches(id, "queued"));
  ASSERT_TRUE(reaches(container, "queued"));

  const auto assigned = [&](const std::string& worker_id) {
    return db_.query_value("SELECT count(*) FROM conveyor.job WHERE status = 'queued' AND worker_id " +
                           (worker_id.empty() ? std::string("IS NULL") : "= " + worker_id));
  };
  EXPECT_EQ(assigned(two), "2") << "two free slots";
  EXPECT_EQ(assigned(one), "1");
  EXPECT_EQ(assigned(""), "2") << "the job no worker had room for, and the container job";
  EXPECT_EQ(assigned(silent), "0");
  EXPECT_EQ(db_.query_value("SELECT worker_id IS NULL FROM conveyor.job WHERE id = " + container), "t");
}

// Issue 14: a job's end (processed) runs admission only while jobs wait for
// a slot. Here they do, with the poll a minute away and no broker: each end admits the
// job waiting at once, for want of a slot of the pool (capacity 2) and then
// of its type (limit 1).
TEST_F(ExecutionTest, AFreedSlotAdmitsTheJobWaitingForItWithoutThePoll) {
  db_.exec("UPDATE conveyor.system_parameters SET max_number_of_worker_instances = 1, worker_concurrency = 2");
  const auto first = ready_job("free");
  const auto second = ready_job("free");
  const auto third = ready_job("free");
  // No broker: no parameters event wakes it either.
  start(CONVEYOR_EXECUTION_PATH, {{"CONVEYOR_KAFKA_BROKERS", ""}, {"CONVEYOR_POLL_INTERVAL_MS", "60000"}});
  ASSERT_TRUE(reaches(second, "queued"));
  EXPECT_EQ(status(third), "ready");
  complete(first);
  ASSERT_TRUE(reaches(third, "queued", 10s));
  complete(second);
  complete(third);
  const auto a = ready_job("limited");
  ASSERT_TRUE(reaches(a, "queued", 10s));
  const auto b = ready_job("limited");
  const auto marker = ready_job("free");
  ASSERT_TRUE(reaches(marker, "queued", 10s)) << "a pass ran after b was ready";
  EXPECT_EQ(status(b), "ready");
  complete(a);
  ASSERT_TRUE(reaches(b, "queued", 10s));
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
  db_.exec(
      "INSERT INTO conveyor.queue_state (kind, name, paused, reason, paused_at, paused_by) "
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
                            "WHERE j.id = " +
                            later),
            "true");
}

// Issue 14: a NOTIFY of ready is as good as certain work, so admission runs
// its locked pass at once, without the probe; that pass's own read says when
// the next back-off ends. No broker, and the poll an hour away: a job ready
// now and one ready with a not_before 2 s ahead are admitted, the second at
// its not_before by the timer alone. Only the timer's wake-up probes.
// (Before the count, the start-up passes and the listener's wake-up probe.)
TEST_F(ExecutionTest, AReadyJobCostsNoProbeAndThePassTimesTheNextBackOff) {
  start(CONVEYOR_EXECUTION_PATH, {{"CONVEYOR_KAFKA_BROKERS", ""}, {"CONVEYOR_POLL_INTERVAL_MS", "1h"}});
  const std::string probes = "conveyor_stage_probes_total{step=\"admit\"}";
  // The first pass probes, and so does the pass the listener's wake-up runs
  // once it has LISTENed on every channel: from then on only NOTIFYs and
  // the timer wake it.
  ASSERT_TRUE(wait_until([&] { return sample(probes) >= 2.0; }, 10s)) << "the first two passes probe";
  // The listener's wake-up (a probe) may come after them: a marker job's
  // pass takes it.
  ASSERT_TRUE(listening());
  ASSERT_TRUE(reaches(ready_job("free"), "queued", 5s));
  const double before = sample(probes);
  ASSERT_TRUE(reaches(ready_job("free"), "queued", 5s));
  EXPECT_EQ(sample(probes), before) << "a NOTIFY of ready probed";
  const auto later = ready_job("free", 0, "now() + interval '2 seconds'");
  ASSERT_TRUE(reaches(later, "queued", 10s)) << "the pass that saw it ready set no timer";
  EXPECT_EQ(db_.query_value("SELECT (c.at >= j.not_before)::text FROM conveyor.job j "
                            "JOIN conveyor.job_status_change c ON c.job_id = j.id AND c.to_status = 'queued' "
                            "WHERE j.id = " +
                            later),
            "true");
  EXPECT_EQ(sample(probes), before + 1) << "the timer's wake-up probes, the NOTIFY of ready does not";
}

// Issue 14: a job's end (a freed slot) runs admission only while jobs wait
// for one. A type at its limit with none of its jobs ready leaves none
// waiting: the end of another type's job then costs no transaction. The
// marker's ready NOTIFY runs the one pass counted.
TEST_F(ExecutionTest, AFreedSlotCostsNoPassWhileATypeAtItsLimitHasNoJobReady) {
  start(CONVEYOR_EXECUTION_PATH, {{"CONVEYOR_KAFKA_BROKERS", ""}, {"CONVEYOR_POLL_INTERVAL_MS", "1h"}});
  const std::string probes = "conveyor_stage_probes_total{step=\"admit\"}";
  const std::string passes = "conveyor_stage_transactions_total{step=\"admit\"}";
  ASSERT_TRUE(wait_until([&] { return sample(probes) >= 2.0; }, 10s)) << "the first two passes probe";
  ASSERT_TRUE(listening());  // its wake-up is taken by the passes below, before the count starts
  ASSERT_TRUE(reaches(ready_job("limited"), "queued", 5s));  // its type is at its limit (1)
  const auto free_job = ready_job("free");
  ASSERT_TRUE(reaches(free_job, "queued", 5s));
  const double before = sample(passes);
  complete(free_job);
  ASSERT_TRUE(reaches(ready_job("free"), "queued", 5s));
  EXPECT_EQ(sample(passes), before + 1) << "the freed slot ran a pass, though no job waited for one";
}

// Issue 13, item 9: a held job is skipped like a canceled one
// (conveyor.job_admissible), however high its priority; clearing held_at
// (here by SQL, as `conveyor job release` does) emits
// io.conveyor.job.released, which wakes admission: the poll interval is an
// hour, so nothing else could admit it in time.
TEST_F(ExecutionTest, AHeldReadyJobIsNotAdmittedUntilReleased) {
  const auto held = ready_job("free", 10);
  db_.exec("UPDATE conveyor.job SET held_at = now() WHERE id = " + held);
  const auto marker = ready_job("free", 0);
  start(CONVEYOR_EXECUTION_PATH, {{"CONVEYOR_POLL_INTERVAL_MS", "1h"}});
  ASSERT_TRUE(reaches(marker, "queued"));
  EXPECT_EQ(status(held), "ready") << "admitted while held";

  // A second pass (woken by the new job's event) still leaves it.
  const auto marker2 = ready_job("free", 0);
  ASSERT_TRUE(reaches(marker2, "queued"));
  EXPECT_EQ(status(held), "ready") << "admitted while held";

  db_.exec("UPDATE conveyor.job SET held_at = NULL WHERE id = " + held);
  ASSERT_TRUE(reaches(held, "queued", 15s));
  EXPECT_EQ(db_.query_value("SELECT string_agg(field, ',' ORDER BY id) FROM conveyor.job_audit WHERE job_id = " + held),
            "hold,release");
}

// Issue 13, item 10. Rate 1 per minute: a priority-0 job overtakes the
// priority-10 jobs once it has waited 10 minutes, however many of them keep
// arriving. Back-dating created_at stands in for the wait, so the test is
// deterministic and quick; capacity 1 makes each admission a visible choice.
TEST_F(ExecutionTest, AgingAdmitsALowPriorityJobWithinItsBound) {
  db_.exec(
      "UPDATE conveyor.system_parameters SET max_number_of_worker_instances = 1, worker_concurrency = 1, "
      "priority_aging_per_minute = 1");
  const auto low = ready_job("free", 0);
  // Waited 5 minutes: effective priority 5, below every new job of 10 for
  // five more minutes, a margin no loaded CI machine eats up.
  db_.exec("UPDATE conveyor.job SET created_at = now() - interval '5 minutes' WHERE id = " + low);
  ready_job("free", 10);
  // The aged order keeps admission's filters: a paused type waits however high or old.
  db_.exec("INSERT INTO conveyor.queue_state (kind, name, paused) VALUES ('job_type', 'other', true)");
  const auto paused = ready_job("other", 20);
  db_.exec("UPDATE conveyor.job SET created_at = now() - interval '1 day' WHERE id = " + paused);
  start(CONVEYOR_EXECUTION_PATH);

  // A steady stream: each admitted high job is replaced by a new one, so a
  // priority-10 job is always ready when admission chooses.
  for (int i = 0; i < 3; ++i) {
    ready_job("free", 10);
    ASSERT_TRUE(wait_until([&] { return !queued_id().empty(); }, 20s));
    const auto admitted = queued_id();
    EXPECT_NE(admitted, low) << "admitted before its 10 minutes of waiting (pass " << i << ")";
    EXPECT_EQ(db_.query_value("SELECT priority FROM conveyor.job WHERE id = " + admitted), "10");
    complete(admitted);
  }
  ASSERT_TRUE(wait_until([&] { return !queued_id().empty(); }, 20s));
  const auto in_flight = queued_id();

  // Past its bound (11 minutes: effective 11): the very next admission takes
  // it, ahead of both high jobs still ready.
  db_.exec("UPDATE conveyor.job SET created_at = now() - interval '11 minutes' WHERE id = " + low);
  ready_job("free", 10);
  ready_job("free", 10);
  ASSERT_EQ(count("free", "ready"), 3);
  complete(in_flight);
  ASSERT_TRUE(reaches(low, "queued"));
  EXPECT_EQ(queued_id(), low);
  EXPECT_EQ(count("free", "ready"), 2) << "both high jobs still wait behind the aged one";
  EXPECT_EQ(status(paused), "ready");
  // The rule is one SQL function; at rate 0 it is the plain priority.
  EXPECT_EQ(db_.query_value("SELECT conveyor.effective_priority(7, now() - interval '1 hour', 0)"), "7");
  EXPECT_EQ(db_.query_value("SELECT conveyor.effective_priority(0, now() - interval '11 minutes', 1)"), "11");
  // A rate below 0, NaN or infinite would make the order meaningless: the row refuses it.
  for (const char* bad : {"-1", "'NaN'", "'Infinity'"}) {
    EXPECT_ANY_THROW(db_.exec(std::string("UPDATE conveyor.system_parameters SET priority_aging_per_minute = ") + bad))
        << bad;
  }
}

// Issue 13, item 10 and DESIGN section 8: a per-type concurrency limit is
// exact across replicas. Two conveyor-execution processes admit 200 jobs of a
// type limited to 3 while the test, as the workers, finishes every admitted
// job. The history is replayed in id order (ids are taken inside each
// transaction, so a completion an admission saw has a smaller id than the
// admission) and the highest number in flight must be the limit, not more.
TEST_F(ExecutionTest, PerTypeLimitHeldExactlyWithTwoExecutionReplicas) {
  constexpr int kJobs = 120;  // 40 rounds of 3 in flight: passes of both replicas race in each
  db_.exec("INSERT INTO conveyor.job_type (name, command, concurrency_limit) VALUES ('triple', '[\"true\"]', 3)");
  db_.exec("UPDATE conveyor.system_parameters SET max_number_of_worker_instances = 8, worker_concurrency = 4");
  db_.exec(
      "INSERT INTO conveyor.job (job_type, config) SELECT 'triple', '{\"pool\": \"default\"}' "
      "FROM generate_series(1, " +
      std::to_string(kJobs) +
      ");"
      "UPDATE conveyor.job SET status = 'configured' WHERE job_type = 'triple';"
      "UPDATE conveyor.job SET status = 'ready' WHERE job_type = 'triple'");
  // Small batches and a short poll: many admission passes race each other.
  const std::map<std::string, std::string> fast{{"CONVEYOR_POLL_INTERVAL_MS", "20ms"}, {"CONVEYOR_BATCH_SIZE", "2"}};
  start(CONVEYOR_EXECUTION_PATH, fast);
  conveyor::testing::ChildProcess::Options second;
  second.argv = {CONVEYOR_EXECUTION_PATH};
  second.env = {
      {"CONVEYOR_DATABASE_URL", db_.url()},       {"CONVEYOR_KAFKA_BROKERS", broker_.bootstrap()},
      {"CONVEYOR_TOPIC_PREFIX", prefix_},         {"CONVEYOR_HTTP_PORT", "0"},
      {"CONVEYOR_DATA_DIR", data_dir().string()}, {"CONVEYOR_INSTANCE_ID", conveyor::testing::unique_name("stage2")},
      {"CONVEYOR_POLL_INTERVAL_MS", "20ms"},      {"CONVEYOR_BATCH_SIZE", "2"}};
  second.stdout_file = dir_ / "second.log";
  conveyor::testing::ChildProcess replica(second);

  // The workers: everything admitted runs and ends, one step per look.
  const bool all_done = wait_until(
      [&] {
        db_.exec(
            "UPDATE conveyor.job SET status = 'done' WHERE job_type = 'triple' AND status = 'processed';"
            "UPDATE conveyor.job SET status = 'processed' WHERE job_type = 'triple' AND status = 'started';"
            "UPDATE conveyor.job SET status = 'started' WHERE job_type = 'triple' AND status = 'queued'");
        return count("triple", "done") == kJobs;
      },
      180s);
  EXPECT_TRUE(all_done) << count("triple", "done") << " of " << kJobs << " done";
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.service_instance "
                            "WHERE service = 'conveyor-execution' AND status = 'up'"),
            "2")
      << "both replicas must have been running";

  // +1 on admission, -1 when the job leaves queued/started; the running sum
  // is the number in flight after each step.
  const auto most_in_flight = db_.query_value(R"(
      SELECT max(in_flight) FROM (
        SELECT sum(CASE WHEN c.to_status = 'queued' THEN 1
                        WHEN c.from_status IN ('queued', 'started')
                             AND c.to_status NOT IN ('queued', 'started') THEN -1
                        ELSE 0 END) OVER (ORDER BY c.id) AS in_flight
        FROM conveyor.job_status_change c JOIN conveyor.job j ON j.id = c.job_id
        WHERE j.job_type = 'triple') steps)");
  EXPECT_EQ(most_in_flight, "3");
  EXPECT_EQ(replica.stop(10s), 0) << read_text(dir_ / "second.log");
}

// Issue 14: admission's candidates were planned on every pass (0.45-0.95
// ms of planning), because PostgreSQL 15's generic plan sorted every ready
// job. conveyor.admission_candidates plans them once per connection, under
// settings of its own, as a walk of job_ready_idx that stops at the room:
// auto_explain shows the plan of the statement inside it.
TEST(AdmissionPlan, TheCandidatesAreAGenericWalkOfTheReadyIndex) {
  conveyor::testing::TestDatabase db;
  db.exec(R"(INSERT INTO conveyor.job_type (name, command) VALUES ('free', '["true"]'))");
  db.exec("INSERT INTO conveyor.job (job_type, config) SELECT 'free', '{}' FROM generate_series(1, 5000)");
  db.exec("UPDATE conveyor.job SET status = 'configured'");
  db.exec("UPDATE conveyor.job SET status = 'ready'");
  db.exec("ANALYZE conveyor.job");
  const auto r = conveyor::testing::psql(
      db.url(),
      "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on; "
      "SET auto_explain.log_level = notice; SET client_min_messages = notice; "
      "SELECT count(*) FROM conveyor.admission_candidates(NULL, '{}', 2); "
      "SELECT count(*) FROM conveyor.admission_candidates(NULL, '{}', 2);");
  ASSERT_EQ(r.status, 0) << r.output;
  // The last plan of the statement inside the function.
  const auto at = r.output.rfind("FROM conveyor.job j");
  ASSERT_NE(at, std::string::npos) << r.output;
  const std::string plan = r.output.substr(at, r.output.find("Query Text:", at) - at);
  EXPECT_NE(plan.find("Index Scan using job_ready_idx"), std::string::npos) << plan;
  EXPECT_NE(plan.find("ANY ($1)"), std::string::npos) << "not the generic plan:\n" << plan;
  EXPECT_EQ(plan.find("Sort"), std::string::npos) << plan;
  // Its settings ended with it.
  EXPECT_EQ(db.query_value("SELECT current_setting('enable_sort') "
                           "FROM (SELECT count(*) FROM conveyor.admission_candidates(NULL, '{}', 1)) c"),
            "on");
}

// The candidate filter is written twice: in conveyor.admission_candidates
// (the migration, aging 0) and in execution.cpp's aged statement. With an
// aging too small to move any job, both must claim the same jobs in the
// same order, among ready jobs of every kind the filter excludes: held,
// canceled, backing off, of a paused type or pool, outside
// job_types_list, of a full type, and of another priority.
TEST(AdmissionPlan, TheAgedCandidatesAreTheCandidatesWhenNothingAges) {
  conveyor::testing::TestDatabase db;
  db.exec(R"(INSERT INTO conveyor.job_type (name, command) VALUES
             ('a', '["true"]'), ('b', '["true"]'), ('c', '["true"]'), ('full', '["true"]'))");
  db.exec(R"(INSERT INTO conveyor.job (job_type, priority, config)
             SELECT (ARRAY['a', 'b', 'c', 'full'])[1 + g % 4], g % 3,
                    CASE WHEN g % 5 = 0 THEN '{"pool": "gpu"}' ELSE '{}' END::jsonb
             FROM generate_series(1, 120) g)");
  db.exec("UPDATE conveyor.job SET status = 'configured'");
  db.exec("UPDATE conveyor.job SET status = 'ready'");
  db.exec("UPDATE conveyor.job SET held_at = now() WHERE id % 7 = 0");
  db.exec("UPDATE conveyor.job SET not_before = now() + interval '1 hour' WHERE id % 11 = 0");
  db.exec("UPDATE conveyor.job SET not_before = now() - interval '1 hour' WHERE id % 13 = 0");
  db.exec("UPDATE conveyor.job SET canceled_at = now() WHERE id % 17 = 0");
  db.exec(
      "INSERT INTO conveyor.queue_state (kind, name, paused) VALUES ('job_type', 'c', true), ('pool', 'gpu', true)");

  db::PoolOptions po;
  po.url = db.url();
  db::Pool pool(po);
  const auto ids = [&](const runtime::Claim& claim) {
    return pool.transact([&](db::Tx& tx) {
      std::vector<std::int64_t> out;
      for (auto row : tx.exec(claim.statement, claim.params)) out.push_back(row["id"].as_int());
      return out;
    });
  };
  struct Case {
    std::optional<std::vector<std::string>> job_types;
    std::vector<std::string> full;
    std::int64_t room;
  };
  for (const Case& c : {Case{std::nullopt, {}, 200}, Case{std::nullopt, {"full"}, 200},
                        Case{std::vector<std::string>{"a", "full"}, {"full"}, 200}, Case{std::nullopt, {"full"}, 7}}) {
    const auto plain = ids(execution::candidates_claim(c.job_types, c.full, c.room, 0));
    const auto aged = ids(execution::candidates_claim(c.job_types, c.full, c.room, 1e-12));
    EXPECT_FALSE(plain.empty());
    EXPECT_EQ(plain, aged) << "room " << c.room << ", full " << c.full.size();
  }
  // The filter excludes something in each of those ways.
  const auto all = ids(execution::candidates_claim(std::nullopt, {}, 200, 0));
  EXPECT_LT(all.size(), 120u);
  EXPECT_GT(all.size(), 30u);
}

}  // namespace
}  // namespace conveyor::stages_test
