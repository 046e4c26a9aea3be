// The monitor's console (issue 15, item 1) over HTTP: conveyor-monitor as a
// real process against a database and devbroker of the test's own; jobs put
// in place by SQL. Escaping of every value, who may act, the jobs list's
// filters and paging, and the queue pause through the shared model.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>

#include "conveyor/error/error.hpp"
#include "conveyor/http/client.hpp"
#include "conveyor/testing/stack.hpp"
#include "conveyor/testing/testing.hpp"

namespace {

namespace ct = conveyor::testing;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Response = conveyor::http::ClientResponse;

class ConsoleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ct::unique_name("console");
    fs::create_directories(dir_);
    port_ = ct::free_port();
    ct::ChildProcess::Options o;
    o.argv = {ct::executable("conveyor-monitor").string()};
    o.env = {{"CONVEYOR_DATABASE_URL", db_.url()},
             {"CONVEYOR_KAFKA_BROKERS", broker_.bootstrap()},
             {"CONVEYOR_TOPIC_PREFIX", ct::unique_name("con")},
             {"CONVEYOR_HTTP_PORT", std::to_string(port_)},
             {"CONVEYOR_DATA_DIR", (dir_ / "data").string()},
             {"CONVEYOR_INSTANCE_ID", "monitor"}};
    o.stdout_file = dir_ / "monitor.log";
    monitor_ = std::make_unique<ct::ChildProcess>(o);
    reader_ = ct::create_api_token(db_.url(), "console-reader", "reader");
    operator_ = ct::create_api_token(db_.url(), "console-operator", "operator");
    ASSERT_TRUE(ct::wait_until(
        [&] {
          try {
            return monitor_->running() && call("GET", "/readyz", "").status == 200;
          } catch (const conveyor::Error&) {
            return false;  // not listening yet
          }
        },
        30s))
        << ct::read_text(dir_ / "monitor.log");
  }

  void TearDown() override {
    EXPECT_EQ(monitor_->stop(10s), 0);
    if (HasFailure()) std::cerr << ct::read_text(dir_ / "monitor.log");
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  Response call(const std::string& method, const std::string& path, const std::string& token,
                std::map<std::string, std::string> headers = {}) {
    if (!token.empty()) headers["Authorization"] = "Bearer " + token;
    std::string body;
    if (method == "POST") {
      headers["Content-Type"] = "application/json";
      body = "{}";
    }
    return conveyor::http::http_request(method, "http://127.0.0.1:" + std::to_string(port_) + path, body, headers, 5s);
  }

  std::string page(const std::string& path) {
    const auto r = call("GET", path, reader_);
    EXPECT_EQ(r.status, 200) << path << ": " << r.body;
    EXPECT_NE(r.headers.count("content-type") ? r.headers.at("content-type").find("text/html") : std::string::npos,
              std::string::npos)
        << path;
    return r.body;
  }

  std::string insert_job(const std::string& type, const std::string& extra_columns = "",
                         const std::string& extra_values = "") {
    return db_.query_value("INSERT INTO conveyor.job (job_type" + extra_columns + ") VALUES ('" + type + "'" +
                           extra_values + ") RETURNING id");
  }

  static int count(const std::string& text, const std::string& what) {
    int n = 0;
    for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
  }

  ct::TestDatabase db_;
  ct::Broker broker_;
  fs::path dir_;
  int port_ = 0;
  std::unique_ptr<ct::ChildProcess> monitor_;
  std::string reader_, operator_;
};

