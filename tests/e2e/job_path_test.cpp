// The job path end to end: REST API → configuration → admission → workers →
// publication → done, as real processes on a real PostgreSQL and devbroker.
#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <map>
#include <mutex>
#include <set>

#include <nlohmann/json.hpp>

#include "conveyor/http/client.hpp"
#include "conveyor/http/server.hpp"
#include "conveyor/model/status.hpp"
#include "conveyor/testing/stack.hpp"
#include "e2e.hpp"

namespace {

using conveyor::testing::Stack;
using conveyor::testing::wait_until;
using json = nlohmann::json;
using conveyor::e2e::all_terminal;
using conveyor::e2e::expect_valid_histories;
using conveyor::e2e::status_of;
using conveyor::e2e::submit;
using namespace std::chrono_literals;

// A webhook receiver: records the subjects it got; the first `fail_first`
// requests for each subject are answered 500.
class Webhook {
 public:
  explicit Webhook(int fail_first = 0) : server_("127.0.0.1", 0), fail_first_(fail_first) {
    server_.route("POST", "/hook", [this](const conveyor::http::Request& r) {
      auto event = json::parse(r.body);
      std::string subject = event.value("subject", "");
      std::lock_guard g(mu_);
      int n = ++seen_[subject];
      signatures_ += r.header("x-conveyor-signature").has_value() ? 1 : 0;
      if (n <= fail_first_) return conveyor::http::Response::json({{"error", "try again"}}, 500);
      delivered_.insert(subject);
      return conveyor::http::Response::json({{"ok", true}});
    });
    server_.start();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_.port()) + "/hook"; }
  bool delivered(const std::string& subject) {
    std::lock_guard g(mu_);
    return delivered_.count(subject) > 0;
  }
  int attempts(const std::string& subject) {
    std::lock_guard g(mu_);
    return seen_[subject];
  }

 private:
  conveyor::http::Server server_;
  int fail_first_;
  std::mutex mu_;
  std::map<std::string, int> seen_;
  std::set<std::string> delivered_;
  int signatures_ = 0;
};

// A stack whose webhook sinks post to `url` (publication_endpoint_url) from the start.
Stack::Options with_endpoint(const std::string& url) {
  Stack::Options o;
  o.setup_sql = "UPDATE conveyor.system_parameters SET publication_endpoint_url = '" + url + "'";
  return o;
}

TEST(JobPath, ThreeHundredMixedJobsEndInTheirExpectedStatus) {
  Webhook hook;
  Stack stack(with_endpoint(hook.url()));

  std::map<std::int64_t, std::string> expected;  // job id -> final status
  std::map<std::int64_t, std::string> type_of;
  auto add = [&](const json& body, const std::string& final_status) {
    auto j = submit(stack, body);
    std::int64_t id = j.at("id").get<std::int64_t>();
    expected[id] = final_status;
    type_of[id] = body.at("job_type").get<std::string>();
    return id;
  };
  for (int i = 0; i < 40; ++i) {
    json p = {{"tile", "T3" + std::to_string(1000 + i)}, {"date", "2026-11-22"}};
    auto a = add({{"job_type", "fsc-rlie"}, {"params", p}}, "done");
    add({{"job_type", "sws-wds"}, {"params", p}, {"depends_on", {a}}}, "done");
    add({{"job_type", "gfsc"}, {"params", p}, {"depends_on", {a}}}, "done");
  }
  for (int i = 0; i < 120; ++i) add({{"job_type", "sleep"}, {"params", {{"seconds", 0}}}}, "done");
  for (int i = 0; i < 30; ++i) add({{"job_type", "fail"}, {"params", json::object()}}, "failed");
  for (int i = 0; i < 30; ++i) add({{"job_type", "flaky"}, {"params", json::object()}}, "done");
  ASSERT_EQ(expected.size(), 300u);

  ASSERT_TRUE(wait_until([&] { return all_terminal(stack); }, 240s)) << stack.logs_tail();
  for (const auto& [id, status] : expected) {
    EXPECT_EQ(status_of(stack, std::to_string(id)), status) << "job " << id << " (" << type_of[id] << ")";
  }
  expect_valid_histories(stack);

  // Every done job has its log directory, its webhook and its manifest.
  auto done =
      stack.db().query("SELECT id, result->>'log_dir', job_type FROM conveyor.job WHERE status = 'done' ORDER BY id");
  EXPECT_EQ(done.size(), 270u);
  for (const auto& row : done) {
    std::filesystem::path log_dir = row[1];
    EXPECT_TRUE(std::filesystem::exists(log_dir / "logs.txt")) << "job " << row[0] << " " << log_dir;
    EXPECT_TRUE(std::filesystem::exists(log_dir / "metadata.json")) << "job " << row[0];
    EXPECT_TRUE(hook.delivered(row[0])) << "job " << row[0] << " webhook";
    EXPECT_TRUE(std::filesystem::exists(stack.data_dir() / "catalog" / ("job-" + row[0] + ".json")))
        << "job " << row[0] << " manifest";
  }
  // flaky jobs succeeded on their second attempt; fail jobs say why.
  EXPECT_EQ(stack.db().query_value("SELECT count(*) FROM conveyor.job WHERE job_type = 'flaky' AND attempt = 1"), "30");
  EXPECT_EQ(
      stack.db().query_value("SELECT count(*) FROM conveyor.job WHERE job_type = 'fail' AND error_message IS NOT NULL"),
      "30");
  // Downstream products read the upstream product.
  auto gfsc =
      stack.db().query_value("SELECT config->>'argv' FROM conveyor.job WHERE job_type = 'gfsc' ORDER BY id LIMIT 1");
  EXPECT_NE(gfsc.find("fsc-rlie"), std::string::npos) << gfsc;
}

