// The `kubernetes` backend: one Pod per worker, created through the API
// server from the PodTemplate the deployment ships (its image, resources,
// envFrom, volumes), with restartPolicy Never and labels naming the pool.
//
// Requests (Kubernetes core/v1, all in one namespace):
//   GET    /api/v1/namespaces/{ns}/podtemplates/{template}   the worker pod's shape
//   POST   /api/v1/namespaces/{ns}/pods                      one worker
//   GET    /api/v1/namespaces/{ns}/pods?labelSelector=...    the pool's pods, every tick
//   DELETE /api/v1/namespaces/{ns}/pods/{name}               an ended pod, or a lost worker's
// A drained worker exits 0 and its pod completes (phase Succeeded); the pool
// deletes only the pods of workers that ended or were lost, never a running
// worker's to scale down.
#include <set>

#include <fmt/format.h>

#include "cluster_backend.hpp"

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

// "exit code 137 (OOMKilled)" from an ended pod's container statuses.
std::string termination(const Json& pod) {
  const Json status = pod.value("status", Json::object());
  for (const auto& cs : status.value("containerStatuses", Json::array())) {
    const Json t = cs.value("state", Json::object()).value("terminated", Json::object());
    if (t.empty()) continue;
    std::string out = fmt::format("exit code {}", t.value("exitCode", -1));
    if (const std::string reason = json_string(t, "reason"); !reason.empty()) out += " (" + reason + ")";
    return out;
  }
  const std::string reason = json_string(status, "reason");
  const std::string message = json_string(status, "message");
  return reason.empty() ? std::string("no container status") : reason + (message.empty() ? "" : ": " + message);
}

class KubernetesBackend final : public ClusterBackend {
 public:
  explicit KubernetesBackend(KubernetesBackendOptions o)
      : ClusterBackend(o.api.name, "pod"), o_(std::move(o)), api_(o_.api) {
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
    units_[pod_name] = Unit{name, Clock::now(), false};
    log_->info("started worker {} (pod {})", name, pod_name);
  }

 private:
  std::vector<ExitedWorker> list() override {
    const Json list = api_.call("GET", pods_path_ + "?labelSelector=" + url_encode(selector_));
    std::vector<ExitedWorker> out;
    std::set<std::string> listed;
    for (const Json& pod : list.value("items", Json::array())) {
      const Json meta = pod.value("metadata", Json::object());
      const std::string pod_name = json_string(meta, "name");
      if (pod_name.empty()) continue;
      const Json annotations = meta.value("annotations", Json::object());
      if (const std::string pool = json_string(annotations, kPoolAnnotation); !pool.empty() && pool != o_.pool)
        continue;
      listed.insert(pod_name);
      std::string worker = json_string(annotations, kWorkerNameAnnotation);
      if (worker.empty()) worker = pod_name;
      const std::string phase = json_string(pod.value("status", Json::object()), "phase");
      const bool ended = phase == "Succeeded" || phase == "Failed";
      const auto it = units_.find(pod_name);
      if (it == units_.end()) {
        if (!ended) {
          const bool deleting = meta.contains("deletionTimestamp");
          units_[pod_name] = Unit{worker, Clock::now(), deleting};
          log_->info("adopted worker {} (pod {}, {}{})", worker, pod_name, phase, deleting ? ", being deleted" : "");
        } else if (!removal_pending(pod_name)) {
          log_->info("pod {} of worker {} ended ({}) under an earlier pool: deleting it", pod_name, worker, phase);
          request_removal(pod_name);
        }
        continue;
      }
      if (!ended) continue;
      out.push_back(ExitedWorker{worker, 0, phase == "Succeeded",
                                 fmt::format("pod {} {}: {}", pod_name, phase, termination(pod))});
      units_.erase(it);
      request_removal(pod_name);
    }
    for (auto& e : forget_unlisted(listed)) out.push_back(std::move(e));
    return out;
  }

