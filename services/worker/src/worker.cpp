#include "worker.hpp"

#include <fmt/format.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>

#include "conveyor/db/db.hpp"
#include "conveyor/error/error.hpp"
#include "conveyor/logging/thread_name.hpp"
#include "conveyor/model/job_config.hpp"
#include "conveyor/model/job_type.hpp"
#include "conveyor/model/worker.hpp"
#include "executor.hpp"
#include "finish_batch.hpp"
#include "job_files.hpp"

#ifndef CONVEYOR_WORKER_VERSION
#define CONVEYOR_WORKER_VERSION "dev"
#endif

namespace conveyor::worker {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// The executor's threads at most, whatever the concurrency: a job's program
// runs on the reactor; these only prepare and record jobs. A thread waits
// while its job's processed is group-committed (FinishBatch), so the
// threads bound a batch. conveyor-bench --workload resident --jobs 10000
// --batch 100 --concurrency 64 --duration 0 on 2 cores, alternating: with
// 8, 4.3 jobs a statement and 1,103-1,240 jobs/s; with 16, 1,405-1,412;
// with 32, about 15 a statement and 1,543-1,672; with 64, 1,624-1,638 and
// more of the workers' CPU. Waiting 2 ms for a fuller batch added nothing
// measurable on top of 32.
constexpr int kMaxExecutorThreads = 32;
// Container jobs' setup and end (image pulls, runtime calls), at once.
constexpr int kContainerThreads = 4;

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
    "WITH orphans AS ("
    "  UPDATE conveyor.job SET status = 'ready', attempt = attempt + 1, "
    "    error_subtype = 'worker_restarted', error_message = 'worker restarted while the job ran' "
    "  WHERE worker_id = $1 AND status = 'started' RETURNING id, attempt - 1 AS attempt), "
    "closed AS ("
    "  UPDATE conveyor.job_attempt a SET ended_at = now(), outcome = 'lost' "
    "  FROM orphans o WHERE a.job_id = o.id AND a.attempt = o.attempt AND a.ended_at IS NULL) "
    "SELECT id FROM orphans"};

// $4: the jobs this worker runs, read inside this transaction, so that
// running_jobs_at (its now()) is never later than the list (the reconciler
// recovers started jobs missing from it; model::reap_lost_workers).
constexpr db::Statement kHeartbeat{"worker_heartbeat",
                                   "UPDATE conveyor.worker SET last_heartbeat = now(), running = $2, concurrency = $3, "
                                   "  running_jobs = $4::bigint[], running_jobs_at = now(), "
                                   "  status = CASE WHEN status = 'lost' THEN 'active' ELSE status END "
                                   "WHERE id = $1 RETURNING status"};

// The channel of the queued jobs assigned to this worker ($1 its id).
constexpr db::Statement kQueuedChannel{"worker_queued_channel", "SELECT conveyor.queued_channel($1)"};

// By itself: alive, so from lost too (conveyor.drain_worker).
constexpr db::Statement kMarkDraining{"worker_mark_draining", "SELECT * FROM conveyor.drain_worker($1, true)"};

constexpr db::Statement kMarkStopped{"worker_mark_stopped",
                                     "UPDATE conveyor.worker SET status = 'stopped', running = 0, stopped_at = now(), "
                                     "  last_heartbeat = now() WHERE id = $1"};

// The queued jobs this worker may run are conveyor.claimable_jobs (migration
// 20261226000000): of its pool, its own or no one's (or a stale
// assignment's), container jobs only with a container runtime. Its
// arguments: this worker's id, pool, whether it runs containers, how many,
// and whether to lock them.
//
// Whether there is any (run alone, one round trip): the other workers woken
// by the same queued job usually find it taken, and then need no claim
// transaction.
constexpr db::Statement kAnyClaimable{"worker_any_claimable",
                                      "SELECT 1 FROM conveyor.claimable_jobs($1, $2, $3, 1, false)"};

// Claims and opens a row in conveyor.job_attempt for each claimed job ($4:
// the worker's name).
constexpr db::Statement kClaim{
    "worker_claim",
    "WITH claimed AS ("
    "UPDATE conveyor.job SET status = 'started', worker_id = $1 "
    // ARRAY(...), not IN (...): as a semi join's inner side the LIMIT ...
    // SKIP LOCKED subquery is run again per outer row and claimed every
    // queued job, past the worker's concurrency (found by ResidentTest).
    "WHERE id = ANY(ARRAY(SELECT conveyor.claimable_jobs($1, $2, $5, $3, true))) "
    "  AND status = 'queued' "
    // Not a job whose earlier run this worker has not finished (the
    // reconciler requeued it while its program ran): that run is stopped at
    // the next cancel check, and its end would be taken for this run's.
    "  AND id <> ALL($6::bigint[]) "
    // A worker the pool (or an operator) set draining, or the reaper marked
    // lost, claims nothing, even before its next heartbeat notices.
    "  AND EXISTS (SELECT 1 FROM conveyor.worker w WHERE w.id = $1 AND w.status = 'active') "
    "RETURNING id, job_type, attempt, max_attempts, config, params, created_at), "
    // A run of the job still open (prepare-for-reboot requeues without
    // closing it) ended when this one began.
    "earlier AS ("
    "  UPDATE conveyor.job_attempt a SET ended_at = now(), outcome = 'lost' "
    "  FROM claimed c WHERE a.job_id = c.id AND a.ended_at IS NULL), "
    "attempts AS ("
    "  INSERT INTO conveyor.job_attempt (job_id, attempt, job_type, worker_id, worker, image, "
    "                                    started_at) "
    "  SELECT id, attempt, job_type, $1, $4, NULLIF(config->>'image', ''), now() FROM claimed) "
    "SELECT id, job_type, attempt, max_attempts, coalesce(config, '{}'::jsonb)::text AS config, "
    "  params::text AS params, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM') AS month, "
    // The statement's snapshot: runs before this one (a container could be left).
    "  EXISTS (SELECT 1 FROM conveyor.job_attempt a WHERE a.job_id = claimed.id) AS ran_before "
    "FROM claimed"};

// Closes an attempt's row with what it cost; in the transaction that
// records the job's outcome. $3: the status the attempt left the job in.
constexpr db::Statement kCloseAttempt{"worker_close_attempt",
                                      "UPDATE conveyor.job_attempt SET ended_at = now(), outcome = $3, exit_code = $4, "
                                      "  image_digest = coalesce($5, image_digest), wall_ms = $6, cpu_user_ms = $7, "
                                      "  cpu_system_ms = $8, max_rss_kb = $9 "
                                      "WHERE job_id = $1 AND attempt = $2 AND ended_at IS NULL"};

