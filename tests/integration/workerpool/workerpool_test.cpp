// conveyor-workerpool: the scaling rule as plain logic, then the real
// executable with the job path (configuration, execution, publication) on
// its own database and broker: scale up to max under a backlog and back down
// to min, replacement of a hung and of a killed worker, a lowered and raised max, a job of
// a killed worker requeued, two pools with one leader, env files, and a
// backend that does not exist yet. Jobs are plain INSERTs of a `sleep` type.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "backend.hpp"
#include "conveyor/http/client.hpp"
#include "conveyor/testing/stack.hpp"
#include "sleep_job_type.hpp"
#include "scaling.hpp"
#include "workerpool.hpp"

namespace conveyor::workerpool {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;
using testing::Stack;
using testing::wait_until;
using SteadyClock = std::chrono::steady_clock;

// ---------------------------------------------------------------- the rule

ActiveWorker row(std::int64_t id, int running, double started_at) {
  return ActiveWorker{id, "w" + std::to_string(id), running, started_at};
}

ScalingInput input(std::int64_t demand, int concurrency, int min, int max, std::vector<ActiveWorker> active = {},
                   std::vector<std::string> pending = {}) {
  ScalingInput in;
  in.demand = demand;
  in.concurrency = concurrency;
  in.min_workers = min;
  in.max_workers = max;
  in.active = std::move(active);
  in.pending = std::move(pending);
  return in;
}

TEST(WorkerPoolRule, DesiredIsDemandOverConcurrencyClampedToMinAndMax) {
  EXPECT_EQ(desired_workers(11, 4, 0, 3), 3);
  EXPECT_EQ(desired_workers(5, 4, 0, 10), 2);
  EXPECT_EQ(desired_workers(8, 4, 0, 10), 2);
  EXPECT_EQ(desired_workers(0, 4, 2, 5), 2);
  EXPECT_EQ(desired_workers(100, 1, 0, 0), 0);
  EXPECT_EQ(desired_workers(3, 0, 0, 9), 3) << "concurrency below 1 counts as 1";
}

TEST(WorkerPoolRule, DrainsIdleFirstThenFewestRunningThenNewest) {
  const auto order = drain_order({row(1, 2, 100), row(2, 0, 100), row(3, 1, 300), row(4, 0, 200), row(5, 1, 200)});
  std::vector<std::int64_t> ids;
  for (const auto& w : order) ids.push_back(w.id);
  EXPECT_EQ(ids, (std::vector<std::int64_t>{4, 2, 3, 5, 1}));
}

TEST(WorkerPoolRule, ScalesUpAtOnceAndCountsStartingWorkers) {
  Scaler s(10s);
  const auto t = SteadyClock::now();
  auto p = s.plan(input(11, 4, 0, 3, {row(1, 4, 1)}), t);
  EXPECT_EQ(p.desired, 3);
  EXPECT_EQ(p.spawn, 2);
  EXPECT_EQ(p.message, "scaling up 1 -> 3: demand 11 jobs, concurrency 4, min 0, max 3");
  // The two started ones are not registered yet: nothing more to start.
  p = s.plan(input(11, 4, 0, 3, {row(1, 4, 1)}, {"a", "b"}), t);
  EXPECT_EQ(p.spawn, 0);
  EXPECT_TRUE(p.message.empty());
}

TEST(WorkerPoolRule, DrainingWorkersStillCountAgainstMax) {
  Scaler s(10s);
  const auto t = SteadyClock::now();
  // Max 3, one active, two still draining their last jobs: no room yet.
  auto in = input(40, 2, 0, 3, {row(1, 2, 1)});
  in.draining = 2;
  auto p = s.plan(in, t);
  EXPECT_EQ(p.desired, 3);
  EXPECT_EQ(p.spawn, 0);
  // One of them exited: one more may start.
  in.draining = 1;
  p = s.plan(in, t);
  EXPECT_EQ(p.spawn, 1);
  EXPECT_EQ(p.message,
            "scaling up 1 -> 2: demand 40 jobs, concurrency 2, min 0, max 3 (1 draining or exiting "
            "still count against max)");
}

TEST(WorkerPoolRule, AboveMaxDrainsAtOnceAndStopsStartingWorkersLast) {
  Scaler s(10s);
  const auto t = SteadyClock::now();
  auto p = s.plan(input(9, 1, 0, 1, {row(1, 1, 1), row(2, 1, 2), row(3, 1, 3)}), t);
  ASSERT_EQ(p.drain.size(), 2u);
  EXPECT_EQ(p.drain[0].id, 3);  // all busy alike: newest first
  EXPECT_EQ(p.drain[1].id, 2);
  EXPECT_TRUE(p.stop_pending.empty());
  p = s.plan(input(9, 1, 0, 1, {row(1, 1, 1)}, {"old", "new"}), t);
  EXPECT_TRUE(p.drain.size() == 1 && p.drain[0].id == 1);
  EXPECT_EQ(p.stop_pending, (std::vector<std::string>{"new"}));
}

TEST(WorkerPoolRule, ScalesDownOnlyAfterTheDelayWithoutABreak) {
  Scaler s(10s);
  const auto t = SteadyClock::now();
  const std::vector<ActiveWorker> three = {row(1, 1, 1), row(2, 0, 2), row(3, 0, 3)};
  EXPECT_TRUE(s.plan(input(1, 1, 0, 5, three), t).drain.empty());
  EXPECT_TRUE(s.plan(input(1, 1, 0, 5, three), t + 9s).drain.empty());
  // Demand comes back for one tick: the timer starts again.
  EXPECT_TRUE(s.plan(input(3, 1, 0, 5, three), t + 9500ms).drain.empty());
  EXPECT_TRUE(s.plan(input(1, 1, 0, 5, three), t + 10s).drain.empty());
  EXPECT_TRUE(s.plan(input(1, 1, 0, 5, three), t + 19s).drain.empty());
  const auto p = s.plan(input(1, 1, 0, 5, three), t + 20s);
  ASSERT_EQ(p.drain.size(), 2u);
  EXPECT_EQ(p.drain[0].id, 3);  // idle, newest
  EXPECT_EQ(p.drain[1].id, 2);
  EXPECT_NE(p.message.find("scaling down 3 -> 1"), std::string::npos) << p.message;
  // Starting workers are not stopped below max: they are drained once registered.
  EXPECT_TRUE(s.plan(input(0, 1, 0, 5, {}, {"a"}), t + 40s).stop_pending.empty());
}

TEST(WorkerPoolRule, LockKeyIsStablePositiveAndPerPool) {
  EXPECT_EQ(leader_lock_key("default"), leader_lock_key("default"));
  EXPECT_NE(leader_lock_key("default"), leader_lock_key("gpu"));
  EXPECT_GT(leader_lock_key("default"), 0);
  EXPECT_GT(leader_lock_key("gpu"), 0);
}

TEST(WorkerPoolRule, WorkersGetThePoolsEnvironmentWithoutItsOwnKeys) {
  const auto env = worker_environment({{"PATH", "/bin"},
                                       {"CONVEYOR_DATABASE_URL", "postgresql://x/y"},
                                       {"CONVEYOR_WORKERPOOL_BACKEND", "local"},
                                       {"CONVEYOR_WORKER_EXECUTABLE", "/w"},
                                       {"CONVEYOR_HTTP_PORT", "18090"},
                                       {"CONVEYOR_INSTANCE_ID", "workerpool"}},
                                      "workerpool-42-1", "gpu");
  EXPECT_EQ(env, (std::map<std::string, std::string>{{"PATH", "/bin"},
                                                     {"CONVEYOR_DATABASE_URL", "postgresql://x/y"},
                                                     {"CONVEYOR_HTTP_PORT", "0"},
                                                     {"CONVEYOR_INSTANCE_ID", "workerpool-42-1"},
                                                     {"CONVEYOR_WORKER_NAME", "workerpool-42-1"},
                                                     {"CONVEYOR_WORKER_POOL", "gpu"}}));
}

TEST(WorkerPoolRule, WorkersLogInWithTheirOwnDatabaseUrl) {
  const std::map<std::string, std::string> pool{{"CONVEYOR_DATABASE_URL", "postgresql://pool@db/c"},
                                                {"CONVEYOR_WORKER_DATABASE_URL", "postgresql://worker@db/c"}};
  // As a URL: the pool's is replaced, and the pool-only key does not reach the worker.
  auto env = worker_environment(pool, "w-1", "default", {"postgresql://worker@db/c", {}});
  EXPECT_EQ(env.at("CONVEYOR_DATABASE_URL"), "postgresql://worker@db/c");
  EXPECT_EQ(env.count("CONVEYOR_WORKER_DATABASE_URL"), 0u);
  // As a file (the pool read it from CONVEYOR_WORKER_DATABASE_URL_FILE): the
  // worker gets the file, never the secret in its environment.
  env = worker_environment({{"CONVEYOR_DATABASE_URL", "postgresql://pool@db/c"},
                            {"CONVEYOR_WORKER_DATABASE_URL_FILE", "/run/secrets/worker-url"}},
                           "w-2", "default", {{}, "/run/secrets/worker-url"});
  EXPECT_EQ(env.count("CONVEYOR_DATABASE_URL"), 0u);
  EXPECT_EQ(env.at("CONVEYOR_DATABASE_URL_FILE"), "/run/secrets/worker-url");
  EXPECT_EQ(env.count("CONVEYOR_WORKER_DATABASE_URL_FILE"), 0u);
  // Not configured: the pool's own login (make_backend warns).
  env = worker_environment(pool, "w-3", "default");
  EXPECT_EQ(env.at("CONVEYOR_DATABASE_URL"), "postgresql://pool@db/c");
}

// ---------------------------------------------------------------- the service

using conveyor::testing::read_text;

class WorkerPoolTest : public ::testing::Test {
 protected:
  void TearDown() override {
    stack_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Heartbeats every second, a worker lost after 3 s of silence (or
  // `heartbeat_timeout_s`), one job per worker, a 1 s scale-down delay, and
  // a hung worker killed 2 s after its SIGTERM.
  void start(int min, int max,
             std::vector<std::string> services = {"configuration", "execution", "publication", "workerpool"},
             int heartbeat_timeout_s = 3) {
    Stack::Options o;
    o.workers = 0;
    o.services = std::move(services);
    o.job_types_file = testing::write_sleep_job_type(dir_);
    o.env = {{"CONVEYOR_POLL_INTERVAL_MS", "500"},
             {"CONVEYOR_WORKERPOOL_SCALE_DOWN_DELAY_MS", "1000"},
             {"CONVEYOR_WORKERPOOL_KILL_GRACE_MS", "2000"},
             {"CONVEYOR_SHUTDOWN_GRACE_MS", "10000"}};
    o.setup_sql =
        "UPDATE conveyor.system_parameters SET worker_heartbeat_interval_s = 1, "
        "worker_heartbeat_timeout_s = " +
        std::to_string(heartbeat_timeout_s) +
        ", worker_concurrency = 1, min_number_of_worker_instances = " + std::to_string(min) +
        ", max_number_of_worker_instances = " + std::to_string(max);
    stack_ = std::make_unique<Stack>(std::move(o));
  }

  Stack& stack() { return *stack_; }

  int count(const std::string& sql) { return std::stoi(stack().db().query_value(sql)); }
  int active() { return count("SELECT count(*) FROM conveyor.worker WHERE status = 'active'"); }
  int done() { return count("SELECT count(*) FROM conveyor.job WHERE status = 'done'"); }
  int in_error() {
    return count(
        "SELECT count(*) FROM conveyor.job_status_change "
        "WHERE to_status IN ('failed', 'internal_error', 'external_error', 'canceled')");
  }

  // Worker processes of a pool: its process group without the pool itself
  // (jobs run in process groups of their own).
  // The pool's worker processes: the members of its process group besides
  // itself whose parent is not a member. A worker's job process is a member
  // from its clone until its own setpgid, a child of a member; a worker is
  // the pool's child, or init's once the pool is killed.
  int processes(const std::string& pool = "workerpool") {
    const int pid = stack().process(pool).pid();
    auto members = testing::process_group_members(pid);
    members.erase(pid);
    return static_cast<int>(std::count_if(members.begin(), members.end(),
                                          [&](int m) { return !members.contains(testing::parent_pid(m)); }));
  }

  void insert_sleeps(int n, double seconds) {
    std::string sql =
        "INSERT INTO conveyor.job (job_type, params) SELECT 'sleep', '{\"seconds\": " + std::to_string(seconds) +
        "}'::jsonb FROM generate_series(1, " + std::to_string(n) + ")";
    stack().db().exec(sql);
  }

  // The value of an unlabelled series (or a labelled one, given with its
  // labels) in the process's /metrics; -1 when absent.
  double metric(const std::string& process, const std::string& series) {
    const auto r = http::http_request("GET", "http://127.0.0.1:" + std::to_string(stack().port(process)) + "/metrics");
    std::istringstream in(r.body);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
    }
    return -1;
  }

  std::string log_of(const std::string& process) { return read_text(stack().data_dir() / (process + ".log")); }

  fs::path dir_ = fs::temp_directory_path() / testing::unique_name("workerpool-test");
  std::unique_ptr<Stack> stack_;
};

// Issue 4: a backlog brings the pool up to max_number_of_worker_instances
// and never beyond; once it is done the pool drains back to min and the
// worker processes exit.
TEST_F(WorkerPoolTest, BacklogScalesUpToMaxNeverBeyondThenDownToMin) {
  start(0, 3);
  EXPECT_EQ(active(), 0) << "min 0 and no jobs: no worker";
  insert_sleeps(8, 1.5);
  int peak_active = 0;
  int peak_processes = 0;
  const auto sample = [&] {
    peak_active = std::max(peak_active, active());
    peak_processes = std::max(peak_processes, processes());
  };
  const auto t = SteadyClock::now();
  ASSERT_TRUE(wait_until(
      [&] {
        sample();
        return active() == 3;
      },
      20s))
      << stack().logs_tail();
  const auto up_ms = std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t).count();
  ASSERT_TRUE(wait_until(
      [&] {
        sample();
        return done() == 8;
      },
      40s))
      << stack().logs_tail();
  EXPECT_LE(peak_active, 3);
  EXPECT_LE(peak_processes, 3);

