#include "worker.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <csignal>
#include <cstring>
#include <nlohmann/json.hpp>
#include <system_error>

#include "conveyor/db/db.hpp"
#include "conveyor/error/error.hpp"
#include "conveyor/model/job_type.hpp"
#include "job_files.hpp"

#ifndef CONVEYOR_WORKER_VERSION
#define CONVEYOR_WORKER_VERSION "dev"
#endif

namespace conveyor::worker {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// ---------------------------------------------------------------- statements

constexpr db::Statement kRegister{
    "worker_register",
    "INSERT INTO conveyor.worker (name, host, pid, pool, concurrency, running, status, "
    "                             started_at, last_heartbeat, stopped_at, version) "
    "VALUES ($1, $2, $3, $4, $5, 0, 'active', now(), now(), NULL, $6) "
    "ON CONFLICT (name) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, "
    "  pool = EXCLUDED.pool, concurrency = EXCLUDED.concurrency, running = 0, status = 'active', "
    "  started_at = now(), last_heartbeat = now(), stopped_at = NULL, version = EXCLUDED.version "
    "RETURNING id"};

// Jobs a previous run under this name left in `started`: no process of ours
// runs them any more, so they go back to the queue now rather than after
// the reaper's heartbeat timeout.
constexpr db::Statement kRequeueOrphans{
    "worker_requeue_orphans",
    "UPDATE conveyor.job SET status = 'ready', attempt = attempt + 1, "
    "  error_subtype = 'worker_restarted', error_message = 'worker restarted while the job ran' "
    "WHERE worker_id = $1 AND status = 'started'"};

// $4: the jobs this worker runs, read inside this transaction, so that
// running_jobs_at (its now()) is never later than the list (the reconciler
// recovers started jobs missing from it; model::reap_lost_workers).
constexpr db::Statement kHeartbeat{
    "worker_heartbeat",
    "UPDATE conveyor.worker SET last_heartbeat = now(), running = $2, concurrency = $3, "
    "  running_jobs = $4::bigint[], running_jobs_at = now(), "
    "  status = CASE WHEN status = 'lost' THEN 'active' ELSE status END "
    "WHERE id = $1 RETURNING status"};

constexpr db::Statement kMarkDraining{"worker_mark_draining",
                                      "UPDATE conveyor.worker SET status = 'draining' WHERE id = "
                                      "$1 AND status IN ('active', 'lost')"};

constexpr db::Statement kMarkStopped{
    "worker_mark_stopped",
    "UPDATE conveyor.worker SET status = 'stopped', running = 0, stopped_at = now(), "
    "  last_heartbeat = now() WHERE id = $1"};

constexpr db::Statement kClaim{
    "worker_claim",
    "UPDATE conveyor.job SET status = 'started', worker_id = $1 "
    "WHERE id IN (SELECT id FROM conveyor.job "
    "             WHERE status = 'queued' AND canceled_at IS NULL "
    "               AND coalesce(config->>'pool', 'default') = $2 "
    "             ORDER BY priority DESC, id LIMIT $3 FOR UPDATE SKIP LOCKED) "
    "  AND status = 'queued' "
    // A worker the pool (or an operator) set draining, or the reaper marked
    // lost, claims nothing, even before its next heartbeat notices.
    "  AND EXISTS (SELECT 1 FROM conveyor.worker w WHERE w.id = $1 AND w.status = 'active') "
    "RETURNING id, job_type, attempt, max_attempts, coalesce(config, '{}'::jsonb)::text AS config, "
    "  params::text AS params, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM') AS month"};

// Jobs to stop: their cancel was asked, or they are no longer started by this
// worker (the reaper requeued them while it looked lost, or an operator
// moved them): their result would be dropped anyway.
constexpr db::Statement kCanceled{
    "worker_canceled_jobs",
    "SELECT j.id FROM unnest($1::bigint[]) AS r(id) "
    "LEFT JOIN conveyor.job j ON j.id = r.id "
    "WHERE j.id IS NULL OR j.canceled_at IS NOT NULL OR j.status <> 'started' "
    "   OR j.worker_id IS DISTINCT FROM $2::bigint"};

constexpr db::Statement kFinishProcessed{
    "worker_finish_processed",
    "UPDATE conveyor.job SET status = 'processed', result = $3::jsonb, "
    "  error_subtype = NULL, error_message = NULL "
    "WHERE id = $1 AND status = 'started' AND worker_id = $2 RETURNING status"};

// Retry while attempts remain (back-off retry_backoff_s * 2^attempt, capped
// at an hour), else failed. A job whose cancel was asked meanwhile ends
// canceled instead of going round again.
constexpr db::Statement kFinishFailure{
    "worker_finish_failure",
    "UPDATE conveyor.job SET "
    "  status = CASE WHEN canceled_at IS NOT NULL THEN 'canceled' "
    "                WHEN attempt + 1 < max_attempts THEN 'ready' ELSE 'failed' END, "
    "  not_before = CASE WHEN canceled_at IS NULL AND attempt + 1 < max_attempts "
    "    THEN now() + make_interval(secs => least(3600.0, $3::float8 * power(2.0, attempt))) "
    "    ELSE not_before END, "
    "  attempt = CASE WHEN canceled_at IS NULL AND attempt + 1 < max_attempts "
    "    THEN attempt + 1 ELSE attempt END, "
    "  error_subtype = $4, error_message = $5 "
    "WHERE id = $1 AND status = 'started' AND worker_id = $2 RETURNING status"};

constexpr db::Statement kFinishCanceled{
    "worker_finish_canceled",
    "UPDATE conveyor.job SET status = 'canceled' "
    "WHERE id = $1 AND status = 'started' AND worker_id = $2 RETURNING status"};

// Shutdown: the job did not fail, the worker left; it runs again elsewhere.
constexpr db::Statement kFinishRequeue{
    "worker_finish_requeue",
    "UPDATE conveyor.job SET "
    "  status = CASE WHEN canceled_at IS NOT NULL THEN 'canceled' ELSE 'ready' END, "
    "  attempt = CASE WHEN canceled_at IS NOT NULL THEN attempt ELSE attempt + 1 END, "
    "  error_subtype = 'worker_shutdown', error_message = 'worker shut down' "
    "WHERE id = $1 AND status = 'started' AND worker_id = $2 RETURNING status"};

constexpr db::Statement kFinishInternal{
    "worker_finish_internal",
    "UPDATE conveyor.job SET status = 'internal_error', error_subtype = $3, error_message = $4 "
    "WHERE id = $1 AND status = 'started' AND worker_id = $2 RETURNING status"};

std::string hostname() {
  std::array<char, 256> buf{};
  if (::gethostname(buf.data(), buf.size() - 1) != 0) return "unknown";
  return buf.data();
}

std::string describe_signal(int sig) {
  const char* name = sigabbrev_np(sig);
  return name ? fmt::format("SIG{}", name) : fmt::format("signal {}", sig);
}

}  // namespace

