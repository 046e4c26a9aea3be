// Who may do what (issue 12): API tokens and their roles on the REST API
// (conveyor-creation) and the monitor, as real processes on a Stack. For
// each role and route class: allowed gets 2xx, forbidden 403, no token 401;
// expired and revoked tokens 401; the history's actor of an API cancel is
// the token's name; a submitter cannot change the sink URL nor touch
// another's jobs; the per-token submission rate; the monitor's login
// cookie; no token in any log.
#include <chrono>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "conveyor/auth/auth.hpp"
#include "conveyor/http/client.hpp"
#include "conveyor/testing/stack.hpp"
#include "conveyor/testing/testing.hpp"

namespace {

namespace ct = conveyor::testing;
using ::testing::HasSubstr;
using ::testing::Not;
using nlohmann::json;
using namespace std::chrono_literals;

class Auth : public ::testing::Test {
 protected:
  static ct::Stack::Options options(std::map<std::string, std::string> env = {}) {
    ct::Stack::Options o;
    o.workers = 0;
    o.services = {"creation", "monitor"};
    o.env = std::move(env);
    return o;
  }

  // A request to service `name` of `stack` with `token` ("" for none).
  static conveyor::http::ClientResponse call(ct::Stack& stack, const std::string& name, const std::string& method,
                                             const std::string& path, const std::string& token,
                                             const std::string& body = "",
                                             std::map<std::string, std::string> headers = {}) {
    if (!token.empty()) headers["Authorization"] = "Bearer " + token;
    if (!body.empty()) headers.emplace("Content-Type", "application/json");
    return conveyor::http::http_request(method, "http://127.0.0.1:" + std::to_string(stack.port(name)) + path, body,
                                        headers, 5s);
  }

  static conveyor::http::ClientResponse api(ct::Stack& stack, const std::string& method, const std::string& path,
                                            const std::string& token, const std::string& body = "") {
    return call(stack, "creation", method, path, token, body);
  }

  static std::string submit(ct::Stack& stack, const std::string& token) {
    const auto r = api(stack, "POST", "/v1/jobs", token, R"({"job_type": "sleep", "params": {"seconds": 0}})");
    EXPECT_EQ(r.status, 201) << r.body;
    return std::to_string(json::parse(r.body).at("id").get<std::int64_t>());
  }

