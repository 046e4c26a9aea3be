// conveyor-worker as a black box: the real executable against its own
// database and devbroker; jobs are put in `queued` by raw SQL and the test
// watches the database, the job's files and the processes.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "conveyor/db/db.hpp"
#include "conveyor/http/client.hpp"
#include "conveyor/testing/testing.hpp"

namespace conveyor {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;
using testing::wait_until;

std::string sql_literal(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}

using conveyor::testing::read_text;

class WorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_dir_ = fs::temp_directory_path() / testing::unique_name("worker_data");
    fs::create_directories(data_dir_);
    // Heartbeats every second so an operator's drain is seen quickly.
    db_.exec("UPDATE conveyor.system_parameters SET worker_heartbeat_interval_s = 1");
  }
  void TearDown() override {
    worker_.reset();
    std::error_code ec;
    fs::remove_all(data_dir_, ec);
  }

  // The environment of a worker named `name`, on a port of its own, with
  // `extra` over it.
  std::map<std::string, std::string> worker_env(const std::string& name,
                                                const std::map<std::string, std::string>& extra) const {
    std::string path = CONVEYOR_EXAMPLE_TASK_DIR;
    if (const char* p = std::getenv("PATH")) path += std::string(":") + p;
    std::map<std::string, std::string> env = {
        {"CONVEYOR_DATABASE_URL", db_.url()},
        {"CONVEYOR_KAFKA_BROKERS", broker_.bootstrap()},
        {"CONVEYOR_TOPIC_PREFIX", topic_prefix_},
        {"CONVEYOR_DATA_DIR", data_dir_.string()},
        {"CONVEYOR_HTTP_PORT", std::to_string(testing::free_port())},
        {"CONVEYOR_WORKER_NAME", name},
        {"CONVEYOR_WORKER_CONCURRENCY", "2"},
        {"CONVEYOR_KILL_GRACE_MS", "1000"},
        {"CONVEYOR_POLL_INTERVAL_MS", "500"},
        {"CONVEYOR_LOG_LEVEL", "debug"},
        {"PATH", path},
    };
    for (const auto& [k, v] : extra) env[k] = v;
    return env;
  }

  // Runs a worker with `env` (`argv_prefix`: through another program, such
  // as setpriv); null, with a failure, if it does not register.
  std::unique_ptr<testing::ChildProcess> launch_worker(const std::map<std::string, std::string>& env,
                                                       std::vector<std::string> argv_prefix, const fs::path& log) {
    argv_prefix.push_back(CONVEYOR_WORKER_BIN);
    auto worker = std::make_unique<testing::ChildProcess>(testing::ChildProcess::Options{
        .argv = argv_prefix,
        .env = env,
        .stdout_file = log,
        .stderr_file = {},
        .detach = false,
    });
    const std::string name = env.at("CONVEYOR_WORKER_NAME");
    if (!wait_until(
            [&] {
              return db_.query_value("SELECT status FROM conveyor.worker WHERE name = " + sql_literal(name)) ==
                     "active";
            },
            30s)) {
      ADD_FAILURE() << "worker " << name << " did not register; its log:\n" << read_text(log);
      return nullptr;
    }
    return worker;
  }

  void start_worker(const std::map<std::string, std::string>& extra = {}, std::vector<std::string> argv_prefix = {}) {
    const auto env = worker_env(name_, extra);
    http_port_ = env.at("CONVEYOR_HTTP_PORT");
    worker_ = launch_worker(env, std::move(argv_prefix), data_dir_ / "worker.log");
    ASSERT_TRUE(worker_);
  }

  // A counter's value on the /metrics of the worker on `port`; -1 if it is
  // not exposed, or the worker does not answer (yet: it registers first).
  static double counter(const std::string& port, const std::string& name) {
    return conveyor::testing::metric_sample("127.0.0.1:" + port, name);
  }

  // Inserts a job and walks it to `ready` the way the stages would.
  std::int64_t ready_job(const json& config, int max_attempts = 1) {
    const std::string id = db_.query_value("INSERT INTO conveyor.job (job_type, max_attempts) VALUES ('test', " +
                                           std::to_string(max_attempts) + ") RETURNING id");
    db_.exec("UPDATE conveyor.job SET status = 'configured', config = " + sql_literal(config.dump()) +
             "::jsonb WHERE id = " + id + ";\nUPDATE conveyor.job SET status = 'ready' WHERE id = " + id + ";");
    return std::stoll(id);
  }

  // ... and on to `queued`, for any worker (no assignment).
  std::int64_t queue_job(const json& config, int max_attempts = 1) {
    const auto id = ready_job(config, max_attempts);
    db_.exec("UPDATE conveyor.job SET status = 'queued' WHERE id = " + std::to_string(id));
    return id;
  }

  std::string job_field(std::int64_t id, const std::string& column) {
    return db_.query_value("SELECT " + column + " FROM conveyor.job WHERE id = " + std::to_string(id));
  }

  bool wait_status(std::int64_t id, const std::string& status, std::chrono::milliseconds timeout = 30s) {
    const bool ok = wait_until([&] { return job_field(id, "status") == status; }, timeout);
    if (!ok) {
      ADD_FAILURE() << "job " << id << " is " << job_field(id, "status") << ", expected " << status << "; worker log:\n"
                    << read_text(data_dir_ / "worker.log");
    }
    return ok;
  }

  fs::path job_log_dir(std::int64_t id) {
    const std::string month = job_field(id, "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM')");
    return data_dir_ / "logs" / month / ("job-" + std::to_string(id));
  }

  std::string history(std::int64_t id) {
    std::string out;
    for (auto& row : db_.query("SELECT coalesce(from_status, '-') || '>' || to_status "
                               "FROM conveyor.job_status_change WHERE job_id = " +
                               std::to_string(id) + " ORDER BY id")) {
      out += row[0] + " ";
    }
    return out;
  }

  static bool process_running(const std::string& pattern) { return testing::run({"pgrep", "-f", pattern}).status == 0; }

  testing::TestDatabase db_;
  testing::Broker broker_;
  std::string name_ = testing::unique_name("worker");
  std::string topic_prefix_ = testing::unique_name("wt");
  fs::path data_dir_;
  std::unique_ptr<testing::ChildProcess> worker_;
  std::string http_port_;
};

