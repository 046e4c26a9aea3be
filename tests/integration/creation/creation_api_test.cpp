// conveyor-creation as a black box: the real process against its own
// database and broker, spoken to over real HTTP.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "conveyor/error/error.hpp"
#include "conveyor/http/client.hpp"
#include "conveyor/testing/testing.hpp"

namespace {

namespace ct = conveyor::testing;
using conveyor::http::ClientResponse;
using nlohmann::json;
using namespace std::chrono_literals;

// The `sleep` type of the examples, with a schema to validate params against.
constexpr const char* kInsertTypes = R"sql(
INSERT INTO conveyor.job_type (name, command, priority, max_attempts, params_schema) VALUES
  ('sleep', '["sleep", "{seconds}"]', 3, 2,
   '{"type": "object", "properties": {"seconds": {"type": "integer", "minimum": 0}},
     "required": ["seconds"], "additionalProperties": false}'),
  ('other', '["true"]', 0, 1, '{}'),
  ('retired', '["true"]', 0, 1, '{}');
UPDATE conveyor.job_type SET enabled = false WHERE name = 'retired';
)sql";

class CreationApi : public ::testing::Test {
 protected:
  void SetUp() override {
    db_.exec(kInsertTypes);
    log_ = std::filesystem::temp_directory_path() / (ct::unique_name("creation") + ".log");
    port_ = ct::free_port();
    ct::ChildProcess::Options o;
    o.argv = {CONVEYOR_CREATION_PATH};
    o.env = {{"CONVEYOR_DATABASE_URL", db_.url()},
             {"CONVEYOR_KAFKA_BROKERS", broker_.bootstrap()},
             {"CONVEYOR_TOPIC_PREFIX", ct::unique_name("creation")},
             {"CONVEYOR_HTTP_PORT", std::to_string(port_)},
             {"CONVEYOR_DATA_DIR", std::filesystem::temp_directory_path().string()},
             // The rate limit has its own test (e2e Auth); here it would
             // only make the batch test's 1000 jobs depend on timing.
             {"CONVEYOR_SUBMIT_RATE", "0"},
             {"CONVEYOR_LOG_LEVEL", "debug"}};
    o.stdout_file = log_;
    service_ = std::make_unique<ct::ChildProcess>(o);
    const bool up = ct::wait_until(
        [&] {
          try {
            return request("GET", "/healthz").status == 200;
          } catch (const conveyor::Error&) {
            return false;  // not listening yet
          }
        },
        30s);
    ASSERT_TRUE(up) << "conveyor-creation did not answer /healthz; its log:\n" << service_log();
  }

  void TearDown() override {
    if (service_) {
      EXPECT_EQ(service_->stop(10s), 0) << "conveyor-creation did not exit cleanly:\n" << service_log();
    }
    if (HasFailure()) std::cerr << "conveyor-creation log:\n" << service_log();
    std::filesystem::remove(log_);
  }

