#include "workerpool.hpp"

#include <unistd.h>

#include <algorithm>
#include <map>

#include <fmt/format.h>

#include "conveyor/error/error.hpp"
#include "conveyor/model/worker.hpp"

namespace conveyor::workerpool {

namespace {

// Whether this session still holds the leader lock (a reconnect would have
// lost it silently). pg_locks shows a bigint key as classid (high 32 bits)
// and objid (low 32 bits) with objsubid 1.
constexpr db::Statement kHoldsLock{
    "workerpool_holds_lock",
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
    "  AND granted AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = $1::bigint)"};

// The pool's demand: admission (conveyor-execution) moves ready -> queued
// only up to max_number_of_worker_instances x worker_concurrency, so what
// is queued or started is what workers are needed for.
constexpr db::Statement kDemand{"workerpool_demand",
                                "SELECT count(*) FROM conveyor.job "
                                "WHERE status IN ('queued', 'started') AND conveyor.job_pool(config) = $1"};

// The pool's live and draining rows, plus the rows of our own workers
// whatever their state (to tell registered from still starting, and to
// find our hung ones). $3: worker_heartbeat_timeout_s.
constexpr db::Statement kWorkers{
    "workerpool_workers",
    "SELECT id, name, pool, status, running, extract(epoch FROM started_at)::float8 AS started, "
    "  last_heartbeat >= now() - make_interval(secs => $3::float8) AS fresh "
    "FROM conveyor.worker "
    "WHERE (pool = $1 AND status IN ('active', 'draining')) OR name = ANY($2::text[])"};

// Scale-down: the worker claims nothing more and exits once idle.
constexpr db::Statement kDrain{"workerpool_drain", "SELECT * FROM conveyor.drain_worker($1)"};

constexpr const char* kLostHelp = "workers this process marked lost (its own worker exited, or heartbeat timeout)";

// "worker NAME (pid N)" for a process of this host, "worker NAME" for a
// pod or a dispatch.
std::string who(const std::string& name, int pid) {
  return pid > 0 ? fmt::format("worker {} (pid {})", name, pid) : "worker " + name;
}

}  // namespace

// ---------------------------------------------------------------- configuration

namespace {

// Which pool, on which backend.
void add_pool_keys(config::Schema& s) {
  using config::Type;
  s.add({.name = "CONVEYOR_WORKER_POOL",
         .default_value = "default",
         .help = "the pool this process keeps workers for: jobs whose config.pool is this name"});
  s.add({.name = "CONVEYOR_WORKERPOOL_BACKEND",
         .type = Type::enumeration,
         .default_value = "local",
         .help = "where workers run: local (child processes), kubernetes (one Pod each), nomad (one dispatch "
                 "each of a parameterized job)",
         .allowed = {"local", "nomad", "kubernetes"}});
  s.add({.name = "CONVEYOR_WORKERPOOL_API_TIMEOUT_MS",
         .type = Type::duration_ms,
         .default_value = "10000",
         .help = "kubernetes/nomad: timeout of one call to the orchestrator's API",
         .min = 100,
         .max = 300'000});
}

// The kubernetes backend.
void add_kubernetes_keys(config::Schema& s) {
  s.add({.name = "CONVEYOR_KUBECONFIG",
         .default_value = "",
         .help = "kubernetes: a kubeconfig in JSON form (kubectl config view --raw --minify --flatten -o json); "
                 "empty: in-cluster (service account)"});
  s.add({.name = "CONVEYOR_WORKERPOOL_KUBERNETES_NAMESPACE",
         .default_value = "",
         .help = "kubernetes: namespace of the worker pods; empty: the service account's (or the kubeconfig "
                 "context's)"});
  s.add({.name = "CONVEYOR_WORKERPOOL_KUBERNETES_POD_TEMPLATE",
         .default_value = "conveyor-worker",
         .help = "kubernetes: the PodTemplate every worker pod is made from"});
  s.add({.name = "CONVEYOR_WORKERPOOL_KUBERNETES_SERVICE_ACCOUNT_DIR",
         .default_value = "/var/run/secrets/kubernetes.io/serviceaccount",
         .help = "kubernetes, in-cluster: where the service account's token, ca.crt and namespace are"});
}

// The nomad backend.
void add_nomad_keys(config::Schema& s) {
  using config::Type;
  s.add({.name = "CONVEYOR_WORKERPOOL_NOMAD_ADDR",
         .type = Type::url,
         .default_value = "http://127.0.0.1:4646",
         .help = "nomad: the HTTP API of a Nomad agent"});
  s.add({.name = "CONVEYOR_WORKERPOOL_NOMAD_TOKEN",
         .default_value = "",
         .secret = true,
         .help = "nomad: ACL token (X-Nomad-Token); or CONVEYOR_WORKERPOOL_NOMAD_TOKEN_FILE"});
  s.add({.name = "CONVEYOR_WORKERPOOL_NOMAD_TOKEN_FILE",
         .default_value = "",
         .help = "nomad: a file holding the ACL token, read at every call (a rotated token is picked up)"});
  s.add({.name = "CONVEYOR_WORKERPOOL_NOMAD_CA_FILE",
         .default_value = "",
         .help = "nomad: PEM CA bundle for an https NOMAD address; empty: the system's"});
  s.add({.name = "CONVEYOR_WORKERPOOL_NOMAD_JOB",
         .default_value = "conveyor-worker",
         .help = "nomad: the parameterized worker job dispatched once per worker (deploy/nomad/worker.nomad.hcl)"});
  s.add({.name = "CONVEYOR_WORKERPOOL_NOMAD_NAMESPACE",
         .default_value = "default",
         .help = "nomad: namespace of the worker job"});
  s.add({.name = "CONVEYOR_WORKERPOOL_NOMAD_REGION",
         .default_value = "",
         .help = "nomad: region of the worker job; empty: the agent's"});
}

// What the workers it starts are given.
void add_worker_keys(config::Schema& s) {
  using config::Type;
  s.add({.name = "CONVEYOR_WORKER_EXECUTABLE",
         .default_value = "",
         .help = "conveyor-worker to start; empty: next to conveyor-workerpool, else ../worker/, else PATH"});
  s.add({.name = "CONVEYOR_WORKER_DATABASE_URL",
         .default_value = "",
         .secret = true,
         .help = "local: the database URL of the workers it starts (a login of conveyor_worker), or "
                 "CONVEYOR_WORKER_DATABASE_URL_FILE; empty: the pool's own, with a warning"});
  s.add({.name = "CONVEYOR_WORKER_CONCURRENCY",
         .type = Type::integer,
         .default_value = "0",
         .help = "passed on to the workers; when > 0 the pool sizes with it instead of "
                 "system_parameters.worker_concurrency",
         .min = 0,
         .max = 1024});
}

// When workers are stopped, and where they log.
void add_lifecycle_keys(config::Schema& s) {
  using config::Type;
  s.add({.name = "CONVEYOR_WORKERPOOL_START_TIMEOUT_MS",
         .type = Type::duration_ms,
         .default_value = "30000",
         .help = "a started worker that has not registered in conveyor.worker by then is stopped",
         .min = 100,
         .max = 3'600'000});
  s.add({.name = "CONVEYOR_WORKERPOOL_SCALE_DOWN_DELAY_MS",
         .type = Type::duration_ms,
         .default_value = "10000",
         .help = "how long more workers than needed must last before the extra ones are drained",
         .min = 0,
         .max = 86'400'000});
  s.add({.name = "CONVEYOR_WORKERPOOL_KILL_GRACE_MS",
         .type = Type::duration_ms,
         .default_value = "10000",
         .help = "SIGTERM -> SIGKILL delay for a hung (lost) or never-registered own worker",
         .min = 0,
         .max = 3'600'000});
  s.add({.name = "CONVEYOR_WORKERPOOL_LOG_DIR",
         .default_value = "",
         .help = "empty: workers log where the pool logs; else each to <dir>/<worker name>.log"});
}

}  // namespace

config::Schema schema() {
  config::Schema s = runtime::service_schema();
  add_pool_keys(s);
  add_kubernetes_keys(s);
  add_nomad_keys(s);
  add_worker_keys(s);
  add_lifecycle_keys(s);
  return s;
}

runtime::ServiceSpec spec() {
  runtime::ServiceSpec s;
  s.name = kServiceName;
  s.schema = schema();
  // Parameter changes always wake the service; the poll does the rest.
  s.wake_on = {};
  s.consumer_group = "";
  s.default_http_port = 0;
  return s;
}

std::int64_t leader_lock_key(const std::string& pool) {
  std::uint64_t h = 14695981039346656037ULL;  // FNV-1a 64
  for (const unsigned char c : "conveyor-workerpool:" + pool) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return static_cast<std::int64_t>(h & 0x3fffffffffffffffULL);
}

std::vector<std::filesystem::path> env_file_args(int argc, char** argv) noexcept {
  try {
    return config::split_env_file_args(argc, argv).env_files;
  } catch (const Error&) {
    return {};  // the runtime reports the malformed command line and exits 1
  }
}

// ---------------------------------------------------------------- WorkerPool

struct WorkerPool::Observed {
  std::int64_t demand = 0;
  std::vector<ActiveWorker> active;        // the pool's active rows with a fresh heartbeat
  int draining = 0;                        // the pool's draining rows with a fresh heartbeat
  std::map<std::string, std::string> own;  // own worker name -> its row's status
};

WorkerPool::WorkerPool(runtime::Context& ctx, const std::vector<std::filesystem::path>& env_files)
    : WorkerPool(ctx, make_backend(ctx.config(), ctx.instance_id(), env_files)) {}

WorkerPool::WorkerPool(runtime::Context& ctx, std::unique_ptr<Backend> backend)
    : ctx_(ctx),
      backend_(std::move(backend)),
      pool_(ctx.config().get_string("CONVEYOR_WORKER_POOL")),
      lock_key_(leader_lock_key(pool_)),
      configured_concurrency_(static_cast<int>(ctx.config().get_int("CONVEYOR_WORKER_CONCURRENCY"))),
      poll_interval_(ctx.config().get_duration("CONVEYOR_POLL_INTERVAL_MS")),
      start_timeout_(ctx.config().get_duration("CONVEYOR_WORKERPOOL_START_TIMEOUT_MS")),
      session_(std::make_unique<db::Session>(ctx.config().get_string("CONVEYOR_DATABASE_URL"),
                                             std::string(kServiceName) + "-leader")),
      scaler_(ctx.config().get_duration("CONVEYOR_WORKERPOOL_SCALE_DOWN_DELAY_MS")) {
  auto& m = ctx_.metrics();
  for (const char* state : {"active", "draining", "pending"}) {
    m.gauge("conveyor_workerpool_workers", "workers of the pool by state (pending: started, not registered)",
            {{"state", state}});
  }
  m.gauge("conveyor_workerpool_desired_workers", "workers the scaling rule asks for");
  m.gauge("conveyor_workerpool_demand_jobs", "jobs of the pool that are queued or started");
  m.counter("conveyor_workerpool_spawned_total", "workers started by this process");
  m.counter("conveyor_workerpool_drained_total", "workers set draining by this process");
  m.counter("conveyor_workerpool_lost_total", kLostHelp);
  m.gauge("conveyor_workerpool_leader", "1 while this process is the pool's leader");
  ctx_.log()->info("worker pool '{}' ({} backend, lock key {}): standing by until it holds the lead", pool_,
                   backend_->kind(), lock_key_);
}

WorkerPool::~WorkerPool() = default;

int WorkerPool::concurrency(const model::SystemParameters& params) const {
  return configured_concurrency_ > 0 ? configured_concurrency_ : std::max(1, params.worker_concurrency);
}

void WorkerPool::run() {
  auto& errors = ctx_.metrics().counter("conveyor_workerpool_errors_total", "ticks that failed");
  while (ctx_.wait_for_work(poll_interval_)) {
    try {
      tick();
    } catch (const Error& e) {
      // The database may be briefly away; the next tick tries again.
      errors.inc();
      ctx_.log()->error("worker pool tick failed: {}", e.what());
    }
  }
  shutdown();
}

void WorkerPool::tick() {
  reload_parameters();
  const auto params = ctx_.parameters();
  collect_exits();
  if (!hold_leadership()) return;
  reap_lost();
  const Observed seen = observe(*params);

  const auto now = Clock::now();
  ScalingInput in;
  const int exiting = check_own_workers(seen, now, in.pending);
  in.demand = seen.demand;
  in.concurrency = concurrency(*params);
  in.min_workers = params->min_number_of_worker_instances;
  in.max_workers = params->max_number_of_worker_instances;
  in.active = seen.active;
  in.draining = seen.draining + exiting;

  const ScalingPlan plan = scaler_.plan(in, now);
  set_gauges(in, seen, plan);
  act(plan);
}

void WorkerPool::reload_parameters() {
  try {
    // Also on the parameters event and the runtime's timer; here too, so
    // `UPDATE conveyor.system_parameters SET max_number_of_worker_instances = 1`
    // acts within a tick even when the event is late.
    ctx_.reload_parameters();
  } catch (const Error& e) {
    ctx_.log()->warn("reloading system parameters failed (using the last ones): {}", e.what());
  }
}

// Own workers: registered, still starting (pending), starting for too long,
// or hung (their row is lost but the process runs). Stops the late and the
// hung ones, lists the pending ones (oldest first) and returns how many are
// on their way out (their row says stopped or lost, or we are stopping
// them): not capacity, but still processes.
int WorkerPool::check_own_workers(const Observed& seen, Clock::time_point now, std::vector<std::string>& pending) {
  std::vector<OwnWorker> own = backend_->workers();
  std::sort(own.begin(), own.end(), [](const OwnWorker& a, const OwnWorker& b) { return a.spawned < b.spawned; });
  int exiting = 0;
  for (const OwnWorker& w : own) {
    const auto row = seen.own.find(w.name);
    if (w.terminating || (row != seen.own.end() && (row->second == "stopped" || row->second == "lost"))) {
      ++exiting;
    }
    if (w.terminating) continue;
    if (row != seen.own.end()) {
      if (registered_.insert(w.name).second) failed_starts_ = 0;
      if (row->second == "lost") {
        ctx_.log()->warn("{} is marked lost but its process still runs (hung): stopping it", who(w.name, w.pid));
        backend_->terminate(w.name);
      }
      continue;
    }
    const auto age = std::chrono::duration_cast<std::chrono::milliseconds>(now - w.spawned);
    if (age > start_timeout_) {
      ctx_.log()->warn("{} has not registered {} ms after its start: stopping it", who(w.name, w.pid), age.count());
      backend_->terminate(w.name);
      continue;
    }
    pending.push_back(w.name);
  }
  return exiting;
}

void WorkerPool::set_gauges(const ScalingInput& in, const Observed& seen, const ScalingPlan& plan) {
  auto& m = ctx_.metrics();
  const auto workers_help = "workers of the pool by state (pending: started, not registered)";
  m.gauge("conveyor_workerpool_workers", workers_help, {{"state", "active"}})
      .set(static_cast<double>(in.active.size()));
  m.gauge("conveyor_workerpool_workers", workers_help, {{"state", "draining"}}).set(seen.draining);
  m.gauge("conveyor_workerpool_workers", workers_help, {{"state", "pending"}})
      .set(static_cast<double>(in.pending.size()));
  m.gauge("conveyor_workerpool_desired_workers", "workers the scaling rule asks for").set(plan.desired);
  m.gauge("conveyor_workerpool_demand_jobs", "jobs of the pool that are queued or started")
      .set(static_cast<double>(seen.demand));
}

// ---------------------------------------------------------------- leadership

bool WorkerPool::hold_leadership() {
  auto& gauge = ctx_.metrics().gauge("conveyor_workerpool_leader", "1 while this process is the pool's leader");
  if (leader_) {
    std::string why = "the lock is no longer held by its connection";
    bool held = false;
    try {
      db::TxOptions once;
      once.max_attempts = 1;  // a retry would reconnect, without the lock
      held = session_->is_open() &&
             session_->transact([&](db::Tx& tx) { return tx.exec(kHoldsLock, {lock_key_})[0][0].as_bool(); }, once);
    } catch (const Error& e) {
      why = std::string("the leader connection failed: ") + e.what();
    }
    if (held) return true;
    give_up_leadership(why);
  }
  try {
    if (session_->try_advisory_lock(lock_key_)) {
      leader_ = true;
      gauge.set(1);
      if (standby_logged_) {
        ctx_.log()->warn("took over as leader of worker pool '{}' (the previous leader is gone)", pool_);
      } else {
        ctx_.log()->info("leader of worker pool '{}'", pool_);
      }
      standby_logged_ = false;
      return true;
    }
  } catch (const Error& e) {
    gauge.set(0);
    ctx_.log()->warn("leader election for worker pool '{}' failed: {}", pool_, e.what());
    session_->reset();
    return false;
  }
  gauge.set(0);
  if (!standby_logged_) {
    ctx_.log()->info("standby: another conveyor-workerpool leads worker pool '{}'; trying again every tick", pool_);
    standby_logged_ = true;
  }
  return false;
}

void WorkerPool::give_up_leadership(const std::string& why) {
  if (!leader_) return;
  leader_ = false;
  session_->reset();  // closing the connection releases the lock
  scaler_.reset();
  ctx_.metrics().gauge("conveyor_workerpool_leader", "1 while this process is the pool's leader").set(0);
  ctx_.log()->warn("no longer the leader of worker pool '{}': {}", pool_, why);
}

// ---------------------------------------------------------------- one tick

void WorkerPool::collect_exits() {
  for (const ExitedWorker& e : backend_->reap()) {
    const bool registered = registered_.erase(e.name) > 0;
    if (backend_->exits_are_certain()) gone_.insert(e.name);
    if (e.success) {
      ctx_.log()->info("{} exited: {}", who(e.name, e.pid), e.how);
      continue;
    }
    ctx_.log()->warn("{} exited: {}{}", who(e.name, e.pid), e.how, registered ? "" : " before it registered");
    if (!registered) failed_start();
  }
  mark_gone();
}

// Our own worker's process has ended (we are its parent): its row must not
// count as capacity until the heartbeat timeout. Marked lost now, with its
// jobs recovered by the reconciler's rule, before observe() counts the
// workers, so this tick already starts the replacement. A clean exit left
// its row stopped and changes nothing. Kept for the next tick when the
// database is away; the heartbeat rule is the fallback.
void WorkerPool::mark_gone() {
  if (gone_.empty()) return;
  const std::vector<std::string> names(gone_.begin(), gone_.end());
  const auto timeout = std::chrono::seconds(ctx_.parameters()->worker_heartbeat_timeout_s);
  model::ReapResult r;
  try {
    r = ctx_.db().transact([&](db::Tx& tx) { return model::mark_workers_gone(tx, names, timeout); });
  } catch (const Error& e) {
    ctx_.log()->warn("cannot mark {} exited worker(s) lost yet (tried again next tick): {}", names.size(), e.what());
    return;
  }
  gone_.clear();
  if (r.lost_workers.empty()) return;
  std::string list;
  for (const auto& n : r.lost_workers) list += (list.empty() ? "" : ", ") + n;
  ctx_.log()->warn(
      "marked {} exited worker(s) lost at once: {}; their jobs: {} requeued (attempt + 1), {} "
      "internal_error (worker_lost, attempts spent), {} canceled",
      r.lost_workers.size(), list, r.requeued, r.failed, r.canceled);
  ctx_.metrics().counter("conveyor_workerpool_lost_total", kLostHelp).inc(static_cast<double>(r.lost_workers.size()));
}

// A worker that cannot start (bad configuration, database refused) would
// be started again every tick: back off, 1 s doubling up to 60 s.
void WorkerPool::failed_start() {
  ++failed_starts_;
  const auto hold = std::min<std::chrono::seconds>(std::chrono::seconds(1LL << std::min(failed_starts_ - 1, 6)),
                                                   std::chrono::seconds(60));
  hold_spawns_until_ = Clock::now() + hold;
  ctx_.log()->warn("{} worker start(s) in a row failed: no new worker for {} s", failed_starts_, hold.count());
}

void WorkerPool::reap_lost() {
  const auto params = ctx_.parameters();
  const auto timeout = std::chrono::seconds(params->worker_heartbeat_timeout_s);
  const model::ReapResult r = ctx_.db().transact([&](db::Tx& tx) { return model::reap_lost_workers(tx, timeout); });
  if (!r.lost_workers.empty()) {
    std::string names;
    for (const auto& n : r.lost_workers) names += (names.empty() ? "" : ", ") + n;
    ctx_.log()->warn("marked {} worker(s) lost: no heartbeat for {} s: {}", r.lost_workers.size(), timeout.count(),
                     names);
    ctx_.metrics().counter("conveyor_workerpool_lost_total", kLostHelp).inc(static_cast<double>(r.lost_workers.size()));
  }
  if (r.requeued + r.failed + r.canceled > 0) {
    ctx_.log()->warn(
        "jobs of lost or stopped workers: {} requeued (attempt + 1), {} internal_error "
        "(worker_lost, attempts spent), {} canceled",
        r.requeued, r.failed, r.canceled);
  }
}

WorkerPool::Observed WorkerPool::observe(const model::SystemParameters& params) {
  std::vector<std::string> own_names;
  for (const OwnWorker& w : backend_->workers()) own_names.push_back(w.name);
  return ctx_.db().transact([&](db::Tx& tx) {
    Observed o;
    o.demand = tx.exec(kDemand, {pool_})[0][0].as_int();
    for (const auto row :
         tx.exec(kWorkers, {pool_, own_names, static_cast<double>(params.worker_heartbeat_timeout_s)})) {
      const std::string name = row["name"].as_string();
      const std::string status = row["status"].as_string();
      if (std::find(own_names.begin(), own_names.end(), name) != own_names.end()) o.own[name] = status;
      if (row["pool"].as_string() != pool_ || !row["fresh"].as_bool()) continue;
      if (status == "active") {
        o.active.push_back(ActiveWorker{row["id"].as_int(), name, static_cast<int>(row["running"].as_int()),
                                        row["started"].as_double()});
      } else if (status == "draining") {
        ++o.draining;
      }
    }
    return o;
  });
}

void WorkerPool::act(const ScalingPlan& plan) {
  if (!plan.message.empty()) ctx_.log()->info("{}", plan.message);
  if (plan.spawn > 0) spawn_workers(plan.spawn);
  for (const ActiveWorker& w : plan.drain) {
    const auto changed = ctx_.db().transact([&](db::Tx& tx) { return tx.exec(kDrain, {w.id}).affected_rows(); });
    if (changed == 0) {
      ctx_.log()->info("worker {} was no longer active; not drained", w.name);
      continue;
    }
    ctx_.metrics().counter("conveyor_workerpool_drained_total", "workers set draining by this process").inc();
    backend_->drain(w.name);
  }
  for (const std::string& name : plan.stop_pending) backend_->terminate(name);
}

void WorkerPool::spawn_workers(int n) {
  const auto now = Clock::now();
  if (hold_spawns_until_ && now < *hold_spawns_until_) {
    ctx_.log()->debug("not starting {} worker(s) yet: backing off after {} failed start(s) ({} ms left)", n,
                      failed_starts_,
                      std::chrono::duration_cast<std::chrono::milliseconds>(*hold_spawns_until_ - now).count());
    return;
  }
  hold_spawns_until_.reset();
  for (int i = 0; i < n; ++i) {
    // Unique across pool restarts and replicas: the instance id and pid differ.
    const std::string name = fmt::format("{}-{}-{}", ctx_.instance_id(), ::getpid(), ++seq_);
    try {
      backend_->spawn(name);
    } catch (const Error& e) {
      ctx_.log()->error("cannot start worker {}: {}", name, e.what());
      failed_start();
      return;
    }
    ctx_.metrics().counter("conveyor_workerpool_spawned_total", "workers started by this process").inc();
  }
}

void WorkerPool::shutdown() {
  // A standby takes over at once; our workers drain (their rows say so),
  // so it does not count them and starts its own as needed.
  if (leader_) {
    leader_ = false;
    session_->reset();
    ctx_.metrics().gauge("conveyor_workerpool_leader", "1 while this process is the pool's leader").set(0);
    ctx_.log()->info("gave up the lead of worker pool '{}' (stopping)", pool_);
  }
  // The runtime exits 1 once CONVEYOR_SHUTDOWN_GRACE_MS has passed; workers
  // inherit the same grace and use a little less of it than we wait.
  const std::chrono::milliseconds grace = ctx_.config().get_duration("CONVEYOR_SHUTDOWN_GRACE_MS");
  const auto reserve = std::min(std::chrono::milliseconds(500), grace / 8);
  const auto deadline = Clock::now() + grace - reserve;
  for (const ExitedWorker& e : backend_->shutdown(deadline)) {
    ctx_.log()->info("{} stopped: {}", who(e.name, e.pid), e.how);
    if (backend_->exits_are_certain()) gone_.insert(e.name);
  }
  mark_gone();  // those killed at the deadline left their rows active
}

}  // namespace conveyor::workerpool
