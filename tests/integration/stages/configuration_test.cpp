// conveyor-configuration as a real process against a real PostgreSQL and
// devbroker: initialized -> configured -> ready with the argv rendered from
// the job type, dependency chains waiting for their upstream outputs, and the
// internal_error subtypes (dependency_failed, unknown_job_type,
// invalid_params, dependency_missing).
#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "conveyor/db/db.hpp"
#include "stage_fixture.hpp"

namespace conveyor::stages_test {
namespace {

using nlohmann::json;

// Runs `sql` in a transaction of its own, on a thread of its own, and keeps
// that transaction open (its row locks held, its writes unseen by others)
// until release() or the end of the scope. The constructor returns once
// `sql` has run.
class OpenTransaction {
 public:
  OpenTransaction(const std::string& url, std::string sql) : session_(url, "test-open-transaction") {
    thread_ = std::thread([this, sql = std::move(sql)] {
      bool ran = false;
      try {
        conveyor::db::TxOptions once;
        once.max_attempts = 1;
        session_.transact(
            [&](conveyor::db::Tx& tx) {
              tx.exec_script(sql);
              ran_.set_value();
              ran = true;
              release_.get_future().wait();
            },
            once);
      } catch (...) {
        // Before `sql` ran: the constructor throws it. After: the commit
        // failed, and the test's own checks see what is missing.
        if (!ran) ran_.set_exception(std::current_exception());
      }
    });
    ran_.get_future().get();
  }
  OpenTransaction(const OpenTransaction&) = delete;
  OpenTransaction& operator=(const OpenTransaction&) = delete;
  ~OpenTransaction() { release(); }
  // Commits it.
  void release() {
    if (!thread_.joinable()) return;
    release_.set_value();
    thread_.join();
  }

