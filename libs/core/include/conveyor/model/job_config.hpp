#pragma once
// A job's resolved configuration (conveyor.job.config), typed: written by
// conveyor-configuration at initialized -> configured from the job's type and
// the system parameters, read by the worker (what to run) and publication
// (where to publish). Parsed once, with an error naming the field that is
// wrong, instead of each reader probing the JSON. Plain values: thread-safe.
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "conveyor/model/job_type.hpp"

namespace conveyor::model {

struct JobConfig {
  std::string job_type;
  std::vector<std::string> argv;              // rendered for the attempt it was configured for
  std::vector<std::string> command_template;  // re-rendered for later attempts
  std::string image;                          // empty: run argv as a process
  std::string runner = "process";             // how the worker runs it ("process", "resident")
  Resources resources;
  bool network = false;
  std::map<std::string, std::string> env;  // non-string JSON values as their JSON text
  double timeout_s = 0;                    // 0: no timeout
  int max_attempts = 1;
  double retry_backoff_s = 30;  // base of conveyor.retry_backoff
  std::vector<std::string> inputs;
  std::string output_dir;                          // empty: the worker's default for the job
  nlohmann::json sinks = nlohmann::json::array();  // each an object with "kind"
  std::string pool = "default";                    // conveyor.job_pool's answer
  std::optional<std::int64_t> concurrency_limit;

  // The timeout as a duration; nullopt when there is none.
  std::optional<std::chrono::milliseconds> timeout() const;
};

// Parses conveyor.job.config. A missing field takes its default (configs
// written by older releases lack newer fields); a field of the wrong type
// throws FieldError("config.<field>", "job config: <field> must be ...").
JobConfig parse_job_config(const nlohmann::json& config);

}  // namespace conveyor::model