  ASSERT_TRUE(wait_until([&] { return active() == 0 && processes() == 0; }, 20s)) << stack().logs_tail();
  const auto down_ms = std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t).count();
  std::cout << "[workerpool] 0 -> 3 workers in " << up_ms << " ms; back to 0 after " << down_ms << " ms\n";
  EXPECT_EQ(count("SELECT count(*) FROM conveyor.worker WHERE status <> 'stopped'"), 0)
      << "drained workers mark themselves stopped";
  EXPECT_EQ(count("SELECT count(*) FROM conveyor.job_status_change WHERE to_status = 'started'"), 8)
      << "each job ran once";
  EXPECT_EQ(metric("workerpool", "conveyor_workerpool_spawned_total"), 3);
  EXPECT_EQ(metric("workerpool", "conveyor_workerpool_drained_total"), 3);
  EXPECT_EQ(metric("workerpool", "conveyor_workerpool_leader"), 1);
  EXPECT_EQ(metric("workerpool", "conveyor_workerpool_workers{state=\"active\"}"), 0);
  EXPECT_NE(log_of("workerpool").find("scaling up 0 -> "), std::string::npos);
}

// min_number_of_worker_instances is kept with no work at all; a hung
// worker (SIGSTOP: alive, silent, so the pool sees no exit) is marked lost
// after the heartbeat timeout, stopped and replaced: the heartbeat rule is
// the fallback when the process does not end.
TEST_F(WorkerPoolTest, KeepsMinWorkersAndReplacesAHungOne) {
  start(2, 4, {"workerpool"});
  ASSERT_TRUE(wait_until([&] { return active() == 2 && processes() == 2; }, 20s)) << stack().logs_tail();
  const auto victim = stack().db().query("SELECT name, pid FROM conveyor.worker WHERE status = 'active' LIMIT 1");
  ASSERT_EQ(victim.size(), 1u);
  const std::string name = victim[0][0];
  const auto t = SteadyClock::now();
  ASSERT_EQ(::kill(std::stoi(victim[0][1]), SIGSTOP), 0);

  const auto status = [&] {
    return stack().db().query_value("SELECT status FROM conveyor.worker WHERE name = '" + name + "'");
  };
  ASSERT_TRUE(wait_until([&] { return status() == "lost"; }, 15s)) << stack().logs_tail();
  const auto lost_ms = std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t).count();
  EXPECT_GE(lost_ms, 1500) << "lost on missed heartbeats (timeout 3 s)";
  ASSERT_TRUE(wait_until([&] { return active() == 2 && processes() == 2; }, 15s)) << stack().logs_tail();
  const auto back_ms = std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t).count();
  std::cout << "[workerpool] hung worker marked lost after " << lost_ms << " ms; back to 2 after " << back_ms
            << " ms\n";
  EXPECT_EQ(count("SELECT count(*) FROM conveyor.worker"), 3) << "one replacement, no more";
  EXPECT_EQ(metric("workerpool", "conveyor_workerpool_lost_total"), 1);
  EXPECT_NE(log_of("workerpool").find("is marked lost but its process still runs (hung)"), std::string::npos);
}

