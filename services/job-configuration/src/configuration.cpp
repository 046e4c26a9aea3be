#include "configuration.hpp"

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <set>

#include "conveyor/error/error.hpp"
#include "conveyor/logging/logging.hpp"
#include "conveyor/model/job.hpp"

namespace conveyor::configuration {
namespace {

// Jobs to configure, oldest first: conveyor.initialized_jobs (migration
// 20261231000100) walks the status index, whatever the statistics say, and
// leaves canceled jobs to the reconciler (DESIGN §3). It locks the batch
// (SKIP LOCKED); the FOR UPDATE here returns each row's version as locked,
// not as this statement's snapshot, taken before the call, saw it.
constexpr db::Statement kSelectInitialized{
    "configuration_select_initialized",
    "SELECT id, job_type, params::text AS params, depends_on, attempt, "
    "(SELECT t.xmin::text FROM conveyor.job_type t WHERE t.name = job.job_type) AS type_version "
    "FROM conveyor.job WHERE id = ANY(ARRAY(SELECT conveyor.initialized_jobs($1, true))) "
    "ORDER BY id FOR UPDATE"};

constexpr db::Statement kAnyInitialized{"configuration_any_initialized",
                                        "SELECT 1 FROM conveyor.initialized_jobs(1, false)"};

// The batch's dependencies that exist. Not locked: a lock on them (FOR
// SHARE, so that a dependency's end and this batch could not miss each
// other) made the claims that skip locked rows (admission, the workers, the
// ready step) pass the dependency by, and it waited for their poll: at 30
// chains a second, p99 went from 0.26 to 1.07 s. The rare job that misses
// its dependency's end (configured by a transaction that did not see the
// end, committed after the end's trigger looked) is found by the ready_scan
// walk, within a poll interval.
constexpr db::Statement kExistingIds{"configuration_existing_ids",
                                     "SELECT id FROM conveyor.job WHERE id = ANY($1::bigint[])"};

// A whole batch's outcome in one statement (conveyor.apply_configuration):
// per job (arrays in step) the new status, and the config and max_attempts
// to write ('' and 0: keep), the error subtype and message of an
// internal_error. $1: the status the batch was claimed in (a job moved
// meanwhile is left alone). Returns the jobs moved.
constexpr db::Statement kApplyBatch{"configuration_apply_batch",
                                    "SELECT conveyor.apply_configuration($1, $2::bigint[], $3::text[], $4::text[], "
                                    "$5::bigint[], $6::text[], $7::text[])"};

// Configured jobs whose dependencies are all decided (done, or ended in a way
// that fails the job, or missing): conveyor.decided_job, the rule's one
// place (migration 20261231000200). Filtering in SQL keeps jobs that wait on
// long upstream chains from filling every batch and starving the others.
// The fallback walk takes them through conveyor.decided_jobs, a walk of the
// status index whatever the statistics say, oldest first, locked there; the
// FOR UPDATE here returns each row as locked.
constexpr db::Statement kSelectDecided{
    "configuration_select_decided",
    "SELECT j.id, j.params::text AS params, j.config::text AS config, j.depends_on, j.attempt "
    "FROM conveyor.job j WHERE j.id = ANY(ARRAY(SELECT conveyor.decided_jobs($1, true))) "
    "ORDER BY j.id FOR UPDATE OF j"};

// The fallback walk's probe: whether a configured job is decided (work
// now), and whether any configured job waits at all. O(waiting jobs): run at
// the ready scan's cadence only.
constexpr db::Statement kAnyDecided{
    "configuration_any_decided",
    "SELECT EXISTS (SELECT 1 FROM conveyor.decided_jobs(1, false)) AS decided, conveyor.jobs_waiting() AS waiting"};

// The ready step's probe: whether an upstream end left a candidate
// (conveyor.ready_candidate, written by the status trigger), and whether any
// configured job waits at all (for an upstream job's end: only then does an
// end wake the step).
constexpr db::Statement kAnyCandidate{
    "configuration_any_candidate",
    "SELECT EXISTS (SELECT 1 FROM conveyor.ready_candidate) AS decided, conveyor.jobs_waiting() AS waiting"};

// The ready step's candidates, $1 at most, locked: a replica's step takes
// others, and an end that comes meanwhile waits to write its candidate.
constexpr db::Statement kLockCandidates{
    "configuration_lock_candidates",
    "SELECT job_id FROM conveyor.ready_candidate ORDER BY job_id LIMIT $1 FOR UPDATE SKIP LOCKED"};

// Of the locked candidates ($1), those that are not a configured job with
// every dependency decided are dropped: such a job gets a candidate again
// when its next dependency ends.
constexpr db::Statement kDropUndecided{"configuration_drop_undecided",
                                       "DELETE FROM conveyor.ready_candidate c WHERE c.job_id = ANY($1::bigint[]) "
                                       "AND NOT EXISTS (SELECT 1 FROM conveyor.decided_job j WHERE j.id = c.job_id)"};

// The decided jobs among the candidates ($1), locked.
constexpr db::Statement kSelectDecidedCandidates{
    "configuration_select_decided_candidates",
    "SELECT j.id, j.params::text AS params, j.config::text AS config, j.depends_on, j.attempt "
    "FROM conveyor.decided_job j WHERE j.id = ANY($1::bigint[]) ORDER BY j.id FOR UPDATE OF j SKIP LOCKED"};

constexpr db::Statement kDropCandidates{"configuration_drop_candidates",
                                        "DELETE FROM conveyor.ready_candidate WHERE job_id = ANY($1::bigint[])"};

// Among the jobs a configure batch just moved to configured ($1, still
// locked by this transaction), those already decided: readied in the same
// transaction, with no wake-up, probe or claim of their own.
constexpr db::Statement kSelectDecidedAmong{
    "configuration_select_decided_among",
    "SELECT j.id, j.params::text AS params, j.config::text AS config, j.depends_on, j.attempt "
    "FROM conveyor.decided_job j WHERE j.id = ANY($1::bigint[]) ORDER BY j.id"};

constexpr db::Statement kDependencies{
    "configuration_dependencies",
    "SELECT id, status, result::text AS result FROM conveyor.job WHERE id = ANY($1::bigint[])"};

std::shared_ptr<spdlog::logger> log() { return logging::get("configuration"); }

// What wakes each step: a new job; a configured job, or a terminal status
// of a job that configured jobs may wait on.
std::set<std::string> configure_woken_by() { return {"io.conveyor.job.initialized"}; }
std::set<std::string> upstream_end_types() {
  return {"io.conveyor.job.done", "io.conveyor.job.failed", "io.conveyor.job.canceled",
          "io.conveyor.job.internal_error"};
}
std::set<std::string> ready_woken_by() {
  auto types = upstream_end_types();
  types.insert("io.conveyor.job.configured");
  return types;
}

// What one batch does to its jobs, collected row by row and written by one
// statement (kApplyBatch).
class BatchMoves {
 public:
  explicit BatchMoves(const char* from) : from_(from) {}
  void move(std::int64_t id, const char* to, const nlohmann::json& config, std::int64_t max_attempts = 0) {
    add(id, to, config.dump(), max_attempts, "", "");
  }
  // To `to` with the config it has.
  void move(std::int64_t id, const char* to) { add(id, to, "", 0, "", ""); }
  void fail(std::int64_t id, const std::string& subtype, const std::string& message) {
    log()->warn("job {}: {} -> internal_error ({}): {}", id, from_, subtype, message);
    add(id, "internal_error", "", 0, subtype, message);
  }
  int apply(db::Tx& tx) const {
    if (ids_.empty()) return 0;
    return static_cast<int>(
        tx.exec(kApplyBatch, {from_, ids_, statuses_, configs_, max_attempts_, subtypes_, messages_})[0][0].as_int());
  }
  // The jobs this batch moves to `status`.
  std::vector<std::int64_t> moved_to(const char* status) const {
    std::vector<std::int64_t> out;
    for (std::size_t i = 0; i < ids_.size(); ++i) {
      if (statuses_[i] == status) out.push_back(ids_[i]);
    }
    return out;
  }

