// The operator commands of the CLI (`conveyor job|worker|params|system|queue`,
// DESIGN §6; runbooks 000–003) run as a real process against a migrated
// database with the shipped job types. No service runs: the CLI must work
// while they are down, and every assertion reads PostgreSQL afterwards.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "conveyor/bus/cloudevent.hpp"
#include "conveyor/bus/kafka.hpp"
#include "conveyor/bus/topics.hpp"
#include "conveyor/testing/testing.hpp"
#include "cli_test.hpp"

namespace {

namespace fs = std::filesystem;
using conveyor::testing::RunResult;
using conveyor::testing::TestDatabase;
using nlohmann::json;
using namespace std::chrono_literals;

using conveyor::testing::cli::CliTest;
using conveyor::testing::cli::has;

// A line of a table in the output whose first words are `words`.
bool has_row(const RunResult& r, const std::vector<std::string>& words) {
  std::istringstream lines(r.output);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream in(line);
    std::vector<std::string> first;
    for (std::string w; first.size() < words.size() && in >> w;) first.push_back(w);
    if (first == words) return true;
  }
  return false;
}

class OpsCli : public CliTest {
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
  std::string insert_job(const std::string& type = "sleep", const std::string& params = R"({"seconds": 0})") {
    return db_.query_value("INSERT INTO conveyor.job (job_type, params) VALUES ('" + type + "', '" + params +
                           "') RETURNING id");
  }
  // Walks a job along the hot path by SQL (the status trigger checks each step).
  void walk(const std::string& id, const std::vector<std::string>& statuses) {
    for (const auto& s : statuses) db_.exec("UPDATE conveyor.job SET status = '" + s + "' WHERE id = " + id);
  }
  // A sleep job `started` on `worker` (a conveyor.worker id), as a worker's claim leaves it.
  std::string started_job(const std::string& worker) {
    const std::string id = insert_job();
    db_.exec("UPDATE conveyor.job SET worker_id = " + worker + " WHERE id = " + id);
    walk(id, {"configured", "ready", "queued", "started"});
    return id;
  }
  std::string status_of(const std::string& id) {
    return db_.query_value("SELECT status FROM conveyor.job WHERE id = " + id);
  }
  std::string insert_worker(const std::string& name, const std::string& status, const std::string& heartbeat_age) {
    return db_.query_value(
        "INSERT INTO conveyor.worker (name, host, pid, concurrency, status, last_heartbeat) VALUES ('" + name +
        "', 'hostA', " + std::to_string(1000 + ++workers_) + ", 4, '" + status + "', now() - interval '" +
        heartbeat_age + "') RETURNING id");
  }

  int workers_ = 0;
};

// ------------------------------------------------------------------ job

TEST_F(OpsCli, JobSubmitValidatesLikeTheApiAndHonoursTheIdempotencyKey) {
  auto r = conveyor({"job", "submit", "sleep", "--params", R"({"seconds": 2})", "--idempotency-key", "run-1"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "submitted job ")) << r.output;
  r = conveyor({"job", "submit", "sleep", "--params", R"({"seconds": 2})", "--idempotency-key", "run-1"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "already exists with idempotency key 'run-1'")) << r.output;
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job"), "1");
  EXPECT_EQ(db_.query_value("SELECT actor FROM conveyor.job_status_change WHERE from_status IS NULL"),
            "conveyor-cli:root");

  r = conveyor({"job", "submit", "sleep", "--params", R"({"seconds": "soon"})"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "params.seconds")) << r.output;
  r = conveyor({"job", "submit", "no-such-type"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "unknown job type 'no-such-type'")) << r.output;
  r = conveyor({"job", "submit", "sleep", "--params", "{not json"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "--params: not valid JSON")) << r.output;
  r = conveyor({"job", "submit", "sleep", "--params", R"({"seconds": 1})", "--depends-on", "424242"});
  EXPECT_TRUE(has(r, "depends_on: no such job(s): 424242")) << r.output;
  r = conveyor({"job", "submit", "sleep", "--priorty", "3"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "unknown option --priorty")) << r.output;
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job"), "1") << "no refused submission left a job";

  const fs::path params = data_dir_ / "params.json";
  std::ofstream(params) << R"({"seconds": 5})";
  const json j = conveyor_json({"job", "submit", "sleep", "--params-file", params.string(), "--priority", "7"});
  EXPECT_EQ(j.at("priority"), 7);
  EXPECT_EQ(j.at("params").at("seconds"), 5);
  EXPECT_EQ(j.at("created"), true);
}

// `job submit --file`: the body of POST /v1/jobs/batch, one transaction.
TEST_F(OpsCli, JobSubmitFileCreatesABatchInOneTransactionOrNothing) {
  const fs::path file = data_dir_ / "jobs.json";
  std::ofstream(file) << R"({"jobs": [{"job_type": "sleep", "params": {"seconds": 1}},
    {"job_type": "sleep", "params": {"seconds": 2}, "after": [0], "idempotency_key": "batch-1"}]})";
  auto r = conveyor({"job", "submit", "--file", file.string()});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "2 of 2 job(s) created")) << r.output;
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job"), "2");
  EXPECT_EQ(db_.query_value("SELECT depends_on = ARRAY[(SELECT min(id) FROM conveyor.job)] FROM conveyor.job "
                            "WHERE idempotency_key = 'batch-1'"),
            "t");
  // Again: the keyed job exists, the other is new.
  const json j = conveyor_json({"job", "submit", "--file", file.string()});
  EXPECT_EQ(j.at("created"), 1);
  EXPECT_TRUE(j.at("items")[0].at("created").get<bool>());
  EXPECT_FALSE(j.at("items")[1].at("created").get<bool>());
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job"), "3");

  // A bad item: named, and nothing created.
  std::ofstream(file) << R"({"jobs": [{"job_type": "sleep", "params": {"seconds": 1}},
    {"job_type": "sleep", "params": {"seconds": "x"}}]})";
  r = conveyor({"job", "submit", "--file", file.string()});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "jobs[1].params")) << r.output;
  std::ofstream(file) << "{not json";
  r = conveyor({"job", "submit", "--file", file.string()});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "is not valid JSON")) << r.output;
  r = conveyor({"job", "submit", "sleep", "--file", file.string()});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "give no TYPE and no other option")) << r.output;
  r = conveyor({"job", "submit", "--file", (data_dir_ / "missing.json").string()});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "cannot read")) << r.output;
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job"), "3");
}

