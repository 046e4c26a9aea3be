// Waves that advance themselves (issue 13, item 8; runbook 001 without the
// hand work): after a long stop, jobs of three chained types wait (wa ->
// wb -> wc by triggers). `conveyor system waves --auto --threshold 2` admits
// wave 1; conveyor-monitor admits wave 2 once wa's backlog is at most 2,
// wave 3 once wb's is, and at the end sets job_types_list back to NULL.
// Real processes: the job path, workers and the monitor, on real PostgreSQL.
// What happened is read back from the history (system_parameters_history,
// job_status_change), not from timing.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "conveyor/testing/stack.hpp"
#include "e2e.hpp"

namespace {

using conveyor::e2e::submit;
using conveyor::testing::Stack;
using conveyor::testing::wait_until;
using json = nlohmann::json;
using namespace std::chrono_literals;

// wa -> wb -> wc: each sleeps params.seconds, a done job triggers one of the next type.
class ChainTypesFile {
 public:
  ChainTypesFile()
      : path_(std::filesystem::temp_directory_path() / (conveyor::testing::unique_name("wave-types") + ".json")) {
    const json schema = {{"type", "object"},
                         {"properties", {{"seconds", {{"type", "number"}, {"minimum", 0}, {"maximum", 10}}}}},
                         {"required", {"seconds"}}};
    auto type = [&](const std::string& name, const std::string& next) {
      json t = {{"name", name},
                {"command", {"conveyor-example-task", "sleep", "{seconds}"}},
                {"timeout_s", 60},
                {"params_schema", schema}};
      t["triggers"] =
          next.empty() ? json::array() : json::array({{{"job_type", next}, {"params", {{"seconds", 0.2}}}}});
      return t;
    };
    std::ofstream(path_) << json{{"job_types", {type("wa", "wb"), type("wb", "wc"), type("wc", "")}}}.dump(2);
  }
  ~ChainTypesFile() {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// The backlog of `type` (jobs in initialized..started) at the moment of the
// system_parameters_history row `history_id`, from each job's history.
constexpr const char* kBacklogAt =
    "SELECT count(*) FROM conveyor.job j, conveyor.system_parameters_history h "
    "WHERE h.id = $ID AND j.job_type = '$TYPE' AND ("
    "  SELECT c.to_status FROM conveyor.job_status_change c WHERE c.job_id = j.id AND c.at <= h.changed_at "
    "  ORDER BY c.id DESC LIMIT 1) IN ('initialized', 'configured', 'ready', 'queued', 'started')";

std::string replace(std::string s, const std::string& from, const std::string& to) {
  for (auto p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
  return s;
}

TEST(Waves, ThreeWaveChainAdvancesByItself) {
  ChainTypesFile types;
  Stack::Options o;
  o.services = {"creation", "configuration", "execution", "publication", "monitor"};
  o.workers = 2;
  o.job_types_file = types.path();
  o.env = {{"CONVEYOR_POLL_INTERVAL_MS", "200"}};
  // The system as it comes back after a long stop: only wa handled, and a
  // backlog of wb jobs from before the stop.
  o.setup_sql =
      "UPDATE conveyor.system_parameters SET job_types_list = '{wa}'; "
      "INSERT INTO conveyor.job (job_type, params) SELECT 'wb', '{\"seconds\": 0.2}' FROM generate_series(1, 6)";
  Stack stack(o);
  for (int i = 0; i < 8; ++i) submit(stack, {{"job_type", "wa"}, {"params", {{"seconds", 0.3}}}});

  const auto started = stack.cli({"system", "waves", "--auto", "--threshold", "2"});
  ASSERT_EQ(started.status, 0) << started.output;
  ASSERT_NE(started.output.find("wave 1 of 3 admitted (wa)"), std::string::npos) << started.output;

  ASSERT_TRUE(wait_until([&] { return stack.db().query_value("SELECT state FROM conveyor.wave_run") == "done"; }, 90s))
      << stack.db().query_value("SELECT current || ' ' || state FROM conveyor.wave_run") << "\n"
      << stack.cli({"system", "waves"}).output << stack.logs_tail();
  EXPECT_EQ(stack.db().query_value("SELECT coalesce(job_types_list::text, 'NULL') FROM conveyor.system_parameters"),
            "NULL")
      << "every job type is handled again at the end";

  // The admissions in order, from the parameters' history.
  const auto steps = stack.db().query(
      "SELECT id, coalesce(new_values->>'job_types_list', 'NULL') FROM conveyor.system_parameters_history "
      "WHERE 'job_types_list' = ANY(changed_keys) ORDER BY id");
  ASSERT_EQ(steps.size(), 4u) << "the set-up's {wa} (wave 1 sets the same: no change), wave 2, wave 3, NULL";
  EXPECT_EQ(json::parse(steps[0][1]), json({"wa"}));
  EXPECT_EQ(json::parse(steps[1][1]), json({"wa", "wb"}));
  EXPECT_EQ(json::parse(steps[2][1]), json({"wa", "wb", "wc"}));
  EXPECT_EQ(steps[3][1], "NULL");

  // Each wave was admitted only once the one before it had drained to the
  // threshold, and no job of a wave was queued before its wave.
  const std::string wave2 = steps[1][0], wave3 = steps[2][0];
  EXPECT_LE(std::stoi(stack.db().query_value(replace(replace(kBacklogAt, "$ID", wave2), "$TYPE", "wa"))), 2);
  EXPECT_LE(std::stoi(stack.db().query_value(replace(replace(kBacklogAt, "$ID", wave3), "$TYPE", "wb"))), 2)
      << "wc admitted while wb's backlog exceeded the threshold";
  auto queued_before = [&](const std::string& type, const std::string& history_id) {
    return stack.db().query_value(
        "SELECT count(*) FROM conveyor.job_status_change c JOIN conveyor.job j ON j.id = c.job_id, "
        "conveyor.system_parameters_history h WHERE h.id = " +
        history_id + " AND j.job_type = '" + type + "' AND c.to_status = 'queued' AND c.at < h.changed_at");
  };
  EXPECT_EQ(queued_before("wb", wave2), "0") << "a wb job was queued before wave 2";
  EXPECT_EQ(queued_before("wc", wave3), "0") << "a wc job was queued before wave 3";
  // And the whole chain ran: 8 wa, 6 + 8 wb, one wc for each wb.
  EXPECT_TRUE(wait_until(
      [&] {
        return stack.db().query_value("SELECT count(*) FROM conveyor.job WHERE job_type = 'wc' AND status = 'done'") ==
               "14";
      },
      60s))
      << stack.db().query_value(
             "SELECT string_agg(job_type || ' ' || status || ' ' || n, ', ') FROM ("
             "SELECT job_type, status, count(*) AS n FROM conveyor.job GROUP BY 1, 2) c");

  const auto status = stack.cli({"system", "status"});
  EXPECT_EQ(status.output.find("(auto"), std::string::npos) << "a finished run is not shown: " << status.output;
}

}  // namespace