 private:
  void add(std::int64_t id, const char* to, std::string config, std::int64_t max_attempts, const std::string& subtype,
           const std::string& message) {
    ids_.push_back(id);
    statuses_.emplace_back(to);
    configs_.push_back(std::move(config));
    max_attempts_.push_back(max_attempts);
    subtypes_.push_back(subtype);
    messages_.push_back(message);
  }
  const char* from_;
  std::vector<std::int64_t> ids_, max_attempts_;
  std::vector<std::string> statuses_, configs_, subtypes_, messages_;
};

// The ids among every depends_on of the batch that exist: one query per batch.
std::set<std::int64_t> existing_dependencies(db::Tx& tx, const db::Result& rows) {
  std::vector<std::int64_t> all;
  for (const auto row : rows) {
    for (const auto dep : row["depends_on"].as_int_array()) all.push_back(dep);
  }
  std::set<std::int64_t> existing;
  if (all.empty()) return existing;
  for (const auto r : tx.exec(kExistingIds, {all})) existing.insert(r["id"].as_int());
  return existing;
}

TypeRead lookup_type(db::Tx& tx, const std::string& name) {
  TypeRead out;
  try {
    out.type = model::load_job_type(tx, name);
  } catch (const Error& e) {
    // A row that no longer parses is the type's fault, not this batch's.
    if (e.code() != errc::bad_input) throw;
    out.problem = "job type '" + name + "' is invalid: " + e.what();
    return out;
  }
  if (!out.type) {
    out.problem = "unknown job type '" + name + "'";
  } else if (!out.type->enabled) {
    out.problem = "job type '" + name + "' is disabled";
    out.type.reset();
  }
  return out;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& i : items) {
    if (!out.empty()) out += "; ";
    out += i;
  }
  return out;
}

}  // namespace