TEST_F(OpsCli, JobLsFiltersAndPagesAndInspectShowsTheHistory) {
  for (int i = 0; i < 5; ++i) insert_job();
  const std::string failed = insert_job("fail", "{}");
  walk(failed, {"configured", "ready", "queued", "started", "failed"});

  json page = conveyor_json({"job", "ls", "--size", "2"});
  EXPECT_EQ(page.at("total"), 6);
  ASSERT_EQ(page.at("items").size(), 2u);
  EXPECT_EQ(page.at("items")[0].at("id").get<std::int64_t>(), std::stoll(failed)) << "newest first";
  page = conveyor_json({"job", "ls", "--status", "failed"});
  ASSERT_EQ(page.at("items").size(), 1u);
  EXPECT_EQ(page.at("items")[0].at("job_type"), "fail");
  // Several statuses at once (what is in error), each once.
  page = conveyor_json({"job", "ls", "--status", "failed,internal_error,initialized,failed"});
  EXPECT_EQ(page.at("total"), 6);
  page = conveyor_json({"job", "ls", "--status", "failed,internal_error"});
  EXPECT_EQ(page.at("total"), 1);
  page = conveyor_json({"job", "ls", "--type", "sleep", "--page", "2", "--size", "4"});
  EXPECT_EQ(page.at("total"), 5);
  EXPECT_EQ(page.at("items").size(), 1u);

  auto r = conveyor({"job", "ls", "--size", "4"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "6 job(s), page 1 of 2")) << r.output;
  r = conveyor({"job", "ls", "--status", "stuck"});
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(has(r, "--status: unknown status 'stuck'")) << r.output;
  r = conveyor({"job", "ls", "--status", "failed,stuck"});
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(has(r, "--status: unknown status 'stuck'")) << r.output;
  r = conveyor({"job", "ls", "--status", ","});
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(has(r, "--status: expected one or more statuses")) << r.output;
  // A type that does not exist is most likely a typo: said, not only 0 jobs.
  r = conveyor({"job", "ls", "--type", "sleeep"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "0 job(s)")) << r.output;
  EXPECT_TRUE(has(r, "no job type named 'sleeep'")) << r.output;
  r = conveyor({"job", "ls", "--type", "sleep", "--status", "done"});
  EXPECT_FALSE(has(r, "no job type named")) << "an existing type with no job in that status: " << r.output;
  r = conveyor({"job", "ls", "--size", "4", "--page", "9"});
  EXPECT_TRUE(has(r, "6 job(s); page 9 is past the last, 2")) << r.output;
  r = conveyor({"job", "ls", "--size", "0"});
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(has(r, "--size: expected an integer from 1 to 500")) << r.output;

  // Attempts as people count them (stored from 0: the attempt it is on), times with their zone.
  const std::string second_try = page.at("items")[0].at("id").dump();  // the oldest sleep job
  db_.exec("UPDATE conveyor.job SET attempt = 1, max_attempts = 3 WHERE id = " + second_try);
  r = conveyor({"job", "ls"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has_row(r, {"ID", "TYPE", "STATUS", "ATTEMPT", "PRIORITY", "WORKER", "UPDATED"})) << r.output;
  EXPECT_TRUE(has_row(r, {failed, "fail", "failed", "1", "of", "1", "0", "-"})) << r.output;
  EXPECT_TRUE(has_row(r, {second_try, "sleep", "initialized", "2", "of", "3"})) << r.output;
  EXPECT_FALSE(has(r, "0/1")) << r.output;
  const std::string updated = db_.query_value(
      "SELECT to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') FROM conveyor.job WHERE id = " + failed);
  EXPECT_TRUE(has(r, updated + " UTC")) << r.output;

  r = conveyor({"job", "inspect", failed});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "Status          : failed")) << r.output;
  EXPECT_TRUE(has(r, "Attempt         : 1 of 1\n")) << r.output;
  EXPECT_TRUE(has(r, "Updated         : " + updated + " UTC\n")) << r.output;
  EXPECT_TRUE(has(r, "started      failed")) << r.output;
  const json j = conveyor_json({"job", "inspect", failed});
  EXPECT_EQ(j.at("history").size(), 6u);
  EXPECT_EQ(j.at("history")[5].at("to_status"), "failed");
}

// A job keeps its last run's error until a run succeeds. While it runs again
// (requeued by its worker's shutdown, or retried), the error is shown as the
// last run's, not as the job's; a failed job's error is its own.
TEST_F(OpsCli, JobLsAndInspectShowAnEarlierRunsErrorAsTheLastRuns) {
  const std::string running = started_job(insert_worker("w-live", "active", "0 seconds"));
  db_.exec(
      "UPDATE conveyor.job SET error_subtype = 'worker_shutdown', error_message = 'worker shut down' "
      "WHERE id = " +
      running);
  const std::string failed = insert_job("fail", "{}");
  walk(failed, {"configured", "ready", "queued", "started", "failed"});
  db_.exec("UPDATE conveyor.job SET error_subtype = 'exit_code', error_message = 'exited with code 3' WHERE id = " +
           failed);

  auto r = conveyor({"job", "ls"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "last run: worker_shutdown: worker shut down")) << r.output;
  EXPECT_TRUE(has_row(r, {failed, "fail", "failed", "1", "of", "1", "0", "-"})) << r.output;
  EXPECT_TRUE(has(r, " exit_code: exited with code 3")) << r.output;
  EXPECT_FALSE(has(r, "last run: exit_code")) << r.output;
  r = conveyor({"job", "inspect", running});
  EXPECT_TRUE(has(r, "Error           : last run: worker_shutdown: worker shut down\n")) << r.output;
  r = conveyor({"job", "inspect", failed});
  EXPECT_TRUE(has(r, "Error           : exit_code: exited with code 3\n")) << r.output;
}

