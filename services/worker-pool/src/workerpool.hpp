#pragma once
// conveyor-workerpool (DESIGN §1): keeps the workers of one pool between
// min_number_of_worker_instances and max_number_of_worker_instances, sized
// from the pool's demand (queued + started jobs) and worker_concurrency;
// scales down by draining, never by killing a busy worker; marks workers
// whose heartbeat stopped as lost (model::reap_lost_workers, which also
// requeues their jobs), and its own local workers at once when their process
// exits (model::mark_workers_gone), and replaces them. See scaling.hpp for the rule and
// backend.hpp for where workers run.
//
// One pool process per pool name acts at a time: the leader holds a
// session-level advisory lock (leader_lock_key) on a dedicated connection;
// the others stand by and try again every tick. Everything the pool counts
// comes from conveyor.worker, so a new leader (or a restarted pool) adopts
// the workers that are already running.
//
// WorkerPool is owned by main() and driven by the runtime's loop thread;
// not thread-safe.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "backend.hpp"
#include "conveyor/db/db.hpp"
#include "conveyor/runtime/runtime.hpp"
#include "scaling.hpp"

namespace conveyor::workerpool {

inline constexpr const char* kServiceName = "conveyor-workerpool";

// runtime::service_schema() plus the pool's keys (see README.md):
// CONVEYOR_WORKER_POOL, CONVEYOR_WORKERPOOL_BACKEND, CONVEYOR_WORKER_EXECUTABLE,
// CONVEYOR_WORKER_CONCURRENCY, CONVEYOR_WORKERPOOL_START_TIMEOUT_MS,
// CONVEYOR_WORKERPOOL_SCALE_DOWN_DELAY_MS, CONVEYOR_WORKERPOOL_KILL_GRACE_MS,
// CONVEYOR_WORKERPOOL_LOG_DIR.
config::Schema schema();
runtime::ServiceSpec spec();

// The advisory lock key of a pool name: the 64-bit FNV-1a hash of
// "conveyor-workerpool:" + pool, with the top two bits cleared (a positive
// bigint, so it reads the same in pg_locks).
std::int64_t leader_lock_key(const std::string& pool);

// The --env-file paths of a command line (empty when it is malformed: the
// runtime reports that itself).
std::vector<std::filesystem::path> env_file_args(int argc, char** argv) noexcept;

class WorkerPool {
 public:
  // Builds the backend from the configuration (throws Error naming the
  // key when it is wrong, e.g. a backend that does not exist yet).
  WorkerPool(runtime::Context& ctx, const std::vector<std::filesystem::path>& env_files);
  WorkerPool(runtime::Context& ctx, std::unique_ptr<Backend> backend);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Ticks until the service stops, then shutdown().
  void run();
  // One pass: parameters, own exits, leadership, lost workers, scaling.
  void tick();
  // Stops spawning, gives up leadership, stops own workers within the grace.
  void shutdown();
  bool leader() const { return leader_; }

 private:
  struct Observed;

  bool hold_leadership();
  void give_up_leadership(const std::string& why);
  void collect_exits();
  void mark_gone();
  void failed_start();
  void reap_lost();
  Observed observe(const model::SystemParameters& params);
  void reload_parameters();
  int check_own_workers(const Observed& seen, Clock::time_point now, std::vector<std::string>& pending);
  void set_gauges(const ScalingInput& in, const Observed& seen, const ScalingPlan& plan);
  void act(const ScalingPlan& plan);
  void spawn_workers(int n);
  int concurrency(const model::SystemParameters& params) const;

  runtime::Context& ctx_;
  std::unique_ptr<Backend> backend_;
  std::string pool_;
  std::int64_t lock_key_ = 0;
  int configured_concurrency_ = 0;  // CONVEYOR_WORKER_CONCURRENCY; 0: system parameter
  std::chrono::milliseconds poll_interval_;
  std::chrono::milliseconds start_timeout_;
  std::unique_ptr<db::Session> session_;  // holds the leader lock
  bool leader_ = false;
  bool standby_logged_ = false;
  Scaler scaler_;
  std::uint64_t seq_ = 0;             // names of own workers: <instance>-<pid>-<seq>
  std::set<std::string> registered_;  // own workers seen with a conveyor.worker row
  std::set<std::string> gone_;        // own workers that exited, their rows not yet marked lost
  int failed_starts_ = 0;             // consecutive own workers that died before registering
  std::optional<Clock::time_point> hold_spawns_until_;
};

}  // namespace conveyor::workerpool