std::string output_dir(const std::filesystem::path& data_dir, std::int64_t job_id) {
  return model::job_output_dir(data_dir, job_id).string() + "/";
}

std::string image_with_tag(const std::string& image, const std::string& tag) {
  if (image.empty() || tag.empty()) return image;
  // A digest pins one image: the tag replaces it ("repo@sha256:..." -> "repo:tag").
  std::string base = image.substr(0, image.find('@'));
  // A ':' after the last '/' is a tag; one before it is a registry port.
  const auto slash = base.rfind('/');
  const auto colon = base.rfind(':');
  if (colon != std::string::npos && (slash == std::string::npos || colon > slash)) {
    base.resize(colon);
  }
  return base + ":" + tag;
}

nlohmann::json resolve_config(const model::JobType& type, const model::SystemParameters& params,
                              const Settings& settings, std::int64_t job_id, int attempt,
                              const nlohmann::json& job_params, const std::vector<std::string>& inputs) {
  model::ArgvContext argv_ctx;
  argv_ctx.params = job_params;
  argv_ctx.job_id = job_id;
  argv_ctx.attempt = attempt;
  const std::string host_output_dir = output_dir(settings.data_dir, job_id);
  argv_ctx.output_dir = model::argv_output_dir(type.image, host_output_dir);
  argv_ctx.inputs = inputs;

  std::string image = type.image;
  if (params.image_tags.is_object()) {
    const auto it = params.image_tags.find(type.name);
    if (it != params.image_tags.end() && it->is_string()) {
      image = image_with_tag(image, it->get<std::string>());
    }
  }
  nlohmann::json sinks = nlohmann::json::array();
  for (const auto& sink : type.sinks) {
    nlohmann::json s = sink.settings.is_object() ? sink.settings : nlohmann::json::object();
    s["kind"] = sink.kind;
    sinks.push_back(std::move(s));
  }
  nlohmann::json env = nlohmann::json::object();
  for (const auto& [k, v] : type.env) env[k] = v;

  return {
      {"job_type", type.name},
      {"argv", model::render_argv(type.command, argv_ctx)},
      {"command_template", type.command},
      {"image", image},
      {"runner", type.runner},
      {"resources", type.resources.to_json()},
      {"network", type.network},
      {"env", env},
      {"timeout_s", type.timeout_s},
      {"max_attempts", type.max_attempts},
      {"retry_backoff_s", type.retry_backoff_s},
      {"inputs", inputs},
      {"output_dir", host_output_dir},
      {"sinks", sinks},
      {"pool", type.pool},
      {"concurrency_limit", type.concurrency_limit ? nlohmann::json(*type.concurrency_limit) : nlohmann::json(nullptr)},
  };
}