// ---------------------------------------------------------------- schema

config::Schema schema() {
  config::Schema s = runtime::service_schema();
  s.add({.name = "CONVEYOR_WORKER_NAME",
         .default_value = "",
         .help = "unique name of this worker in conveyor.worker; empty: the instance id"});
  s.add({.name = "CONVEYOR_WORKER_CONCURRENCY",
         .type = config::Type::integer,
         .default_value = "0",
         .help = "jobs run at once; 0: system_parameters.worker_concurrency (live)",
         .min = 0,
         .max = 1024});
  s.add({.name = "CONVEYOR_WORKER_POOL",
         .default_value = "default",
         .help = "the pool whose jobs (config.pool) this worker claims"});
  s.add({.name = "CONVEYOR_KILL_GRACE_MS",
         .type = config::Type::duration_ms,
         .default_value = "5000",
         .help = "time between SIGTERM and SIGKILL when a job is stopped",
         .min = 0,
         .max = 3'600'000});
  return s;
}

// ---------------------------------------------------------------- job

struct Worker::Job {
  std::int64_t id = 0;
  std::string type;
  int attempt = 0;
  int max_attempts = 1;
  json config;
  json params;
  std::string month;
  std::atomic<StopReason> stop{StopReason::none};
  std::atomic<bool> finished{false};
  std::thread thread;
};