// Issue 13: a worker killed -9 is the pool's own child: its exit is seen at
// the next tick, its row is lost at once (not after the 60 s heartbeat
// timeout), its running job is recovered by the reconciler's rule, and the
// same tick starts a replacement, which runs the job to done.
TEST_F(WorkerPoolTest, AWorkerKilledWithSigkillIsReplacedBeforeTheHeartbeatTimeout) {
  start(1, 1, {"configuration", "execution", "publication", "workerpool"}, 60);
  insert_sleeps(1, 3);
  ASSERT_TRUE(wait_until([&] { return count("SELECT count(*) FROM conveyor.job WHERE status = 'started'") == 1; }, 20s))
      << stack().logs_tail();
  const auto victim =
      stack().db().query("SELECT w.name, w.pid FROM conveyor.job j JOIN conveyor.worker w ON w.id = j.worker_id");
  ASSERT_EQ(victim.size(), 1u);
  const std::string name = victim[0][0];
  const auto t = SteadyClock::now();
  ASSERT_EQ(::kill(std::stoi(victim[0][1]), SIGKILL), 0);

  // Well within the 60 s timeout: the row lost, the job back to ready
  // (attempt 1), and another worker active.
  ASSERT_TRUE(wait_until(
      [&] {
        return stack().db().query_value("SELECT status FROM conveyor.worker WHERE name = '" + name + "'") == "lost" &&
               count(
                   "SELECT count(*) FROM conveyor.job_status_change WHERE from_status = 'started' AND "
                   "to_status = 'ready'") == 1 &&
               count("SELECT count(*) FROM conveyor.worker WHERE status = 'active' AND name <> '" + name + "'") == 1;
      },
      10s))
      << stack().logs_tail();
  const auto replaced_ms = std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t).count();
  EXPECT_EQ(stack().db().query_value("SELECT attempt FROM conveyor.job"), "1");
  ASSERT_TRUE(wait_until([&] { return done() == 1; }, 30s)) << stack().logs_tail();
  const auto done_ms = std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t).count();
  std::cout << "[workerpool] worker killed -9: lost, job requeued and replaced after " << replaced_ms
            << " ms (heartbeat timeout 60 s); job done after " << done_ms << " ms\n";
  EXPECT_LT(done_ms, 40'000) << "done before the heartbeat timeout would even have marked the worker lost";
  EXPECT_EQ(count("SELECT count(*) FROM conveyor.worker"), 2) << "the killed worker and its replacement";
  EXPECT_EQ(metric("workerpool", "conveyor_workerpool_lost_total"), 1);
  EXPECT_NE(log_of("workerpool").find("marked 1 exited worker(s) lost at once"), std::string::npos);
}