TEST(JobPath, AJobInsertedByRawSqlIsDone) {
  Webhook hook;
  Stack stack(with_endpoint(hook.url()));
  auto id = stack.db().query_value(
      "INSERT INTO conveyor.job (job_type, params) VALUES ('sleep', '{\"seconds\": 0}') RETURNING id");
  ASSERT_TRUE(wait_until([&] { return status_of(stack, id) == "done"; }, 60s)) << status_of(stack, id) << "\n"
                                                                               << stack.logs_tail();
  EXPECT_TRUE(hook.delivered(id));
}

// A resident type through the whole path: configuration carries its runner
// into the config, each worker starts the program once, every job is done
// with its own log and result, and each job's outputs name the program that
// served it.
TEST(JobPath, ResidentJobsAreDoneThroughEveryStageOnOneProgramStartPerWorker) {
  Stack::Options o;
  o.workers = 1;
  Stack stack(o);
  std::vector<std::string> ids;
  for (int i = 0; i < 12; ++i) {
    auto j = submit(stack, {{"job_type", "sleep-resident"}, {"params", {{"seconds", 0}}}});
    ids.push_back(std::to_string(j.at("id").get<std::int64_t>()));
  }
  ASSERT_TRUE(wait_until([&] { return all_terminal(stack); }, 90s)) << stack.logs_tail();
  std::set<int> pids;
  for (const auto& id : ids) {
    ASSERT_EQ(status_of(stack, id), "done") << "job " << id << "\n" << stack.logs_tail();
    EXPECT_EQ(stack.db().query_value("SELECT config->>'runner' FROM conveyor.job WHERE id = " + id), "resident");
    const json result = json::parse(stack.db().query_value("SELECT result::text FROM conveyor.job WHERE id = " + id));
    const std::filesystem::path log_dir = result.at("log_dir").get<std::string>();
    const std::string logs = conveyor::testing::read_text(log_dir / "logs.txt");
    EXPECT_NE(logs.find(" stdout done\n"), std::string::npos) << logs;
    // Only this job's lines: one "sleeping" line.
    EXPECT_EQ(logs.find("sleeping", logs.find("sleeping") + 1), std::string::npos) << logs;
    const auto outputs = result.at("outputs");
    ASSERT_EQ(outputs.size(), 1u) << result;
    pids.insert(json::parse(conveyor::testing::read_text(outputs[0].get<std::string>())).at("pid").get<int>());
  }
  EXPECT_EQ(pids.size(), 1u) << "one program start on the one worker serves every job";
  expect_valid_histories(stack);
}

