// conveyor-monitor as a black box: the real executable (one or two
// replicas, with conveyor-configuration where a test needs a stage) against
// a database and devbroker of the test's own. Jobs, workers and service
// instances are put in place by raw SQL, as an operator following runbook 000
// would; the test watches the database, the outbox and the HTTP API.
// Also: the migration 20261122000300_reconciler (canceled_at invariant, up/down/up).
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "conveyor/db/migrations.hpp"
#include "conveyor/error/error.hpp"
#include "conveyor/http/client.hpp"
#include "conveyor/testing/stack.hpp"
#include "conveyor/testing/testing.hpp"
#include "configuration.hpp"

namespace {

namespace ct = conveyor::testing;
namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* kReconcilerMigration = "20261122000300_reconciler";

using conveyor::testing::read_text;

long ms_since(Clock::time_point t) {
  return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count());
}

// ---------------------------------------------------------------- migration

bool column_exists(const ct::TestDatabase& db, const std::string& table, const std::string& column) {
  return db.query_value(
             "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'conveyor' "
             "AND table_name = '" +
             table + "' AND column_name = '" + column + "'") == "1";
}

TEST(ReconcilerMigration, AJobThatBecomesCanceledAlwaysHasCanceledAt) {
  ct::TestDatabase db;
  // By a status change...
  const auto a = db.query_value("INSERT INTO conveyor.job (job_type) VALUES ('t') RETURNING id");
  db.exec("UPDATE conveyor.job SET status = 'canceled' WHERE id = " + a);
  EXPECT_EQ(db.query_value("SELECT canceled_at IS NOT NULL FROM conveyor.job WHERE id = " + a), "t");
  // ... even when the same statement clears it ...
  const auto b = db.query_value("INSERT INTO conveyor.job (job_type) VALUES ('t') RETURNING id");
  db.exec("UPDATE conveyor.job SET status = 'canceled', canceled_at = NULL WHERE id = " + b);
  EXPECT_EQ(db.query_value("SELECT canceled_at IS NOT NULL FROM conveyor.job WHERE id = " + b), "t");
  // ... by an insert as canceled; and a given canceled_at is kept.
  const auto c = db.query_value("INSERT INTO conveyor.job (job_type, status) VALUES ('t', 'canceled') RETURNING id");
  EXPECT_EQ(db.query_value("SELECT canceled_at IS NOT NULL FROM conveyor.job WHERE id = " + c), "t");
  const auto d = db.query_value(
      "INSERT INTO conveyor.job (job_type, canceled_at) VALUES ('t', '2020-01-01T00:00:00Z') "
      "RETURNING id");
  db.exec("UPDATE conveyor.job SET status = 'canceled' WHERE id = " + d);
  EXPECT_EQ(db.query_value("SELECT canceled_at = '2020-01-01T00:00:00Z' FROM conveyor.job WHERE id = " + d), "t");
  // Clearing canceled_at afterwards (the restart request) is allowed, also
  // in a statement that repeats the status.
  db.exec("UPDATE conveyor.job SET canceled_at = NULL WHERE id = " + a);
  EXPECT_EQ(db.query_value("SELECT canceled_at IS NULL FROM conveyor.job WHERE id = " + a), "t");
  db.exec("UPDATE conveyor.job SET status = 'canceled', canceled_at = NULL WHERE id = " + c);
  EXPECT_EQ(db.query_value("SELECT canceled_at IS NULL FROM conveyor.job WHERE id = " + c), "t");
  // The status machine still comes first: done -> canceled is refused.
  const auto e = db.query_value("INSERT INTO conveyor.job (job_type) VALUES ('t') RETURNING id");
  for (const char* s : {"configured", "ready", "queued", "started", "processed", "done"}) {
    db.exec("UPDATE conveyor.job SET status = '" + std::string(s) + "' WHERE id = " + e);
  }
  EXPECT_THROW(db.exec("UPDATE conveyor.job SET status = 'canceled' WHERE id = " + e), std::exception);
  // New columns, with their defaults.
  EXPECT_EQ(db.query_value("SELECT reemitted_at IS NULL FROM conveyor.job WHERE id = " + a), "t");
  EXPECT_EQ(db.query_value("SELECT service_heartbeat_timeout_s FROM conveyor.system_parameters"), "30");
  EXPECT_THROW(db.exec("UPDATE conveyor.system_parameters SET service_heartbeat_timeout_s = 0"), std::exception);
}

TEST(ReconcilerMigration, UpDownUpBackfillsCanceledJobsAndRestoresTheTrigger) {
  ct::TestDatabase db(false);
  const fs::path dir = fs::temp_directory_path() / ct::unique_name("migr");
  fs::create_directories(dir);
  std::vector<fs::path> ours;
  for (const auto& e : fs::directory_iterator(ct::migrations_dir())) {
    const std::string name = e.path().filename().string();
    if (name.starts_with(kReconcilerMigration)) {
      ours.push_back(e.path());
    } else if (name < kReconcilerMigration) {
      // Only the migrations before ours: later ones may build on it (the
      // service roles grant its reemitted_at column).
      fs::copy_file(e.path(), dir / e.path().filename());
    }
  }
  ASSERT_EQ(ours.size(), 2u) << "the up and down files of " << kReconcilerMigration;

  conveyor::db::Migrator m(db.url(), dir);
  m.init();
  m.migrate();  // everything before ours
  ASSERT_FALSE(column_exists(db, "job", "reemitted_at"));
  // Before: a status change to canceled leaves canceled_at null.
  const auto old = db.query_value("INSERT INTO conveyor.job (job_type) VALUES ('t') RETURNING id");
  db.exec("UPDATE conveyor.job SET status = 'canceled' WHERE id = " + old);
  ASSERT_EQ(db.query_value("SELECT canceled_at IS NULL FROM conveyor.job WHERE id = " + old), "t");
  const auto outbox_before = db.query_value("SELECT count(*) FROM conveyor.outbox");

  for (const auto& p : ours) fs::copy_file(p, dir / p.filename());
  const auto up = m.migrate();
  ASSERT_EQ(up.names, std::vector<std::string>{kReconcilerMigration});
  EXPECT_TRUE(column_exists(db, "job", "reemitted_at"));
  EXPECT_TRUE(column_exists(db, "system_parameters", "service_heartbeat_timeout_s"));
  // Backfilled, so it is not mistaken for a restart request; and no event for it.
  EXPECT_EQ(db.query_value("SELECT canceled_at IS NOT NULL FROM conveyor.job WHERE id = " + old), "t");
  EXPECT_EQ(db.query_value("SELECT count(*) FROM conveyor.outbox"), outbox_before);

  const auto down = m.rollback();
  ASSERT_EQ(down.names, std::vector<std::string>{kReconcilerMigration});
  EXPECT_FALSE(column_exists(db, "job", "reemitted_at"));
  EXPECT_FALSE(column_exists(db, "system_parameters", "service_heartbeat_timeout_s"));
  const auto after_down = db.query_value("INSERT INTO conveyor.job (job_type) VALUES ('t') RETURNING id");
  db.exec("UPDATE conveyor.job SET status = 'canceled' WHERE id = " + after_down);
  EXPECT_EQ(db.query_value("SELECT canceled_at IS NULL FROM conveyor.job WHERE id = " + after_down), "t")
      << "canceled_at is no longer stamped";

  EXPECT_EQ(m.migrate().names, std::vector<std::string>{kReconcilerMigration});
  EXPECT_TRUE(m.status().up_to_date());
  EXPECT_EQ(db.query_value("SELECT canceled_at IS NOT NULL FROM conveyor.job WHERE id = " + after_down), "t");
  std::error_code ec;
  fs::remove_all(dir, ec);
}

// ---------------------------------------------------------------- the service

class MonitorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ct::unique_name("monitor");
    fs::create_directories(dir_);
    prefix_ = ct::unique_name("mon");
  }

  void TearDown() override {
    for (auto& [name, p] : procs_) {
      EXPECT_EQ(p->stop(10s), 0) << name << " did not exit cleanly on SIGTERM";
    }
    if (HasFailure()) std::cerr << logs();
    procs_.clear();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Starts `exe` ("conveyor-monitor") as process `name`; `extra` overrides
  // the environment. Returns once /readyz answers 200.
  void start(const std::string& name, const std::string& exe, const std::map<std::string, std::string>& extra = {}) {
    ports_[name] = ct::free_port();
    std::map<std::string, std::string> env{{"CONVEYOR_DATABASE_URL", db_.url()},
                                           {"CONVEYOR_KAFKA_BROKERS", broker_.bootstrap()},
                                           {"CONVEYOR_TOPIC_PREFIX", prefix_},
                                           {"CONVEYOR_HTTP_PORT", std::to_string(ports_[name])},
                                           {"CONVEYOR_DATA_DIR", (dir_ / "data").string()},
                                           {"CONVEYOR_INSTANCE_ID", name},
                                           {"CONVEYOR_POLL_INTERVAL_MS", "200"},
                                           {"CONVEYOR_GAUGE_INTERVAL_MS", "200"},
                                           {"CONVEYOR_HEARTBEAT_INTERVAL_MS", "200"},
                                           {"CONVEYOR_LOG_LEVEL", "debug"}};
    if (exe != "conveyor-monitor") env.erase("CONVEYOR_GAUGE_INTERVAL_MS");
    for (const auto& [k, v] : extra) env[k] = v;
    ct::ChildProcess::Options o;
    o.argv = {ct::executable(exe).string()};
    o.env = env;
    o.stdout_file = dir_ / (name + ".log");
    procs_[name] = std::make_unique<ct::ChildProcess>(o);
    const bool ready = ct::wait_until(
        [&] {
          if (!procs_[name]->running()) return false;
          try {
            return get(name, "/readyz").status == 200;
          } catch (const conveyor::Error&) {
            return false;  // not listening yet
          }
        },
        30s);
    ASSERT_TRUE(ready) << name << " did not become ready:\n" << logs();
  }

  void start_monitor(const std::string& name = "monitor", const std::map<std::string, std::string>& extra = {}) {
    start(name, "conveyor-monitor", extra);
  }

  // A webhook receiver on `port` that appends each POST to `received` (a
  // pager, for the alerts); returns once it listens.
  std::unique_ptr<ct::ChildProcess> start_alert_sink(int port, const fs::path& received) {
    ct::ChildProcess::Options o;
    o.argv = {ct::executable("conveyor-webhook-sink").string(), "--port", std::to_string(port), "--out",
              received.string()};
    o.stdout_file = dir_ / "sink.log";
    auto sink = std::make_unique<ct::ChildProcess>(o);
    EXPECT_TRUE(ct::wait_until(
        [&] {
          try {
            conveyor::http::http_request("GET", "http://127.0.0.1:" + std::to_string(port) + "/", "", {}, 1s);
            return true;  // any answer: it listens
          } catch (const conveyor::Error&) {
            return false;
          }
        },
        10s));
    return sink;
  }

  // Sends a reader token (issue 12: every monitor route but /healthz,
  // /readyz, /version and /metrics needs one).
  conveyor::http::ClientResponse get(const std::string& name, const std::string& path) {
    if (token_.empty()) token_ = ct::create_api_token(db_.url(), "monitor-test-reader", "reader");
    return conveyor::http::http_request("GET", "http://127.0.0.1:" + std::to_string(ports_.at(name)) + path, "",
                                        ct::bearer(token_), 2s);
  }

  json get_json(const std::string& name, const std::string& path) {
    const auto r = get(name, path);
    EXPECT_EQ(r.status, 200) << path << ": " << r.body;
    return json::parse(r.body);
  }

  // The value of one series on the process's /metrics (`series` as printed,
  // e.g. conveyor_jobs{status="ready"}); -1 when absent.
  double metric(const std::string& name, const std::string& series) {
    std::istringstream in(get(name, "/metrics").body);
    for (std::string line; std::getline(in, line);) {
      if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 && line[series.size()] == ' ') {
        return std::stod(line.substr(series.size() + 1));
      }
    }
    return -1;
  }

  // Waits until the monitor has finished `n` more scans than now: whatever
  // the reconciler would do to the state as it is now, it has done.
  void wait_scans(const std::string& name, int n) {
    const double start = metric(name, "conveyor_monitor_scans_total");
    ASSERT_TRUE(ct::wait_until([&] { return metric(name, "conveyor_monitor_scans_total") >= start + n; }, 10s));
  }

  std::string q(const std::string& sql) const { return db_.query_value(sql); }
  std::string field(const std::string& id, const std::string& column) const {
    return q("SELECT " + column + " FROM conveyor.job WHERE id = " + id);
  }
  std::string status(const std::string& id) const { return field(id, "status"); }

  ::testing::AssertionResult reaches(const std::string& id, const std::string& expected,
                                     std::chrono::milliseconds timeout = 15s) const {
    if (ct::wait_until([&] { return status(id) == expected; }, timeout)) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "job " << id << " is " << status(id) << ", expected " << expected;
  }

  std::string insert_job(const std::string& type = "t", int max_attempts = 1) const {
    return q("INSERT INTO conveyor.job (job_type, max_attempts) VALUES ('" + type + "', " +
             std::to_string(max_attempts) + ") RETURNING id");
  }
  // The monitor's jobs_stuck alert summary once it is raised ("" if not within 10 s).
  std::string stuck_alert() {
    std::string stuck;
    json alerts;  // a copy: the loop must not read into a destroyed temporary
    (void)ct::wait_until(
        [&] {
          alerts = get_json("monitor", "/v1/alerts").at("alerts");
          for (const auto& a : alerts) {
            if (a.at("name") == "jobs_stuck") stuck = a.at("summary").get<std::string>();
          }
          return !stuck.empty();
        },
        10s);
    return stuck;
  }
  // Moves a job through `statuses` by SQL, as the stages would.
  void advance(const std::string& id, const std::vector<std::string>& statuses) const {
    for (const auto& s : statuses) db_.exec("UPDATE conveyor.job SET status = '" + s + "' WHERE id = " + id);
  }
  // The job's history as "from>to" steps, e.g. ">initialized,initialized>canceled".
  std::string history(const std::string& id) const {
    return q(
        "SELECT string_agg(coalesce(from_status, '') || '>' || to_status, ',' ORDER BY id) "
        "FROM conveyor.job_status_change WHERE job_id = " +
        id);
  }
  std::string last_actor(const std::string& id) const {
    return q("SELECT actor FROM conveyor.job_status_change WHERE job_id = " + id + " ORDER BY id DESC LIMIT 1");
  }

  std::string logs() const {
    std::string out;
    for (const auto& [name, p] : procs_) out += "---- " + name + "\n" + read_text(dir_ / (name + ".log"));
    return out;
  }

  ct::TestDatabase db_;
  ct::Broker broker_;
  fs::path dir_;
  std::string prefix_;
  std::map<std::string, int> ports_;
  std::string token_;  // a reader token, made on first use
  std::map<std::string, std::unique_ptr<ct::ChildProcess>> procs_;
};

// Runbook 000 by SQL: canceled_at = now() ends a job canceled wherever it
// is; an errored job goes through error_checked; a done job stays done.
// The poll interval is 10 minutes, so only the cancel_requested /
// restart_requested events can have woken the monitor.
TEST_F(MonitorTest, CancelBySqlEndsJobsCanceledFromEveryStageAndNullRestartsThem) {
  start_monitor("monitor", {{"CONVEYOR_POLL_INTERVAL_MS", "600000"}});
  const auto initialized = insert_job();
  const auto configured = insert_job();
  advance(configured, {"configured"});
  const auto ready = insert_job();
  advance(ready, {"configured", "ready"});
  const auto queued = insert_job();
  advance(queued, {"configured", "ready", "queued"});
  const auto failed = insert_job();
  advance(failed, {"configured", "ready", "queued", "started"});
  db_.exec(
      "UPDATE conveyor.job SET status = 'failed', attempt = 1, error_subtype = 'exit_code', "
      "error_message = 'exit 3', result = '{\"exit_code\": 3}' WHERE id = " +
      failed);
  const auto external = insert_job();
  db_.exec("UPDATE conveyor.job SET status = 'external_error', error_subtype = 'input' WHERE id = " + external);
  const auto processed = insert_job();
  advance(processed, {"configured", "ready", "queued", "started", "processed"});
  const auto checked = insert_job();
  advance(checked, {"internal_error", "error_checked"});
  const auto done = insert_job();
  advance(done, {"configured", "ready", "queued", "started", "processed", "done"});
  const std::string ids = initialized + "," + configured + "," + ready + "," + queued + "," + failed + "," + external +
                          "," + processed + "," + checked + "," + done;

  // Warm-up: the first cancel also waits for the event consumer to join its group.
  const auto warm_up = insert_job();
  db_.exec("UPDATE conveyor.job SET canceled_at = now() WHERE id = " + warm_up);
  ASSERT_TRUE(reaches(warm_up, "canceled", 15s));

  const auto t = Clock::now();
  db_.exec("UPDATE conveyor.job SET canceled_at = now() WHERE id IN (" + ids + ")");
  ASSERT_TRUE(ct::wait_until(
      [&] { return q("SELECT count(*) FROM conveyor.job WHERE status = 'canceled' AND id IN (" + ids + ")") == "8"; },
      10s))
      << q("SELECT string_agg(id || ':' || status, ' ') FROM conveyor.job");
  const long cancel_ms = ms_since(t);
  std::cout << "[ measure  ] cancel by SQL of 8 jobs -> canceled: " << cancel_ms << " ms\n";
  RecordProperty("cancel_ms", std::to_string(cancel_ms));

  EXPECT_EQ(history(initialized), ">initialized,initialized>canceled");
  EXPECT_EQ(history(configured), ">initialized,initialized>configured,configured>canceled");
  EXPECT_EQ(history(ready), ">initialized,initialized>configured,configured>ready,ready>canceled");
  EXPECT_EQ(history(queued), ">initialized,initialized>configured,configured>ready,ready>queued,queued>canceled");
  EXPECT_EQ(history(failed),
            ">initialized,initialized>configured,configured>ready,ready>queued,queued>started,"
            "started>failed,"
            "failed>error_checked,error_checked>canceled");
  EXPECT_EQ(history(external),
            ">initialized,initialized>external_error,external_error>error_checked,"
            "error_checked>canceled");
  EXPECT_EQ(history(processed),
            ">initialized,initialized>configured,configured>ready,ready>queued,"
            "queued>started,started>processed,processed>canceled");
  EXPECT_EQ(history(checked),
            ">initialized,initialized>internal_error,internal_error>error_checked,"
            "error_checked>canceled");
  EXPECT_EQ(status(done), "done") << "a done job stays done";
  EXPECT_EQ(last_actor(failed), "conveyor-monitor");

  // A job canceled by a plain status change keeps canceled_at (the trigger
  // sets it), so the restart below must not restart it too.
  const auto by_status = insert_job();
  db_.exec("UPDATE conveyor.job SET status = 'canceled' WHERE id = " + by_status);

  // Restart: canceled_at back to null -> initialized, a fresh run.
  const auto t2 = Clock::now();
  db_.exec("UPDATE conveyor.job SET canceled_at = NULL WHERE id = " + failed);
  ASSERT_TRUE(reaches(failed, "initialized", 10s));
  const long restart_ms = ms_since(t2);
  std::cout << "[ measure  ] restart by SQL (canceled_at = null) -> initialized: " << restart_ms << " ms\n";
  RecordProperty("restart_ms", std::to_string(restart_ms));
  EXPECT_EQ(field(failed, "attempt"), "0");
  EXPECT_EQ(field(failed,
                  "error_subtype IS NULL AND error_message IS NULL AND result IS NULL "
                  "AND worker_id IS NULL AND canceled_at IS NULL"),
            "t");
  EXPECT_TRUE(history(failed).ends_with(",error_checked>canceled,canceled>initialized")) << history(failed);
  EXPECT_EQ(last_actor(failed), "conveyor-monitor");
  // The scan that restarted `failed` saw `by_status` canceled with canceled_at set.
  EXPECT_EQ(status(by_status), "canceled");
  EXPECT_EQ(status(initialized), "canceled");
}

