#pragma once
// Where the worker pool's workers run. The pool decides how many workers
// there should be from the database; a Backend only starts, stops and
// collects the worker processes it started itself ("own" workers). Workers
// the pool did not start (a previous pool's, or started by hand) are seen
// and drained through their conveyor.worker rows only.
//
// `local` runs workers as child processes of the pool; `kubernetes` as one
// Pod each (kubernetes_backend.cpp); `nomad` as one dispatch each of a
// parameterized job (nomad_backend.cpp). The cluster backends list their
// workers from the orchestrator every reap(), so they also adopt the workers
// an earlier pool started, and leave them running on shutdown().
//
// Not thread-safe: a Backend is owned and called by the pool's loop thread.
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cluster_api.hpp"
#include "conveyor/config/config.hpp"

namespace conveyor::workerpool {

using Clock = std::chrono::steady_clock;

// A worker this backend started and that has not been collected yet.
struct OwnWorker {
  std::string name;  // its CONVEYOR_WORKER_NAME, the name of its conveyor.worker row
  int pid = 0;       // 0 where the platform has no local pid
  Clock::time_point spawned{};
  bool terminating = false;  // terminate() was called: no longer counted as capacity
};

// An own worker that has ended since the previous reap().
struct ExitedWorker {
  std::string name;
  int pid = 0;
  bool success = false;  // exit code 0 (a drained or stopped worker exits 0)
  std::string how;       // "exit code 0", "killed by SIGKILL"
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view kind() const = 0;  // "local", "kubernetes", "nomad"
  // Whether an exit reap() reports means the worker's process has certainly
  // ended (the pool is its parent: waitpid). Then the pool marks its row
  // lost at once (model::mark_workers_gone). The cluster backends say no:
  // an orchestrator may report a worker gone whose node is only unreachable,
  // so their workers are left to the heartbeat rule.
  virtual bool exits_are_certain() const { return false; }
  // Starts one worker named `name`. Throws conveyor::Error when it cannot.
  virtual void spawn(const std::string& name) = 0;
  // The worker's row was just set `draining` (the worker stops claiming and
  // exits by itself once idle). A backend whose platform would restart an
  // exiting worker tells the platform here; the local backend has nothing to do.
  virtual void drain(const std::string& name) = 0;
  // Stops an own worker that cannot be drained (hung: marked lost while its
  // process runs; or never registered): SIGTERM now, SIGKILL after the
  // backend's kill grace. Never used to scale down a busy worker.
  virtual void terminate(const std::string& name) = 0;
  // Collects own workers that have exited (and escalates terminate()s whose
  // grace has passed).
  virtual std::vector<ExitedWorker> reap() = 0;
  // Own workers still running.
  virtual std::vector<OwnWorker> workers() const = 0;
  // On the pool's SIGTERM: asks every own worker to stop (they drain: finish
  // or requeue their jobs), waits for them until `deadline`, kills what is
  // left, and collects them all.
  virtual std::vector<ExitedWorker> shutdown(Clock::time_point deadline) = 0;
};

// What a LocalBackend needs; filled from the pool's configuration by make_backend().
// The database URL of the workers (CONVEYOR_WORKER_DATABASE_URL, else the pool's).
struct WorkerDatabase {
  std::string url;             // used when `file` is empty
  std::filesystem::path file;  // a secret file holding the URL
};

struct LocalBackendOptions {
  std::filesystem::path executable;  // conveyor-worker
  std::string pool;                  // CONVEYOR_WORKER_POOL of the workers
  // The pool's environment (config::process_environment()); the workers get
  // it minus the pool's own keys, plus their name, instance id, pool and port.
  std::map<std::string, std::string> environment;
  // How the workers reach the database, as the worker role: passed to them
  // as CONVEYOR_DATABASE_URL, or as CONVEYOR_DATABASE_URL_FILE when the pool
  // read it from a file (so the secret is not copied into the environment).
  WorkerDatabase database;
  // The pool's --env-file files, passed on to every worker in the same order.
  std::vector<std::filesystem::path> env_files;
  std::filesystem::path log_dir;  // empty: the workers inherit the pool's stdout/stderr
  std::chrono::milliseconds kill_grace{10000};
  std::string instance_id;  // for the private directory of filtered env files
};

// The pool's own keys: a worker would warn about them in its environment
// and refuse them in an env file.
bool is_pool_only_key(std::string_view key);

// The environment of a worker named `name`: `environment` minus the pool's
// own keys and the per-process ones, plus CONVEYOR_WORKER_NAME and
// CONVEYOR_INSTANCE_ID (= name), CONVEYOR_WORKER_POOL, CONVEYOR_HTTP_PORT=0
// and the worker's database (`database`; the pool's CONVEYOR_DATABASE_URL and
// CONVEYOR_DATABASE_URL_FILE are replaced; nothing when `database` is empty).
std::map<std::string, std::string> worker_environment(const std::map<std::string, std::string>& environment,
                                                      const std::string& name, const std::string& pool,
                                                      const WorkerDatabase& database = {});
// CONVEYOR_WORKER_DATABASE_URL of `config` (as its file when it was read from
// one); empty, with `*shared` set, when it is not set: the workers then
// inherit the pool's own database URL.
WorkerDatabase worker_database(const config::Config& config, bool* shared);

std::unique_ptr<Backend> make_local_backend(LocalBackendOptions options);

struct KubernetesBackendOptions {
  ApiEndpoint api;                              // the API server, bearer token, CA
  std::string namespace_name;                   // where the pool's pods and the PodTemplate live
  std::string pod_template;                     // PodTemplate name (CONVEYOR_WORKERPOOL_KUBERNETES_POD_TEMPLATE)
  std::string pool;                             // CONVEYOR_WORKER_POOL
  std::chrono::milliseconds kill_grace{10000};  // gracePeriodSeconds of a DELETE
  std::filesystem::path private_dir;            // files written from a kubeconfig; removed with the backend
};
std::unique_ptr<Backend> make_kubernetes_backend(KubernetesBackendOptions options);

struct NomadBackendOptions {
  ApiEndpoint api;  // NOMAD address, X-Nomad-Token
  std::string namespace_name = "default";
  std::string region;  // empty: the agent's
  std::string job;     // the parameterized worker job (CONVEYOR_WORKERPOOL_NOMAD_JOB)
  std::string pool;
};
std::unique_ptr<Backend> make_nomad_backend(NomadBackendOptions options);

// Where the kubernetes backend finds its API server: CONVEYOR_KUBECONFIG
// (the JSON form of a kubeconfig: its current context's server, CA, token
// or client certificate, namespace), else in-cluster (KUBERNETES_SERVICE_HOST
// and _PORT, the service account's token, CA and namespace under
// CONVEYOR_WORKERPOOL_KUBERNETES_SERVICE_ACCOUNT_DIR). Throws
// Error(invalid_config) naming the key or file that is wrong. Data fields of
// the kubeconfig (certificate-authority-data, ...) are written to 0600
// files in a private 0700 directory (private_dir).
KubernetesBackendOptions kubernetes_options(const config::Config& config);
NomadBackendOptions nomad_options(const config::Config& config);
// The backend CONVEYOR_WORKERPOOL_BACKEND names, built from `config`.
// Throws Error(invalid_config) naming what is wrong (conveyor-worker not
// found for `local`; no API server, a bad kubeconfig for `kubernetes`).
std::unique_ptr<Backend> make_backend(const config::Config& config, const std::string& instance_id,
                                      const std::vector<std::filesystem::path>& env_files);

}  // namespace conveyor::workerpool
