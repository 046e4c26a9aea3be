// Elastic and self-healing, end to end (issue 4): the worker pool and the
// reconciler (monitor) as real processes with the job path, under the faults
// operators meet: cancel and restart by SQL, a lowered worker limit, a worker
// or a service killed -9, the broker down for 20 s, two replicas of
// everything. Each test prints the recovery times it measured ("[recovery]").
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "conveyor/http/client.hpp"
#include "conveyor/testing/stack.hpp"
#include "e2e.hpp"

namespace {

using conveyor::e2e::all_terminal;
using conveyor::e2e::expect_valid_histories;
using conveyor::e2e::status_of;
using conveyor::e2e::submit;
using conveyor::testing::Stack;
using conveyor::testing::wait_until;
using json = nlohmann::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

long long ms_since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

void report(const std::string& what, long long ms) {
  std::cout << "[recovery] " << what << ": " << ms << " ms" << std::endl;
  ::testing::Test::RecordProperty(what, std::to_string(ms));
}

// `sleep` with three attempts (a lost worker costs one) and only a file sink,
// so nothing here depends on a webhook receiver.
struct JobTypesFile : conveyor::e2e::SleepTypeFile {
  JobTypesFile() : SleepTypeFile(3600, 3, json::array({conveyor::e2e::file_sink()})) {}
};

// The whole system with a worker pool instead of fixed workers, and the
// monitor; heartbeats every second, a worker lost after 3 s of silence.
Stack::Options elastic(const JobTypesFile& types, int max_workers, int concurrency, const std::string& extra_sql = "") {
  Stack::Options o;
  o.workers = 0;
  o.services = {"creation", "configuration", "execution", "publication", "monitor", "workerpool"};
  o.job_types_file = types.path();
  o.env = {{"CONVEYOR_WORKERPOOL_SCALE_DOWN_DELAY_MS", "2000"}};
  o.setup_sql =
      "UPDATE conveyor.system_parameters SET worker_heartbeat_interval_s = 1, "
      "worker_heartbeat_timeout_s = 3, min_number_of_worker_instances = 0, "
      "max_number_of_worker_instances = " +
      std::to_string(max_workers) + ", worker_concurrency = " + std::to_string(concurrency) + extra_sql;
  return o;
}

int count(Stack& stack, const std::string& sql) { return std::stoi(stack.db().query_value(sql)); }

int done_count(Stack& stack) { return count(stack, "SELECT count(*) FROM conveyor.job WHERE status = 'done'"); }

// Worker processes alive now (zombies not yet reaped excluded): children of
// the pool process(es), read from /proc/<pid>/stat ("pid (comm) state ppid ...").
int live_workers(Stack& stack, const std::vector<std::string>& pools = {"workerpool"}) {
  std::set<int> parents;
  for (const auto& pool : pools) parents.insert(stack.process(pool).pid());
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    std::ifstream in(entry.path() / "stat");
    std::string stat;
    if (!std::getline(in, stat)) continue;
    const auto open = stat.find('('), close = stat.rfind(')');
    if (open == std::string::npos || close == std::string::npos) continue;
    if (stat.substr(open + 1, close - open - 1) != "conveyor-worker") continue;
    std::istringstream rest(stat.substr(close + 1));
    char state = 0;
    int ppid = 0;
    rest >> state >> ppid;
    if (state != 'Z' && parents.count(ppid) > 0) ++n;
  }
  return n;
}

bool process_running(const std::string& pattern) {
  return conveyor::testing::run({"pgrep", "-f", pattern}).status == 0;
}

// No (job, from, to) recorded twice: every job here runs once, so any repeat
// is a duplicate made by a replica or a replayed event.
void expect_no_transition_twice(Stack& stack) {
  auto dups = stack.db().query(
      "SELECT job_id, coalesce(from_status, '(insert)'), to_status, count(*) FROM conveyor.job_status_change "
      "GROUP BY 1, 2, 3 HAVING count(*) > 1 ORDER BY 1 LIMIT 10");
  for (const auto& d : dups) ADD_FAILURE() << "job " << d[0] << ": " << d[1] << " -> " << d[2] << " x" << d[3];
  EXPECT_TRUE(dups.empty());
  expect_valid_histories(stack);
}

