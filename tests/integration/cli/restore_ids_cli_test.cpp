// `conveyor system restore` never hands out an id again (issue 13, item 5):
// pg_restore puts the sequences back where the backup left them, so without
// the advance a new job reused a removed job's id, and with it its log and
// output folders; a reused change id would be dropped by the event dedupe.
// The CLI runs as a real process against a migrated database; no service runs.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include "conveyor/testing/testing.hpp"
#include "cli_test.hpp"

namespace {

namespace fs = std::filesystem;
using conveyor::testing::RunResult;
using conveyor::testing::cli::CliTest;
using conveyor::testing::cli::has;

class RestoreIdsCli : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    const auto r = conveyor({"job-type", "apply", CONVEYOR_JOB_TYPES_FILE, "--yes"});
    ASSERT_EQ(r.status, 0) << r.output;
  }
  std::int64_t insert_job() {
    return std::stoll(
        db_.query_value("INSERT INTO conveyor.job (job_type, params) VALUES ('sleep', "
                        "'{\"seconds\": 0}') RETURNING id"));
  }
  std::int64_t number(const std::string& sql) { return std::stoll(db_.query_value(sql)); }
};

TEST_F(RestoreIdsCli, SystemRestoreCleanNeverReusesAnId) {
  for (int i = 0; i < 3; ++i) insert_job();
  const fs::path file = data_dir_ / "conveyor.dump";
  auto r = conveyor({"system", "backup", file.string()});
  ASSERT_EQ(r.status, 0) << r.output;

  // Jobs the restore will remove: their ids, and their change ids, were seen.
  for (int i = 0; i < 4; ++i) insert_job();
  const std::int64_t max_job = number("SELECT max(id) FROM conveyor.job");
  const std::int64_t max_change = number("SELECT max(id) FROM conveyor.job_status_change");
  const std::int64_t max_outbox = number("SELECT max(id) FROM conveyor.outbox");
  // Folders of jobs the database no longer knows (e.g. from an older restore).
  const std::int64_t on_disk = max_job + 10;
  fs::create_directories(data_dir_ / "outputs" / ("job-" + std::to_string(on_disk)));
  fs::create_directories(data_dir_ / "logs" / "2026-12" / ("job-" + std::to_string(max_job + 5)));
  fs::create_directories(data_dir_ / "outputs" / "job-x");  // not a job folder: ignored

  r = conveyor({"system", "restore", file.string(), "--clean", "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job"), "3") << "the backup's jobs are back";
  EXPECT_TRUE(has(r, "job ids continue from " + std::to_string(on_disk + 1))) << r.output;

  const std::int64_t job = insert_job();
  EXPECT_GT(job, max_job) << "a removed job's id was handed out again";
  EXPECT_EQ(job, on_disk + 1) << "the id of a job folder on disk was handed out again";
  EXPECT_GT(number("SELECT max(id) FROM conveyor.job_status_change WHERE job_id = " + std::to_string(job)), max_change);
  EXPECT_GT(number("SELECT max(id) FROM conveyor.outbox"), max_outbox);

  // A second restore with nothing new still never goes back.
  r = conveyor({"system", "restore", file.string(), "--clean", "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "job ids continue from " + std::to_string(job + 1))) << r.output;
  EXPECT_EQ(insert_job(), job + 1);
}

// A backup taken while a worker ran holds its row as active and its job as
// started. Restored as they are, the pool would count that ghost as capacity
// until its heartbeat timed out, and the job would wait for the reconciler.
// The restore treats them as before a reboot: the row stopped, the job ready
// with its attempt unchanged.
TEST_F(RestoreIdsCli, RestoreStopsTheBackupsWorkerRowsAndRequeuesTheirJobs) {
  const std::string worker = db_.query_value(
      "INSERT INTO conveyor.worker (name, host, pid, concurrency, status, last_heartbeat) "
      "VALUES ('w-at-backup', 'hostA', 4242, 2, 'active', now()) RETURNING id");
  const std::string job = std::to_string(insert_job());
  db_.exec("UPDATE conveyor.job SET worker_id = " + worker + " WHERE id = " + job);
  for (const char* status : {"configured", "ready", "queued", "started"}) {
    db_.exec("UPDATE conveyor.job SET status = '" + std::string(status) + "' WHERE id = " + job);
  }
  const fs::path file = data_dir_ / "running.dump";
  auto r = conveyor({"system", "backup", file.string()});
  ASSERT_EQ(r.status, 0) << r.output;
  // The worker stops before the restore, as a restore asks (it is refused
  // while one heartbeats); its row in the backup still says active.
  db_.exec("UPDATE conveyor.worker SET status = 'stopped', stopped_at = now() WHERE id = " + worker);

  r = conveyor({"system", "restore", file.string(), "--clean", "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "1 running worker row(s) marked stopped; 1 started or queued job(s) back to ready")) << r.output;
  // Into the same cluster: the outbox's transaction ids are this cluster's,
  // and the requeue's own events do not make them look otherwise.
  EXPECT_FALSE(has(r, "transaction ids were past")) << r.output;
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.outbox WHERE txid = '1'"), "0") << "nothing renumbered";
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.worker WHERE name = 'w-at-backup'"), "stopped");
  EXPECT_EQ(db_.query_value("SELECT status || ' ' || attempt || ' ' || coalesce(worker_id::text, '-') "
                            "FROM conveyor.job WHERE id = " +
                            job),
            "ready 0 -");
}

}  // namespace