// Part a: started jobs of a worker whose heartbeat is stale go back to ready
// (attempt + 1), to internal_error (worker_lost) when attempts are spent, or
// to canceled when their cancel was asked. A live worker's jobs are its own.
TEST_F(MonitorTest, StartedJobsOfAWorkerWithAStaleHeartbeatAreRecovered) {
  db_.exec(
      "UPDATE conveyor.system_parameters SET worker_heartbeat_interval_s = 1, "
      "worker_heartbeat_timeout_s = 2");
  const auto stale =
      q("INSERT INTO conveyor.worker (name, host, pid, status, running, last_heartbeat) "
        "VALUES ('stale', 'h1', 101, 'active', 3, now() - interval '1 hour') RETURNING id");
  // A heartbeat in the future stays fresh for the whole test.
  const auto live =
      q("INSERT INTO conveyor.worker (name, host, pid, status, running, last_heartbeat) "
        "VALUES ('live', 'h2', 102, 'active', 2, now() + interval '1 hour') RETURNING id");
  auto started_on = [&](const std::string& worker, int max_attempts, bool cancel) {
    const auto id = insert_job("t", max_attempts);
    advance(id, {"configured", "ready", "queued"});
    db_.exec("UPDATE conveyor.job SET status = 'started', worker_id = " + worker + " WHERE id = " + id);
    if (cancel) db_.exec("UPDATE conveyor.job SET canceled_at = now() WHERE id = " + id);
    return id;
  };
  const auto retried = started_on(stale, 3, false);
  const auto spent = started_on(stale, 1, false);
  const auto canceled = started_on(stale, 3, true);
  const auto live_canceled = started_on(live, 3, true);
  const auto live_running = started_on(live, 1, false);

  const auto t = Clock::now();
  start_monitor();
  ASSERT_TRUE(reaches(retried, "ready"));
  ASSERT_TRUE(reaches(spent, "internal_error"));
  ASSERT_TRUE(reaches(canceled, "canceled"));
  std::cout << "[ measure  ] monitor start -> jobs of a stale worker recovered: " << ms_since(t) << " ms\n";

  EXPECT_EQ(field(retried, "attempt"), "1");
  EXPECT_EQ(field(retried, "error_subtype"), "worker_lost");
  EXPECT_EQ(field(spent, "error_subtype"), "worker_lost");
  EXPECT_EQ(field(spent, "attempt"), "0");
  EXPECT_TRUE(history(canceled).ends_with("queued>started,started>canceled")) << history(canceled);
  EXPECT_EQ(last_actor(retried), "conveyor-monitor");
  EXPECT_EQ(q("SELECT status FROM conveyor.worker WHERE id = " + stale), "lost");

  // Two more scans later, the live worker and its jobs are untouched.
  wait_scans("monitor", 2);
  EXPECT_EQ(status(live_canceled), "started") << "a live worker kills a canceled job itself";
  EXPECT_EQ(status(live_running), "started");
  EXPECT_EQ(q("SELECT status FROM conveyor.worker WHERE id = " + live), "active");

  // A worker that stops heartbeating while the monitor runs is noticed
  // after the timeout; the cancel pending on its job is then applied.
  db_.exec("UPDATE conveyor.worker SET last_heartbeat = now() WHERE id = " + live);
  const auto t2 = Clock::now();
  ASSERT_TRUE(reaches(live_canceled, "canceled"));
  ASSERT_TRUE(reaches(live_running, "internal_error"));
  const long lost_ms = ms_since(t2);
  std::cout << "[ measure  ] last heartbeat -> started jobs recovered (timeout 2 s): " << lost_ms << " ms\n";
  EXPECT_GE(lost_ms, 1500) << "not before the heartbeat timeout";
  EXPECT_EQ(q("SELECT status FROM conveyor.worker WHERE id = " + live), "lost");

  const json workers = get_json("monitor", "/v1/workers")["workers"];
  ASSERT_EQ(workers.size(), 2u) << workers.dump();
  EXPECT_EQ(workers[0]["name"], "live");
  EXPECT_EQ(workers[0]["status"], "lost");
  EXPECT_EQ(workers[1]["name"], "stale");
  EXPECT_EQ(workers[1]["host"], "h1");
  EXPECT_EQ(workers[1]["pid"], 101);
  EXPECT_EQ(workers[1]["pool"], "default");
  EXPECT_GE(workers[1]["heartbeat_age_s"].get<double>(), 3000.0);
  EXPECT_EQ(get_json("monitor", "/v1/workers?status=lost")["workers"].size(), 2u);
  EXPECT_EQ(get_json("monitor", "/v1/workers?status=active")["workers"].size(), 0u);
  const auto bad = get("monitor", "/v1/workers?status=alive");
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_EQ(json::parse(bad.body).value("field", ""), "status");
}

