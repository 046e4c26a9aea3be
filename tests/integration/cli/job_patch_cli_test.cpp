// Runbook 001's fix of a job's JSON content (issue 13, item 1): `conveyor job
// patch --set-param KEY=VALUE | --params-file FILE` as a real process, a dry
// run first, the new params checked against the type's schema, and every
// change of params or config recorded by the trigger conveyor.record_job_audit
// (migration 20261210000000_job_audit), whether the CLI, psql or a service made
// it. Every assertion reads PostgreSQL afterwards.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "conveyor/testing/testing.hpp"

namespace {

namespace ct = conveyor::testing;
namespace fs = std::filesystem;
using ct::RunResult;
using nlohmann::json;
using namespace std::chrono_literals;

bool has(const RunResult& r, const std::string& text) { return r.output.find(text) != std::string::npos; }

class JobPatchCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ct::unique_name("job-patch-cli");
    fs::create_directories(dir_);
    const auto r = conveyor({"job-type", "apply", CONVEYOR_JOB_TYPES_FILE, "--yes"});
    ASSERT_EQ(r.status, 0) << r.output;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  RunResult conveyor(const std::vector<std::string>& args) {
    return ct::run_cli(CONVEYOR_CLI_PATH, args,
                       {{"CONVEYOR_DATABASE_URL", db_.url()}, {"CONVEYOR_DATA_DIR", (dir_ / "data").string()}});
  }
  std::string insert_job(const std::string& params) {
    return db_.query_value("INSERT INTO conveyor.job (job_type, params) VALUES ('sleep', '" + params +
                           "') RETURNING id");
  }
  // Walks a job along the status machine by SQL (the status trigger checks each step).
  void walk(const std::string& id, const std::vector<std::string>& statuses) {
    for (const auto& s : statuses) db_.exec("UPDATE conveyor.job SET status = '" + s + "' WHERE id = " + id);
  }
  json params_of(const std::string& id) {
    return json::parse(db_.query_value("SELECT params::text FROM conveyor.job WHERE id = " + id));
  }
  std::string audit_count(const std::string& id) {
    return db_.query_value("SELECT count(*) FROM conveyor.job_audit WHERE job_id = " + id);
  }

  ct::TestDatabase db_;
  fs::path dir_;
};

