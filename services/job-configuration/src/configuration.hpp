#pragma once
// conveyor-configuration (DESIGN §1): initialized -> configured (resolves the
// job's argv, image, env, timeout, attempts, inputs and sinks from its job
// type and the system parameters into job.config) and configured -> ready
// once every job in depends_on is done. Events only wake it; the work is read
// from PostgreSQL with FOR UPDATE SKIP LOCKED, so replicas split it.
// Stateless between batches: every function is safe to call from any thread
// with its own arguments.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "conveyor/db/db.hpp"
#include "conveyor/model/job_type.hpp"
#include "conveyor/model/system_parameters.hpp"
#include "conveyor/runtime/runtime.hpp"
#include "conveyor/runtime/stage_loop.hpp"

namespace conveyor::configuration {

inline constexpr const char* kServiceName = "conveyor-configuration";

struct Settings {
  std::filesystem::path data_dir;  // CONVEYOR_DATA_DIR
  int batch_size = 200;            // CONVEYOR_BATCH_SIZE
};

// <data_dir>/outputs/job-<id>/ — deterministic, so a downstream job knows the
// folder of its inputs before the upstream job has run.
std::string output_dir(const std::filesystem::path& data_dir, std::int64_t job_id);

// "repo/tool:1.0" + tag "2.0" -> "repo/tool:2.0"; an empty image stays empty.
std::string image_with_tag(const std::string& image, const std::string& tag);

// The job.config document of issue 3 for one job (argv rendered with
// `inputs`). Throws Error(bad_input) naming a missing parameter.
nlohmann::json resolve_config(const model::JobType& type, const model::SystemParameters& params,
                              const Settings& settings, std::int64_t job_id, int attempt,
                              const nlohmann::json& job_params, const std::vector<std::string>& inputs);

// What one configure batch moved.
struct Moved {
  int configured = 0;  // initialized -> configured | ready (through configured) | internal_error
  int readied = 0;     // of those, -> ready | internal_error in the same transaction
};

// A job type as configuration read it, or why it cannot be used, the
// version (the job_type row's xmin) it was read at ("" for no row), and the
// batch that read it.
struct TypeRead {
  std::optional<model::JobType> type;
  std::string problem;
  std::string version;
  std::uint64_t batch = 0;
};

// The job types read so far, kept from batch to batch: a claimed row names
// its type's version (kSelectInitialized), and a type is read again only
// when that changed (an unknown one, once per batch). `reads` counts the
// reads; `batch` numbers the batches.
struct TypeCache {
  std::map<std::string, TypeRead> types;
  std::uint64_t reads = 0;
  std::uint64_t batch = 0;
};

// initialized -> configured | internal_error for the claimed `rows`
// (kSelectInitialized), written by one statement, in which a job without
// dependencies (most jobs) passes configured on to ready: one row version,
// two changes (conveyor.job_status_passage). Then, in the same
// transaction, ready_claimed for those with dependencies that have all
// ended already, so that they too reach ready with one commit.
Moved configure_claimed(db::Tx& tx, const db::Result& rows, const model::SystemParameters& params,
                        const Settings& settings, TypeCache& types);

// configured -> ready (argv re-rendered with the dependencies' outputs) |
// internal_error (dependency_failed, dependency_missing) for the claimed
// `rows` (jobs whose dependencies are all decided), written by one
// statement. Returns the jobs moved.
int ready_claimed(db::Tx& tx, const db::Result& rows, const Settings& settings);

// The service's StageLoop: the configure step (and the ready move of what it
// configured with nothing to wait for), then the ready step.
runtime::StageLoop stage_loop(runtime::Context& ctx);

// Both steps once; returns the number of jobs moved.
int process_batch(runtime::Context& ctx);

runtime::ServiceSpec spec();
void setup(runtime::Context& ctx);
void loop(runtime::Context& ctx);

}  // namespace conveyor::configuration