namespace {

// The type of a claimed row: the one read before if its version is the
// row's. An unknown type has no version: it is read once per batch.
const TypeRead& row_type(db::Tx& tx, const db::Row& row, TypeCache& cache) {
  const std::string name = row["job_type"].as_string();
  const std::string version = row["type_version"].as_string();
  auto it = cache.types.find(name);
  if (it != cache.types.end() && it->second.version == version &&
      (!version.empty() || it->second.batch == cache.batch)) {
    return it->second;
  }
  TypeRead read = lookup_type(tx, name);
  read.version = version;
  read.batch = cache.batch;
  ++cache.reads;
  return cache.types.insert_or_assign(name, std::move(read)).first->second;
}

// One initialized job: its config, or the internal_error that says why not.
void configure_job(db::Tx& tx, const db::Row& row, TypeCache& types, const std::set<std::int64_t>& existing,
                   const model::SystemParameters& params, const Settings& settings, BatchMoves& moves) {
  const std::int64_t id = row["id"].as_int();
  const std::string type_name = row["job_type"].as_string();
  const auto job_params = nlohmann::json::parse(row["params"].view());
  const auto depends_on = row["depends_on"].as_int_array();
  const int attempt = static_cast<int>(row["attempt"].as_int());

  const TypeRead& cached = row_type(tx, row, types);
  if (!cached.type) return moves.fail(id, "unknown_job_type", cached.problem);
  const auto problems = model::validate_params(cached.type->params_schema, job_params);
  if (!problems.empty()) {
    return moves.fail(id, "invalid_params", "invalid params for job type '" + type_name + "': " + join(problems));
  }
  std::string missing;
  for (const auto dep : depends_on) {
    if (dep == id || !existing.contains(dep)) missing += (missing.empty() ? "" : ", ") + std::to_string(dep);
  }
  if (!missing.empty()) {
    return moves.fail(id, "dependency_missing", "depends_on names jobs that do not exist: " + missing);
  }
  // Upstream outputs are only known once they are done; until then
  // the inputs are their output folders (re-rendered at ready).
  std::vector<std::string> inputs;
  for (const auto dep : depends_on) inputs.push_back(output_dir(settings.data_dir, dep));
  try {
    // A job with nothing to wait for is decided (locked since the claim,
    // which found it not canceled): it passes configured on to ready in the
    // same row version (conveyor.job_status_passage), each change with its
    // history row and event. The same rule as the ready step's for a job
    // without dependencies: its argv has nothing to re-render.
    moves.move(id, depends_on.empty() ? "ready" : "configured",
               resolve_config(*cached.type, params, settings, id, attempt, job_params, inputs),
               cached.type->max_attempts);
  } catch (const Error& e) {
    if (e.code() != errc::bad_input) throw;
    moves.fail(id, "invalid_params", e.what());
  }
}

struct Dependency {
  std::string status;
  nlohmann::json result;
};

// Every dependency of the batch's jobs: one query per batch.
std::map<std::int64_t, Dependency> batch_dependencies(db::Tx& tx, const db::Result& rows) {
  std::vector<std::int64_t> all;
  for (const auto row : rows) {
    for (const auto dep : row["depends_on"].as_int_array()) all.push_back(dep);
  }
  std::map<std::int64_t, Dependency> deps;
  if (all.empty()) return deps;
  for (const auto r : tx.exec(kDependencies, {all})) {
    deps[r["id"].as_int()] = Dependency{
        r["status"].as_string(), r["result"].is_null() ? nlohmann::json() : nlohmann::json::parse(r["result"].view())};
  }
  return deps;
}

// One configured job whose dependencies are decided: ready with its argv
// re-rendered with their outputs, or the internal_error that says why not.
void ready_job(const db::Row& row, const std::map<std::int64_t, Dependency>& deps, const Settings& settings,
               BatchMoves& moves) {
  const std::int64_t id = row["id"].as_int();
  const auto depends_on = row["depends_on"].as_int_array();
  auto config = row["config"].is_null() ? nlohmann::json::object() : nlohmann::json::parse(row["config"].view());
  if (depends_on.empty()) return moves.move(id, "ready", config);
  std::vector<std::string> inputs;
  std::set<std::string> seen;
  for (const auto dep : depends_on) {
    const auto d = deps.find(dep);
    if (d == deps.end()) {
      return moves.fail(id, "dependency_missing", "dependency job " + std::to_string(dep) + " no longer exists");
    }
    if (d->second.status != "done") {
      return moves.fail(id, "dependency_failed",
                        "dependency job " + std::to_string(dep) + " ended " + d->second.status);
    }
    const auto& result = d->second.result;
    if (result.is_object() && result.contains("outputs") && result["outputs"].is_array()) {
      for (const auto& out : result["outputs"]) {
        if (out.is_string() && seen.insert(out.get<std::string>()).second) inputs.push_back(out.get<std::string>());
      }
    }
  }
  // Re-render with the upstream files now that they exist.
  model::ArgvContext argv_ctx;
  argv_ctx.params = nlohmann::json::parse(row["params"].view());
  argv_ctx.job_id = id;
  argv_ctx.attempt = static_cast<int>(row["attempt"].as_int());
  argv_ctx.output_dir = model::argv_output_dir(config.value("image", std::string()),
                                               config.value("output_dir", output_dir(settings.data_dir, id)));
  argv_ctx.inputs = inputs;
  std::vector<std::string> templ;
  if (config.contains("command_template") && config["command_template"].is_array()) {
    templ = config["command_template"].get<std::vector<std::string>>();
  }
  try {
    if (!templ.empty()) config["argv"] = model::render_argv(templ, argv_ctx);
  } catch (const Error& e) {
    if (e.code() != errc::bad_input) throw;
    return moves.fail(id, "invalid_params", e.what());
  }
  config["inputs"] = inputs;
  moves.move(id, "ready", config);
}

}  // namespace