// Submits `n` sleep-0 jobs from its own thread, each with its own
// Idempotency-Key; a request that fails (creation down) is sent again until
// it is answered, so a restart of creation loses and duplicates nothing.
class Submitter {
 public:
  Submitter(std::vector<std::string> api_urls, std::string token, int n, std::string key_prefix)
      : urls_(std::move(api_urls)), token_(std::move(token)), n_(n), prefix_(std::move(key_prefix)) {
    thread_ = std::thread([this] { main(); });
  }
  ~Submitter() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int submitted() const { return submitted_; }
  int failed_requests() const { return failed_; }
  void set_url(std::size_t i, std::string url) {
    std::lock_guard g(mu_);
    urls_.at(i) = std::move(url);
  }
  void join() { thread_.join(); }

 private:
  void main() {
    for (int i = 0; i < n_ && !stop_; ++i) {
      const std::string body = R"({"job_type": "sleep", "params": {"seconds": 0}})";
      while (!stop_) {
        std::string url;
        {
          std::lock_guard g(mu_);
          url = urls_[static_cast<std::size_t>(i) % urls_.size()];
        }
        try {
          auto r = conveyor::http::http_request("POST", url + "/v1/jobs", body,
                                                {{"Content-Type", "application/json"},
                                                 {"Authorization", "Bearer " + token_},
                                                 {"Idempotency-Key", prefix_ + std::to_string(i)}},
                                                2s);
          if (r.status == 200 || r.status == 201) break;
        } catch (const std::exception&) {
          // not listening: being restarted
        }
        ++failed_;
        std::this_thread::sleep_for(50ms);  // back-off before sending the same request again
      }
      ++submitted_;
    }
  }
  std::mutex mu_;
  std::vector<std::string> urls_;
  const std::string token_;
  int n_;
  std::string prefix_;
  std::atomic<int> submitted_{0};
  std::atomic<int> failed_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// ---------------------------------------------------------------- tests

// Runbook 000: `UPDATE ... SET canceled_at = now()` stops a running job;
// `SET canceled_at = null` runs it again from the start.
TEST(Faults, CancelAndRestartBySql) {
  JobTypesFile types;
  Stack stack(elastic(types, 1, 2));
  auto id = std::to_string(
      submit(stack, {{"job_type", "sleep"}, {"params", {{"seconds", 6.25}}}}).at("id").get<std::int64_t>());
  const std::string process = "conveyor-example-task sleep 6.25";
  ASSERT_TRUE(wait_until([&] { return status_of(stack, id) == "started" && process_running(process); }, 60s))
      << status_of(stack, id) << "\n"
      << stack.logs_tail();

  auto t = Clock::now();
  stack.db().exec("UPDATE conveyor.job SET canceled_at = now() WHERE id = " + id);
  ASSERT_TRUE(wait_until([&] { return status_of(stack, id) == "canceled"; }, 30s)) << stack.logs_tail();
  EXPECT_TRUE(wait_until([&] { return !process_running(process); }, 10s)) << "the job's process is gone";
  report("cancel by SQL of a running job -> canceled, process gone", ms_since(t));

  t = Clock::now();
  stack.db().exec("UPDATE conveyor.job SET canceled_at = NULL WHERE id = " + id);
  ASSERT_TRUE(wait_until([&] { return status_of(stack, id) == "started"; }, 30s)) << status_of(stack, id) << "\n"
                                                                                  << stack.logs_tail();
  report("restart by SQL (canceled_at = null) -> started again", ms_since(t));
  ASSERT_TRUE(wait_until([&] { return status_of(stack, id) == "done"; }, 60s)) << stack.logs_tail();

  auto history =
      stack.db().query("SELECT to_status FROM conveyor.job_status_change WHERE job_id = " + id + " ORDER BY id");
  std::string walk;
  for (const auto& h : history) walk += h[0] + " ";
  EXPECT_EQ(walk,
            "initialized configured ready queued started canceled "
            "initialized configured ready queued started processed done ");
  EXPECT_EQ(stack.db().query_value("SELECT attempt FROM conveyor.job WHERE id = " + id), "0")
      << "a restart is a fresh run";
  expect_valid_histories(stack);
}

// Runbook 001: `UPDATE conveyor.system_parameters SET max_number_of_worker_instances = ...`
// with a backlog: down to one worker without losing a running job, then up again.
TEST(Faults, LoweringAndRaisingMaxWorkersLive) {
  JobTypesFile types;
  Stack stack(elastic(types, 3, 2));
  for (int i = 0; i < 40; ++i) submit(stack, {{"job_type", "sleep"}, {"params", {{"seconds", 1.5}}}});
  ASSERT_TRUE(wait_until([&] { return live_workers(stack) == 3; }, 60s)) << stack.logs_tail();

  auto t = Clock::now();
  stack.db().exec("UPDATE conveyor.system_parameters SET max_number_of_worker_instances = 1");
  int peak_after = 0;
  ASSERT_TRUE(wait_until(
      [&] {
        int n = live_workers(stack);
        return n <= 1;
      },
      30s))
      << stack.logs_tail();
  report("max_number_of_worker_instances 3 -> 1: at most one live worker", ms_since(t));
  // It stays at one while the limit is one.
  for (auto until = Clock::now() + 3s; Clock::now() < until;) {
    peak_after = std::max(peak_after, live_workers(stack));
    std::this_thread::sleep_for(200ms);  // sampling the process count, not synchronising
  }
  EXPECT_LE(peak_after, 1);
  ASSERT_GT(count(stack, "SELECT count(*) FROM conveyor.job WHERE status <> 'done'"), 4)
      << "the backlog must outlast the drain for the raise to mean anything";

  t = Clock::now();
  stack.db().exec("UPDATE conveyor.system_parameters SET max_number_of_worker_instances = 3");
  ASSERT_TRUE(wait_until([&] { return live_workers(stack) >= 2; }, 30s)) << stack.logs_tail();
  report("max_number_of_worker_instances 1 -> 3: the pool grows", ms_since(t));

  ASSERT_TRUE(wait_until([&] { return done_count(stack) == 40; }, 120s)) << stack.logs_tail();
  // Draining never interrupted a job: each ran once.
  EXPECT_EQ(stack.db().query_value("SELECT max(attempt) FROM conveyor.job"), "0");
  EXPECT_EQ(count(stack, "SELECT count(*) FROM conveyor.job_status_change WHERE to_status = 'started'"), 40);
  expect_no_transition_twice(stack);
}

// A worker killed -9 mid-run: its jobs go back to ready as soon as the pool
// reaps it (not after the jobs' one-hour timeout) and finish elsewhere.
TEST(Faults, AWorkerKilledDuringARunHasItsJobsRequeued) {
  JobTypesFile types;
  Stack stack(elastic(types, 2, 2));
  for (int i = 0; i < 8; ++i) submit(stack, {{"job_type", "sleep"}, {"params", {{"seconds", 4}}}});
  ASSERT_TRUE(
      wait_until([&] { return count(stack, "SELECT count(*) FROM conveyor.job WHERE status = 'started'") >= 2; }, 60s))
      << stack.logs_tail();
  auto victim = stack.db().query(
      "SELECT w.id, w.pid, w.name FROM conveyor.worker w JOIN conveyor.job j ON j.worker_id = w.id "
      "WHERE j.status = 'started' ORDER BY j.id LIMIT 1");
  ASSERT_EQ(victim.size(), 1u);
  const std::string worker_id = victim[0][0];
  auto jobs = stack.db().query("SELECT id FROM conveyor.job WHERE status = 'started' AND worker_id = " + worker_id);
  ASSERT_FALSE(jobs.empty());
  std::string ids;
  for (const auto& j : jobs) ids += (ids.empty() ? "" : ",") + j[0];
  const int worker_rows = count(stack, "SELECT count(*) FROM conveyor.worker");

  auto t = Clock::now();
  ASSERT_EQ(::kill(std::stoi(victim[0][1]), SIGKILL), 0);
  ASSERT_TRUE(wait_until(
      [&] {
        return count(stack, "SELECT count(*) FROM conveyor.job WHERE id IN (" + ids +
                                ") AND (status = 'started' AND worker_id = " + worker_id + ")") == 0;
      },
      30s))
      << stack.logs_tail();
  report("worker killed -9 -> its jobs requeued", ms_since(t));
  // The pool is the worker's parent: it sees the exit at its next tick and
  // marks the worker lost at once (issue 13), without waiting for the 3 s
  // heartbeat timeout (tests/integration/workerpool proves that with 60 s).
  EXPECT_EQ(stack.db().query_value("SELECT status FROM conveyor.worker WHERE id = " + worker_id), "lost");

  ASSERT_TRUE(wait_until([&] { return done_count(stack) == 8; }, 90s)) << stack.logs_tail();
  report("worker killed -9 -> all its jobs done", ms_since(t));
  EXPECT_EQ(stack.db().query_value("SELECT count(*) FROM conveyor.job WHERE id IN (" + ids + ") AND attempt = 1"),
            std::to_string(jobs.size()));
  EXPECT_EQ(stack.db().query_value("SELECT count(*) FROM conveyor.job_status_change WHERE job_id IN (" + ids +
                                   ") AND from_status = 'started' AND to_status = 'ready'"),
            std::to_string(jobs.size()))
      << "one requeue per job";
  EXPECT_GT(count(stack, "SELECT count(*) FROM conveyor.worker"), worker_rows) << "the pool replaced the worker";
  expect_valid_histories(stack);
}

// Issue 9, item 1: PostgreSQL restarted (fast, then immediate stop, 10 s
// down) while jobs run. The workers live on; each outcome is written again
// until it is committed, so the jobs in flight end `done` on their first
// attempt, none stays `started`, and the admission capacity is whole again.
TEST(Faults, APostgresRestartDuringARunLeavesNoJobStarted) {
  JobTypesFile types;
  Stack::Options o = elastic(types, 2, 4);
  o.private_postgres = true;
  // The production default: a 10 s outage is shorter than the heartbeat
  // timeout, so the workers are not declared lost meanwhile and what is
  // measured is that their outcomes are kept (the 3 s timeout of the other
  // tests would requeue the jobs as worker_lost when the database is back).
  o.setup_sql += "; UPDATE conveyor.system_parameters SET worker_heartbeat_timeout_s = 30";
  Stack stack(o);
  using Mode = conveyor::testing::PostgresCluster::StopMode;
  for (const Mode mode : {Mode::fast, Mode::immediate}) {
    const int before = done_count(stack);
    for (int i = 0; i < 12; ++i) submit(stack, {{"job_type", "sleep"}, {"params", {{"seconds", 2}}}});
    ASSERT_TRUE(wait_until(
        [&] { return count(stack, "SELECT count(*) FROM conveyor.job WHERE status = 'started'") >= 4; }, 60s))
        << stack.logs_tail();
    std::string in_flight;
    for (const auto& r : stack.db().query("SELECT id FROM conveyor.job WHERE status = 'started'")) {
      in_flight += (in_flight.empty() ? "" : ",") + r[0];
    }
    stack.postgres().stop(mode);
    // The outage itself (as in the issue: 10 s), during which every running
    // process ends; not a wait for a condition.
    std::this_thread::sleep_for(10s);
    stack.postgres().start();
    const auto back = Clock::now();
    ASSERT_TRUE(wait_until([&] { return done_count(stack) == before + 12; }, 90s)) << stack.logs_tail();
    report(std::string("PostgreSQL restarted (") + (mode == Mode::fast ? "fast" : "immediate") +
               ", 10 s down) -> all 12 jobs done",
           ms_since(back));
    EXPECT_EQ(count(stack, "SELECT count(*) FROM conveyor.job WHERE status IN ('started', 'queued')"), 0);
    // The outcomes of the jobs in flight were kept, not lost and re-run.
    EXPECT_EQ(stack.db().query_value("SELECT count(*) FROM conveyor.job WHERE id IN (" + in_flight +
                                     ") AND attempt = 0 AND status = 'done'"),
              std::to_string(std::count(in_flight.begin(), in_flight.end(), ',') + 1))
        << "jobs in flight: " << in_flight << "\n"
        << stack.logs_tail();
  }
  // Admission capacity is whole: 2 workers x 4 run 8 jobs at once. First the
  // pool scales to 0 (min 0), so both workers start afresh: submitted while a
  // worker is being drained (the scale-down delay ending as they arrive), a
  // draining worker holds its place against max until its job ends, and only
  // 4 run at first (seen in CI). The jobs last long enough that a worker slow
  // to start on a loaded CI machine (it took over 3 s once, next to the image
  // build) still finds the other one's jobs running (teardown waits for them:
  // kept short).
  ASSERT_TRUE(wait_until(
      [&] { return count(stack, "SELECT count(*) FROM conveyor.worker WHERE status IN ('active', 'draining')") == 0; },
      60s))
      << stack.logs_tail();
  for (int i = 0; i < 8; ++i) submit(stack, {{"job_type", "sleep"}, {"params", {{"seconds", 10}}}});
  EXPECT_TRUE(
      wait_until([&] { return count(stack, "SELECT count(*) FROM conveyor.job WHERE status = 'started'") == 8; }, 60s))
      << stack.logs_tail();
  expect_no_transition_twice(stack);
}

// Each stage killed -9 in turn during a 1,000-job run and started again.
TEST(Faults, KillingEachServiceDuringAThousandJobRunLosesNothing) {
  JobTypesFile types;
  Stack stack(elastic(types, 2, 4));
  Submitter submitter({stack.api_url()}, stack.api_token(), 1000, "kill-each-");

  struct Kill {
    std::string service;
    std::function<bool()> when;
    std::string input_status;  // what the service moves on
  };
  const std::vector<Kill> kills = {
      {"creation", [&] { return submitter.submitted() >= 200; }, ""},
      {"configuration", [&] { return submitter.submitted() >= 500; }, "initialized"},
      {"execution", [&] { return done_count(stack) >= 300; }, "ready"},
      {"publication", [&] { return done_count(stack) >= 550; }, "processed"},
  };
  for (const auto& k : kills) {
    ASSERT_TRUE(wait_until(k.when, 120s)) << "before killing " << k.service << "\n" << stack.logs_tail();
    stack.kill(k.service, SIGKILL);
    auto t = Clock::now();
    stack.start(k.service);
    report("kill -9 " + k.service + " -> restarted and ready", ms_since(t));
    if (k.service == "creation") {
      submitter.set_url(0, stack.api_url());
      const int before = submitter.submitted();
      ASSERT_TRUE(wait_until([&] { return submitter.submitted() > before; }, 30s));
      report("kill -9 creation -> submissions accepted again", ms_since(t));
    } else {
      const std::string since = stack.db().query_value("SELECT clock_timestamp()");
      const int pending = count(stack, "SELECT count(*) FROM conveyor.job WHERE status = '" + k.input_status + "'");
      if (pending > 0) {
        ASSERT_TRUE(wait_until(
            [&] {
              return count(stack, "SELECT count(*) FROM conveyor.job_status_change WHERE from_status = '" +
                                      k.input_status + "' AND at > '" + since + "'") > 0;
            },
            30s))
            << stack.logs_tail();
        report("kill -9 " + k.service + " -> moving " + k.input_status + " jobs again", ms_since(t));
      }
    }
  }
  submitter.join();
  EXPECT_EQ(submitter.submitted(), 1000);
  auto t = Clock::now();
  ASSERT_TRUE(wait_until([&] { return done_count(stack) == 1000; }, 240s)) << done_count(stack) << " done\n"
                                                                           << stack.logs_tail();
  std::cout << "[recovery] last kill -> all 1000 done: " << ms_since(t) << " ms after the submitter finished"
            << std::endl;
  EXPECT_EQ(count(stack, "SELECT count(*) FROM conveyor.job"), 1000) << "a resent request made a second job";
  expect_no_transition_twice(stack);
}

// The broker stopped for 20 s mid-run: services keep moving jobs from the
// database (the poll fallback), the outbox keeps the events, and once the
// broker is back every job is done.
TEST(Faults, TheBrokerDownForTwentySeconds) {
  JobTypesFile types;
  Stack stack(elastic(types, 2, 4));
  for (int i = 0; i < 200; ++i) submit(stack, {{"job_type", "sleep"}, {"params", {{"seconds", 0}}}});
  ASSERT_TRUE(wait_until([&] { return done_count(stack) >= 50; }, 60s)) << stack.logs_tail();

  stack.broker().stop();
  const auto down = Clock::now();
  const int done_at_stop = done_count(stack);
  // Submissions keep working: the API writes to PostgreSQL only.
  for (int i = 0; i < 100; ++i) submit(stack, {{"job_type", "sleep"}, {"params", {{"seconds", 0}}}});
  // The fault lasts 20 s (the scenario), whatever happens meanwhile.
  std::this_thread::sleep_until(down + 20s);
  const int done_during = done_count(stack) - done_at_stop;
  EXPECT_GT(done_during, 0) << "jobs move without the broker (database poll)";
  std::cout << "[recovery] jobs done while the broker was down: " << done_during << std::endl;

  stack.broker().resume();
  const auto up = Clock::now();
  ASSERT_TRUE(wait_until([&] { return done_count(stack) == 300; }, 120s)) << done_count(stack) << " done\n"
                                                                          << stack.logs_tail();
  report("broker back -> all 300 jobs done", ms_since(up));
  ASSERT_TRUE(wait_until([&] { return count(stack, "SELECT count(*) FROM conveyor.outbox_unsent()") == 0; }, 60s))
      << "the outbox drains once the broker is back\n"
      << stack.logs_tail();
  report("broker back -> outbox drained", ms_since(up));
  expect_no_transition_twice(stack);
}

// Two replicas of every service (two pools too) on 1,000 jobs.
TEST(Faults, TwoReplicasOfEveryServiceOnAThousandJobs) {
  JobTypesFile types;
  auto o = elastic(types, 3, 4);
  o.services = {"creation",    "creation-2",    "configuration", "configuration-2", "execution",  "execution-2",
                "publication", "publication-2", "monitor",       "monitor-2",       "workerpool", "workerpool-2"};
  Stack stack(o);
  const std::string api2 = "http://127.0.0.1:" + std::to_string(stack.port("creation-2"));
  auto t = Clock::now();
  Submitter submitter({stack.api_url(), api2}, stack.api_token(), 1000, "replicas-");
  int peak_workers = 0;
  ASSERT_TRUE(wait_until(
      [&] {
        peak_workers = std::max(peak_workers, live_workers(stack, {"workerpool", "workerpool-2"}));
        return done_count(stack) == 1000;
      },
      240s))
      << done_count(stack) << " done\n"
      << stack.logs_tail();
  std::cout << "[replicas] 1000 jobs submitted through two APIs and done in " << ms_since(t) << " ms; at most "
            << peak_workers << " worker processes" << std::endl;
  submitter.join();
  EXPECT_LE(peak_workers, 3) << "two pools never run more than max_number_of_worker_instances workers";
  EXPECT_EQ(count(stack, "SELECT count(*) FROM conveyor.job"), 1000);
  expect_no_transition_twice(stack);
}

}  // namespace