// Configuration renders argv once, with the attempt of that moment; a retry
// does not pass through configuration again, so "{attempt}" in the type's
// command (kept as config.command_template) is rendered again here.
void Worker::rerender_attempt(const Job& job, const fs::path& out_dir, json& argv) {
  auto t = job.config.find("command_template");
  if (t == job.config.end() || !t->is_array()) return;
  const bool uses_attempt = std::any_of(t->begin(), t->end(), [](const json& a) {
    return a.is_string() && a.get<std::string>().find("{attempt}") != std::string::npos;
  });
  if (!uses_attempt) return;
  try {
    model::ArgvContext c;
    c.params = job.params.is_object() ? job.params : json::object();
    c.job_id = job.id;
    c.attempt = job.attempt;
    c.output_dir = out_dir.string();
    if (auto in = job.config.find("inputs"); in != job.config.end() && in->is_array()) {
      for (const auto& p : *in) {
        if (p.is_string()) c.inputs.push_back(p.get<std::string>());
      }
    }
    argv = model::render_argv(t->get<std::vector<std::string>>(), c);
  } catch (const std::exception& e) {
    ctx_.log()->warn("job {}: cannot re-render the command for attempt {} ({}); using config.argv",
                     job.id, job.attempt, e.what());
  }
}

Worker::Worker(runtime::Context& ctx) : ctx_(ctx) {
  const auto& cfg = ctx.config();
  name_ = cfg.get_string("CONVEYOR_WORKER_NAME");
  if (name_.empty()) name_ = ctx.instance_id();
  pool_ = cfg.get_string("CONVEYOR_WORKER_POOL");
  configured_concurrency_ = static_cast<int>(cfg.get_int("CONVEYOR_WORKER_CONCURRENCY"));
  kill_grace_ = cfg.get_duration("CONVEYOR_KILL_GRACE_MS");
  {
    using std::chrono::milliseconds;
    const milliseconds grace = cfg.get_duration("CONVEYOR_SHUTDOWN_GRACE_MS");
    const milliseconds reserve = std::min(milliseconds(1000), grace / 4);
    const milliseconds budget = grace - reserve;
    shutdown_kill_grace_ = std::min(kill_grace_, budget / 2);
    drain_wait_ = budget - shutdown_kill_grace_;
  }
  poll_interval_ = cfg.get_duration("CONVEYOR_POLL_INTERVAL_MS");
  data_dir_ = fs::absolute(cfg.get_string("CONVEYOR_DATA_DIR"));
  // Jobs inherit the worker's environment but not its own configuration
  // (the database URL and other secrets of the worker are not the job's).
  for (auto& [k, v] : config::process_environment()) {
    if (k.rfind("CONVEYOR_", 0) != 0) base_env_.emplace(k, v);
  }
}

Worker::~Worker() { stop_threads(); }

int Worker::concurrency() const {
  if (configured_concurrency_ > 0) return configured_concurrency_;
  return std::max(1, ctx_.parameters()->worker_concurrency);
}

std::size_t Worker::running_count() {
  std::lock_guard lock(mutex_);
  return jobs_.size();
}

