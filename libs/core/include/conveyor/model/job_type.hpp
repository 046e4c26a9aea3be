#pragma once
// Job types as data (DESIGN §4): parsed and validated from JSON (the file
// applied by `conveyor job-type apply`, and rows of conveyor.job_type).
// Thread-safe: plain values.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "conveyor/db/db.hpp"

namespace conveyor::model {

struct Sink {
  std::string kind;  // "webhook" | "kafka" | "file"
  // webhook: url (empty: system_parameters.publication_endpoint_url), secret_env
  //          (name of the environment variable holding the HMAC secret), timeout_ms
  // kafka:   topic
  // file:    dir (catalog folder for the JSON manifest)
  nlohmann::json settings = nlohmann::json::object();
};

// A container job's limits (JobType::resources); 0: no limit. Container
// jobs only: a process job type that sets them is refused.
struct Resources {
  double cpus = 0;             // CPUs, fractions allowed ("--cpus")
  std::int64_t memory_mb = 0;  // MiB ("--memory"); at least 6, the runtimes' minimum
  bool empty() const { return cpus == 0 && memory_mb == 0; }
  nlohmann::json to_json() const;
};

// Where a container job sees its output dir: the host's output dir is
// bind-mounted here, and "{output_dir}" renders to it.
inline constexpr const char* kContainerOutputDir = "/conveyor/output/";

struct JobType {
  std::string name;
  bool enabled = true;
  std::vector<std::string> command;  // argv template: "{param}", "{job_id}", "{attempt}", "{output_dir}", "{inputs}"
  std::string image;                 // empty: run the command as a process
  // "process": the command runs once per job. "resident": each worker starts
  // it once and hands it jobs as JSON lines (README, "Resident job programs").
  std::string runner = "process";
  Resources resources;   // container jobs only
  bool network = false;  // container jobs only: the runtime's default network
  int timeout_s = 3600;
  int max_attempts = 1;
  int retry_backoff_s = 30;
  int priority = 0;
  std::optional<int> concurrency_limit;
  std::string pool = "default";
  std::string schedule;
  std::string catchup_policy = "latest";
  std::optional<int> catchup_window_s;
  nlohmann::json triggers = nlohmann::json::array();
  std::vector<Sink> sinks;
  nlohmann::json params_schema = nlohmann::json::object();
  std::map<std::string, std::string> env;  // extra environment for the process
  std::string description;

  nlohmann::json to_json() const;
};

// Parses one job type; throws Error(bad_input) naming the field
// ("job type 'x': timeout_s: must be a positive integer").
JobType parse_job_type(const nlohmann::json& j);
// A file: {"job_types": [ ... ]} or a bare array; names must be unique.
std::vector<JobType> parse_job_types_file(const nlohmann::json& j);

// Validates params against the type's schema: at the top an object of named
// parameters (properties, required, additionalProperties as a bool), each
// parameter a JSON Schema draft 7 (valijson: pattern, format date|time|
// date-time, items, nested objects, ...). Returns the problems, each naming
// the parameter ("params.seconds: expected an integer", "params.area.west:
// ..."); empty when valid. A null parameter counts as absent.
std::vector<std::string> validate_params(const nlohmann::json& schema, const nlohmann::json& params);

struct ArgvContext {
  nlohmann::json params = nlohmann::json::object();
  std::int64_t job_id = 0;
  int attempt = 0;
  std::string output_dir;
  std::vector<std::string> inputs;  // "{inputs}" alone in an argument expands to one argument each
};
// Whether a job type's `env` may not set `name`: PG* (libpq reads them)
// and CONVEYOR_* (Conveyor's own, the job's CONVEYOR_JOB_ID etc. included).
// parse_job_type refuses them; the worker drops them too, for rows written
// before the rule or by SQL.
bool reserved_env_name(std::string_view name);

// Whether `tag` is an image tag as registries take it (letters, digits,
// _ . -, not starting with . or -, at most 128): what system_parameters'
// image_tags may set for a container job type.
bool valid_image_tag(std::string_view tag);

// What "{output_dir}" renders to for a job: the host dir for a process, the
// mount point kContainerOutputDir for a job with an image.
std::string argv_output_dir(const std::string& image, const std::string& host_output_dir);

// Substitutes placeholders per argument; never through a shell, so a value
// with spaces or quotes stays one argument. A placeholder naming a missing
// parameter throws Error(bad_input) naming it.
std::vector<std::string> render_argv(const std::vector<std::string>& templ, const ArgvContext& ctx);

// Database access for conveyor.job_type.
std::vector<JobType> load_job_types(db::Tx& tx);
std::optional<JobType> load_job_type(db::Tx& tx, const std::string& name);
// A job type with the version of its row (its xmin as text), which every
// change to the row changes: whoever keeps the type can check in a later
// statement that the row is still the one read (submit_job_at_once).
struct VersionedJobType {
  JobType type;
  std::string version;
};
// One statement in its own implicit transaction; nullopt: no such type.
std::optional<VersionedJobType> read_versioned_job_type(db::Pool& pool, const std::string& name);
void upsert_job_type(db::Tx& tx, const JobType& t);

}  // namespace conveyor::model
