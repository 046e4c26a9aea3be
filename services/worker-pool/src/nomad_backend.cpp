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

#include "cluster_backend.hpp"

namespace conveyor::workerpool {

namespace {

// The allocation counts of a job stub's summary, over its task groups.
struct Counts {
  long complete = 0, failed = 0, lost = 0;
};

Counts counts(const Json& stub) {
  Counts c;
  const Json summary = stub.value("JobSummary", Json::object()).value("Summary", Json::object());
  for (const auto& [group, s] : summary.items()) {
    if (!s.is_object()) continue;
    c.complete += s.value("Complete", 0L);
    c.failed += s.value("Failed", 0L);
    c.lost += s.value("Lost", 0L);
  }
  return c;
}

class NomadBackend final : public ClusterBackend {
 public:
  explicit NomadBackend(NomadBackendOptions o)
      : ClusterBackend(o.api.name, "dispatched job"), o_(std::move(o)), api_(o_.api) {
    query_ = "namespace=" + url_encode(o_.namespace_name);
    if (!o_.region.empty()) query_ += "&region=" + url_encode(o_.region);
    log_->info("nomad backend: API {}, namespace {}, workers are dispatches of job {}", o_.api.base_url,
               o_.namespace_name, o_.job);
  }

  std::string_view kind() const override { return "nomad"; }

  void spawn(const std::string& name) override {
    const Json body = {{"JobID", o_.job}, {"Meta", {{"worker_name", name}, {"pool", o_.pool}}}};
    const Json r = api_.call("POST", "/v1/job/" + url_encode(o_.job) + "/dispatch?" + query_, &body, {200});
    const std::string id = json_string(r, "DispatchedJobID");
    if (id.empty()) {
      throw Error(errc::unavailable, "Nomad API: dispatch of " + o_.job + " answered no DispatchedJobID");
    }
    units_[id] = Unit{name, Clock::now(), false};
    log_->info("started worker {} (dispatched job {})", name, id);
  }

 private:
  std::vector<ExitedWorker> list() override {
    const Json list = api_.call("GET", "/v1/jobs?prefix=" + url_encode(o_.job + "/dispatch-") + "&" + query_);
    if (!list.is_array()) throw Error(errc::unavailable, "Nomad API: GET /v1/jobs did not answer a list");
    std::vector<ExitedWorker> out;
    std::set<std::string> listed;
    for (const Json& stub : list) {
      const std::string id = json_string(stub, "ID");
      if (id.empty() || json_string(stub, "ParentID") != o_.job || foreign_.contains(id)) continue;
      listed.insert(id);
      const std::string status = json_string(stub, "Status");
      const auto it = units_.find(id);
      if (it == units_.end()) {
        if (status != "dead") adopt(id);
        continue;
      }
      if (status != "dead") continue;
      const Counts c = counts(stub);
      const bool stopped = it->second.terminating;
      out.push_back(ExitedWorker{it->second.worker, 0, !stopped && c.failed == 0 && c.lost == 0 && c.complete > 0,
                                 fmt::format("dispatched job {} dead: {} complete, {} failed, {} lost{}", id,
                                             c.complete, c.failed, c.lost, stopped ? " (stopped by the pool)" : "")});
      units_.erase(it);
    }
    for (auto& e : forget_unlisted(listed)) out.push_back(std::move(e));
    std::erase_if(foreign_, [&](const std::string& id) {
      for (const Json& stub : list) {
        if (json_string(stub, "ID") == id) return false;
      }
      return true;
    });
    return out;
  }

  // A running dispatch this process did not start: ours when its Meta names
  // our pool (an earlier pool dispatched it); else never asked about again.
  void adopt(const std::string& id) {
    const Json job = api_.call("GET", "/v1/job/" + url_encode(id) + "?" + query_);
    const Json meta = job.value("Meta", Json::object());
    const std::string worker = json_string(meta, "worker_name");
    if (worker.empty() || json_string(meta, "pool") != o_.pool) {
      foreign_.insert(id);
      return;
    }
    units_[id] = Unit{worker, Clock::now(), false};
    log_->info("adopted worker {} (dispatched job {}, {})", worker, id, json_string(job, "Status"));
  }

  void remove(const std::string& id) override {
    try {
      api_.call("DELETE", "/v1/job/" + url_encode(id) + "?" + query_, nullptr, {200});
    } catch (const ApiError& e) {
      if (e.status() != 404) throw;  // 404: gone already
    }
  }

  std::string stop_note() const override { return "the worker job's kill_timeout applies"; }

  NomadBackendOptions o_;
  ApiClient api_;
  std::string query_;
  std::set<std::string> foreign_;  // running dispatches of other pools
};

}  // namespace

std::unique_ptr<Backend> make_nomad_backend(NomadBackendOptions options) {
  return std::make_unique<NomadBackend>(std::move(options));
}

}  // namespace conveyor::workerpool