  std::string service_log() const {
    std::ifstream in(log_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  ClientResponse request(const std::string& method, const std::string& path, const std::string& body = "",
                         std::map<std::string, std::string> headers = {}) {
    if (!body.empty()) headers.emplace("Content-Type", "application/json");
    // An operator token unless the test sends its own (issue 12).
    if (token_.empty()) token_ = ct::create_api_token(db_.url(), "creation-test-operator", "operator");
    headers.emplace("Authorization", "Bearer " + token_);
    return conveyor::http::http_request(method, "http://127.0.0.1:" + std::to_string(port_) + path, body, headers);
  }

  // Submits and expects 201; returns the job.
  json submit(const json& body) {
    auto r = request("POST", "/v1/jobs", body.dump());
    EXPECT_EQ(r.status, 201) << r.body;
    return json::parse(r.body);
  }

  // Moves a job through `statuses` by SQL, as the stage services would.
  void advance(std::int64_t id, const std::vector<std::string>& statuses) {
    for (const auto& s : statuses) {
      db_.exec("UPDATE conveyor.job SET status = '" + s + "' WHERE id = " + std::to_string(id));
    }
  }

  std::string status_of(std::int64_t id) {
    return db_.query_value("SELECT status FROM conveyor.job WHERE id = " + std::to_string(id));
  }

  // Expects a problem+json answer with `status`; returns its body.
  static json problem(const ClientResponse& r, int status) {
    EXPECT_EQ(r.status, status) << r.body;
    const auto ct_it = r.headers.find("content-type");
    EXPECT_TRUE(ct_it != r.headers.end() && ct_it->second.find("application/problem+json") != std::string::npos)
        << r.body;
    auto body = json::parse(r.body, nullptr, false);
    EXPECT_FALSE(body.is_discarded()) << r.body;
    if (body.is_discarded()) return json::object();
    EXPECT_EQ(body.value("status", 0), status) << r.body;
    return body;
  }

  static bool contains(const json& problem_body, const std::string& text) {
    return problem_body.value("detail", "").find(text) != std::string::npos;
  }

  ct::TestDatabase db_;
  ct::Broker broker_;
  std::filesystem::path log_;
  int port_ = 0;
  std::string token_;  // an operator token, made on first request
  std::unique_ptr<ct::ChildProcess> service_;
};

TEST_F(CreationApi, SubmitCreatesAnInitializedJobAndTheIdempotencyKeyReturnsIt) {
  auto r = request("POST", "/v1/jobs", R"({"job_type": "sleep", "params": {"seconds": 0}})",
                   {{"Idempotency-Key", "batch-1/item-7"}});
  ASSERT_EQ(r.status, 201) << r.body;
  const json job = json::parse(r.body);
  const auto id = job.at("id").get<std::int64_t>();
  EXPECT_EQ(r.headers["location"], "/v1/jobs/" + std::to_string(id));
  EXPECT_EQ(job.at("status"), "initialized");
  EXPECT_EQ(job.at("job_type"), "sleep");
  EXPECT_EQ(job.at("priority"), 3) << "the type's priority is the default";
  EXPECT_EQ(job.at("params"), json({{"seconds", 0}}));
  EXPECT_EQ(job.at("idempotency_key"), "batch-1/item-7");
  EXPECT_TRUE(job.at("depends_on").empty());
  EXPECT_TRUE(job.at("canceled_at").is_null());
  EXPECT_EQ(status_of(id), "initialized");

  r = request("POST", "/v1/jobs", R"({"job_type": "sleep", "params": {"seconds": 0}})",
              {{"Idempotency-Key", "batch-1/item-7"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body).at("id"), id);
  // The new job comes from the INSERT's RETURNING, the existing one from a
  // read: field for field the same document.
  EXPECT_EQ(json::parse(r.body), job);
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job"), "1");

  // Another key, explicit priority, a dependency and a start time.
  const json second = submit({{"job_type", "sleep"},
                              {"params", {{"seconds", 1}}},
                              {"priority", -5},
                              {"depends_on", {id}},
                              {"not_before", "2030-01-02T03:04:05Z"}});
  EXPECT_NE(second.at("id"), id);
  EXPECT_EQ(second.at("priority"), -5);
  EXPECT_EQ(second.at("depends_on"), json::array({id}));
  EXPECT_EQ(second.at("not_before"), "2030-01-02T03:04:05.000000Z");
  EXPECT_EQ(db_.query_value("SELECT depends_on::text FROM conveyor.job WHERE id = " + second.at("id").dump()),
            "{" + std::to_string(id) + "}");
}

TEST_F(CreationApi, BadRequestsAreProblemsNamingTheFieldAndTheServiceKeepsServing) {
  json p = problem(request("POST", "/v1/jobs", R"({"job_type": "sleep",)"), 400);
  EXPECT_TRUE(contains(p, "malformed JSON")) << p;

  p = problem(request("POST", "/v1/jobs", R"([1, 2])"), 400);
  EXPECT_EQ(p.value("field", ""), "body") << p;

  p = problem(request("POST", "/v1/jobs", R"({"job_type": "sleep", "params": "seconds=1"})"), 400);
  EXPECT_EQ(p.value("field", ""), "params") << p;
  EXPECT_TRUE(contains(p, "params: expected an object")) << p;

  p = problem(request("POST", "/v1/jobs", R"({"job_type": "sleep", "params": {"seconds": 1}, "priority": "x"})"), 400);
  EXPECT_EQ(p.value("field", ""), "priority") << p;

  p = problem(request("POST", "/v1/jobs", R"({"params": {}})"), 400);
  EXPECT_EQ(p.value("field", ""), "job_type") << p;

  p = problem(request("POST", "/v1/jobs", R"({"job_type": "sleep", "colour": "red"})"), 400);
  EXPECT_EQ(p.value("field", ""), "colour") << p;

  p = problem(request("POST", "/v1/jobs", R"({"job_type": "sleep", "depends_on": [1, -2]})"), 400);
  EXPECT_EQ(p.value("field", ""), "depends_on[1]") << p;

  p = problem(request("POST", "/v1/jobs", R"({"job_type": "sleep", "params": {"seconds": 1}, "not_before": "soon"})"),
              400);
  EXPECT_EQ(p.value("field", ""), "not_before") << p;

  p = problem(request("POST", "/v1/jobs", R"({"job_type": "sleep", "params": {"seconds": 1}})",
                      {{"Idempotency-Key", std::string(201, 'k')}}),
              400);
  EXPECT_EQ(p.value("field", ""), "Idempotency-Key") << p;

  p = problem(request("POST", "/v1/jobs", R"({"job_type": "nope"})"), 422);
  EXPECT_EQ(p.value("field", ""), "job_type") << p;
  EXPECT_TRUE(contains(p, "job_type: unknown job type 'nope'")) << p;

  p = problem(request("POST", "/v1/jobs", R"({"job_type": "retired"})"), 422);
  EXPECT_TRUE(contains(p, "unknown job type 'retired'")) << p;

  p = problem(request("POST", "/v1/jobs", R"({"job_type": "sleep", "params": {"seconds": "a"}})"), 422);
  EXPECT_EQ(p.value("field", ""), "params") << p;
  EXPECT_TRUE(contains(p, "seconds")) << p;
  EXPECT_FALSE(p.value("errors", json::array()).empty()) << p;

  p = problem(request("POST", "/v1/jobs", R"({"job_type": "sleep", "params": {"seconds": 1},
                                              "depends_on": [424242]})"),
              422);
  EXPECT_EQ(p.value("field", ""), "depends_on") << p;
  EXPECT_TRUE(contains(p, "424242")) << p;

  // A missing dependency is found before a date PostgreSQL refuses.
  p = problem(request("POST", "/v1/jobs", R"({"job_type": "sleep", "params": {"seconds": 1},
                                              "depends_on": [424242], "not_before": "2026-02-30T00:00:00Z"})"),
              422);
  EXPECT_EQ(p.value("field", ""), "depends_on") << p;

  // The server refuses bodies over 1 MiB before any handler sees them.
  const std::string big = R"({"job_type": "sleep", "params": {"pad": ")" + std::string(2 * 1024 * 1024, 'x') + R"("}})";
  problem(request("POST", "/v1/jobs", big), 413);

  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job"), "0");
  EXPECT_EQ(request("GET", "/healthz").status, 200);
  submit({{"job_type", "sleep"}, {"params", {{"seconds", 1}}}});
}

// POST /v1/jobs/batch: every job in one transaction and one statement, in
// the request's order; an idempotency key per item; any problem names its
// item and creates nothing.
TEST_F(CreationApi, ABatchCreatesEveryJobInOneTransactionOrNone) {
  const json batch = {
      {"jobs",
       {{{"job_type", "sleep"}, {"params", {{"seconds", 1}}}},
        {{"job_type", "other"}, {"priority", 7}, {"idempotency_key", "nightly/2026-12-04"}},
        {{"job_type", "sleep"}, {"params", {{"seconds", 2}}}, {"not_before", "2030-01-02T03:04:05Z"}}}}};
  auto r = request("POST", "/v1/jobs/batch", batch.dump());
  ASSERT_EQ(r.status, 201) << r.body;
  json body = json::parse(r.body);
  EXPECT_EQ(body.at("created"), 3);
  ASSERT_EQ(body.at("items").size(), 3u);
  std::vector<std::int64_t> ids;
  for (const auto& item : body.at("items")) {
    EXPECT_TRUE(item.at("created").get<bool>());
    EXPECT_EQ(item.at("job").at("status"), "initialized");
    ids.push_back(item.at("job").at("id").get<std::int64_t>());
  }
  // In the request's order: each item's own fields, the type's defaults.
  EXPECT_LT(ids[0], ids[1]);
  EXPECT_LT(ids[1], ids[2]);
  EXPECT_EQ(body["items"][0]["job"]["params"], json({{"seconds", 1}}));
  EXPECT_EQ(body["items"][0]["job"]["priority"], 3);
  EXPECT_EQ(body["items"][1]["job"]["job_type"], "other");
  EXPECT_EQ(body["items"][1]["job"]["priority"], 7);
  EXPECT_EQ(body["items"][1]["job"]["idempotency_key"], "nightly/2026-12-04");
  EXPECT_EQ(body["items"][2]["job"]["not_before"], "2030-01-02T03:04:05.000000Z");
  // Each document is the job as a read returns it.
  for (std::size_t i = 0; i < 3; ++i) {
    const json read = json::parse(request("GET", "/v1/jobs/" + std::to_string(ids[i])).body);
    EXPECT_EQ(read.at("status"), "initialized");
    EXPECT_EQ(read.at("params"), body["items"][i]["job"]["params"]);
    EXPECT_EQ(read.at("created_at"), body["items"][i]["job"]["created_at"]);
  }
  // One transaction: one xmin for the jobs, and a history row and an event each.
  EXPECT_EQ(db_.query_value("SELECT count(DISTINCT xmin::text) FROM conveyor.job"), "1");
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job_status_change WHERE to_status = 'initialized'"), "3");
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.outbox WHERE type = 'io.conveyor.job.initialized'"), "3");

  // Again: the keyed job is the first one (created false), the others are new.
  r = request("POST", "/v1/jobs/batch", batch.dump());
  ASSERT_EQ(r.status, 201) << r.body;
  body = json::parse(r.body);
  EXPECT_EQ(body.at("created"), 2);
  EXPECT_TRUE(body["items"][0]["created"].get<bool>());
  EXPECT_FALSE(body["items"][1]["created"].get<bool>());
  EXPECT_EQ(body["items"][1]["job"]["id"], ids[1]);
  EXPECT_TRUE(body["items"][2]["created"].get<bool>());
  // Only keyed jobs that exist: 200, nothing created.
  r = request("POST", "/v1/jobs/batch",
              json({{"jobs", {{{"job_type", "other"}, {"idempotency_key", "nightly/2026-12-04"}}}}}).dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body).at("created"), 0);
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job"), "5");

