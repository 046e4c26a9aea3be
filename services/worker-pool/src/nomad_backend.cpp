// The `nomad` backend: one dispatch of the parameterized worker job per
// worker (deploy/nomad/worker.nomad.hcl), its name and pool in the
// dispatch's Meta.
//
// Requests (Nomad HTTP API v1, in one namespace, X-Nomad-Token):
//   POST   /v1/job/{job}/dispatch                 one worker: {"Meta": {"worker_name", "pool"}}
//   GET    /v1/jobs?prefix={job}/dispatch-        the dispatched jobs, every tick
//   GET    /v1/job/{id}                           Meta of a dispatch this pool does not know (adoption)
//   DELETE /v1/job/{id}                           stops the dispatch of a lost or never-registered worker
// A drained worker exits 0 and its dispatched job ends `dead` (complete);
// Nomad garbage-collects it. The pool stops only the dispatches of lost
// workers, never a running worker's to scale down.
#include <set>

#include <fmt/format.h>

#include "backend.hpp"
#include "cluster_api.hpp"
#include "conveyor/logging/logging.hpp"

namespace conveyor::workerpool {

namespace {

std::string str(const Json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// The allocation counts of a job stub's summary, over its task groups.
struct Counts {
  long complete = 0, failed = 0, lost = 0, running = 0;
};

Counts counts(const Json& stub) {
  Counts c;
  const Json summary = stub.value("JobSummary", Json::object()).value("Summary", Json::object());
  for (const auto& [group, s] : summary.items()) {
    if (!s.is_object()) continue;
    c.complete += s.value("Complete", 0L);
    c.failed += s.value("Failed", 0L);
    c.lost += s.value("Lost", 0L);
    c.running += s.value("Running", 0L);
  }
  return c;
}

class NomadBackend final : public Backend {
 public:
  explicit NomadBackend(NomadBackendOptions o) : o_(std::move(o)), api_(o_.api) {
    query_ = "namespace=" + url_encode(o_.namespace_name);
    if (!o_.region.empty()) query_ += "&region=" + url_encode(o_.region);
    log_->info("nomad backend: API {}, namespace {}, workers are dispatches of job {}", o_.api.base_url,
               o_.namespace_name, o_.job);
  }

  std::string_view kind() const override { return "nomad"; }

  void spawn(const std::string& name) override {
    const Json body = {{"JobID", o_.job}, {"Meta", {{"worker_name", name}, {"pool", o_.pool}}}};
    const Json r = api_.call("POST", "/v1/job/" + url_encode(o_.job) + "/dispatch?" + query_, &body, {200});
    const std::string id = str(r, "DispatchedJobID");
    if (id.empty()) {
      throw Error(errc::unavailable, "Nomad API: dispatch of " + o_.job + " answered no DispatchedJobID");
    }
    jobs_[id] = Dispatch{name, Clock::now(), false};
    log_->info("started worker {} (dispatched job {})", name, id);
  }

  void drain(const std::string& name) override {
    log_->debug("worker {} drains by itself; its dispatched job ends when it exits", name);
  }

  void terminate(const std::string& name) override {
    for (auto& [id, d] : jobs_) {
      if (d.worker != name || d.terminating) continue;
      d.terminating = true;
      log_->warn("stopping worker {}: stopping dispatched job {} (the job's kill_timeout applies)", name, id);
      stop(id);
      return;
    }
  }

  std::vector<ExitedWorker> reap() override {
    std::vector<ExitedWorker> out;
    if (!backoff_.ready()) return out;
    Json list;
    try {
      const auto pending = stops_;
      for (const std::string& id : pending) stop(id);
      list = api_.call("GET", "/v1/jobs?prefix=" + url_encode(o_.job + "/dispatch-") + "&" + query_);
      if (!list.is_array()) throw Error(errc::unavailable, "Nomad API: GET /v1/jobs did not answer a list");
      if (backoff_.failures() > 0) log_->info("Nomad API answers again (after {} failed call(s))", backoff_.failures());
      backoff_.succeeded();
    } catch (const Error& e) {
      const auto wait = backoff_.failed();
      log_->warn("{} (failure {} in a row; next try in {} ms)", e.what(), backoff_.failures(), wait.count());
      return out;
    }
    std::set<std::string> listed;
    for (const Json& stub : list) {
      const std::string id = str(stub, "ID");
      if (id.empty() || str(stub, "ParentID") != o_.job) continue;
      listed.insert(id);
      const std::string status = str(stub, "Status");
      auto it = jobs_.find(id);
      if (it == jobs_.end()) {
        if (status != "dead" && !foreign_.contains(id)) adopt(id);
        continue;
      }
      if (status != "dead") continue;
      const Counts c = counts(stub);
      const bool success = !it->second.terminating && c.failed == 0 && c.lost == 0 && c.complete > 0;
      out.push_back(ExitedWorker{it->second.worker, 0, success,
                                 fmt::format("dispatched job {} dead: {} complete, {} failed, {} lost{}", id,
                                             c.complete, c.failed, c.lost,
                                             it->second.terminating ? " (stopped by the pool)" : "")});
      stops_.erase(id);
      jobs_.erase(it);
    }
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      if (listed.contains(it->first)) {
        ++it;
        continue;
      }
      out.push_back(ExitedWorker{it->second.worker, 0, false,
                                 fmt::format("dispatched job {} is gone (purged outside the pool)", it->first)});
      stops_.erase(it->first);
      it = jobs_.erase(it);
    }
    for (auto it = foreign_.begin(); it != foreign_.end();) {
      it = listed.contains(*it) ? std::next(it) : foreign_.erase(it);
    }
    return out;
  }

  std::vector<OwnWorker> workers() const override {
    std::vector<OwnWorker> out;
    for (const auto& [id, d] : jobs_) out.push_back(OwnWorker{d.worker, 0, d.spawned, d.terminating});
    return out;
  }

  std::vector<ExitedWorker> shutdown(Clock::time_point) override {
    // Dispatched jobs are not children of the pool: they keep running, and
    // the next pool adopts them (a restart, a new image, the standby).
    if (!jobs_.empty()) log_->info("leaving {} dispatched worker(s) running: the next pool adopts them", jobs_.size());
    return {};
  }

 private:
  struct Dispatch {
    std::string worker;
    Clock::time_point spawned{};
    bool terminating = false;
  };

  // A running dispatch this process did not start: ours when its Meta names
  // our pool (an earlier pool dispatched it); else never asked about again.
  void adopt(const std::string& id) {
    Json job;
    try {
      job = api_.call("GET", "/v1/job/" + url_encode(id) + "?" + query_);
    } catch (const Error& e) {
      log_->warn("{} (adoption tried again next tick)", e.what());
      return;
    }
    const Json meta = job.value("Meta", Json::object());
    const std::string worker = str(meta, "worker_name");
    if (worker.empty() || str(meta, "pool") != o_.pool) {
      foreign_.insert(id);
      return;
    }
    jobs_[id] = Dispatch{worker, Clock::now(), false};
    log_->info("adopted worker {} (dispatched job {}, {})", worker, id, str(job, "Status"));
  }

  void stop(const std::string& id) {
    try {
      api_.call("DELETE", "/v1/job/" + url_encode(id) + "?" + query_, nullptr, {200});
      stops_.erase(id);
    } catch (const ApiError& e) {
      if (e.status() == 404) {
        stops_.erase(id);
        return;
      }
      log_->warn("{} (will try again)", e.what());
      stops_.insert(id);
    } catch (const Error& e) {
      log_->warn("{} (will try again)", e.what());
      stops_.insert(id);
    }
  }

  NomadBackendOptions o_;
  ApiClient api_;
  std::string query_;
  std::map<std::string, Dispatch> jobs_;  // dispatched job id -> worker, not yet dead
  std::set<std::string> stops_;           // DELETEs to retry
  std::set<std::string> foreign_;         // dispatches of other pools
  Backoff backoff_;
  std::shared_ptr<spdlog::logger> log_ = logging::get("backend");
};

}  // namespace

std::unique_ptr<Backend> make_nomad_backend(NomadBackendOptions options) {
  return std::make_unique<NomadBackend>(std::move(options));
}

}  // namespace conveyor::workerpool