// Which of the containers found on this host no `started` attempt owns.
constexpr db::Statement kStaleContainers{
    "worker_stale_containers",
    "SELECT c.job_id, c.attempt FROM unnest($1::bigint[], $2::bigint[]) AS c(job_id, attempt) "
    "WHERE NOT EXISTS (SELECT 1 FROM conveyor.job j WHERE j.id = c.job_id "
    "                  AND j.status = 'started' AND j.attempt = c.attempt)"};

constexpr db::Statement kInstallation{"worker_installation", "SELECT id FROM conveyor.installation"};

// Jobs to stop: their cancel was asked, or they are no longer started by this
// worker (the reaper requeued them while it looked lost, or an operator
// moved them): their result would be dropped anyway.
constexpr db::Statement kCanceled{"worker_canceled_jobs",
                                  "SELECT r.id, j.canceled_at IS NOT NULL AS canceled "
                                  "FROM unnest($1::bigint[]) AS r(id) "
                                  "LEFT JOIN conveyor.job j ON j.id = r.id "
                                  "WHERE j.id IS NULL OR j.canceled_at IS NOT NULL OR j.status <> 'started' "
                                  "   OR j.worker_id IS DISTINCT FROM $2::bigint"};

// processed, or done through processed when the job delivers nothing
// (conveyor.status_after_success, a passage); the status it led to is
// returned, and the attempt closes with it.
constexpr db::Statement kFinishProcessed{
    "worker_finish_processed",
    "UPDATE conveyor.job SET status = conveyor.status_after_success(canceled_at, config), "
    "  result = $3::jsonb, "
    "  error_subtype = NULL, error_message = NULL "
    "WHERE id = $1 AND status = 'started' AND worker_id = $2 RETURNING status"};

// Retry while attempts remain (conveyor.retry_backoff: retry_backoff_s *
// 2^attempt, capped at an hour), else failed. A job whose cancel was asked meanwhile ends
// canceled instead of going round again.
constexpr db::Statement kFinishFailure{
    "worker_finish_failure",
    "UPDATE conveyor.job SET "
    "  status = CASE WHEN canceled_at IS NOT NULL THEN 'canceled' "
    "                WHEN attempt + 1 < max_attempts THEN 'ready' ELSE 'failed' END, "
    "  not_before = CASE WHEN canceled_at IS NULL AND attempt + 1 < max_attempts "
    "    THEN now() + conveyor.retry_backoff($3::float8, attempt + 1, 3600) "
    "    ELSE not_before END, "
    "  attempt = CASE WHEN canceled_at IS NULL AND attempt + 1 < max_attempts "
    "    THEN attempt + 1 ELSE attempt END, "
    "  error_subtype = $4, error_message = $5 "
    "WHERE id = $1 AND status = 'started' AND worker_id = $2 RETURNING status"};

constexpr db::Statement kFinishCanceled{"worker_finish_canceled",
                                        "UPDATE conveyor.job SET status = 'canceled' "
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
  s.add({.name = "CONVEYOR_CONTAINER_RUNTIME",
         .default_value = "",
         .help = "podman or docker (or a path to one) for jobs whose type has an image; empty: "
                 "podman when on PATH, else docker"});
  s.add({.name = "CONVEYOR_CONTAINER_USER",
         .default_value = "",
         .help = "uid:gid that container jobs run as (never 0); empty: 10001:10001 for a worker "
                 "running as root, else the worker's own uid:gid"});
  s.add({.name = "CONVEYOR_CONTAINER_PULL_TIMEOUT_MS",
         .type = config::Type::duration_ms,
         .default_value = "600000",
         .help = "longest wait for an image pull; longer ends the attempt internal_error/image_pull",
         .min = 1000,
         .max = 86'400'000});
  s.add({.name = "CONVEYOR_CONTAINER_SWEEP_INTERVAL_MS",
         .type = config::Type::duration_ms,
         .default_value = "30000",
         .help = "how often the worker removes containers of this installation that no started "
                 "attempt owns (left by a worker killed -9); 0: only at start",
         .min = 0,
         .max = 86'400'000});
  s.add({.name = "CONVEYOR_CONTAINER_CGROUP_PARENT",
         .default_value = "conveyor-jobs",
         .help = "cgroupfs parent of each container job's own cgroup, read for its CPU and peak "
                 "memory; empty: no cgroup (no usage figures for container jobs)"});
  s.add({.name = "CONVEYOR_KILL_GRACE_MS",
         .type = config::Type::duration_ms,
         .default_value = "5000",
         .help = "time between SIGTERM and SIGKILL when a job is stopped",
         .min = 0,
         .max = 3'600'000});
  return s;
}

// ---------------------------------------------------------------- job

// What one attempt runs with, prepared before it starts.
struct Worker::Attempt {
  fs::path out_dir;  // on this host
  fs::path logs;     // the job's log folder
  std::string image;
  ProcessOptions options;
  std::map<std::string, std::string> job_env;  // a container's whole environment
  json meta;                                   // metadata.json
  std::optional<std::string> image_digest;
};

struct Worker::Job {
  std::int64_t id = 0;
  std::string type;
  int attempt = 0;
  int max_attempts = 1;
  json config;
  model::JobConfig cfg;  // config, parsed by begin_job
  json params;
  std::string month;
  bool ran_before = false;  // an earlier run of this job was claimed (by any worker)
  std::atomic<StopReason> stop{StopReason::none};
  // Its program has exited: the slot is free for the next job while this
  // one's files and outcome are still being written.
  std::atomic<bool> slot_free{false};
  std::atomic<bool> finished{false};
  // Set by begin_job, used by the steps after it (never at once by two threads).
  std::unique_ptr<Attempt> run;
  std::unique_ptr<LogFile> log;
};

// Configuration renders argv once, with the attempt of that moment; a retry
// does not pass through configuration again, so "{attempt}" in the type's
// command (kept as config.command_template) is rendered again here.
void Worker::rerender_attempt(const Job& job, const fs::path& out_dir, std::vector<std::string>& argv) {
  const auto& t = job.cfg.command_template;
  const bool uses_attempt =
      std::any_of(t.begin(), t.end(), [](const std::string& a) { return a.find("{attempt}") != std::string::npos; });
  if (!uses_attempt) return;
  try {
    model::ArgvContext c;
    c.params = job.params.is_object() ? job.params : json::object();
    c.job_id = job.id;
    c.attempt = job.attempt;
    c.output_dir = out_dir.string();
    c.inputs = job.cfg.inputs;
    argv = model::render_argv(t, c);
  } catch (const std::exception& e) {
    ctx_.log()->warn("job {}: cannot re-render the command for attempt {} ({}); using config.argv", job.id, job.attempt,
                     e.what());
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
  // A job gets a minimal environment, not the worker's: the database URL,
  // API token and other secrets of the worker are not the job's.
  base_env_ = job_base_environment(config::process_environment());
  // A process job runs as the worker's user, who may read
  // /proc/<worker>/environ (those same secrets) and attach to the worker.
  // Not dumpable: both are refused to anyone but root (and the worker leaves
  // no core dump). The job's own exec makes it dumpable again.
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    ctx.log()->warn(
        "cannot make the worker non-dumpable ({}): a process job could read the "
        "worker's environment in /proc",
        std::strerror(errno));
  }
  setup_containers();
}

