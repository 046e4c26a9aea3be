// `conveyor token create|list|revoke` (issue 12) run as a real process
// against a migrated database. What matters: the token is printed once,
// alone on stdout; the table holds its SHA-256 and nothing from which the
// token could be read back; list never shows a hash; revoke and the errors
// say what is wrong and exit non-zero.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "conveyor/auth/auth.hpp"
#include "conveyor/testing/testing.hpp"
#include "cli_test.hpp"

namespace {

namespace fs = std::filesystem;
using conveyor::testing::RunResult;
using conveyor::testing::TestDatabase;
using conveyor::testing::cli::row;
using nlohmann::json;
using namespace std::chrono_literals;

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }
bool has(const RunResult& r, const std::string& part) { return has(r.output, part); }

// A CLI run with stdout and stderr kept apart.
struct SplitRun {
  int status = -1;
  std::string out;
  std::string err;
};

class TokenCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / conveyor::testing::unique_name("token-cli");
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  RunResult conveyor(const std::vector<std::string>& args) {
    return conveyor::testing::run_cli(CONVEYOR_CLI_PATH, args, {{"CONVEYOR_DATABASE_URL", db_.url()}});
  }
  SplitRun conveyor_split(const std::vector<std::string>& args) {
    std::vector<std::string> argv{CONVEYOR_CLI_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    const fs::path out = dir_ / ("out." + std::to_string(++runs_));
    const fs::path err = dir_ / ("err." + std::to_string(runs_));
    conveyor::testing::ChildProcess p({argv, {{"CONVEYOR_DATABASE_URL", db_.url()}}, out, err});
    SplitRun r;
    const auto status = p.wait(60s);
    EXPECT_TRUE(status.has_value()) << "conveyor " << args[0] << " did not finish within 60 s";
    r.status = status.value_or(-1);
    r.out = conveyor::testing::read_text(out);
    r.err = conveyor::testing::read_text(err);
    return r;
  }
  // Creates a token and returns it (asserting success).
  std::string create(const std::string& name, const std::string& role) {
    const auto r = conveyor_split({"token", "create", name, "--role", role});
    EXPECT_EQ(r.status, 0) << r.out << r.err;
    return r.out.empty() ? "" : r.out.substr(0, r.out.size() - 1);
  }
  std::string count_tokens() { return db_.query_value("SELECT count(*) FROM conveyor.api_token"); }

  TestDatabase db_;
  fs::path dir_;
  int runs_ = 0;
};

TEST_F(TokenCli, CreatePrintsTheTokenAloneOnStdoutAndStoresOnlyItsSha256) {
  const auto r = conveyor_split({"token", "create", "ci-deploy", "--role", "submitter"});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  // stdout is the token and a newline, nothing else: `$(conveyor token create ...)` is the token.
  ASSERT_TRUE(std::regex_match(r.out, std::regex("cvt_[A-Za-z0-9_-]{43}\n"))) << "stdout: [" << r.out << "]";
  const std::string token = r.out.substr(0, r.out.size() - 1);
  EXPECT_TRUE(has(r.err, "shown only this once")) << r.err;
  EXPECT_TRUE(has(r.err, "'ci-deploy'")) << r.err;
  EXPECT_FALSE(has(r.err, token)) << "the token is printed on stderr too";

  const auto rows = db_.query(
      "SELECT token_sha256, role, created_by, expires_at IS NULL, revoked_at IS NULL, last_used_at IS NULL "
      "FROM conveyor.api_token WHERE name = 'ci-deploy'");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0][0], conveyor::auth::token_sha256(token));
  EXPECT_EQ(rows[0][1], "submitter");
  EXPECT_EQ(rows[0][2].rfind("conveyor-cli:", 0), 0u) << rows[0][2];
  EXPECT_EQ(rows[0][3], "t") << "a token without --expires does not expire";
  EXPECT_EQ(rows[0][4], "t");
  EXPECT_EQ(rows[0][5], "t");
  // Not the token, nor its random part, in any column of any row.
  const std::string random_part = token.substr(4);
  EXPECT_EQ(
      db_.query_value("SELECT count(*) FROM conveyor.api_token t WHERE strpos(t::text, '" + random_part + "') > 0"),
      "0");

  // Every create prints a new token.
  const std::string second = create("ci-deploy-2", "reader");
  EXPECT_NE(second, token);
  EXPECT_EQ(db_.query_value("SELECT token_sha256 FROM conveyor.api_token WHERE name = 'ci-deploy-2'"),
            conveyor::auth::token_sha256(second));
}

