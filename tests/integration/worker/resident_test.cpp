// Resident job programs (issue 14, item 5) through the real conveyor-worker
// and `conveyor-example-task --resident`: jobs are put in `queued` by raw
// SQL with config.runner = "resident", and the test reads the database, the
// jobs' files (each done job's <out_dir>/resident.json says which program
// pid ran it) and the processes.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "conveyor/testing/testing.hpp"

namespace conveyor {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;
using testing::read_text;
using testing::wait_until;

class ResidentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_dir_ = fs::temp_directory_path() / testing::unique_name("resident_data");
    fs::create_directories(data_dir_);
  }
  void TearDown() override {
    worker_.reset();
    std::error_code ec;
    fs::remove_all(data_dir_, ec);
  }

  void start_worker(int concurrency) {
    std::string path = CONVEYOR_EXAMPLE_TASK_DIR;
    if (const char* p = std::getenv("PATH")) path += std::string(":") + p;
    worker_ = std::make_unique<testing::ChildProcess>(testing::ChildProcess::Options{
        .argv = {CONVEYOR_WORKER_BIN},
        .env = {{"CONVEYOR_DATABASE_URL", db_.url()},
                {"CONVEYOR_KAFKA_BROKERS", broker_.bootstrap()},
                {"CONVEYOR_TOPIC_PREFIX", testing::unique_name("rt")},
                {"CONVEYOR_DATA_DIR", data_dir_.string()},
                {"CONVEYOR_HTTP_PORT", std::to_string(testing::free_port())},
                {"CONVEYOR_WORKER_NAME", name_},
                {"CONVEYOR_WORKER_CONCURRENCY", std::to_string(concurrency)},
                {"CONVEYOR_KILL_GRACE_MS", "1000"},
                {"CONVEYOR_POLL_INTERVAL_MS", "200"},
                {"CONVEYOR_LOG_LEVEL", "debug"},
                {"PATH", path}},
        .stdout_file = data_dir_ / "worker.log",
        .stderr_file = {},
        .detach = false,
    });
    ASSERT_TRUE(wait_until(
        [&] { return db_.query_value("SELECT status FROM conveyor.worker WHERE name = '" + name_ + "'") == "active"; },
        30s))
        << read_text(data_dir_ / "worker.log");
  }

  // A resident job of type 'resident-test' with these params, in `queued`.
  std::int64_t queue_job(const json& params, int timeout_s = 60) {
    const json config = {
        {"argv", {"conveyor-example-task", "--resident"}}, {"runner", "resident"}, {"timeout_s", timeout_s}};
    const std::string id = db_.query_value("INSERT INTO conveyor.job (job_type, params) VALUES ('resident-test', '" +
                                           params.dump() + "'::jsonb) RETURNING id");
    db_.exec("UPDATE conveyor.job SET status = 'configured', config = '" + config.dump() + "'::jsonb WHERE id = " + id +
             ";\nUPDATE conveyor.job SET status = 'ready' WHERE id = " + id +
             ";\nUPDATE conveyor.job SET status = 'queued' WHERE id = " + id + ";");
    return std::stoll(id);
  }

  std::string field(std::int64_t id, const std::string& column) {
    return db_.query_value("SELECT " + column + " FROM conveyor.job WHERE id = " + std::to_string(id));
  }

  bool wait_status(std::int64_t id, const std::string& status, std::chrono::milliseconds t = 30s) {
    if (wait_until([&] { return field(id, "status") == status; }, t)) return true;
    ADD_FAILURE() << "job " << id << " is " << field(id, "status") << " (" << field(id, "coalesce(error_message, '')")
                  << "), expected " << status << "; worker log:\n"
                  << read_text(data_dir_ / "worker.log");
    return false;
  }

  std::string logs(std::int64_t id) {
    const std::string month = field(id, "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM')");
    return read_text(data_dir_ / "logs" / month / ("job-" + std::to_string(id)) / "logs.txt");
  }

  // What the program wrote for a done job: {"pid", "served", "in_flight"}.
  json served(std::int64_t id) {
    return json::parse(read_text(data_dir_ / "outputs" / ("job-" + std::to_string(id)) / "resident.json"));
  }

  // The program's pid as the job's first log line says it ("... (pid N, ...").
  int pid_in_logs(std::int64_t id) {
    std::smatch m;
    const std::string text = logs(id);
    if (!std::regex_search(text, m, std::regex(R"(\(pid (\d+),)"))) return -1;
    return std::stoi(m[1]);
  }

  testing::TestDatabase db_;
  testing::Broker broker_;
  std::string name_ = testing::unique_name("worker");
  fs::path data_dir_;
  std::unique_ptr<testing::ChildProcess> worker_;
};

