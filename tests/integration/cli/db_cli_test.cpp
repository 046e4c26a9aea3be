// The `conveyor db` commands of runbook 002, run as a real process.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "conveyor/testing/testing.hpp"

namespace {

using conveyor::testing::RunResult;
using conveyor::testing::TestDatabase;

class DbCli : public ::testing::Test {
 protected:
  RunResult conveyor(const std::vector<std::string>& args, std::map<std::string, std::string> env = {}) {
    std::vector<std::string> argv{CONVEYOR_CLI_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    env.emplace("CONVEYOR_DATABASE_URL", db_.url());
    env.emplace("CONVEYOR_MIGRATIONS_DIR", conveyor::testing::migrations_dir().string());
    return conveyor::testing::run(argv, env);
  }
  static bool has(const RunResult& r, const std::string& text) { return r.output.find(text) != std::string::npos; }
  TestDatabase db_{false};
};

// A command run against a database that was never migrated (or is older
// than the CLI) says what to do, not only PostgreSQL's "relation ... does
// not exist".
TEST_F(DbCli, ACommandOnAnUnmigratedDatabaseSaysToMigrate) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"job-type", "list"}, {"job", "ls"}, {"worker", "list"}}) {
    const auto r = conveyor(args);
    EXPECT_EQ(r.status, 1) << r.output;
    EXPECT_TRUE(has(r, "does not exist")) << r.output;
    EXPECT_TRUE(has(r, "run `conveyor db init` (once) and `conveyor db migrate`")) << args[0] << ":\n" << r.output;
  }
  ASSERT_EQ(conveyor({"db", "init"}).status, 0);
  const auto r = conveyor({"job", "ls"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "run `conveyor db init` (once) and `conveyor db migrate`")) << r.output;
}

TEST_F(DbCli, RunbookSequenceInitStatusMigrateAppliedRollback) {
  auto r = conveyor({"db", "status"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "not initialized")) << r.output;
  r = conveyor({"db", "rollback", "--yes"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "the database has no migration tables: run `conveyor db init` first")) << r.output;

  r = conveyor({"db", "init"});
  ASSERT_EQ(r.status, 0) << r.output;

  r = conveyor({"db", "status"});
  EXPECT_TRUE(has(r, "pending migration(s): ")) << r.output;
  EXPECT_TRUE(has(r, "database is out-of-date")) << r.output;

  r = conveyor({"db", "pending"});
  EXPECT_TRUE(has(r, "initial_schema")) << r.output;
  EXPECT_TRUE(has(r, "GROUP-ID")) << r.output;

  r = conveyor({"db", "migrate"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "database migrated to group #1 (")) << r.output;

  r = conveyor({"db", "status"});
  EXPECT_TRUE(has(r, "pending migration(s): 0")) << r.output;
  EXPECT_TRUE(has(r, "database version: group #1 (")) << r.output;
  EXPECT_TRUE(has(r, "database is up-to-date")) << r.output;

  r = conveyor({"db", "applied"});
  EXPECT_TRUE(has(r, "MIGRATED-AT")) << r.output;
  EXPECT_TRUE(has(r, "initial_schema")) << r.output;

  r = conveyor({"--json", "db", "status"});
  EXPECT_TRUE(has(r, "\"up_to_date\":true")) << r.output;

  // Undoing the first group drops every table: named, and asked for (no
  // terminal here: refused without --yes), refused while a worker
  // heartbeats, unless --force (a new user's trial, stop 46).
  r = conveyor({"db", "rollback"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "db rollback undoes group #1: ")) << r.output;
  EXPECT_TRUE(has(r, "it is the first group: its down files drop every Conveyor table")) << r.output;
  EXPECT_TRUE(has(r, "not rolled back: nothing changed")) << r.output;
  EXPECT_TRUE(has(conveyor({"db", "status"}), "database is up-to-date"));
  db_.exec("INSERT INTO conveyor.worker (name, status, last_heartbeat) VALUES ('w-live', 'active', now())");
  r = conveyor({"db", "rollback", "--yes"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "1 process(es) still heartbeat (worker w-live)")) << r.output;
  EXPECT_TRUE(has(conveyor({"db", "status"}), "database is up-to-date"));

  r = conveyor({"db", "rollback", "--yes", "--force"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "rolled back group #1")) << r.output;
  EXPECT_TRUE(has(conveyor({"db", "status"}), "database is out-of-date"));
  r = conveyor({"db", "rollback", "--yes"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "nothing to roll back")) << r.output;
}

