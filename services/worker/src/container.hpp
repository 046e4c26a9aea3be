#pragma once
// Jobs whose type names an image run as containers (issue 11): the worker
// resolves the image (pulling it when missing), then runs
//   <runtime> run --rm --name conveyor-job-<id>-<attempt> --label ... <image id> <argv...>
// attached, so the container's stdout and stderr reach logs.txt through the
// same pipes as a process's. The runtime is podman or docker, as a command.
//
// A container outlives its `run` client: cancel, timeout and drain stop it
// with `<runtime> stop -t <grace>`, then `rm -f`; a worker killed -9 leaves
// it running: every worker, at start and then periodically, removes what no
// `started` attempt owns any more, and before a job's second or later run
// starts, whatever container an earlier run of that job left. Labels carry the installation, so a
// worker never touches another installation's containers on a shared host.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "conveyor/model/job_type.hpp"
#include "process.hpp"

namespace conveyor::worker {

// Label keys on every container a worker starts.
inline constexpr const char* kLabelInstallation = "io.conveyor.installation";
inline constexpr const char* kLabelJobId = "io.conveyor.job-id";
inline constexpr const char* kLabelJobType = "io.conveyor.job-type";
inline constexpr const char* kLabelAttempt = "io.conveyor.attempt";
inline constexpr const char* kLabelWorker = "io.conveyor.worker";

struct ContainerRuntime {
  std::string program;  // absolute path of podman or docker
  std::string kind;     // "podman" | "docker"
};

// CONVEYOR_CONTAINER_RUNTIME: "podman", "docker" or a path to either;
// empty: podman when on PATH, else docker. nullopt when none is found;
// `why` then says what was looked for.
std::optional<ContainerRuntime> find_runtime(const std::string& configured, std::string& why);

// An attempt that could not start for a reason of Conveyor's (not the
// job's): the job ends internal_error with this subtype ("image_pull",
// "container_runtime").
class ContainerError : public std::runtime_error {
 public:
  ContainerError(std::string subtype, const std::string& message)
      : std::runtime_error(message), subtype_(std::move(subtype)) {}
  const std::string& subtype() const { return subtype_; }