TEST_F(ResidentTest, TwentyJobsRunOnOneProgramStartWithTheirOwnLogs) {
  start_worker(4);
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 20; ++i) ids.push_back(queue_job({{"seconds", 0}}));
  std::set<int> pids;
  std::set<int> counts;
  for (auto id : ids) {
    ASSERT_TRUE(wait_status(id, "done"));
    const json s = served(id);
    pids.insert(s["pid"].get<int>());
    counts.insert(s["served"].get<int>());
    // The job's own log lines, and only its own.
    const std::string text = logs(id);
    EXPECT_NE(text.find(" stdout sleeping 0.000000s (pid "), std::string::npos) << text;
    EXPECT_NE(text.find(" stdout done\n"), std::string::npos) << text;
    EXPECT_NE(text.find(" conveyor result outputs: {"), std::string::npos) << text;
    EXPECT_EQ(text.find("sleeping", text.find("sleeping") + 1), std::string::npos) << text;
  }
  EXPECT_EQ(pids.size(), 1u) << "one program start serves every job";
  EXPECT_EQ(counts.size(), 20u);
  const json result = json::parse(field(ids[0], "result::text"));
  EXPECT_EQ(result["exit_code"], 0);
  EXPECT_EQ(result["outputs"].size(), 1u) << result;  // resident.json, listed as for any job
}

// The bench's resident workload (params.noop): the program answers done
// and writes nothing, so the job's files are the worker's own.
TEST_F(ResidentTest, ANoopJobIsAnsweredWithoutALogLineOrAFileOfTheProgram) {
  start_worker(4);
  const std::int64_t id = queue_job({{"seconds", 0}, {"noop", true}});
  ASSERT_TRUE(wait_status(id, "done"));
  const std::string text = logs(id);
  EXPECT_NE(text.find(" conveyor attempt 1 of "), std::string::npos) << text;
  EXPECT_EQ(text.find(" stdout "), std::string::npos) << text;
  EXPECT_EQ(text.find("sleeping"), std::string::npos) << text;
  EXPECT_FALSE(fs::exists(data_dir_ / "outputs" / ("job-" + std::to_string(id)) / "resident.json"));
  const json result = json::parse(field(id, "result::text"));
  EXPECT_EQ(result["exit_code"], 0);
  EXPECT_TRUE(result["outputs"].empty()) << result;
}

TEST_F(ResidentTest, TheProgramsJobsCountAgainstTheWorkersConcurrency) {
  start_worker(2);
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(queue_job({{"seconds", 0.5}}));
  std::size_t most = 0;
  for (auto id : ids) {
    ASSERT_TRUE(wait_status(id, "done"));
    most = std::max<std::size_t>(most, served(id)["in_flight"].get<std::size_t>());
  }
  // The program had two jobs at once (it is not one at a time), never three.
  EXPECT_EQ(most, 2u) << read_text(data_dir_ / "worker.log");
}

// Issue 14: no thread per job. 24 resident jobs of three seconds in flight
// at once on one program (concurrency 24): the worker has no more threads
// while they run than once it had run one (the program's supervisor
// serves them all).
TEST_F(ResidentTest, TwentyFourJobsInFlightAddNoThreadPerJob) {
  constexpr int kJobs = 24;
  start_worker(kJobs);
  auto threads = [&] { return testing::thread_count(worker_->pid()); };
  ASSERT_TRUE(wait_status(queue_job({{"seconds", 0}}), "done"));
  const std::size_t settled = threads();
  std::vector<std::int64_t> ids;
  for (int i = 0; i < kJobs; ++i) ids.push_back(queue_job({{"seconds", 3}}));
  std::size_t most_threads = 0;
  EXPECT_TRUE(wait_until(
      [&] {
        most_threads = std::max(most_threads, threads());
        return std::all_of(ids.begin(), ids.end(), [&](std::int64_t id) { return field(id, "status") == "done"; });
      },
      60s))
      << read_text(data_dir_ / "worker.log");
  std::size_t most_in_flight = 0;
  for (auto id : ids)
    most_in_flight = std::max<std::size_t>(most_in_flight, served(id)["in_flight"].get<std::size_t>());
  EXPECT_GE(most_in_flight, static_cast<std::size_t>(kJobs / 2)) << "the jobs were not in flight at once";
  EXPECT_LE(most_threads, settled + 2) << "from " << settled << " threads to " << most_threads;
  std::printf("worker threads: %zu after one resident job, at most %zu with up to %zu of %d in flight\n", settled,
              most_threads, most_in_flight, kJobs);
}

