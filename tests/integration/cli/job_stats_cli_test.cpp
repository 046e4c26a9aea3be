// `conveyor job stats` and the attempts of `conveyor job inspect`, run as a
// real process against a migrated database. The attempts are inserted by
// SQL as the worker leaves them (conveyor.job_attempt), with usage chosen so
// that the medians and 95th percentiles (PostgreSQL's percentile_cont:
// linear interpolation) are known.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "conveyor/testing/testing.hpp"
#include "cli_test.hpp"

namespace {

using conveyor::testing::RunResult;
using conveyor::testing::cli::CliTest;
using conveyor::testing::cli::has;
using conveyor::testing::cli::row;
using nlohmann::json;

class JobStatsCli : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    const auto r = conveyor({"job-type", "apply", CONVEYOR_JOB_TYPES_FILE, "--yes"});
    ASSERT_EQ(r.status, 0) << r.output;
  }
  json conveyor_json(std::vector<std::string> args) {
    args.insert(args.begin(), "--json");
    const auto r = conveyor(args);
    EXPECT_EQ(r.status, 0) << r.output;
    return json::parse(r.output);
  }
  std::string insert_job(const std::string& type) {
    return db_.query_value("INSERT INTO conveyor.job (job_type) VALUES ('" + type + "') RETURNING id");
  }
  // Attempt `n` of `job`, ended `ended_ago` (an interval; "" while it runs),
  // with `usage` = "wall_ms, cpu_user_ms, cpu_system_ms, max_rss_kb" (SQL
  // values, NULL where the worker could not read them).
  void add_attempt(const std::string& job, int n, const std::string& ended_ago, const std::string& usage,
                   const std::string& outcome = "processed") {
    const std::string ended = ended_ago.empty() ? "NULL" : "now() - interval '" + ended_ago + "'";
    db_.exec(
        "INSERT INTO conveyor.job_attempt (job_id, attempt, job_type, worker, started_at, ended_at, "
        "  outcome, wall_ms, cpu_user_ms, cpu_system_ms, max_rss_kb) "
        "SELECT id, " +
        std::to_string(n) + ", job_type, 'worker-a', coalesce(" + ended + ", now()) - interval '1 minute', " + ended +
        ", " + (ended_ago.empty() ? "NULL" : "'" + outcome + "'") + ", " + usage +
        " FROM conveyor.job WHERE id = " + job);
  }
  // sleep: 5 attempts with usage, one lost without, one still running, all
  // in the last hour; fail: 2 attempts three days ago.
  void insert_attempts() {
    const std::vector<std::string> usage{"100, 50, 10, 102400", "200, 100, 20, 204800", "300, 150, 30, 204800",
                                         "400, 200, 40, 307200", "1000, 500, 100, 409600"};
    for (const auto& u : usage) add_attempt(insert_job("sleep"), 0, "10 minutes", u);
    add_attempt(insert_job("sleep"), 0, "5 minutes", "NULL, NULL, NULL, NULL", "lost");
    add_attempt(insert_job("sleep"), 0, "", "NULL, NULL, NULL, NULL");
    add_attempt(insert_job("fail"), 0, "3 days", "10000, 800, 200, 1024", "failed");
    add_attempt(insert_job("fail"), 0, "3 days", "20000, 2500, 500, 3072", "failed");
  }
};

