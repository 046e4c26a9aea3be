#include "cluster_backend.hpp"

#include <fmt/format.h>

namespace conveyor::workerpool {

ClusterBackend::ClusterBackend(std::string api_name, std::string unit)
    : api_name_(std::move(api_name)), unit_(std::move(unit)) {}

void ClusterBackend::drain(const std::string& name) {
  // The worker sees its row `draining`, finishes its jobs and exits 0; its
  // unit ends and a later reap() collects it.
  log_->debug("worker {} drains by itself; its {} ends when it exits", name, unit_);
}

void ClusterBackend::terminate(const std::string& name) {
  for (auto& [id, u] : units_) {
    if (u.worker != name || u.terminating) continue;
    u.terminating = true;
    log_->warn("stopping worker {}: removing {} {} ({})", name, unit_, id, stop_note());
    request_removal(id);
    return;
  }
}

void ClusterBackend::request_removal(const std::string& id) {
  try {
    remove(id);
    removals_.erase(id);
  } catch (const Error& e) {
    log_->warn("{} (tried again next tick)", e.what());
    removals_.insert(id);
  }
}

std::vector<ExitedWorker> ClusterBackend::reap() {
  if (!backoff_.ready()) return {};
  try {
    const auto pending = removals_;
    for (const std::string& id : pending) request_removal(id);
    std::vector<ExitedWorker> out = list();
    if (backoff_.failures() > 0)
      log_->info("{} answers again (after {} failed call(s))", api_name_, backoff_.failures());
    backoff_.succeeded();
    return out;
  } catch (const Error& e) {
    const auto wait = backoff_.failed();
    log_->warn("{} (failure {} in a row; next try in {} ms)", e.what(), backoff_.failures(), wait.count());
    return {};
  }
}

std::vector<ExitedWorker> ClusterBackend::forget_unlisted(const std::set<std::string>& listed) {
  std::vector<ExitedWorker> out;
  for (auto it = units_.begin(); it != units_.end();) {
    if (listed.contains(it->first)) {
      ++it;
      continue;
    }
    out.push_back(ExitedWorker{it->second.worker, 0, false,
                               it->second.terminating
                                   ? fmt::format("{} {} removed", unit_, it->first)
                                   : fmt::format("{} {} is gone (removed outside the pool)", unit_, it->first)});
    it = units_.erase(it);
  }
  std::erase_if(removals_, [&](const std::string& id) { return !listed.contains(id); });
  return out;
}

std::vector<OwnWorker> ClusterBackend::workers() const {
  std::vector<OwnWorker> out;
  for (const auto& [id, u] : units_) out.push_back(OwnWorker{u.worker, 0, u.spawned, u.terminating});
  return out;
}

std::vector<ExitedWorker> ClusterBackend::shutdown(Clock::time_point) {
  if (!units_.empty()) log_->info("leaving {} worker {}(s) running: the next pool adopts them", units_.size(), unit_);
  return {};
}

}  // namespace conveyor::workerpool