// Runbook 001's `UPDATE conveyor.system_parameters SET max_number_of_worker_instances = ...`
// with jobs running: the extra workers drain (finish their job, take no
// other, exit); no job is interrupted; raising it grows the pool again.
TEST_F(WorkerPoolTest, LoweringMaxDrainsBusyWorkersAndRaisingItGrows) {
  start(0, 3);
  insert_sleeps(10, 2);
  ASSERT_TRUE(wait_until(
      [&] { return active() == 3 && count("SELECT count(*) FROM conveyor.job WHERE status = 'started'") == 3; }, 20s))
      << stack().logs_tail();

  auto t = SteadyClock::now();
  stack().db().exec("UPDATE conveyor.system_parameters SET max_number_of_worker_instances = 1");
  ASSERT_TRUE(wait_until([&] { return active() <= 1; }, 5s)) << stack().logs_tail();
  const auto drain_ms = std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t).count();
  EXPECT_EQ(count("SELECT count(*) FROM conveyor.worker WHERE status IN ('draining', 'stopped')"), 2);
  ASSERT_TRUE(wait_until([&] { return processes() <= 1; }, 15s)) << stack().logs_tail();
  const auto exit_ms = std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t).count();
  EXPECT_EQ(in_error(), 0);
  EXPECT_EQ(stack().db().query_value("SELECT max(attempt) FROM conveyor.job"), "0") << "no job was interrupted";
  ASSERT_GE(count("SELECT count(*) FROM conveyor.job WHERE status <> 'done'"), 3)
      << "the backlog must outlast the drain for the raise to mean anything";
  EXPECT_EQ(active(), 1);

  t = SteadyClock::now();
  stack().db().exec("UPDATE conveyor.system_parameters SET max_number_of_worker_instances = 3");
  ASSERT_TRUE(wait_until([&] { return active() >= 2; }, 10s)) << stack().logs_tail();
  const auto grow_ms = std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t).count();
  std::cout << "[workerpool] max 3 -> 1: active 1 after " << drain_ms << " ms, processes 1 after " << exit_ms
            << " ms; max 1 -> 3: grows after " << grow_ms << " ms\n";

  ASSERT_TRUE(wait_until([&] { return done() == 10; }, 40s)) << stack().logs_tail();
  EXPECT_EQ(in_error(), 0);
  EXPECT_EQ(stack().db().query_value("SELECT max(attempt) FROM conveyor.job"), "0");
  EXPECT_EQ(count("SELECT count(*) FROM conveyor.job_status_change WHERE to_status = 'started'"), 10);
  EXPECT_NE(log_of("workerpool").find("above max_number_of_worker_instances"), std::string::npos);
}