  // Any problem: its item named, nothing created.
  const auto refused = [&](const json& jobs, int status, const std::string& field, const std::string& text) {
    const json p = problem(request("POST", "/v1/jobs/batch", json({{"jobs", jobs}}).dump()), status);
    EXPECT_EQ(p.value("field", ""), field) << p;
    EXPECT_TRUE(contains(p, text)) << p;
  };
  const json ok = {{"job_type", "sleep"}, {"params", {{"seconds", 1}}}};
  refused({ok, {{"job_type", "nope"}}}, 422, "jobs[1].job_type", "jobs[1].job_type: unknown job type 'nope'");
  refused({ok, ok, {{"job_type", "sleep"}, {"params", {{"seconds", "a"}}}}}, 422, "jobs[2].params", "seconds");
  // Each entry of a 422's errors names its item too.
  const json bad_params =
      problem(request("POST", "/v1/jobs/batch",
                      json({{"jobs", {ok, {{"job_type", "sleep"}, {"params", {{"seconds", "a"}}}}}}}).dump()),
              422);
  ASSERT_FALSE(bad_params.value("errors", json::array()).empty()) << bad_params;
  for (const auto& e : bad_params["errors"]) {
    EXPECT_TRUE(e.get<std::string>().starts_with("jobs[1].params.seconds")) << bad_params;
  }
  refused({ok, {{"job_type", "sleep"}, {"params", {{"seconds", 1}}}, {"depends_on", {ids[0], 424242}}}}, 422,
          "jobs[1].depends_on", "no such job(s): 424242");
  refused({{{"job_type", "other"}, {"idempotency_key", "k"}}, {{"job_type", "other"}, {"idempotency_key", "k"}}}, 422,
          "jobs[1].idempotency_key", "the same as jobs[0]'s");
  refused({ok, {{"job_type", "sleep"}, {"priority", "high"}}}, 400, "jobs[1].priority", "expected an integer");
  refused({ok, {{"job_type", "sleep"}, {"colour", "red"}}}, 400, "jobs[1].colour", "unknown field");
  refused({ok, {{"job_type", "other"}, {"idempotency_key", ""}}}, 400, "jobs[1].idempotency_key", "must not be empty");
  refused({ok, 42}, 400, "jobs[1]", "jobs[1]: expected a job (a JSON object), got an integer");
  refused({ok, {{"job_type", "other"}, {"after", {1}}}}, 400, "jobs[1].after[0]", "out of range (0 to 0)");
  refused({{{"job_type", "other"}, {"after", {0}}}}, 400, "jobs[0].after[0]",
          "the first job of a batch has no earlier");
  refused({ok, {{"job_type", "other"}, {"after", "0"}}}, 400, "jobs[1].after", "expected an array");
  refused(json::array(), 400, "jobs", "must not be empty");
  refused(json::array_t(1001, ok), 400, "jobs", "at most 1000 per request");
  // A batch's keys are its items': the header would be ignored, and a
  // retried batch would create every job again.
  json p = problem(request("POST", "/v1/jobs/batch", json({{"jobs", {ok}}}).dump(), {{"Idempotency-Key", "k"}}), 400);
  EXPECT_EQ(p.value("field", ""), "Idempotency-Key") << p;
  p = problem(request("POST", "/v1/jobs/batch", R"({"jobs": {"job_type": "sleep"}})"), 400);
  EXPECT_EQ(p.value("field", ""), "jobs") << p;
  p = problem(request("POST", "/v1/jobs/batch", R"([{"job_type": "sleep"}])"), 400);
  EXPECT_EQ(p.value("field", ""), "body") << p;
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job"), "5");