TEST_F(JobStatsCli, StatsGiveCountMedianAndP95OfEachJobType) {
  insert_attempts();
  const auto r = conveyor({"job", "stats"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(row(r, "TYPE"), "TYPE | ATTEMPTS | WALL P50 | WALL P95 | CPU P50 | CPU P95 | MEM P50 | MEM P95")
      << r.output;
  // The lost attempt counts (6) but is in no percentile; the running one is not finished.
  // wall 100..1000: p95 = 400 + 0.8 * 600; memory 204800 KiB = 200 MiB.
  EXPECT_EQ(row(r, "sleep"), "sleep | 6 | 300ms | 880ms | 180ms | 528ms | 200.0 MiB | 380.0 MiB") << r.output;
  EXPECT_EQ(row(r, "fail"), "fail | 2 | 15.0s | 19.5s | 2.0s | 2.9s | 2.0 MiB | 2.9 MiB") << r.output;
  EXPECT_TRUE(has(r, "8 finished attempt(s)")) << r.output;

  const json j = conveyor_json({"job", "stats"});
  ASSERT_EQ(j.at("items").size(), 2u) << j.dump();
  const json& fail = j.at("items")[0];
  EXPECT_EQ(fail.at("job_type"), "fail");
  EXPECT_DOUBLE_EQ(fail.at("wall_ms").at("p50").get<double>(), 15000);
  const json& sleep = j.at("items")[1];
  EXPECT_EQ(sleep.at("attempts"), 6);
  EXPECT_DOUBLE_EQ(sleep.at("wall_ms").at("p95").get<double>(), 880);
  EXPECT_DOUBLE_EQ(sleep.at("cpu_ms").at("p50").get<double>(), 180);
  EXPECT_DOUBLE_EQ(sleep.at("max_rss_kb").at("p50").get<double>(), 204800);
  EXPECT_TRUE(j.at("since").is_null());
}

TEST_F(JobStatsCli, StatsFilterByTypeAndByWhenTheAttemptEnded) {
  insert_attempts();
  auto r = conveyor({"job", "stats", "--type", "fail"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(row(r, "sleep"), "") << r.output;
  EXPECT_EQ(row(r, "fail").substr(0, 10), "fail | 2 |") << r.output;

  r = conveyor({"job", "stats", "--since", "24h"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(row(r, "fail"), "") << "ended three days ago\n" << r.output;
  EXPECT_EQ(row(r, "sleep").substr(0, 11), "sleep | 6 |") << r.output;
  EXPECT_TRUE(has(r, "6 finished attempt(s) (since 24h)")) << r.output;
  r = conveyor({"job", "stats", "--since", "7m"});
  EXPECT_EQ(row(r, "sleep").substr(0, 11), "sleep | 1 |") << "only the lost one, 5 minutes ago\n" << r.output;
  r = conveyor({"job", "stats", "--since=4d"});
  EXPECT_EQ(row(r, "fail").substr(0, 10), "fail | 2 |") << r.output;

  r = conveyor({"job", "stats", "--type", "fail", "--since", "24h"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, "no finished attempts of type fail (since 24h)\n");
  const json j = conveyor_json({"job", "stats", "--type", "fail", "--since", "24h"});
  EXPECT_EQ(j, json::parse(R"({"items": [], "type": "fail", "since": "24h"})"));
}

TEST_F(JobStatsCli, ABadSinceIsAUsageErrorNamingTheOption) {
  for (const std::string bad : {"24", "1w", "abc", "-5h", "0d", "h", "99999999999d"}) {
    const auto r = conveyor({"job", "stats", "--since", bad});
    EXPECT_EQ(r.status, 2) << bad << ": " << r.output;
    EXPECT_TRUE(has(r, "--since: expected a duration such as 30m, 24h or 7d")) << r.output;
    EXPECT_TRUE(has(r, "got '" + bad + "'")) << r.output;
  }
  auto r = conveyor({"job", "stats", "--since"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "--since needs a value")) << r.output;
  r = conveyor({"job", "stats", "--sinec", "1h"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "unknown option --sinec")) << r.output;
}

TEST_F(JobStatsCli, InspectListsTheAttemptsWithImageAndDigest) {
  const std::string job = insert_job("gfsc");
  db_.exec(
      "INSERT INTO conveyor.job_attempt (job_id, attempt, job_type, worker_id, worker, image, image_digest, "
      "  started_at, ended_at, outcome, exit_code, wall_ms, cpu_user_ms, cpu_system_ms, max_rss_kb) VALUES "
      "(" +
      job +
      ", 0, 'gfsc', NULL, 'worker-a', 'registry.example/gfsc:2.1', 'sha256:0a1b2c', "
      "  '2026-12-03 10:00:00+00', '2026-12-03 10:00:03+00', 'ready', 1, 3000, 900, 100, 1024), "
      "(" +
      job +
      ", 1, 'gfsc', NULL, 'worker-b', 'registry.example/gfsc:2.1', 'sha256:0a1b2c', "
      "  '2026-12-03 10:01:00+00', '2026-12-03 10:02:01+00', 'processed', 0, 61000, 45000, 5000, 217498), "
      "(" +
      job +
      ", 2, 'gfsc', NULL, 'worker-c', 'registry.example/gfsc:2.1', NULL, "
      "  '2026-12-03 10:03:00+00', NULL, NULL, NULL, NULL, NULL, NULL, NULL)");

  const auto r = conveyor({"job", "inspect", job});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "\nattempts:\n")) << r.output;
  EXPECT_EQ(row(r, "ATTEMPT"), "ATTEMPT | WORKER | STARTED | ENDED | OUTCOME | EXIT | WALL | CPU | PEAK MEM | IMAGE")
      << r.output;
  // Counted from 1 as people count (stored from 0), times with their zone.
  EXPECT_EQ(row(r, "1"),
            "1 | worker-a | 2026-12-03 10:00:00 UTC | 2026-12-03 10:00:03 UTC | ready | 1 | 3.0s | "
            "1.0s | 1.0 MiB | registry.example/gfsc:2.1 (sha256:0a1b2c)")
      << r.output;
  EXPECT_EQ(row(r, "2"),
            "2 | worker-b | 2026-12-03 10:01:00 UTC | 2026-12-03 10:02:01 UTC | processed | 0 | "
            "1m01s | 50.0s | 212.4 MiB | registry.example/gfsc:2.1 (sha256:0a1b2c)")
      << r.output;
  EXPECT_EQ(row(r, "3"),
            "3 | worker-c | 2026-12-03 10:03:00 UTC | - | (running) | - | - | - | - | "
            "registry.example/gfsc:2.1")
      << r.output;

  const json j = conveyor_json({"job", "inspect", job});
  ASSERT_EQ(j.at("attempts").size(), 3u) << j.dump();
  const json& second = j.at("attempts")[1];
  EXPECT_EQ(second.at("attempt"), 1);
  EXPECT_EQ(second.at("image"), "registry.example/gfsc:2.1");
  EXPECT_EQ(second.at("image_digest"), "sha256:0a1b2c");
  EXPECT_EQ(second.at("outcome"), "processed");
  EXPECT_EQ(second.at("max_rss_kb"), 217498);
  EXPECT_EQ(second.at("started_at"), "2026-12-03T10:01:00.000000Z");
  EXPECT_TRUE(j.at("attempts")[2].at("ended_at").is_null());

  // A job that never ran has an empty attempts table.
  const std::string waiting = insert_job("sleep");
  EXPECT_TRUE(conveyor_json({"job", "inspect", waiting}).at("attempts").empty());
}

}  // namespace
