#pragma once
// Helpers shared by the e2e tests: submitting through the REST API, reading
// job statuses, and checking every job's history against DESIGN §3.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "conveyor/http/client.hpp"
#include "conveyor/model/status.hpp"
#include "conveyor/testing/stack.hpp"

namespace conveyor::e2e {

using json = nlohmann::json;

// A job-types file with one type, `sleep` (conveyor-example-task sleeps
// params.seconds, 0 to timeout_s), for a Stack's Options::job_types_file.
// Removed by the destructor.
class SleepTypeFile {
 public:
  SleepTypeFile(int timeout_s, int max_attempts, json sinks)
      : path_(std::filesystem::temp_directory_path() / (testing::unique_name("sleep-type") + ".json")) {
    json sleep = {
        {"name", "sleep"},
        {"description", "sleeps params.seconds"},
        {"command", {"conveyor-example-task", "sleep", "{seconds}"}},
        {"timeout_s", timeout_s},
        {"max_attempts", max_attempts},
        {"retry_backoff_s", 1},
        {"params_schema",
         {{"type", "object"},
          {"properties", {{"seconds", {{"type", "number"}, {"minimum", 0}, {"maximum", timeout_s}}}}},
          {"required", {"seconds"}}}},
        {"sinks", std::move(sinks)},
    };
    std::ofstream(path_) << json{{"job_types", {sleep}}}.dump(2);
  }
  ~SleepTypeFile() {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  SleepTypeFile(const SleepTypeFile&) = delete;
  SleepTypeFile& operator=(const SleepTypeFile&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline json file_sink() { return json{{"kind", "file"}, {"dir", "catalog"}}; }

inline json submit(const testing::Stack& stack, const json& body, int expect_status = 201) {
  auto r = http::http_request("POST", stack.api_url() + "/v1/jobs", body.dump(), stack.api_headers(true));
  EXPECT_EQ(r.status, expect_status) << r.body;
  return json::parse(r.body);
}

// Checks that the history of every job is a valid walk of DESIGN §3: starts
// with the insert, each change starts where the previous ended, each is in
// the table — so no transition is recorded twice.
inline void expect_valid_histories(testing::Stack& stack) {
  auto rows = stack.db().query(
      "SELECT job_id, coalesce(from_status, ''), to_status FROM conveyor.job_status_change ORDER BY job_id, id");
  std::string job, last;
  for (const auto& row : rows) {
    if (row[0] != job) {
      job = row[0];
      EXPECT_EQ(row[1], "") << "job " << job << " history must start with the insert";
      auto to = model::parse_status(row[2]);
      ASSERT_TRUE(to) << row[2];
      EXPECT_TRUE(model::is_valid_initial(*to)) << job;
    } else {
      EXPECT_EQ(row[1], last) << "job " << job << ": a change from " << row[1] << " after " << last;
      auto from = model::parse_status(row[1]);
      auto to = model::parse_status(row[2]);
      ASSERT_TRUE(from && to);
      EXPECT_TRUE(model::is_valid_transition(*from, *to)) << job << ": " << row[1] << " -> " << row[2];
    }
    last = row[2];
  }
}

inline std::string status_of(testing::Stack& stack, const std::string& id) {
  return stack.db().query_value("SELECT status FROM conveyor.job WHERE id = " + id);
}

inline bool all_terminal(testing::Stack& stack) {
  return stack.db().query_value(
             "SELECT count(*) FROM conveyor.job WHERE status NOT IN ('done','failed','canceled','internal_error')") ==
         "0";
}

}  // namespace conveyor::e2e