  // 1000 jobs, the most a request may carry, in one go.
  r = request("POST", "/v1/jobs/batch", json({{"jobs", json::array_t(1000, ok)}}).dump());
  ASSERT_EQ(r.status, 201) << r.body.substr(0, 300);
  EXPECT_EQ(json::parse(r.body).at("created"), 1000);
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job"), "1005");

  // A chain in one request: each job depends on the ones it is after, and
  // on what its depends_on names; one transaction still.
  r = request(
      "POST", "/v1/jobs/batch",
      json({{"jobs",
             {ok,
              {{"job_type", "other"}, {"after", {0}}},
              {{"job_type", "sleep"}, {"params", {{"seconds", 1}}}, {"after", {1, 0}}, {"depends_on", {ids[0]}}}}}})
          .dump());
  ASSERT_EQ(r.status, 201) << r.body;
  body = json::parse(r.body);
  const auto chain0 = body["items"][0]["job"]["id"].get<std::int64_t>();
  const auto chain1 = body["items"][1]["job"]["id"].get<std::int64_t>();
  EXPECT_TRUE(body["items"][0]["job"]["depends_on"].empty());
  EXPECT_EQ(body["items"][1]["job"]["depends_on"], json::array({chain0}));
  EXPECT_EQ(body["items"][2]["job"]["depends_on"], json::array({ids[0], chain1, chain0}));
  EXPECT_EQ(
      db_.query_value("SELECT count(DISTINCT xmin::text) FROM conveyor.job WHERE id >= " + std::to_string(chain0)),
      "1");
}