TEST_F(TokenCli, CreateWithExpiresAndJson) {
  const auto r = conveyor_split({"token", "create", "short", "--role", "operator", "--expires", "30d"});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_TRUE(has(r.err, "expires 20")) << r.err;
  EXPECT_EQ(db_.query_value("SELECT expires_at - created_at = interval '30 days' FROM conveyor.api_token "
                            "WHERE name = 'short'"),
            "t");

  const auto j = conveyor_split({"--json", "token", "create", "hourly", "--role", "reader", "--expires=12h"});
  ASSERT_EQ(j.status, 0) << j.out << j.err;
  const json created = json::parse(j.out);
  EXPECT_EQ(created.at("name"), "hourly");
  EXPECT_EQ(created.at("role"), "reader");
  EXPECT_EQ(created.at("state"), "active");
  EXPECT_TRUE(created.at("expires_at").is_string()) << created.dump();
  const std::string token = created.at("token").get<std::string>();
  EXPECT_EQ(db_.query_value("SELECT token_sha256 FROM conveyor.api_token WHERE name = 'hourly'"),
            conveyor::auth::token_sha256(token));
  EXPECT_EQ(db_.query_value("SELECT expires_at - created_at = interval '12 hours' FROM conveyor.api_token "
                            "WHERE name = 'hourly'"),
            "t");
}

TEST_F(TokenCli, CreateErrorsNameWhatIsWrongAndCreateNothing) {
  auto r = conveyor({"token", "create", "x", "--role", "admin"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "'admin' is not a role")) << r.output;
  EXPECT_TRUE(has(r, "reader") && has(r, "submitter") && has(r, "operator")) << r.output;

  r = conveyor({"token", "create", "x"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "--role is required")) << r.output;

  r = conveyor({"token", "create", "x", "--role", "reader", "--expires", "30x"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "--expires")) << r.output;
  EXPECT_TRUE(has(r, "'30x' is not a lifetime")) << r.output;

  r = conveyor({"token", "create", "x", "--role", "reader", "--expires", "0d"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "--expires")) << r.output;

  r = conveyor({"token", "create", "Not Valid", "--role", "reader"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "'Not Valid' is not valid")) << r.output;

  r = conveyor({"token", "create", "--role", "reader"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "one token NAME is required")) << r.output;

  r = conveyor({"token", "create", "x", "--role", "reader", "--colour", "red"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "unknown option --colour")) << r.output;
  EXPECT_EQ(count_tokens(), "0");

  // A taken name, active or revoked, is refused and the first token stays as it was.
  const std::string first = create("ops", "operator");
  const std::string hash = conveyor::auth::token_sha256(first);
  const auto again = conveyor_split({"token", "create", "ops", "--role", "reader"});
  EXPECT_EQ(again.status, 1) << again.err;
  EXPECT_TRUE(has(again.err, "a token named 'ops' exists already")) << again.err;
  EXPECT_EQ(again.out, "") << "no token is printed when none was created";
  ASSERT_EQ(conveyor({"token", "revoke", "ops"}).status, 0);
  r = conveyor({"token", "create", "ops", "--role", "operator"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "never reused")) << r.output;
  EXPECT_EQ(db_.query_value("SELECT token_sha256 || ' ' || role FROM conveyor.api_token WHERE name = 'ops'"),
            hash + " operator");
  EXPECT_EQ(count_tokens(), "1");
}

