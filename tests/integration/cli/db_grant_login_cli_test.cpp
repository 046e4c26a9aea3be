// `conveyor db grant-login`: a service's own login role, member of its
// NOLOGIN role (issue 12), run as a real process against its own database.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <thread>

#include "conveyor/db/db.hpp"
#include "conveyor/error/error.hpp"
#include "conveyor/testing/testing.hpp"

namespace {

namespace fs = std::filesystem;
using conveyor::testing::RunResult;
using conveyor::testing::TestDatabase;

constexpr conveyor::db::Statement kWhoAmI{"grant_login_test_whoami",
                                          "SELECT current_user, pg_has_role(current_user, 'conveyor_reader', 'USAGE')"};
constexpr conveyor::db::Statement kReadJobs{"grant_login_test_read", "SELECT count(*) FROM conveyor.job"};
constexpr conveyor::db::Statement kDeleteJobs{"grant_login_test_delete", "DELETE FROM conveyor.job"};

// Roles are cluster-wide: every login a test makes has a name of its own
// and is dropped afterwards.
std::string login_name(const std::string& prefix) {
  std::string name = conveyor::testing::unique_name(prefix);
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

// The URL of `db_url` with the user (and password) replaced.
std::string url_as(const std::string& db_url, const std::string& user, const std::string& password = "") {
  const auto at = db_url.find('@');
  const auto scheme = db_url.find("://") + 3;
  const std::string rest = at == std::string::npos ? db_url.substr(scheme) : db_url.substr(at + 1);
  return db_url.substr(0, scheme) + user + (password.empty() ? "" : ":" + password) + "@" + rest;
}

// What `url` connects as and whether that role uses conveyor_reader's
// privileges; throws when the connection is refused.
std::pair<std::string, bool> who_am_i(const std::string& url) {
  conveyor::db::Session session(url, "grant-login-test");
  return session.transact([](conveyor::db::Tx& tx) {
    const auto r = tx.exec(kWhoAmI);
    return std::make_pair(r[0][0].as_string(), r[0][1].as_bool());
  });
}

class GrantLogin : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / login_name("grant_login_test");
    fs::create_directories(dir_);
    // The service-roles migration (20261204000100) creates the eight roles;
    // on a tree without it, make the one this test uses.
    db_.exec(
        "DO $$ BEGIN CREATE ROLE conveyor_reader NOLOGIN; "
        "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$");
  }
  void TearDown() override {
    for (const auto& login : logins_) db_.exec("DROP ROLE IF EXISTS " + login);
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  RunResult conveyor(const std::vector<std::string>& args, const std::string& url = "") {
    return conveyor::testing::run_cli(CONVEYOR_CLI_PATH, args,
                                      {{"CONVEYOR_DATABASE_URL", url.empty() ? db_.url() : url}});
  }
  std::string password_file(const std::string& name, const std::string& password) {
    const fs::path path = dir_ / name;
    std::ofstream(path) << password << "\n";
    return path.string();
  }
  std::string new_login() { return logins_.emplace_back(login_name("cv_login")); }
  bool member(const std::string& login, const std::string& role) {
    return db_.query_value("SELECT pg_has_role('" + login + "', '" + role + "', 'MEMBER')") == "t";
  }

  TestDatabase db_{true};
  fs::path dir_;
  std::vector<std::string> logins_;
};

TEST_F(GrantLogin, CreatesALoginInItsRoleThatConnectsAndReadsButCannotWrite) {
  const std::string login = new_login();
  const std::string password = "Reader-pw_0123456789";
  const auto r = conveyor(
      {"db", "grant-login", login, "--role", "conveyor_reader", "--password-file", password_file("reader", password)});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("login " + login + " created: member of conveyor_reader"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find(password), std::string::npos) << "the password was printed";

  EXPECT_TRUE(member(login, "conveyor_reader"));
  EXPECT_EQ(db_.query_value("SELECT rolcanlogin AND rolinherit AND NOT rolsuper AND NOT rolcreaterole "
                            "FROM pg_roles WHERE rolname = '" +
                            login + "'"),
            "t");
  // Stored as a SCRAM verifier: the server never saw the password.
  const std::string stored = db_.query_value("SELECT rolpassword FROM pg_authid WHERE rolname = '" + login + "'");
  EXPECT_EQ(stored.rfind("SCRAM-SHA-256$4096:", 0), 0u) << stored;
  EXPECT_EQ(stored.find(password), std::string::npos);

  const auto [user, uses_reader] = who_am_i(url_as(db_.url(), login));
  EXPECT_EQ(user, login);
  EXPECT_TRUE(uses_reader);
  // What conveyor_reader may do, and one thing it may not.
  conveyor::db::Session session(url_as(db_.url(), login), "grant-login-test");
  EXPECT_NO_THROW(session.transact([](conveyor::db::Tx& tx) { tx.exec(kReadJobs); }));
  try {
    session.transact([](conveyor::db::Tx& tx) { tx.exec(kDeleteJobs); });
    ADD_FAILURE() << "conveyor_reader deleted jobs";
  } catch (const conveyor::Error& e) {
    EXPECT_NE(std::string(e.what()).find("permission denied for table job"), std::string::npos) << e.what();
  }
}

TEST_F(GrantLogin, IsIdempotentMovesALoginToOneRoleAndTakesNoPassword) {
  ASSERT_EQ(db_.query_value("SELECT count(*) FROM pg_roles WHERE rolname = 'conveyor_worker'"), "1")
      << "the service-roles migration did not run";
  const std::string login = new_login();
  const std::string file = password_file("pw", "first-password");
  ASSERT_EQ(conveyor({"db", "grant-login", login, "--role", "conveyor_reader", "--password-file", file}).status, 0);
  const std::string first = db_.query_value("SELECT rolpassword FROM pg_authid WHERE rolname = '" + login + "'");

  auto r = conveyor({"db", "grant-login", login, "--role", "conveyor_reader", "--password-file",
                     password_file("pw2", "second-password")});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("login " + login + " updated"), std::string::npos) << r.output;
  EXPECT_NE(db_.query_value("SELECT rolpassword FROM pg_authid WHERE rolname = '" + login + "'"), first);