TEST_F(CreationApi, ParametersGateSubmissions) {
  auto r = request("PATCH", "/v1/parameters",
                   R"({"accepting_new_jobs": false, "not_accepting_reason": "maintenance until 14:00"})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(db_.query_value("SELECT accepting_new_jobs FROM conveyor.system_parameters"), "f");
  // The change is the token's doing (issue 12), not the service's.
  EXPECT_EQ(db_.query_value("SELECT updated_by FROM conveyor.system_parameters"), "api:creation-test-operator");
  r = request("GET", "/v1/parameters");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body).at("accepting_new_jobs"), false) << r.body;

  json p = problem(request("POST", "/v1/jobs", R"({"job_type": "sleep", "params": {"seconds": 1}})"), 503);
  EXPECT_TRUE(contains(p, "maintenance until 14:00")) << p;

  // Bad patches name the column and change nothing.
  p = problem(request("PATCH", "/v1/parameters", R"({"accepting_new_jobs": true, "id": false})"), 400);
  EXPECT_EQ(p.value("field", ""), "id") << p;
  p = problem(request("PATCH", "/v1/parameters", R"({"worker_concurrency": "many"})"), 400);
  EXPECT_EQ(p.value("field", ""), "worker_concurrency") << p;
  p = problem(request("PATCH", "/v1/parameters", R"({"worker_concurrency": 0})"), 400);
  EXPECT_EQ(p.value("field", ""), "worker_concurrency") << p;
  p = problem(request("PATCH", "/v1/parameters", R"({"min_number_of_worker_instances": 9})"), 400);
  EXPECT_EQ(p.value("field", ""), "min_number_of_worker_instances") << p;
  EXPECT_EQ(db_.query_value("SELECT accepting_new_jobs FROM conveyor.system_parameters"), "f");

  // Checks judge the final row: raising min and max together is fine.
  r = request("PATCH", "/v1/parameters",
              R"({"accepting_new_jobs": true, "min_number_of_worker_instances": 6,
                  "max_number_of_worker_instances": 8, "job_types_list": ["sleep"]})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(db_.query_value("SELECT min_number_of_worker_instances || '/' || "
                            "max_number_of_worker_instances FROM conveyor.system_parameters"),
            "6/8");

  // A type outside job_types_list is refused; one inside is accepted.
  p = problem(request("POST", "/v1/jobs", R"({"job_type": "other"})"), 422);
  EXPECT_EQ(p.value("field", ""), "job_type") << p;
  EXPECT_TRUE(contains(p, "job_types_list")) << p;
  submit({{"job_type", "sleep"}, {"params", {{"seconds", 1}}}});

  r = request("PATCH", "/v1/parameters", R"({"job_types_list": null})");
  ASSERT_EQ(r.status, 200) << r.body;
  submit({{"job_type", "other"}});
}

// Runbook 003's pause "takes effect immediately": a change another process
// commits (conveyor system pause, params set, psql) gates the next request,
// though this service hears of it only later, by its event.
TEST_F(CreationApi, AParameterChangeMadeElsewhereGatesTheNextSubmissionAtOnce) {
  submit({{"job_type", "sleep"}, {"params", {{"seconds", 1}}}});  // the service's copy is current
  const std::string job = R"({"job_type": "sleep", "params": {"seconds": 1}})";
  const std::string batch = R"({"jobs": [{"job_type": "sleep", "params": {"seconds": 1}}]})";
  for (int round = 0; round < 3; ++round) {
    db_.exec("UPDATE conveyor.system_parameters SET accepting_new_jobs = false, not_accepting_reason = 'reboot " +
             std::to_string(round) + "'");
    json p = problem(request("POST", "/v1/jobs", job), 503);
    EXPECT_TRUE(contains(p, "reboot " + std::to_string(round))) << p;
    p = problem(request("POST", "/v1/jobs/batch", batch), 503);
    EXPECT_TRUE(contains(p, "reboot " + std::to_string(round))) << p;
    db_.exec("UPDATE conveyor.system_parameters SET accepting_new_jobs = true, not_accepting_reason = NULL");
    auto r = request("POST", "/v1/jobs", job);
    EXPECT_EQ(r.status, 201) << "unpaused: " << r.body;
    r = request("POST", "/v1/jobs/batch", batch);
    EXPECT_EQ(r.status, 201) << "unpaused: " << r.body;
  }
  db_.exec("UPDATE conveyor.system_parameters SET job_types_list = '{other}'");
  const json p = problem(request("POST", "/v1/jobs", job), 422);
  EXPECT_TRUE(contains(p, "job_types_list")) << p;
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job"), "7") << "1 + 3 rounds of 2, none while paused";
}