void Worker::start() {
  const int pid = static_cast<int>(::getpid());
  worker_id_ = ctx_.db().transact([&](db::Tx& tx) {
    auto id = tx.exec(kRegister, {name_, hostname(), pid, pool_, concurrency(),
                                  std::string(CONVEYOR_WORKER_VERSION)})[0][0]
                  .as_int();
    auto orphans = tx.exec(kRequeueOrphans, {id}).affected_rows();
    if (orphans > 0) {
      ctx_.log()->warn("requeued {} job(s) left started by an earlier run of worker {}", orphans,
                       name_);
    }
    return id;
  });
  ctx_.log()->info("worker {} (id {}) started: pool {}, concurrency {}{}, data dir {}", name_,
                   worker_id_, pool_, concurrency(),
                   configured_concurrency_ == 0 ? " (from system_parameters)" : "",
                   data_dir_.string());
  ctx_.metrics().gauge("conveyor_worker_running", "jobs this worker is running").set(0);
  monitor_ = std::thread([this] { monitor_main(); });
}

// ---------------------------------------------------------------- main loop

void Worker::loop() {
  while (true) {
    try {
      reap_finished();
      check_cancels();
      if (draining_) {
        if (running_count() == 0) {
          ctx_.log()->info("worker {} drained by an operator; exiting", name_);
          break;
        }
      } else {
        claim();
      }
    } catch (const std::exception& e) {
      // The database may be briefly unreachable; the next wake-up or poll tries again.
      ctx_.log()->error("worker cycle failed: {}", e.what());
      ctx_.metrics().counter("conveyor_worker_errors_total", "failed claim/cancel cycles").inc();
    }
    if (!ctx_.wait_for_work(poll_interval_)) break;
  }
  shutdown();
}

void Worker::claim() {
  const int free = concurrency() - static_cast<int>(running_count());
  if (free <= 0) return;
  auto rows = ctx_.db().transact([&](db::Tx& tx) {
    return tx.exec(kClaim, {worker_id_, pool_, free});
  });
  for (auto row : rows) {
    auto job = std::make_shared<Job>();
    job->id = row["id"].as_int();
    job->type = row["job_type"].as_string();
    job->attempt = static_cast<int>(row["attempt"].as_int());
    job->max_attempts = static_cast<int>(row["max_attempts"].as_int());
    job->config = json::parse(row["config"].view(), nullptr, false);
    job->params = json::parse(row["params"].view(), nullptr, false);
    job->month = row["month"].as_string();
    ctx_.log()->info("job {} ({}) started, attempt {} of {}", job->id, job->type, job->attempt + 1,
                     job->max_attempts);
    // A retried job can be claimed again before reap_finished() saw its first
    // attempt end: replace that entry, and join its thread outside the lock.
    std::shared_ptr<Job> previous;
    {
      std::lock_guard lock(mutex_);
      if (auto it = jobs_.find(job->id); it != jobs_.end()) {
        previous = it->second;
        jobs_.erase(it);
      }
      jobs_.emplace(job->id, job);
      job->thread = std::thread([this, job] { run_job(job); });
    }
    if (previous && previous->thread.joinable()) previous->thread.join();
  }
  ctx_.metrics()
      .gauge("conveyor_worker_running", "jobs this worker is running")
      .set(static_cast<double>(running_count()));
}

