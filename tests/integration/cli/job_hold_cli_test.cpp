// `conveyor job hold|release` (issue 13, item 9) run as a real process
// against a migrated database: the hold sets held_at (shown by `job ls` and
// `job inspect`), is idempotent, refuses jobs already admitted or finished
// with a reason, and every hold and release is a row in the job's changes
// (conveyor.job_audit) with the CLI's actor. Admission skipping a held job is
// proven in tests/integration/stages/execution_test.cpp.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "conveyor/testing/testing.hpp"
#include "cli_test.hpp"

namespace {

using conveyor::testing::RunResult;
using conveyor::testing::cli::CliTest;
using conveyor::testing::cli::has;
using nlohmann::json;

class JobHoldCli : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    db_.exec("INSERT INTO conveyor.job_type (name, command) VALUES ('t', '[\"true\"]')");
  }
  // A job moved along `statuses` by SQL, as the stages would.
  std::string job(const std::vector<std::string>& statuses) const {
    const auto id = db_.query_value("INSERT INTO conveyor.job (job_type) VALUES ('t') RETURNING id");
    for (const auto& s : statuses) db_.exec("UPDATE conveyor.job SET status = '" + s + "' WHERE id = " + id);
    return id;
  }
  std::string held_at(const std::string& id) const {
    return db_.query_value("SELECT coalesce(held_at::text, 'NULL') FROM conveyor.job WHERE id = " + id);
  }
};

TEST_F(JobHoldCli, JobHoldAndReleaseAreRecorded) {
  const auto ready = job({"configured", "ready"});
  const auto fresh = job({});

  auto r = conveyor({"job", "hold", ready, fresh});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "job " + ready + ": held (ready)")) << r.output;
  EXPECT_TRUE(has(r, "job " + fresh + ": held (initialized)")) << r.output;
  EXPECT_NE(held_at(ready), "NULL");
  const auto first_hold = held_at(ready);

  // Idempotent: the hold keeps its time, and no second history row.
  r = conveyor({"job", "hold", ready});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "already held since")) << r.output;
  EXPECT_EQ(held_at(ready), first_hold);

  r = conveyor({"job", "ls"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "HELD")) << r.output;
  r = conveyor({"job", "inspect", ready});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "Held at")) << r.output;
  EXPECT_TRUE(has(r, "conveyor job release " + ready)) << r.output;
  EXPECT_TRUE(has(r, "hold")) << r.output;
  const json inspected = json::parse(conveyor({"--json", "job", "inspect", ready}).output);
  EXPECT_TRUE(inspected.at("held_at").is_string()) << inspected.dump();

  r = conveyor({"job", "release", ready});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "job " + ready + ": released (ready)")) << r.output;
  EXPECT_EQ(held_at(ready), "NULL");
  r = conveyor({"job", "release", ready});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "job " + ready + ": not held")) << r.output;
  r = conveyor({"job", "inspect", ready});
  EXPECT_TRUE(has(r, "release")) << r.output;

  // One history row per real change, with who made it.
  EXPECT_EQ(db_.query_value("SELECT string_agg(field || ':' || (actor LIKE 'conveyor-cli:%')::text, ',' ORDER BY id) "
                            "FROM conveyor.job_audit WHERE job_id = " +
                            ready),
            "hold:true,release:true");
  EXPECT_EQ(db_.query_value("SELECT (old_value IS NULL AND new_value IS NOT NULL)::text FROM conveyor.job_audit "
                            "WHERE field = 'hold' AND job_id = " +
                            ready),
            "true");
}

TEST_F(JobHoldCli, AdmittedOrFinishedJobsAreRefusedWithTheReason) {
  const auto queued = job({"configured", "ready", "queued"});
  const auto started = job({"configured", "ready", "queued", "started"});
  const auto done = job({"configured", "ready", "queued", "started", "processed", "done"});
  const auto ready = job({"configured", "ready"});

  // One refused job does not hold back the others; the exit says some were.
  auto r = conveyor({"job", "hold", queued, started, done, ready});
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "job " + queued + " is queued: already admitted")) << r.output;
  EXPECT_TRUE(has(r, "job " + started + " is started: already admitted")) << r.output;
  EXPECT_TRUE(has(r, "job " + done + " is done: it is not waiting for admission")) << r.output;
  EXPECT_TRUE(has(r, "job " + ready + ": held (ready)")) << r.output;
  for (const auto& id : {queued, started, done}) EXPECT_EQ(held_at(id), "NULL") << "job " << id;

  r = conveyor({"job", "hold", "999999"});
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "no job with id 999999")) << r.output;
  r = conveyor({"job", "hold"});
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "at least one job ID is required")) << r.output;
}

}  // namespace