// A worker killed -9 mid-job: the job goes back to ready (attempt + 1) on the
// missed heartbeats, the pool starts a replacement, and the job ends done.
TEST_F(WorkerPoolTest, AJobOfAKilledWorkerIsRequeuedAndDone) {
  start(0, 1);
  insert_sleeps(1, 3);
  ASSERT_TRUE(wait_until([&] { return count("SELECT count(*) FROM conveyor.job WHERE status = 'started'") == 1; }, 20s))
      << stack().logs_tail();
  const auto victim =
      stack().db().query("SELECT w.name, w.pid FROM conveyor.job j JOIN conveyor.worker w ON w.id = j.worker_id");
  ASSERT_EQ(victim.size(), 1u);
  const auto t = SteadyClock::now();
  ASSERT_EQ(::kill(std::stoi(victim[0][1]), SIGKILL), 0);

  ASSERT_TRUE(wait_until([&] { return done() == 1; }, 30s)) << stack().logs_tail();
  const auto done_ms = std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t).count();
  std::cout << "[workerpool] job of a worker killed -9 done " << done_ms << " ms after the kill\n";
  EXPECT_EQ(stack().db().query_value("SELECT attempt FROM conveyor.job"), "1");
  EXPECT_EQ(count("SELECT count(*) FROM conveyor.job_status_change WHERE from_status = 'started' AND "
                  "to_status = 'ready'"),
            1);
  EXPECT_EQ(stack().db().query_value("SELECT status FROM conveyor.worker WHERE name = '" + victim[0][0] + "'"), "lost");
  EXPECT_EQ(count("SELECT count(*) FROM conveyor.worker"), 2) << "the killed worker and its replacement";
}

