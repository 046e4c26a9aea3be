#pragma once
// conveyor-worker: claims `queued` jobs of its pool (FOR UPDATE SKIP LOCKED)
// up to its concurrency, runs each as a child process in its own process
// group under the job's timeout, writes the job's logs.txt and
// metadata.json, heartbeats in conveyor.worker, kills jobs whose
// canceled_at is set, and reports processed / retry (ready) / failed /
// canceled with one conditional update from `started`.
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "conveyor/config/config.hpp"
#include "conveyor/runtime/runtime.hpp"
#include "container.hpp"
#include "process.hpp"
#include "resident.hpp"

namespace conveyor::worker {

class LogFile;

// What one attempt cost, for conveyor.job_attempt and metadata.json.
struct AttemptCost {
  std::optional<int> exit_code;
  std::optional<std::string> image_digest;
  std::optional<std::int64_t> wall_ms;
  std::optional<std::int64_t> cpu_user_ms;
  std::optional<std::int64_t> cpu_system_ms;
  std::optional<std::int64_t> max_rss_kb;
};
AttemptCost attempt_cost(const ProcessOutcome& outcome, const std::optional<std::string>& digest);
nlohmann::json usage_json(const AttemptCost& cost, const std::string& source);

inline constexpr const char* kServiceName = "conveyor-worker";
// What wakes a worker: jobs to claim, and cancel requests of its jobs.
inline constexpr const char* kQueuedEvent = "io.conveyor.job.queued";
inline constexpr const char* kCancelRequestedEvent = "io.conveyor.job.cancel_requested";
// The wake_because() reason of a slot freed by a job of this worker.
inline constexpr const char* kSlotFreedWake = "conveyor.worker.slot_freed";

class FinishBatch;
class Executor;

// runtime::service_schema() plus the worker's keys: CONVEYOR_WORKER_NAME,
// CONVEYOR_WORKER_CONCURRENCY, CONVEYOR_WORKER_POOL, CONVEYOR_KILL_GRACE_MS.
config::Schema schema();

// One worker instance. Created in the runtime's setup(), driven by loop() on
// the main thread. Its jobs' programs run on the process's Reactor (one
// thread for all of them); the blocking parts of a job (its files, its
// outcome) on a small Executor; a monitor thread heartbeats and checks
// cancels; each resident program has a supervisor thread for all its jobs. Public methods are called from the main
// thread only; internal state shared with the threads is guarded.
class Worker {
 public:
  explicit Worker(runtime::Context& ctx);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Registers the worker row (upsert by name) and starts the monitor thread.
  void start();
  // Claims and runs jobs until SIGTERM (ctx.stopping()) or until an
  // operator's drain has emptied it, then drains and marks the row stopped.
  void loop();

 private:
  struct Job;

  int concurrency() const;
  std::size_t running_count();                 // jobs this worker has started and not yet finished
  std::vector<std::int64_t> unfinished_ids();  // jobs whose run here has not finished
  int busy_slots();                            // of those, the ones whose program still runs
  void free_slot(Job& job);
  // Claims what its free slots can take. `queued_notified`: the wake-up was
  // a NOTIFY of queued jobs, so the claim goes first, with no probe.
  // `only_slot_freed`: a slot of its own freed and nothing else woke it, so
  // it claims only if the last claim may have left jobs queued.
  void claim(bool queued_notified, bool only_slot_freed);
  void check_cancels();
  void heartbeat();
  void reap_finished();
  void monitor_main();
  struct Attempt;
  // A job's steps: begin_job (executor) prepares it and starts its program
  // on the reactor, sends it to its resident program, or hands it to the
  // container executor (begin_container); complete_job (executor) records
  // it once exit_sink got its outcome.
  void begin_job(const std::shared_ptr<Job>& job);
  void complete_job(const std::shared_ptr<Job>& job, const ProcessOutcome& outcome);
  ExitSink exit_sink(const std::shared_ptr<Job>& job);
  void start_resident(const std::shared_ptr<Job>& job);
  void begin_container(const std::shared_ptr<Job>& job);
  void complete_container(const std::shared_ptr<Job>& job, ContainerRun& run, const ProcessOutcome& client);
  void end_job(Job& job);
  Attempt prepare_attempt(Job& job);
  void note_refused_env(const Job& job, LogFile& log);
  void container_failed(Job& job, Attempt& attempt, LogFile& log, const ContainerError& e);
  void record_attempt(Job& job, Attempt& attempt, LogFile& log, const ProcessOutcome& outcome);
  static std::string ending_of(const Job& job, const ProcessOutcome& outcome);
  void rerender_attempt(const Job& job, const std::filesystem::path& out_dir, std::vector<std::string>& argv);
  void finish_job(Job& job, const ProcessOutcome& outcome, const std::string& log_dir,
                  const std::vector<std::string>& outputs, const AttemptCost& cost);
  void fail_internal(Job& job, const std::string& subtype, const std::string& message,
                     const std::optional<std::string>& image_digest);
  std::optional<db::Result> write_outcome(const Job& job, const db::Statement& statement,
                                          const std::vector<db::Param>& params, const AttemptCost& cost,
                                          bool in_doubt = false);
  // finish_job's two common outcomes: the status written ("" when the job
  // was no longer ours), or nullopt when it could not be recorded.
  std::optional<std::string> write_processed(Job& job, const std::string& result, const AttemptCost& cost);
  std::optional<std::string> write_failure(Job& job, const ProcessOutcome& outcome, const AttemptCost& cost);
  void shutdown();
  void stop_threads();
  // Container jobs (container.hpp).
  void setup_containers();
  void sweep_containers();
  void sweeper_main();
  std::filesystem::path env_dir() const;
  void remove_stale_env_files();
  ContainerSpec container_spec(Job& job, const std::filesystem::path& out_dir, const std::vector<std::string>& argv,
                               const std::map<std::string, std::string>& env, LogFile& log, nlohmann::json& meta);

