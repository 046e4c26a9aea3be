#include "configuration.hpp"

#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include "conveyor/error/error.hpp"
#include "conveyor/logging/logging.hpp"
#include "conveyor/model/job.hpp"

namespace conveyor::configuration {
namespace {

// Jobs to configure. Canceled jobs are left to the reconciler (DESIGN §3).
constexpr db::Statement kSelectInitialized{
    "configuration_select_initialized",
    "SELECT id, job_type, params::text AS params, depends_on, attempt FROM conveyor.job "
    "WHERE status = 'initialized' AND canceled_at IS NULL "
    "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"};

constexpr db::Statement kExistingIds{
    "configuration_existing_ids", "SELECT id FROM conveyor.job WHERE id = ANY($1::bigint[])"};

constexpr db::Statement kSetConfigured{
    "configuration_set_configured",
    "UPDATE conveyor.job SET status = 'configured', config = $2::jsonb, max_attempts = $3 "
    "WHERE id = $1 AND status = 'initialized'"};

constexpr db::Statement kSetInternalError{
    "configuration_set_internal_error",
    "UPDATE conveyor.job SET status = 'internal_error', error_subtype = $3, error_message = $4 "
    "WHERE id = $1 AND status = $2"};

// Configured jobs whose dependencies are all decided (done, or ended in a way
// that fails the job, or missing). Filtering in SQL keeps jobs that wait on
// long upstream chains from filling every batch and starving the others.
constexpr db::Statement kSelectDecided{
    "configuration_select_decided",
    "SELECT j.id, j.params::text AS params, j.config::text AS config, j.depends_on, j.attempt "
    "FROM conveyor.job j "
    "WHERE j.status = 'configured' AND j.canceled_at IS NULL "
    "AND NOT EXISTS (SELECT 1 FROM conveyor.job u WHERE u.id = ANY(j.depends_on) "
    "                AND u.status NOT IN ('done', 'failed', 'canceled', 'internal_error')) "
    "ORDER BY j.id LIMIT $1 FOR UPDATE OF j SKIP LOCKED"};

constexpr db::Statement kDependencies{
    "configuration_dependencies",
    "SELECT id, status, result::text AS result FROM conveyor.job WHERE id = ANY($1::bigint[])"};

constexpr db::Statement kSetReady{
    "configuration_set_ready",
    "UPDATE conveyor.job SET status = 'ready', config = $2::jsonb "
    "WHERE id = $1 AND status = 'configured'"};

std::shared_ptr<spdlog::logger> log() { return logging::get("configuration"); }

db::TxOptions tx_options() {
  db::TxOptions o;
  o.actor = kServiceName;
  return o;
}

void fail_job(db::Tx& tx, std::int64_t id, const char* from, const std::string& subtype,
              const std::string& message) {
  log()->warn("job {}: {} -> internal_error ({}): {}", id, from, subtype, message);
  tx.exec(kSetInternalError, {id, from, subtype, message});
}

// A job type as read for one batch: the type, or why it cannot be used.
struct CachedType {
  std::optional<model::JobType> type;
  std::string problem;
};

CachedType lookup_type(db::Tx& tx, const std::string& name) {
  CachedType out;
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
      {"concurrency_limit",
       type.concurrency_limit ? nlohmann::json(*type.concurrency_limit) : nlohmann::json(nullptr)},
  };
}

int configure_batch(db::Pool& pool, const model::SystemParameters& params, const Settings& settings) {
  return pool.transact(
      [&](db::Tx& tx) {
        int moved = 0;
        std::map<std::string, CachedType> types;  // per batch: a changed type applies to the next
        const auto rows = tx.exec(kSelectInitialized, {settings.batch_size});
        for (const auto row : rows) {
          const std::int64_t id = row["id"].as_int();
          const std::string type_name = row["job_type"].as_string();
          const auto job_params = nlohmann::json::parse(row["params"].view());
          const auto depends_on = row["depends_on"].as_int_array();
          const int attempt = static_cast<int>(row["attempt"].as_int());

          auto it = types.find(type_name);
          if (it == types.end()) it = types.emplace(type_name, lookup_type(tx, type_name)).first;
          const CachedType& cached = it->second;
          if (!cached.type) {
            fail_job(tx, id, "initialized", "unknown_job_type", cached.problem);
            ++moved;
            continue;
          }
          const auto problems = model::validate_params(cached.type->params_schema, job_params);
          if (!problems.empty()) {
            fail_job(tx, id, "initialized", "invalid_params",
                     "invalid params for job type '" + type_name + "': " + join(problems));
            ++moved;
            continue;
          }
          if (!depends_on.empty()) {
            std::set<std::int64_t> existing;
            for (const auto r : tx.exec(kExistingIds, {depends_on})) existing.insert(r["id"].as_int());
            std::vector<std::string> missing;
            for (const auto dep : depends_on) {
              if (dep == id || !existing.count(dep)) missing.push_back(std::to_string(dep));
            }
            if (!missing.empty()) {
              std::string list;
              for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
              fail_job(tx, id, "initialized", "dependency_missing",
                       "depends_on names jobs that do not exist: " + list);
              ++moved;
              continue;
            }
          }
          // Upstream outputs are only known once they are done; until then
          // the inputs are their output folders (re-rendered at ready).
          std::vector<std::string> inputs;
          for (const auto dep : depends_on) inputs.push_back(output_dir(settings.data_dir, dep));
          nlohmann::json config;
          try {
            config = resolve_config(*cached.type, params, settings, id, attempt, job_params, inputs);
          } catch (const Error& e) {
            if (e.code() != errc::bad_input) throw;
            fail_job(tx, id, "initialized", "invalid_params", e.what());
            ++moved;
            continue;
          }
          moved += static_cast<int>(
              tx.exec(kSetConfigured, {id, config.dump(), cached.type->max_attempts}).affected_rows());
        }
        return moved;
      },
      tx_options());
}

int ready_batch(db::Pool& pool, const Settings& settings) {
  return pool.transact(
      [&](db::Tx& tx) {
        int moved = 0;
        const auto rows = tx.exec(kSelectDecided, {settings.batch_size});
        for (const auto row : rows) {
          const std::int64_t id = row["id"].as_int();
          const auto depends_on = row["depends_on"].as_int_array();
          auto config = row["config"].is_null() ? nlohmann::json::object()
                                                : nlohmann::json::parse(row["config"].view());
          if (depends_on.empty()) {
            moved += static_cast<int>(tx.exec(kSetReady, {id, config.dump()}).affected_rows());
            continue;
          }
          struct Dep {
            std::string status;
            nlohmann::json result;
          };
          std::map<std::int64_t, Dep> deps;
          for (const auto r : tx.exec(kDependencies, {depends_on})) {
            deps[r["id"].as_int()] = Dep{r["status"].as_string(),
                                         r["result"].is_null() ? nlohmann::json()
                                                               : nlohmann::json::parse(r["result"].view())};
          }
          std::string failure;
          std::string failure_subtype;
          std::vector<std::string> inputs;
          std::set<std::string> seen;
          for (const auto dep : depends_on) {
            const auto d = deps.find(dep);
            if (d == deps.end()) {
              failure_subtype = "dependency_missing";
              failure = "dependency job " + std::to_string(dep) + " no longer exists";
              break;
            }
            if (d->second.status != "done") {
              failure_subtype = "dependency_failed";
              failure = "dependency job " + std::to_string(dep) + " ended " + d->second.status;
              break;
            }
            const auto& result = d->second.result;
            if (result.is_object() && result.contains("outputs") && result["outputs"].is_array()) {
              for (const auto& out : result["outputs"]) {
                if (out.is_string() && seen.insert(out.get<std::string>()).second) {
                  inputs.push_back(out.get<std::string>());
                }
              }
            }
          }
          if (!failure.empty()) {
            fail_job(tx, id, "configured", failure_subtype, failure);
            ++moved;
            continue;
          }
          // Re-render with the upstream files now that they exist.
          model::ArgvContext argv_ctx;
          argv_ctx.params = nlohmann::json::parse(row["params"].view());
          argv_ctx.job_id = id;
          argv_ctx.attempt = static_cast<int>(row["attempt"].as_int());
          argv_ctx.output_dir = model::argv_output_dir(
              config.value("image", std::string()),
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
            fail_job(tx, id, "configured", "invalid_params", e.what());
            ++moved;
            continue;
          }
          config["inputs"] = inputs;
          moved += static_cast<int>(tx.exec(kSetReady, {id, config.dump()}).affected_rows());
        }
        return moved;
      },
      tx_options());
}

int process_batch(runtime::Context& ctx) {
  Settings settings;
  settings.data_dir = std::filesystem::absolute(ctx.config().get_string("CONVEYOR_DATA_DIR"));
  settings.batch_size = static_cast<int>(ctx.config().get_int("CONVEYOR_BATCH_SIZE"));
  const auto params = ctx.parameters();
  const int configured = configure_batch(ctx.db(), *params, settings);
  const int readied = ready_batch(ctx.db(), settings);
  if (configured > 0) {
    ctx.metrics().counter("conveyor_configuration_jobs_total", "jobs moved by configuration",
                          {{"step", "configure"}}).inc(configured);
  }
  if (readied > 0) {
    ctx.metrics().counter("conveyor_configuration_jobs_total", "jobs moved by configuration",
                          {{"step", "ready"}}).inc(readied);
  }
  return configured + readied;
}

runtime::ServiceSpec spec() {
  runtime::ServiceSpec s;
  s.name = kServiceName;
  s.schema = runtime::service_schema();
  // configured jobs wait on their dependencies' terminal statuses.
  s.wake_on = {"io.conveyor.job.initialized", "io.conveyor.job.configured", "io.conveyor.job.done",
               "io.conveyor.job.failed",      "io.conveyor.job.canceled",   "io.conveyor.job.internal_error"};
  return s;
}

void setup(runtime::Context& ctx) {
  ctx.log()->info("configuration: data dir {}", ctx.config().get_string("CONVEYOR_DATA_DIR"));
}

void loop(runtime::Context& ctx) {
  const auto poll = ctx.config().get_duration("CONVEYOR_POLL_INTERVAL_MS");
  do {
    try {
      while (process_batch(ctx) > 0 && !ctx.stopping()) {
      }
    } catch (const Error& e) {
      // The database may be briefly away; the next wake-up or poll retries.
      ctx.log()->error("configuration pass failed: {}", e.what());
    }
  } while (ctx.wait_for_work(poll));
}

}  // namespace conveyor::configuration