  r = conveyor({"db", "grant-login", login, "--role", "conveyor_worker", "--no-password"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(member(login, "conveyor_worker"));
  EXPECT_FALSE(member(login, "conveyor_reader"));  // one login, one service
  EXPECT_EQ(db_.query_value("SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = '" + login + "'"), "t");
}

TEST_F(GrantLogin, ConcurrentRunsForOneNewLoginBothSucceed) {
  const std::string login = new_login();
  const std::string file = password_file("pw", "racing-password");
  RunResult a, b;
  std::thread other([&] {
    a = conveyor({"db", "grant-login", login, "--role", "conveyor_reader", "--password-file", file});
  });
  b = conveyor({"db", "grant-login", login, "--role", "conveyor_reader", "--password-file", file});
  other.join();
  EXPECT_EQ(a.status, 0) << a.output;
  EXPECT_EQ(b.status, 0) << b.output;
  EXPECT_TRUE(member(login, "conveyor_reader"));
}

TEST_F(GrantLogin, RefusesOtherRolesBadNamesAndPowerfulRoles) {
  const std::string file = password_file("pw", "some-password");
  const auto refused = [&](const std::vector<std::string>& args, const std::string& says) {
    std::vector<std::string> argv{"db", "grant-login"};
    argv.insert(argv.end(), args.begin(), args.end());
    const auto r = conveyor(argv);
    EXPECT_NE(r.status, 0) << r.output;
    EXPECT_NE(r.output.find(says), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("some-password"), std::string::npos);
  };
  const std::string login = new_login();
  refused({login, "--role", "postgres", "--password-file", file}, "expected one of conveyor_creation");
  refused({login, "--role", "pg_read_all_data", "--password-file", file}, "expected one of");
  refused({"Robert\"; DROP ROLE postgres; --", "--role", "conveyor_reader", "--password-file", file},
          "lower-case letters");
  refused({"pg_sneaky", "--role", "conveyor_reader", "--password-file", file}, "lower-case letters");
  refused({"conveyor_worker", "--role", "conveyor_reader", "--password-file", file}, "service roles");
  refused({"postgres", "--role", "conveyor_reader", "--password-file", file}, "refusing to change role postgres");
  refused({login, "--role", "conveyor_reader"}, "usage:");
  refused({login, "--role", "conveyor_reader", "--password-file", file, "--no-password"}, "usage:");
  refused({login, "--role", "conveyor_reader", "--password-file", (dir_ / "missing").string()}, "--password-file");
  refused({login, "--role", "conveyor_reader", "--password-file", password_file("empty", "")}, "the file is empty");
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM pg_roles WHERE rolname = '" + login + "'"), "0");

  // An existing role that owns objects, or belongs to another role, would
  // carry more than one service's grants: refused, and left as it was.
  const std::string owner = new_login();
  db_.exec("CREATE ROLE " + owner + " LOGIN; CREATE TABLE public." + owner + "_t (x int); ALTER TABLE public." + owner +
           "_t OWNER TO " + owner);
  refused({owner, "--role", "conveyor_reader", "--password-file", file}, "owns objects");
  db_.exec("DROP TABLE public." + owner + "_t");
  const std::string member = new_login();
  db_.exec("CREATE ROLE " + member + " LOGIN IN ROLE pg_read_all_data");
  refused({member, "--role", "conveyor_reader", "--password-file", file}, "member of a role other than");
  EXPECT_EQ(db_.query_value("SELECT pg_has_role('" + member + "', 'conveyor_reader', 'MEMBER')"), "f");
}

// The verifier is computed by the CLI: prove the server accepts the
// password with it, on a private cluster whose pg_hba.conf asks for SCRAM
// for this login (the shared cluster trusts everyone).
TEST(GrantLoginScram, TheServerAuthenticatesThePasswordAndRefusesAnother) {
  const fs::path dir = fs::temp_directory_path() / login_name("grant_login_scram");
  struct RemoveDir {
    fs::path dir;
    ~RemoveDir() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } remove_dir{dir};  // declared first: runs after the cluster has stopped
  conveyor::testing::PostgresCluster cluster({.dir = dir, .ephemeral = true});
  TestDatabase db(cluster, false);
  db.exec("CREATE ROLE conveyor_reader NOLOGIN");
  const std::string login = "scram_reader";
  const fs::path file = dir / "password";
  std::ofstream(file) << "correct horse battery staple\n";
  const auto r = conveyor::testing::run_cli(
      CONVEYOR_CLI_PATH, {"db", "grant-login", login, "--role", "conveyor_reader", "--password-file", file.string()},
      {{"CONVEYOR_DATABASE_URL", db.url()}});
  ASSERT_EQ(r.status, 0) << r.output;

  const fs::path hba = dir / "data" / "pg_hba.conf";
  const std::string rest = conveyor::testing::read_text(hba);
  std::ofstream(hba) << "host all " << login << " 127.0.0.1/32 scram-sha-256\n" << rest;
  db.exec("SELECT pg_reload_conf()");
  const auto refused = [&](const std::string& url) {
    try {
      who_am_i(url);
      return false;
    } catch (const conveyor::Error&) {
      return true;
    }
  };
  // The reload is asynchronous: wait until a password-less login is refused.
  ASSERT_TRUE(
      conveyor::testing::wait_until([&] { return refused(url_as(db.url(), login)); }, std::chrono::seconds(20)));
  EXPECT_TRUE(refused(url_as(db.url(), login, "wrong-password")));
  const auto [user, uses_reader] = who_am_i(url_as(db.url(), login, "correct%20horse%20battery%20staple"));
  EXPECT_EQ(user, login);
  EXPECT_TRUE(uses_reader);
  db.exec("DROP ROLE " + login);
}

}  // namespace