TEST_F(CreationApi, ListFiltersAndPaginatesNewestFirst) {
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(submit({{"job_type", "sleep"}, {"params", {{"seconds", i}}}}).at("id"));
  }
  ids.push_back(submit({{"job_type", "other"}}).at("id"));
  advance(ids[0], {"configured"});
  advance(ids[1], {"configured"});

  auto r = request("GET", "/v1/jobs");
  ASSERT_EQ(r.status, 200) << r.body;
  json page = json::parse(r.body);
  EXPECT_EQ(page.at("total"), 6);
  EXPECT_EQ(page.at("page"), 1);
  EXPECT_EQ(page.at("size"), 50);
  ASSERT_EQ(page.at("items").size(), 6u);
  EXPECT_EQ(page.at("items")[0].at("id"), ids[5]);
  EXPECT_EQ(page.at("items")[5].at("id"), ids[0]);

  page = json::parse(request("GET", "/v1/jobs?status=configured").body);
  EXPECT_EQ(page.at("total"), 2);
  ASSERT_EQ(page.at("items").size(), 2u);
  EXPECT_EQ(page.at("items")[0].at("id"), ids[1]);

  page = json::parse(request("GET", "/v1/jobs?type=sleep&status=initialized").body);
  EXPECT_EQ(page.at("total"), 3);
  page = json::parse(request("GET", "/v1/jobs?status=configured,initialized").body);
  EXPECT_EQ(page.at("total"), 6);
  page = json::parse(request("GET", "/v1/jobs?type=sleep&status=configured,done").body);
  EXPECT_EQ(page.at("total"), 2);

  page = json::parse(request("GET", "/v1/jobs?type=sleep&size=2&page=2").body);
  EXPECT_EQ(page.at("total"), 5);
  ASSERT_EQ(page.at("items").size(), 2u);
  EXPECT_EQ(page.at("items")[0].at("id"), ids[2]);
  EXPECT_EQ(page.at("items")[1].at("id"), ids[1]);

  page = json::parse(request("GET", "/v1/jobs?page=9").body);
  EXPECT_EQ(page.at("total"), 6);
  EXPECT_TRUE(page.at("items").empty());

  json p = problem(request("GET", "/v1/jobs?status=finished"), 400);
  EXPECT_EQ(p.value("field", ""), "status") << p;
  p = problem(request("GET", "/v1/jobs?status=done,finished"), 400);
  EXPECT_EQ(p.value("field", ""), "status") << p;
  p = problem(request("GET", "/v1/jobs?size=501"), 400);
  EXPECT_EQ(p.value("field", ""), "size") << p;
  p = problem(request("GET", "/v1/jobs?page=0"), 400);
  EXPECT_EQ(p.value("field", ""), "page") << p;
}

TEST_F(CreationApi, GetReturnsTheJobWithItsHistory) {
  const std::int64_t id = submit({{"job_type", "sleep"}, {"params", {{"seconds", 1}}}}).at("id");
  advance(id, {"configured", "ready"});

  auto r = request("GET", "/v1/jobs/" + std::to_string(id));
  ASSERT_EQ(r.status, 200) << r.body;
  const json job = json::parse(r.body);
  EXPECT_EQ(job.at("status"), "ready");
  const json& history = job.at("history");
  ASSERT_EQ(history.size(), 3u) << history;
  EXPECT_TRUE(history[0].at("from_status").is_null());
  EXPECT_EQ(history[0].at("to_status"), "initialized");
  EXPECT_EQ(history[0].at("actor"), "api:creation-test-operator");
  EXPECT_EQ(history[1].at("from_status"), "initialized");
  EXPECT_EQ(history[1].at("to_status"), "configured");
  EXPECT_EQ(history[2].at("to_status"), "ready");
  EXPECT_FALSE(history[2].at("at").get<std::string>().empty());

  json p = problem(request("GET", "/v1/jobs/abc"), 400);
  EXPECT_EQ(p.value("field", ""), "id") << p;
  p = problem(request("GET", "/v1/jobs/987654"), 404);
  EXPECT_TRUE(contains(p, "job 987654")) << p;
}