// Issue 9: a worker that lives on but no longer runs a started job (its
// outcome could not be written, or a claim whose commit it never saw) has
// that job recovered: each heartbeat reports the jobs it runs.
TEST_F(MonitorTest, StartedJobsThatTheirLiveWorkerNoLongerRunsAreRecovered) {
  db_.exec(
      "UPDATE conveyor.system_parameters SET worker_heartbeat_interval_s = 1, "
      "worker_heartbeat_timeout_s = 2");
  // Heartbeats in the future stay fresh for the whole test.
  const auto live =
      q("INSERT INTO conveyor.worker (name, host, pid, status, running, last_heartbeat) "
        "VALUES ('live', 'h1', 101, 'active', 1, now() + interval '1 hour') RETURNING id");
  const auto old_version =
      q("INSERT INTO conveyor.worker (name, host, pid, status, running, last_heartbeat) "
        "VALUES ('old', 'h2', 102, 'active', 1, now() + interval '1 hour') RETURNING id");
  auto started_on = [&](const std::string& worker, int max_attempts) {
    const auto id = insert_job("t", max_attempts);
    advance(id, {"configured", "ready", "queued"});
    db_.exec("UPDATE conveyor.job SET status = 'started', worker_id = " + worker + " WHERE id = " + id);
    return id;
  };
  const auto orphan = started_on(live, 3);
  const auto spent = started_on(live, 1);
  const auto running = started_on(live, 3);
  const auto unreported = started_on(old_version, 3);  // a worker that reports nothing
  // The live worker reports `running` only, at a heartbeat well after the
  // jobs started; `recent` started right before that heartbeat (within the
  // timeout), so its worker may not have listed it yet.
  db_.exec("UPDATE conveyor.worker SET running_jobs = ARRAY[" + running +
           "]::bigint[], running_jobs_at = now() + interval '1 hour' WHERE id = " + live);
  const auto recent_worker =
      q("INSERT INTO conveyor.worker (name, host, pid, status, running, last_heartbeat, "
        "running_jobs, running_jobs_at) VALUES ('recent', 'h3', 103, 'active', 0, "
        "now() + interval '1 hour', '{}', now() + interval '1 second') RETURNING id");
  const auto recent = started_on(recent_worker, 3);

  start_monitor();
  ASSERT_TRUE(reaches(orphan, "ready"));
  ASSERT_TRUE(reaches(spent, "internal_error"));
  EXPECT_EQ(field(orphan, "attempt"), "1");
  EXPECT_EQ(field(orphan, "error_subtype"), "worker_not_running");
  EXPECT_EQ(field(spent, "error_subtype"), "worker_not_running");
  EXPECT_EQ(last_actor(orphan), "conveyor-monitor");

  wait_scans("monitor", 2);
  EXPECT_EQ(status(running), "started") << "reported by its worker";
  EXPECT_EQ(status(unreported), "started") << "its worker reports nothing (an older version)";
  EXPECT_EQ(status(recent), "started") << "started within the heartbeat timeout of the report";
  EXPECT_EQ(q("SELECT status FROM conveyor.worker WHERE id = " + live), "active");
  EXPECT_EQ(q("SELECT count(*) FROM conveyor.job_status_change WHERE job_id = " + orphan +
              " AND from_status = 'started' AND to_status = 'ready'"),
            "1")
      << "recovered once";
}

// Part d: a job whose event never went out (inserted and its outbox row
// deleted in one transaction) with conveyor-configuration polling only
// every 10 minutes: after stall_initialized_s the monitor re-emits the
// event and the configuration service picks the job up.
TEST_F(MonitorTest, ALostEventIsHealedByTheReemit) {
  db_.exec(
      "UPDATE conveyor.system_parameters SET stall_initialized_s = 1, stall_configured_s = 3600, "
      "stall_ready_s = 3600");
  db_.exec("INSERT INTO conveyor.job_type (name, command) VALUES ('t', '[\"true\"]')");
  start("configuration", "conveyor-configuration", {{"CONVEYOR_POLL_INTERVAL_MS", "600000"}});
  start_monitor();

  // A canary proves the configuration service reacts to events; then wait
  // until it has read every event there is, so that no stray wake-up can
  // configure the next job.
  const auto canary = insert_job();
  ASSERT_TRUE(reaches(canary, "ready"));
  ASSERT_TRUE(ct::wait_until(
      [&] {
        // It reads the parameters and the job events of its wake_on types only.
        std::string types;
        for (const auto& type : conveyor::configuration::spec().wake_on)
          types += (types.empty() ? "'" : ",'") + type + "'";
        const int rows =
            std::stoi(q("SELECT count(*) FROM conveyor.outbox WHERE topic = 'parameters' OR type IN (" + types + ")"));
        return q("SELECT count(*) FROM conveyor.outbox_unsent()") == "0" &&
               metric("configuration", "conveyor_events_consumed_total") >= rows;
      },
      15s));

  const auto t = Clock::now();
  // One transaction (exec runs its script in one): the job with its history
  // row but neither its event nor the NOTIFY that wakes the stages (the
  // status trigger is off for the insert; the history row is written as it
  // would have written it), so nothing but the reemit can move it.
  db_.exec(
      "ALTER TABLE conveyor.job DISABLE TRIGGER job_record_status_insert; "
      "INSERT INTO conveyor.job (job_type, idempotency_key) VALUES ('t', 'lost'); "
      "ALTER TABLE conveyor.job ENABLE TRIGGER job_record_status_insert; "
      "INSERT INTO conveyor.job_status_change (job_id, from_status, to_status, actor) "
      "SELECT id, NULL, status, conveyor.current_actor() FROM conveyor.job WHERE idempotency_key = 'lost';");
  const auto lost = q("SELECT id FROM conveyor.job WHERE idempotency_key = 'lost'");
  ASSERT_EQ(q("SELECT count(*) FROM conveyor.outbox WHERE key = '" + lost + "'"), "0");
  ASSERT_TRUE(reaches(lost, "ready", 20s));
  const long healed_ms = ms_since(t);
  std::cout << "[ measure  ] lost event -> re-emitted -> configured (stall_initialized_s = 1): " << healed_ms
            << " ms\n";
  RecordProperty("lost_event_healed_ms", std::to_string(healed_ms));

  const auto reemits = db_.query(
      "SELECT type, payload->>'reemitted', payload->>'job_id', payload->>'to_status', "
      "payload->>'change_id', "
      "subject FROM conveyor.outbox WHERE key = '" +
      lost + "' AND payload ? 'reemitted' ORDER BY id");
  ASSERT_GE(reemits.size(), 1u);
  EXPECT_EQ(reemits[0][0], "io.conveyor.job.initialized");
  EXPECT_EQ(reemits[0][1], "true");
  EXPECT_EQ(reemits[0][2], lost);
  EXPECT_EQ(reemits[0][3], "initialized");
  EXPECT_EQ(reemits[0][4], q("SELECT min(id) FROM conveyor.job_status_change WHERE job_id = " + lost));
  EXPECT_EQ(reemits[0][5], lost);
  EXPECT_EQ(field(lost, "reemitted_at IS NOT NULL"), "t");
  // Configured only after the threshold, and by the re-emitted event: the
  // re-emit is older than the move.
  EXPECT_EQ(q("SELECT (SELECT at FROM conveyor.job_status_change WHERE job_id = " + lost +
              " AND to_status = 'configured') - created_at >= interval '1 second' FROM "
              "conveyor.job WHERE id = " +
              lost),
            "t");
  EXPECT_EQ(q("SELECT (SELECT min(created_at) FROM conveyor.outbox WHERE key = '" + lost +
              "' AND payload ? 'reemitted') < (SELECT at FROM conveyor.job_status_change WHERE "
              "job_id = " +
              lost + " AND to_status = 'configured')"),
            "t");
  // The re-emit is no status change: no history row for it.
  EXPECT_EQ(history(lost), ">initialized,initialized>configured,configured>ready");
  EXPECT_GE(metric("monitor", "conveyor_monitor_reemitted_total{status=\"initialized\"}"), 1.0);
}

