// The fixture library itself: databases, process groups, brokers.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "conveyor/testing/testing.hpp"

namespace ct = conveyor::testing;
using namespace std::chrono_literals;

namespace {

std::set<int> group_members(int pgid) { return ct::process_group_members(pgid); }

ct::ChildProcess::Options command(std::vector<std::string> argv) {
  ct::ChildProcess::Options o;
  o.argv = std::move(argv);
  return o;
}

std::string database_count(const std::string& name) {
  auto r = ct::psql(ct::TestEnv::get().admin_url(), "SELECT count(*) FROM pg_database WHERE datname = '" + name + "'");
  EXPECT_EQ(r.status, 0) << r.output;
  while (!r.output.empty() && r.output.back() == '\n') r.output.pop_back();
  return r.output;
}

}  // namespace

TEST(TestDatabase, IsUsableAndDroppedOnDestruction) {
  std::string name;
  {
    ct::TestDatabase db(/*migrate=*/false);
    name = db.name();
    EXPECT_EQ(database_count(name), "1");
    db.exec("CREATE TABLE t (id int, label text); INSERT INTO t VALUES (1, 'a'), (2, NULL)");
    EXPECT_EQ(db.query_value("SELECT count(*) FROM t"), "2");
    auto rows = db.query("SELECT id, label FROM t ORDER BY id");
    ASSERT_EQ(rows.size(), 2u);
    EXPECT_EQ(rows[0], (std::vector<std::string>{"1", "a"}));
    EXPECT_EQ(rows[1], (std::vector<std::string>{"2", ""}));
    EXPECT_EQ(db.query_value("SELECT 1 WHERE false"), "");
    EXPECT_ANY_THROW(db.exec("SELECT * FROM no_such_table"));
  }
  EXPECT_EQ(database_count(name), "0");
}

TEST(TestDatabase, MigratedDatabaseHasTheSchema) {
  ct::TestDatabase db;
  EXPECT_EQ(db.query_value("SELECT count(*) > 0 FROM pg_namespace WHERE nspname = 'conveyor'"), "t");
}

TEST(TestDatabase, TwoDatabasesAreDistinct) {
  ct::TestDatabase a(false);
  ct::TestDatabase b(false);
  EXPECT_NE(a.name(), b.name());
  a.exec("CREATE TABLE only_in_a (x int)");
  EXPECT_EQ(b.query_value("SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'"), "0");
}

TEST(ChildProcess, StopKillsTheWholeProcessGroup) {
  ct::ChildProcess p(command({"sh", "-c", "sleep 100 & sleep 100"}));
  const int pgid = p.pid();
  // sh plus its two sleeps (sh may exec the last one itself: at least two).
  ASSERT_TRUE(ct::wait_until([&] { return group_members(pgid).size() >= 2; }, 10s));
  EXPECT_TRUE(p.running());
  int status = p.stop();
  EXPECT_EQ(status, 128 + SIGTERM);
  EXPECT_FALSE(p.running());
  EXPECT_TRUE(ct::wait_until([&] { return group_members(pgid).empty(); }, 5s))
      << group_members(pgid).size() << " processes left in group " << pgid;
}

TEST(ChildProcess, DestructorStopsTheGroup) {
  int pgid = 0;
  {
    ct::ChildProcess p(command({"sh", "-c", "sleep 100 & sleep 100"}));
    pgid = p.pid();
    ASSERT_TRUE(ct::wait_until([&] { return group_members(pgid).size() >= 2; }, 10s));
  }
  EXPECT_TRUE(group_members(pgid).empty());
}

TEST(ChildProcess, ReportsExitStatusEnvAndOutputFile) {
  auto dir = std::filesystem::temp_directory_path() / ct::unique_name("harness");
  std::filesystem::create_directories(dir);
  auto o = command({"sh", "-c", "echo \"$HARNESS_VALUE\"; echo oops >&2; exit 7"});
  o.env = {{"HARNESS_VALUE", "hello"}};
  o.stdout_file = dir / "out.log";
  ct::ChildProcess p(o);
  EXPECT_EQ(p.wait(30s), 7);
  std::ifstream in(dir / "out.log");
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), "hello\noops\n");
  std::filesystem::remove_all(dir);
}

TEST(ChildProcess, MissingExecutableThrowsNamingIt) {
  try {
    ct::ChildProcess p(command({"/nonexistent/conveyor-nothing"}));
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/conveyor-nothing"), std::string::npos) << e.what();
  }
}

TEST(Run, CapturesOutputAndStatus) {
  auto r = ct::run({"sh", "-c", "echo out; echo err >&2; exit 3"});
  EXPECT_EQ(r.status, 3);
  EXPECT_NE(r.output.find("out"), std::string::npos);
  EXPECT_NE(r.output.find("err"), std::string::npos);
  EXPECT_THROW(ct::run({"sleep", "10"}, {}, 200ms), std::runtime_error);
}

TEST(Helpers, FreePortAndUniqueName) {
  int port = ct::free_port();
  EXPECT_GT(port, 0);
  EXPECT_LE(port, 65535);
  EXPECT_NE(ct::unique_name("x"), ct::unique_name("x"));
}

TEST(Broker, BootstrapAnswersMetadata) {
  ct::Broker broker;
  ASSERT_FALSE(broker.bootstrap().empty());
  EXPECT_GT(broker.pid(), 0);
  auto r = ct::run({"kcat", "-L", "-b", broker.bootstrap(), "-m", "10"}, {}, 30s);
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("broker"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("conveyor.parameters"), std::string::npos) << r.output;
}

TEST(Broker, RestartKeepsTheAddress) {
  ct::Broker broker;
  const std::string before = broker.bootstrap();
  const int old_pid = broker.pid();
  broker.restart();
  EXPECT_EQ(broker.bootstrap(), before);
  EXPECT_NE(broker.pid(), old_pid);
  auto r = ct::run({"kcat", "-L", "-b", broker.bootstrap(), "-m", "10"}, {}, 30s);
  EXPECT_EQ(r.status, 0) << r.output;
}