void Worker::reap_finished() {
  std::vector<std::shared_ptr<Job>> done;
  {
    std::lock_guard lock(mutex_);
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      if (it->second->finished) {
        done.push_back(it->second);
        it = jobs_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& job : done) {
    if (job->thread.joinable()) job->thread.join();
  }
  if (!done.empty()) {
    ctx_.metrics()
        .gauge("conveyor_worker_running", "jobs this worker is running")
        .set(static_cast<double>(running_count()));
  }
}

void Worker::check_cancels() {
  std::vector<std::int64_t> ids;
  std::map<std::int64_t, std::shared_ptr<Job>> asked;
  {
    std::lock_guard lock(mutex_);
    for (auto& [id, job] : jobs_) {
      if (!job->finished && job->stop == StopReason::none) {
        ids.push_back(id);
        asked.emplace(id, job);
      }
    }
  }
  if (ids.empty()) return;
  auto rows = ctx_.db().transact([&](db::Tx& tx) { return tx.exec(kCanceled, {ids, worker_id_}); });
  std::lock_guard lock(mutex_);
  for (auto row : rows) {
    auto it = jobs_.find(row[0].as_int());
    // Only the run that was asked about: if this worker claimed the job
    // again meanwhile (the reconciler had requeued it), the answer was about
    // the old run, and stopping the new one would cancel a job nobody
    // canceled.
    if (it == jobs_.end() || it->second != asked[it->first]) continue;
    StopReason expected = StopReason::none;
    if (it->second->stop.compare_exchange_strong(expected, StopReason::canceled)) {
      ctx_.log()->info("job {} canceled: stopping its process group", it->first);
    }
  }
}

// ---------------------------------------------------------------- monitor

void Worker::heartbeat() {
  auto rows = ctx_.db().transact([&](db::Tx& tx) {
    std::vector<std::int64_t> running;
    {
      std::lock_guard lock(mutex_);
      for (const auto& [id, job] : jobs_) running.push_back(id);
    }
    return tx.exec(kHeartbeat, {worker_id_, static_cast<int>(running.size()), concurrency(),
                                running});
  });
  if (rows.empty()) {
    ctx_.log()->warn("worker row {} is gone; heartbeats are lost until restart", worker_id_);
    return;
  }
  if (rows[0][0].as_string() == "draining" && !draining_.exchange(true)) {
    ctx_.log()->info("worker {} set to draining: claiming nothing new", name_);
    ctx_.set_ready(false, "draining");
    ctx_.wake();
  }
}

void Worker::monitor_main() {
  auto next_heartbeat = Clock::now();
  std::unique_lock lock(monitor_mutex_);
  while (!monitor_stop_) {
    lock.unlock();
    try {
      check_cancels();
      if (Clock::now() >= next_heartbeat) {
        heartbeat();
        const int interval_s = std::max(1, ctx_.parameters()->worker_heartbeat_interval_s);
        next_heartbeat = Clock::now() + std::chrono::seconds(interval_s);
      }
    } catch (const std::exception& e) {
      ctx_.log()->error("worker heartbeat/cancel check failed: {}", e.what());
    }
    lock.lock();
    // Cancel requests are also checked on every wake-up of the main loop
    // (cancel_requested events); this is the fallback cadence.
    monitor_cv_.wait_for(lock, std::chrono::milliseconds(500), [this] { return monitor_stop_; });
  }
}

// ---------------------------------------------------------------- one job

void Worker::run_job(const std::shared_ptr<Job>& job) {
  try {
    fs::path out_dir = output_dir(data_dir_, job->id);
    if (auto o = job->config.find("output_dir");
        o != job->config.end() && o->is_string() && !o->get<std::string>().empty()) {
      out_dir = o->get<std::string>();  // what configuration put in the argv
    }
    const fs::path logs = log_dir(data_dir_, job->month, job->id);
    std::error_code ec;
    fs::create_directories(out_dir, ec);
    if (ec) throw Error(errc::internal, "cannot create " + out_dir.string() + ": " + ec.message());
    LogFile log(logs / "logs.txt");

    ProcessOptions options;
    if (!job->config.is_object()) throw Error(errc::bad_input, "job config is not an object");
    json argv = job->config.value("argv", json());
    rerender_attempt(*job, out_dir, argv);
    if (!argv.is_array() || argv.empty()) {
      throw Error(errc::bad_input, "job config has no argv (an array of strings)");
    }
    for (const auto& a : argv) {
      if (!a.is_string()) throw Error(errc::bad_input, "job config argv holds a non-string");
      options.argv.push_back(a.get<std::string>());
    }
    std::map<std::string, std::string> job_env;
    if (auto it = job->config.find("env"); it != job->config.end() && it->is_object()) {
      for (const auto& [k, v] : it->items()) {
        job_env[k] = v.is_string() ? v.get<std::string>() : v.dump();
      }
    }
    job_env["CONVEYOR_JOB_ID"] = std::to_string(job->id);
    job_env["CONVEYOR_JOB_ATTEMPT"] = std::to_string(job->attempt);
    job_env["CONVEYOR_OUTPUT_DIR"] = out_dir.string();
    options.env = base_env_;
    for (const auto& [k, v] : job_env) options.env[k] = v;
    options.cwd = out_dir;
    options.kill_grace = kill_grace_;
    options.shutdown_kill_grace = shutdown_kill_grace_;
    if (auto t = job->config.find("timeout_s");
        t != job->config.end() && t->is_number() && t->get<double>() > 0) {
      options.timeout = std::chrono::milliseconds(
          static_cast<std::int64_t>(std::llround(t->get<double>() * 1000.0)));
    }

    log.write("conveyor", fmt::format("attempt {} of {} on worker {}: {}", job->attempt + 1,
                                      job->max_attempts, name_, argv.dump()));
    ProcessOutcome outcome = run_process(
        options, job->stop,
        [&](std::string_view stream, std::string_view line) { log.write(stream, line); });
    if (outcome.spawn_error) log.write("conveyor", *outcome.spawn_error + " (exit code 127)");

    std::string ending;
    if (outcome.timed_out) {
      ending = fmt::format("killed after timeout of {} s",
                           job->config.value("timeout_s", json(0)).dump());
    } else if (outcome.stopped == StopReason::canceled) {
      ending = "killed: the job was canceled";
    } else if (outcome.stopped == StopReason::shutdown) {
      ending = "killed: the worker shut down";
    } else if (outcome.exit_code) {
      ending = fmt::format("exited with code {}", *outcome.exit_code);
    } else if (outcome.term_signal) {
      ending = fmt::format("killed by {}", describe_signal(*outcome.term_signal));
    }
    log.write("conveyor", ending);

    const auto outputs = list_outputs(out_dir);
    const auto duration_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(outcome.ended - outcome.started)
            .count();
    json meta = {
        {"job_id", job->id},
        {"job_type", job->type},
        {"argv", argv},
        {"image", job->config.value("image", json(""))},
        {"attempt", job->attempt},
        {"max_attempts", job->max_attempts},
        {"exit_code", outcome.exit_code ? json(*outcome.exit_code) : json(nullptr)},
        {"signal",
         outcome.term_signal ? json(describe_signal(*outcome.term_signal)) : json(nullptr)},
        {"timed_out", outcome.timed_out},
        {"canceled", outcome.stopped == StopReason::canceled},
        {"message", ending},
        {"worker", name_},
        {"worker_id", worker_id_},
        {"started_at", rfc3339_ms(outcome.started)},
        {"ended_at", rfc3339_ms(outcome.ended)},
        {"duration_ms", duration_ms},
        {"output_dir", out_dir.string()},
        {"outputs", outputs},
        {"env", redact_env(job_env)},
        {"params", job->params},
    };
    write_json_file(logs / "metadata.json", meta);

    ctx_.metrics()
        .histogram("conveyor_worker_job_duration_seconds", "run time of job processes",
                   {0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400})
        .observe(static_cast<double>(duration_ms) / 1000.0);
    finish_job(*job, outcome, logs.string(), outputs);
  } catch (const std::exception& e) {
    ctx_.log()->error("job {}: {}", job->id, e.what());
    fail_internal(*job, e.what());
  }
  job->finished = true;
  job_done_.notify_all();
  ctx_.wake();  // a slot is free: claim again
}

void Worker::finish_job(Job& job, const ProcessOutcome& outcome, const std::string& logs,
                        const std::vector<std::string>& outputs) {
  const auto duration_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(outcome.ended - outcome.started)
          .count();
  std::string outcome_label;
  std::optional<db::Result> written;
  if (outcome.stopped == StopReason::canceled) {
    written = write_outcome(job, kFinishCanceled, {job.id, worker_id_});
    outcome_label = "canceled";
  } else if (outcome.stopped == StopReason::shutdown) {
    written = write_outcome(job, kFinishRequeue, {job.id, worker_id_});
    outcome_label = "requeued";
  } else if (!outcome.timed_out && outcome.exit_code == 0) {
    json result = {{"exit_code", 0},  {"outputs", outputs},
                   {"log_dir", logs}, {"duration_ms", duration_ms},
                   {"worker", name_}, {"attempt", job.attempt}};
    written = write_outcome(job, kFinishProcessed, {job.id, worker_id_, result.dump()});
    outcome_label = "processed";
  } else {
    std::string subtype = "exit_code";
    std::string message;
    if (outcome.timed_out) {
      subtype = "timeout";
      message = fmt::format("killed after timeout of {} s",
                            job.config.value("timeout_s", json(0)).dump());
    } else if (outcome.spawn_error) {
      message = *outcome.spawn_error + " (exit code 127)";
    } else if (outcome.exit_code) {
      message = fmt::format("exited with code {}", *outcome.exit_code);
    } else {
      message = fmt::format("killed by {}", describe_signal(outcome.term_signal.value_or(0)));
    }
    double backoff_s = 30;
    if (auto b = job.config.find("retry_backoff_s"); b != job.config.end() && b->is_number()) {
      backoff_s = std::max(0.0, b->get<double>());
    }
    written = write_outcome(job, kFinishFailure, {job.id, worker_id_, backoff_s, subtype, message});
    outcome_label = !written || written->empty() ? "failed" : (*written)[0][0].as_string();
    if (outcome_label == "ready") outcome_label = "retried";
  }
  if (!written) {
    outcome_label = "unrecorded";
  } else if (written->empty()) {
    // The reconciler requeued it (we looked lost) or an operator moved it:
    // its status is no longer ours to set.
    ctx_.log()->warn("job {} is no longer started by worker {}; its result is dropped", job.id,
                     name_);
    outcome_label = "dropped";
  } else {
    ctx_.log()->info("job {} ({}) ended {} after {} ms", job.id, job.type,
                     (*written)[0][0].as_string(), duration_ms);
  }
  ctx_.metrics()
      .counter("conveyor_worker_jobs_total", "jobs this worker ran, by outcome",
               {{"outcome", outcome_label}})
      .inc();
}

void Worker::fail_internal(Job& job, const std::string& message) {
  const auto written =
      write_outcome(job, kFinishInternal, {job.id, worker_id_, std::string("worker_error"), message});
  ctx_.metrics()
      .counter("conveyor_worker_jobs_total", "jobs this worker ran, by outcome",
               {{"outcome", !written ? "unrecorded" : written->empty() ? "dropped" : "internal_error"}})
      .inc();
}

// A job's outcome is written until it is committed: a database restart
// while jobs run must not leave them `started` while this worker lives on
// (issue 9). The statements are conditional on the job still being started
// by this worker, so a retry after a commit whose outcome was unknown
// changes nothing. Gives up only on an error that retrying cannot mend, or
// past the deadline stop_threads() sets; the reconciler then recovers the job
// (model::reap_lost_workers: missing from running_jobs, or this worker lost).
std::optional<db::Result> Worker::write_outcome(const Job& job, const db::Statement& statement,
                                                const std::vector<db::Param>& params) {
  std::chrono::milliseconds backoff{100};
  bool in_doubt = false;
  for (int attempt = 1;; ++attempt) {
    try {
      db::Result rows = ctx_.db().transact([&](db::Tx& tx) { return tx.exec(statement, params); });
      if (attempt > 1) {
        ctx_.log()->info("job {}: outcome recorded after {} attempts{}", job.id, attempt,
                         rows.empty() && in_doubt ? " (an earlier commit had gone through)" : "");
      }
      return rows;
    } catch (const db::DbError& e) {
      in_doubt = in_doubt || e.sqlstate() == "08007";
      const bool transient =
          e.retriable() || e.code() == errc::unavailable || e.code() == errc::timeout;
      if (!transient) {
        ctx_.log()->error("job {}: cannot record its outcome ({}); the reconciler will recover it",
                          job.id, e.what());
        return std::nullopt;
      }
      if (attempt == 1 || attempt % 20 == 0) {
        ctx_.log()->warn("job {}: recording its outcome failed (attempt {}), retrying: {}", job.id,
                         attempt, e.what());
      }
      ctx_.metrics()
          .counter("conveyor_worker_outcome_retries_total",
                   "failed attempts to record a job's outcome, retried")
          .inc();
    } catch (const std::exception& e) {
      ctx_.log()->error("job {}: cannot record its outcome ({}); the reconciler will recover it",
                        job.id, e.what());
      return std::nullopt;
    }
    std::unique_lock lock(outcome_mutex_);
    const auto wake = std::chrono::steady_clock::now() + backoff;
    outcome_cv_.wait_until(lock, outcome_deadline_ ? std::min(wake, *outcome_deadline_) : wake);
    if (outcome_deadline_ && std::chrono::steady_clock::now() >= *outcome_deadline_) {
      ctx_.log()->error("job {}: outcome not recorded before the worker stopped; the reconciler "
                        "will recover it",
                        job.id);
      return std::nullopt;
    }
    backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
  }
}

// ---------------------------------------------------------------- shutdown

void Worker::shutdown() {
  draining_ = true;
  ctx_.set_ready(false, "draining");
  try {
    ctx_.db().transact([&](db::Tx& tx) { tx.exec(kMarkDraining, {worker_id_}); });
  } catch (const std::exception& e) {
    ctx_.log()->error("cannot mark worker {} draining: {}", name_, e.what());
  }
  const auto grace_end = Clock::now() + drain_wait_;
  {
    std::unique_lock lock(mutex_);
    if (!jobs_.empty()) {
      ctx_.log()->info("waiting up to {} ms for {} running job(s)", drain_wait_.count(),
                       jobs_.size());
    }
    job_done_.wait_until(lock, grace_end, [this] {
      return std::all_of(jobs_.begin(), jobs_.end(),
                         [](const auto& kv) { return kv.second->finished.load(); });
    });
    for (auto& [id, job] : jobs_) {
      StopReason expected = StopReason::none;
      if (!job->finished && job->stop.compare_exchange_strong(expected, StopReason::shutdown)) {
        ctx_.log()->warn("job {} still running after the shutdown grace: stopping and requeueing",
                         id);
      }
    }
  }
  stop_threads();
  try {
    ctx_.db().transact([&](db::Tx& tx) { tx.exec(kMarkStopped, {worker_id_}); });
    stopped_ = true;
    ctx_.log()->info("worker {} stopped", name_);
  } catch (const std::exception& e) {
    ctx_.log()->error("cannot mark worker {} stopped: {}", name_, e.what());
  }
}

void Worker::stop_threads() {
  {
    // Jobs stopped now still get a moment to record that they were requeued.
    std::lock_guard lock(outcome_mutex_);
    outcome_deadline_ = std::chrono::steady_clock::now() + shutdown_kill_grace_ +
                        std::chrono::milliseconds(1000);
  }
  outcome_cv_.notify_all();
  std::vector<std::shared_ptr<Job>> jobs;
  {
    std::lock_guard lock(mutex_);
    for (auto& [id, job] : jobs_) {
      StopReason expected = StopReason::none;
      job->stop.compare_exchange_strong(expected, StopReason::shutdown);
      jobs.push_back(job);
    }
  }
  for (auto& job : jobs) {
    if (job->thread.joinable()) job->thread.join();
  }
  {
    std::lock_guard lock(mutex_);
    jobs_.clear();
  }
  {
    std::lock_guard lock(monitor_mutex_);
    monitor_stop_ = true;
  }
  monitor_cv_.notify_all();
  if (monitor_.joinable()) monitor_.join();
}

}  // namespace conveyor::worker