// Issue 13: job ids are dense, so every substring of an id is another job's
// id. `job kill 91` reaches job 91 only, and an id no job has is not found,
// never guessed from the ids that contain it.
TEST_F(OpsCli, JobIdsMustMatchExactly) {
  db_.exec("SELECT setval(pg_get_serial_sequence('conveyor.job', 'id'), 90)");
  const std::string j91 = insert_job();
  db_.exec("SELECT setval(pg_get_serial_sequence('conveyor.job', 'id'), 390)");
  const std::string j391 = insert_job();
  ASSERT_EQ(j91 + " " + j391, "91 391");

  auto r = conveyor({"job", "kill", "91", "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "job 91: initialized -> canceled")) << r.output;
  EXPECT_EQ(status_of("91"), "canceled");
  EXPECT_EQ(status_of("391"), "initialized") << "391 contains 91 but was not named";

  // "39" is only in 391, "1" in both: neither names a job.
  r = conveyor({"job", "kill", "39", "--yes"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "no job with id 39")) << r.output;
  EXPECT_EQ(status_of("391"), "initialized");
  r = conveyor({"job", "inspect", "9"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "no job with id 9")) << r.output;
  r = conveyor({"job", "inspect", "1"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "no job with id 1")) << r.output;
  EXPECT_EQ(conveyor_json({"job", "inspect", "391"}).at("id"), 391);
  r = conveyor({"job", "logs", "39"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "no job with id 39")) << r.output;
  r = conveyor({"job", "inspect", "1;DROP"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "is not a job id")) << r.output;

  // A typo among the ids of a verb of many jobs is a usage error, as for
  // inspect, and nothing is touched: not even the job named right.
  for (const std::string verb : {"cancel", "kill", "hold", "release", "retry"}) {
    const bool asks = verb == "cancel" || verb == "kill";
    r = asks ? conveyor({"job", verb, "391", "39l", "--yes"}) : conveyor({"job", verb, "391", "39l"});
    EXPECT_EQ(r.status, 2) << verb << ": " << r.output;
    EXPECT_TRUE(has(r, "job " + verb + ": '39l' is not a job id (digits); nothing was changed")) << r.output;
  }
  r = conveyor({"job", "set-status", "391", "x", "--to", "failed", "--yes"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_EQ(status_of("391"), "initialized");
  EXPECT_EQ(db_.query_value("SELECT held_at IS NULL FROM conveyor.job WHERE id = 391"), "t");
}

// Issue 13: cancel, kill, set-status and worker drain show what they will
// touch and ask; without a terminal and without --yes they refuse, exit 1
// and change nothing. --yes goes ahead.
TEST_F(OpsCli, DestructiveCommandsListTheJobsAndAskUnlessYes) {
  const std::string waiting = insert_job();
  const std::string errored = insert_job("fail", "{}");
  walk(errored, {"internal_error"});
  insert_worker("w-live", "active", "0 seconds");
  const std::string history = "SELECT count(*) FROM conveyor.job_status_change";
  const std::string changes_before = db_.query_value(history);

  // stdin is /dev/null here: no terminal.
  auto r = conveyor({"job", "kill", waiting});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "job kill will touch:")) << r.output;
  EXPECT_TRUE(has_row(r, {"ID", "TYPE", "STATUS", "CREATED"})) << r.output;
  EXPECT_TRUE(has_row(r, {waiting, "sleep", "initialized"})) << r.output;
  EXPECT_TRUE(has(r, " UTC\n")) << "the creation time with its zone: " << r.output;
  EXPECT_TRUE(has(r, "refusing to kill 1 job(s) without confirmation: stdin is not a terminal; pass --yes"))
      << r.output;
  EXPECT_TRUE(has(r, "not applied: nothing changed")) << r.output;

  r = conveyor({"job", "cancel", waiting, errored});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has_row(r, {waiting, "sleep", "initialized"})) << r.output;
  EXPECT_TRUE(has_row(r, {errored, "fail", "internal_error"})) << r.output;
  EXPECT_TRUE(has(r, "refusing to cancel 2 job(s)")) << r.output;

  // An id that is no job's is named, and the others are still only listed.
  r = conveyor({"job", "set-status", errored, "424242", "--to", "error_checked,ready"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "job set-status 424242: no job with id 424242")) << r.output;
  EXPECT_TRUE(has(r, "refusing to change the status of 1 job(s)")) << r.output;

  r = conveyor({"worker", "drain", "w-live"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "worker drain will touch:")) << r.output;
  EXPECT_TRUE(has_row(r, {"w-live", "hostA/1001", "default", "active"})) << r.output;
  EXPECT_TRUE(has(r, "refusing to drain worker w-live")) << r.output;

  EXPECT_EQ(status_of(waiting), "initialized");
  EXPECT_EQ(status_of(errored), "internal_error");
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job WHERE canceled_at IS NOT NULL"), "0");
  EXPECT_EQ(db_.query_value(history), changes_before) << "nothing was changed";
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.worker WHERE name = 'w-live'"), "active");

  // --json: the listing and the refusal go to stderr, still refused.
  r = conveyor({"--json", "job", "cancel", waiting});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_EQ(status_of(waiting), "initialized");

  r = conveyor({"job", "set-status", errored, "--to", "error_checked,ready", "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_FALSE(has(r, "will touch")) << "--yes does not ask: " << r.output;
  EXPECT_EQ(status_of(errored), "ready");
  r = conveyor({"job", "kill", waiting, "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(status_of(waiting), "canceled");
  r = conveyor({"job", "cancel", errored, "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(status_of(errored), "canceled");
  r = conveyor({"worker", "drain", "w-live", "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.worker WHERE name = 'w-live'"), "draining");
}

// On a terminal the same commands ask, and only "y" goes ahead (a pseudo
// terminal from util-linux `script`, the answer typed on its input).
TEST_F(OpsCli, OnATerminalDestructiveCommandsAskAndOnlyYesGoesAhead) {
  const std::string job = insert_job();
  auto on_terminal = [&](const std::string& answer, const std::string& command) {
    return conveyor::testing::run(
        {"sh", "-c", "printf '" + answer + "\\n' | script -qec \"$0 " + command + "\" /dev/null", CONVEYOR_CLI_PATH},
        {{"CONVEYOR_DATABASE_URL", db_.url()}, {"CONVEYOR_DATA_DIR", data_dir_.string()}});
  };
  auto r = on_terminal("n", "job kill " + job);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "kill 1 job(s)? [y/N]")) << r.output;
  EXPECT_TRUE(has(r, "not applied: nothing changed")) << r.output;
  EXPECT_EQ(status_of(job), "initialized");
  r = on_terminal("y", "job kill " + job);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "job " + job + ": initialized -> canceled")) << r.output;
  EXPECT_EQ(status_of(job), "canceled");
}

// Runbook 000 / 003 without SQL: cancel wherever the job is, retry from the
// right point; one refused job does not hold back the others.
TEST_F(OpsCli, JobCancelAndRetry) {
  const std::string waiting = insert_job();
  const std::string done = insert_job();
  walk(done, {"configured", "ready", "queued", "started", "processed", "done"});
  const std::string running = started_job(insert_worker("w-live", "active", "0 seconds"));
  const std::string errored = insert_job();
  walk(errored, {"internal_error"});

  auto r = conveyor({"job", "cancel", waiting, done, running, errored, "--yes"});
  EXPECT_EQ(r.status, 1) << "the done job was refused: " << r.output;
  EXPECT_TRUE(has(r, "job " + waiting + ": initialized -> canceled")) << r.output;
  EXPECT_TRUE(has(r, "conveyor: job cancel: job " + done + " is done")) << r.output;
  EXPECT_TRUE(has(r, "job " + running + ": cancel requested")) << r.output;
  EXPECT_EQ(status_of(waiting), "canceled");
  EXPECT_EQ(status_of(done), "done") << "a done job stays done";
  EXPECT_EQ(status_of(running), "started") << "its live worker kills it and records canceled";
  EXPECT_EQ(db_.query_value("SELECT canceled_at IS NOT NULL FROM conveyor.job WHERE id = " + running), "t");
  EXPECT_EQ(status_of(errored), "canceled");
  EXPECT_EQ(db_.query_value("SELECT string_agg(to_status, ' ' ORDER BY id) FROM conveyor.job_status_change "
                            "WHERE job_id = " +
                            errored),
            "initialized internal_error error_checked canceled");
  EXPECT_EQ(db_.query_value("SELECT actor FROM conveyor.job_status_change WHERE job_id = " + waiting +
                            " ORDER BY id DESC LIMIT 1"),
            "conveyor-cli:root");

  r = conveyor({"job", "retry", waiting});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "job " + waiting + ": canceled -> initialized")) << r.output;
  EXPECT_EQ(status_of(waiting), "initialized");
  r = conveyor({"job", "retry", done});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_EQ(status_of(done), "done");
  r = conveyor({"job", "cancel"});
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(has(r, "at least one job ID is required")) << r.output;
}

TEST_F(OpsCli, JobLogsPrintsTheLogOfTheJobsMonth) {
  const std::string id = insert_job();
  auto r = conveyor({"job", "logs", id});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "it has not run yet")) << r.output;
  const std::string never = insert_job();
  walk(never, {"canceled"});
  r = conveyor({"job", "logs", never});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "it ended before a worker ever started it")) << "not a hint at the data dir: " << r.output;

  const std::string month = db_.query_value(
      "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM') "
      "FROM conveyor.job WHERE id = " +
      id);
  const fs::path dir = data_dir_ / "logs" / month / ("job-" + id);
  fs::create_directories(dir);
  std::ofstream(dir / "logs.txt") << "line one\nline two\nline three\n";
  r = conveyor({"job", "logs", id});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, "line one\nline two\nline three\n");
  r = conveyor({"job", "logs", id, "--tail", "2"});
  EXPECT_EQ(r.output, "line two\nline three\n");
  r = conveyor({"job", "logs", id, "--tail", "0"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, "") << "none, as tail -n 0 (it printed the whole log)";
}