// The runtime and the user of container jobs, decided once at start.
void Worker::setup_containers() {
  const auto& cfg = ctx_.config();
  sweep_interval_ = cfg.get_duration("CONVEYOR_CONTAINER_SWEEP_INTERVAL_MS");
  cgroup_base_ = cfg.get_string("CONVEYOR_CONTAINER_CGROUP_PARENT");
  std::string user = cfg.get_string("CONVEYOR_CONTAINER_USER");
  const bool root = ::geteuid() == 0;
  if (user.empty()) {
    user = root ? "10001:10001" : fmt::format("{}:{}", ::geteuid(), ::getegid());
  }
  unsigned long uid = 0;
  unsigned long gid = 0;
  if (std::sscanf(user.c_str(), "%lu:%lu", &uid, &gid) != 2 || user != fmt::format("{}:{}", uid, gid)) {
    throw Error(errc::bad_input,
                "CONVEYOR_CONTAINER_USER: expected uid:gid in numbers (e.g. 10001:10001), got '" + user + "'");
  }
  if (uid == 0 || gid == 0) {
    throw Error(errc::bad_input,
                "CONVEYOR_CONTAINER_USER: container jobs never run as root (uid 0) or in its group "
                "(gid 0), got '" +
                    user + "'");
  }
  container_user_ = user;
  // A worker running as root gives each output dir to that user; a rootless
  // worker maps its own uid into the container instead.
  if (root) chown_outputs_to_ = std::pair<uid_t, gid_t>(uid, gid);
  auto runtime = find_runtime(cfg.get_string("CONVEYOR_CONTAINER_RUNTIME"), runtime_why_);
  if (runtime) {
    RuntimeCalls calls;
    calls.runtime = *runtime;
    calls.env = runtime_client_environment(config::process_environment());
    calls.pull_timeout = cfg.get_duration("CONVEYOR_CONTAINER_PULL_TIMEOUT_MS");
    container_keep_id_ = !root && runtime->kind == "podman";
    if (!cgroup_base_.empty()) {
      const auto manager = cgroup_manager(calls);
      if (manager != "cgroupfs") {
        ctx_.log()->info(
            "{} uses the '{}' cgroup manager: container jobs get no cgroup of their "
            "own (CONVEYOR_CONTAINER_CGROUP_PARENT needs cgroupfs), so no CPU or "
            "memory figures",
            runtime->program, manager.empty() ? "unknown" : manager);
        cgroup_base_.clear();
      }
    }
    runtime_ = std::move(calls);
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

std::vector<std::int64_t> Worker::unfinished_ids() {
  std::lock_guard lock(mutex_);
  std::vector<std::int64_t> ids;
  for (const auto& [id, job] : jobs_) {
    if (!job->finished) ids.push_back(id);
  }
  return ids;
}

int Worker::busy_slots() {
  std::lock_guard lock(mutex_);
  return static_cast<int>(std::count_if(jobs_.begin(), jobs_.end(),
                                        [](const auto& kv) { return !kv.second->slot_free && !kv.second->finished; }));
}

// Called the moment a job's program has exited: the claim loop fills the
// slot at once instead of after the outcome is written.
void Worker::free_slot(Job& job) {
  if (!job.slot_free.exchange(true)) ctx_.wake_because(kSlotFreedWake);
}

void Worker::start() {
  const int pid = static_cast<int>(::getpid());
  worker_id_ = ctx_.db().transact([&](db::Tx& tx) {
    auto id =
        tx.exec(kRegister, {name_, hostname(), pid, pool_, concurrency(), std::string(CONVEYOR_WORKER_VERSION)})[0][0]
            .as_int();
    installation_ = tx.exec(kInstallation, {})[0][0].as_string();
    queued_channel_ = tx.exec(kQueuedChannel, {id})[0][0].as_string();
    const auto orphans = tx.exec(kRequeueOrphans, {id}).size();
    if (orphans > 0) {
      ctx_.log()->warn("requeued {} job(s) left started by an earlier run of worker {}", orphans, name_);
    }
    return id;
  });
  // Admission assigns jobs to this worker and wakes it alone, on this channel.
  ctx_.listen_also(queued_channel_, kQueuedEvent);
  ctx_.log()->info("worker {} (id {}) started: pool {}, concurrency {}{}, data dir {}", name_, worker_id_, pool_,
                   concurrency(), configured_concurrency_ == 0 ? " (from system_parameters)" : "", data_dir_.string());
  if (runtime_) {
    ctx_.log()->info("container jobs run with {} as user {}", runtime_->runtime.program, container_user_);
  } else {
    ctx_.log()->info("container jobs cannot run here: {}", runtime_why_);
  }
  ctx_.metrics().gauge("conveyor_worker_running", "jobs this worker is running").set(0);
  finishes_ = std::make_unique<FinishBatch>(ctx_.db(), worker_id_);
  Reactor::instance();  // its thread now: a worker that cannot have one does not start
  // Enough threads that a job's files and outcome do not wait for another
  // job's; the group commit (FinishBatch) batches what they record at once.
  executor_ = std::make_unique<Executor>(std::clamp(concurrency(), 2, kMaxExecutorThreads), "executor");
  // Container jobs' image pulls and runtime calls can take minutes: their
  // own threads, so that process jobs never wait behind a pull.
  if (runtime_) containers_ = std::make_unique<Executor>(kContainerThreads, "containers");
  monitor_ = std::thread([this] {
    logging::name_this_thread("monitor");
    monitor_main();
  });
  if (runtime_) {
    sweeper_ = std::thread([this] {
      logging::name_this_thread("sweeper");
      sweeper_main();
    });
  }
}

// ---------------------------------------------------------------- main loop

void Worker::loop() {
  runtime::Wake wake;  // the first claim probes
  while (true) {
    // A NOTIFY of queued jobs or a slot this worker freed, and nothing else:
    // new work or room for it, and nothing about this worker's other jobs (a
    // cancel request wakes it from Kafka; a requeue by the reaper is found
    // within a poll interval, even while wake-ups keep the poll itself from
    // timing out; the monitor thread also checks every 500 ms).
    const bool only_claim = !wake.anything && std::all_of(wake.types.begin(), wake.types.end(), [](const auto& t) {
      return t == kQueuedEvent || t == kSlotFreedWake;
    });
    const bool queued_notified = !wake.anything && wake.types.contains(kQueuedEvent);
    const bool only_slot_freed = only_claim && !queued_notified;
    try {
      reap_finished();
      const auto now = std::chrono::steady_clock::now();
      if (!only_claim || now - last_cancel_check_ >= poll_interval_) {
        last_cancel_check_ = now;
        check_cancels();
      }
      if (draining_) {
        if (running_count() == 0) {
          ctx_.log()->info("worker {} drained by an operator; exiting", name_);
          break;
        }
      } else {
        claim(queued_notified, only_slot_freed);
      }
    } catch (const std::exception& e) {
      // The database may be briefly unreachable; the next wake-up or poll
      // tries again, and claims after a freed slot (what this cycle was
      // woken for may be queued still).
      jobs_left_ = true;
      ctx_.log()->error("worker cycle failed: {}", e.what());
      ctx_.metrics().counter("conveyor_worker_errors_total", "failed claim/cancel cycles").inc();
    }
    if (!ctx_.wait_for_work(poll_interval_)) break;
    wake = ctx_.last_wake();
  }
  shutdown();
}

void Worker::claim(bool queued_notified, bool only_slot_freed) {
  const int free = concurrency() - busy_slots();
  if (free <= 0) {
    jobs_left_ = true;  // not known: whatever is queued waits for a slot
    return;
  }
  // A freed slot finds work only if the last claim may have left some: when
  // it took less than it asked, nothing more was queued then, and whatever
  // was queued since was notified (a wake-up with queued) or is found by the
  // poll. Skipped, a finished job costs no statement here. Not for longer
  // than a poll interval: freed slots may keep the poll from timing out.
  const auto now = std::chrono::steady_clock::now();
  if (only_slot_freed && !jobs_left_ && now - last_claim_ < poll_interval_) return;
  last_claim_ = now;
  // The probe spares a claim (a write, with its triggers) on a wake-up that
  // is likely to find nothing: a slot freed, a poll. After a NOTIFY of
  // queued jobs it would be one more round trip before the claim: the job
  // was assigned to this worker (its own channel), or to none (every worker
  // is told, and all but one find it taken).
  if (!queued_notified) {
    ctx_.metrics().counter("conveyor_worker_claim_probes_total", "reads of whether any job is claimable").inc();
    if (ctx_.db().exec_idempotent(kAnyClaimable, {worker_id_, pool_, runtime_.has_value()}).empty()) {
      jobs_left_ = false;
      return;
    }
  }
  jobs_left_ = true;  // until the claim's answer says otherwise
  // One statement, its own transaction. A claim whose commit is in doubt is
  // the reconciler's: the jobs are missing from this worker's running_jobs.
  auto rows = ctx_.db().exec_once(kClaim, {worker_id_, pool_, free, name_, runtime_.has_value(), unfinished_ids()});
  jobs_left_ = static_cast<int>(rows.size()) >= free;
  if (rows.empty())
    ctx_.metrics().counter("conveyor_worker_empty_claims_total", "claims that found no job to take").inc();
  for (auto row : rows) {
    auto job = std::make_shared<Job>();
    job->id = row["id"].as_int();
    job->type = row["job_type"].as_string();
    job->attempt = static_cast<int>(row["attempt"].as_int());
    job->max_attempts = static_cast<int>(row["max_attempts"].as_int());
    job->config = json::parse(row["config"].view(), nullptr, false);
    job->params = json::parse(row["params"].view(), nullptr, false);
    job->month = row["month"].as_string();
    job->ran_before = row["ran_before"].as_bool();
    ctx_.log()->info("job {} ({}) started, attempt {} of {}", job->id, job->type, job->attempt + 1, job->max_attempts);
    // A retried job can be claimed again once its first attempt finished,
    // before reap_finished() saw it: replace that entry.
    {
      std::lock_guard lock(mutex_);
      jobs_.erase(job->id);
      jobs_.emplace(job->id, job);
    }
    executor_->post([this, job] { begin_job(job); });
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
  auto rows = ctx_.db().exec_idempotent(kCanceled, {ids, worker_id_});
  std::lock_guard lock(mutex_);
  for (auto row : rows) {
    auto it = jobs_.find(row[0].as_int());
    // Only the run that was asked about: if this worker claimed the job
    // again meanwhile (the reconciler had requeued it), the answer was about
    // the old run, and stopping the new one would cancel a job nobody
    // canceled.
    if (it == jobs_.end() || it->second != asked[it->first]) continue;
    const bool canceled = row[1].as_bool();
    if (!request_stop(it->second->stop, canceled ? StopReason::canceled : StopReason::taken)) continue;
    if (canceled) {
      ctx_.log()->info("job {} canceled: stopping its process group", it->first);
    } else {
      // Requeued (this worker looked lost), moved by an operator, or gone:
      // this run's end is no longer the job's.
      ctx_.log()->warn("job {} is no longer started by worker {}: stopping its process group", it->first, name_);
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
    return tx.exec(kHeartbeat, {worker_id_, static_cast<int>(running.size()), concurrency(), running});
  });
  if (rows.empty()) {
    ctx_.log()->warn("worker row {} is gone; heartbeats are lost until restart", worker_id_);
    return;
  }
  if (rows[0][0].as_string() == "stopped" && !ctx_.stopping()) {
    // Marked stopped by someone else (system prepare-for-reboot --force, a
    // restore, psql): it claims nothing, and kept alive it would heartbeat
    // a row that every list hides. The row is the truth: it stops.
    ctx_.request_stop(fmt::format("worker {} (row {}) was marked stopped by someone else", name_, worker_id_));
    return;
  }
  if (rows[0][0].as_string() == "draining" && !draining_.exchange(true)) {
    ctx_.log()->info("worker {} set to draining: claiming nothing new", name_);
    ctx_.set_ready(false, "draining");
    ctx_.wake();
  }
}

// Removes this installation's containers that no started attempt owns: a
// worker killed -9 leaves its containers running, and the job runs again
// elsewhere once it is requeued. Runs on the monitor thread.
void Worker::sweep_containers() {
  if (!runtime_) return;
  const auto found = list_containers(*runtime_, installation_, std::nullopt, &sweep_stop_);
  if (found.empty()) return;
  std::vector<std::int64_t> ids;
  std::vector<std::int64_t> attempts;
  for (const auto& c : found) {
    ids.push_back(c.job_id);
    attempts.push_back(c.attempt);
  }
  const auto rows = ctx_.db().transact([&](db::Tx& tx) { return tx.exec(kStaleContainers, {ids, attempts}); });
  std::set<std::pair<std::int64_t, int>> stale;
  for (auto row : rows) stale.emplace(row[0].as_int(), static_cast<int>(row[1].as_int()));
  std::vector<LabeledContainer> victims;
  for (const auto& c : found) {
    if (stale.count({c.job_id, c.attempt})) victims.push_back(c);
  }
  if (victims.empty()) return;
  const auto removed = remove_containers(*runtime_, victims, cgroup_base_, installation_, &sweep_stop_);
  for (const auto& name : removed) {
    ctx_.log()->warn("removed container {}: no started attempt owns it (its worker died?)", name);
  }
  ctx_.metrics()
      .counter("conveyor_worker_stale_containers_removed_total",
               "containers of this installation removed because no started attempt owned them")
      .inc(static_cast<double>(removed.size()));
}

// The sweeper thread: at start, then every sweep_interval_. Its own thread,
// because a runtime call can take long (a storage lock held by a pull) and
// must not delay heartbeats or cancels; stop_threads() aborts the call.
void Worker::sweeper_main() {
  std::unique_lock lock(monitor_mutex_);
  while (!monitor_stop_) {
    lock.unlock();
    try {
      remove_stale_env_files();
      sweep_containers();
    } catch (const std::exception& e) {
      ctx_.log()->error("sweeping stale containers failed: {}", e.what());
    }
    lock.lock();
    if (sweep_interval_.count() == 0) break;
    monitor_cv_.wait_for(lock, sweep_interval_, [this] { return monitor_stop_; });
  }
}

// <data dir>/run/job-env: the containers' environment files, readable by
// this worker's user only.
std::filesystem::path Worker::env_dir() const { return data_dir_ / "run" / "job-env"; }

// Environment files a killed worker left (podman read each one when it
// created the container; a minute is ample).
void Worker::remove_stale_env_files() {
  std::error_code ec;
  fs::create_directories(env_dir(), ec);
  fs::permissions(env_dir(), fs::perms::owner_all, ec);
  const auto now = fs::file_time_type::clock::now();
  for (const auto& e : fs::directory_iterator(env_dir(), ec)) {
    if (e.path().filename().string().rfind(kEnvFilePrefix, 0) != 0) continue;
    std::error_code ec2;
    const auto t = fs::last_write_time(e.path(), ec2);
    if (!ec2 && now - t > std::chrono::minutes(1)) fs::remove(e.path(), ec2);
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

namespace {

// As the type wrote it ("1", "0.5"), for the messages of a timeout.
std::string timeout_text(const json& config) { return config.value("timeout_s", json(0)).dump(); }

}  // namespace

// On the executor: the job's files and command, then its program on the
// reactor, its line to its resident program, or its container's setup on
// the container executor.
void Worker::begin_job(const std::shared_ptr<Job>& job) {
  try {
    job->cfg = model::parse_job_config(job->config);
    job->run = std::make_unique<Attempt>(prepare_attempt(*job));
    const Attempt& a = *job->run;
    job->log = std::make_unique<LogFile>(a.logs / "logs.txt");
    job->log->write("conveyor",
                    fmt::format("attempt {} of {} on worker {}: {}{}", job->attempt + 1, job->max_attempts, name_,
                                a.image.empty() ? "" : "image " + a.image + " ", a.meta["argv"].dump()));
    note_refused_env(*job, *job->log);
    if (job->cfg.runner == "resident") {
      start_resident(job);
      return;
    }
    if (!a.image.empty()) {
      if (!runtime_) throw ContainerError("container_runtime", runtime_why_);
      containers_->post([this, job] { begin_container(job); });
      return;
    }
    LogFile* log = job->log.get();
    Reactor::instance().start(
        a.options, &job->stop, [log](std::string_view stream, std::string_view line) { log->write(stream, line); },
        exit_sink(job));
  } catch (const ContainerError& e) {
    container_failed(*job, *job->run, *job->log, e);
    end_job(*job);
  } catch (const std::exception& e) {
    ctx_.log()->error("job {}: {}", job->id, e.what());
    fail_internal(*job, "worker_error", e.what(), std::nullopt);
    end_job(*job);
  }
}

// On the executor, once the program has exited: the attempt's files and outcome.
void Worker::complete_job(const std::shared_ptr<Job>& job, const ProcessOutcome& outcome) {
  try {
    record_attempt(*job, *job->run, *job->log, outcome);
  } catch (const std::exception& e) {
    ctx_.log()->error("job {}: {}", job->id, e.what());
    fail_internal(*job, "worker_error", e.what(), std::nullopt);
  }
  end_job(*job);
}

// Where a job's program (or resident job) hands its outcome over, on the
// reactor or a resident program's supervisor: the slot is free at once,
// the outcome is recorded on the executor.
ExitSink Worker::exit_sink(const std::shared_ptr<Job>& job) {
  return [this, job](ProcessOutcome outcome) {
    free_slot(*job);
    executor_->post([this, job, outcome = std::move(outcome)] { complete_job(job, outcome); });
  };
}

void Worker::end_job(Job& job) {
  job.log.reset();  // its logs.txt is complete
  job.run.reset();
  {
    // Under the lock: shutdown() and stop_threads() wait on job_done_ with it.
    std::lock_guard lock(mutex_);
    job.finished = true;
  }
  job_done_.notify_all();
  // The slot is free: claim again, unless free_slot() already woke the loop
  // for it when the program exited (a wake-up more would cost a probe). A
  // draining worker wakes to see whether it is done.
  const bool freed_now = !job.slot_free.exchange(true);
  if (draining_) ctx_.wake();
  else if (freed_now) ctx_.wake_because(kSlotFreedWake);
}

// The folders, command, environment and limits of the job's attempt.
Worker::Attempt Worker::prepare_attempt(Job& job) {
  Attempt a;
  // What configuration put in the argv, else the worker's default.
  a.out_dir = job.cfg.output_dir.empty() ? output_dir(data_dir_, job.id) : fs::path(job.cfg.output_dir);
  a.logs = log_dir(data_dir_, job.month, job.id);
  std::error_code ec;
  make_dirs(a.out_dir, ec);
  if (ec) throw Error(errc::internal, "cannot create " + a.out_dir.string() + ": " + ec.message());
  a.image = job.cfg.image;
  // What the job's program sees as its output dir: the host's, or the
  // mount point inside its container.
  const std::string seen_out_dir = model::argv_output_dir(a.image, a.out_dir.string());
  a.options.argv = job.cfg.argv;
  rerender_attempt(job, seen_out_dir, a.options.argv);
  // A container job without a command runs its image's own entrypoint.
  if (a.options.argv.empty() && a.image.empty()) {
    throw Error(errc::bad_input, "job config has no argv (an array of strings)");
  }
  const std::map<std::string, std::string> own = {
      {"CONVEYOR_JOB_ID", std::to_string(job.id)},
      {"CONVEYOR_JOB_ATTEMPT", std::to_string(job.attempt)},
      {"CONVEYOR_OUTPUT_DIR", seen_out_dir},
  };
  // The type's env without PG* and CONVEYOR_* (reserved), and the job's
  // own variables: a container's whole environment besides its image's;
  // a process gets the minimal base under them.
  a.job_env = job_environment({}, job.cfg.env, own);
  a.options.env = job_environment(base_env_, job.cfg.env, own);
  a.options.cwd = a.out_dir;
  a.options.kill_grace = kill_grace_;
  a.options.shutdown_kill_grace = shutdown_kill_grace_;
  a.options.timeout = job.cfg.timeout();
  a.meta = {
      {"job_id", job.id},
      {"job_type", job.type},
      {"argv", a.options.argv},
      {"image", a.image},
      {"attempt", job.attempt},
      {"max_attempts", job.max_attempts},
      {"worker", name_},
      {"worker_id", worker_id_},
      {"output_dir", a.out_dir.string()},
      {"env", redact_env(a.job_env)},
      {"params", job.params},
  };
  return a;
}

// The type's env names a job does not get, in its log and the worker's:
// names only, as a value may be a secret.
void Worker::note_refused_env(const Job& job, LogFile& log) {
  std::vector<std::string> refused;
  job_environment({}, job.cfg.env, {}, &refused);
  if (refused.empty()) return;
  std::string names;
  for (const auto& n : refused) names += (names.empty() ? "" : ", ") + n;
  log.write("conveyor", "env " + names + " not set: PG* and CONVEYOR_* variables are not the job type's to set");
  ctx_.log()->warn("job {}: its type's env sets {}, which a job does not get (PG* and CONVEYOR_* are reserved)", job.id,
                   names);
}

// A resident job: sent to its type's program, whose supervisor ends it.
void Worker::start_resident(const std::shared_ptr<Job>& job) {
  const Attempt& a = *job->run;
  LogFile* log = job->log.get();
  residents_.start(
      a.options,
      {.id = job->id,
       .attempt = job->attempt,
       .type = job->type,
       .params = job->params,
       .out_dir = a.out_dir,
       .program_dir = data_dir_ / "run" / "resident",
       .log = ctx_.log()},
      job->stop, [log](std::string_view stream, std::string_view line) { log->write(stream, line); }, exit_sink(job));
}

// A container job that could not run for a reason of Conveyor's, or was
// stopped before its container started: finished here.
void Worker::container_failed(Job& job, Attempt& a, LogFile& log, const ContainerError& e) {
  if (const StopReason stop = job.stop.load(); stop != StopReason::none) {
    // Canceled or shut down while the image was pulled: that, not a failure.
    ProcessOutcome outcome;
    outcome.stopped = stop;
    outcome.started = outcome.ended = std::chrono::system_clock::now();
    log.write("conveyor", stop == StopReason::canceled   ? "canceled before the container started"
                          : stop == StopReason::shutdown ? "the worker shut down before the container started"
                                                         : "no longer this worker's before the container started");
    finish_job(job, outcome, a.logs.string(), {}, AttemptCost{});
    return;
  }
  log.write("conveyor", e.what());
  if (auto d = a.meta.find("image_digest"); d != a.meta.end() && d->is_string()) {
    a.image_digest = d->get<std::string>();
  }
  a.meta["message"] = e.what();
  write_json_file(a.logs / "metadata.json", a.meta);
  ctx_.log()->error("job {}: {}", job.id, e.what());
  fail_internal(job, e.subtype(), e.what(), a.image_digest);
}

// How the attempt ended, in words, for its log and metadata.
std::string Worker::ending_of(const Job& job, const ProcessOutcome& outcome) {
  if (outcome.timed_out) return fmt::format("killed after timeout of {} s", timeout_text(job.config));
  if (outcome.stopped == StopReason::canceled) return "killed: the job was canceled";
  if (outcome.stopped == StopReason::shutdown) return "killed: the worker shut down";
  if (outcome.stopped == StopReason::taken) return "killed: the job is no longer this worker's (requeued or moved)";
  if (!outcome.error_message.empty()) return outcome.error_message;
  if (outcome.exit_code) return fmt::format("exited with code {}", *outcome.exit_code);
  if (outcome.term_signal) return fmt::format("killed by {}", describe_signal(*outcome.term_signal));
  return "";
}

// The attempt's files (log, metadata.json), metrics and outcome.
void Worker::record_attempt(Job& job, Attempt& a, LogFile& log, const ProcessOutcome& outcome) {
  free_slot(job);
  ctx_.metrics()
      .counter("conveyor_worker_process_wakeups_total",
               "wake-ups of the waits for job programs (output, exit, deadlines, stop checks)")
      .inc(outcome.wakeups);
  if (outcome.spawn_error) log.write("conveyor", *outcome.spawn_error + " (exit code 127)");
  const std::string ending = ending_of(job, outcome);
  log.write("conveyor", ending);

  const auto outputs = list_outputs(a.out_dir);
  const auto duration_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(outcome.ended - outcome.started).count();
  const AttemptCost cost = attempt_cost(outcome, a.image_digest);
  a.meta.update({
      {"exit_code", outcome.exit_code ? json(*outcome.exit_code) : json(nullptr)},
      {"signal", outcome.term_signal ? json(describe_signal(*outcome.term_signal)) : json(nullptr)},
      {"timed_out", outcome.timed_out},
      {"canceled", outcome.stopped == StopReason::canceled},
      {"message", ending},
      {"started_at", rfc3339_ms(outcome.started)},
      {"ended_at", rfc3339_ms(outcome.ended)},
      {"duration_ms", duration_ms},
      {"usage", usage_json(cost, outcome.usage.source)},
      {"outputs", outputs},
  });
  write_json_file(a.logs / "metadata.json", a.meta);
  ctx_.metrics()
      .histogram("conveyor_worker_job_duration_seconds", "run time of job processes",
                 {0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400})
      .observe(static_cast<double>(duration_ms) / 1000.0);
  finish_job(job, outcome, a.logs.string(), outputs, cost);
}

// What a container job needs before its container starts (blocking:
// runtime calls): removes what an earlier attempt of this job left on this
// host, resolves the image (pulling it), gives the output dir to the
// container's user. Records the image in `meta`. Throws ContainerError.
ContainerSpec Worker::container_spec(Job& job, const fs::path& out_dir, const std::vector<std::string>& argv,
                                     const std::map<std::string, std::string>& env, LogFile& log, json& meta) {
  if (!runtime_) throw ContainerError("container_runtime", runtime_why_);
  const std::string& image = job.cfg.image;
  // Nothing runs twice: whatever container an earlier run of this job left
  // (a worker killed -9, a reboot) goes before this attempt starts. A first
  // run has none to look for.
  if (job.ran_before) {
    const auto earlier = list_containers(*runtime_, installation_, job.id);
    for (const auto& name : remove_containers(*runtime_, earlier, cgroup_base_, installation_)) {
      log.write("conveyor", "removed container " + name + " left by an earlier run of this job");
      ctx_.log()->warn("job {}: removed container {} left by an earlier run", job.id, name);
    }
  }
  const ImageInfo info = resolve_image(*runtime_, image, job.stop);
  meta["image_id"] = info.id;
  meta["image_digest"] = info.digest;
  meta["container"] = container_name(job.id, job.attempt);
  meta["runtime"] = runtime_->runtime.program;
  log.write("conveyor",
            fmt::format("container {} from {} ({})", container_name(job.id, job.attempt), image, info.digest));
  if (chown_outputs_to_) {
    if (::chown(out_dir.c_str(), chown_outputs_to_->first, chown_outputs_to_->second) != 0) {
      throw ContainerError("container_runtime", fmt::format("cannot give {} to the container's user {}: {}",
                                                            out_dir.string(), container_user_, std::strerror(errno)));
    }
  }
  ContainerSpec spec;
  spec.installation = installation_;
  spec.job_id = job.id;
  spec.attempt = job.attempt;
  spec.job_type = job.type;
  spec.worker = name_;
  spec.image = info.id;
  spec.argv = argv;
  spec.env = env;
  spec.host_output_dir = out_dir;
  spec.inputs = job.cfg.inputs;
  spec.resources = job.cfg.resources;
  spec.network = job.cfg.network;
  spec.user = container_user_;
  spec.keep_id = container_keep_id_;
  spec.cgroup_parent = container_cgroup(cgroup_base_, installation_, job.id, job.attempt);
  spec.env_dir = env_dir();
  return spec;
}

// On the container executor: the image and the container's start; its
// end comes back through complete_container.
void Worker::begin_container(const std::shared_ptr<Job>& job) {
  Attempt& a = *job->run;
  LogFile& log = *job->log;
  try {
    try {
      if (job->stop.load() != StopReason::none) throw ContainerError("container_runtime", "stopped before it started");
      const ContainerSpec spec = container_spec(*job, a.out_dir, a.options.argv, a.job_env, log, a.meta);
      a.image_digest = a.meta.value("image_digest", std::string());
      start_container(
          *runtime_, spec, a.options, job->stop,
          [&log](std::string_view stream, std::string_view line) { log.write(stream, line); },
          [this, job](std::shared_ptr<ContainerRun> run, ProcessOutcome client) {
            free_slot(*job);
            containers_->post([this, job, run = std::move(run), client = std::move(client)] {
              complete_container(job, *run, client);
            });
          });
      return;
    } catch (const ContainerError& e) {
      container_failed(*job, a, log, e);
    }
  } catch (const std::exception& e) {
    ctx_.log()->error("job {}: {}", job->id, e.what());
    fail_internal(*job, "worker_error", e.what(), std::nullopt);
  }
  end_job(*job);
}

// On the container executor, once the runtime client has exited.
void Worker::complete_container(const std::shared_ptr<Job>& job, ContainerRun& run, const ProcessOutcome& client) {
  Attempt& a = *job->run;
  LogFile& log = *job->log;
  try {
    std::optional<ProcessOutcome> outcome;
    try {
      outcome = finish_container(run, client);
    } catch (const ContainerError& e) {
      container_failed(*job, a, log, e);
    }
    if (outcome) record_attempt(*job, a, log, *outcome);
  } catch (const std::exception& e) {
    ctx_.log()->error("job {}: {}", job->id, e.what());
    fail_internal(*job, "worker_error", e.what(), std::nullopt);
  }
  end_job(*job);
}

AttemptCost attempt_cost(const ProcessOutcome& outcome, const std::optional<std::string>& digest) {
  AttemptCost c;
  c.exit_code = outcome.exit_code;
  if (digest && !digest->empty()) c.image_digest = *digest;
  c.wall_ms = std::chrono::duration_cast<std::chrono::milliseconds>(outcome.ended - outcome.started).count();
  auto ms = [](const std::optional<double>& s) -> std::optional<std::int64_t> {
    if (!s) return std::nullopt;
    return static_cast<std::int64_t>(std::llround(*s * 1000.0));
  };
  c.cpu_user_ms = ms(outcome.usage.cpu_user_s);
  c.cpu_system_ms = ms(outcome.usage.cpu_system_s);
  c.max_rss_kb = outcome.usage.max_rss_kb;
  return c;
}

nlohmann::json usage_json(const AttemptCost& c, const std::string& source) {
  auto opt = [](const std::optional<std::int64_t>& v) { return v ? json(*v) : json(nullptr); };
  return {{"wall_ms", opt(c.wall_ms)},
          {"cpu_user_ms", opt(c.cpu_user_ms)},
          {"cpu_system_ms", opt(c.cpu_system_ms)},
          {"max_rss_kb", opt(c.max_rss_kb)},
          {"source", source.empty() ? json(nullptr) : json(source)}};
}

namespace {

// The status an outcome's statement left the job in: "" when the job was no
// longer this worker's to set, nullopt when it could not be recorded.
std::optional<std::string> status_of(const std::optional<db::Result>& written) {
  if (!written) return std::nullopt;
  if (written->empty()) return std::string();
  return (*written)[0][0].as_string();
}

}  // namespace

std::optional<std::string> Worker::write_processed(Job& job, const std::string& result, const AttemptCost& cost) {
  const FinishBatch::Written w = finishes_->write({job.id, job.attempt, result, cost});
  if (w.committed) return w.status;  // "" when the job was no longer ours
  // The batch failed: this job alone, with the retries of every outcome.
  return status_of(write_outcome(job, kFinishProcessed, {job.id, worker_id_, result}, cost, w.in_doubt));
}

std::optional<std::string> Worker::write_failure(Job& job, const ProcessOutcome& outcome, const AttemptCost& cost) {
  std::string subtype = "exit_code";
  std::string message;
  if (outcome.timed_out) {
    subtype = "timeout";
    message = fmt::format("killed after timeout of {} s", timeout_text(job.config));
  } else if (!outcome.error_message.empty()) {
    subtype = outcome.error_subtype;  // a resident job's result or its program's death
    message = outcome.error_message;
  } else if (outcome.spawn_error) {
    message = *outcome.spawn_error + " (exit code 127)";
  } else if (outcome.exit_code) {
    message = fmt::format("exited with code {}", *outcome.exit_code);
  } else {
    message = fmt::format("killed by {}", describe_signal(outcome.term_signal.value_or(0)));
  }
  const double backoff_s = std::max(0.0, job.cfg.retry_backoff_s);
  return status_of(write_outcome(job, kFinishFailure, {job.id, worker_id_, backoff_s, subtype, message}, cost));
}

void Worker::finish_job(Job& job, const ProcessOutcome& outcome, const std::string& logs,
                        const std::vector<std::string>& outputs, const AttemptCost& cost) {
  const auto duration_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(outcome.ended - outcome.started).count();
  std::optional<std::string> status;
  std::string outcome_label;
  if (outcome.stopped == StopReason::canceled) {
    status = status_of(write_outcome(job, kFinishCanceled, {job.id, worker_id_}, cost));
    outcome_label = "canceled";
  } else if (outcome.stopped == StopReason::taken) {
    status = "";  // its status is someone else's now: nothing to write
  } else if (outcome.stopped == StopReason::shutdown) {
    // The job did not fail, the worker left: it runs again elsewhere without
    // using a retry (the rule prepare-for-reboot follows too).
    status = status_of(write_outcome(job, model::kRequeueStoppedRuns,
                                     {job.id, worker_id_, "worker_shutdown", "worker shut down"}, cost));
    outcome_label = "requeued";
  } else if (!outcome.timed_out && outcome.exit_code == 0) {
    const json result = {{"exit_code", 0},  {"outputs", outputs},    {"log_dir", logs}, {"duration_ms", duration_ms},
                         {"worker", name_}, {"attempt", job.attempt}};
    status = write_processed(job, result.dump(), cost);
    outcome_label = "processed";
  } else {
    status = write_failure(job, outcome, cost);
    outcome_label = status.value_or("").empty() ? "failed" : *status;
    if (outcome_label == "ready") outcome_label = "retried";
  }
  if (!status) {
    outcome_label = "unrecorded";
  } else if (status->empty()) {
    // The reconciler requeued it (we looked lost) or an operator moved it:
    // its status is no longer ours to set.
    ctx_.log()->warn("job {} is no longer started by worker {}; its result is dropped", job.id, name_);
    outcome_label = "dropped";
  } else {
    ctx_.log()->info("job {} ({}) ended {} after {} ms", job.id, job.type, *status, duration_ms);
  }
  ctx_.metrics()
      .counter("conveyor_worker_jobs_total", "jobs this worker ran, by outcome", {{"outcome", outcome_label}})
      .inc();
}

void Worker::fail_internal(Job& job, const std::string& subtype, const std::string& message,
                           const std::optional<std::string>& image_digest) {
  AttemptCost cost;
  cost.image_digest = image_digest;
  const auto written = write_outcome(job, kFinishInternal, {job.id, worker_id_, subtype, message}, cost);
  ctx_.metrics()
      .counter("conveyor_worker_jobs_total", "jobs this worker ran, by outcome",
               {{"outcome", !written           ? "unrecorded"
                            : written->empty() ? "dropped"
                                               : "internal_error"}})
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
                                                const std::vector<db::Param>& params, const AttemptCost& cost,
                                                bool in_doubt) {
  std::chrono::milliseconds backoff{100};
  for (int attempt = 1;; ++attempt) {
    try {
      db::Result rows = ctx_.db().transact([&](db::Tx& tx) {
        auto r = tx.exec(statement, params);
        // The attempt's row, in the same transaction: the status it led to.
        if (!r.empty()) {
          tx.exec(kCloseAttempt, {job.id, job.attempt, r[0][0].as_string(), cost.exit_code, cost.image_digest,
                                  cost.wall_ms, cost.cpu_user_ms, cost.cpu_system_ms, cost.max_rss_kb});
        }
        return r;
      });
      if (attempt > 1) {
        ctx_.log()->info("job {}: outcome recorded after {} attempts{}", job.id, attempt,
                         rows.empty() && in_doubt ? " (an earlier commit had gone through)" : "");
      }
      return rows;
    } catch (const db::DbError& e) {
      in_doubt = in_doubt || e.sqlstate() == "08007";
      const bool transient = e.retriable() || e.code() == errc::unavailable || e.code() == errc::timeout;
      if (!transient) {
        ctx_.log()->error("job {}: cannot record its outcome ({}); the reconciler will recover it", job.id, e.what());
        return std::nullopt;
      }
      if (attempt == 1 || attempt % 20 == 0) {
        ctx_.log()->warn("job {}: recording its outcome failed (attempt {}), retrying: {}", job.id, attempt, e.what());
      }
      ctx_.metrics()
          .counter("conveyor_worker_outcome_retries_total", "failed attempts to record a job's outcome, retried")
          .inc();
    } catch (const std::exception& e) {
      ctx_.log()->error("job {}: cannot record its outcome ({}); the reconciler will recover it", job.id, e.what());
      return std::nullopt;
    }
    std::unique_lock lock(outcome_mutex_);
    const auto wake = std::chrono::steady_clock::now() + backoff;
    outcome_cv_.wait_until(lock, outcome_deadline_ ? std::min(wake, *outcome_deadline_) : wake);
    if (outcome_deadline_ && std::chrono::steady_clock::now() >= *outcome_deadline_) {
      ctx_.log()->error(
          "job {}: outcome not recorded before the worker stopped; the reconciler "
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
      ctx_.log()->info("waiting up to {} ms for {} running job(s)", drain_wait_.count(), jobs_.size());
    }
    job_done_.wait_until(lock, grace_end, [this] {
      return std::all_of(jobs_.begin(), jobs_.end(), [](const auto& kv) { return kv.second->finished.load(); });
    });
    for (auto& [id, job] : jobs_) {
      if (!job->finished && request_stop(job->stop, StopReason::shutdown)) {
        ctx_.log()->warn("job {} still running after the shutdown grace: stopping and requeueing", id);
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
    outcome_deadline_ = std::chrono::steady_clock::now() + shutdown_kill_grace_ + std::chrono::milliseconds(1000);
  }
  outcome_cv_.notify_all();
  std::vector<std::shared_ptr<Job>> jobs;
  {
    std::unique_lock lock(mutex_);
    for (auto& [id, job] : jobs_) {
      request_stop(job->stop, StopReason::shutdown);
      jobs.push_back(job);
    }
    // Every job to its end: its program stopped, its outcome recorded (or
    // given up at outcome_deadline_).
    job_done_.wait(
        lock, [&] { return std::all_of(jobs.begin(), jobs.end(), [](const auto& j) { return j->finished.load(); }); });
  }
  {
    std::lock_guard lock(mutex_);
    jobs_.clear();
  }
  containers_.reset();  // nothing is left for them to run
  executor_.reset();
  {
    std::lock_guard lock(monitor_mutex_);
    monitor_stop_ = true;
  }
  request_stop(sweep_stop_, StopReason::shutdown);
  monitor_cv_.notify_all();
  if (monitor_.joinable()) monitor_.join();
  if (sweeper_.joinable()) sweeper_.join();
}

}  // namespace conveyor::worker