TEST_F(CreationApi, CancelStopsJobsThatAreNotRunning) {
  const std::int64_t queued = submit({{"job_type", "sleep"}, {"params", {{"seconds", 1}}}}).at("id");
  advance(queued, {"configured", "ready", "queued"});
  auto r = request("POST", "/v1/jobs/" + std::to_string(queued) + "/cancel");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body).at("status"), "canceled");
  EXPECT_FALSE(json::parse(r.body).at("canceled_at").is_null());
  EXPECT_EQ(status_of(queued), "canceled");
  // Again: nothing more to do.
  r = request("POST", "/v1/jobs/" + std::to_string(queued) + "/cancel");
  EXPECT_EQ(r.status, 200) << r.body;

  const std::int64_t done = submit({{"job_type", "sleep"}, {"params", {{"seconds", 1}}}}).at("id");
  advance(done, {"configured", "ready", "queued", "started", "processed", "done"});
  json p = problem(request("POST", "/v1/jobs/" + std::to_string(done) + "/cancel"), 409);
  EXPECT_TRUE(contains(p, "job " + std::to_string(done) + " is done")) << p;
  EXPECT_EQ(status_of(done), "done");

  // A running job is left to its worker, which sees canceled_at.
  const std::int64_t running = submit({{"job_type", "sleep"}, {"params", {{"seconds", 1}}}}).at("id");
  advance(running, {"configured", "ready", "queued", "started"});
  r = request("POST", "/v1/jobs/" + std::to_string(running) + "/cancel");
  ASSERT_EQ(r.status, 202) << r.body;
  EXPECT_EQ(status_of(running), "started");
  EXPECT_EQ(db_.query_value("SELECT canceled_at IS NOT NULL FROM conveyor.job WHERE id = " + std::to_string(running)),
            "t");

  // An error status goes through error_checked.
  const std::int64_t failed = submit({{"job_type", "sleep"}, {"params", {{"seconds", 1}}}}).at("id");
  advance(failed, {"configured", "ready", "queued", "started", "failed"});
  r = request("POST", "/v1/jobs/" + std::to_string(failed) + "/cancel");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(db_.query_value("SELECT string_agg(to_status, ',' ORDER BY id) FROM "
                            "conveyor.job_status_change WHERE job_id = " +
                            std::to_string(failed) +
                            " AND id > (SELECT max(id) FROM conveyor.job_status_change WHERE "
                            "to_status = 'failed')"),
            "error_checked,canceled");

  problem(request("POST", "/v1/jobs/555555/cancel"), 404);
}

TEST_F(CreationApi, RetryRestartsFailedAndCanceledJobs) {
  const std::int64_t id = submit({{"job_type", "sleep"}, {"params", {{"seconds", 1}}}}).at("id");
  advance(id, {"configured", "ready", "queued", "started"});
  db_.exec(
      "UPDATE conveyor.job SET status = 'failed', attempt = 1, error_subtype = 'exit_code', "
      "error_message = 'exited with 1' WHERE id = " +
      std::to_string(id));

  auto r = request("POST", "/v1/jobs/" + std::to_string(id) + "/retry");
  ASSERT_EQ(r.status, 200) << r.body;
  json job = json::parse(r.body);
  EXPECT_EQ(job.at("status"), "initialized");
  EXPECT_EQ(job.at("attempt"), 0);
  EXPECT_TRUE(job.at("error_subtype").is_null());
  EXPECT_TRUE(job.at("error_message").is_null());
  job = json::parse(request("GET", "/v1/jobs/" + std::to_string(id)).body);
  const json& history = job.at("history");
  ASSERT_GE(history.size(), 3u);
  const auto n = history.size();
  EXPECT_EQ(history[n - 3].at("to_status"), "failed");
  EXPECT_EQ(history[n - 3].at("error_subtype"), "exit_code");
  EXPECT_EQ(history[n - 2].at("to_status"), "error_checked");
  EXPECT_EQ(history[n - 1].at("to_status"), "initialized");

  // Not retriable from initialized.
  json p = problem(request("POST", "/v1/jobs/" + std::to_string(id) + "/retry"), 409);
  EXPECT_TRUE(contains(p, "initialized")) << p;

  // Failed in publication: resumes at processed, keeping the result.
  const std::int64_t pub = submit({{"job_type", "sleep"}, {"params", {{"seconds", 1}}}}).at("id");
  advance(pub, {"configured", "ready", "queued", "started", "processed"});
  db_.exec(
      "UPDATE conveyor.job SET status = 'internal_error', error_subtype = "
      "'publication_failed' WHERE id = " +
      std::to_string(pub));
  r = request("POST", "/v1/jobs/" + std::to_string(pub) + "/retry");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body).at("status"), "processed");

  // Canceled: restarts at initialized with canceled_at cleared.
  const std::int64_t canceled = submit({{"job_type", "sleep"}, {"params", {{"seconds", 1}}}}).at("id");
  ASSERT_EQ(request("POST", "/v1/jobs/" + std::to_string(canceled) + "/cancel").status, 200);
  r = request("POST", "/v1/jobs/" + std::to_string(canceled) + "/retry");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body).at("status"), "initialized");
  EXPECT_TRUE(json::parse(r.body).at("canceled_at").is_null());
}