// Part e and GET /v1/services: an instance whose heartbeat stopped is shown
// down (live, then in the table); it is up again when it heartbeats; old
// stopped/down rows are purged.
TEST_F(MonitorTest, ServiceRegistryShowsDownInstancesAndTheirReturn) {
  db_.exec("UPDATE conveyor.system_parameters SET service_heartbeat_timeout_s = 2");
  db_.exec(
      "INSERT INTO conveyor.service_instance (id, service, host, pid, version, image_tag, "
      "started_at, "
      "last_heartbeat, status) VALUES "
      "('fake-1', 'conveyor-fake', 'h', 7, '1.2.3', 'abc', now() - interval '2 hours', "
      " now() - interval '1 hour', 'up'), "
      "('old-stopped', 'conveyor-fake', 'h', 8, '1.2.3', 'abc', now() - interval '3 days', "
      " now() - interval '2 days', 'stopped'), "
      "('old-down', 'conveyor-fake', 'h', 9, '1.2.3', 'abc', now() - interval '3 days', "
      " now() - interval '2 days', 'down'), "
      "('recent-stopped', 'conveyor-fake', 'h', 10, '1.2.3', 'abc', now() - interval '3 hours', "
      " now() - interval '2 hours', 'stopped')");
  start_monitor();
  // A real service heartbeating every 200 ms.
  start("configuration", "conveyor-configuration",
        {{"CONVEYOR_HEARTBEAT_INTERVAL_MS", "200"}, {"CONVEYOR_IMAGE_TAG", "tag-7"}});

  ASSERT_TRUE(ct::wait_until(
      [&] { return q("SELECT status FROM conveyor.service_instance WHERE id = 'fake-1'") == "down"; }, 10s));
  ASSERT_TRUE(ct::wait_until(
      [&] { return q("SELECT count(*) FROM conveyor.service_instance WHERE id LIKE 'old-%'") == "0"; }, 10s))
      << "rows stopped or down for over a day are purged";
  EXPECT_EQ(q("SELECT status FROM conveyor.service_instance WHERE id = 'recent-stopped'"), "stopped");

  json all = get_json("monitor", "/v1/services");
  std::map<std::string, json> by_id;
  for (const auto& s : all["services"]) by_id[s["instance_id"].get<std::string>()] = s;
  ASSERT_TRUE(by_id.contains("fake-1") && by_id.contains("monitor") && by_id.contains("configuration")) << all.dump();
  EXPECT_EQ(by_id["fake-1"]["status"], "down");
  EXPECT_EQ(by_id["fake-1"]["service"], "conveyor-fake");
  EXPECT_EQ(by_id["fake-1"]["version"], "1.2.3");
  EXPECT_EQ(by_id["fake-1"]["pid"], 7);
  EXPECT_NEAR(by_id["fake-1"]["uptime_s"].get<double>(), 3600.0, 5.0) << "started 2 h ago, silent for 1 h";
  EXPECT_GE(by_id["fake-1"]["heartbeat_age_s"].get<double>(), 3599.0);
  const json& cfg = by_id["configuration"];
  EXPECT_EQ(cfg["status"], "up");
  EXPECT_EQ(cfg["service"], "conveyor-configuration");
  EXPECT_EQ(cfg["image_tag"], "tag-7");
  EXPECT_EQ(cfg["pid"], procs_["configuration"]->pid());
  EXPECT_FALSE(cfg["version"].get<std::string>().empty());
  EXPECT_GE(cfg["uptime_s"].get<double>(), 0.0);
  EXPECT_LT(cfg["heartbeat_age_s"].get<double>(), 2.0);
  EXPECT_EQ(by_id["monitor"]["status"], "up");

  // Filters.
  json fake = get_json("monitor", "/v1/services?service=conveyor-fake");
  EXPECT_EQ(fake["services"].size(), 2u) << fake.dump();
  EXPECT_EQ(get_json("monitor", "/v1/services?service=configuration")["services"].size(), 1u)
      << "the conveyor- prefix may be left out";
  json down = get_json("monitor", "/v1/services?status=down");
  ASSERT_EQ(down["services"].size(), 1u) << down.dump();
  EXPECT_EQ(down["services"][0]["instance_id"], "fake-1");
  for (const std::string bad :
       {"/v1/services?status=sleeping", "/v1/services?service=Bad%20Name", "/v1/services?colour=red"}) {
    const auto r = get("monitor", bad);
    EXPECT_EQ(r.status, 400) << bad << ": " << r.body;
    EXPECT_NE(r.headers.at("content-type").find("application/problem+json"), std::string::npos);
  }
  EXPECT_EQ(json::parse(get("monitor", "/v1/services?status=sleeping").body).value("field", ""), "status");
  EXPECT_EQ(json::parse(get("monitor", "/v1/services?colour=red").body).value("field", ""), "colour");

  // Gauges.
  ASSERT_TRUE(ct::wait_until(
      [&] { return metric("monitor", "conveyor_service_instances{service=\"conveyor-fake\",status=\"down\"}") == 1; },
      5s));
  EXPECT_TRUE(ct::wait_until(
      [&] {
        return metric("monitor",
                      "conveyor_service_instances{service=\"conveyor-configuration\","
                      "status=\"up\"}") == 1;
      },
      5s));
  EXPECT_EQ(metric("monitor", "conveyor_jobs{status=\"done\"}"), 0);

  // The configuration process stops heartbeating (SIGSTOP): down, first as
  // shown live, then in the table; it heartbeats again (SIGCONT): up.
  procs_["configuration"]->signal(SIGSTOP);
  const auto t = Clock::now();
  ASSERT_TRUE(ct::wait_until(
      [&] { return q("SELECT status FROM conveyor.service_instance WHERE id = 'configuration'") == "down"; }, 10s));
  std::cout << "[ measure  ] heartbeat stopped -> instance down (timeout 2 s): " << ms_since(t) << " ms\n";
  EXPECT_EQ(get_json("monitor", "/v1/services?service=configuration")["services"][0]["status"], "down");
  procs_["configuration"]->signal(SIGCONT);
  ASSERT_TRUE(ct::wait_until(
      [&] { return q("SELECT status FROM conveyor.service_instance WHERE id = 'configuration'") == "up"; }, 10s));
  EXPECT_EQ(get_json("monitor", "/v1/services?service=configuration")["services"][0]["status"], "up");
  // Still up after more scans: it is heartbeating.
  wait_scans("monitor", 3);
  EXPECT_EQ(q("SELECT status FROM conveyor.service_instance WHERE id = 'configuration'"), "up");
}

// Two replicas: the advisory lock and reemitted_at make one re-emit per
// threshold period for a stalled job, not one per replica.
TEST_F(MonitorTest, TwoReplicasReemitAStalledJobOncePerThresholdPeriod) {
  db_.exec(
      "UPDATE conveyor.system_parameters SET stall_initialized_s = 1, stall_ready_s = 1, "
      "job_types_list = '{t, p}'");
  // Ready jobs: one stalled, three that admission holds on purpose.
  const auto ready = insert_job("t");
  const auto later = insert_job("t");
  const auto paused = insert_job("p");
  const auto unlisted = insert_job("x");
  db_.exec("INSERT INTO conveyor.queue_state (kind, name, paused) VALUES ('job_type', 'p', true)");
  db_.exec("UPDATE conveyor.job SET not_before = now() + interval '1 hour' WHERE id = " + later);
  for (const auto& id : {ready, later, paused, unlisted}) advance(id, {"configured", "ready"});
  start_monitor("monitor-1", {{"CONVEYOR_POLL_INTERVAL_MS", "50"}});
  start_monitor("monitor-2", {{"CONVEYOR_POLL_INTERVAL_MS", "50"}});
  const auto id = insert_job();  // nothing configures it: it stalls
  const std::string reemits = "FROM conveyor.outbox WHERE key = '" + id + "' AND payload ? 'reemitted'";
  ASSERT_TRUE(ct::wait_until([&] { return std::stoi(q("SELECT count(*) " + reemits)) >= 4; }, 15s));
  EXPECT_EQ(status(id), "initialized");

  // Consecutive re-emits at least a threshold (1 s) apart; a doubled one
  // would be milliseconds after its twin.
  const auto gaps = db_.query("SELECT extract(epoch FROM created_at - lag(created_at) OVER (ORDER BY id)) " + reemits +
                              " ORDER BY id");
  ASSERT_GE(gaps.size(), 4u);
  for (std::size_t i = 1; i < gaps.size(); ++i) {
    EXPECT_GE(std::stod(gaps[i][0]), 0.95) << "re-emit " << i << " came " << gaps[i][0] << " s after the previous one";
  }
  // Both replicas were scanning all along.
  EXPECT_GT(metric("monitor-1", "conveyor_monitor_scans_total"), 10);
  EXPECT_GT(metric("monitor-2", "conveyor_monitor_scans_total"), 10);
  EXPECT_EQ(history(id), ">initialized");

  auto reemitted = [&](const std::string& job) {
    return std::stoi(q("SELECT count(*) FROM conveyor.outbox WHERE key = '" + job + "' AND payload ? 'reemitted'"));
  };
  EXPECT_GE(reemitted(ready), 3);
  EXPECT_EQ(reemitted(later), 0) << "backing off (not_before)";
  EXPECT_EQ(reemitted(paused), 0) << "its job type is paused";
  EXPECT_EQ(reemitted(unlisted), 0) << "its job type is not in job_types_list";
}