 private:
  conveyor::db::Session session_;
  std::promise<void> ran_, release_;
  std::thread thread_;
};

class ConfigurationTest : public StageTest {
 protected:
  void SetUp() override {
    StageTest::SetUp();
    db_.exec(R"(INSERT INTO conveyor.job_type
        (name, command, image, timeout_s, max_attempts, retry_backoff_s, concurrency_limit, sinks, params_schema, env)
      VALUES ('tile',
        '["tool", "--tile", "{tile}", "--job", "{job_id}", "--out", "{output_dir}", "{inputs}"]',
        'registry:5000/tools/tile:1.0', 120, 3, 7, 2,
        '[{"kind": "file", "dir": "catalog"}]',
        '{"type": "object", "properties": {"tile": {"type": "string", "minLength": 1}}, "required": ["tile"]}',
        '{"GDAL_CACHEMAX": "512"}'))");
    db_.exec(R"(UPDATE conveyor.system_parameters SET image_tags = '{"tile": "2.5"}')");
  }
  json config(const std::string& id) const {
    return json::parse(db_.query_value("SELECT config::text FROM conveyor.job WHERE id = " + id));
  }
  std::string out_dir(const std::string& id) const {
    return (fs::absolute(data_dir()) / "outputs" / ("job-" + id)).string() + "/";
  }
  // Moves a ready job along the hot path to `final_status` as a worker and
  // publication would, with `outputs` as its result.
  void finish(const std::string& id, const std::string& final_status, const json& outputs = json::array()) const {
    db_.exec("UPDATE conveyor.job SET status = 'queued' WHERE id = " + id);
    db_.exec("UPDATE conveyor.job SET status = 'started' WHERE id = " + id);
    if (final_status == "failed") {
      db_.exec("UPDATE conveyor.job SET status = 'failed' WHERE id = " + id);
      return;
    }
    json result = {{"exit_code", 0}, {"outputs", outputs}};
    db_.exec("UPDATE conveyor.job SET status = 'processed', result = '" + result.dump() + "' WHERE id = " + id);
    db_.exec("UPDATE conveyor.job SET status = 'done' WHERE id = " + id);
  }
};

// Runbook 001's image tag roll-out: a job configured after `params set
// image_tags` commits gets the new tag, though the service hears of the
// change by its event only later (a new user's trial, stop 44).
TEST_F(ConfigurationTest, AnImageTagSetElsewhereAppliesToTheNextJobAtOnce) {
  start(CONVEYOR_CONFIGURATION_PATH);
  const auto first = insert_job("tile", R"({"tile": "A"})");
  ASSERT_TRUE(reaches(first, "ready"));
  EXPECT_EQ(config(first).at("image"), "registry:5000/tools/tile:2.5");
  for (const std::string tag : {"2.6", "2.7", "2.8"}) {
    db_.exec(R"(UPDATE conveyor.system_parameters SET image_tags = '{"tile": ")" + tag + R"("}')");
    const auto id = insert_job("tile", R"({"tile": "B"})");
    ASSERT_TRUE(reaches(id, "ready"));
    EXPECT_EQ(config(id).at("image"), "registry:5000/tools/tile:" + tag);
  }
}

TEST_F(ConfigurationTest, InitializedJobBecomesReadyWithItsArgvRendered) {
  const auto id = insert_job("tile", R"({"tile": "T31 TCH"})");
  start(CONVEYOR_CONFIGURATION_PATH);
  ASSERT_TRUE(reaches(id, "ready"));
  EXPECT_EQ(history(id), ">initialized,initialized>configured,configured>ready");

  const auto c = config(id);
  // "{inputs}" with no inputs expands to no argument; a value with a space stays one argument.
  // The type has an image: "{output_dir}" is where the container sees the
  // job's output dir (config.output_dir stays the host's).
  EXPECT_EQ(c.at("argv"), json({"tool", "--tile", "T31 TCH", "--job", id, "--out", "/conveyor/output/"}));
  EXPECT_EQ(c.at("image"), "registry:5000/tools/tile:2.5");  // image_tags override, registry port kept
  EXPECT_EQ(c.at("env"), json({{"GDAL_CACHEMAX", "512"}}));
  EXPECT_EQ(c.at("timeout_s"), 120);
  EXPECT_EQ(c.at("max_attempts"), 3);
  EXPECT_EQ(c.at("retry_backoff_s"), 7);
  EXPECT_EQ(c.at("concurrency_limit"), 2);
  EXPECT_EQ(c.at("pool"), "default");
  EXPECT_EQ(c.at("output_dir"), out_dir(id));
  EXPECT_EQ(c.at("inputs"), json::array());
  ASSERT_EQ(c.at("sinks").size(), 1u);
  EXPECT_EQ(c.at("sinks")[0].at("kind"), "file");
  EXPECT_EQ(c.at("sinks")[0].at("dir"), "catalog");
  EXPECT_EQ(db_.query_value("SELECT max_attempts FROM conveyor.job WHERE id = " + id), "3");
  EXPECT_EQ(db_.query_value("SELECT DISTINCT actor FROM conveyor.job_status_change WHERE from_status IS NOT NULL "
                            "AND job_id = " +
                            id),
            "conveyor-configuration");
  // Issue 14: a job with nothing to wait for is configured and readied by
  // one transaction (one commit, no wake-up between), each change still
  // with its own history row and event.
  EXPECT_EQ(db_.query_value("SELECT count(DISTINCT xmin::text) FROM conveyor.job_status_change "
                            "WHERE to_status IN ('configured', 'ready') AND job_id = " +
                            id),
            "1");
  EXPECT_EQ(db_.query_value("SELECT string_agg(type, ',' ORDER BY id) FROM conveyor.outbox "
                            "WHERE type IN ('io.conveyor.job.configured', 'io.conveyor.job.ready') AND key = '" +
                            id + "'"),
            "io.conveyor.job.configured,io.conveyor.job.ready");
}

TEST_F(ConfigurationTest, DependentJobWaitsThenGetsTheUpstreamOutputsAsInputs) {
  start(CONVEYOR_CONFIGURATION_PATH);
  const auto up = insert_job("tile", R"({"tile": "A"})");
  const auto down = insert_job("tile", R"({"tile": "B"})", "{" + up + "}");
  ASSERT_TRUE(reaches(up, "ready"));
  ASSERT_TRUE(reaches(down, "configured"));
  // Before the upstream job ran, its output folder stands for its files.
  EXPECT_EQ(config(down).at("inputs"), json({out_dir(up)}));

  // A later job without dependencies is not held up by the waiting one.
  const auto other = insert_job("tile", R"({"tile": "C"})");
  ASSERT_TRUE(reaches(other, "ready"));
  EXPECT_EQ(status(down), "configured");

  const json outputs = {out_dir(up) + "a.tif", out_dir(up) + "b.tif"};
  finish(up, "done", outputs);
  ASSERT_TRUE(reaches(down, "ready"));
  const auto c = config(down);
  EXPECT_EQ(c.at("inputs"), outputs);
  EXPECT_EQ(c.at("argv"), json({"tool", "--tile", "B", "--job", down, "--out", "/conveyor/output/",
                                outputs[0].get<std::string>(), outputs[1].get<std::string>()}));
}

// One configure pass readies, in its own transaction, a job with no
// dependencies (with no read: issue 14) and one whose dependency is done
// (with its outputs as inputs); one whose dependency still runs stays
// configured. The history rows of one transaction share its xmin.
TEST_F(ConfigurationTest, AConfigurePassReadiesWhatHasNothingToWaitFor) {
  start(CONVEYOR_CONFIGURATION_PATH);
  const auto done = insert_job("tile", R"({"tile": "U"})");
  const auto running = insert_job("tile", R"({"tile": "R"})");
  ASSERT_TRUE(reaches(done, "ready"));
  ASSERT_TRUE(reaches(running, "ready"));
  finish(done, "done", json::array({out_dir(done) + "u.tif"}));
  db_.exec("UPDATE conveyor.job SET status = 'queued' WHERE id = " + running);
  // One statement: one configure batch (unless a pass lands between rows).
  const auto ids = db_.query(
      "INSERT INTO conveyor.job (job_type, params, depends_on) VALUES "
      "('tile', '{\"tile\": \"A\"}', '{}'), ('tile', '{\"tile\": \"B\"}', '{" +
      done + "}'), ('tile', '{\"tile\": \"C\"}', '{" + running + "}') RETURNING id");
  ASSERT_EQ(ids.size(), 3u);
  const std::string plain = ids[0][0], decided = ids[1][0], waiting = ids[2][0];
  ASSERT_TRUE(reaches(plain, "ready"));
  ASSERT_TRUE(reaches(decided, "ready"));
  ASSERT_TRUE(reaches(waiting, "configured"));
  EXPECT_EQ(config(decided).at("inputs"), json::array({out_dir(done) + "u.tif"}));
  for (const auto& id : {plain, decided}) {
    EXPECT_EQ(history(id), ">initialized,initialized>configured,configured>ready") << "job " << id;
    EXPECT_EQ(db_.query_value("SELECT count(DISTINCT xmin::text) FROM conveyor.job_status_change WHERE job_id = " + id +
                              " AND to_status IN ('configured', 'ready')"),
              "1")
        << "job " << id << " was readied in another transaction";
  }
  EXPECT_EQ(status(waiting), "configured");
}

// Issue 14: each configure pass read its jobs' types again, one round trip
// per job at a low rate. A type is now read again only when its row
// changed (the claim names its version, the row's xmin): the second job of
// the same type costs no read, and a change to the type applies to the
// next job.
TEST_F(ConfigurationTest, AJobTypeIsReadAgainOnlyWhenItChanged) {
  start(CONVEYOR_CONFIGURATION_PATH);
  const auto reads = [&] { return sample("conveyor_configuration_type_reads_total"); };
  const auto first = insert_job("tile", R"({"tile": "a"})");
  ASSERT_TRUE(reaches(first, "ready"));
  EXPECT_EQ(reads(), 1.0);
  const auto second = insert_job("tile", R"({"tile": "b"})");
  ASSERT_TRUE(reaches(second, "ready"));
  EXPECT_EQ(reads(), 1.0) << "an unchanged type was read again";
  EXPECT_EQ(config(second).at("argv").at(0), "tool");

  db_.exec(R"(UPDATE conveyor.job_type SET command = '["tool2", "{tile}"]' WHERE name = 'tile')");
  const auto third = insert_job("tile", R"({"tile": "c"})");
  ASSERT_TRUE(reaches(third, "ready"));
  EXPECT_EQ(reads(), 2.0);
  EXPECT_EQ(config(third).at("argv"), json({"tool2", "c"})) << "the changed type did not apply";
}

// A type with no row has no version to keep it by: it is read once per
// batch, not once per job.
TEST_F(ConfigurationTest, AnUnknownTypeIsReadOncePerBatch) {
  for (int i = 0; i < 3; ++i) insert_job("no-such-type");
  const auto last = insert_job("no-such-type");
  start(CONVEYOR_CONFIGURATION_PATH);
  ASSERT_TRUE(reaches(last, "internal_error"));
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job WHERE status = 'internal_error'"), "4");
  EXPECT_EQ(sample("conveyor_configuration_type_reads_total"), 1.0) << "the four jobs of one batch";
}

TEST_F(ConfigurationTest, FailedDependencyFailsTheDownstreamJob) {
  start(CONVEYOR_CONFIGURATION_PATH);
  const auto up = insert_job("tile", R"({"tile": "A"})");
  const auto down = insert_job("tile", R"({"tile": "B"})", "{" + up + "}");
  ASSERT_TRUE(reaches(up, "ready"));
  ASSERT_TRUE(reaches(down, "configured"));
  finish(up, "failed");
  ASSERT_TRUE(reaches(down, "internal_error"));
  EXPECT_EQ(db_.query_value("SELECT error_subtype FROM conveyor.job WHERE id = " + down), "dependency_failed");
  const auto message = db_.query_value("SELECT error_message FROM conveyor.job WHERE id = " + down);
  EXPECT_NE(message.find(up), std::string::npos) << message;
  EXPECT_NE(message.find("failed"), std::string::npos) << message;
  // The history row carries the subtype too.
  EXPECT_EQ(db_.query_value("SELECT error_subtype FROM conveyor.job_status_change WHERE to_status = "
                            "'internal_error' AND job_id = " +
                            down),
            "dependency_failed");
}

TEST_F(ConfigurationTest, BadJobsEndInInternalErrorWithASubtypeNamingTheProblem) {
  db_.exec("INSERT INTO conveyor.job_type (name, command, enabled) VALUES ('off', '[\"true\"]', false)");
  const auto unknown = insert_job("no-such-type");
  const auto disabled = insert_job("off");
  const auto bad_params = insert_job("tile", R"({"tile": 5})");
  const auto missing_dep = insert_job("tile", R"({"tile": "A"})", "{987654}");
  const auto good = insert_job("tile", R"({"tile": "A"})");
  start(CONVEYOR_CONFIGURATION_PATH);

  ASSERT_TRUE(reaches(good, "ready"));
  const auto subtype = [&](const std::string& id) {
    return db_.query_value(
        "SELECT coalesce(error_subtype, '') || ': ' || coalesce(error_message, '') "
        "FROM conveyor.job WHERE id = " +
        id);
  };
  ASSERT_TRUE(reaches(unknown, "internal_error"));
  EXPECT_EQ(subtype(unknown).rfind("unknown_job_type: ", 0), 0u) << subtype(unknown);
  EXPECT_NE(subtype(unknown).find("no-such-type"), std::string::npos) << subtype(unknown);
  ASSERT_TRUE(reaches(disabled, "internal_error"));
  EXPECT_EQ(subtype(disabled).rfind("unknown_job_type: ", 0), 0u) << subtype(disabled);
  EXPECT_NE(subtype(disabled).find("disabled"), std::string::npos) << subtype(disabled);
  ASSERT_TRUE(reaches(bad_params, "internal_error"));
  EXPECT_EQ(subtype(bad_params).rfind("invalid_params: ", 0), 0u) << subtype(bad_params);
  EXPECT_NE(subtype(bad_params).find("tile"), std::string::npos) << subtype(bad_params);
  ASSERT_TRUE(reaches(missing_dep, "internal_error"));
  EXPECT_EQ(subtype(missing_dep).rfind("dependency_missing: ", 0), 0u) << subtype(missing_dep);
  EXPECT_NE(subtype(missing_dep).find("987654"), std::string::npos) << subtype(missing_dep);
}

TEST_F(ConfigurationTest, CanceledJobsAreLeftAlone) {
  const auto canceled = insert_job("tile", R"({"tile": "A"})");
  db_.exec("UPDATE conveyor.job SET canceled_at = now() WHERE id = " + canceled);
  const auto marker = insert_job("tile", R"({"tile": "B"})");
  start(CONVEYOR_CONFIGURATION_PATH);
  ASSERT_TRUE(reaches(marker, "ready"));
  EXPECT_EQ(status(canceled), "initialized");
}

// Issue 14, item 2: a stage wakes from PostgreSQL NOTIFY, not from Kafka
// or the poll. No broker at all and a one-minute poll: a job inserted once
// the service listens still moves within seconds.
class StageWakeTest : public ConfigurationTest {
 protected:
  // The pid of the service's LISTEN connection ("" while there is none).
  std::string listener_pid() const {
    return db_.query_value(
        "SELECT coalesce(max(pid)::text, '') FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'conveyor-configuration-listen' AND query ILIKE 'LISTEN%'");
  }
  void start_without_broker() {
    start(CONVEYOR_CONFIGURATION_PATH, {{"CONVEYOR_KAFKA_BROKERS", ""}, {"CONVEYOR_POLL_INTERVAL_MS", "60000"}});
  }
};

TEST_F(StageWakeTest, AJobMovesOnNotifyWithNoBrokerAndNoPoll) {
  const auto first = insert_job("tile", R"({"tile": "A"})");
  start_without_broker();
  ASSERT_TRUE(reaches(first, "ready"));  // the start-up scan
  ASSERT_TRUE(wait_until([&] { return !listener_pid().empty(); }, 10s)) << "the service never listened";

  const auto woken = insert_job("tile", R"({"tile": "B"})");
  EXPECT_TRUE(reaches(woken, "ready", 5s)) << "not woken by NOTIFY (the poll is 60 s)";
}

// Issue 14: an upstream job's end (done) wakes the ready step only while a
// configured job waits. The first job leaves none waiting (its probe says
// so); the downstream one, configured later, waits, and its upstream's end
// readies it with no broker and the poll a minute away.
TEST_F(StageWakeTest, AnUpstreamEndReadiesTheJobWaitingForItWithNoBrokerAndNoPoll) {
  start_without_broker();
  ASSERT_TRUE(wait_until([&] { return !listener_pid().empty(); }, 10s)) << "the service never listened";
  ASSERT_TRUE(reaches(insert_job("tile", R"({"tile": "0"})"), "ready", 5s));
  const auto up = insert_job("tile", R"({"tile": "A"})");
  const auto down = insert_job("tile", R"({"tile": "B"})", "{" + up + "}");
  ASSERT_TRUE(reaches(up, "ready", 5s));
  ASSERT_TRUE(reaches(down, "configured", 5s));
  finish(up, "done");
  EXPECT_TRUE(reaches(down, "ready", 5s)) << "not woken by the upstream job's end (the poll is 60 s)";
}

// Issue 14: a job with nothing to wait for costs configuration no probe. Its
// initialized NOTIFY runs the configure transaction at once (it readies the
// job too), and the NOTIFY of configured that this commit sends itself wakes
// the ready step only while a configured job waits. The second job is a
// marker: once it is ready, the first job's NOTIFYs have been taken.
TEST_F(StageWakeTest, AJobWithNothingToWaitForCostsNoProbe) {
  start_without_broker();
  const std::string configure = "conveyor_stage_probes_total{step=\"configure\"}";
  const std::string ready = "conveyor_stage_probes_total{step=\"ready\"}";
  // The first pass probes every step, and so does the pass the listener's
  // wake-up runs once it has LISTENed on every channel.
  ASSERT_TRUE(wait_until([&] { return sample(configure) >= 2.0 && sample(ready) >= 2.0; }, 10s))
      << "the first two passes probe every step";
  // The listener's wake-up (probes) may come after them: a marker job's
  // passes take it.
  ASSERT_TRUE(listening());
  ASSERT_TRUE(reaches(insert_job("tile", R"({"tile": "M"})"), "ready", 5s));
  const double configure_before = sample(configure);
  const double ready_before = sample(ready);
  ASSERT_TRUE(reaches(insert_job("tile", R"({"tile": "A"})"), "ready", 5s));
  ASSERT_TRUE(reaches(insert_job("tile", R"({"tile": "B"})"), "ready", 5s));
  EXPECT_EQ(sample(configure), configure_before) << "a NOTIFY of initialized probed";
  EXPECT_EQ(sample(ready), ready_before) << "the service's own NOTIFY of configured probed";
}

// Issue 14: an upstream job's end readies the jobs that wait on it without
// a walk of every waiting job. 300 jobs wait on a job that never ends; the
// end of another job leaves a candidate for its one dependent
// (conveyor.ready_candidate, written by the status trigger), which the
// ready step readies. The walk of every waiting job (the ready_scan step)
// ran at the first pass only: the poll, its cadence, is a minute.
TEST_F(StageWakeTest, AnUpstreamEndReadiesItsDependentWithoutWalkingEveryWaitingJob) {
  start_without_broker();
  ASSERT_TRUE(wait_until([&] { return !listener_pid().empty(); }, 10s)) << "the service never listened";
  const std::string scans = "conveyor_stage_probes_total{step=\"ready_scan\"}";
  ASSERT_TRUE(wait_until([&] { return sample(scans) >= 1.0; }, 10s)) << "the first pass walks the waiting jobs";
  const auto never = insert_job("tile", R"({"tile": "N"})");
  const auto up = insert_job("tile", R"({"tile": "U"})");
  ASSERT_TRUE(reaches(never, "ready", 5s));
  ASSERT_TRUE(reaches(up, "ready", 5s));
  db_.exec(
      "INSERT INTO conveyor.job (job_type, params, depends_on) SELECT 'tile', "
      "jsonb_build_object('tile', 'W' || n), '{" +
      never + "}' FROM generate_series(1, 300) n");
  const auto down = insert_job("tile", R"({"tile": "D"})", "{" + up + "}");
  ASSERT_TRUE(reaches(down, "configured", 5s));
  ASSERT_TRUE(wait_until(
      [&] { return db_.query_value("SELECT count(*) FROM conveyor.job WHERE status = 'configured'") == "301"; }, 10s));
  const double scans_before = sample(scans);

  finish(up, "done");
  EXPECT_TRUE(reaches(down, "ready", 5s)) << "not readied by its upstream job's end (the poll is 60 s)";
  EXPECT_EQ(sample(scans), scans_before) << "the ready step walked every waiting job";
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job WHERE status = 'configured'"), "300");
  EXPECT_TRUE(wait_until([&] { return db_.query_value("SELECT count(*) FROM conveyor.ready_candidate") == "0"; }, 5s))
      << "a candidate was left behind";
}

// A job no end left a candidate for (here its upstream ended with the
// triggers off, as when the job was configured by a transaction that did
// not see that end, committed after the end's trigger looked) is readied by
// the walk of every waiting job, a poll interval later at most.
TEST_F(StageWakeTest, AJobNoEndLeftACandidateForIsReadiedByTheWalk) {
  start(CONVEYOR_CONFIGURATION_PATH, {{"CONVEYOR_KAFKA_BROKERS", ""}, {"CONVEYOR_POLL_INTERVAL_MS", "200"}});
  const auto up = insert_job("tile", R"({"tile": "U"})");
  const auto down = insert_job("tile", R"({"tile": "D"})", "{" + up + "}");
  ASSERT_TRUE(reaches(up, "ready", 5s));
  ASSERT_TRUE(reaches(down, "configured", 5s));
  db_.exec("SET session_replication_role = replica; UPDATE conveyor.job SET status = 'done' WHERE id = " + up +
           "; SET session_replication_role = origin");
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.ready_candidate"), "0");
  EXPECT_TRUE(reaches(down, "ready", 5s)) << "the walk did not find it (every 200 ms)";
}

// The status trigger writes a candidate for each configured job that waits
// on a job the statement ended (any end: done, failed, canceled,
// internal_error), and none for a statement that ends nothing or ends jobs
// no one waits on. A candidate already there is kept (its job waits on two).
TEST_F(ConfigurationTest, AnEndWritesACandidateForEachConfiguredJobThatWaitsOnIt) {
  const auto a = insert_job("tile", R"({"tile": "A"})");
  const auto b = insert_job("tile", R"({"tile": "B"})");
  const auto lone = insert_job("tile", R"({"tile": "L"})");
  const auto on_a = insert_job("tile", R"({"tile": "X"})", "{" + a + "}");
  const auto on_both = insert_job("tile", R"({"tile": "Y"})", "{" + a + "," + b + "}");
  const auto unconfigured = insert_job("tile", R"({"tile": "Z"})", "{" + b + "}");
  db_.exec("UPDATE conveyor.job SET status = 'configured' WHERE id IN (" + on_a + ", " + on_both + ")");
  const auto candidates = [&] {
    return db_.query_value(
        "SELECT coalesce(string_agg(job_id::text, ',' ORDER BY job_id), '') "
        "FROM conveyor.ready_candidate");
  };
  db_.exec("UPDATE conveyor.job SET status = 'configured' WHERE id IN (" + a + ", " + b + ", " + lone + ")");
  EXPECT_EQ(candidates(), "") << "a statement that ends nothing";
  db_.exec("UPDATE conveyor.job SET status = 'canceled' WHERE id = " + lone);
  EXPECT_EQ(candidates(), "") << "an end no one waits on";
  db_.exec("UPDATE conveyor.job SET status = 'canceled' WHERE id = " + a);
  EXPECT_EQ(candidates(), on_a + "," + on_both);
  db_.exec("UPDATE conveyor.job SET status = 'internal_error' WHERE id = " + b);
  EXPECT_EQ(candidates(), on_a + "," + on_both) << "job " << unconfigured << " waits on b but is not configured";
  // A job an operator moves to configured is one too; configuration's own
  // move from initialized is not (its pass readies what it can at once).
  db_.exec("DELETE FROM conveyor.ready_candidate");
  db_.exec("UPDATE conveyor.job SET status = 'internal_error' WHERE id = " + on_a);
  db_.exec("UPDATE conveyor.job SET status = 'error_checked' WHERE id = " + on_a);
  db_.exec("UPDATE conveyor.job SET status = 'configured' WHERE id IN (" + on_a + ", " + unconfigured + ")");
  EXPECT_EQ(candidates(), on_a);
}

// The race the candidate's lock closes. A job waits on two; the first one's
// end left its candidate. The second one's end writes it again and holds
// its lock until it commits, so the ready step, whose read does not see
// that end yet, cannot take the candidate and drop it as undecided: it
// skips it, and finds it decided once the end committed. (With ON CONFLICT
// DO NOTHING the step would drop it, and the job would wait for the walk.)
TEST_F(ConfigurationTest, AnEndThatComesWhileTheReadyStepReadsKeepsItsCandidate) {
  const auto a = insert_job("tile", R"({"tile": "A"})");
  const auto b = insert_job("tile", R"({"tile": "B"})");
  const auto d = insert_job("tile", R"({"tile": "D"})", "{" + a + "," + b + "}");
  db_.exec("UPDATE conveyor.job SET status = 'configured' WHERE id IN (" + a + ", " + b + ", " + d + ")");
  db_.exec("UPDATE conveyor.job SET status = 'canceled' WHERE id = " + a);
  ASSERT_EQ(db_.query_value("SELECT string_agg(job_id::text, ',') FROM conveyor.ready_candidate"), d);

  OpenTransaction end(db_.url(), "UPDATE conveyor.job SET status = 'canceled' WHERE id = " + b);
  conveyor::db::Session step(db_.url(), "test-ready-step");
  step.transact([&](conveyor::db::Tx& tx) {
    EXPECT_TRUE(
        tx.exec_script("SELECT job_id FROM conveyor.ready_candidate ORDER BY job_id LIMIT 200 FOR UPDATE SKIP LOCKED")
            .empty())
        << "the candidate an uncommitted end wrote again was not locked";
  });
  end.release();
  EXPECT_EQ(db_.query_value("SELECT string_agg(job_id::text, ',') FROM conveyor.ready_candidate"), d);
}

TEST_F(StageWakeTest, TheListenConnectionComesBackAfterItsBackendIsTerminated) {
  start_without_broker();
  ASSERT_TRUE(wait_until([&] { return !listener_pid().empty(); }, 10s)) << "the service never listened";
  ASSERT_TRUE(listening());
  const std::string before = listener_pid();
  db_.query_value("SELECT pg_terminate_backend(" + before + ")::text");
  ASSERT_TRUE(wait_until([&] { return !listener_pid().empty() && listener_pid() != before; }, 10s))
      << "no new LISTEN connection after backend " << before << " was terminated";
  EXPECT_TRUE(wait_until([&] { return sample("conveyor_listen_reconnects_total") == 1.0; }, 10s));
  EXPECT_TRUE(listening()) << "conveyor_listening is not 1 again after the reconnect";

  const auto woken = insert_job("tile", R"({"tile": "C"})");
  EXPECT_TRUE(reaches(woken, "ready", 5s)) << "not woken by NOTIFY after the reconnect (the poll is 60 s)";
  EXPECT_NE(read_text(log_path()).find("listening to conveyor_job_status_"), std::string::npos);
}

}  // namespace
}  // namespace conveyor::stages_test
