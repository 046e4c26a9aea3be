// The `kubernetes` backend: one Pod per worker, created through the API
// server from the PodTemplate the deployment ships (its image, resources,
// envFrom, volumes), with restartPolicy Never and labels naming the pool.
//
// Requests (Kubernetes core/v1, all in one namespace):
//   GET    /api/v1/namespaces/{ns}/podtemplates/{template}   the worker pod's shape
//   POST   /api/v1/namespaces/{ns}/pods                      one worker
//   GET    /api/v1/namespaces/{ns}/pods?labelSelector=...    the pool's pods, every tick
//   DELETE /api/v1/namespaces/{ns}/pods/{name}               an exited pod, or a lost worker's
// A drained worker exits 0 and its pod completes (phase Succeeded); the pool
// deletes only the pods of workers that exited or were lost, never a
// running worker's to scale down. Pods of an earlier pool (a restart, a new
// image) are adopted from the list by their labels.
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "backend.hpp"
#include "cluster_api.hpp"
#include "conveyor/logging/logging.hpp"

namespace conveyor::workerpool {

namespace {

constexpr const char* kWorkerNameAnnotation = "conveyor.dev/worker-name";
constexpr const char* kPoolAnnotation = "conveyor.dev/pool";
constexpr const char* kPoolLabel = "conveyor.dev/pool";
constexpr const char* kManagedByLabel = "app.kubernetes.io/managed-by";
constexpr const char* kNameLabel = "app.kubernetes.io/name";
// How long a PodTemplate read is reused (a scale-up of ten reads it once;
// an edited template reaches the next pods within this).
constexpr auto kTemplateTtl = std::chrono::seconds(5);

// A label value: at most 63 of [A-Za-z0-9._-], alphanumeric at both ends.
std::string label_value(std::string_view s) {
  std::string out;
  for (const unsigned char c : s) out += (std::isalnum(c) || c == '-' || c == '_' || c == '.') ? char(c) : '-';
  if (out.size() > 63) out.resize(63);
  while (!out.empty() && !std::isalnum(static_cast<unsigned char>(out.front()))) out.erase(out.begin());
  while (!out.empty() && !std::isalnum(static_cast<unsigned char>(out.back()))) out.pop_back();
  return out.empty() ? "pool" : out;
}

std::string str(const Json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// "exit code 137 (OOMKilled)" from a finished pod's container statuses.
std::string termination(const Json& pod) {
  const Json status = pod.value("status", Json::object());
  for (const auto& cs : status.value("containerStatuses", Json::array())) {
    const Json t = cs.value("state", Json::object()).value("terminated", Json::object());
    if (t.empty()) continue;
    std::string out = fmt::format("exit code {}", t.value("exitCode", -1));
    if (const std::string reason = str(t, "reason"); !reason.empty()) out += " (" + reason + ")";
    return out;
  }
  const std::string reason = str(status, "reason");
  const std::string message = str(status, "message");
  return reason.empty() ? std::string("no container status") : reason + (message.empty() ? "" : ": " + message);
}

class KubernetesBackend final : public Backend {
 public:
  explicit KubernetesBackend(KubernetesBackendOptions o) : o_(std::move(o)), api_(o_.api) {
    const std::string ns = url_encode(o_.namespace_name);
    pods_path_ = "/api/v1/namespaces/" + ns + "/pods";
    template_path_ = "/api/v1/namespaces/" + ns + "/podtemplates/" + url_encode(o_.pod_template);
    selector_ = fmt::format("{}=conveyor-workerpool,{}={}", kManagedByLabel, kPoolLabel, label_value(o_.pool));
    log_->info("kubernetes backend: API {}, namespace {}, worker pods from PodTemplate {}, selector {}",
               o_.api.base_url, o_.namespace_name, o_.pod_template, selector_);
  }

  ~KubernetesBackend() override {
    if (!o_.private_dir.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(o_.private_dir, ec);
    }
  }
  KubernetesBackend(const KubernetesBackend&) = delete;
  KubernetesBackend& operator=(const KubernetesBackend&) = delete;

  std::string_view kind() const override { return "kubernetes"; }

  void spawn(const std::string& name) override {
    const Json pod = pod_for(name);
    const std::string pod_name = pod["metadata"]["name"].get<std::string>();
    // A timeout may hide a pod that was created: the next list adopts it
    // (its annotation names the worker), so nothing is started twice.
    api_.call("POST", pods_path_, &pod, {201, 200, 202});
    pods_[pod_name] = Pod{name, Clock::now(), false};
    log_->info("started worker {} (pod {})", name, pod_name);
  }

  void drain(const std::string& name) override {
    // The worker sees its row `draining`, finishes its jobs and exits 0:
    // its pod completes (Succeeded) and reap() deletes it.
    log_->debug("worker {} drains by itself; its pod completes when it exits", name);
  }

  void terminate(const std::string& name) override {
    for (auto& [pod_name, p] : pods_) {
      if (p.worker != name || p.terminating) continue;
      p.terminating = true;
      log_->warn("stopping worker {}: deleting pod {} (SIGTERM, SIGKILL after {} s)", name, pod_name, grace_s());
      delete_pod(pod_name, "stop");
      return;
    }
  }

  std::vector<ExitedWorker> reap() override {
    std::vector<ExitedWorker> out;
    if (!backoff_.ready()) return out;
    Json list;
    try {
      retry_deletes();
      const std::string path = pods_path_ + "?labelSelector=" + url_encode(selector_);
      list = api_.call("GET", path);
      if (backoff_.failures() > 0) log_->info("kubernetes API answers again (after {} failed call(s))", backoff_.failures());
      backoff_.succeeded();
    } catch (const Error& e) {
      const auto wait = backoff_.failed();
      log_->warn("{} (failure {} in a row; next try in {} ms)", e.what(), backoff_.failures(), wait.count());
      return out;
    }
    std::set<std::string> listed;
    for (const Json& pod : list.value("items", Json::array())) {
      const Json meta = pod.value("metadata", Json::object());
      const std::string pod_name = str(meta, "name");
      if (pod_name.empty()) continue;
      listed.insert(pod_name);
      const Json annotations = meta.value("annotations", Json::object());
      std::string worker = str(annotations, kWorkerNameAnnotation);
      if (worker.empty()) worker = pod_name;
      if (const std::string pool = str(annotations, kPoolAnnotation); !pool.empty() && pool != o_.pool) continue;
      const std::string phase = str(pod.value("status", Json::object()), "phase");
      const bool finished = phase == "Succeeded" || phase == "Failed";
      auto it = pods_.find(pod_name);
      if (it == pods_.end()) {
        if (finished) {
          if (!deletes_.contains(pod_name)) {
            log_->info("pod {} of worker {} ({}) is from an earlier pool: deleting it", pod_name, worker, phase);
            delete_pod(pod_name, "cleanup");
          }
          continue;
        }
        const bool deleting = meta.contains("deletionTimestamp");
        pods_[pod_name] = Pod{worker, Clock::now(), deleting};
        log_->info("adopted worker {} (pod {}, {}{})", worker, pod_name, phase, deleting ? ", being deleted" : "");
        continue;
      }
      if (!finished) continue;
      out.push_back(ExitedWorker{worker, 0, phase == "Succeeded",
                                 fmt::format("pod {} {}: {}", pod_name, phase, termination(pod))});
      pods_.erase(it);
      delete_pod(pod_name, "cleanup");
    }
    for (auto it = pods_.begin(); it != pods_.end();) {
      if (listed.contains(it->first)) {
        ++it;
        continue;
      }
      out.push_back(ExitedWorker{it->second.worker, 0, false,
                                 it->second.terminating
                                     ? fmt::format("pod {} deleted", it->first)
                                     : fmt::format("pod {} is gone (deleted or evicted outside the pool)", it->first)});
      deletes_.erase(it->first);
      it = pods_.erase(it);
    }
    // Exited pods whose delete is pending but which no longer exist.
    for (auto it = deletes_.begin(); it != deletes_.end();) {
      it = listed.contains(it->first) ? std::next(it) : deletes_.erase(it);
    }
    return out;
  }

  std::vector<OwnWorker> workers() const override {
    std::vector<OwnWorker> out;
    for (const auto& [pod_name, p] : pods_) out.push_back(OwnWorker{p.worker, 0, p.spawned, p.terminating});
    return out;
  }

  std::vector<ExitedWorker> shutdown(Clock::time_point) override {
    // Pods are not children of the pool: they keep running and draining on
    // their own, and the next pool (a restart, a new image, the standby)
    // adopts them from the list. Stopping them here would interrupt every
    // job at each rolling update of the pool.
    if (!pods_.empty()) {
      log_->info("leaving {} worker pod(s) running: the next pool adopts them", pods_.size());
    }
    return {};
  }

 private:
  struct Pod {
    std::string worker;
    Clock::time_point spawned{};
    bool terminating = false;
  };

  long grace_s() const {
    return static_cast<long>((o_.kill_grace.count() + 999) / 1000);
  }

  // The PodTemplate's pod with our name, labels, annotations, restart
  // policy and the worker's identity in the `worker` container (else the first).
  Json pod_for(const std::string& name) {
    const auto now = Clock::now();
    if (!template_ || now >= template_read_ + kTemplateTtl) {
      try {
        template_ = api_.call("GET", template_path_);
      } catch (const ApiError& e) {
        if (e.status() == 404) {
          throw Error(errc::invalid_config,
                      fmt::format("{} (CONVEYOR_WORKERPOOL_KUBERNETES_POD_TEMPLATE={}: apply the PodTemplate of "
                                  "deploy/kubernetes, or name the one you have)",
                                  e.what(), o_.pod_template));
        }
        throw;
      }
      template_read_ = now;
    }
    const Json tmpl = template_->value("template", Json::object());
    Json spec = tmpl.value("spec", Json::object());
    if (!spec.contains("containers") || !spec["containers"].is_array() || spec["containers"].empty()) {
      throw Error(errc::invalid_config, "PodTemplate " + o_.pod_template + " has no containers");
    }
    Json meta = tmpl.value("metadata", Json::object());
    Json pod_meta = Json::object();
    pod_meta["name"] = dns_name(name);
    pod_meta["namespace"] = o_.namespace_name;
    Json labels = meta.value("labels", Json::object());
    labels[kNameLabel] = "conveyor-worker";
    labels[kManagedByLabel] = "conveyor-workerpool";
    labels[kPoolLabel] = label_value(o_.pool);
    pod_meta["labels"] = labels;
    Json annotations = meta.value("annotations", Json::object());
    annotations[kWorkerNameAnnotation] = name;
    annotations[kPoolAnnotation] = o_.pool;
    pod_meta["annotations"] = annotations;
    // The pool replaces workers; the kubelet must not restart one (a
    // drained worker that exits 0 is done).
    spec["restartPolicy"] = "Never";
    Json* container = &spec["containers"][0];
    for (Json& c : spec["containers"]) {
      if (str(c, "name") == "worker") container = &c;
    }
    Json env = Json::array();
    static const std::set<std::string> ours = {"CONVEYOR_WORKER_NAME", "CONVEYOR_INSTANCE_ID", "CONVEYOR_WORKER_POOL"};
    for (const Json& e : container->value("env", Json::array())) {
      if (!ours.contains(str(e, "name"))) env.push_back(e);
    }
    env.push_back({{"name", "CONVEYOR_WORKER_NAME"}, {"value", name}});
    env.push_back({{"name", "CONVEYOR_INSTANCE_ID"}, {"value", name}});
    env.push_back({{"name", "CONVEYOR_WORKER_POOL"}, {"value", o_.pool}});
    (*container)["env"] = env;
    return Json{{"apiVersion", "v1"}, {"kind", "Pod"}, {"metadata", pod_meta}, {"spec", spec}};
  }

  // DELETE a pod; 404 is done already. A failure is retried by reap().
  void delete_pod(const std::string& pod_name, const std::string& why) {
    const Json options = {{"apiVersion", "v1"}, {"kind", "DeleteOptions"}, {"gracePeriodSeconds", grace_s()}};
    try {
      api_.call("DELETE", pods_path_ + "/" + url_encode(pod_name), &options, {200, 202});
      deletes_.erase(pod_name);
    } catch (const ApiError& e) {
      if (e.status() == 404) {
        deletes_.erase(pod_name);
        return;
      }
      log_->warn("{} (will try again)", e.what());
      deletes_[pod_name] = why;
    } catch (const Error& e) {
      log_->warn("{} (will try again)", e.what());
      deletes_[pod_name] = why;
    }
  }

  void retry_deletes() {
    const auto pending = deletes_;
    for (const auto& [pod_name, why] : pending) delete_pod(pod_name, why);
  }

  KubernetesBackendOptions o_;
  ApiClient api_;
  std::string pods_path_;
  std::string template_path_;
  std::string selector_;
  std::optional<Json> template_;
  Clock::time_point template_read_{};
  std::map<std::string, Pod> pods_;               // pod name -> worker, not yet exited
  std::map<std::string, std::string> deletes_;    // pod name -> why, DELETE to retry
  Backoff backoff_;
  std::shared_ptr<spdlog::logger> log_ = logging::get("backend");
};

}  // namespace

std::unique_ptr<Backend> make_kubernetes_backend(KubernetesBackendOptions options) {
  return std::make_unique<KubernetesBackend>(std::move(options));
}

}  // namespace conveyor::workerpool