  // The problem+json of a refusal, with its status checked.
  static json refused(const conveyor::http::ClientResponse& r, int status) {
    EXPECT_EQ(r.status, status) << r.body;
    const json p = json::parse(r.body);
    EXPECT_EQ(p.at("status"), status);
    return p;
  }
};

TEST_F(Auth, EachRoleGetsWhatItMayAndNoMore) {
  ct::Stack stack(options());
  const std::string url = stack.db().url();
  const std::string reader = ct::create_api_token(url, "dash", "reader");
  const std::string alice = ct::create_api_token(url, "alice", "submitter");
  const std::string bob = ct::create_api_token(url, "bob", "submitter");
  const std::string ops = ct::create_api_token(url, "ops", "operator");

  // Open to anyone: health, readiness, version, and /metrics by default.
  for (const char* path : {"/healthz", "/readyz", "/version", "/metrics"}) {
    EXPECT_EQ(api(stack, "GET", path, "").status, 200) << path;
  }

  // No token: 401 naming what is missing, for reads and writes alike.
  for (const auto& [method, path] : std::vector<std::pair<std::string, std::string>>{{"GET", "/v1/jobs"},
                                                                                     {"GET", "/v1/job-types"},
                                                                                     {"GET", "/v1/parameters"},
                                                                                     {"POST", "/v1/jobs"},
                                                                                     {"PATCH", "/v1/parameters"},
                                                                                     {"POST", "/v1/jobs/1/cancel"}}) {
    const std::string body = method == "GET" ? "" : "{}";
    const auto r = api(stack, method, path, "", body);
    const json p = refused(r, 401);
    EXPECT_THAT(p.value("type", ""), HasSubstr("unauthorized"));
    EXPECT_THAT(p.value("detail", ""), HasSubstr("Authorization: Bearer")) << method << " " << path;
  }
  // Another scheme, or something that is not one of our tokens: 401 too.
  EXPECT_EQ(call(stack, "creation", "GET", "/v1/jobs", "", "", {{"Authorization", "Basic YWxpY2U6eA=="}}).status, 401);
  EXPECT_THAT(refused(api(stack, "GET", "/v1/jobs", "not-a-token"), 401).value("detail", ""), HasSubstr("cvt_"));
  EXPECT_THAT(refused(api(stack, "GET", "/v1/jobs", conveyor::auth::new_token()), 401).value("detail", ""),
              HasSubstr("not known"));

  // Reads: every role.
  for (const auto& t : {reader, alice, ops}) {
    EXPECT_EQ(api(stack, "GET", "/v1/jobs", t).status, 200);
    EXPECT_EQ(api(stack, "GET", "/v1/parameters", t).status, 200);
    EXPECT_EQ(api(stack, "GET", "/v1/job-types/sleep", t).status, 200);
  }

  // Submitting: submitter and operator; a reader gets 403 naming both roles.
  const json p =
      refused(api(stack, "POST", "/v1/jobs", reader, R"({"job_type": "sleep", "params": {"seconds": 0}})"), 403);
  EXPECT_THAT(p.value("detail", ""), HasSubstr("reader"));
  EXPECT_THAT(p.value("detail", ""), HasSubstr("submitter"));
  EXPECT_EQ(stack.db().query_value("SELECT count(*) FROM conveyor.job"), "0");
  const std::string alices = submit(stack, alice);
  const std::string opss = submit(stack, ops);
  EXPECT_EQ(stack.db().query_value("SELECT submitted_by FROM conveyor.job WHERE id = " + alices), "api:alice");

  // Parameters (the sink URL among them) are an operator's: a submitter
  // cannot send every job's result elsewhere.
  const std::string sink = R"({"publication_endpoint_url": "http://evil.example/collect"})";
  for (const auto& t : {reader, alice}) {
    EXPECT_THAT(refused(api(stack, "PATCH", "/v1/parameters", t, sink), 403).value("detail", ""),
                HasSubstr("operator"));
  }
  EXPECT_EQ(stack.db().query_value("SELECT coalesce(publication_endpoint_url, '') FROM conveyor.system_parameters"),
            "");
  EXPECT_EQ(api(stack, "PATCH", "/v1/parameters", ops,
                R"({"publication_endpoint_url": "http://hook:s3cret@hooks.example/in"})")
                .status,
            200);
  EXPECT_EQ(stack.db().query_value("SELECT updated_by FROM conveyor.system_parameters"), "api:ops");
  // Only an operator reads a sink URL's credentials back.
  EXPECT_EQ(json::parse(api(stack, "GET", "/v1/parameters", ops).body).at("publication_endpoint_url"),
            "http://hook:s3cret@hooks.example/in");
  for (const auto& t : {reader, alice}) {
    const std::string shown = json::parse(api(stack, "GET", "/v1/parameters", t).body).at("publication_endpoint_url");
    EXPECT_THAT(shown, Not(HasSubstr("s3cret")));
    EXPECT_THAT(shown, HasSubstr("hooks.example"));
  }

  // Cancel and retry: a submitter only its own jobs; a reader none; an operator any.
  EXPECT_EQ(api(stack, "POST", "/v1/jobs/" + alices + "/cancel", reader).status, 403);
  EXPECT_THAT(refused(api(stack, "POST", "/v1/jobs/" + alices + "/cancel", bob), 403).value("detail", ""),
              HasSubstr("api:alice"));
  EXPECT_THAT(refused(api(stack, "POST", "/v1/jobs/" + opss + "/cancel", alice), 403).value("detail", ""),
              HasSubstr("only the jobs it submitted"));
  EXPECT_LT(api(stack, "POST", "/v1/jobs/" + alices + "/cancel", alice).status, 300);
  EXPECT_LT(api(stack, "POST", "/v1/jobs/" + opss + "/cancel", ops).status, 300);
  EXPECT_EQ(api(stack, "POST", "/v1/jobs/" + alices + "/retry", bob).status, 403);
  // An unknown job is still 404 for a submitter (not a 403 that says nothing).
  EXPECT_EQ(api(stack, "POST", "/v1/jobs/999999/cancel", alice).status, 404);
}

TEST_F(Auth, ExpiredAndRevokedTokensAre401AndTheHistoryNamesTheToken) {
  ct::Stack stack(options());
  const std::string url = stack.db().url();
  const std::string old = ct::create_api_token(url, "old", "operator");
  const std::string gone = ct::create_api_token(url, "gone", "operator");
  const std::string ops = ct::create_api_token(url, "night-shift", "operator");
  ASSERT_EQ(api(stack, "GET", "/v1/jobs", old).status, 200);
  ASSERT_EQ(api(stack, "GET", "/v1/jobs", gone).status, 200);

  stack.db().exec("UPDATE conveyor.api_token SET expires_at = now() - interval '1 second' WHERE name = 'old'");
  EXPECT_THAT(refused(api(stack, "GET", "/v1/jobs", old), 401).value("detail", ""), HasSubstr("expired"));
  const auto revoke = stack.cli({"token", "revoke", "gone"});
  ASSERT_EQ(revoke.status, 0) << revoke.output;
  EXPECT_THAT(refused(api(stack, "GET", "/v1/jobs", gone), 401).value("detail", ""), HasSubstr("revoked"));
  // last_used_at was recorded for a token in use.
  EXPECT_EQ(stack.db().query_value("SELECT last_used_at IS NOT NULL FROM conveyor.api_token WHERE name = 'gone'"), "t");

  // A cancel through the API: the history's actor is the token's name, and
  // `conveyor job inspect` shows it.
  const std::string id = submit(stack, ops);
  ASSERT_LT(api(stack, "POST", "/v1/jobs/" + id + "/cancel", ops).status, 300);
  EXPECT_EQ(stack.db().query_value("SELECT actor FROM conveyor.job_status_change WHERE job_id = " + id +
                                   " AND to_status = 'canceled'"),
            "api:night-shift");
  const auto inspect = stack.cli({"job", "inspect", id});
  ASSERT_EQ(inspect.status, 0) << inspect.output;
  EXPECT_THAT(inspect.output, HasSubstr("api:night-shift"));

  // The tokens themselves appear in no log and not in the table.
  const std::string logs = ct::read_text(stack.data_dir() / "creation.log");
  for (const auto& t : {old, gone, ops}) {
    EXPECT_THAT(logs, Not(HasSubstr(t)));
    EXPECT_EQ(stack.db().query_value("SELECT count(*) FROM conveyor.api_token WHERE token_sha256 = '" + t +
                                     "' OR name = '" + t + "'"),
              "0");
  }
  EXPECT_THAT(logs, HasSubstr("refused token 'gone': revoked"));
}

TEST_F(Auth, SubmissionsAreRateLimitedPerToken) {
  ct::Stack stack(options({{"CONVEYOR_SUBMIT_RATE", "1"}, {"CONVEYOR_SUBMIT_BURST", "3"}}));
  const std::string fast = ct::create_api_token(stack.db().url(), "fast", "submitter");
  const std::string calm = ct::create_api_token(stack.db().url(), "calm", "submitter");
  const std::string body = R"({"job_type": "sleep", "params": {"seconds": 0}})";
  // Ten at once against a burst of three at one a second: unless the ten
  // took more than seven seconds, some are refused.
  int created = 0;
  std::optional<conveyor::http::ClientResponse> limited;
  for (int i = 0; i < 10; ++i) {
    const auto r = api(stack, "POST", "/v1/jobs", fast, body);
    if (r.status == 201) ++created;
    if (r.status == 429) limited = r;
  }
  ASSERT_TRUE(limited.has_value()) << "no 429 after " << created << " submissions";
  EXPECT_GE(created, 3);
  EXPECT_LT(created, 10);
  const json p = refused(*limited, 429);
  EXPECT_THAT(p.value("detail", ""), HasSubstr("'fast'"));
  const auto retry_after = limited->headers.find("retry-after");
  ASSERT_NE(retry_after, limited->headers.end());
  EXPECT_GE(std::stoi(retry_after->second), 1);
  EXPECT_EQ(stack.db().query_value("SELECT count(*) FROM conveyor.job"), std::to_string(created));
  // Another token has its own bucket. A batch takes one unit per job: three
  // at once take the burst, three more are refused (unless three seconds
  // passed), and more than the burst never fit.
  const std::string three = R"({"jobs": [)" + body + "," + body + "," + body + "]}";
  EXPECT_EQ(api(stack, "POST", "/v1/jobs/batch", calm, three).status, 201);
  const json again = refused(api(stack, "POST", "/v1/jobs/batch", calm, three), 429);
  EXPECT_THAT(again.value("detail", ""), HasSubstr("'calm'"));
  const std::string four = R"({"jobs": [)" + body + "," + body + "," + body + "," + body + "]}";
  const json too_many = refused(api(stack, "POST", "/v1/jobs/batch", calm, four), 400);
  EXPECT_THAT(too_many.value("detail", ""), HasSubstr("CONVEYOR_SUBMIT_BURST=3"));
  EXPECT_EQ(stack.db().query_value("SELECT count(*) FROM conveyor.job WHERE submitted_by = 'api:calm'"), "3");
  // Reads are not limited.
  for (int i = 0; i < 5; ++i) EXPECT_EQ(api(stack, "GET", "/v1/jobs", fast).status, 200);
}

TEST_F(Auth, TheMonitorNeedsAReaderAndItsLoginSetsAStrictCookie) {
  ct::Stack stack(options());
  const std::string reader = ct::create_api_token(stack.db().url(), "wall-screen", "reader");
  auto monitor = [&](const std::string& method, const std::string& path, const std::string& token,
                     const std::string& body = "", std::map<std::string, std::string> headers = {}) {
    return call(stack, "monitor", method, path, token, body, std::move(headers));
  };
  for (const char* path : {"/v1/alerts", "/v1/services", "/v1/workers", "/"}) {
    EXPECT_EQ(monitor("GET", path, "").status, 401) << path;
    EXPECT_EQ(monitor("GET", path, reader).status, 200) << path;
  }
  EXPECT_EQ(monitor("GET", "/metrics", "").status, 200) << "open for scrapers by default";

  // A browser without a session is sent to the login form, which is open
  // and carries no token.
  const auto browser = monitor("GET", "/", "", "", {{"Accept", "text/html,application/xhtml+xml"}});
  EXPECT_EQ(browser.status, 303);
  EXPECT_EQ(browser.headers.count("location") ? browser.headers.at("location") : "", "/login");
  const auto form = monitor("GET", "/login", "");
  EXPECT_EQ(form.status, 200);
  EXPECT_THAT(form.body, HasSubstr("type=\"password\""));

  // A wrong token: 401 and no cookie.
  const auto wrong = monitor("POST", "/login", "", json{{"token", conveyor::auth::new_token()}}.dump());
  EXPECT_EQ(wrong.status, 401);
  EXPECT_EQ(wrong.headers.count("set-cookie"), 0u);
  // The form's post without JavaScript is a form body: refused, never read.
  EXPECT_EQ(
      monitor("POST", "/login", "", "token=" + reader, {{"Content-Type", "application/x-www-form-urlencoded"}}).status,
      415);

  auto log_in = [&] {
    const auto login = monitor("POST", "/login", "", json{{"token", reader}}.dump());
    EXPECT_EQ(login.status, 200) << login.body;
    EXPECT_EQ(login.headers.count("set-cookie"), 1u);
    const std::string cookie = login.headers.count("set-cookie") ? login.headers.at("set-cookie") : "";
    EXPECT_THAT(cookie, HasSubstr("HttpOnly"));
    EXPECT_THAT(cookie, HasSubstr("SameSite=Strict"));
    EXPECT_THAT(cookie, HasSubstr("Path=/"));
    return cookie.substr(0, cookie.find(';'));  // "conveyor_session=cvs_..."
  };
  const std::string pair = log_in();
  // The browser holds a session id, not the token: a copied cookie is no API token.
  EXPECT_THAT(pair, HasSubstr("=cvs_"));
  EXPECT_THAT(pair, Not(HasSubstr(reader)));
  const std::string session = pair.substr(pair.find('=') + 1);
  EXPECT_EQ(call(stack, "creation", "GET", "/v1/jobs", session).status, 401);
  EXPECT_EQ(stack.db().query_value("SELECT count(*) FROM conveyor.console_session WHERE token_name = 'wall-screen' "
                                   "AND session_sha256 = '" +
                                   conveyor::auth::token_sha256(session) + "'"),
            "1");
  const auto page = monitor("GET", "/", "", "", {{"Cookie", pair}, {"Accept", "text/html"}});
  EXPECT_EQ(page.status, 200);
  EXPECT_THAT(page.body, HasSubstr("<h1>Overview</h1>"));  // the console, signed in
  EXPECT_THAT(page.body, HasSubstr("wall-screen (reader)"));
  EXPECT_EQ(monitor("GET", "/v1/alerts", "", "", {{"Cookie", pair}}).status, 200);
  // A proxy's own Authorization scheme does not hide the session.
  EXPECT_EQ(monitor("GET", "/v1/alerts", "", "", {{"Cookie", pair}, {"Authorization", "Basic eDp5"}}).status, 200);
  // The REST API does not take the cookie (it would be sent cross-port).
  EXPECT_EQ(call(stack, "creation", "GET", "/v1/jobs", "", "", {{"Cookie", pair}}).status, 401);

  // Logout ends the session on the server, not only in the browser.
  const auto out = monitor("POST", "/logout", "", "", {{"Cookie", pair}});
  EXPECT_EQ(out.status, 200);
  EXPECT_THAT(out.headers.count("set-cookie") ? out.headers.at("set-cookie") : "", HasSubstr("Max-Age=0"));
  EXPECT_EQ(monitor("GET", "/v1/alerts", "", "", {{"Cookie", pair}}).status, 401);

  // The server ends a session at its time, whatever the browser keeps.
  const std::string second = log_in();
  stack.db().exec("UPDATE conveyor.console_session SET expires_at = now() - interval '1 second'");
  EXPECT_THAT(json::parse(monitor("GET", "/v1/alerts", "", "", {{"Cookie", second}}).body).value("detail", ""),
              HasSubstr("expired"));

  // Revoked: every session of the token ends with it.
  const std::string third = log_in();
  ASSERT_EQ(monitor("GET", "/v1/alerts", "", "", {{"Cookie", third}}).status, 200);
  ASSERT_EQ(stack.cli({"token", "revoke", "wall-screen"}).status, 0);
  EXPECT_EQ(monitor("GET", "/v1/alerts", "", "", {{"Cookie", third}}).status, 401);

  EXPECT_THAT(ct::read_text(stack.data_dir() / "monitor.log"), Not(HasSubstr(reader)));
}

TEST_F(Auth, MetricsCanRequireAToken) {
  ct::Stack stack(options({{"CONVEYOR_METRICS_REQUIRE_TOKEN", "true"}}));
  const std::string reader = ct::create_api_token(stack.db().url(), "prometheus", "reader");
  for (const char* name : {"creation", "monitor"}) {
    EXPECT_EQ(call(stack, name, "GET", "/metrics", "").status, 401) << name;
    EXPECT_EQ(call(stack, name, "GET", "/metrics", reader).status, 200) << name;
    EXPECT_EQ(call(stack, name, "GET", "/healthz", "").status, 200) << name;
  }
}

}  // namespace