// A job's error message, subtype, type name, params and log are text, never
// markup, on every page that shows them.
TEST_F(ConsoleTest, MarkupInAJobsValuesIsEscapedOnEveryPage) {
  const std::string id = insert_job("x", ", params", ", '{\"note\": \"</pre><script>alert(2)</script>\"}'");
  db_.exec(
      "UPDATE conveyor.job SET error_subtype = '<b>bold</b>', error_message = '<script>alert(1)</script> & "
      "\"quoted\"' WHERE id = " +
      id);
  const std::string created = db_.query_value(
      "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM') FROM "
      "conveyor.job WHERE id = " +
      id);
  const fs::path log_dir = dir_ / "data" / "logs" / created / ("job-" + id);
  fs::create_directories(log_dir);
  std::ofstream(log_dir / "logs.txt") << "line one\n<img src=x onerror=alert(3)>\n";

  for (const std::string& path : std::vector<std::string>{"/jobs", "/jobs?q=script", "/jobs/" + id}) {
    const std::string body = page(path);
    EXPECT_EQ(body.find("<script>alert"), std::string::npos) << path << ":\n" << body;
    EXPECT_EQ(body.find("<b>bold"), std::string::npos) << path;
    EXPECT_NE(body.find("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quoted&quot;"), std::string::npos)
        << path << ":\n"
        << body;
  }
  const std::string job = page("/jobs/" + id);
  EXPECT_NE(job.find("&lt;/pre&gt;&lt;script&gt;alert(2)"), std::string::npos) << job;
  EXPECT_NE(job.find("&lt;img src=x onerror=alert(3)&gt;"), std::string::npos) << job;
  EXPECT_EQ(job.find("<img"), std::string::npos);
  // The live tail gives the log as JSON text, which the page sets with textContent.
  const auto tail = call("GET", "/jobs/" + id + "/log?offset=9", reader_);
  EXPECT_EQ(tail.status, 200);
  EXPECT_NE(tail.body.find("\"text\":\"<img src=x onerror=alert(3)>\\n\""), std::string::npos) << tail.body;
}

// Reads need a reader; cancel, retry, pause and resume an operator, from
// the console's own origin.
TEST_F(ConsoleTest, AReaderMayLookButOnlyAnOperatorMayActAndOnlyFromTheConsole) {
  const std::string id = insert_job("x");
  EXPECT_EQ(call("GET", "/jobs/" + id, "").status, 401);
  EXPECT_EQ(call("GET", "/jobs/" + id, reader_).status, 200);
  const auto refused = call("POST", "/jobs/" + id + "/cancel", reader_);
  EXPECT_EQ(refused.status, 403) << refused.body;
  EXPECT_EQ(call("POST", "/queues/job_type/x/pause", reader_).status, 403);
  EXPECT_EQ(call("POST", "/queues/schedule/x/pause", reader_).status, 403);
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.job WHERE id = " + id), "initialized");
  // A reader sees no buttons; an operator does.
  EXPECT_EQ(page("/jobs/" + id).find("data-post="), std::string::npos);
  const std::string op_page = call("GET", "/jobs/" + id, operator_).body;
  EXPECT_NE(op_page.find("data-post=\"/jobs/" + id + "/cancel\""), std::string::npos) << op_page;

  // Another site's page cannot make an operator's browser act.
  const auto forged = call("POST", "/jobs/" + id + "/cancel", operator_, {{"Origin", "https://evil.example"}});
  EXPECT_EQ(forged.status, 403) << forged.body;
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.job WHERE id = " + id), "initialized");

  const std::string self = "http://127.0.0.1:" + std::to_string(port_);
  const auto canceled = call("POST", "/jobs/" + id + "/cancel", operator_, {{"Origin", self}});
  EXPECT_EQ(canceled.status, 200) << canceled.body;
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.job WHERE id = " + id), "canceled");
  EXPECT_EQ(db_.query_value("SELECT actor FROM conveyor.job_status_change WHERE job_id = " + id +
                            " ORDER BY id DESC LIMIT 1"),
            "api:console-operator");
  // Retry is the model's rule: a canceled job starts again; a second cancel
  // of a done job would be refused by the same rule (409).
  EXPECT_EQ(call("POST", "/jobs/" + id + "/retry", operator_).status, 200);
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.job WHERE id = " + id), "initialized");
  EXPECT_EQ(call("POST", "/jobs/999999/cancel", operator_).status, 404);
}

