// Migrations against a real PostgreSQL: migrate, rollback, migrate again,
// grouping, locking and atomic failure.
#include <gtest/gtest.h>

#include <ctime>
#include <filesystem>
#include <fstream>

#include "conveyor/db/migrations.hpp"
#include "conveyor/testing/testing.hpp"

namespace conveyor::db {
namespace {

using conveyor::testing::TestDatabase;

bool table_exists(const TestDatabase& db, const std::string& name) {
  return db.query_value("SELECT to_regclass('" + name + "') IS NOT NULL") == "t";
}

// A copy of the repository's migrations in a scratch folder, to add files to.
class ScratchMigrations {
 public:
  ScratchMigrations() : dir_(std::filesystem::temp_directory_path() / conveyor::testing::unique_name("migr")) {
    std::filesystem::create_directories(dir_);
    for (const auto& e : std::filesystem::directory_iterator(conveyor::testing::migrations_dir())) {
      std::filesystem::copy_file(e.path(), dir_ / e.path().filename());
    }
  }
  ~ScratchMigrations() { std::filesystem::remove_all(dir_); }
  void write(const std::string& file, const std::string& sql) const { std::ofstream(dir_ / file) << sql; }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
};

TEST(Migrations, MigrateRollbackMigrateAgainOnAFreshDatabase) {
  TestDatabase db(false);
  Migrator m(db.url(), conveyor::testing::migrations_dir());
  auto files = m.files();
  ASSERT_FALSE(files.empty());

  auto before = m.status();
  EXPECT_FALSE(before.initialized);
  EXPECT_FALSE(before.up_to_date());

  m.init();
  m.init();  // idempotent
  auto st = m.status();
  EXPECT_TRUE(st.initialized);
  EXPECT_EQ(st.pending, files.size());
  EXPECT_FALSE(st.group_id.has_value());
  EXPECT_EQ(m.pending().size(), files.size());

  auto first = m.migrate();
  EXPECT_EQ(first.group_id, 1);
  EXPECT_EQ(first.names.size(), files.size());
  EXPECT_TRUE(m.status().up_to_date());
  EXPECT_TRUE(table_exists(db, "conveyor.job"));
  EXPECT_TRUE(table_exists(db, "conveyor.outbox"));
  EXPECT_TRUE(m.pending().empty());
  auto applied = m.applied();
  ASSERT_EQ(applied.size(), files.size());
  EXPECT_EQ(applied.front().group_id, 1);
  EXPECT_FALSE(applied.front().migrated_at.empty());

  EXPECT_TRUE(m.migrate().names.empty()) << "nothing pending: migrate is a no-op";

  auto back = m.rollback();
  EXPECT_EQ(back.group_id, 1);
  EXPECT_EQ(back.names.size(), files.size());
  EXPECT_FALSE(table_exists(db, "conveyor.job"));
  EXPECT_FALSE(table_exists(db, "conveyor.outbox"));
  EXPECT_TRUE(table_exists(db, "conveyor.schema_migrations")) << "tracking tables stay";
  EXPECT_EQ(m.status().pending, files.size());
  EXPECT_TRUE(m.rollback().names.empty());

  auto again = m.migrate();
  EXPECT_EQ(again.group_id, 1);
  EXPECT_TRUE(m.status().up_to_date());
  EXPECT_TRUE(table_exists(db, "conveyor.job"));
}

TEST(Migrations, EachMigrateIsOneGroupAndRollbackUndoesOnlyTheLast) {
  TestDatabase db(false);
  ScratchMigrations scratch;
  Migrator m(db.url(), scratch.dir());
  m.init();
  ASSERT_EQ(m.migrate().group_id, 1);

  scratch.write("29990101000000_add_a.up.sql", "CREATE TABLE conveyor.test_a (id int);");
  scratch.write("29990101000000_add_a.down.sql", "DROP TABLE conveyor.test_a;");
  scratch.write("29990101000001_add_b.up.sql", "CREATE TABLE conveyor.test_b (id int);");
  scratch.write("29990101000001_add_b.down.sql", "DROP TABLE conveyor.test_b;");
  EXPECT_EQ(m.status().pending, 2u);
  auto second = m.migrate();
  EXPECT_EQ(second.group_id, 2);
  EXPECT_EQ(second.names, (std::vector<std::string>{"29990101000000_add_a", "29990101000001_add_b"}));
  auto applied = m.applied();
  EXPECT_EQ(applied[0].group_id, 2);
  EXPECT_EQ(applied[1].group_id, 2);
  EXPECT_EQ(applied[2].group_id, 1);
  EXPECT_EQ(m.status().last_applied, "29990101000001_add_b");

  auto back = m.rollback();
  EXPECT_EQ(back.group_id, 2);
  EXPECT_EQ(back.names, (std::vector<std::string>{"29990101000001_add_b", "29990101000000_add_a"}));
  EXPECT_FALSE(table_exists(db, "conveyor.test_a"));
  EXPECT_TRUE(table_exists(db, "conveyor.job")) << "group 1 untouched";
  EXPECT_EQ(*m.status().group_id, 1);
}

TEST(Migrations, AFailingMigrationAppliesNothingOfItsGroupAndNamesTheFile) {
  TestDatabase db(false);
  ScratchMigrations scratch;
  Migrator m(db.url(), scratch.dir());
  m.init();
  m.migrate();
  scratch.write("29990101000000_good.up.sql", "CREATE TABLE conveyor.test_good (id int);");
  scratch.write("29990101000000_good.down.sql", "DROP TABLE conveyor.test_good;");
  scratch.write("29990101000001_bad.up.sql", "CREATE TABLE conveyor.test_bad (id nosuchtype);");
  scratch.write("29990101000001_bad.down.sql", "DROP TABLE conveyor.test_bad;");
  try {
    m.migrate();
    FAIL() << "a broken migration must fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("29990101000001_bad.up.sql"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("nosuchtype"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(table_exists(db, "conveyor.test_good")) << "the group is one transaction";
  EXPECT_EQ(m.status().pending, 2u);
}

TEST(Migrations, LockBlocksMigrateAndRollbackUntilUnlocked) {
  TestDatabase db(false);
  Migrator m(db.url(), conveyor::testing::migrations_dir());
  m.init();
  m.lock("tester@host");
  EXPECT_TRUE(m.status().locked);
  try {
    m.migrate();
    FAIL() << "migrate must refuse while locked";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), errc::locked);
    EXPECT_NE(std::string(e.what()).find("locked by tester@host"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("conveyor db unlock"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(table_exists(db, "conveyor.job"));
  EXPECT_THROW(m.rollback(), Error);
  m.unlock();
  EXPECT_FALSE(m.status().locked);
  EXPECT_EQ(m.migrate().group_id, 1);
  m.lock("tester@host");
  EXPECT_THROW(m.rollback(), Error);
  EXPECT_TRUE(table_exists(db, "conveyor.job"));
}

TEST(Migrations, MigrateBeforeInitSaysToRunInit) {
  TestDatabase db(false);
  Migrator m(db.url(), conveyor::testing::migrations_dir());
  try {
    m.migrate();
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("conveyor db init"), std::string::npos) << e.what();
  }
}

TEST(Migrations, AMigrationWithoutItsDownFileIsRefusedByName) {
  ScratchMigrations scratch;
  scratch.write("29990101000000_lonely.up.sql", "SELECT 1;");
  Migrator m("postgresql://unused", scratch.dir());
  try {
    m.files();
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), errc::bad_input);
    EXPECT_NE(std::string(e.what()).find("29990101000000_lonely"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("has no down file"), std::string::npos) << e.what();
  }
}

TEST(Migrations, CreateWritesAnUpDownPair) {
  auto dir = std::filesystem::temp_directory_path() / conveyor::testing::unique_name("create");
  auto up = Migrator::create(dir, "Add-Queue state");
  EXPECT_TRUE(std::filesystem::exists(up));
  std::string name = up.filename().string();
  EXPECT_TRUE(name.ends_with("_add_queue_state.up.sql")) << name;
  auto down = dir / (name.substr(0, name.size() - 7) + ".down.sql");
  EXPECT_TRUE(std::filesystem::exists(down));
  Migrator m("postgresql://unused", dir);
  EXPECT_EQ(m.files().size(), 1u);
  EXPECT_THROW(Migrator::create(dir, "bad;name"), Error);
  std::filesystem::remove_all(dir);
}

// A folder may hold migrations numbered ahead of the clock (this project's
// are): a new one is numbered after the newest, so it sorts and runs last.
// Before, it took the clock's number and sorted before them: applied out
// of order, after migrations it was written after.
TEST(Migrations, CreateNumbersANewMigrationAfterTheNewestInItsFolder) {
  auto dir = std::filesystem::temp_directory_path() / conveyor::testing::unique_name("create-next");
  std::filesystem::create_directories(dir);
  const std::time_t now = 1'700'000'000;  // 2023-11-14T22:13:20Z
  EXPECT_EQ(next_migration_number(dir, now), "20231114221320") << "an empty folder: the clock";
  std::ofstream(dir / "20231114221319_older.up.sql") << "";
  std::ofstream(dir / "README.md") << "not a migration";
  EXPECT_EQ(next_migration_number(dir, now), "20231114221320") << "older migrations only: the clock";
  std::ofstream(dir / "20231114221320_same.up.sql") << "";
  EXPECT_EQ(next_migration_number(dir, now), "20231114221321") << "one at the clock's second";
  std::ofstream(dir / "20991231235959_ahead.down.sql") << "";
  EXPECT_EQ(next_migration_number(dir, now), "21000101000000") << "one ahead of the clock, at a year's end";

  // Through create(), in this project's own folder's situation.
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "20991231235959_ahead.up.sql") << "";
  std::ofstream(dir / "20991231235959_ahead.down.sql") << "";
  const auto up = Migrator::create(dir, "next one");
  EXPECT_EQ(up.filename().string(), "21000101000000_next_one.up.sql");
  Migrator m("postgresql://unused", dir);
  const auto files = m.files();
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files.back().comment, "next_one") << "the new one sorts last";
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace conveyor::db