// Part f, retention: finished jobs past job_retention_days go (with their
// history and outputs), log months past log_retention_days go; what a job in
// progress still depends on, what is recent and what is live stays.
TEST_F(MonitorTest, RetentionDeletesWhatIsPastItsRetentionAndKeepsWhatIsStillNeeded) {
  db_.exec("UPDATE conveyor.system_parameters SET job_retention_days = 1, log_retention_days = 1");
  const auto old_done = insert_job();
  advance(old_done, {"configured", "ready", "queued", "started", "processed", "done"});
  const auto old_failed = insert_job();
  advance(old_failed, {"configured", "ready", "queued", "started", "failed"});
  const auto needed = insert_job();
  advance(needed, {"configured", "ready", "queued", "started", "processed", "done"});
  const auto child =
      q("INSERT INTO conveyor.job (job_type, depends_on) VALUES ('t', ARRAY[" + needed + "]::bigint[]) RETURNING id");
  const auto recent = insert_job();
  advance(recent, {"configured", "ready", "queued", "started", "processed", "done"});
  const auto old_waiting = insert_job();
  // Status changes stamp updated_at; a plain UPDATE of it ages the rows.
  db_.exec("UPDATE conveyor.job SET updated_at = now() - interval '2 days' WHERE id IN (" + old_done + ", " +
           old_failed + ", " + needed + ", " + old_waiting + ")");
  db_.exec(
      "INSERT INTO conveyor.worker (name, status, last_heartbeat) VALUES "
      "('gone', 'stopped', now() - interval '2 days'), ('live', 'active', now())");
  const fs::path data = dir_ / "data";
  fs::create_directories(data / "outputs" / ("job-" + old_done));
  std::ofstream(data / "outputs" / ("job-" + old_done) / "product.tif") << "x";
  fs::create_directories(data / "outputs" / ("job-" + recent));
  fs::create_directories(data / "logs" / "2020-01" / "job-1");
  std::ofstream(data / "logs" / "2020-01" / "job-1" / "logs.txt") << "old";
  const std::string this_month = q("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM')");
  fs::create_directories(data / "logs" / this_month / ("job-" + recent));
  fs::create_directories(data / "logs" / "not-a-month");

  start_monitor("monitor", {{"CONVEYOR_RETENTION_INTERVAL_MS", "200"}});
  ASSERT_TRUE(ct::wait_until(
      [&] { return q("SELECT count(*) FROM conveyor.job WHERE id IN (" + old_done + ", " + old_failed + ")") == "0"; },
      15s))
      << logs();
  EXPECT_EQ(q("SELECT count(*) FROM conveyor.job_status_change WHERE job_id IN (" + old_done + ", " + old_failed + ")"),
            "0")
      << "their history went with them";
  EXPECT_EQ(status(needed), "done") << "a job in progress depends on it";
  EXPECT_EQ(status(child), "initialized");
  EXPECT_EQ(status(recent), "done");
  EXPECT_EQ(status(old_waiting), "initialized") << "not finished: never deleted";
  EXPECT_FALSE(fs::exists(data / "outputs" / ("job-" + old_done)));
  EXPECT_TRUE(fs::exists(data / "outputs" / ("job-" + recent)));
  EXPECT_TRUE(ct::wait_until([&] { return !fs::exists(data / "logs" / "2020-01"); }, 10s)) << logs();
  EXPECT_TRUE(fs::exists(data / "logs" / this_month / ("job-" + recent)));
  EXPECT_TRUE(fs::exists(data / "logs" / "not-a-month")) << "only YYYY-MM folders are the workers'";
  EXPECT_EQ(q("SELECT string_agg(name, ',' ORDER BY name) FROM conveyor.worker"), "live");
  EXPECT_EQ(metric("monitor", "conveyor_monitor_purged_total{kind=\"jobs\"}"), 2);

  // Once the child is finished too, the job it needed goes at the next pass.
  advance(child, {"canceled"});
  db_.exec("UPDATE conveyor.job SET updated_at = now() - interval '2 days' WHERE id = " + child);
  EXPECT_TRUE(ct::wait_until(
      [&] { return q("SELECT count(*) FROM conveyor.job WHERE id IN (" + needed + ", " + child + ")") == "0"; }, 15s))
      << logs();
}

// Alerts (runbook 004: what pages the person on call): conditions on the
// database, logged and posted to CONVEYOR_ALERT_WEBHOOK_URL when they start
// and stop firing, on /v1/alerts, /metrics and the dashboard at /.
TEST_F(MonitorTest, AlertsFireAndResolveReachTheWebhookAndShowOnTheDashboard) {
  const int hook_port = ct::free_port();
  const fs::path received = dir_ / "alerts.jsonl";
  auto sink = start_alert_sink(hook_port, received);
  db_.exec(
      "INSERT INTO conveyor.service_instance (id, service, last_heartbeat) VALUES "
      "('execution-9', 'conveyor-execution', now() - interval '10 minutes')");
  db_.exec(
      "INSERT INTO conveyor.worker (name, status, last_heartbeat) VALUES ('w-lost', 'lost', now() - "
      "interval '5 minutes')");
  db_.exec(
      "UPDATE conveyor.system_parameters SET accepting_new_jobs = false, not_accepting_reason = "
      "'maintenance <tonight>'");
  start_monitor("monitor", {{"CONVEYOR_ALERT_WEBHOOK_URL", "http://127.0.0.1:" + std::to_string(hook_port) + "/hook"}});

  const json alerts = get_json("monitor", "/v1/alerts").at("alerts");
  std::vector<std::string> names;
  for (const auto& a : alerts) names.push_back(a.at("name"));
  EXPECT_EQ(names, (std::vector<std::string>{"service_down", "service_missing", "workers_lost", "not_accepting"}));
  EXPECT_EQ(alerts[0].at("severity"), "critical");
  EXPECT_NE(alerts[0].at("summary").get<std::string>().find("conveyor-execution/execution-9"), std::string::npos);

  ASSERT_TRUE(ct::wait_until(
      [&] { return metric("monitor", R"(conveyor_alerts_firing{alert="service_down",severity="critical"})") == 1; },
      10s))
      << logs();
  ASSERT_TRUE(
      ct::wait_until([&] { return read_text(received).find(R"("name":"workers_lost")") != std::string::npos; }, 10s))
      << logs();
  EXPECT_NE(read_text(received).find(R"("status":"firing")"), std::string::npos);

  const auto page = get("monitor", "/");
  EXPECT_EQ(page.status, 200);
  EXPECT_NE(page.body.find("Conveyor</title>"), std::string::npos);
  EXPECT_NE(page.body.find("maintenance &lt;tonight&gt;"), std::string::npos) << "escaped, never raw HTML";
  EXPECT_EQ(page.body.find("<tonight>"), std::string::npos);
  EXPECT_NE(page.body.find("execution-9"), std::string::npos);
  EXPECT_NE(page.body.find("w-lost"), std::string::npos);

  db_.exec("UPDATE conveyor.system_parameters SET accepting_new_jobs = true");
  ASSERT_TRUE(ct::wait_until(
      [&] {
        const std::string r = read_text(received);
        return r.find(R"("name":"not_accepting","severity":"info","status":"resolved")") != std::string::npos;
      },
      10s))
      << read_text(received) << logs();
  EXPECT_TRUE(ct::wait_until(
      [&] { return metric("monitor", R"(conveyor_alerts_firing{alert="not_accepting",severity="info"})") == 0; }, 10s));
  EXPECT_EQ(sink->stop(5s), 0);
}

// A new user's trial (stop 46): a stack brought up again paged
// service_missing for the pool that had not started yet, and a restarted
// monitor announced again every alert still firing. Now a service has one
// heartbeat timeout from the monitor's start to show itself, and an alert
// is announced when its row in conveyor.alert_event opens or closes.
TEST_F(MonitorTest, AnAlertIsAnnouncedOnceAcrossARestartAndAServiceHasAHeartbeatTimeoutToStart) {
  const int hook_port = ct::free_port();
  const fs::path received = dir_ / "alerts.jsonl";
  auto sink = start_alert_sink(hook_port, received);
  db_.exec(
      "INSERT INTO conveyor.service_instance (id, service, status, last_heartbeat) VALUES "
      "('pool-1', 'conveyor-workerpool', 'stopped', now() - interval '1 hour')");
  db_.exec(
      "INSERT INTO conveyor.worker (name, status, last_heartbeat) VALUES ('w-lost', 'lost', now() - "
      "interval '5 minutes')");
  const std::map<std::string, std::string> hook = {
      {"CONVEYOR_ALERT_WEBHOOK_URL", "http://127.0.0.1:" + std::to_string(hook_port) + "/hook"}};
  auto announced = [&](const std::string& name, const std::string& status) {
    const std::string text = read_text(received);
    const std::string needle = R"("name":")" + name + R"(")";
    int n = 0;
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
      n += line.find(needle) != std::string::npos && line.find(R"("status":")" + status + R"(")") != std::string::npos;
    }
    return n;
  };
  const std::string missing_series = R"(conveyor_alerts_firing{alert="service_missing",severity="critical"})";
  const std::string lost_series = R"(conveyor_alerts_firing{alert="workers_lost",severity="warning"})";

  start_monitor("monitor", hook);
  ASSERT_TRUE(ct::wait_until([&] { return announced("workers_lost", "firing") == 1; }, 10s)) << logs();
  wait_scans("monitor", 3);
  bool missing_now = false;
  const json alerts = get_json("monitor", "/v1/alerts").at("alerts");  // a copy: not into a temporary
  for (const auto& a : alerts) missing_now |= a.at("name") == "service_missing";
  EXPECT_TRUE(missing_now) << "/v1/alerts says what is true now";
  EXPECT_EQ(announced("service_missing", "firing"), 0) << "within the heartbeat timeout of the monitor's start";
  EXPECT_EQ(metric("monitor", missing_series), -1);

  ASSERT_EQ(procs_.at("monitor")->stop(10s), 0);
  procs_.erase("monitor");
  start_monitor("monitor", hook);
  ASSERT_TRUE(ct::wait_until([&] { return metric("monitor", lost_series) == 1; }, 10s)) << logs();
  wait_scans("monitor", 3);
  EXPECT_EQ(announced("workers_lost", "firing"), 1) << "still firing: not announced again\n" << read_text(received);
  EXPECT_EQ(announced("workers_lost", "resolved"), 0) << read_text(received);

  // Past the heartbeat timeout, the pool that never came is missing.
  db_.exec("UPDATE conveyor.system_parameters SET service_heartbeat_timeout_s = 1");
  ASSERT_TRUE(ct::wait_until([&] { return announced("service_missing", "firing") == 1; }, 10s)) << logs();
  EXPECT_TRUE(ct::wait_until([&] { return metric("monitor", missing_series) == 1; }, 10s));
  EXPECT_EQ(sink->stop(5s), 0);
}