TEST_F(ResidentTest, AJobThatDoesNotStopAfterItsTimeoutIsKilledAndTheNextRunsOnANewProgram) {
  start_worker(2);
  const auto stuck = queue_job({{"seconds", 60}, {"ignore_cancel", true}}, 1);
  ASSERT_TRUE(wait_status(stuck, "failed", 20s));
  EXPECT_EQ(field(stuck, "error_subtype"), "timeout");
  EXPECT_EQ(field(stuck, "error_message"), "killed after timeout of 1 s");
  const int old_pid = pid_in_logs(stuck);
  ASSERT_GT(old_pid, 0) << logs(stuck);
  EXPECT_TRUE(wait_until([&] { return ::kill(old_pid, 0) != 0; }, 10s)) << "program not killed";

  const auto next = queue_job({{"seconds", 0}});
  ASSERT_TRUE(wait_status(next, "done"));
  EXPECT_NE(served(next)["pid"].get<int>(), old_pid);
  EXPECT_NE(read_text(data_dir_ / "worker.log").find("did not stop within the kill grace"), std::string::npos);
}

TEST_F(ResidentTest, CancelStopsOnlyThatJobAndTheProgramServesTheOthers) {
  start_worker(3);
  const auto a = queue_job({{"seconds", 3}});
  const auto b = queue_job({{"seconds", 60}});
  const auto c = queue_job({{"seconds", 3}});
  for (auto id : {a, b, c}) {
    ASSERT_TRUE(wait_until([&] { return logs(id).find("sleeping") != std::string::npos; }, 20s))
        << read_text(data_dir_ / "worker.log");
  }
  db_.exec("UPDATE conveyor.job SET canceled_at = now() WHERE id = " + std::to_string(b));
  ASSERT_TRUE(wait_status(b, "canceled", 10s));
  ASSERT_TRUE(wait_status(a, "done"));
  ASSERT_TRUE(wait_status(c, "done"));
  EXPECT_EQ(served(a)["pid"], served(c)["pid"]);
  EXPECT_EQ(served(a)["pid"].get<int>(), pid_in_logs(b)) << "the program was not restarted";
}

TEST_F(ResidentTest, AProgramThatCrashesFailsItsJobClearlyAndIsRestarted) {
  start_worker(2);
  const auto crash = queue_job({{"crash", true}});
  ASSERT_TRUE(wait_status(crash, "failed"));
  EXPECT_EQ(field(crash, "error_subtype"), "resident_program");
  const std::string message = field(crash, "error_message");
  EXPECT_NE(message.find("the resident program of resident-test (pid "), std::string::npos) << message;
  EXPECT_NE(message.find("was killed by SIGABRT while the job ran"), std::string::npos) << message;
  EXPECT_NE(message.find("crashing on purpose"), std::string::npos) << message;

  const auto next = queue_job({{"seconds", 0}});
  ASSERT_TRUE(wait_status(next, "done"));
  EXPECT_NE(served(next)["pid"].get<int>(), pid_in_logs(crash));
}

TEST_F(ResidentTest, AMalformedOrOversizedResultFailsOnlyItsJob) {
  start_worker(3);
  const auto slow = queue_job({{"seconds", 2}});
  ASSERT_TRUE(wait_until([&] { return logs(slow).find("sleeping") != std::string::npos; }, 20s));
  const auto malformed = queue_job({{"malformed", true}});
  const auto oversized = queue_job({{"oversized", true}});
  ASSERT_TRUE(wait_status(malformed, "failed"));
  EXPECT_EQ(field(malformed, "error_subtype"), "resident_protocol");
  EXPECT_NE(field(malformed, "error_message")
                .find("resident program of resident-test wrote a malformed line for job " + std::to_string(malformed)),
            std::string::npos)
      << field(malformed, "error_message");
  ASSERT_TRUE(wait_status(oversized, "failed"));
  EXPECT_EQ(field(oversized, "error_subtype"), "resident_protocol");
  EXPECT_NE(field(oversized, "error_message")
                .find("wrote a line longer than 1048576 bytes for job " + std::to_string(oversized)),
            std::string::npos)
      << field(oversized, "error_message");

  ASSERT_TRUE(wait_status(slow, "done"));
  EXPECT_EQ(served(slow)["pid"].get<int>(), pid_in_logs(malformed)) << "nothing restarted";
  const auto after = queue_job({{"fail", "no such tile"}});
  ASSERT_TRUE(wait_status(after, "failed"));
  EXPECT_EQ(field(after, "error_subtype"), "job_failed");
  EXPECT_EQ(field(after, "error_message"), "no such tile");
  EXPECT_NE(logs(after).find(" conveyor no such tile"), std::string::npos) << logs(after);
}

}  // namespace
}  // namespace conveyor