// Two pool processes on one database: one leads, the pool never exceeds
// max; the leader killed -9 leaves its workers running, and the standby
// takes over and adopts them instead of starting new ones.
TEST_F(WorkerPoolTest, TwoPoolsOneLeaderAndTheStandbyTakesOver) {
  start(2, 2, {"workerpool", "workerpool-2"});
  const auto leader = [&](const std::string& p) { return metric(p, "conveyor_workerpool_leader") == 1; };
  ASSERT_TRUE(wait_until([&] { return active() == 2 && leader("workerpool") != leader("workerpool-2"); }, 20s))
      << stack().logs_tail();
  const std::string first = leader("workerpool") ? "workerpool" : "workerpool-2";
  const std::string second = first == "workerpool" ? "workerpool-2" : "workerpool";
  const auto both = [&] { return processes("workerpool") + processes("workerpool-2"); };
  // Both tick every 500 ms: watch a few ticks.
  int peak = 0;
  for (const auto until = SteadyClock::now() + 1500ms; SteadyClock::now() < until;) {
    peak = std::max({peak, both(), active()});
    std::this_thread::sleep_for(100ms);  // sampling the counts, not synchronising
  }
  EXPECT_EQ(peak, 2) << "never more than max workers";
  EXPECT_EQ(processes(second), 0) << "the standby started nothing";
  const auto names = stack().db().query("SELECT name FROM conveyor.worker ORDER BY name");

  // kill -9 of the leader alone (not its process group): its workers stay.
  const auto t = SteadyClock::now();
  ASSERT_EQ(::kill(stack().process(first).pid(), SIGKILL), 0);
  stack().process(first).wait(10s);
  ASSERT_TRUE(wait_until([&] { return leader(second); }, 10s)) << stack().logs_tail();
  const auto takeover_ms = std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t).count();
  std::cout << "[workerpool] standby took over " << takeover_ms << " ms after the leader was killed\n";
  EXPECT_NE(log_of(second).find("took over as leader"), std::string::npos);
  EXPECT_EQ(processes(first), 2) << "the killed pool's workers keep running";
  for (const auto until = SteadyClock::now() + 1500ms; SteadyClock::now() < until;) {
    peak = std::max({peak, both(), active()});
    std::this_thread::sleep_for(100ms);  // sampling the counts, not synchronising
  }
  EXPECT_EQ(peak, 2);
  EXPECT_EQ(stack().db().query("SELECT name FROM conveyor.worker ORDER BY name"), names)
      << "the new leader adopted the running workers";
  EXPECT_EQ(active(), 2);
}

