#pragma once
// The job type the worker pool tests run: `sleep` with two attempts (a lost
// worker costs one), no retry delay and no sinks.
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

namespace conveyor::testing {

// Writes {"job_types": [sleep]} to <dir>/job-types.json and returns its path.
inline std::filesystem::path write_sleep_job_type(const std::filesystem::path& dir) {
  const nlohmann::json sleep = {
      {"name", "sleep"},
      {"description", "sleeps params.seconds"},
      {"command", {"conveyor-example-task", "sleep", "{seconds}"}},
      {"timeout_s", 120},
      {"max_attempts", 2},
      {"retry_backoff_s", 0},
      {"params_schema",
       {{"type", "object"},
        {"properties", {{"seconds", {{"type", "number"}, {"minimum", 0}, {"maximum", 60}}}}},
        {"required", {"seconds"}}}},
  };
  std::filesystem::create_directories(dir);
  const std::filesystem::path file = dir / "job-types.json";
  std::ofstream(file) << nlohmann::json{{"job_types", {sleep}}}.dump(2);
  return file;
}

}  // namespace conveyor::testing
