#pragma once
// FAKES of the two orchestrator APIs the worker pool's cluster backends call,
// for tests on a machine where neither Kubernetes nor Nomad can run. Each
// implements only the requests the backends make, with the request and
// response JSON shapes of the published APIs (Kubernetes core/v1 Pod,
// PodList, PodTemplate, DeleteOptions, Status; Nomad /v1/job/:id/dispatch,
// /v1/jobs, /v1/job/:id), and runs every pod or dispatched job as a REAL
// process (the executable its image names), so the pool and its workers are
// real; only the orchestrator is fake.
//
// Not modelled: watches, resourceVersion preconditions, scheduling, nodes,
// allocations, evaluations. Faults can be injected: an HTTP status or a
// delay for the next N matching requests.
//
// Thread-safe: requests are served on the server's threads, a "kubelet"
// thread watches the processes; the accessors take the same lock.
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "conveyor/testing/testing.hpp"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace conveyor::testing {

// What both fakes share: the HTTP server, auth, faults, the request log and
// the process supervisor.
class FakeApiServer {
 public:
  struct Fault {
    std::string method;       // "" any
    std::string path_prefix;  // "" any
    int status = 0;           // 0: no status, only the delay
    std::chrono::milliseconds delay{0};
    int count = 1;
  };
  struct Request {
    std::string method;
    std::string path;  // decoded, without the query
    int status = 0;
    std::string note;  // what the fake did (e.g. "deleted running pod")
  };

  virtual ~FakeApiServer();
  FakeApiServer(const FakeApiServer&) = delete;
  FakeApiServer& operator=(const FakeApiServer&) = delete;

  // http(s)://127.0.0.1:<port>
  std::string url() const;
  // The next `count` requests matching method and path prefix get `status`
  // (with an error body in the API's shape) and/or wait `delay` first.
  void inject(Fault fault);
  void clear_faults();
  std::vector<Request> requests() const;

 protected:
  struct Options {
    std::filesystem::path cert_file;  // both set: HTTPS
    std::filesystem::path key_file;
  };
  explicit FakeApiServer(Options options);
  // Subclasses register routes on server() in their constructor, then call start().
  httplib::Server& server() { return *server_; }
  void start();
  void record(const std::string& method, const std::string& path, int status, const std::string& note);
  // Called by the supervisor thread every 50 ms with the lock held.
  virtual void tick() = 0;
  // An error answer in the API's shape.
  virtual std::string error_body(int status, const std::string& message) const = 0;
  virtual bool authorized(const std::string& authorization, const std::string& nomad_token) const = 0;
  // Called by subclasses' destructors: stops the server and the supervisor.
  void shut();

  mutable std::mutex mu_;

 private:
  void listen();

  Options options_;
  std::unique_ptr<httplib::Server> server_;
  int port_ = 0;
  std::thread listener_;
  std::thread supervisor_;
  bool stopping_ = false;
  std::condition_variable cv_;
  std::vector<Fault> faults_;
  std::vector<Request> requests_;
};

// A process a pod or a dispatched job runs.
struct FakeProcess {
  std::unique_ptr<ChildProcess> process;
  std::optional<int> exit_status;
  std::optional<std::chrono::steady_clock::time_point> kill_at;  // SIGKILL after a stop's grace
};

// ---------------------------------------------------------------- Kubernetes

class FakeKubernetes final : public FakeApiServer {
 public:
  struct Options {
    std::string token = "fake-kubernetes-token";
    std::string namespace_name = "conveyor";
    // Image repository (the image without registry and tag, e.g.
    // "conveyor-worker") -> the executable its container runs.
    std::map<std::string, std::filesystem::path> images;
    // envFrom sources: ConfigMaps and Secrets of the namespace.
    std::map<std::string, std::map<std::string, std::string>> config_maps;
    std::map<std::string, std::map<std::string, std::string>> secrets;
    std::filesystem::path log_dir;  // each pod's output in <dir>/<pod>.log
    std::filesystem::path cert_file;
    std::filesystem::path key_file;
  };
  struct Pod {
    std::string name;
    std::string phase;  // Pending, Running, Succeeded, Failed
    std::string image;
    int pid = 0;
    bool deleting = false;
    nlohmann::json manifest;  // as created
  };

  explicit FakeKubernetes(Options options);
  ~FakeKubernetes() override;

  void put_pod_template(const nlohmann::json& pod_template);
  void put_config_map(const std::string& name, std::map<std::string, std::string> data);
  std::vector<Pod> pods() const;
  // A kubeconfig (JSON form) for this server, its token, namespace and CA.
  std::filesystem::path write_kubeconfig(const std::filesystem::path& file, const std::string& ca_file = "") const;

 private:
  void tick() override;
  std::string error_body(int status, const std::string& message) const override;
  bool authorized(const std::string& authorization, const std::string& nomad_token) const override;
  nlohmann::json pod_json(const std::string& name) const;
  void start_pod(const std::string& name);
  std::string invalid_pod(const nlohmann::json& pod, const std::string& ns) const;
  // The routes' handlers, each under mu_.
  void read_pod_template(const httplib::Request& req, httplib::Response& res);
  void create_pod(const httplib::Request& req, httplib::Response& res);
  void list_pods(const httplib::Request& req, httplib::Response& res);
  void delete_pod(const httplib::Request& req, httplib::Response& res);

  Options o_;
  struct Entry {
    nlohmann::json manifest;
    std::string phase = "Pending";
    std::string waiting_reason;
    FakeProcess proc;
    std::optional<std::string> deletion_timestamp;
    std::string created;
    std::string uid;
  };
  std::map<std::string, Entry> pods_;
  std::map<std::string, nlohmann::json> templates_;
  std::uint64_t resource_version_ = 1;
};

// ---------------------------------------------------------------- Nomad

class FakeNomad final : public FakeApiServer {
 public:
  struct Options {
    std::string token = "fake-nomad-token";
    std::filesystem::path log_dir;
    std::filesystem::path cert_file;
    std::filesystem::path key_file;
  };
  // A registered parameterized batch job: its task's executable and env,
  // with ${NOMAD_META_<key>} interpolated at dispatch.
  struct ParameterizedJob {
    std::string id;
    std::string namespace_name = "default";
    std::string group = "worker";
    std::vector<std::string> meta_required;
    std::filesystem::path executable;
    std::map<std::string, std::string> env;
    std::chrono::milliseconds kill_timeout{5000};
  };
  struct Dispatch {
    std::string id;
    std::string status;  // pending, running, dead
    bool stopped = false;
    int pid = 0;
    std::map<std::string, std::string> meta;
  };

  explicit FakeNomad(Options options);
  ~FakeNomad() override;

  void register_job(ParameterizedJob job);
  std::vector<Dispatch> dispatches() const;

 private:
  void tick() override;
  std::string error_body(int status, const std::string& message) const override;
  bool authorized(const std::string& authorization, const std::string& nomad_token) const override;
  nlohmann::json stub(const std::string& id) const;
  void start_dispatched(const std::string& id, const ParameterizedJob& job);
  void job_not_found(const httplib::Request& req, httplib::Response& res);
  // The routes' handlers, each under mu_.
  void dispatch_job(const httplib::Request& req, httplib::Response& res);
  void list_jobs(const httplib::Request& req, httplib::Response& res);
  void read_job(const httplib::Request& req, httplib::Response& res);
  void stop_job(const httplib::Request& req, httplib::Response& res);

  Options o_;
  struct Entry {
    std::string parent;
    std::string namespace_name;
    std::map<std::string, std::string> meta;
    FakeProcess proc;
    bool stopped = false;
    std::uint64_t index = 0;
  };
  std::map<std::string, ParameterizedJob> jobs_;
  std::map<std::string, Entry> dispatched_;
  std::uint64_t index_ = 100;
};

}  // namespace conveyor::testing