// Issue 13: a worker the pool replaced (its row lost, its instance silent
// and marked down by the reconciler) is history: GET /v1/services shows it
// `replaced`, and no critical alert keeps firing for it (before, service_down
// fired until retention purged the row a day later).
TEST_F(MonitorTest, AReplacedWorkerRaisesNoServiceDownAlert) {
  db_.exec(
      "INSERT INTO conveyor.worker (name, status, last_heartbeat) VALUES "
      "('w-killed', 'lost', now() - interval '10 minutes')");
  db_.exec(
      "INSERT INTO conveyor.service_instance (id, service, last_heartbeat) VALUES "
      "('w-killed', 'conveyor-worker', now() - interval '10 minutes')");
  start_monitor();
  wait_scans("monitor", 2);
  EXPECT_EQ(q("SELECT status FROM conveyor.service_instance WHERE id = 'w-killed'"), "down")
      << "the reconciler still records the silent instance down";

  const json alerts = get_json("monitor", "/v1/alerts").at("alerts");
  for (const auto& a : alerts) {
    EXPECT_NE(a.at("severity"), "critical") << alerts.dump();
    EXPECT_NE(a.at("name"), "service_down") << alerts.dump();
  }
  const json services = get_json("monitor", "/v1/services?service=worker");
  ASSERT_EQ(services.at("services").size(), 1u) << services.dump();
  EXPECT_EQ(services["services"][0]["status"], "replaced");
  ASSERT_EQ(services.at("health").size(), 1u) << services.dump();
  EXPECT_EQ(services["health"][0]["state"], "idle") << "no live worker, none down: the pool may be at min 0";
  EXPECT_EQ(services["health"][0]["replaced"], 1);
  EXPECT_EQ(services["health"][0]["down"], 0);
  EXPECT_EQ(get_json("monitor", "/v1/services?status=down").at("services").size(), 0u);
  EXPECT_TRUE(ct::wait_until(
      [&] {
        return metric("monitor", R"(conveyor_service_instances{service="conveyor-worker",status="replaced"})") == 1;
      },
      5s));
  EXPECT_EQ(metric("monitor", R"(conveyor_service_instances{service="conveyor-worker",status="down"})"), 0);
  const auto page = get("monitor", "/services");  // the console's services page
  EXPECT_NE(page.body.find("<td>conveyor-worker</td><td class=\"idle\">idle</td>"), std::string::npos) << page.body;
}

// A service whose every instance stopped has no live instance: DOWN (0
// live) on GET /v1/services, and service_missing fires. A service with a
// live and a silent instance is degraded, and only the silent one is down.
TEST_F(MonitorTest, AStoppedServiceIsDownAndAlerts) {
  db_.exec(
      "INSERT INTO conveyor.service_instance (id, service, status, last_heartbeat) VALUES "
      "('execution-1', 'conveyor-execution', 'stopped', now() - interval '1 minute'), "
      "('creation-1', 'conveyor-creation', 'up', now() + interval '1 hour'), "
      "('creation-2', 'conveyor-creation', 'up', now() - interval '10 minutes')");
  start_monitor();
  const json services = get_json("monitor", "/v1/services");
  std::map<std::string, json> health;
  for (const auto& h : services.at("health")) health[h.at("service").get<std::string>()] = h;
  ASSERT_TRUE(health.contains("conveyor-execution") && health.contains("conveyor-creation")) << services.dump();
  EXPECT_EQ(health["conveyor-execution"]["state"], "down");
  EXPECT_EQ(health["conveyor-execution"]["live"], 0);
  EXPECT_EQ(health["conveyor-execution"]["stopped"], 1);
  EXPECT_EQ(health["conveyor-creation"]["state"], "degraded");
  EXPECT_EQ(health["conveyor-creation"]["live"], 1);
  EXPECT_EQ(health["conveyor-creation"]["down"], 1);
  EXPECT_EQ(health["conveyor-monitor"]["state"], "up");

  const json alerts = get_json("monitor", "/v1/alerts").at("alerts");
  std::map<std::string, std::string> summary;
  for (const auto& a : alerts) summary[a.at("name").get<std::string>()] = a.at("summary").get<std::string>();
  ASSERT_TRUE(summary.contains("service_missing")) << alerts.dump();
  EXPECT_NE(summary["service_missing"].find("conveyor-execution"), std::string::npos) << alerts.dump();
  EXPECT_EQ(summary["service_missing"].find("conveyor-creation"), std::string::npos) << "degraded, not missing";
  ASSERT_TRUE(summary.contains("service_down")) << alerts.dump();
  EXPECT_NE(summary["service_down"].find("conveyor-creation/creation-2"), std::string::npos) << alerts.dump();
  EXPECT_EQ(summary["service_down"].find("execution-1"), std::string::npos) << "stopped is not down";
}

// Issue 13, item 9: a held ready job is waiting on purpose, not stalled
// (conveyor.job_admissible): the reconciler does not re-emit it and the
// jobs_stuck alert does not count it, even though it went quiet an hour ago
// and was re-emitted before it was held. Released, it is re-emitted.
TEST_F(MonitorTest, AHeldJobIsNotReemitted) {
  db_.exec("UPDATE conveyor.system_parameters SET stall_ready_s = 1");
  const auto held = insert_job("t");
  const auto stalled = insert_job("t");
  for (const auto& id : {held, stalled}) advance(id, {"configured", "ready"});
  db_.exec("UPDATE conveyor.job SET held_at = now(), reemitted_at = now() - interval '30 minutes' WHERE id = " + held);
  db_.exec("UPDATE conveyor.job SET updated_at = now() - interval '1 hour' WHERE id IN (" + held + ", " + stalled +
           ")");
  start_monitor("monitor", {{"CONVEYOR_POLL_INTERVAL_MS", "50"}});

  auto reemitted = [&](const std::string& job) {
    return std::stoi(q("SELECT count(*) FROM conveyor.outbox WHERE key = '" + job + "' AND payload ? 'reemitted'"));
  };
  // Two re-emits of the other job, a threshold apart: several scans saw both.
  ASSERT_TRUE(ct::wait_until([&] { return reemitted(stalled) >= 2; }, 15s)) << logs();
  EXPECT_EQ(reemitted(held), 0) << "a held job is waiting, not stalled";

  // Only the stalled job is stuck (re-emitted and still not moving).
  const std::string stuck = stuck_alert();
  ASSERT_FALSE(stuck.empty()) << "no jobs_stuck alert";
  EXPECT_EQ(stuck.rfind("1 job(s)", 0), 0u) << stuck;
  EXPECT_NE(stuck.find("job " + stalled), std::string::npos) << stuck;

  db_.exec("UPDATE conveyor.job SET held_at = NULL WHERE id = " + held);
  EXPECT_TRUE(ct::wait_until([&] { return reemitted(held) >= 1; }, 10s)) << "released, it is stalled again";
}

// Issue 14: the reconciler and the jobs_stuck alert ask admission's own rule
// (conveyor.job_admission_eligible). A ready job of a paused pool, re-emitted
// before the pause, is waiting on purpose: neither re-emitted again nor
// counted as stuck (the alert used to count it: it knew only held jobs).
TEST_F(MonitorTest, AReadyJobOfAPausedPoolIsNeitherReemittedNorStuck) {
  db_.exec("UPDATE conveyor.system_parameters SET stall_ready_s = 1");
  const auto paused = insert_job("t");
  const auto stalled = insert_job("t");
  for (const auto& id : {paused, stalled}) advance(id, {"configured", "ready"});
  db_.exec("UPDATE conveyor.job SET config = '{\"pool\": \"gpu\"}' WHERE id = " + paused);
  db_.exec("INSERT INTO conveyor.queue_state (kind, name, paused) VALUES ('pool', 'gpu', true)");
  db_.exec(
      "UPDATE conveyor.job SET updated_at = now() - interval '1 hour', "
      "reemitted_at = now() - interval '30 minutes' WHERE id IN (" +
      paused + ", " + stalled + ")");
  start_monitor("monitor", {{"CONVEYOR_POLL_INTERVAL_MS", "50"}});

  auto reemitted = [&](const std::string& job) {
    return std::stoi(q("SELECT count(*) FROM conveyor.outbox WHERE key = '" + job + "' AND payload ? 'reemitted'"));
  };
  ASSERT_TRUE(ct::wait_until([&] { return reemitted(stalled) >= 1; }, 15s)) << logs();
  const std::string stuck = stuck_alert();
  ASSERT_FALSE(stuck.empty()) << "no jobs_stuck alert";
  EXPECT_EQ(stuck.rfind("1 job(s)", 0), 0u) << "the paused pool's job is not stuck: " << stuck;
  EXPECT_NE(stuck.find("job " + stalled), std::string::npos) << stuck;
  EXPECT_EQ(reemitted(paused), 0) << "a paused pool's job is waiting, not stalled";
}