// The workers get the pool's --env-file files, without the pool's own keys
// (a worker refuses unknown keys in a file).
TEST_F(WorkerPoolTest, WorkersGetTheEnvFilesWithoutThePoolKeys) {
  start(1, 1, {});
  fs::create_directories(dir_);
  const fs::path file = dir_ / "site.env";
  std::ofstream(file) << "# shared by every service\nCONVEYOR_DATABASE_URL=" << stack().db().url()
                      << "\nexport CONVEYOR_WORKERPOOL_SCALE_DOWN_DELAY_MS=1s\nCONVEYOR_LOG_LEVEL=debug\n";
  auto env = stack().env();
  env.erase("CONVEYOR_DATABASE_URL");  // only the file has it
  env["CONVEYOR_HTTP_PORT"] = "0";
  env["CONVEYOR_INSTANCE_ID"] = "filepool";
  testing::ChildProcess pool(testing::ChildProcess::Options{
      .argv = {testing::executable("conveyor-workerpool").string(), "--env-file", file.string()},
      .env = env,
      .stdout_file = dir_ / "filepool.log",
      .stderr_file = {},
      .detach = false,
  });
  ASSERT_TRUE(wait_until(
      [&] {
        return count("SELECT count(*) FROM conveyor.worker WHERE status = 'active' AND name LIKE 'filepool-%'") == 1;
      },
      20s))
      << read_text(dir_ / "filepool.log");
  const std::string log = read_text(dir_ / "filepool.log");
  EXPECT_NE(log.find("sets conveyor-workerpool keys"), std::string::npos) << log;
  EXPECT_EQ(pool.stop(10s), 0) << read_text(dir_ / "filepool.log");
  EXPECT_EQ(count("SELECT count(*) FROM conveyor.worker WHERE status = 'stopped'"), 1)
      << "SIGTERM to the pool stops its workers";
}