 private:
  std::string subtype_;
};

struct ContainerSpec {
  std::string installation;  // conveyor.installation.id
  std::int64_t job_id = 0;
  int attempt = 0;
  std::string job_type;
  std::string worker;
  std::string image;                       // what to run: the image id from resolve_image
  std::vector<std::string> argv;           // empty: the image's own entrypoint and command
  std::map<std::string, std::string> env;  // the container's whole environment (besides the image's)
  // Set: the variables of `env` go through this file (--env-file), so that
  // their values are not in the runtime client's command line, which every
  // user of the host can read in /proc. A value with a newline cannot be in
  // the file and stays --env. start_container writes it (mode 0600).
  std::filesystem::path env_file;
  std::filesystem::path env_dir;          // where start_container writes it; empty: $TMPDIR or /tmp
  std::filesystem::path host_output_dir;  // mounted read-write at model::kContainerOutputDir
  std::vector<std::string> inputs;        // host paths, mounted read-only at the same path
  model::Resources resources;
  bool network = false;
  std::string user;           // "uid:gid", never root
  bool keep_id = false;       // rootless podman: --userns=keep-id, so `user` is the host's
  std::string cgroup_parent;  // empty: none (and no cgroup statistics)
};

// "conveyor-job-<id>-<attempt>"
std::string container_name(std::int64_t job_id, int attempt);
// "/<base>/<installation>-job-<id>-<attempt>": a cgroup of its own per attempt,
// whose counters still hold the container's usage once it is gone.
std::string container_cgroup(const std::string& base, const std::string& installation, std::int64_t job_id,
                             int attempt);

// The `run` command line (without the runtime program), in the order given
// to the runtime. Pure; unit-tested.
std::vector<std::string> run_arguments(const ContainerSpec& spec);

struct ImageInfo {
  std::string reference;  // as asked, e.g. localhost/tool:v2
  std::string id;         // the image id (sha256:...), what is run
  std::string digest;     // the manifest digest; the id when the runtime has none
};

// Settings shared by the runtime calls of one worker.
struct RuntimeCalls {
  ContainerRuntime runtime;
  std::map<std::string, std::string> env;  // the runtime client's environment
  std::chrono::milliseconds pull_timeout{600'000};
  std::chrono::milliseconds call_timeout{60'000};
};

// Inspects `reference`; pulls it when it is not present, then inspects
// again. Throws ContainerError("image_pull") naming the image and what the
// runtime said. `stop` aborts a pull (cancel, shutdown).
ImageInfo resolve_image(const RuntimeCalls& calls, const std::string& reference, const std::atomic<StopReason>& stop);

// One container's run (container.cpp), between start_container and
// finish_container.
class ContainerRun;
// Called on the reactor thread once the runtime client has exited: must
// return at once (hand both to a thread that calls finish_container).
using ContainerExit = std::function<void(std::shared_ptr<ContainerRun> run, ProcessOutcome client)>;

// Starts the container attached on the Reactor, like Reactor::start: its
// output goes to `on_line`, cancel, timeout and shutdown stop it through
// the runtime (stop -t, then rm -f; from short-lived helper threads, only
// while it is being stopped). `calls` and `stop` must outlive the run.
// Throws ContainerError when its environment file cannot be written.
std::shared_ptr<ContainerRun> start_container(const RuntimeCalls& calls, const ContainerSpec& spec,
                                              const ProcessOptions& process, const std::atomic<StopReason>& stop,
                                              LineSink on_line, ContainerExit on_exit);
// The container's outcome from its client's: removes what an abnormal end
// left, fills outcome.usage from the spec's cgroup (and removes it). Exit
// code 125 from the runtime itself throws ContainerError("container_runtime")
// with its message. Blocks (runtime calls): not on the reactor thread.
ProcessOutcome finish_container(ContainerRun& run, ProcessOutcome client);

// A container of this installation found on the host.
struct LabeledContainer {
  std::string id;
  std::string name;
  std::int64_t job_id = 0;
  int attempt = 0;
};
// The containers of `installation` (by label), running or not; those of
// one job when job_id is given. `stop` (set) aborts the runtime call.
std::vector<LabeledContainer> list_containers(const RuntimeCalls& calls, const std::string& installation,
                                              std::optional<std::int64_t> job_id = std::nullopt,
                                              const std::atomic<StopReason>* stop = nullptr);
// Removes them (rm --force), with their cgroups under `cgroup_base`.
// Returns the names removed.
std::vector<std::string> remove_containers(const RuntimeCalls& calls, const std::vector<LabeledContainer>& containers,
                                           const std::string& cgroup_base, const std::string& installation,
                                           const std::atomic<StopReason>* stop = nullptr);

// The environment of the runtime client (podman, docker) the worker runs:
// the worker's own without its configuration (CONVEYOR_*) and database
// settings (PG*). The client needs the rest (XDG_RUNTIME_DIR, DOCKER_HOST,
// CONTAINERS_CONF, proxies for pulls); none of it reaches a container,
// whose environment is the env file's (see start_container).
std::map<std::string, std::string> runtime_client_environment(const std::map<std::string, std::string>& worker_env);

// The text of a container's environment file: KEY=VALUE lines of the
// variables of `env` whose value has no newline (those go on the command
// line, see ContainerSpec::env_file) and whose name is a variable name (a
// line without '=' would copy the client's own variable into the container).
std::string env_file_text(const std::map<std::string, std::string>& env);

// Environment files (ContainerSpec::env_dir) are named <prefix>XXXXXX.
inline constexpr const char* kEnvFilePrefix = "conveyor-job-env.";

// The runtime's cgroup manager ("cgroupfs", "systemd"), "" when it cannot be
// asked. A cgroup parent path (ContainerSpec::cgroup_parent) works with
// cgroupfs only; systemd wants slice names.
std::string cgroup_manager(const RuntimeCalls& calls);

// Reads cpu and peak memory of a cgroup (v1: cpuacct.stat and
// memory.max_usage_in_bytes; v2: cpu.stat and memory.peak), then removes it.
Usage take_cgroup_usage(const std::string& cgroup);

}  // namespace conveyor::worker