  runtime::Context& ctx_;
  std::string name_;
  std::string pool_;
  int configured_concurrency_ = 0;  // 0: system_parameters.worker_concurrency
  std::chrono::milliseconds kill_grace_;
  // SIGTERM budget (the runtime exits 1 once CONVEYOR_SHUTDOWN_GRACE_MS has
  // passed): wait this long for running jobs, then stop them with this
  // TERM->KILL grace, leaving the rest to record the outcomes.
  std::chrono::milliseconds drain_wait_;
  std::chrono::milliseconds shutdown_kill_grace_;
  std::chrono::milliseconds poll_interval_;
  std::filesystem::path data_dir_;
  std::map<std::string, std::string> base_env_;  // a job's minimal base environment (job_base_environment)
  std::int64_t worker_id_ = 0;
  std::string queued_channel_;  // conveyor.queued_channel(worker_id_)

  // Container jobs: the runtime (none found: image jobs end internal_error
  // with why), this installation's id (the containers' label), the user
  // they run as, their cgroups' parent, and the sweep's cadence.
  std::optional<RuntimeCalls> runtime_;
  std::string runtime_why_;
  std::string installation_;
  std::string container_user_;
  bool container_keep_id_ = false;
  std::optional<std::pair<uid_t, gid_t>> chown_outputs_to_;
  std::string cgroup_base_;
  std::chrono::milliseconds sweep_interval_{0};

  std::chrono::steady_clock::time_point last_cancel_check_{};  // the loop's thread only
  bool jobs_left_ = true;  // the last claim may have left jobs queued (the loop's thread only)
  std::chrono::steady_clock::time_point last_claim_{};  // of the last probe or claim (the loop's thread only)
  std::atomic<bool> draining_{false};                   // an operator set the row to 'draining', or SIGTERM
  std::atomic<bool> stopped_{false};                    // the row is marked stopped

  std::mutex mutex_;  // guards jobs_
  std::condition_variable job_done_;
  std::map<std::int64_t, std::shared_ptr<Job>> jobs_;

  // Outcomes are retried until committed; stop_threads() sets a deadline
  // after which a retry gives up (the reconciler recovers the job once this
  // worker's heartbeat has stopped).
  std::mutex outcome_mutex_;
  std::condition_variable outcome_cv_;
  std::optional<std::chrono::steady_clock::time_point> outcome_deadline_;

  std::mutex monitor_mutex_;
  std::condition_variable monitor_cv_;
  bool monitor_stop_ = false;
  std::thread monitor_;
  std::thread sweeper_;                    // container sweeps (runtime calls), on monitor_cv_ too
  std::unique_ptr<FinishBatch> finishes_;  // group commit of processed outcomes (after start())
  std::unique_ptr<Executor> executor_;     // prepares and records jobs (after start(), until stop_threads())
  std::unique_ptr<Executor> containers_;   // container jobs' setup and end (with a runtime only)
  ResidentPool residents_;                 // the programs of "runner": "resident" types
  std::atomic<StopReason> sweep_stop_{StopReason::none};
};

}  // namespace conveyor::worker