// Issue 15, item 3: GET /v1/sd is Prometheus HTTP service discovery: one
// target group per live instance with the address it listens on (recorded
// by the runtime once it listens), each target serving /metrics with the
// process_* series and conveyor_build_info. Down, stopped and replaced
// instances are left out; it needs a reader token like every /v1 route.
TEST_F(MonitorTest, ServiceDiscoveryListsTheMetricsAddressOfEveryLiveInstance) {
  db_.exec("INSERT INTO conveyor.worker (name, status, last_heartbeat) VALUES ('w-gone', 'lost', now())");
  db_.exec(
      "INSERT INTO conveyor.service_instance (id, service, status, last_heartbeat, http_address) VALUES "
      "('w-gone', 'conveyor-worker', 'up', now(), '127.0.0.1:1'), "
      "('creation-old', 'conveyor-creation', 'stopped', now(), '127.0.0.1:2'), "
      "('creation-silent', 'conveyor-creation', 'up', now() - interval '1 hour', '127.0.0.1:3')");
  start_monitor();
  start("configuration", "conveyor-configuration");

  const auto anonymous = conveyor::http::http_request(
      "GET", "http://127.0.0.1:" + std::to_string(ports_.at("monitor")) + "/v1/sd", "", {}, 2s);
  EXPECT_EQ(anonymous.status, 401) << anonymous.body;

  const json groups = get_json("monitor", "/v1/sd");
  ASSERT_TRUE(groups.is_array()) << groups.dump();
  std::map<std::string, json> by_instance;
  for (const auto& g : groups) by_instance[g.at("labels").at("instance").get<std::string>()] = g;
  EXPECT_EQ(by_instance.size(), 2u) << "only the two live processes: " << groups.dump();
  for (const std::string name : {"monitor", "configuration"}) {
    ASSERT_TRUE(by_instance.contains(name)) << groups.dump();
    const json& g = by_instance[name];
    const std::string address = "127.0.0.1:" + std::to_string(ports_.at(name));
    EXPECT_EQ(g.at("targets"), json::array({address})) << g.dump();
    const std::string service = "conveyor-" + name;
    EXPECT_EQ(g.at("labels").at("service"), service);
    EXPECT_FALSE(g.at("labels").at("__meta_conveyor_version").get<std::string>().empty());
    // The target is what Prometheus will scrape: its /metrics answers.
    const auto m = conveyor::http::http_request("GET", "http://" + address + "/metrics", "", {}, 2s);
    ASSERT_EQ(m.status, 200);
    EXPECT_NE(m.body.find("conveyor_build_info{service=\"" + service + "\",version="), std::string::npos);
    EXPECT_NE(m.body.find("\nprocess_resident_memory_bytes "), std::string::npos);
    EXPECT_NE(m.body.find("\nprocess_cpu_seconds_total "), std::string::npos);
  }
  // A stopped process leaves discovery.
  ASSERT_EQ(procs_["configuration"]->stop(10s), 0);
  procs_.erase("configuration");
  EXPECT_TRUE(ct::wait_until([&] { return get_json("monitor", "/v1/sd").size() == 1; }, 10s))
      << get_json("monitor", "/v1/sd").dump();
}

// Issue 15, item 2: alerts resolve once their cause is gone. A worker
// instance that stopped heartbeating is down (service_down, critical); once
// the pool marks its worker lost it is replaced, so service_down resolves
// and workers_lost (warning) fires; an hour later the loss is old news and
// workers_lost resolves too. The gauges the Prometheus rules test follow.
TEST_F(MonitorTest, AlertsResolveOnceTheirCauseIsGone) {
  // The worker row's heartbeat is fresh (as if its monitor thread still
  // beat), so the reconciler does not mark it lost itself: the pool will.
  db_.exec(
      "INSERT INTO conveyor.worker (name, status, last_heartbeat) VALUES "
      "('w-silent', 'active', now() + interval '1 hour')");
  db_.exec(
      "INSERT INTO conveyor.service_instance (id, service, last_heartbeat) VALUES "
      "('w-silent', 'conveyor-worker', now() - interval '10 minutes')");
  start_monitor();
  auto firing = [&] {
    std::set<std::string> names;
    const json alerts = get_json("monitor", "/v1/alerts").at("alerts");  // a copy: not into a temporary
    for (const auto& a : alerts) names.insert(a.at("name").get<std::string>());
    return names;
  };
  const std::string down_series = R"(conveyor_alerts_firing{alert="service_down",severity="critical"})";
  const std::string lost_series = R"(conveyor_alerts_firing{alert="workers_lost",severity="warning"})";
  EXPECT_TRUE(firing().contains("service_down"));
  ASSERT_TRUE(ct::wait_until([&] { return metric("monitor", down_series) == 1; }, 10s)) << logs();
  EXPECT_EQ(metric("monitor", R"(conveyor_service_instances{service="conveyor-worker",status="down"})"), 1);

  db_.exec("UPDATE conveyor.worker SET status = 'lost', last_heartbeat = now() WHERE name = 'w-silent'");
  EXPECT_FALSE(firing().contains("service_down")) << "a replaced worker is history";
  EXPECT_TRUE(firing().contains("workers_lost"));
  ASSERT_TRUE(ct::wait_until([&] { return metric("monitor", down_series) == 0; }, 10s)) << logs();
  EXPECT_TRUE(ct::wait_until([&] { return metric("monitor", lost_series) == 1; }, 10s));
  EXPECT_EQ(metric("monitor", "conveyor_workers_lost_last_hour"), 1);

  db_.exec("UPDATE conveyor.worker SET last_heartbeat = now() - interval '2 hours' WHERE name = 'w-silent'");
  EXPECT_TRUE(firing().empty()) << get_json("monitor", "/v1/alerts").dump();
  EXPECT_TRUE(ct::wait_until([&] { return metric("monitor", lost_series) == 0; }, 10s));
  EXPECT_EQ(metric("monitor", "conveyor_workers_lost_last_hour"), 0);
  EXPECT_EQ(metric("monitor", "conveyor_outbox_stuck_events"), 0);
  EXPECT_EQ(metric("monitor", "conveyor_accepting_new_jobs"), 1);
  // The console's recent alerts: each fired once and is resolved now.
  ASSERT_TRUE(ct::wait_until(
      [&] { return db_.query_value("SELECT count(*) FROM conveyor.alert_event WHERE resolved_at IS NULL") == "0"; },
      10s))
      << db_.query_value("SELECT string_agg(name, ',') FROM conveyor.alert_event WHERE resolved_at IS NULL");
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.alert_event WHERE name = 'service_down'"), "1");
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.alert_event WHERE name = 'workers_lost'"), "1");
}

// Stop 32's leftover: a relay that refuses to publish (its place past this
// cluster's transaction ids, a backup restored into another cluster by
// hand) counts every event as sent, so outbox_stuck cannot see it. The
// monitor alerts on the relay's own rule, conveyor.outbox_relay_refusal(),
// and resolves once conveyor.outbox_renumber() has run.
TEST_F(MonitorTest, ARelayThatRefusesToPublishAlerts) {
  start_monitor();
  const std::string series = R"(conveyor_alerts_firing{alert="outbox_refused",severity="critical"})";
  const auto refused = [&] {
    const json alerts = get_json("monitor", "/v1/alerts").at("alerts");
    for (const auto& a : alerts) {
      if (a.at("name") == "outbox_refused") return a.at("summary").get<std::string>();
    }
    return std::string();
  };
  EXPECT_EQ(refused(), "");
  ASSERT_TRUE(ct::wait_until([&] { return metric("monitor", "conveyor_outbox_relay_refusing") == 0; }, 10s)) << logs();

  db_.exec("UPDATE conveyor.outbox_relay SET sent = '4000000002:4000000002:'");
  EXPECT_NE(refused().find("conveyor.outbox_renumber()"), std::string::npos) << refused();
  ASSERT_TRUE(ct::wait_until([&] { return metric("monitor", series) == 1; }, 10s)) << logs();
  EXPECT_EQ(metric("monitor", "conveyor_outbox_relay_refusing"), 1);
  EXPECT_EQ(metric("monitor", "conveyor_outbox_stuck_events"), 0) << "the events count as sent";

  db_.exec("SELECT conveyor.outbox_renumber()");
  EXPECT_EQ(refused(), "");
  EXPECT_TRUE(ct::wait_until([&] { return metric("monitor", series) == 0; }, 10s)) << logs();
  EXPECT_EQ(metric("monitor", "conveyor_outbox_relay_refusing"), 0);
}

}  // namespace
