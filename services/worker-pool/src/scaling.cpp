#include "scaling.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace conveyor::workerpool {

namespace {

std::string describe(const std::vector<ActiveWorker>& workers) {
  std::string out;
  for (const ActiveWorker& w : workers) {
    if (!out.empty()) out += ", ";
    out += w.running == 0 ? fmt::format("{} (idle)", w.name) : fmt::format("{} ({} running)", w.name, w.running);
  }
  return out;
}

}  // namespace

int desired_workers(std::int64_t demand, int concurrency, int min_workers, int max_workers) {
  const std::int64_t c = std::max(1, concurrency);
  const std::int64_t needed = (std::max<std::int64_t>(0, demand) + c - 1) / c;
  const std::int64_t hi = std::max(0, max_workers);
  const std::int64_t lo = std::min<std::int64_t>(std::max(0, min_workers), hi);
  return static_cast<int>(std::clamp(needed, lo, hi));
}

std::vector<ActiveWorker> drain_order(std::vector<ActiveWorker> workers) {
  std::sort(workers.begin(), workers.end(), [](const ActiveWorker& a, const ActiveWorker& b) {
    if (a.running != b.running) return a.running < b.running;
    if (a.started_at != b.started_at) return a.started_at > b.started_at;
    return a.id > b.id;
  });
  return workers;
}

ScalingPlan Scaler::plan(const ScalingInput& in, Clock::time_point now) {
  ScalingPlan p;
  p.live = static_cast<int>(in.active.size() + in.pending.size());
  p.desired = desired_workers(in.demand, in.concurrency, in.min_workers, in.max_workers);
  const auto numbers = fmt::format("demand {} jobs, concurrency {}, min {}, max {}", in.demand,
                                   std::max(1, in.concurrency), in.min_workers, in.max_workers);
  if (p.live < p.desired) {
    over_since_.reset();
    plan_up(p, in, numbers);
  } else if (p.live <= p.desired) {
    over_since_.reset();
  } else {
    plan_down(p, in, now, numbers);
  }
  return p;
}

void Scaler::plan_up(ScalingPlan& p, const ScalingInput& in, const std::string& numbers) {
  // max_number_of_worker_instances caps processes: a worker still
  // draining its jobs holds its place until it exits.
  const int room = std::max(0, in.max_workers) - p.live - std::max(0, in.draining);
  p.spawn = std::clamp(p.desired - p.live, 0, std::max(0, room));
  if (p.spawn == 0) return;
  p.message = fmt::format("scaling up {} -> {}: {}", p.live, p.live + p.spawn, numbers);
  if (p.spawn < p.desired - p.live) {
    p.message += fmt::format(" ({} draining or exiting still count against max)", in.draining);
  }
}

void Scaler::plan_down(ScalingPlan& p, const ScalingInput& in, Clock::time_point now, const std::string& numbers) {
  int excess = 0;
  bool over_max = false;
  std::string why;
  if (p.live > in.max_workers) {
    // Above the limit (it was lowered, or workers were started by hand): now.
    over_max = true;
    excess = p.live - std::max(0, in.max_workers);
    why = "above max_number_of_worker_instances";
  } else {
    if (!over_since_) over_since_ = now;
    const auto held = std::chrono::duration_cast<std::chrono::milliseconds>(now - *over_since_);
    if (held < delay_) return;  // wait: the backlog may come back
    excess = p.live - p.desired;
    why = fmt::format("more than needed for {} ms", held.count());
  }

  auto order = drain_order(in.active);
  const int from_rows = std::min<int>(excess, static_cast<int>(order.size()));
  p.drain.assign(order.begin(), order.begin() + from_rows);
  // The rest are still starting. Over max they are stopped (they have no job
  // yet, so nothing is lost), newest first; otherwise they are drained once
  // registered, on a later tick.
  if (over_max) {
    for (int i = 0; i < excess - from_rows && i < static_cast<int>(in.pending.size()); ++i) {
      p.stop_pending.push_back(in.pending[in.pending.size() - 1 - static_cast<std::size_t>(i)]);
    }
  }
  if (p.drain.empty() && p.stop_pending.empty()) return;
  over_since_.reset();
  const int target = p.live - static_cast<int>(p.drain.size() + p.stop_pending.size());
  p.message = fmt::format("scaling down {} -> {} ({}): {}; draining {}", p.live, target, why, numbers,
                          p.drain.empty() ? std::string("none") : describe(p.drain));
  if (!p.stop_pending.empty()) {
    p.message += fmt::format("; stopping {} starting worker(s)", p.stop_pending.size());
  }
}

}  // namespace conveyor::workerpool