int ready_claimed(db::Tx& tx, const db::Result& rows, const Settings& settings) {
  const auto deps = batch_dependencies(tx, rows);
  BatchMoves moves("configured");
  for (const auto row : rows) ready_job(row, deps, settings, moves);
  return moves.apply(tx);
}

Moved configure_claimed(db::Tx& tx, const db::Result& rows, const model::SystemParameters& params,
                        const Settings& settings, TypeCache& types) {
  ++types.batch;
  const std::set<std::int64_t> existing = existing_dependencies(tx, rows);
  BatchMoves moves("initialized");
  for (const auto row : rows) configure_job(tx, row, types, existing, params, settings, moves);
  Moved out;
  out.configured = moves.apply(tx);
  // The jobs moved are all the batch's: each is locked since the claim.
  out.readied = static_cast<int>(moves.moved_to("ready").size());
  // One with dependencies is decided if they have all ended
  // (kSelectDecidedAmong): readied in the same transaction.
  const std::vector<std::int64_t> waiting = moves.moved_to("configured");
  if (!waiting.empty()) {
    const db::Result decided = tx.exec(kSelectDecidedAmong, {waiting});
    if (!decided.empty()) out.readied += ready_claimed(tx, decided, settings);
  }
  return out;
}

namespace {

// The configure step. `waiting`: whether configured jobs may wait for an
// upstream job's end (the loop's thread only): true until the ready step's
// probe finds none, and again once a configure pass leaves one configured.
runtime::StageStep configure_step(runtime::Context& ctx, const Settings& settings, metrics::Counter* readied,
                                  const std::shared_ptr<bool>& waiting) {
  runtime::StageStep configure;
  configure.name = "configure";
  configure.claim = [](db::Tx&, const runtime::Pass& pass) {
    return runtime::Claim{kSelectInitialized, {pass.batch_size}};
  };
  configure.probe = [](const runtime::Pass&) { return runtime::Claim{kAnyInitialized, {}}; };
  auto types = std::make_shared<TypeCache>();  // the loop's thread only
  auto* type_reads = &ctx.metrics().counter("conveyor_configuration_type_reads_total",
                                            "job type rows read to configure jobs (again only when the row changed)");
  configure.apply = [settings, readied, waiting, types, type_reads](db::Tx& tx, const db::Result& rows,
                                                                    const runtime::Pass& pass) {
    const std::uint64_t reads = types->reads;
    // image_tags and job_types_list as they are now, not as last heard.
    std::optional<model::SystemParameters> fresh;
    const Moved m = configure_claimed(tx, rows, model::parameters_in(tx, pass.parameters, fresh), settings, *types);
    type_reads->inc(static_cast<double>(types->reads - reads));
    // Counted before the commit, like every step's moves (a failed commit
    // is rare and retried).
    if (m.readied > 0) readied->inc(m.readied);
    if (m.readied < m.configured) *waiting = true;
    return m.configured;
  };
  configure.woken_by = configure_woken_by();
  // A new job is as good as certain work: its NOTIFY runs the transaction
  // without the probe (empty only when a replica took the job first).
  configure.unprobed_after = configure_woken_by();
  return configure;
}

// Readies `rows` (locked, decided) and drops their candidates.
int ready_rows(db::Tx& tx, const db::Result& rows, const Settings& settings) {
  if (rows.empty()) return 0;
  std::vector<std::int64_t> ids;
  for (const auto row : rows) ids.push_back(row["id"].as_int());
  const int moved = ready_claimed(tx, rows, settings);
  tx.exec(kDropCandidates, {ids});
  return moved;
}

// The ready step: the candidates an upstream job's end left, a batch per
// transaction while batches come full. What it costs follows the ends, not
// the jobs that wait.
runtime::StageStep ready_step(const Settings& settings, const std::shared_ptr<bool>& waiting) {
  runtime::StageStep ready;
  ready.name = "ready";
  ready.run = [settings, waiting](const runtime::Pass& pass) {
    runtime::count_probe(pass.ctx, "ready");
    const db::Result probed = pass.ctx.db().exec_idempotent(kAnyCandidate, {});
    *waiting = probed.empty() || probed[0]["waiting"].as_bool();
    if (probed.empty() || !probed[0]["decided"].as_bool()) return 0;
    int moved = 0;
    for (bool full = true; full && !pass.ctx.stopping();) {
      runtime::count_transaction(pass.ctx, "ready");
      moved += pass.ctx.db().transact(
          [&](db::Tx& tx) {
            std::vector<std::int64_t> ids;
            for (const auto row : tx.exec(kLockCandidates, {pass.batch_size})) ids.push_back(row[0].as_int());
            full = static_cast<int>(ids.size()) >= pass.batch_size;
            if (ids.empty()) return 0;
            tx.exec(kDropUndecided, {ids});
            return ready_rows(tx, tx.exec(kSelectDecidedCandidates, {ids}), settings);
          },
          runtime::stage_tx_options(pass.ctx));
    }
    return moved;
  };
  ready.woken_by = ready_woken_by();
  // An upstream job's end readies a job only while one waits (at a low rate,
  // with no dependencies, it costs no probe), and so does the NOTIFY of
  // configured its own commit sends: configure readies what has nothing to
  // wait for in its transaction, and says when it left a job waiting.
  ready.woken_while_waiting = upstream_end_types();
  ready.woken_while_waiting.insert("io.conveyor.job.configured");
  ready.waiting = [waiting] { return *waiting; };
  return ready;
}

// The fallback: every configured job whose dependencies have all ended, as
// the ready step found them before candidates (O(waiting jobs)), at the
// loop's first pass and then at most once per poll interval, again at once
// while it fills whole batches. It finds what no end left a candidate for:
// a job configured by a transaction that did not see its last dependency's
// end, committed after that end's trigger looked for waiting jobs; and the
// candidates a crash of PostgreSQL emptied (the table is unlogged).
runtime::StageStep ready_scan_step(runtime::Context& ctx, const Settings& settings,
                                   const std::shared_ptr<bool>& waiting) {
  runtime::StageStep scan;
  scan.name = "ready_scan";
  const auto every = ctx.config().get_duration("CONVEYOR_POLL_INTERVAL_MS");
  auto last = std::make_shared<std::optional<std::chrono::steady_clock::time_point>>();
  scan.run = [settings, waiting, every, last](const runtime::Pass& pass) {
    const auto now = std::chrono::steady_clock::now();
    if (*last && now - **last < every) return 0;
    runtime::count_probe(pass.ctx, "ready_scan");
    const db::Result probed = pass.ctx.db().exec_idempotent(kAnyDecided, {});
    *waiting = probed.empty() || probed[0]["waiting"].as_bool();
    int moved = 0;
    if (!probed.empty() && probed[0]["decided"].as_bool()) {
      runtime::count_transaction(pass.ctx, "ready_scan");
      moved = pass.ctx.db().transact(
          [&](db::Tx& tx) { return ready_rows(tx, tx.exec(kSelectDecided, {pass.batch_size}), settings); },
          runtime::stage_tx_options(pass.ctx));
    }
    if (moved < pass.batch_size) *last = now;
    return moved;
  };
  return scan;
}

}  // namespace