TEST_F(TokenCli, ListShowsEveryTokenWithItsStateAndNeverAHash) {
  create("alpha", "reader");
  create("bravo", "submitter");
  create("charlie", "operator");
  ASSERT_EQ(conveyor_split({"token", "create", "delta", "--role", "reader", "--expires", "1d"}).status, 0);
  // bravo: revoked; charlie: expired an hour ago, used once; delta: expires tomorrow.
  ASSERT_EQ(conveyor({"token", "revoke", "bravo"}).status, 0);
  db_.exec(
      "UPDATE conveyor.api_token SET expires_at = now() - interval '1 hour', "
      "last_used_at = '2026-01-02T03:04:05.678Z' WHERE name = 'charlie'");

  const auto r = conveyor({"token", "list"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(row(r, "NAME"), "NAME | ROLE | STATE | CREATED | EXPIRES | LAST USED | CREATED BY") << r.output;
  const std::regex alpha(
      "alpha \\| reader \\| active \\| \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d UTC \\| never \\| "
      "never \\| conveyor-cli:.+");
  EXPECT_TRUE(std::regex_match(row(r, "alpha"), alpha)) << r.output;
  EXPECT_TRUE(has(row(r, "bravo"), "bravo | submitter | revoked |")) << r.output;
  EXPECT_TRUE(has(row(r, "charlie"), "charlie | operator | expired |")) << r.output;
  EXPECT_TRUE(has(row(r, "charlie"), "| 2026-01-02 03:04:05 UTC |")) << r.output;
  EXPECT_TRUE(has(row(r, "delta"), "delta | reader | active |")) << r.output;
  EXPECT_FALSE(has(row(r, "delta"), "| never | never |")) << "delta expires: " << r.output;

  // Neither the table nor the JSON holds any token's hash.
  const auto hashes = db_.query("SELECT token_sha256 FROM conveyor.api_token");
  ASSERT_EQ(hashes.size(), 4u);
  const auto j = conveyor({"--json", "token", "list"});
  ASSERT_EQ(j.status, 0) << j.output;
  for (const auto& h : hashes) {
    EXPECT_FALSE(has(r, h[0])) << r.output;
    EXPECT_FALSE(has(j, h[0])) << j.output;
  }
  const json list = json::parse(j.output);
  ASSERT_EQ(list.size(), 4u) << list.dump();
  EXPECT_EQ(list[0].at("name"), "alpha");
  EXPECT_EQ(list[0].at("state"), "active");
  EXPECT_TRUE(list[0].at("expires_at").is_null());
  EXPECT_TRUE(list[0].at("last_used_at").is_null());
  EXPECT_EQ(list[1].at("state"), "revoked");
  EXPECT_TRUE(list[1].at("revoked_at").is_string());
  EXPECT_EQ(list[2].at("state"), "expired");
  EXPECT_EQ(list[2].at("last_used_at"), "2026-01-02T03:04:05.678000Z");
  EXPECT_EQ(list[3].at("role"), "reader");
  for (const auto& t : list) {
    for (const auto& [key, value] : t.items()) {
      EXPECT_EQ(key.find("hash"), std::string::npos) << key;
      EXPECT_EQ(key.find("sha"), std::string::npos) << key;
    }
  }
}

TEST_F(TokenCli, RevokeEndsATokenOnceAndRefusesUnknownNames) {
  create("laptop", "operator");
  auto r = conveyor({"token", "revoke", "laptop"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "token 'laptop' (role operator) revoked at")) << r.output;
  EXPECT_EQ(db_.query_value("SELECT revoked_at IS NOT NULL AND revoked_at <= now() FROM conveyor.api_token "
                            "WHERE name = 'laptop'"),
            "t");
  const std::string revoked_at = db_.query_value("SELECT revoked_at FROM conveyor.api_token WHERE name = 'laptop'");

  r = conveyor({"token", "revoke", "laptop"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "token 'laptop' was already revoked at")) << r.output;
  EXPECT_EQ(db_.query_value("SELECT revoked_at FROM conveyor.api_token WHERE name = 'laptop'"), revoked_at)
      << "a second revoke must not move revoked_at";

  r = conveyor({"token", "revoke", "nobody"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "no token named 'nobody'")) << r.output;

  r = conveyor({"token", "revoke"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "one token NAME is required")) << r.output;

  create("other", "reader");
  const auto j = conveyor({"--json", "token", "revoke", "other"});
  ASSERT_EQ(j.status, 0) << j.output;
  const json revoked = json::parse(j.output);
  EXPECT_EQ(revoked.at("name"), "other");
  EXPECT_EQ(revoked.at("state"), "revoked");
  EXPECT_TRUE(revoked.at("revoked_at").is_string());
}

TEST_F(TokenCli, TokenAloneShowsItsUsage) {
  auto r = conveyor({"token"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "usage: conveyor token create NAME --role")) << r.output;
  r = conveyor({"token", "rotate", "x"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "unknown token command 'rotate'")) << r.output;
}

}  // namespace