TEST(JobPath, ASinkThatFailsTwiceThenSucceedsEndsDoneThroughErrorChecked) {
  Webhook hook(2);
  auto o = with_endpoint(hook.url());
  o.setup_sql += "; UPDATE conveyor.system_parameters SET publication_max_attempts = 5";
  Stack stack(o);
  auto j = submit(stack, {{"job_type", "sleep"}, {"params", {{"seconds", 0}}}});
  auto id = std::to_string(j.at("id").get<std::int64_t>());
  ASSERT_TRUE(wait_until([&] { return status_of(stack, id) == "done"; }, 90s)) << status_of(stack, id) << "\n"
                                                                               << stack.logs_tail();
  EXPECT_EQ(hook.attempts(id), 3);
  auto history = stack.db().query(
      "SELECT to_status, coalesce(message, ''), actor, at FROM conveyor.job_status_change WHERE job_id = " + id +
      " ORDER BY id");
  int external = 0, checked = 0;
  std::string trace;
  for (const auto& r : history) {
    external += r[0] == "external_error";
    checked += r[0] == "error_checked";
    trace += r[3] + " " + r[0] + " by " + r[2] + " " + r[1] + "\n";
  }
  EXPECT_EQ(external, 2) << trace;
  EXPECT_EQ(checked, 2) << trace;
  expect_valid_histories(stack);
}

TEST(JobPath, BadRequestsGetProblemJsonAndTheServiceKeepsServing) {
  Stack::Options o;
  o.workers = 0;
  o.services = {"creation"};
  Stack stack(o);
  auto post = [&](const std::string& body) {
    return conveyor::http::http_request("POST", stack.api_url() + "/v1/jobs", body, stack.api_headers(true));
  };
  struct Case {
    std::string body;
    int status;
    std::string mentions;
  };
  std::vector<Case> cases = {
      {"{not json", 400, "JSON"},
      {R"({"job_type": 5})", 400, "job_type"},
      {R"({"job_type": "sleep", "params": "x"})", 400, "params"},
      {R"({"job_type": "sleep", "params": {"seconds": 1}, "priority": "high"})", 400, "priority"},
      {R"({"job_type": "no-such-type"})", 422, "no-such-type"},
      {R"({"job_type": "sleep", "params": {"seconds": "soon"}})", 422, "seconds"},
      {"{\"job_type\": \"sleep\", \"params\": {\"pad\": \"" + std::string(2 * 1024 * 1024, 'x') + "\"}}", 413, ""},
  };
  for (const auto& c : cases) {
    auto r = post(c.body);
    EXPECT_EQ(r.status, c.status) << c.body.substr(0, 80) << " -> " << r.body;
    EXPECT_NE(r.headers["content-type"].find("application/problem+json"), std::string::npos) << r.body;
    if (!c.mentions.empty()) {
      EXPECT_NE(r.body.find(c.mentions), std::string::npos) << r.body;
    }
  }
  auto ok = post(R"({"job_type": "sleep", "params": {"seconds": 0}})");
  EXPECT_EQ(ok.status, 201) << ok.body;
}

TEST(JobPath, CancellingARunningJobThroughTheApiKillsItsProcess) {
  Stack::Options o;
  o.workers = 1;
  Stack stack(o);
  auto j = submit(stack, {{"job_type", "sleep"}, {"params", {{"seconds", 300}}}});
  auto id = std::to_string(j.at("id").get<std::int64_t>());
  ASSERT_TRUE(wait_until([&] { return status_of(stack, id) == "started"; }, 60s)) << stack.logs_tail();
  auto pgrep = [&] { return conveyor::testing::run({"pgrep", "-f", "conveyor-example-task sleep 300"}); };
  ASSERT_TRUE(wait_until([&] { return pgrep().status == 0; }, 10s)) << "the job's process runs";
  auto r = conveyor::http::http_request("POST", stack.api_url() + "/v1/jobs/" + id + "/cancel", "{}",
                                        stack.api_headers(true));
  EXPECT_LT(r.status, 300) << r.body;
  EXPECT_TRUE(wait_until([&] { return status_of(stack, id) == "canceled"; }, 30s)) << stack.logs_tail();
  EXPECT_TRUE(wait_until([&] { return pgrep().status != 0; }, 10s)) << "the process is gone";
  expect_valid_histories(stack);
}

}  // namespace