TEST_F(JobPatchCli, JobPatchSetParamIsADryRunThenValidatesAndRecordsTheChange) {
  // Runbook 001: a job failed because of its params; fix them and run it again.
  const std::string id = insert_job(R"({"seconds": 5})");
  walk(id, {"configured", "ready", "queued", "started", "failed"});
  const std::vector<std::string> select{"job", "patch", "--status", "failed", "--ids", id};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = select;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };

  // The dry run shows the change and changes nothing.
  RunResult r = conveyor(with({"--set-param", "seconds=1", "--to", "error_checked,initialized"}));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "1 job(s) match")) << r.output;
  EXPECT_TRUE(has(r, "job " + id + ": params.seconds: 5 -> 1")) << r.output;
  EXPECT_TRUE(has(r, "dry run: nothing changed")) << r.output;
  EXPECT_EQ(params_of(id), json({{"seconds", 5}}));
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.job WHERE id = " + id), "failed");
  EXPECT_EQ(audit_count(id), "0");

  // Values the type's schema refuses: named as params.<key>, refused (a bad
  // value: exit 2) in the dry run and with --apply, and nothing changes (the
  // status path neither).
  for (const auto& bad :
       std::vector<std::pair<std::string, std::string>>{{"seconds=-1", "params.seconds: must be >= 0"},
                                                        {"seconds=soon", "params.seconds: expected a number"},
                                                        {"secs=1", "params.secs: unknown parameter"},
                                                        {"seconds=null", "params.seconds: required"}}) {
    for (const bool apply : {false, true}) {
      std::vector<std::string> extra{"--set-param", bad.first, "--to", "error_checked,initialized"};
      if (apply) extra.insert(extra.end(), {"--apply", "--yes"});
      r = conveyor(with(extra));
      EXPECT_EQ(r.status, 2) << bad.first << (apply ? " --apply" : "") << ": " << r.output;
      EXPECT_TRUE(has(r, bad.second)) << bad.first << ": " << r.output;
      EXPECT_TRUE(has(r, "nothing changed")) << r.output;
    }
  }
  EXPECT_EQ(params_of(id), json({{"seconds", 5}}));
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.job WHERE id = " + id), "failed");
  EXPECT_EQ(audit_count(id), "0");

  // Applied: new params and the fresh run in one transaction, recorded with
  // the CLI's actor.
  r = conveyor(with({"--set-param", "seconds=1", "--to", "error_checked,initialized", "--apply", "--yes"}));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "changed 1 job(s)")) << r.output;
  EXPECT_EQ(params_of(id), json({{"seconds", 1}}));
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.job WHERE id = " + id), "initialized");
  const auto rows =
      db_.query("SELECT field, old_value::text, new_value::text, actor FROM conveyor.job_audit WHERE job_id = " + id +
                " ORDER BY id");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0][0], "params");
  EXPECT_EQ(json::parse(rows[0][1]), json({{"seconds", 5}}));
  EXPECT_EQ(json::parse(rows[0][2]), json({{"seconds", 1}}));
  EXPECT_EQ(rows[0][3].rfind("conveyor-cli:", 0), 0u) << rows[0][3];
  // The same actor as the status changes it made with it.
  EXPECT_EQ(rows[0][3], db_.query_value("SELECT actor FROM conveyor.job_status_change WHERE job_id = " + id +
                                        " AND to_status = 'initialized' ORDER BY id DESC LIMIT 1"));

  // --params-file: a JSON object merged in (no --to: an initialized job has
  // not been configured yet).
  const fs::path file = dir_ / "params.json";
  std::ofstream(file) << R"({"seconds": 2.5})";
  r = conveyor(
      {"job", "patch", "--status", "initialized", "--ids", id, "--params-file", file.string(), "--apply", "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(params_of(id), json({{"seconds", 2.5}}));
  EXPECT_EQ(audit_count(id), "2");

  // Params already rendered into a command or with a worker: refused, saying why.
  const std::string ready = insert_job(R"({"seconds": 5})");
  walk(ready, {"configured", "ready"});
  r = conveyor({"job", "patch", "--status", "ready", "--ids", ready, "--set-param", "seconds=1"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "already rendered")) << r.output;
  const std::string started = insert_job(R"({"seconds": 5})");
  walk(started, {"configured", "ready", "queued", "started"});
  r = conveyor(
      {"job", "patch", "--status", "started", "--ids", started, "--set-param", "seconds=1", "--apply", "--yes"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "cancel it first")) << r.output;
  // A ready job may start afresh with new params in the same change.
  r = conveyor({"job", "patch", "--status", "ready", "--ids", ready, "--set-param", "seconds=1", "--to",
                "canceled,initialized", "--apply", "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(params_of(ready), json({{"seconds", 1}}));
  EXPECT_EQ(params_of(started), json({{"seconds", 5}}));
  EXPECT_EQ(audit_count(started), "0");
}

TEST_F(JobPatchCli, APsqlUpdateOfParamsIsAuditedAndInspectShowsIt) {
  const std::string id = insert_job(R"({"seconds": 0})");
  const std::string db_user = db_.query_value("SELECT session_user");
  // A person in psql: the database user is the actor.
  db_.exec("UPDATE conveyor.job SET params = '{\"seconds\": 7}' WHERE id = " + id);
  // A script that names itself.
  db_.exec(
      "BEGIN; SET LOCAL conveyor.actor = 'runbook-001:alice'; "
      "UPDATE conveyor.job SET params = '{\"seconds\": 8}' WHERE id = " +
      id + "; COMMIT");
  // Writing the same value again is no change.
  db_.exec("UPDATE conveyor.job SET params = '{\"seconds\": 8}' WHERE id = " + id);
  // config: its first write (NULL -> a value) is the configuration, not an
  // edit; a later change is recorded.
  db_.exec("UPDATE conveyor.job SET config = '{\"argv\": [\"sleep\", \"8\"]}' WHERE id = " + id);
  db_.exec("UPDATE conveyor.job SET config = '{\"argv\": [\"sleep\", \"9\"]}' WHERE id = " + id);
  // A long value: inspect cuts it, --json keeps it whole.
  const std::string long_note(300, 'n');
  db_.exec("UPDATE conveyor.job SET params = '{\"seconds\": 8, \"note\": \"" + long_note + "\"}' WHERE id = " + id);

  const auto rows = db_.query("SELECT field, actor FROM conveyor.job_audit WHERE job_id = " + id + " ORDER BY id");
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0], (std::vector<std::string>{"params", db_user}));
  EXPECT_EQ(rows[1], (std::vector<std::string>{"params", "runbook-001:alice"}));
  EXPECT_EQ(rows[2], (std::vector<std::string>{"config", db_user}));

  RunResult r = conveyor({"job", "inspect", id});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "changes:")) << r.output;
  // One line per change (when, who, what), then each changed key.
  EXPECT_TRUE(has(r, "  runbook-001:alice  params\n    params.seconds: 7 -> 8\n")) << r.output;
  EXPECT_TRUE(has(r, "  " + db_user + "  params\n    params.seconds: 0 -> 7\n")) << r.output;
  EXPECT_TRUE(has(r, "    config.argv: [\"sleep\",\"8\"] -> [\"sleep\",\"9\"]\n")) << r.output;
  EXPECT_TRUE(has(r, "    params.note: (absent) -> \"nnnn")) << r.output;
  EXPECT_TRUE(has(r, "n…\n")) << "a long value is cut: " << r.output;
  const std::string changes =
      r.output.substr(r.output.find("changes:"), r.output.find("attempts:") - r.output.find("changes:"));
  EXPECT_EQ(changes.find(long_note), std::string::npos) << changes;
  std::istringstream lines(changes);
  for (std::string l; std::getline(lines, l);) {
    // Columns, not bytes: "…" is one column in three bytes.
    const std::size_t columns = l.size() - 2 * static_cast<std::size_t>(std::count(l.begin(), l.end(), '\xE2'));
    EXPECT_LE(columns, 100u) << l;
  }

  r = conveyor({"--json", "job", "inspect", id});
  ASSERT_EQ(r.status, 0) << r.output;
  const json j = json::parse(r.output);
  ASSERT_EQ(j.at("audit").size(), 4u) << r.output;
  EXPECT_EQ(j["audit"][3]["new_value"]["note"], long_note);
  EXPECT_EQ(j["audit"][0]["field"], "params");
  EXPECT_EQ(j["audit"][0]["actor"], db_user);
  EXPECT_EQ(j["audit"][0]["old_value"], json({{"seconds", 0}}));
  EXPECT_EQ(j["audit"][0]["new_value"], json({{"seconds", 7}}));
  EXPECT_EQ(j["audit"][1]["actor"], "runbook-001:alice");
  EXPECT_EQ(j["audit"][2]["field"], "config");
  EXPECT_TRUE(j["audit"][0]["at"].is_string());

  // Retention deletes a job with its audit rows.
  db_.exec("DELETE FROM conveyor.job WHERE id = " + id);
  EXPECT_EQ(audit_count(id), "0");
}

