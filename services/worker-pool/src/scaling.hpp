#pragma once
// The worker pool's scaling rule, as pure logic (no database, no processes):
//
//   desired = clamp(ceil(demand / concurrency), min, max)
//   live    = active workers with a fresh heartbeat + own workers still starting
//
//   live < desired          -> start (desired - live) now, but never more
//                              processes than max: draining workers still
//                              finishing their jobs, and workers still
//                              exiting, count against it
//   live > max              -> drain (live - max) now
//   live > desired (<= max) -> drain (live - desired) once that has lasted the
//                              scale-down delay without a break
//
// Draining picks idle workers first, then those running the fewest jobs,
// newest first; a busy worker is drained (it finishes its jobs, claims no
// more, exits), never killed. Draining workers are not live capacity.
//
// Scaler is a value type owned by the pool's loop thread; not thread-safe.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace conveyor::workerpool {

// An `active` conveyor.worker row of the pool with a fresh heartbeat.
struct ActiveWorker {
  std::int64_t id = 0;
  std::string name;
  int running = 0;        // jobs it runs (as of its last heartbeat)
  double started_at = 0;  // epoch seconds; larger = newer
};

struct ScalingInput {
  std::int64_t demand = 0;  // jobs of the pool that are queued or started
  int concurrency = 1;      // jobs one worker runs at once
  int min_workers = 0;
  int max_workers = 0;
  std::vector<ActiveWorker> active;
  std::vector<std::string> pending;  // own workers started but not registered yet, oldest first
  // Draining workers with a fresh heartbeat, and own worker processes still
  // exiting (row stopped or lost, or being stopped): not capacity, but still
  // processes, so they count against max_number_of_worker_instances.
  int draining = 0;
};

struct ScalingPlan {
  int live = 0;
  int desired = 0;
  int spawn = 0;                          // workers to start now
  std::vector<ActiveWorker> drain;        // rows to set draining now
  std::vector<std::string> stop_pending;  // own starting workers to stop (over max with too few rows)
  // What was decided and why, with the numbers; empty when nothing changes.
  std::string message;
};

// clamp(ceil(demand / concurrency), min, max); concurrency < 1 counts as 1.
int desired_workers(std::int64_t demand, int concurrency, int min_workers, int max_workers);

// Idle first, then fewest running, then newest first (id breaks ties).
std::vector<ActiveWorker> drain_order(std::vector<ActiveWorker> workers);

class Scaler {
 public:
  using Clock = std::chrono::steady_clock;
  explicit Scaler(std::chrono::milliseconds scale_down_delay) : delay_(scale_down_delay) {}

  // The decision for this tick. Remembers since when live has been above
  // desired (but not above max), so that scale-down waits for the delay.
  ScalingPlan plan(const ScalingInput& in, Clock::time_point now);
  // Forget the scale-down timer (e.g. after leadership was lost).
  void reset() { over_since_.reset(); }

 private:
  // plan() when live is below desired, and above it.
  void plan_up(ScalingPlan& p, const ScalingInput& in, const std::string& numbers);
  void plan_down(ScalingPlan& p, const ScalingInput& in, Clock::time_point now, const std::string& numbers);

  std::chrono::milliseconds delay_;
  std::optional<Clock::time_point> over_since_;
};

}  // namespace conveyor::workerpool