// Issue 9: requests that crashed conveyor-creation or slipped past its checks.
TEST_F(CreationApi, HostileBodiesAreRefusedAndTheServiceLives) {
  auto nest = [](int depth) {
    std::string s;
    for (int i = 0; i < depth; ++i) s += "{\"a\":";
    s += "1";
    for (int i = 0; i < depth; ++i) s += "}";
    return s;
  };
  // Deeply nested params (the recursive copy crashed the service).
  const std::string deep = R"({"job_type": "other", "params": )" + nest(50000) + "}";
  ASSERT_LT(deep.size(), 300u * 1024);
  EXPECT_TRUE(contains(problem(request("POST", "/v1/jobs", deep), 400), "nested deeper than 64"));
  // ... and nested image_tags in PATCH /v1/parameters.
  EXPECT_TRUE(contains(problem(request("PATCH", "/v1/parameters", R"({"image_tags": )" + nest(50000) + "}"), 400),
                       "nested deeper than 64"));
  const json shallow = problem(request("PATCH", "/v1/parameters", R"({"image_tags": {"tile": {"v": 1}}})"), 400);
  EXPECT_EQ(shallow.value("field", ""), "image_tags") << shallow.dump();
  EXPECT_TRUE(contains(shallow, "image_tags.tile: expected a string")) << shallow.dump();

  // A priority of 2^64 - k was stored as -k.
  for (const char* p : {"18446744073709551615", "18446744073709551000", "2147483648", "-2147483649"}) {
    const json body =
        problem(request("POST", "/v1/jobs", std::string(R"({"job_type": "other", "priority": )") + p + "}"), 400);
    EXPECT_EQ(body.value("field", ""), "priority") << p << ": " << body.dump();
  }
  // A NUL inside a string truncated it ("sleep\u0000x" submitted "sleep").
  EXPECT_TRUE(contains(problem(request("POST", "/v1/jobs", R"({"job_type": "other\u0000x", "params": {}})"), 400),
                       "NUL character"));
  EXPECT_TRUE(contains(problem(request("POST", "/v1/jobs", R"({"job_type": "other", "params": {"k\u0000": 1}})"), 400),
                       "NUL character"));
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job"), "0") << "nothing was stored";

  // Non-JSON content types are refused (and with them simple cross-site posts).
  const auto text = conveyor::http::http_request("POST", "http://127.0.0.1:" + std::to_string(port_) + "/v1/jobs",
                                                 R"({"job_type": "other"})", {{"Content-Type", "text/plain"}});
  problem(text, 415);
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job"), "0");

  // Still serving, and a good submission still works.
  EXPECT_EQ(request("GET", "/healthz").status, 200);
  submit({{"job_type", "other"}, {"priority", 2147483647}});
}

// A submission reads its job type once and then checks, in its one
// statement, that the type's row is unchanged (model::submit_job_at_once):
// a type changed between two submissions applies to the second.
TEST_F(CreationApi, AJobTypeChangedBetweenSubmissionsAppliesToTheNext) {
  const json first = submit({{"job_type", "sleep"}, {"params", {{"seconds", 0}}}});
  EXPECT_EQ(first.at("priority"), 3);
  EXPECT_EQ(db_.query_value("SELECT actor FROM conveyor.job_status_change WHERE job_id = " + first.at("id").dump()),
            "api:creation-test-operator");

  db_.exec("UPDATE conveyor.job_type SET priority = 9, max_attempts = 4 WHERE name = 'sleep'");
  const json second = submit({{"job_type", "sleep"}, {"params", {{"seconds", 0}}}});
  EXPECT_EQ(second.at("priority"), 9);
  EXPECT_EQ(second.at("max_attempts"), 4);

  // A schema that now takes what it refused, and then refuses what it took.
  db_.exec(
      "UPDATE conveyor.job_type SET params_schema = "
      "'{\"properties\": {\"seconds\": {\"type\": \"integer\"}, \"minutes\": {\"type\": \"integer\"}}}' "
      "WHERE name = 'sleep'");
  EXPECT_EQ(submit({{"job_type", "sleep"}, {"params", {{"minutes", 1}}}}).at("params"), json({{"minutes", 1}}));
  db_.exec(
      "UPDATE conveyor.job_type SET params_schema = "
      "'{\"properties\": {\"seconds\": {\"type\": \"integer\"}, \"minutes\": {\"type\": \"string\"}}}' "
      "WHERE name = 'sleep'");
  EXPECT_TRUE(contains(problem(request("POST", "/v1/jobs", R"({"job_type": "sleep", "params": {"minutes": 1}})"), 422),
                       "params.minutes"));

  db_.exec("UPDATE conveyor.job_type SET enabled = false WHERE name = 'sleep'");
  EXPECT_TRUE(
      contains(problem(request("POST", "/v1/jobs", R"({"job_type": "sleep", "params": {}})"), 422), "(disabled)"));
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job"), "3");
}

TEST_F(CreationApi, JobTypesAreListed) {
  auto r = request("GET", "/v1/job-types");
  ASSERT_EQ(r.status, 200) << r.body;
  const json items = json::parse(r.body).at("items");
  ASSERT_EQ(items.size(), 3u) << r.body;
  r = request("GET", "/v1/job-types/sleep");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body).at("name"), "sleep");
  problem(request("GET", "/v1/job-types/nope"), 404);
}

}  // namespace