// conveyor-job-configuration, logged in as a member of conveyor_configuration
// (no INSERT on job_audit), configures a job: its first write of config is no
// audit row, and its rewrite at ready of the same config neither. A later
// change of config by that role is recorded, through the SECURITY DEFINER
// trigger.
TEST_F(JobPatchCli, TheConfigurationServicesFirstConfigWriteIsNoEditButItsRolesLaterChangeIsRecorded) {
  const std::string login = ct::unique_name("audit_configuration");
  const std::string admin = ct::TestEnv::get().admin_url();
  auto as_admin = [&](const std::string& sql) {
    const auto r = ct::psql(admin, sql);
    ASSERT_EQ(r.status, 0) << sql << ": " << r.output;
  };
  as_admin("CREATE ROLE \"" + login + "\" LOGIN IN ROLE conveyor_configuration");
  struct DropRole {
    std::string admin, login;
    ~DropRole() { ct::psql(admin, "DROP ROLE IF EXISTS \"" + login + "\""); }
  } drop{admin, login};
  // postgresql://user@host:port/db with the login role as user.
  const std::string url = db_.url();
  const auto scheme = url.find("://");
  const auto at = url.find('@', scheme + 3);
  ASSERT_NE(at, std::string::npos) << url;
  const std::string login_url = url.substr(0, scheme + 3) + login + url.substr(at);

  const std::string id = insert_job(R"({"seconds": 0})");
  ct::Broker broker;
  ct::ChildProcess::Options o;
  o.argv = {CONVEYOR_CONFIGURATION_PATH};
  o.env = {{"CONVEYOR_DATABASE_URL", login_url},
           {"CONVEYOR_KAFKA_BROKERS", broker.bootstrap()},
           {"CONVEYOR_TOPIC_PREFIX", ct::unique_name("t")},
           {"CONVEYOR_HTTP_PORT", "0"},
           {"CONVEYOR_DATA_DIR", (dir_ / "data").string()},
           {"CONVEYOR_INSTANCE_ID", ct::unique_name("configuration")},
           {"CONVEYOR_POLL_INTERVAL_MS", "100ms"}};
  o.stdout_file = dir_ / "configuration.log";
  ct::ChildProcess service(o);
  const bool readied = ct::wait_until(
      [&] { return db_.query_value("SELECT status FROM conveyor.job WHERE id = " + id) == "ready"; }, 30s);
  EXPECT_EQ(service.stop(10s), 0);
  ASSERT_TRUE(readied) << "job " << id << " is " << db_.query_value("SELECT status FROM conveyor.job WHERE id = " + id)
                       << "\n"
                       << ct::read_text(dir_ / "configuration.log");
  EXPECT_NE(db_.query_value("SELECT config IS NOT NULL FROM conveyor.job WHERE id = " + id), "f");
  EXPECT_EQ(audit_count(id), "0");

  const auto r = ct::psql(login_url, "UPDATE conveyor.job SET config = config || '{\"note\": 1}' WHERE id = " + id);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(db_.query_value("SELECT field || ' ' || actor FROM conveyor.job_audit WHERE job_id = " + id),
            "config " + login);
  // Nobody writes the audit but the trigger.
  const auto forged =
      ct::psql(login_url, "INSERT INTO conveyor.job_audit (job_id, field) VALUES (" + id + ", 'params')");
  EXPECT_NE(forged.status, 0) << forged.output;
  EXPECT_TRUE(forged.output.find("permission denied") != std::string::npos) << forged.output;
}

}  // namespace