// A database a newer release migrated (a downgrade's first step): its
// migrations that this folder does not have are named, and the database is
// not called up-to-date.
TEST_F(DbCli, StatusNamesAppliedMigrationsTheFolderDoesNotHave) {
  namespace fs = std::filesystem;
  const fs::path newer = fs::temp_directory_path() / conveyor::testing::unique_name("newer-migrations");
  fs::create_directories(newer);
  for (const auto& e : fs::directory_iterator(conveyor::testing::migrations_dir())) {
    fs::copy_file(e.path(), newer / e.path().filename());
  }
  std::ofstream(newer / "29991231000000_from_a_newer_release.up.sql") << "SELECT 1;\n";
  std::ofstream(newer / "29991231000000_from_a_newer_release.down.sql") << "SELECT 1;\n";
  ASSERT_EQ(conveyor({"db", "init"}).status, 0);
  ASSERT_EQ(conveyor({"db", "migrate"}, {{"CONVEYOR_MIGRATIONS_DIR", newer.string()}}).status, 0);

  auto r = conveyor({"db", "status"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "applied migration(s) not in " + conveyor::testing::migrations_dir().string() +
                         ": 1 (29991231000000_from_a_newer_release)"))
      << r.output;
  EXPECT_TRUE(has(r, "database is ahead of this release")) << r.output;
  EXPECT_FALSE(has(r, "up-to-date")) << r.output;
  r = conveyor({"--json", "db", "status"});
  EXPECT_TRUE(has(r, R"("unknown":["29991231000000_from_a_newer_release"])")) << r.output;
  EXPECT_TRUE(has(conveyor({"db", "status"}, {{"CONVEYOR_MIGRATIONS_DIR", newer.string()}}), "database is up-to-date"));
  fs::remove_all(newer);
}

TEST_F(DbCli, LockMakesMigrateAndRollbackRefuseWithNonZeroExit) {
  ASSERT_EQ(conveyor({"db", "init"}).status, 0);
  ASSERT_EQ(conveyor({"db", "lock"}).status, 0);
  auto r = conveyor({"db", "migrate"});
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(has(r, "migrations are locked")) << r.output;
  r = conveyor({"db", "rollback"});
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(has(r, "migrations are locked")) << r.output;
  EXPECT_TRUE(has(conveyor({"db", "status"}), "locked"));
  ASSERT_EQ(conveyor({"db", "unlock"}).status, 0);
  r = conveyor({"db", "migrate"});
  EXPECT_EQ(r.status, 0) << r.output;
}

TEST_F(DbCli, CreateWritesAPairInTheMigrationsDir) {
  auto dir = std::filesystem::temp_directory_path() / conveyor::testing::unique_name("cli-create");
  auto r = conveyor({"db", "create", "add-gardener-project"}, {{"CONVEYOR_MIGRATIONS_DIR", dir.string()}});
  ASSERT_EQ(r.status, 0) << r.output;
  int ups = 0, downs = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::string n = e.path().filename().string();
    ups += n.ends_with("_add_gardener_project.up.sql");
    downs += n.ends_with("_add_gardener_project.down.sql");
  }
  EXPECT_EQ(ups, 1);
  EXPECT_EQ(downs, 1);
  // The same name again: refused, naming the one there (a new user's trial, stop 46).
  r = conveyor({"db", "create", "add-gardener-project"}, {{"CONVEYOR_MIGRATIONS_DIR", dir.string()}});
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "a migration named add_gardener_project exists: ")) << r.output;
  int files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++files;
  EXPECT_EQ(files, 2);
  std::filesystem::remove_all(dir);
}

TEST_F(DbCli, ClearErrorsForMissingDatabaseUrlAndBadConfig) {
  auto r = conveyor({"db", "status"}, {{"CONVEYOR_DATABASE_URL", ""}});
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(has(r, "CONVEYOR_DATABASE_URL")) << r.output;

  r = conveyor({"db", "status"}, {{"CONVEYOR_LOG_FORMAT", "xml"}});
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(has(r, "CONVEYOR_LOG_FORMAT")) << r.output;

  r = conveyor({"db", "frobnicate"});
  EXPECT_EQ(r.status, 2) << r.output;
}

TEST_F(DbCli, ConfigShowMasksThePassword) {
  auto r =
      conveyor({"config", "show"}, {{"CONVEYOR_DATABASE_URL", "postgresql://app:s3cret-pw@db.example:5432/conveyor"}});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_FALSE(has(r, "s3cret-pw")) << r.output;
  EXPECT_TRUE(has(r, "CONVEYOR_DATABASE_URL")) << r.output;
  EXPECT_TRUE(has(r, "environment")) << r.output;
}

}  // namespace