runtime::StageLoop stage_loop(runtime::Context& ctx) {
  Settings settings;
  settings.data_dir = std::filesystem::absolute(ctx.config().get_string("CONVEYOR_DATA_DIR"));
  settings.batch_size = static_cast<int>(ctx.config().get_int("CONVEYOR_BATCH_SIZE"));
  auto moved = [&ctx](const char* step) {
    return &ctx.metrics().counter("conveyor_configuration_jobs_total", "jobs moved by configuration", {{"step", step}});
  };
  auto* readied = moved("ready");
  auto waiting = std::make_shared<bool>(true);
  runtime::StageStep configure = configure_step(ctx, settings, readied, waiting);
  configure.moved = moved("configure");
  runtime::StageStep ready = ready_step(settings, waiting);
  ready.moved = readied;
  runtime::StageStep scan = ready_scan_step(ctx, settings, waiting);
  scan.moved = readied;
  runtime::StageLoopOptions options;
  options.name = "configuration";
  options.steps = {std::move(configure), std::move(ready), std::move(scan)};
  options.batch_size = settings.batch_size;
  return runtime::StageLoop(std::move(options));
}

int process_batch(runtime::Context& ctx) { return stage_loop(ctx).pass(ctx); }

runtime::ServiceSpec spec() {
  runtime::ServiceSpec s;
  s.name = kServiceName;
  s.schema = runtime::service_schema();
  s.wake_on = configure_woken_by();
  s.wake_on.merge(ready_woken_by());
  return s;
}

void setup(runtime::Context& ctx) {
  ctx.log()->info("configuration: data dir {}", ctx.config().get_string("CONVEYOR_DATA_DIR"));
}

void loop(runtime::Context& ctx) { stage_loop(ctx).run(ctx); }

}  // namespace conveyor::configuration