// A job with nothing to deliver (no sink in its config) is done in the
// worker's finish, through processed (20270104000000): both changes in its
// history, its attempt closed as done. One with a sink stays processed,
// for publication.
TEST_F(WorkerTest, SuccessfulJobIsProcessedWithLogsMetadataAndResult) {
  start_worker();
  const auto id = queue_job(
      {{"argv", {"env"}}, {"env", {{"API_TOKEN", "hunter2"}, {"PLAIN_SETTING", "visible"}}}, {"timeout_s", 30}});
  const auto touch = queue_job({{"argv", {"touch", "product.tif"}}});
  const auto delivered = queue_job({{"argv", {"true"}}, {"sinks", {{{"kind", "webhook"}}}}});
  ASSERT_TRUE(wait_status(id, "done"));
  ASSERT_TRUE(wait_status(touch, "done"));
  ASSERT_TRUE(wait_status(delivered, "processed"));
  EXPECT_EQ(history(delivered),
            "->initialized initialized>configured configured>ready ready>queued queued>started started>processed ");
  EXPECT_EQ(
      db_.query_value("SELECT string_agg(outcome, ',' ORDER BY job_id) FROM conveyor.job_attempt WHERE job_id IN (" +
                      std::to_string(id) + ", " + std::to_string(delivered) + ")"),
      "done,processed");

  const json result = json::parse(job_field(id, "result::text"));
  EXPECT_EQ(result["exit_code"], 0);
  EXPECT_EQ(result["worker"], name_);
  EXPECT_EQ(result["attempt"], 0);
  EXPECT_EQ(result["log_dir"], job_log_dir(id).string());
  EXPECT_TRUE(result["duration_ms"].is_number());
  EXPECT_EQ(history(id),
            "->initialized initialized>configured configured>ready ready>queued "
            "queued>started started>processed processed>done ");
  EXPECT_EQ(job_field(id, "worker_id"),
            db_.query_value("SELECT id FROM conveyor.worker WHERE name = " + sql_literal(name_)));

  const std::string logs = read_text(job_log_dir(id) / "logs.txt");
  EXPECT_NE(logs.find(" conveyor attempt 1 of 1 on worker " + name_), std::string::npos) << logs;
  EXPECT_NE(logs.find(" stdout CONVEYOR_JOB_ID=" + std::to_string(id) + "\n"), std::string::npos) << logs;
  EXPECT_NE(logs.find(" stdout CONVEYOR_JOB_ATTEMPT=0\n"), std::string::npos) << logs;
  EXPECT_NE(logs.find(" stdout PLAIN_SETTING=visible\n"), std::string::npos) << logs;
  EXPECT_NE(logs.find(" conveyor exited with code 0"), std::string::npos) << logs;
  // The worker's own configuration (database URL) is not the job's.
  EXPECT_EQ(logs.find("CONVEYOR_DATABASE_URL"), std::string::npos) << logs;
  // Lines start with an RFC 3339 UTC timestamp with milliseconds.
  const std::string first = logs.substr(0, logs.find('\n'));
  ASSERT_GE(first.size(), 24u);
  EXPECT_EQ(first[4], '-');
  EXPECT_EQ(first[10], 'T');
  EXPECT_EQ(first[19], '.');
  EXPECT_EQ(first[23], 'Z');

  const json meta = json::parse(read_text(job_log_dir(id) / "metadata.json"));
  EXPECT_EQ(meta["job_id"], id);
  EXPECT_EQ(meta["job_type"], "test");
  EXPECT_EQ(meta["argv"], json::array({"env"}));
  EXPECT_EQ(meta["exit_code"], 0);
  EXPECT_EQ(meta["worker"], name_);
  EXPECT_EQ(meta["attempt"], 0);
  EXPECT_EQ(meta["max_attempts"], 1);
  EXPECT_EQ(meta["env"]["API_TOKEN"], "****");
  EXPECT_EQ(meta["env"]["PLAIN_SETTING"], "visible");
  EXPECT_EQ(meta["env"]["CONVEYOR_JOB_ID"], std::to_string(id));
  EXPECT_TRUE(meta["started_at"].is_string());
  EXPECT_TRUE(meta["ended_at"].is_string());
  EXPECT_EQ(read_text(job_log_dir(id) / "metadata.json").find("hunter2"), std::string::npos);

  // A file written in the working directory is listed as an output.
  const std::string product = (data_dir_ / "outputs" / ("job-" + std::to_string(touch)) / "product.tif").string();
  const json touch_result = json::parse(job_field(touch, "result::text"));
  EXPECT_EQ(touch_result["outputs"], json::array({product}));
  EXPECT_TRUE(fs::exists(product));

  const auto metrics = http::http_request("GET", "http://127.0.0.1:" + http_port_ + "/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.body.find("conveyor_worker_jobs_total{outcome=\"processed\"} 3"), std::string::npos)
      << metrics.body;
  EXPECT_NE(metrics.body.find("conveyor_worker_job_duration_seconds_count 3"), std::string::npos) << metrics.body;
  EXPECT_NE(metrics.body.find("conveyor_worker_running "), std::string::npos) << metrics.body;
}