// The list is filtered and paged in SQL: 50 a page, newest first, an
// "older" link while more match; the text search takes % and _ literally.
TEST_F(ConsoleTest, TheJobListIsFilteredAndPagedOnTheServer) {
  db_.exec("INSERT INTO conveyor.job (job_type) SELECT 'many' FROM generate_series(1, 120)");
  const std::string full = insert_job("few", ", error_subtype, error_message", ", 'disk', 'disk 50% full'");
  const std::string other = insert_job("few", ", error_subtype, error_message", ", 'disk', 'disk 500 full'");
  const std::string old = insert_job("few", ", created_at", ", '2020-01-02T00:00:00Z'");

  const std::string first = page("/jobs?type=many");
  EXPECT_EQ(count(first, "<tr><td><a href=\"/jobs/"), 50);
  const auto older = first.find("id=\"older\" href=\"");
  ASSERT_NE(older, std::string::npos) << first;
  const auto start = older + std::string("id=\"older\" href=\"").size();
  std::string next = first.substr(start, first.find('"', start) - start);
  for (auto amp = next.find("&amp;"); amp != std::string::npos; amp = next.find("&amp;")) next.replace(amp, 5, "&");
  EXPECT_NE(next.find("type=many"), std::string::npos) << "the filters stay: " << next;
  const std::string second = page(next);
  EXPECT_EQ(count(second, "<tr><td><a href=\"/jobs/"), 50);
  EXPECT_EQ(count(first + second, "<tr><td><a href=\"/jobs/"), 100);
  const std::string last_id = db_.query_value("SELECT min(id) + 19 FROM conveyor.job WHERE job_type = 'many'");
  const std::string third = page("/jobs?type=many&before=" +
                                 db_.query_value("SELECT min(id) + 20 FROM conveyor.job WHERE job_type = 'many'"));
  EXPECT_EQ(count(third, "<tr><td><a href=\"/jobs/"), 20);
  EXPECT_EQ(third.find("id=\"older\""), std::string::npos) << "the last page has no older link";
  EXPECT_NE(third.find("href=\"/jobs/" + last_id + "\""), std::string::npos);

  const std::string percent = page("/jobs?q=50%25");
  EXPECT_NE(percent.find("href=\"/jobs/" + full + "\""), std::string::npos);
  EXPECT_EQ(percent.find("href=\"/jobs/" + other + "\""), std::string::npos) << "% is no wildcard";
  EXPECT_EQ(count(page("/jobs?q=DISK"), "<tr><td><a href=\"/jobs/"), 2) << "subtype and message, any case";
  const std::string until = page("/jobs?type=few&until=2021-01-01");
  EXPECT_EQ(count(until, "<tr><td><a href=\"/jobs/"), 1);
  EXPECT_NE(until.find("href=\"/jobs/" + old + "\""), std::string::npos);
  EXPECT_EQ(count(page("/jobs?type=few&since=2021-01-01T00:00"), "<tr><td><a href=\"/jobs/"), 2);
  EXPECT_EQ(count(page("/jobs?status=initialized&type=few"), "<tr><td><a href=\"/jobs/"), 3);
  EXPECT_EQ(count(page("/jobs?status=done"), "<tr><td><a href=\"/jobs/"), 0);

  const auto bad = call("GET", "/jobs?status=nonsense", reader_);
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("status"), std::string::npos) << bad.body;
  EXPECT_EQ(call("GET", "/jobs?since=yesterday", reader_).status, 400);
  EXPECT_EQ(call("GET", "/jobs?q=" + std::string(300, 'a'), reader_).status, 400);
}

// The other pages render from a fresh database, and the queue pause is the
// CLI's (model/queue.hpp): recorded with the operator as paused_by.
TEST_F(ConsoleTest, EveryPageRendersAndAQueuePausesAndResumes) {
  db_.exec("INSERT INTO conveyor.job_type (name, command) VALUES ('sleepy', '[\"true\"]')");
  const std::string overview = page("/");
  EXPECT_NE(overview.find("<svg"), std::string::npos);
  EXPECT_NE(overview.find("Jobs by status"), std::string::npos);
  EXPECT_NE(overview.find("busy of"), std::string::npos);
  for (const std::string path : {"/services", "/services?all=1", "/queues", "/alerts"}) page(path);

  EXPECT_EQ(call("POST", "/queues/job_type/sleepy/pause", operator_).status, 200);
  EXPECT_EQ(db_.query_value("SELECT paused_by FROM conveyor.queue_state WHERE kind = 'job_type' AND name = 'sleepy'"),
            "api:console-operator");
  EXPECT_NE(page("/queues").find("paused by api:console-operator"), std::string::npos);
  EXPECT_EQ(call("POST", "/queues/job_type/sleepy/resume", operator_).status, 200);
  EXPECT_EQ(db_.query_value("SELECT paused FROM conveyor.queue_state WHERE kind = 'job_type' AND name = 'sleepy'"),
            "f");
  EXPECT_EQ(call("POST", "/queues/job_type/nosuch/pause", operator_).status, 404);
  EXPECT_EQ(call("POST", "/queues/schedule/sleepy/pause", operator_).status, 409) << "sleepy has no schedule";
  EXPECT_EQ(call("POST", "/queues/nonsense/sleepy/pause", operator_).status, 400);
}

}  // namespace
