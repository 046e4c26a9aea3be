#pragma once
// What the kubernetes and nomad backends share. Their workers are remote
// units (a pod, a dispatched job) that the pool lists from the orchestrator
// at every reap(): so it adopts the units an earlier pool started (a
// restart, a new image, a standby that took over, a create whose answer was
// lost), collects the units that ended, and notices units removed behind its
// back. A failing list backs off (Backoff); a removal that failed is retried
// at the next reap(). On shutdown the units are left running: they are not
// the pool's children, and the next pool adopts them, so a rolling update of
// the pool interrupts no job.
//
// Not thread-safe: called from the pool's loop thread.
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "backend.hpp"
#include "cluster_api.hpp"
#include "conveyor/logging/logging.hpp"

namespace conveyor::workerpool {

class ClusterBackend : public Backend {
 public:
  void drain(const std::string& name) override;
  void terminate(const std::string& name) override;
  std::vector<ExitedWorker> reap() override;
  std::vector<OwnWorker> workers() const override;
  std::vector<ExitedWorker> shutdown(Clock::time_point deadline) override;

 protected:
  // `api_name` starts log lines ("kubernetes API"); `unit` names a unit ("pod").
  ClusterBackend(std::string api_name, std::string unit);

  struct Unit {
    std::string worker;
    Clock::time_point spawned{};
    bool terminating = false;
  };

  // One list of the orchestrator: adopts, and returns the units that ended
  // (erasing them from units_; forget_unlisted() does the rest). Throws
  // Error when the API fails.
  virtual std::vector<ExitedWorker> list() = 0;
  // Deletes or stops unit `id`; returns when done or already gone, throws
  // Error when it should be tried again.
  virtual void remove(const std::string& id) = 0;
  // How terminate() stops a unit, for its log line ("SIGKILL after 10 s").
  virtual std::string stop_note() const = 0;

  // remove(), remembered for a retry when it fails.
  void request_removal(const std::string& id);
  bool removal_pending(const std::string& id) const { return removals_.contains(id); }
  // Units this pool tracks that the last list did not show: exited.
  std::vector<ExitedWorker> forget_unlisted(const std::set<std::string>& listed);

  std::map<std::string, Unit> units_;  // unit id -> worker, not ended yet
  std::shared_ptr<spdlog::logger> log_ = logging::get("backend");

 private:
  std::string api_name_;
  std::string unit_;
  std::set<std::string> removals_;  // removals to retry
  Backoff backoff_;
};

}  // namespace conveyor::workerpool