// A cluster backend without what it needs fails at start, naming it: no
// API server for `kubernetes`, a kubeconfig in YAML (only the JSON form is
// read), and both Nomad token keys at once.
TEST(WorkerPoolStart, AClusterBackendWithoutItsSettingsFailsWithAClearMessage) {
  testing::TestDatabase db;
  const fs::path dir = fs::temp_directory_path() / testing::unique_name("workerpool-start");
  fs::create_directories(dir);
  std::ofstream(dir / "config.yaml") << "apiVersion: v1\nkind: Config\nclusters: []\n";
  const std::map<std::string, std::string> base = {{"CONVEYOR_DATABASE_URL", db.url()},
                                                   {"CONVEYOR_KAFKA_BROKERS", ""},
                                                   {"CONVEYOR_HTTP_PORT", "0"},
                                                   {"KUBERNETES_SERVICE_HOST", ""}};
  const auto start = [&](std::map<std::string, std::string> env) {
    for (const auto& [k, v] : base) env.emplace(k, v);
    return testing::run({testing::executable("conveyor-workerpool").string()}, env, 30s);
  };
  auto r = start({{"CONVEYOR_WORKERPOOL_BACKEND", "kubernetes"}});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("not in a cluster (KUBERNETES_SERVICE_HOST is not set) and CONVEYOR_KUBECONFIG is empty"),
            std::string::npos)
      << r.output;
  r = start({{"CONVEYOR_WORKERPOOL_BACKEND", "kubernetes"}, {"CONVEYOR_KUBECONFIG", (dir / "config.yaml").string()}});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("kubectl config view --raw --minify --flatten -o json"), std::string::npos) << r.output;
  r = start({{"CONVEYOR_WORKERPOOL_BACKEND", "nomad"},
             {"CONVEYOR_WORKERPOOL_NOMAD_TOKEN", "s3cr3t-token"},
             {"CONVEYOR_WORKERPOOL_NOMAD_TOKEN_FILE", (dir / "token").string()}});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("both set: set one"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("s3cr3t-token"), std::string::npos) << "a secret is never logged";
  fs::remove_all(dir);
}

}  // namespace
}  // namespace conveyor::workerpool