  void remove(const std::string& pod_name) override {
    const Json options = {{"apiVersion", "v1"}, {"kind", "DeleteOptions"}, {"gracePeriodSeconds", grace_s()}};
    try {
      api_.call("DELETE", pods_path_ + "/" + url_encode(pod_name), &options, {200, 202});
    } catch (const ApiError& e) {
      if (e.status() != 404) throw;  // 404: gone already
    }
  }

  std::string stop_note() const override { return fmt::format("SIGTERM, SIGKILL after {} s", grace_s()); }

  long grace_s() const { return static_cast<long>((o_.kill_grace.count() + 999) / 1000); }

  // The PodTemplate's pod with our name, labels, annotations, restart
  // policy and the worker's identity in the `worker` container (else the first).
  Json pod_for(const std::string& name) {
    const auto now = Clock::now();
    if (!template_ || now >= template_read_ + kTemplateTtl) {
      try {
        template_ = api_.call("GET", template_path_);
      } catch (const ApiError& e) {
        if (e.status() != 404) throw;
        throw Error(errc::invalid_config,
                    fmt::format("{} (CONVEYOR_WORKERPOOL_KUBERNETES_POD_TEMPLATE={}: apply the PodTemplate of "
                                "deploy/kubernetes, or name the one you have)",
                                e.what(), o_.pod_template));
      }
      template_read_ = now;
    }
    const Json tmpl = template_->value("template", Json::object());
    Json spec = tmpl.value("spec", Json::object());
    if (!spec.contains("containers") || !spec["containers"].is_array() || spec["containers"].empty()) {
      throw Error(errc::invalid_config, "PodTemplate " + o_.pod_template + " has no containers");
    }
    const Json meta = tmpl.value("metadata", Json::object());
    Json labels = meta.value("labels", Json::object());
    labels[kNameLabel] = "conveyor-worker";
    labels[kManagedByLabel] = "conveyor-workerpool";
    labels[kPoolLabel] = label_value(o_.pool);
    Json annotations = meta.value("annotations", Json::object());
    annotations[kWorkerNameAnnotation] = name;
    annotations[kPoolAnnotation] = o_.pool;
    // The pool replaces workers; the kubelet must not restart one (a
    // drained worker that exits 0 is done).
    spec["restartPolicy"] = "Never";
    Json* container = &spec["containers"][0];
    for (Json& c : spec["containers"]) {
      if (json_string(c, "name") == "worker") container = &c;
    }
    static const std::set<std::string> ours = {"CONVEYOR_WORKER_NAME", "CONVEYOR_INSTANCE_ID", "CONVEYOR_WORKER_POOL"};
    Json env = Json::array();
    for (const Json& e : container->value("env", Json::array())) {
      if (!ours.contains(json_string(e, "name"))) env.push_back(e);
    }
    env.push_back({{"name", "CONVEYOR_WORKER_NAME"}, {"value", name}});
    env.push_back({{"name", "CONVEYOR_INSTANCE_ID"}, {"value", name}});
    env.push_back({{"name", "CONVEYOR_WORKER_POOL"}, {"value", o_.pool}});
    (*container)["env"] = env;
    return Json{{"apiVersion", "v1"},
                {"kind", "Pod"},
                {"metadata",
                 {{"name", dns_name(name)},
                  {"namespace", o_.namespace_name},
                  {"labels", labels},
                  {"annotations", annotations}}},
                {"spec", spec}};
  }

  KubernetesBackendOptions o_;
  ApiClient api_;
  std::string pods_path_;
  std::string template_path_;
  std::string selector_;
  std::optional<Json> template_;
  Clock::time_point template_read_{};
};

}  // namespace

std::unique_ptr<Backend> make_kubernetes_backend(KubernetesBackendOptions options) {
  return std::make_unique<KubernetesBackend>(std::move(options));
}

}  // namespace conveyor::workerpool