// A job that runs on a live worker is not stuck: set-status may end it (its
// worker kills the process), not put it back to run beside the process
// still running (a new user's trial, stop 46: it ran twice and ended
// canceled). Once its worker is gone it may.
TEST_F(OpsCli, JobSetStatusRefusesToRequeueAJobItsLiveWorkerRuns) {
  const std::string live = started_job(insert_worker("w-live", "active", "0 seconds"));
  auto r = conveyor({"job", "set-status", live, "--to", "ready", "--yes"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "runs on worker w-live, which is alive: moving it to ready would run it twice")) << r.output;
  EXPECT_TRUE(has(r, "conveyor job cancel " + live)) << r.output;
  r = conveyor({"job", "set-status", live, "--to", "processed", "--yes"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_EQ(status_of(live), "started");
  r = conveyor({"job", "set-status", live, "--to", "failed", "--yes"});
  EXPECT_EQ(r.status, 0) << "ending it is the worker's to carry out: " << r.output;
  EXPECT_EQ(status_of(live), "failed");

  const std::string stuck = started_job(insert_worker("w-gone", "active", "1 hour"));
  r = conveyor({"job", "set-status", stuck, "--to", "ready", "--yes"});
  EXPECT_EQ(r.status, 0) << "its worker stopped heartbeating: " << r.output;
  EXPECT_EQ(status_of(stuck), "ready");
}

// Runbook 001's update_jobs_status: stuck jobs put back through the status
// machine, each step in the history.
TEST_F(OpsCli, JobSetStatusWalksTheStatusMachineAndRefusesWhatItForbids) {
  const std::string stuck = insert_job();
  walk(stuck, {"external_error"});
  db_.exec("UPDATE conveyor.job SET error_subtype = 'sink', error_message = 'webhook 503' WHERE id = " + stuck);
  auto r = conveyor({"job", "set-status", stuck, "--to", "error_checked,ready", "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "job " + stuck + ": external_error -> error_checked -> ready")) << r.output;
  EXPECT_EQ(
      db_.query_value("SELECT status || ' ' || coalesce(error_subtype, '-') FROM conveyor.job WHERE id = " + stuck),
      "ready -")
      << "the error is history now";
  EXPECT_EQ(db_.query_value("SELECT string_agg(to_status || ':' || actor, ' ' ORDER BY id) FROM "
                            "conveyor.job_status_change WHERE job_id = " +
                            stuck +
                            " AND id > (SELECT min(id) "
                            "FROM conveyor.job_status_change WHERE job_id = " +
                            stuck +
                            " AND to_status = "
                            "'external_error')"),
            "error_checked:conveyor-cli:root ready:conveyor-cli:root");

  const std::string done = insert_job();
  walk(done, {"configured", "ready", "queued", "started", "processed", "done"});
  r = conveyor({"job", "set-status", done, "--to", "ready", "--yes"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "done -> ready is not allowed by the status machine")) << r.output;
  EXPECT_TRUE(has(r, "conveyor: job set-status: job " + done + ": done -> ready"))
      << "the job named once: " << r.output;
  // The path is checked whole before anything is written.
  r = conveyor({"job", "set-status", stuck, "--to", "queued,done", "--yes"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_EQ(status_of(stuck), "ready");
  r = conveyor({"job", "set-status", stuck, "--to", "readyy", "--yes"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "--to: unknown status 'readyy'")) << r.output;
}

TEST_F(OpsCli, JobPatchIsADryRunUntilApplyThenChangesExactlyTheCountedJobs) {
  std::vector<std::string> errored;
  for (int i = 0; i < 4; ++i) {
    errored.push_back(insert_job());
    walk(errored.back(), {"internal_error"});
  }
  const std::string other_type = insert_job("fail", "{}");
  walk(other_type, {"internal_error"});
  const std::string other_status = insert_job();

  auto r = conveyor({"job", "patch", "--status", "internal_error", "--type", "sleep", "--to", "error_checked,ready"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "4 job(s) match (internal_error -> error_checked -> ready)")) << r.output;
  EXPECT_TRUE(has(r, "dry run: nothing changed")) << r.output;
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job WHERE status = 'internal_error'"), "5");

  r = conveyor(
      {"job", "patch", "--status", "internal_error", "--type", "sleep", "--to", "error_checked,ready", "--apply"});
  EXPECT_EQ(r.status, 1) << "no terminal: refuses without --yes: " << r.output;
  EXPECT_TRUE(has(r, "refusing to change 4 job(s)")) << r.output;
  EXPECT_TRUE(has(r, "job patch will touch:")) << r.output;
  EXPECT_TRUE(has_row(r, {errored[0], "sleep", "internal_error"})) << "listed before it asks: " << r.output;
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job WHERE status = 'internal_error'"), "5");

  r = conveyor({"job", "patch", "--status", "internal_error", "--type", "sleep", "--to", "error_checked,ready",
                "--apply", "--yes", "--limit", "3"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "only the oldest 3 would change")) << r.output;
  EXPECT_TRUE(has(r, "changed 3 job(s)")) << r.output;
  EXPECT_EQ(db_.query_value("SELECT string_agg(id::text, ',' ORDER BY id) FROM conveyor.job WHERE status = 'ready'"),
            errored[0] + "," + errored[1] + "," + errored[2]);
  EXPECT_EQ(status_of(errored[3]), "internal_error");
  EXPECT_EQ(status_of(other_type), "internal_error");
  EXPECT_EQ(status_of(other_status), "initialized");

  r = conveyor({"job", "patch", "--status", "internal_error", "--since", "2000-01-01T00:00:00Z", "--until",
                "2999-01-01T00:00:00Z", "--to", "error_checked,canceled", "--apply", "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "changed 2 job(s): internal_error -> error_checked -> canceled")) << r.output;
  r = conveyor({"job", "patch", "--status", "canceled", "--until", "2000-01-01T00:00:00Z", "--to", "initialized"});
  EXPECT_TRUE(has(r, "0 job(s) match")) << "--until bounds created_at: " << r.output;
  EXPECT_FALSE(has(r, "no job type named")) << r.output;
  // A --type no job type has: a typo, said with the count.
  r = conveyor({"job", "patch", "--status", "canceled", "--type", "slep", "--to", "initialized"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "0 job(s) match")) << r.output;
  EXPECT_TRUE(has(r, "job patch: no job type named 'slep'")) << r.output;
  // An age is that long ago; anything else is refused naming the option,
  // before PostgreSQL sees it.
  r = conveyor({"job", "patch", "--status", "canceled", "--since", "7d", "--to", "initialized"});
  EXPECT_TRUE(has(r, "2 job(s) match")) << "created within 7 days: " << r.output;
  r = conveyor({"job", "patch", "--status", "canceled", "--until", "7d", "--to", "initialized"});
  EXPECT_TRUE(has(r, "0 job(s) match")) << "none created before 7 days ago: " << r.output;
  for (const std::string bad : {"yesterday", "2026-13-45", "0d"}) {
    r = conveyor({"job", "patch", "--status", "canceled", "--since", bad, "--to", "initialized"});
    EXPECT_EQ(r.status, 2) << bad << ": " << r.output;
    EXPECT_TRUE(has(r, "--since: '" + bad + "' is neither a UTC time")) << r.output;
  }
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job WHERE status = 'canceled'"), "2");

  // Runbook 001's selections: by ids, and by a field of the params.
  const std::string tile_a = insert_job("sleep", R"({"seconds": 0, "tile": "T31TCH"})");
  const std::string tile_b = insert_job("sleep", R"({"seconds": 0, "tile": "T32ULU"})");
  r = conveyor(
      {"job", "patch", "--status", "initialized", "--param", "tile=T31TCH", "--to", "canceled", "--apply", "--yes"});
  EXPECT_TRUE(has(r, "changed 1 job(s)")) << r.output;
  EXPECT_EQ(status_of(tile_a), "canceled");
  EXPECT_EQ(status_of(tile_b), "initialized");
  r = conveyor({"job", "patch", "--status", "initialized", "--ids", tile_b + "," + other_status, "--to", "canceled"});
  EXPECT_TRUE(has(r, "2 job(s) match")) << r.output;
  r = conveyor({"job", "patch", "--status", "initialized", "--ids", "12;x", "--to", "canceled"});
  EXPECT_EQ(r.status, 2) << r.output;

  r = conveyor({"job", "patch", "--status", "done", "--to", "ready"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "done -> ready is not allowed")) << r.output;
  r = conveyor({"job", "patch", "--to", "ready"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "--status is required")) << r.output;
}

// Runbook 003's kill_job --cleanup: idempotent, outputs removed only once
// nothing runs the job, logs kept.
TEST_F(OpsCli, JobKillCleanupRemovesOutputsOnceTheJobNoLongerRuns) {
  const std::string running = started_job(insert_worker("w-live", "active", "0 seconds"));
  const fs::path outputs = data_dir_ / "outputs" / ("job-" + running);
  fs::create_directories(outputs);
  std::ofstream(outputs / "product.tif") << "partial";

  auto r = conveyor({"job", "kill", running, "--cleanup", "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "outputs kept while it runs")) << r.output;
  EXPECT_TRUE(fs::exists(outputs / "product.tif"));
  EXPECT_EQ(db_.query_value("SELECT canceled_at IS NOT NULL FROM conveyor.job WHERE id = " + running), "t");

  walk(running, {"canceled"});  // what its worker records once the process group is gone
  r = conveyor({"job", "kill", running, "--cleanup", "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "removed " + outputs.string())) << r.output;
  EXPECT_FALSE(fs::exists(outputs));
  r = conveyor({"job", "kill", running, "--cleanup", "--yes"});
  EXPECT_EQ(r.status, 0) << "idempotent: " << r.output;
  EXPECT_TRUE(has(r, "no outputs to remove")) << r.output;
  EXPECT_TRUE(has(r, "job " + running + ": already canceled;")) << "not canceled -> canceled: " << r.output;

  // A done job's outputs are its result (published, perhaps the inputs of
  // the jobs after it): kept, and it says so.
  const std::string done = insert_job();
  walk(done, {"configured", "ready", "queued", "started", "processed", "done"});
  const fs::path products = data_dir_ / "outputs" / ("job-" + done);
  fs::create_directories(products);
  std::ofstream(products / "product.tif") << "final";
  r = conveyor({"job", "kill", done, "--cleanup", "--yes"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "done, nothing to kill; its outputs are kept")) << r.output;
  EXPECT_TRUE(fs::exists(products / "product.tif"));
  EXPECT_EQ(status_of(done), "done");

  const std::string waiting = insert_job();
  r = conveyor({"job", "kill", waiting, "--yes"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(status_of(waiting), "canceled") << "a job that has not started never will";
}

// Runbook 003's watch-job-logs: what is appended while the job runs, then
// it ends by itself once the job stops running.
TEST_F(OpsCli, JobLogsFollowPrintsWhatIsAppendedUntilTheJobStopsRunning) {
  const std::string id = insert_job();
  walk(id, {"configured", "ready", "queued", "started"});
  const std::string month = db_.query_value(
      "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM') "
      "FROM conveyor.job WHERE id = " +
      id);
  const fs::path dir = data_dir_ / "logs" / month / ("job-" + id);
  fs::create_directories(dir);
  std::ofstream(dir / "logs.txt") << "first\n";
  const fs::path out = data_dir_ / "follow.out";
  conveyor::testing::ChildProcess::Options o;
  o.argv = {CONVEYOR_CLI_PATH, "job", "logs", id, "--follow"};
  o.env = {{"CONVEYOR_DATABASE_URL", db_.url()}, {"CONVEYOR_DATA_DIR", data_dir_.string()}};
  o.stdout_file = out;
  conveyor::testing::ChildProcess follower(o);
  ASSERT_TRUE(conveyor::testing::wait_until(
      [&] { return conveyor::testing::read_text(out).find("first\n") != std::string::npos; }, 10s));
  std::ofstream(dir / "logs.txt", std::ios::app) << "second\n";
  ASSERT_TRUE(conveyor::testing::wait_until(
      [&] { return conveyor::testing::read_text(out).find("second\n") != std::string::npos; }, 10s));
  EXPECT_TRUE(follower.running()) << "the job still runs";
  std::ofstream(dir / "logs.txt", std::ios::app) << "third\n";
  walk(id, {"processed"});
  EXPECT_EQ(follower.wait(10s), std::optional<int>(0)) << "it ends when the job stops running";
  const std::string text = conveyor::testing::read_text(out);
  EXPECT_NE(text.find("first\nsecond\nthird\n"), std::string::npos) << text;
  EXPECT_NE(text.find("job " + id + " is processed"), std::string::npos) << text;
}

// ------------------------------------------------------------------ worker

TEST_F(OpsCli, WorkerListPingAndDrain) {
  insert_worker("w-live", "active", "1 second");
  insert_worker("w-silent", "active", "1 hour");
  insert_worker("w-lost", "lost", "1 hour");

  auto r = conveyor({"worker", "list"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "HOST")) << r.output;
  EXPECT_TRUE(has(r, "w-live")) << r.output;
  EXPECT_TRUE(has(r, "active (no heartbeat)")) << "w-silent: " << r.output;
  EXPECT_FALSE(has(r, "w-lost")) << r.output;
  db_.exec("UPDATE conveyor.worker SET running = 3");  // what each last reported
  const json all = conveyor_json({"worker", "list", "--all"});
  ASSERT_EQ(all.size(), 3u);
  for (const auto& w : all) {
    EXPECT_EQ(w.at("running"), w.at("name") == "w-lost" ? 0 : 3) << "a lost worker runs nothing: " << w.dump();
  }

  r = conveyor({"worker", "ping", "w-live"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "hostA/1001: OK")) << r.output;
  r = conveyor({"worker", "ping", "hostA/1002"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "hostA/1002: NOT RESPONDING")) << r.output;
  r = conveyor({"worker", "ping", "nobody"});
  EXPECT_EQ(r.status, 1) << r.output;

  r = conveyor({"worker", "drain", "w-live", "--yes"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.worker WHERE name = 'w-live'"), "draining");
  r = conveyor({"worker", "drain", "w-lost"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "is lost, not active")) << r.output;
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.worker WHERE name = 'w-lost'"), "lost");
}

// ------------------------------------------------------------------ params

TEST_F(OpsCli, ParamsSetChangesSeveralInOneTransactionOrNothing) {
  const std::string before = db_.query_value("SELECT count(*) FROM conveyor.system_parameters_history");
  auto r = conveyor({"params", "set", "max_number_of_worker_instances=3", "job_types_list=[\"sleep\",\"fail\"]",
                     "publication_endpoint_url=http://127.0.0.1:9/hook"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "max_number_of_worker_instances: 4 -> 3")) << r.output;
  EXPECT_EQ(db_.query_value("SELECT max_number_of_worker_instances || ' ' || array_to_string(job_types_list, ',') "
                            "|| ' ' || publication_endpoint_url FROM conveyor.system_parameters"),
            "3 sleep,fail http://127.0.0.1:9/hook");
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.system_parameters_history"),
            std::to_string(std::stoi(before) + 1))
      << "one change, one history row";
  EXPECT_EQ(db_.query_value("SELECT changed_by FROM conveyor.system_parameters_history ORDER BY id DESC LIMIT 1"),
            "conveyor-cli:root");
  EXPECT_EQ(conveyor_json({"params", "get", "job_types_list"}), json::parse(R"(["sleep","fail"])"));

  // min > max is refused as a whole: max stays 3 although it came first.
  r = conveyor({"params", "set", "max_number_of_worker_instances=2", "min_number_of_worker_instances=5"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r,
                  "min_number_of_worker_instances: out of range: must satisfy min_number_of_worker_instances <= "
                  "max_number_of_worker_instances"))
      << r.output;
  EXPECT_EQ(db_.query_value("SELECT max_number_of_worker_instances FROM conveyor.system_parameters"), "3");
  // A value out of its range names the range, not the constraint.
  r = conveyor({"params", "set", "max_number_of_worker_instances=-1"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "max_number_of_worker_instances: out of range: must satisfy max_number_of_worker_instances >= 0"))
      << r.output;
  EXPECT_FALSE(has(r, "_check")) << r.output;
  r = conveyor({"params", "set", "worker_concurrency=0"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r,
                  "worker_concurrency: out of range: must satisfy (worker_concurrency >= 1) AND "
                  "(worker_concurrency <= 1024)"))
      << r.output;
  r = conveyor({"params", "set", "worker_concurrency=many"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "worker_concurrency: expected an integer")) << r.output;
  r = conveyor({"params", "set", "max_workers=3"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "max_workers: not a system parameter")) << r.output;

  // One parameter as NAME VALUE (runbook 001's image tag roll-out).
  r = conveyor({"params", "set", "image_tags", R"({"fsc-rlie-container": "v2"})"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(conveyor_json({"params", "get", "image_tags"}), json::parse(R"({"fsc-rlie-container": "v2"})"));
  r = conveyor({"params", "set", "image_tags", "{}", "worker_concurrency=2"});
  EXPECT_EQ(r.status, 2) << r.output;  // three words: NAME=VALUE pairs only
  EXPECT_TRUE(has(r, "expected NAME=VALUE (or NAME VALUE for one parameter), got 'image_tags'")) << r.output;

  // A job type that does not exist, and a catch-up start that is no time,
  // are refused naming them: they would refuse every submission, or stop a
  // schedule, without a word (a new user's trial, stop 44).
  r = conveyor({"params", "set", "job_types_list=[\"sleep\",\"nosuch\"]"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "job_types_list: no such job type: 'nosuch'")) << r.output;
  r = conveyor({"params", "set", "image_tags", R"({"fsc-rlei": "v3"})"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "image_tags: no such job type: 'fsc-rlei'")) << r.output;
  // A tag is a tag, and only a container job type has an image to tag.
  r = conveyor({"params", "set", "image_tags", R"({"fsc-rlie-container": "v2 --privileged"})"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "image_tags.fsc-rlie-container: 'v2 --privileged' is not an image tag")) << r.output;
  r = conveyor({"params", "set", "image_tags", R"({"fsc-rlie-container": "-v2"})"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "'-v2' is not an image tag")) << r.output;
  r = conveyor({"params", "set", "image_tags", R"({"fsc-rlie": "v2"})"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "image_tags: 'fsc-rlie': a process job type (it has no image)")) << r.output;
  r = conveyor({"params", "set", "schedule_catchup_start", R"({"sleep": "yesterday"})"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "schedule_catchup_start.sleep: 'yesterday' is not a UTC time")) << r.output;
  r = conveyor({"params", "set", "schedule_catchup_start", R"({"sleep": "2026-12-01"})"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(conveyor_json({"params", "get", "job_types_list"}), json::parse(R"(["sleep","fail"])"));
  EXPECT_EQ(conveyor_json({"params", "get", "image_tags"}), json::parse(R"({"fsc-rlie-container": "v2"})"));

  const json all = conveyor_json({"params", "list"});
  EXPECT_EQ(all.at("max_number_of_worker_instances"), 3);
  EXPECT_TRUE(all.contains("stall_queued_s"));
  // Its time as every table shows one (it was PostgreSQL's JSON text).
  r = conveyor({"params", "list"});
  EXPECT_TRUE(std::regex_search(r.output, std::regex("last changed \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d UTC by ")))
      << r.output;
}

// ------------------------------------------------------------------ system

// Runbook 003 "pausing new jobs": takes effect at once, persists, and the
// reason reaches whoever submits.
TEST_F(OpsCli, SystemPauseRefusesSubmissionsWithTheReasonAndUnpauseAcceptsAgain) {
  auto r = conveyor({"system", "pause", "--reason", "planned maintenance 22:00"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(db_.query_value("SELECT accepting_new_jobs::text || ' ' || not_accepting_reason "
                            "FROM conveyor.system_parameters"),
            "false planned maintenance 22:00");
  r = conveyor({"job", "submit", "sleep", "--params", R"({"seconds": 1})"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "not accepting new jobs: planned maintenance 22:00")) << r.output;
  r = conveyor({"system", "status"});
  EXPECT_TRUE(has(r, "accepting new jobs : NO (planned maintenance 22:00)")) << r.output;
  // Paused again without --reason: the operator's reason stays.
  r = conveyor({"system", "pause"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "already not accepting new jobs; reason now: planned maintenance 22:00")) << r.output;
  EXPECT_EQ(db_.query_value("SELECT not_accepting_reason FROM conveyor.system_parameters"),
            "planned maintenance 22:00");

  r = conveyor({"system", "unpause"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(db_.query_value("SELECT accepting_new_jobs FROM conveyor.system_parameters"), "t");
  r = conveyor({"job", "submit", "sleep", "--params", R"({"seconds": 1})"});
  EXPECT_EQ(r.status, 0) << r.output;
}

TEST_F(OpsCli, SystemStatusCountsJobsWorkersServicesAndTheOutbox) {
  insert_job();
  insert_job();
  walk(insert_job("fail", "{}"), {"internal_error"});
  insert_worker("w1", "active", "0 seconds");
  db_.exec(
      "INSERT INTO conveyor.service_instance (id, service, last_heartbeat) VALUES "
      "('c1', 'conveyor-creation', now()), ('c2', 'conveyor-creation', now() - interval '1 hour')");
  const json s = conveyor_json({"system", "status"});
  EXPECT_EQ(s.at("jobs").at("initialized"), 2);
  EXPECT_EQ(s.at("jobs").at("internal_error"), 1);
  EXPECT_EQ(s.at("workers").at("active").at("count"), 1);
  EXPECT_EQ(s.at("workers").at("active").at("capacity"), 4);
  EXPECT_EQ(s.at("services").at("conveyor-creation").at("up"), 1);
  EXPECT_EQ(s.at("services").at("conveyor-creation").at("down"), 1) << "stale heartbeat shows down";
  EXPECT_GT(s.at("outbox").at("unsent").get<int>(), 0) << "no relay runs: the events wait";
  EXPECT_EQ(s.at("triggers").at("failed"), 0);
  EXPECT_TRUE(s.at("outbox").at("relay_refusal").is_null());
  auto r = conveyor({"system", "status"});
  EXPECT_TRUE(has(r, "conveyor-creation DEGRADED (1 live, 1 down)")) << r.output;
  EXPECT_FALSE(has(r, "REFUSES")) << r.output;
  EXPECT_TRUE(has(r, "alerts             : none firing")) << r.output;
  // The alerts as the monitor last recorded them, with no API token to
  // find (runbook 004; a new user's trial, stop 46).
  db_.exec(
      "INSERT INTO conveyor.alert_event (name, severity, summary) VALUES "
      "('workers_lost', 'warning', '1 worker(s) lost in the last hour: w9'), "
      "('service_missing', 'critical', 'no live instance of conveyor-execution')");
  r = conveyor({"system", "status"});
  const auto missing = r.output.find("  critical service_missing since ");
  EXPECT_NE(missing, std::string::npos) << r.output;
  EXPECT_LT(missing, r.output.find("  warning workers_lost since ")) << "most severe first: " << r.output;
  EXPECT_TRUE(has(r, " UTC: no live instance of conveyor-execution")) << r.output;
  EXPECT_EQ(conveyor_json({"system", "status"}).at("alerts").size(), 2u);
  // Intake limited to some job types (a wave run, or by hand): said with it.
  db_.exec("UPDATE conveyor.system_parameters SET job_types_list = '{}'");
  EXPECT_TRUE(
      has(conveyor({"system", "status"}), "accepting new jobs : yes, but of no job type: job_types_list is empty"));
  db_.exec("UPDATE conveyor.system_parameters SET job_types_list = '{sleep,fail}'");
  EXPECT_TRUE(has(conveyor({"system", "status"}), "yes, of these job types only (job_types_list): sleep, fail"));
  // A relay place past this cluster's ids (a backup restored by hand into
  // another cluster): every event counts as sent, and status says why.
  db_.exec("UPDATE conveyor.outbox_relay SET sent = '4000000002:4000000002:'");
  EXPECT_EQ(conveyor_json({"system", "status"}).at("outbox").at("relay_refusal"), "past_cluster_ids");
  EXPECT_TRUE(has(conveyor({"system", "status"}), "the relay REFUSES to publish (past_cluster_ids)"));
}

// Runbook 003 "preparing for reboot": refused while workers heartbeat; once
// they are stopped, running and queued jobs go back to ready with their
// attempt unchanged, as if they had not started.
TEST_F(OpsCli, PrepareForRebootRequeuesRunningJobsOnceTheWorkersAreStopped) {
  const std::string worker = insert_worker("w-live", "active", "0 seconds");
  const std::string started = started_job(worker);
  const std::string queued = insert_job();
  walk(queued, {"configured", "ready", "queued"});
  const std::string cancel_asked = insert_job();
  walk(cancel_asked, {"configured", "ready", "queued", "started"});
  db_.exec("UPDATE conveyor.job SET canceled_at = now() WHERE id = " + cancel_asked);
  const std::string untouched = insert_job();

  auto r = conveyor({"system", "prepare-for-reboot", "--yes"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "1 worker(s) still heartbeat (w-live)")) << r.output;
  EXPECT_EQ(status_of(started), "started");

  db_.exec("UPDATE conveyor.worker SET last_heartbeat = now() - interval '1 hour'");  // the pool was stopped
  r = conveyor({"system", "prepare-for-reboot", "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "2 job(s) back to ready, 1 canceled")) << r.output;
  EXPECT_EQ(status_of(started), "ready");
  EXPECT_EQ(status_of(queued), "ready");
  EXPECT_EQ(status_of(cancel_asked), "canceled");
  EXPECT_EQ(status_of(untouched), "initialized");
  EXPECT_EQ(db_.query_value("SELECT attempt::text || ' ' || coalesce(worker_id::text, '-') FROM conveyor.job "
                            "WHERE id = " +
                            started),
            "0 -")
      << "as if it had not run";
  // The same rule as a worker's own shutdown (model::kRequeueStoppedRuns):
  // the run that was stopped says why; a job that had not started keeps its fields.
  EXPECT_EQ(db_.query_value("SELECT error_subtype FROM conveyor.job WHERE id = " + started), "reboot");
  EXPECT_EQ(db_.query_value("SELECT coalesce(error_subtype, '-') FROM conveyor.job WHERE id = " + queued), "-");
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.worker WHERE id = " + worker), "stopped");
}

// Runbook 002's backup & restore; runbook 001's reset from a backup.
TEST_F(OpsCli, SystemBackupAndRestoreIntoAnEmptyDatabaseThenWithClean) {
  for (int i = 0; i < 3; ++i) insert_job();
  const fs::path file = data_dir_ / "conveyor.dump";
  auto r = conveyor({"system", "backup", file.string()});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "backup written to " + file.string())) << r.output;
  EXPECT_FALSE(has(r, db_.url())) << "the connection string (and its password) is never printed";
  ASSERT_GT(fs::file_size(file), 0u);

  TestDatabase other(false);  // empty: what a rebuilt server has
  auto restore = [&](std::vector<std::string> args) {
    std::vector<std::string> argv{CONVEYOR_CLI_PATH, "system", "restore"};
    argv.insert(argv.end(), args.begin(), args.end());
    return conveyor::testing::run(argv, {{"CONVEYOR_DATABASE_URL", other.url()}});
  };
  r = restore({file.string()});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(other.query_value("SELECT count(*) FROM conveyor.job"), "3");
  EXPECT_EQ(other.query_value("SELECT count(*) FROM conveyor.job_status_change"), "3");
  EXPECT_EQ(other.query_value("SELECT count(*) FROM conveyor.schema_migrations"),
            db_.query_value("SELECT count(*) FROM conveyor.schema_migrations"));

  // An existing backup is not replaced without --force; a dump that fails
  // leaves it as it was, and says why (a new user's trial, stop 46).
  insert_job();
  const auto first_size = fs::file_size(file);
  r = conveyor({"system", "backup", file.string()});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, file.string() + " exists: name another file, or pass --force")) << r.output;
  r = conveyor({"system", "backup", (data_dir_ / "no-such-folder" / "x.dump").string()});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "no-such-folder is not a folder")) << r.output;
  r = conveyor::testing::run_cli(CONVEYOR_CLI_PATH, {"system", "backup", file.string(), "--force"},
                                 {{"CONVEYOR_DATABASE_URL", db_.url() + "_no_such_database"}});
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "no backup was written; " + file.string() + " is unchanged")) << r.output;
  EXPECT_FALSE(has(r, "is not a backup")) << r.output;
  EXPECT_EQ(fs::file_size(file), first_size);
  EXPECT_FALSE(fs::exists(file.string() + ".partial"));
  r = conveyor({"system", "backup", file.string(), "--force"});
  ASSERT_EQ(r.status, 0) << r.output;

  // Again into a database that is not empty: refused whole without --clean...
  r = restore({file.string()});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "nothing was changed")) << r.output;
  EXPECT_EQ(other.query_value("SELECT count(*) FROM conveyor.job"), "3");
  // Refused, naming them, while a worker or a service heartbeats (its rows
  // would be replaced under it), unless --force (a new user's trial, stop 44).
  other.exec("INSERT INTO conveyor.worker (name, status, last_heartbeat) VALUES ('w-live', 'active', now())");
  r = restore({file.string(), "--clean", "--yes"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "1 process(es) still heartbeat (worker w-live)")) << r.output;
  EXPECT_TRUE(has(r, "nothing was changed")) << r.output;
  EXPECT_EQ(other.query_value("SELECT count(*) FROM conveyor.job"), "3");
  // ... and replaced with it.
  r = restore({file.string(), "--clean", "--yes", "--force"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(other.query_value("SELECT count(*) FROM conveyor.job"), "4");
  r = restore({(data_dir_ / "missing.dump").string()});
  EXPECT_EQ(r.status, 2) << r.output;

  // Into a database that only `db init` made (runbook 002's first step, or
  // one rolled back to nothing): it has no worker table to ask, and is not
  // empty, so --clean (a new user's trial, stop 46).
  TestDatabase initialized(false);
  ASSERT_EQ(
      conveyor::testing::run_cli(CONVEYOR_CLI_PATH, {"db", "init"}, {{"CONVEYOR_DATABASE_URL", initialized.url()}})
          .status,
      0);
  auto restore_into_initialized = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"system", "restore"});
    return conveyor::testing::run_cli(CONVEYOR_CLI_PATH, args, {{"CONVEYOR_DATABASE_URL", initialized.url()}});
  };
  r = restore_into_initialized({file.string()});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_FALSE(has(r, "does not exist")) << r.output;
  EXPECT_TRUE(has(r, "needs --clean")) << r.output;
  r = restore_into_initialized({file.string(), "--clean", "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(initialized.query_value("SELECT count(*) FROM conveyor.job"), "4");
}

// Runbook 001 after a long downtime: job types in waves of dependencies
// (here learnt from the jobs' depends_on), started one wave at a time.
TEST_F(OpsCli, SystemWavesOrdersTypesByDependencyAndStartsThemWaveByWave) {
  const std::string fsc = insert_job("fsc-rlie", R"({"tile": "T1", "date": "2026-11-30"})");
  const std::string sws = db_.query_value(
      "INSERT INTO conveyor.job (job_type, params, depends_on) VALUES ('sws-wds', '{\"tile\": \"T1\", "
      "\"date\": \"2026-11-30\"}', ARRAY[" +
      fsc + "]::bigint[]) RETURNING id");
  db_.exec(
      "INSERT INTO conveyor.job (job_type, params, depends_on) VALUES ('gfsc', '{\"tile\": \"T1\", "
      "\"date\": \"2026-11-30\"}', ARRAY[" +
      sws + "]::bigint[])");
  auto r = conveyor({"system", "waves"});
  ASSERT_EQ(r.status, 0) << r.output;
  // Waves come from the jobs' dependencies: the types no job links (the
  // -container variants here) are in wave 1.
  EXPECT_TRUE(has(r,
                  "wave 1: alloc, alloc-container, fail, flaky, fsc-rlie, fsc-rlie-container, "
                  "gfsc-container, sleep, sleep-container, sleep-resident, sws-wds-container\n"))
      << r.output;
  EXPECT_TRUE(has(r, "wave 2: sws-wds   (after fsc-rlie)")) << r.output;
  EXPECT_TRUE(has(r, "wave 3: gfsc   (after sws-wds)")) << r.output;
  r = conveyor({"system", "waves", "--start", "2"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(db_.query_value("SELECT array_to_string(job_types_list, ',') FROM conveyor.system_parameters"),
            "alloc,alloc-container,fail,flaky,fsc-rlie,fsc-rlie-container,gfsc-container,sleep,"
            "sleep-container,sleep-resident,sws-wds,sws-wds-container");
  r = conveyor({"system", "waves", "--start", "4"});
  EXPECT_EQ(r.status, 2) << "there are 3 waves: " << r.output;
  r = conveyor({"system", "waves", "--all"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(db_.query_value("SELECT job_types_list IS NULL FROM conveyor.system_parameters"), "t");
}

// ------------------------------------------------------------------ queue

TEST_F(OpsCli, QueuePauseAndResumePersistInQueueState) {
  const std::string ready = insert_job();
  walk(ready, {"configured", "ready"});
  auto r = conveyor({"queue", "pause", "--type", "sleep", "--reason", "bad input data"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(db_.query_value("SELECT paused::text || ' ' || reason || ' ' || paused_by FROM conveyor.queue_state "
                            "WHERE kind = 'job_type' AND name = 'sleep'"),
            "true bad input data conveyor-cli:root");
  r = conveyor({"queue", "list"});
  EXPECT_TRUE(has(r, "yes (bad input data)")) << r.output;
  const json q = conveyor_json({"queue", "inspect", "--type", "sleep"});
  EXPECT_EQ(q.at("paused"), true);
  EXPECT_EQ(q.at("ready"), 1);
  // The pause time in UTC and saying so, as `job ls` prints times.
  db_.exec("UPDATE conveyor.queue_state SET paused_at = '2026-11-22 11:00:00+01' WHERE name = 'sleep'");
  r = conveyor({"queue", "inspect", "--type", "sleep"});
  EXPECT_TRUE(has(r, "Paused At           : 2026-11-22 10:00:00 UTC\n")) << r.output;
  r = conveyor({"queue", "inspect", "--pool", "default"});
  EXPECT_TRUE(has(r, "Ready               : 1")) << r.output;

  r = conveyor({"queue", "pause", "--type", "slep"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "no job type named 'slep'")) << r.output;
  r = conveyor({"queue", "pause", "--type", "sleep", "--pool", "default"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "exactly one of --type")) << r.output;

  r = conveyor({"queue", "resume", "--type", "sleep"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "job type sleep resumed")) << r.output;
  EXPECT_EQ(db_.query_value("SELECT paused FROM conveyor.queue_state WHERE kind = 'job_type' AND name = 'sleep'"), "f");
  r = conveyor({"queue", "resume", "--type", "sleep"});
  EXPECT_TRUE(has(r, "was not paused")) << r.output;
}

// Runbook 002's queue drain: the queue's jobs that are not running are
// canceled (counted in queue_state), running and other queues' jobs stay.
TEST_F(OpsCli, QueueDrainCancelsWhatIsNotRunningAfterADryRun) {
  const std::string waiting = insert_job();
  const std::string ready = insert_job();
  walk(ready, {"configured", "ready"});
  const std::string failed = insert_job();
  walk(failed, {"configured", "ready", "queued", "started", "failed"});
  const std::string running = insert_job();
  walk(running, {"configured", "ready", "queued", "started"});
  const std::string other = insert_job("fail", "{}");

  auto r = conveyor({"queue", "drain", "--type", "sleep"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "2 job(s) of job type sleep in initialized,configured,ready,queued")) << r.output;
  EXPECT_TRUE(has_row(r, {waiting, "sleep", "initialized"})) << "the jobs it would cancel are listed: " << r.output;
  EXPECT_TRUE(has_row(r, {ready, "sleep", "ready"})) << r.output;
  r = conveyor({"queue", "drain", "--type", "sleep", "--apply"});
  EXPECT_EQ(r.status, 1) << "no terminal: refused without --yes: " << r.output;
  EXPECT_TRUE(has(r, "refusing to cancel 2 job(s)")) << r.output;
  EXPECT_EQ(status_of(waiting), "initialized") << "a dry run";
  r = conveyor({"queue", "drain", "--type", "sleep", "--apply", "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "drained 2 job(s)")) << r.output;
  EXPECT_EQ(status_of(waiting), "canceled");
  EXPECT_EQ(status_of(ready), "canceled");
  EXPECT_EQ(status_of(failed), "failed");
  EXPECT_EQ(status_of(running), "started");
  EXPECT_EQ(status_of(other), "initialized");
  r = conveyor({"queue", "drain", "--pool", "default", "--status", "failed", "--apply", "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(status_of(failed), "canceled") << "through error_checked";
  EXPECT_EQ(
      db_.query_value("SELECT drained_count FROM conveyor.queue_state WHERE kind = 'job_type' AND name = 'sleep'"),
      "2");
  r = conveyor({"queue", "drain", "--type", "sleep", "--status", "started"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "'started' cannot be drained")) << r.output;
}

// ------------------------------------------------------------------ schedule

TEST_F(OpsCli, ScheduleListPauseResumeAndBackfillWithoutDoubles) {
  db_.exec("UPDATE conveyor.job_type SET schedule = '0 * * * *', catchup_policy = 'all' WHERE name = 'fail'");
  auto r = conveyor({"schedule", "list"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "fail")) << r.output;
  EXPECT_TRUE(has(r, "not started")) << r.output;
  EXPECT_FALSE(has(r, "sleep")) << "only scheduled types: " << r.output;

  r = conveyor({"schedule", "pause", "fail", "--reason", "upstream outage"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(db_.query_value("SELECT paused::text || ' ' || paused_reason FROM conveyor.schedule_state "
                            "WHERE job_type = 'fail'"),
            "true upstream outage");
  db_.exec("UPDATE conveyor.schedule_state SET last_slot = '2026-11-22 11:00:00+01' WHERE job_type = 'fail'");
  r = conveyor({"schedule", "list"});
  EXPECT_TRUE(has(r, "paused (upstream outage)")) << r.output;
  EXPECT_TRUE(has(r, " 2026-11-22 10:00:00 UTC ")) << "the last slot in UTC, saying so: " << r.output;
  r = conveyor({"schedule", "resume", "fail"});
  EXPECT_TRUE(has(r, "resumed")) << r.output;
  EXPECT_EQ(db_.query_value("SELECT paused FROM conveyor.schedule_state WHERE job_type = 'fail'"), "f");
  r = conveyor({"schedule", "pause", "sleep"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "has no schedule")) << r.output;

  const std::string fmt = "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'";
  const std::string from =
      db_.query_value("SELECT to_char(date_trunc('hour', now() AT TIME ZONE 'UTC') - interval '3 hours', " + fmt + ")");
  const std::string to = db_.query_value("SELECT to_char(date_trunc('hour', now() AT TIME ZONE 'UTC'), " + fmt + ")");
  r = conveyor({"schedule", "backfill", "fail", "--from", from, "--to", to});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "4 slot(s) of fail")) << "both ends included: " << r.output;
  EXPECT_TRUE(has(r, "dry run")) << r.output;
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job"), "0");
  // --apply requests the runs: conveyor-creation creates them in batches
  // (tests/integration/creation/scheduler_test.cpp); here the request is shown and canceled.
  r = conveyor({"schedule", "backfill", "fail", "--from", from, "--to", to, "--apply", "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "backfill 1 requested")) << r.output;
  EXPECT_EQ(db_.query_value("SELECT job_type || ' ' || slot_count || ' ' || policy || ' ' || state "
                            "FROM conveyor.backfill_request"),
            "fail 4 all pending");
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job"), "0") << "the CLI creates no job itself";
  r = conveyor({"schedule", "list"});
  EXPECT_TRUE(has(r, "0/4")) << "the open request with its progress: " << r.output;
  r = conveyor({"schedule", "cancel-backfill", "1"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "backfill 1 canceled")) << r.output;
  EXPECT_TRUE(has(conveyor({"schedule", "backfills"}), "no open backfill requests")) << r.output;
  EXPECT_TRUE(has(conveyor({"schedule", "backfills", "--all"}), "canceled")) << r.output;
  r = conveyor({"schedule", "backfill", "fail", "--from", from, "--to", to, "--policy", "collapse"});
  EXPECT_TRUE(has(r, "key backfill:" + from + ".." + to)) << r.output;
  r = conveyor({"schedule", "backfill", "fail", "--from", from, "--policy", "each"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "--policy: 'each' is not all")) << r.output;

  r = conveyor({"schedule", "backfill", "fail", "--from", from, "--to", "2999-01-01"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "--to: the future is the scheduler's")) << r.output;
  r = conveyor({"schedule", "backfill", "fail", "--from", "2999-01-01"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "--from: the future is the scheduler's")) << "no --to was given: " << r.output;
  r = conveyor({"schedule", "backfill", "fail", "--from", "last tuesday"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "--from: 'last tuesday' is not a UTC time")) << r.output;
}

// ------------------------------------------------------------------ events

// `events tail` against a real devbroker: what any Kafka client reads, one
// line per event; a malformed message is skipped with a note, not fatal.
TEST(EventsCli, TailPrintsTheJobEventsFromTheBeginningAndFiltersByJob) {
  conveyor::testing::Broker broker;
  const std::string prefix = conveyor::testing::unique_name("tail");
  const std::string topic = conveyor::bus::job_event_topic(prefix, "io.conveyor.job.done");
  std::vector<conveyor::bus::Message> messages;
  for (int job = 7; job <= 9; ++job) {
    conveyor::bus::CloudEvent e;
    e.id = "evt-" + std::to_string(job);
    e.source = "/conveyor/test";
    e.type = "io.conveyor.job.done";
    e.subject = std::to_string(job);
    e.time = "2026-12-01T10:00:00Z";
    e.data = {{"job_id", job}, {"from_status", "processed"}, {"to_status", "done"}, {"actor", "tester"}};
    messages.push_back({topic, e.subject, conveyor::bus::encode(e)});
    if (job == 7) messages.push_back({topic, "x", "not a cloud event"});
  }
  conveyor::bus::ProducerOptions po;
  po.brokers = broker.bootstrap();
  conveyor::bus::Producer producer(po);
  for (const bool acked : producer.send_batch(messages, std::chrono::seconds(20))) ASSERT_TRUE(acked);

  const std::map<std::string, std::string> env{{"CONVEYOR_KAFKA_BROKERS", broker.bootstrap()},
                                               {"CONVEYOR_TOPIC_PREFIX", prefix}};
  auto r = conveyor::testing::run(
      {CONVEYOR_CLI_PATH, "events", "tail", "--topic", "jobs", "--from-beginning", "--count", "3", "--for", "60"}, env);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "2026-12-01 10:00:00 UTC io.conveyor.job.done job 7 processed -> done (tester)")) << r.output;
  EXPECT_TRUE(has(r, "job 9 processed -> done")) << r.output;
  EXPECT_TRUE(has(r, "skipping a malformed message at " + topic)) << r.output;

  r = conveyor::testing::run(
      {CONVEYOR_CLI_PATH, "--json", "events", "tail", "--from-beginning", "--job", "8", "--count", "1", "--for", "60"},
      env);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, R"("subject":"8")")) << r.output;
  EXPECT_FALSE(has(r, R"("subject":"7")")) << r.output;

  r = conveyor::testing::run({CONVEYOR_CLI_PATH, "events", "tail", "--topic", "job"}, env);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "--topic: expected jobs, parameters, control or all")) << r.output;

  // One topic per job event type, then parameters and control.
  r = conveyor::testing::run_cli(CONVEYOR_CLI_PATH, {"--json", "events", "topics"}, env);
  ASSERT_EQ(r.status, 0) << r.output;
  const auto topics = nlohmann::json::parse(r.output).get<std::vector<std::string>>();
  EXPECT_EQ(topics, conveyor::bus::all_topics(prefix));
  EXPECT_EQ(topics.size(), 12u + 4u + 2u) << r.output;
  EXPECT_NE(std::find(topics.begin(), topics.end(), topic), topics.end()) << r.output;
  EXPECT_NE(std::find(topics.begin(), topics.end(), prefix + ".job.cancel_requested"), topics.end()) << r.output;
  EXPECT_EQ(topics.back(), prefix + ".control");
}

}  // namespace