// The variables a job printed with `env`, from its logs.txt ("<time> stdout K=V").
std::map<std::string, std::string> printed_env(const std::string& logs) {
  std::map<std::string, std::string> env;
  std::istringstream in(logs);
  std::string line;
  while (std::getline(in, line)) {
    const auto at = line.find(" stdout ");
    if (at == std::string::npos) continue;
    const std::string kv = line.substr(at + 8);
    const auto eq = kv.find('=');
    if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return env;
}

// What the worker is started with that no job may see (issue 12).
const std::map<std::string, std::string> kWorkerSecrets = {
    {"PGPASSWORD", "pg-secret-of-the-worker"},
    {"PGUSER", "conveyor_worker"},
    {"CONVEYOR_API_TOKEN", "cvt_secret-of-the-worker"},
    {"SECRET_X", "x-secret-of-the-worker"},
    {"https_proxy", "http://user:proxy-secret-of-the-worker@proxy.invalid:3128"},
    {"TZ", "UTC"},
};

// The type's env: one variable for the job, and names it may not set.
const json kTypeEnv = {{"TYPE_SETTING", "from-the-type"},
                       {"PGPASSWORD", "pg-set-by-the-type"},
                       {"CONVEYOR_DATABASE_URL", "postgresql://set-by-the-type"}};

// Asserts that `env` (what the job printed) holds nothing of the worker's.
void expect_clean_job_env(const std::map<std::string, std::string>& env, const std::string& logs) {
  EXPECT_EQ(env.count("TYPE_SETTING") ? env.at("TYPE_SETTING") : "", "from-the-type") << logs;
  EXPECT_EQ(env.count("CONVEYOR_JOB_ID"), 1u) << logs;
  EXPECT_EQ(env.count("CONVEYOR_JOB_ATTEMPT"), 1u) << logs;
  EXPECT_EQ(env.count("CONVEYOR_OUTPUT_DIR"), 1u) << logs;
  for (const auto& [k, v] : env) {
    EXPECT_NE(k.rfind("PG", 0), 0u) << "the job got " << k << "\n" << logs;
    if (k.rfind("CONVEYOR_", 0) == 0) {
      EXPECT_TRUE(k == "CONVEYOR_JOB_ID" || k == "CONVEYOR_JOB_ATTEMPT" || k == "CONVEYOR_OUTPUT_DIR")
          << "the job got " << k << "\n"
          << logs;
    }
  }
  EXPECT_EQ(env.count("SECRET_X"), 0u) << logs;
  EXPECT_EQ(env.count("https_proxy"), 0u) << logs;
  for (const char* secret : {"secret-of-the-worker", "set-by-the-type"}) {
    EXPECT_EQ(logs.find(secret), std::string::npos) << secret << " in\n" << logs;
  }
  // The type's refused names are said, without their values.
  EXPECT_NE(logs.find(" conveyor env CONVEYOR_DATABASE_URL, PGPASSWORD not set"), std::string::npos) << logs;
}

TEST_F(WorkerTest, AJobsEnvironmentHoldsNothingOfTheWorkersButThePathAndLocale) {
  start_worker(kWorkerSecrets);  // its CONVEYOR_DATABASE_URL is set too
  const auto id = queue_job({{"argv", {"env"}}, {"env", kTypeEnv}});
  ASSERT_TRUE(wait_status(id, "done"));
  const std::string logs = read_text(job_log_dir(id) / "logs.txt");
  const auto env = printed_env(logs);
  expect_clean_job_env(env, logs);
  // Exactly the minimal base, the type's variable and the job's own.
  std::set<std::string> expected = {
      "CONVEYOR_JOB_ATTEMPT", "CONVEYOR_JOB_ID", "CONVEYOR_OUTPUT_DIR", "HOME", "PATH", "TYPE_SETTING", "TZ"};
  // The test runner's locale and TMPDIR reach the worker, and so its jobs.
  for (const char* k : {"LANG", "LC_ALL", "TMPDIR"}) {
    if (std::getenv(k) != nullptr) expected.insert(k);
  }
  std::set<std::string> names;
  for (const auto& [k, v] : env) names.insert(k);
  EXPECT_EQ(names, expected) << logs;
  EXPECT_EQ(env.at("CONVEYOR_JOB_ID"), std::to_string(id));
  EXPECT_EQ(env.at("TZ"), "UTC");
  EXPECT_EQ(read_text(data_dir_ / "worker.log").find("set-by-the-type"), std::string::npos);
}

TEST_F(WorkerTest, AProcessJobCannotReadTheWorkersEnvironmentInProc) {
  // A process job runs as the worker's user. Root may read any process's
  // environment, so when the test runs as root the worker runs as nobody.
  std::vector<std::string> as_user;
  if (::geteuid() == 0) {
    as_user = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"};
    fs::permissions(data_dir_, fs::perms::all);
  }
  auto extra = kWorkerSecrets;
  extra["CONVEYOR_CONTAINER_RUNTIME"] = "/nonexistent/podman";  // no rootless podman for nobody
  start_worker(extra, as_user);
  const auto id = queue_job({{"argv", {"/bin/sh", "-c", "echo ppid=$PPID; tr '\\0' '\\n' < /proc/$PPID/environ"}}});
  ASSERT_TRUE(wait_status(id, "failed"));
  const std::string logs = read_text(job_log_dir(id) / "logs.txt");
  // Its parent is the worker, whose environment it may not read.
  EXPECT_NE(logs.find(" stdout ppid=" + std::to_string(worker_->pid()) + "\n"), std::string::npos) << logs;
  EXPECT_NE(logs.find("Permission denied"), std::string::npos) << logs;
  EXPECT_EQ(logs.find("secret-of-the-worker"), std::string::npos) << logs;
  EXPECT_EQ(logs.find("CONVEYOR_DATABASE_URL"), std::string::npos) << logs;
}

TEST_F(WorkerTest, AContainerJobsEnvironmentHoldsNothingOfTheWorkers) {
  // podman and the Debian base image the container tests use (tools/containers).
  const std::string image = "localhost/debian:bookworm";
  const std::map<std::string, std::string> podman_env = {
      {"CONTAINERS_CONF", std::string(CONVEYOR_SOURCE_DIR) + "/deploy/podman/containers.conf"}};
  auto probe = podman_env;
  if (const char* p = std::getenv("PATH")) probe["PATH"] = p;
  // run() throws when podman itself cannot be executed (not installed yet:
  // tools/containers installs it): that is "not here" too.
  bool present = false;
  try {
    present = testing::run({"podman", "image", "exists", image}, probe, 60s).status == 0;
  } catch (const std::exception&) {
  }
  if (!present) GTEST_SKIP() << "podman or the image " << image << " is not here";
  auto extra = kWorkerSecrets;
  for (const auto& [k, v] : podman_env) extra[k] = v;
  start_worker(extra);
  const auto id = queue_job({{"image", image}, {"argv", {"env"}}, {"env", kTypeEnv}});
  ASSERT_TRUE(wait_status(id, "done", 120s));
  const std::string logs = read_text(job_log_dir(id) / "logs.txt");
  const auto env = printed_env(logs);
  expect_clean_job_env(env, logs);
  EXPECT_EQ(env.at("CONVEYOR_OUTPUT_DIR"), "/conveyor/output/");
}

// The container path where no container runtime is at hand: a stand-in
// for podman (a script: the `run` client executes the job's argv itself,
// `stop` sends it SIGTERM). A container job's client runs on the reactor
// like a process job; its cancel stops it through the runtime's `stop`.
TEST_F(WorkerTest, AContainerJobsClientRunsOnTheReactorAndACancelStopsItThroughTheRuntime) {
  const fs::path runtime = data_dir_ / "runtime" / "podman";
  fs::create_directories(runtime.parent_path());
  std::ofstream(runtime) << "#!/bin/sh\n"
                            "dir=$(dirname \"$0\")\n"
                            "case \"$1\" in\n"
                            "  info) echo systemd ;;\n"
                            "  image) echo '[{\"Id\":\"sha256:0123\",\"Digest\":\"sha256:4567\"}]' ;;\n"
                            "  stop) echo \"$4\" >> \"$dir/stopped\"; kill -TERM \"$(cat \"$dir/$4.pid\")\" ;;\n"
                            "  run) name=$4\n"
                            "    while [ \"$1\" != sha256:0123 ]; do shift; done; shift\n"
                            "    echo $$ > \"$dir/$name.pid\"\n"
                            "    exec \"$@\" ;;\n"
                            "esac\n";
  fs::permissions(runtime, fs::perms::owner_all);
  start_worker({{"CONVEYOR_CONTAINER_RUNTIME", runtime.string()}, {"CONVEYOR_CONTAINER_CGROUP_PARENT", ""}});
  const auto done = queue_job({{"image", "localhost/stand-in:1"}, {"argv", {"echo", "from the container"}}});
  ASSERT_TRUE(wait_status(done, "done"));
  const std::string logs = read_text(job_log_dir(done) / "logs.txt");
  EXPECT_NE(logs.find(" stdout from the container\n"), std::string::npos) << logs;

  const std::string secs = "60.00" + std::to_string(::getpid() % 10000) + "7";
  const auto id = queue_job({{"image", "localhost/stand-in:1"}, {"argv", {"sleep", secs}}});
  ASSERT_TRUE(wait_status(id, "started"));
  ASSERT_TRUE(wait_until([&] { return process_running("^sleep " + secs + "$"); }, 10s));
  db_.exec("UPDATE conveyor.job SET canceled_at = now() WHERE id = " + std::to_string(id));
  ASSERT_TRUE(wait_status(id, "canceled", 15s));
  EXPECT_FALSE(process_running("^sleep " + secs + "$"));
  EXPECT_NE(read_text(runtime.parent_path() / "stopped").find("conveyor-job-" + std::to_string(id) + "-0"),
            std::string::npos)
      << "not stopped through the runtime";
}

// system prepare-for-reboot --force (or a restore, or psql) marks a live
// worker stopped: it stops itself at its next heartbeat and exits 0, rather
// than heartbeat a row that every list hides (a new user's trial, stop 44).
TEST_F(WorkerTest, AWorkerMarkedStoppedBySomeoneElseStopsItself) {
  db_.exec("UPDATE conveyor.system_parameters SET worker_heartbeat_interval_s = 1");
  start_worker();
  db_.exec("UPDATE conveyor.worker SET status = 'stopped', stopped_at = now() WHERE name = '" + name_ + "'");
  const auto status = worker_->wait(30s);
  ASSERT_TRUE(status.has_value()) << "still running; its log:\n" << read_text(data_dir_ / "worker.log");
  EXPECT_EQ(*status, 0) << read_text(data_dir_ / "worker.log");
  EXPECT_NE(read_text(data_dir_ / "worker.log").find("was marked stopped by someone else"), std::string::npos)
      << read_text(data_dir_ / "worker.log");
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.worker WHERE name = '" + name_ + "'"), "stopped");
}

TEST_F(WorkerTest, ArgumentWithSpacesAndSemicolonIsOneArgument) {
  start_worker();
  const auto id = queue_job({{"argv", {"echo", "hello world; echo injected", "$HOME"}}});
  ASSERT_TRUE(wait_status(id, "done"));
  const std::string logs = read_text(job_log_dir(id) / "logs.txt");
  EXPECT_NE(logs.find(" stdout hello world; echo injected $HOME\n"), std::string::npos) << logs;
  EXPECT_EQ(logs.find(" stdout injected"), std::string::npos) << logs;
}

TEST_F(WorkerTest, FailureWithAttemptsLeftIsRetriedWithBackoff) {
  start_worker();
  const auto id = queue_job({{"argv", {"conveyor-example-task", "fail", "3"}}, {"retry_backoff_s", 60}}, 3);
  ASSERT_TRUE(wait_status(id, "ready"));
  EXPECT_EQ(job_field(id, "attempt"), "1");
  EXPECT_EQ(job_field(id, "error_subtype"), "exit_code");
  EXPECT_EQ(job_field(id, "error_message"), "exited with code 3");
  EXPECT_EQ(job_field(id, "not_before > now() + interval '50 seconds'"), "t");
  EXPECT_EQ(job_field(id, "not_before < now() + interval '61 seconds'"), "t");
  const std::string logs = read_text(job_log_dir(id) / "logs.txt");
  EXPECT_NE(logs.find(" stderr failing on purpose with exit code 3\n"), std::string::npos) << logs;

  // The retry, once admitted again, appends to the same logs.txt.
  db_.exec("UPDATE conveyor.job SET status = 'queued' WHERE id = " + std::to_string(id));
  ASSERT_TRUE(wait_status(id, "ready"));
  ASSERT_TRUE(wait_until([&] { return job_field(id, "attempt") == "2"; }, 10s));
  // Second back-off doubles: 60 * 2^1.
  EXPECT_EQ(job_field(id, "not_before > now() + interval '110 seconds'"), "t");
  const std::string logs2 = read_text(job_log_dir(id) / "logs.txt");
  EXPECT_NE(logs2.find(" conveyor attempt 1 of 3"), std::string::npos) << logs2;
  EXPECT_NE(logs2.find(" conveyor attempt 2 of 3"), std::string::npos) << logs2;
}

// A retry does not go through configuration again: "{attempt}" of the
// type's command (config.command_template) is rendered by the worker.
TEST_F(WorkerTest, RetryRendersTheAttemptPlaceholderAgain) {
  start_worker();
  const auto id = queue_job({{"argv", {"conveyor-example-task", "flaky", "0"}},
                             {"command_template", {"conveyor-example-task", "flaky", "{attempt}"}},
                             {"retry_backoff_s", 0}},
                            2);
  ASSERT_TRUE(wait_status(id, "ready"));
  ASSERT_EQ(job_field(id, "attempt"), "1");
  db_.exec("UPDATE conveyor.job SET status = 'queued' WHERE id = " + std::to_string(id));
  ASSERT_TRUE(wait_status(id, "done"));
  const std::string logs = read_text(job_log_dir(id) / "logs.txt");
  EXPECT_NE(logs.find(" stdout attempt 1: succeeded\n"), std::string::npos) << logs;
  EXPECT_EQ(json::parse(job_field(id, "result::text"))["attempt"], 1);
}

TEST_F(WorkerTest, FailureWithoutAttemptsLeftFails) {
  start_worker();
  const auto id = queue_job({{"argv", {"conveyor-example-task", "fail", "4"}}}, 1);
  ASSERT_TRUE(wait_status(id, "failed"));
  EXPECT_EQ(job_field(id, "attempt"), "0");
  EXPECT_EQ(job_field(id, "error_subtype"), "exit_code");
  EXPECT_EQ(job_field(id, "error_message"), "exited with code 4");
  EXPECT_EQ(db_.query_value("SELECT message FROM conveyor.job_status_change WHERE job_id = " + std::to_string(id) +
                            " AND to_status = 'failed'"),
            "exited with code 4");
  const json meta = json::parse(read_text(job_log_dir(id) / "metadata.json"));
  EXPECT_EQ(meta["exit_code"], 4);
}

TEST_F(WorkerTest, ProgramThatCannotBeExecutedExits127WithAClearMessage) {
  start_worker();
  const auto id = queue_job({{"argv", {"conveyor-no-such-program", "x"}}});
  ASSERT_TRUE(wait_status(id, "failed"));
  EXPECT_NE(job_field(id, "error_message").find("cannot execute 'conveyor-no-such-program'"), std::string::npos)
      << job_field(id, "error_message");
  const std::string logs = read_text(job_log_dir(id) / "logs.txt");
  EXPECT_NE(logs.find("cannot execute 'conveyor-no-such-program': No such file or directory"), std::string::npos)
      << logs;
  const json meta = json::parse(read_text(job_log_dir(id) / "metadata.json"));
  EXPECT_EQ(meta["exit_code"], 127);
}

TEST_F(WorkerTest, TimeoutKillsTheProcessGroup) {
  start_worker();
  const std::string secs = "60.00" + std::to_string(::getpid() % 10000) + "1";
  const auto id = queue_job({{"argv", {"conveyor-example-task", "sleep", secs}}, {"timeout_s", 1}});
  ASSERT_TRUE(wait_status(id, "failed", 20s));
  EXPECT_EQ(job_field(id, "error_subtype"), "timeout");
  EXPECT_EQ(job_field(id, "error_message"), "killed after timeout of 1 s");
  EXPECT_FALSE(process_running("conveyor-example-task sleep " + secs));
  const std::string logs = read_text(job_log_dir(id) / "logs.txt");
  // The program saw SIGTERM first (it reports it), not an immediate SIGKILL.
  EXPECT_NE(logs.find(" stdout received SIGTERM"), std::string::npos) << logs;
}

TEST_F(WorkerTest, CancelKillsTheRunningProcessAndEndsCanceled) {
  start_worker();
  const std::string secs = "60.00" + std::to_string(::getpid() % 10000) + "2";
  const std::string pattern = "conveyor-example-task sleep " + secs;
  const auto id = queue_job({{"argv", {"conveyor-example-task", "sleep", secs}}});
  ASSERT_TRUE(wait_status(id, "started"));
  ASSERT_TRUE(wait_until([&] { return process_running(pattern); }, 10s));

  db_.exec("UPDATE conveyor.job SET canceled_at = now() WHERE id = " + std::to_string(id));
  ASSERT_TRUE(wait_status(id, "canceled", 10s));
  EXPECT_FALSE(process_running(pattern));
  EXPECT_NE(history(id).find("started>canceled"), std::string::npos) << history(id);
  const json meta = json::parse(read_text(job_log_dir(id) / "metadata.json"));
  EXPECT_EQ(meta["canceled"], true);
}

// The reconciler requeues the jobs of a worker that looked lost (missed
// heartbeats) though it still runs them. Queued again at once, such a job
// must not be claimed by the same worker while its first program runs: that
// program is stopped first, and its end is not taken for the new run's (a
// job nobody canceled ended "canceled" that way).
TEST_F(WorkerTest, AJobRequeuedWhileItsProgramRunsIsNotRunTwiceByItsWorker) {
  start_worker();
  const std::string secs = "60.00" + std::to_string(::getpid() % 10000) + "5";
  const std::string pattern = "conveyor-example-task sleep " + secs;
  const auto id = queue_job({{"argv", {"conveyor-example-task", "sleep", secs}}});
  const std::string sid = std::to_string(id);
  ASSERT_TRUE(wait_status(id, "started"));
  ASSERT_TRUE(wait_until([&] { return process_running(pattern); }, 10s));
  const std::string first = testing::run({"pgrep", "-f", pattern}).output;
  const int first_pid = std::stoi(first);

  // What the reconciler does, then configuration and admission: queued again,
  // in one transaction (no moment for the worker to see it ready).
  db_.exec("BEGIN; UPDATE conveyor.job SET status = 'ready', worker_id = NULL WHERE id = " + sid +
           "; UPDATE conveyor.job SET status = 'queued' WHERE id = " + sid + "; COMMIT");
  const std::string attempts = "SELECT count(*) FROM conveyor.job_attempt WHERE job_id = " + sid;
  ASSERT_TRUE(wait_until([&] { return db_.query_value(attempts) == "2"; }, 20s)) << history(id);
  EXPECT_NE(::kill(first_pid, 0), 0) << "the first run's program still runs beside the second";
  EXPECT_EQ(job_field(id, "status"), "started") << history(id);
  EXPECT_EQ(history(id).find("canceled"), std::string::npos) << history(id);
  const std::string logs = read_text(job_log_dir(id) / "logs.txt");
  EXPECT_NE(logs.find("killed: the job is no longer this worker's"), std::string::npos) << logs;
  std::string pids;
  EXPECT_TRUE(wait_until(
      [&] {
        pids = testing::run({"pgrep", "-f", pattern}).output;
        return std::count(pids.begin(), pids.end(), '\n') == 1;
      },
      10s))
      << "programs of the job: " << pids;
  db_.exec("UPDATE conveyor.job SET canceled_at = now() WHERE id = " + sid);
  EXPECT_TRUE(wait_status(id, "canceled", 10s));
}

// A worker killed -9 takes its jobs' programs with it (PR_SET_PDEATHSIG),
// even one that never writes (so no broken pipe would stop it): the job is
// requeued by the reconciler, and must not keep running twice meanwhile.
TEST_F(WorkerTest, AWorkerKilledMinusNineLeavesNoJobProcessBehind) {
  start_worker();
  const std::string secs = "60.00" + std::to_string(::getpid() % 10000) + "3";
  const std::string pattern = "^sleep " + secs + "$";
  const auto id = queue_job({{"argv", {"sleep", secs}}});
  ASSERT_TRUE(wait_status(id, "started"));
  ASSERT_TRUE(wait_until([&] { return process_running(pattern); }, 10s));

  ASSERT_EQ(::kill(worker_->pid(), SIGKILL), 0);
  ASSERT_TRUE(worker_->wait(10s).has_value());
  EXPECT_TRUE(wait_until([&] { return !process_running(pattern); }, 5s)) << "the job's program outlived its worker";
  EXPECT_EQ(job_field(id, "status"), "started") << "left for the reconciler (missed heartbeats)";
}

// Holds a job's row lock (SELECT ... FOR UPDATE) in a transaction on its own
// connection until release(): the worker's outcome for that job waits on it,
// so "the program has exited but its outcome is not written" lasts as long
// as the test needs, without relying on timing.
class RowHold {
 public:
  RowHold(const std::string& url, std::int64_t id) {
    std::promise<void> held;
    auto held_future = held.get_future();
    thread_ = std::thread([this, url, id, held = std::move(held)]() mutable {
      db::Session session(url, "worker-test-hold");
      bool told = false;
      session.transact([&](db::Tx& tx) {
        tx.exec_script("SELECT 1 FROM conveyor.job WHERE id = " + std::to_string(id) + " FOR UPDATE");
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

// Issue 14: a slot is free the moment its program exits. With concurrency 1,
// the second job starts while the first one's outcome is still held up
// (its row locked by the test); before, the slot stayed taken until the
// outcome was committed.
TEST_F(WorkerTest, ASlotIsRefilledWhenItsProgramExitsNotWhenItsOutcomeIsWritten) {
  // The poll a minute away: the freed slot itself claims the waiting job.
  start_worker({{"CONVEYOR_WORKER_CONCURRENCY", "1"}, {"CONVEYOR_POLL_INTERVAL_MS", "60000"}});
  const std::string secs = "60.00" + std::to_string(::getpid() % 10000) + "5";
  const auto first = queue_job({{"argv", {"sleep", secs}}});
  ASSERT_TRUE(wait_status(first, "started"));
  ASSERT_TRUE(wait_until([&] { return process_running("^sleep " + secs + "$"); }, 10s));
  const auto second = queue_job({{"argv", {"true"}}});
  {
    RowHold hold(db_.url(), first);
    ASSERT_EQ(testing::run({"pkill", "-x", "-f", "sleep " + secs}).status, 0);
    EXPECT_TRUE(wait_status(second, "done")) << "the second job waited for the first one's outcome";
    EXPECT_EQ(job_field(first, "status"), "started") << "the first outcome was held up";
  }
  ASSERT_TRUE(wait_status(first, "failed"));
  EXPECT_EQ(job_field(first, "error_message"), "killed by SIGTERM");
}

// Issue 14: a freed slot probed the queue after every job, though at a low
// rate nothing waits: each job comes with its NOTIFY of queued, which claims
// without a probe. Eight jobs one after another (the poll a minute away), each
// claimed with a slot to spare, cost no probe after the first wake-up's;
// before, one each. (A claim that fills every free slot may have left jobs
// queued: then a freed slot probes, ASlotIsRefilled... above.)
TEST_F(WorkerTest, AJobEndingWithNothingQueuedCostsNoProbe) {
  start_worker({{"CONVEYOR_WORKER_CONCURRENCY", "2"}, {"CONVEYOR_POLL_INTERVAL_MS", "60000"}});
  const auto counter = [&](const std::string& metric) {
    const auto metrics = http::http_request("GET", "http://127.0.0.1:" + http_port_ + "/metrics");
    const std::string name = "\n" + metric + " ";
    const auto at = metrics.body.find(name);
    return at == std::string::npos ? 0.0 : std::stod(metrics.body.substr(at + name.size()));
  };
  const auto probes = [&] { return counter("conveyor_worker_claim_probes_total"); };
  // A parameters event wakes the loop, which then probes: the setup's may
  // arrive late on a loaded machine. Those probes are not the jobs'.
  const auto reloads = [&] { return counter("conveyor_parameter_reloads_total"); };
  ASSERT_TRUE(wait_status(queue_job({{"argv", {"true"}}}), "done"));
  const double before = probes();
  const double reloads_before = reloads();
  ASSERT_GE(before, 1.0) << "the first wake-up probes: is the counter exposed?";
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(wait_status(queue_job({{"argv", {"true"}}}), "done"));
  EXPECT_LE(probes() - before, reloads() - reloads_before) << "worker log:\n" << read_text(data_dir_ / "worker.log");
}

// Issue 14, the worker herd: a job admission assigned to a worker
// (worker_id of a queued job) wakes that worker alone. With two workers, each
// of eight jobs queued one at a time, to either in turn, is run by the worker
// it was assigned to, and no claim of either finds nothing. Jobs queued for any worker (no
// assignment, as before) wake both, and the one that loses claims in vain:
// what every job cost before.
TEST_F(WorkerTest, AQueuedJobWakesOnlyTheWorkerItIsAssignedTo) {
  const std::map<std::string, std::string> quiet = {{"CONVEYOR_POLL_INTERVAL_MS", "60000"}};
  start_worker(quiet);
  const auto other_env = worker_env(name_ + "-b", quiet);
  const auto other = launch_worker(other_env, {}, data_dir_ / "worker-b.log");
  ASSERT_TRUE(other);
  const std::string other_port = other_env.at("CONVEYOR_HTTP_PORT");
  const auto empty_claims = [&] {
    return counter(http_port_, "conveyor_worker_empty_claims_total") +
           counter(other_port, "conveyor_worker_empty_claims_total");
  };
  ASSERT_TRUE(wait_until([&] { return counter(other_port, "conveyor_worker_empty_claims_total") >= 0; }, 30s));
  ASSERT_EQ(empty_claims(), 0.0) << "both expose the counter, at 0";

  const std::vector<std::string> workers = {
      db_.query_value("SELECT id FROM conveyor.worker WHERE name = " + sql_literal(name_)),
      db_.query_value("SELECT id FROM conveyor.worker WHERE name = " + sql_literal(name_ + "-b"))};
  for (int i = 0; i < 8; ++i) {
    const auto id = std::to_string(ready_job({{"argv", {"true"}}}));
    const auto& assigned = workers[i % 2];
    db_.exec("UPDATE conveyor.job SET status = 'queued', worker_id = " + assigned + " WHERE id = " + id);
    ASSERT_TRUE(wait_status(std::stoll(id), "done"));
    EXPECT_EQ(db_.query_value("SELECT worker_id FROM conveyor.job_attempt WHERE job_id = " + id), assigned);
  }
  EXPECT_EQ(empty_claims(), 0.0) << "worker logs:\n"
                                 << read_text(data_dir_ / "worker.log") << read_text(data_dir_ / "worker-b.log");

  for (int i = 0; i < 3; ++i) ASSERT_TRUE(wait_status(queue_job({{"argv", {"true"}}}), "done"));
  EXPECT_TRUE(wait_until([&] { return empty_claims() >= 3.0; }, 10s)) << "a job queued for any worker wakes both";
}

// An assignment only says whom to wake: a job assigned to a worker that is
// no longer active is claimed by another at once (at its poll, 500 ms here),
// and one assigned to an active worker that does not take it (it hangs) once
// it has waited 1 s, never before.
TEST_F(WorkerTest, AJobItsAssignedWorkerDoesNotTakeIsRunByAnother) {
  start_worker();
  const auto ghost = db_.query_value(
      "INSERT INTO conveyor.worker (name, concurrency, status) VALUES ('ghost', 4, 'active') RETURNING id");
  const auto gone = db_.query_value(
      "INSERT INTO conveyor.worker (name, concurrency, status) VALUES ('gone', 4, 'lost') RETURNING id");
  const auto assign = [&](const std::string& worker_id) {
    const auto id = ready_job({{"argv", {"true"}}});
    db_.exec("UPDATE conveyor.job SET status = 'queued', worker_id = " + worker_id +
             " WHERE id = " + std::to_string(id));
    return id;
  };
  const auto of_gone = assign(gone);
  const auto of_ghost = assign(ghost);
  ASSERT_TRUE(wait_status(of_gone, "done"));
  ASSERT_TRUE(wait_status(of_ghost, "done"));
  const std::string mine = db_.query_value("SELECT id FROM conveyor.worker WHERE name = " + sql_literal(name_));
  EXPECT_EQ(job_field(of_gone, "worker_id"), mine);
  EXPECT_EQ(job_field(of_ghost, "worker_id"), mine);
  // Seconds from queued to started (history times are clock times; the rule
  // counts from the queued transaction's start, a few ms earlier).
  const auto waited = [&](std::int64_t id) {
    return std::stod(
        db_.query_value("SELECT extract(epoch FROM max(at) FILTER (WHERE to_status = 'started') - "
                        "max(at) FILTER (WHERE to_status = 'queued')) FROM conveyor.job_status_change WHERE job_id = " +
                        std::to_string(id)));
  };
  EXPECT_GE(waited(of_ghost), 0.95) << "taken from an active worker within its second";
  EXPECT_LT(waited(of_gone), 0.95) << "a worker no longer active holds nothing (taken at the poll)";
}

// Issue 14: the worker waits for a program's exit on the exit itself (a
// pidfd), not on a 5 ms tick once the program's output is closed: a job
// that closes its output and sleeps for a second costs its stop checks (one
// per 100 ms) and the exit (the tick cost about 200).
TEST_F(WorkerTest, AProgramThatClosedItsOutputIsWaitedForWithoutATick) {
  start_worker();
  const auto id = queue_job({{"argv", {"sh", "-c", "exec >&- 2>&-; sleep 1"}}});
  ASSERT_TRUE(wait_status(id, "done"));
  const auto metrics = http::http_request("GET", "http://127.0.0.1:" + http_port_ + "/metrics");
  ASSERT_EQ(metrics.status, 200);
  const std::string name = "\nconveyor_worker_process_wakeups_total ";  // the sample, not # HELP
  const auto at = metrics.body.find(name);
  ASSERT_NE(at, std::string::npos) << metrics.body;
  EXPECT_LE(std::stod(metrics.body.substr(at + name.size())), 50.0);
}

// Issue 14: no thread per job. 32 jobs sleeping three seconds run at once
// (concurrency 32) on the worker's reactor: the worker has no more threads
// while they run than once it had run one job, and all 32 end processed.
TEST_F(WorkerTest, ThirtyTwoJobsAtOnceAddNoThreadPerJob) {
  constexpr int kJobs = 32;
  start_worker({{"CONVEYOR_WORKER_CONCURRENCY", std::to_string(kJobs)}});
  auto threads = [&] { return testing::thread_count(worker_->pid()); };
  ASSERT_TRUE(wait_status(queue_job({{"argv", {"true"}}}), "done"));
  const std::size_t settled = threads();
  // All queued in one go, so that they can all be claimed at once.
  std::string ids;
  for (const auto& row : db_.query("INSERT INTO conveyor.job (job_type, max_attempts) SELECT 'test', 1 "
                                   "FROM generate_series(1, " +
                                   std::to_string(kJobs) + ") RETURNING id")) {
    ids += (ids.empty() ? "" : ",") + row[0];
  }
  const std::string which = " WHERE id IN (" + ids + ");\n";
  db_.exec("UPDATE conveyor.job SET status = 'configured', config = " +
           sql_literal(json{{"argv", {"sleep", "3"}}}.dump()) + "::jsonb" + which +
           "UPDATE conveyor.job SET status = 'ready'" + which + "UPDATE conveyor.job SET status = 'queued'" + which);
  const std::string count =
      "SELECT count(*) FILTER (WHERE status = 'started') || ' ' || "
      "count(*) FILTER (WHERE status = 'done') FROM conveyor.job WHERE id IN (" +
      ids + ")";
  std::size_t most_threads = 0;
  int most_started = 0;
  const bool all_done = wait_until(
      [&] {
        most_threads = std::max(most_threads, threads());
        std::istringstream in(db_.query_value(count));
        int started = 0;
        int done = 0;
        in >> started >> done;
        most_started = std::max(most_started, started);
        return done == kJobs;
      },
      60s);
  EXPECT_TRUE(all_done) << db_.query_value(count) << "; worker log:\n" << read_text(data_dir_ / "worker.log");
  EXPECT_GE(most_started, kJobs / 2) << "the jobs did not run at once";
  // A little slack for threads the worker's libraries start on their own.
  EXPECT_LE(most_threads, settled + 2) << "from " << settled << " threads to " << most_threads << " with " << kJobs
                                       << " jobs running";
  std::printf("worker threads: %zu after one job, at most %zu with up to %d of %d jobs running at once\n", settled,
              most_threads, most_started, kJobs);
}

// The worker's capacity is the system parameter when it is given none of
// its own, and follows it while it runs (heartbeats report it).
TEST_F(WorkerTest, ConcurrencyComesFromTheSystemParametersAndFollowsThem) {
  db_.exec("UPDATE conveyor.system_parameters SET worker_concurrency = 3");
  start_worker({{"CONVEYOR_WORKER_CONCURRENCY", "0"}});
  const std::string row = "SELECT concurrency FROM conveyor.worker WHERE name = " + sql_literal(name_);
  EXPECT_EQ(db_.query_value(row), "3");
  db_.exec("UPDATE conveyor.system_parameters SET worker_concurrency = 7");
  EXPECT_TRUE(wait_until([&] { return db_.query_value(row) == "7"; }, 20s)) << "still " << db_.query_value(row);
}

TEST_F(WorkerTest, SigtermWithAnIdleWorkerExitsZeroAndMarksItStopped) {
  start_worker();
  worker_->signal(SIGTERM);
  auto status = worker_->wait(30s);
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(*status, 0) << read_text(data_dir_ / "worker.log");
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.worker WHERE name = " + sql_literal(name_)), "stopped");
  EXPECT_EQ(db_.query_value("SELECT stopped_at IS NOT NULL FROM conveyor.worker WHERE name = " + sql_literal(name_)),
            "t");
}

// The job did not fail, its worker left: it goes back to ready without using
// a retry (the rule prepare-for-reboot follows too), so a job with a single
// attempt still runs once more and ends "attempt 1 of 1".
TEST_F(WorkerTest, SigtermAfterGraceRequeuesARunningJobWithoutUsingARetry) {
  start_worker({{"CONVEYOR_SHUTDOWN_GRACE_MS", "3000"}});
  const std::string secs = "60.00" + std::to_string(::getpid() % 10000) + "3";
  const auto id = queue_job({{"argv", {"conveyor-example-task", "sleep", secs}}}, 1);
  ASSERT_TRUE(wait_status(id, "started"));
  worker_->signal(SIGTERM);
  auto status = worker_->wait(30s);
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(*status, 0) << read_text(data_dir_ / "worker.log");
  EXPECT_EQ(job_field(id, "status"), "ready");
  EXPECT_EQ(job_field(id, "attempt"), "0");
  EXPECT_EQ(job_field(id, "worker_id IS NULL"), "t");
  EXPECT_EQ(job_field(id, "error_subtype"), "worker_shutdown");
  EXPECT_EQ(job_field(id, "error_message"), "worker shut down");
  EXPECT_FALSE(process_running("conveyor-example-task sleep " + secs));

  // The next run (a short one) completes on the same, single attempt.
  const std::string sid = std::to_string(id);
  db_.exec(
      "UPDATE conveyor.job SET status = 'queued', "
      "config = jsonb_set(config, '{argv}', '[\"conveyor-example-task\", \"sleep\", \"0\"]') "
      "WHERE id = " +
      sid);
  start_worker();
  ASSERT_TRUE(wait_status(id, "done"));
  EXPECT_EQ(job_field(id, "attempt"), "0");
  EXPECT_EQ(json::parse(job_field(id, "result::text"))["attempt"], 0);
  // Both runs are in the history under the same attempt number: the stopped
  // one closed as ready, then the one that completed (done: it delivers
  // nothing).
  EXPECT_EQ(db_.query_value("SELECT string_agg(attempt || ':' || outcome, ',' ORDER BY id) "
                            "FROM conveyor.job_attempt WHERE job_id = " +
                            sid),
            "0:ready,0:done");
}

TEST_F(WorkerTest, OperatorDrainStopsClaimingAndExitsWhenIdle) {
  start_worker();
  db_.exec("UPDATE conveyor.worker SET status = 'draining' WHERE name = " + sql_literal(name_));
  auto status = worker_->wait(30s);
  ASSERT_TRUE(status.has_value()) << "a drained idle worker should exit";
  EXPECT_EQ(*status, 0);
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.worker WHERE name = " + sql_literal(name_)), "stopped");
}

TEST_F(WorkerTest, HeartbeatUpdatesTheWorkerRow) {
  start_worker();
  const std::string first =
      db_.query_value("SELECT last_heartbeat FROM conveyor.worker WHERE name = " + sql_literal(name_));
  EXPECT_TRUE(wait_until(
      [&] {
        return db_.query_value("SELECT last_heartbeat FROM conveyor.worker WHERE name = " + sql_literal(name_)) !=
               first;
      },
      10s));
  auto row = db_.query(
      "SELECT pid, pool, concurrency, host IS NOT NULL, version IS NOT NULL "
      "FROM conveyor.worker WHERE name = " +
      sql_literal(name_));
  ASSERT_EQ(row.size(), 1u);
  EXPECT_EQ(row[0][0], std::to_string(worker_->pid()));
  EXPECT_EQ(row[0][1], "default");
  EXPECT_EQ(row[0][2], "2");
  EXPECT_EQ(row[0][3], "t");
  EXPECT_EQ(row[0][4], "t");
}

}  // namespace
}  // namespace conveyor
