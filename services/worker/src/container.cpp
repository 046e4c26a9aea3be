#include "container.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "conveyor/model/job_type.hpp"
#include "conveyor/text/text.hpp"

namespace conveyor::worker {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// What one call of the runtime client printed (the last lines of each stream).
struct CallResult {
  ProcessOutcome outcome;
  std::vector<std::string> out;
  std::deque<std::string> err;
  bool ok() const { return outcome.exit_code == 0 && !outcome.timed_out; }
  std::string error_text() const {
    std::string s;
    for (const auto& l : err) {
      if (l.empty()) continue;
      if (!s.empty()) s += "; ";
      s += l;
    }
    if (s.empty()) {
      if (outcome.spawn_error) return *outcome.spawn_error;
      if (outcome.timed_out) return "timed out";
      s = fmt::format("exit code {}", outcome.exit_code.value_or(-1));
    }
    return s;
  }
};

constexpr std::size_t kMaxOutLines = 10'000;
constexpr std::size_t kMaxErrLines = 8;

CallResult call(const RuntimeCalls& calls, std::vector<std::string> args, std::chrono::milliseconds timeout,
                const std::atomic<StopReason>& stop) {
  ProcessOptions o;
  o.argv.push_back(calls.runtime.program);
  o.argv.insert(o.argv.end(), std::make_move_iterator(args.begin()), std::make_move_iterator(args.end()));
  o.env = calls.env;
  o.cwd = "/";
  o.timeout = timeout;
  o.kill_grace = std::chrono::milliseconds(2000);
  o.shutdown_kill_grace = o.kill_grace;
  CallResult r;
  r.outcome = run_process(o, stop, [&](std::string_view stream, std::string_view line) {
    if (stream == "stdout") {
      if (r.out.size() < kMaxOutLines) r.out.emplace_back(line);
    } else {
      r.err.emplace_back(line.substr(0, 500));
      if (r.err.size() > kMaxErrLines) r.err.pop_front();
    }
  });
  return r;
}

const std::atomic<StopReason>& never_stop() {
  static const std::atomic<StopReason> never{StopReason::none};
  return never;
}

CallResult call(const RuntimeCalls& calls, std::vector<std::string> args,
                const std::atomic<StopReason>& stop = never_stop()) {
  return call(calls, std::move(args), calls.call_timeout, stop);
}

// `rm` of containers by id or name, forced, without the stop timeout:
// podman's flags, or docker's (which has no --ignore or --time).
std::vector<std::string> rm_args(const RuntimeCalls& calls) {
  if (calls.runtime.kind == "docker") return {"rm", "--force"};
  return {"rm", "--force", "--ignore", "--time", "0"};
}

// A container that is already gone is what rm wanted.
bool rm_ok(const CallResult& r) {
  if (r.ok()) return true;
  for (const auto& l : r.err) {
    if (l.find("No such container") != std::string::npos || l.find("no such container") != std::string::npos) {
      return true;
    }
  }
  return false;
}

// A --mount value: the runtimes split it at commas, so a path with one
// cannot be mounted (one with ':' can, unlike --volume).
std::string bind_mount(const std::string& source, const std::string& target, bool read_only) {
  for (const auto* p : {&source, &target}) {
    if (p->find(',') != std::string::npos || p->find('\n') != std::string::npos) {
      throw ContainerError("container_runtime",
                           "cannot mount '" + *p + "' into the container: the path holds a comma or a newline");
    }
  }
  return "type=bind,source=" + source + ",target=" + target + (read_only ? ",readonly" : "");
}

std::string joined(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += l + "\n";
  return s;
}

// `image inspect` of podman and docker: an array of objects.
std::optional<ImageInfo> inspect_image(const RuntimeCalls& calls, const std::string& reference, std::string& error) {
  auto r = call(calls, {"image", "inspect", reference});  // a JSON array, podman and docker
  if (!r.ok()) {
    error = r.error_text();
    return std::nullopt;
  }
  try {
    const json a = text::parse_json(joined(r.out), text::JsonLimits{.max_bytes = 4 * 1024 * 1024});
    if (!a.is_array() || a.empty() || !a[0].is_object()) {
      error = "unexpected output of image inspect";
      return std::nullopt;
    }
    const json& i = a[0];
    ImageInfo info;
    info.reference = reference;
    info.id = i.value("Id", std::string());
    if (!info.id.empty() && info.id.rfind("sha256:", 0) != 0) info.id = "sha256:" + info.id;
    info.digest = i.value("Digest", std::string());
    if (info.digest.empty()) {
      if (auto d = i.find("RepoDigests"); d != i.end() && d->is_array() && !d->empty() && (*d)[0].is_string()) {
        const auto rd = (*d)[0].get<std::string>();
        const auto at = rd.find('@');
        info.digest = at == std::string::npos ? rd : rd.substr(at + 1);
      }
    }
    if (info.digest.empty()) info.digest = info.id;
    if (info.id.empty()) {
      error = "image inspect gave no Id";
      return std::nullopt;
    }
    return info;
  } catch (const std::exception& e) {
    error = std::string("cannot read image inspect: ") + e.what();
    return std::nullopt;
  }
}

std::optional<std::string> read_file(const fs::path& p) {
  std::ifstream in(p);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// "key value" lines (cpuacct.stat, cpu.stat).
std::optional<std::int64_t> stat_value(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  std::string k;
  std::int64_t v = 0;
  while (in >> k >> v) {
    if (k == key) return v;
  }
  return std::nullopt;
}

std::optional<std::int64_t> number_file(const fs::path& p) {
  auto t = read_file(p);
  if (!t) return std::nullopt;
  try {
    return std::stoll(*t);
  } catch (...) {
    return std::nullopt;
  }
}

// KEY=VALUE lines of the variables without a newline, in a file only this
// user can read (mkstemp: 0600), removed when it goes out of scope.
class EnvFile {
 public:
  EnvFile(const std::map<std::string, std::string>& env, const std::filesystem::path& dir) {
    std::string base = dir.string();
    if (base.empty()) {
      const char* tmp = std::getenv("TMPDIR");
      base = tmp && *tmp ? tmp : "/tmp";
    }
    std::string templ = base + "/" + kEnvFilePrefix + "XXXXXX";
    const int fd = ::mkstemp(templ.data());
    if (fd < 0) {
      throw ContainerError("container_runtime",
                           "cannot create the container's environment file in " + templ + ": " + std::strerror(errno));
    }
    path_ = templ;
    const std::string text = env_file_text(env);
    const char* p = text.data();
    std::size_t left = text.size();
    while (left > 0) {
      const ssize_t n = ::write(fd, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        ::close(fd);
        ::unlink(path_.c_str());
        throw ContainerError("container_runtime", "cannot write the container's environment file " + path_.string() +
                                                      ": " + std::strerror(errno));
      }
      p += n;
      left -= static_cast<std::size_t>(n);
    }
    ::close(fd);
  }
  ~EnvFile() {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  EnvFile(const EnvFile&) = delete;
  EnvFile& operator=(const EnvFile&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// podman passes these of its own environment into every container
// (--http-proxy, on by default); a proxy URL may hold a password.
constexpr const char* kProxyVariables[] = {"http_proxy", "https_proxy", "ftp_proxy", "no_proxy",
                                           "HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY"};

bool env_name(std::string_view k) {
  if (k.empty() || std::isdigit(static_cast<unsigned char>(k.front()))) return false;
  return std::all_of(k.begin(), k.end(),
                     [](char c) { return c == '_' || std::isalnum(static_cast<unsigned char>(c)); });
}

bool cgroup_v2() { return fs::exists("/sys/fs/cgroup/cgroup.controllers"); }

// Removes a cgroup directory tree, children first (only empty cgroups go).
void remove_cgroup_dir(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_directory(ec)) remove_cgroup_dir(e.path());
  }
  ::rmdir(dir.c_str());
}

void remove_cgroup(const std::string& cgroup) {
  if (cgroup.empty()) return;
  const std::string rel = cgroup.front() == '/' ? cgroup.substr(1) : cgroup;
  if (cgroup_v2()) {
    remove_cgroup_dir(fs::path("/sys/fs/cgroup") / rel);
    return;
  }
  std::error_code ec;
  for (const auto& ctrl : fs::directory_iterator("/sys/fs/cgroup", ec)) {
    if (ctrl.is_directory(ec) && !ctrl.is_symlink(ec)) remove_cgroup_dir(ctrl.path() / rel);
  }
}

}  // namespace

std::optional<ContainerRuntime> find_runtime(const std::string& configured, std::string& why) {
  auto on_path = [](const std::string& name) -> std::optional<std::string> {
    if (name.find('/') != std::string::npos) {
      if (::access(name.c_str(), X_OK) == 0) return name;
      return std::nullopt;
    }
    const char* path_env = std::getenv("PATH");
    std::string path = path_env ? path_env : "/usr/local/bin:/usr/bin:/bin";
    std::istringstream in(path);
    std::string dir;
    while (std::getline(in, dir, ':')) {
      const std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
      if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    }
    return std::nullopt;
  };
  auto kind_of = [](const std::string& program) {
    return fs::path(program).filename().string().find("docker") != std::string::npos ? "docker" : "podman";
  };
  if (!configured.empty()) {
    if (auto p = on_path(configured)) return ContainerRuntime{*p, kind_of(*p)};
    why = "CONVEYOR_CONTAINER_RUNTIME is '" + configured + "', which is not an executable on PATH";
    return std::nullopt;
  }
  for (const char* name : {"podman", "docker"}) {
    if (auto p = on_path(name)) return ContainerRuntime{*p, kind_of(*p)};
  }
  why =
      "no container runtime: neither podman nor docker is on PATH (install podman, or set "
      "CONVEYOR_CONTAINER_RUNTIME)";
  return std::nullopt;
}

std::map<std::string, std::string> runtime_client_environment(const std::map<std::string, std::string>& worker_env) {
  std::map<std::string, std::string> env;
  for (const auto& [k, v] : worker_env) {
    if (!model::reserved_env_name(k)) env.emplace(k, v);
  }
  return env;
}

std::string env_file_text(const std::map<std::string, std::string>& env) {
  std::string text;
  for (const auto& [k, v] : env) {
    if (env_name(k) && v.find('\n') == std::string::npos) text += k + "=" + v + "\n";
  }
  return text;
}

std::string container_name(std::int64_t job_id, int attempt) {
  return fmt::format("conveyor-job-{}-{}", job_id, attempt);
}

std::string container_cgroup(const std::string& base, const std::string& installation, std::int64_t job_id,
                             int attempt) {
  if (base.empty()) return {};
  std::string b = base;
  while (!b.empty() && b.back() == '/') b.pop_back();
  if (b.empty() || b.front() != '/') b = "/" + b;
  return fmt::format("{}/{}-job-{}-{}", b, installation, job_id, attempt);
}

std::vector<std::string> run_arguments(const ContainerSpec& s) {
  std::vector<std::string> a = {"run", "--rm", "--name", container_name(s.job_id, s.attempt)};
  auto label = [&](const char* k, const std::string& v) {
    a.push_back("--label");
    a.push_back(std::string(k) + "=" + v);
  };
  label(kLabelInstallation, s.installation);
  label(kLabelJobId, std::to_string(s.job_id));
  label(kLabelJobType, s.job_type);
  label(kLabelAttempt, std::to_string(s.attempt));
  label(kLabelWorker, s.worker);
  // Signals go through `stop`, not through the client; the image was
  // resolved (and pulled) before; nothing runs as root or gains privileges.
  a.insert(a.end(), {"--sig-proxy=false", "--pull=never", "--user", s.user, "--cap-drop=ALL", "--security-opt",
                     "no-new-privileges"});
  if (s.keep_id) a.push_back("--userns=keep-id");
  a.push_back("--network");
  a.push_back(s.network ? "bridge" : "none");
  if (s.resources.cpus > 0) {
    a.push_back("--cpus");
    a.push_back(fmt::format("{:g}", s.resources.cpus));
  }
  if (s.resources.memory_mb > 0) {
    a.push_back("--memory");
    a.push_back(fmt::format("{}m", s.resources.memory_mb));
  }
  if (!s.cgroup_parent.empty()) {
    a.push_back("--cgroup-parent");
    a.push_back(s.cgroup_parent);
  }
  std::string out = model::kContainerOutputDir;
  if (out.size() > 1 && out.back() == '/') out.pop_back();
  std::string host_out = s.host_output_dir.string();
  while (host_out.size() > 1 && host_out.back() == '/') host_out.pop_back();
  a.push_back("--mount");
  a.push_back(bind_mount(host_out, out, false));
  std::set<std::string> mounted;
  for (std::string in : s.inputs) {
    while (in.size() > 1 && in.back() == '/') in.pop_back();
    if (in.empty() || !mounted.insert(in).second) continue;
    a.push_back("--mount");
    a.push_back(bind_mount(in, in, true));
  }
  a.push_back("--workdir");
  a.push_back(out);
  if (!s.env_file.empty()) {
    a.push_back("--env-file");
    a.push_back(s.env_file.string());
  }
  for (const auto& [k, v] : s.env) {
    if (!s.env_file.empty() && v.find('\n') == std::string::npos) continue;
    a.push_back("--env");
    a.push_back(k + "=" + v);
  }
  a.push_back(s.image);
  a.insert(a.end(), s.argv.begin(), s.argv.end());
  return a;
}

ImageInfo resolve_image(const RuntimeCalls& calls, const std::string& reference, const std::atomic<StopReason>& stop) {
  std::string error;
  if (auto info = inspect_image(calls, reference, error)) return *info;
  auto pulled = call(calls, {"pull", "--quiet", reference}, calls.pull_timeout, stop);
  if (stop.load() != StopReason::none) {
    throw ContainerError("image_pull", "pulling image '" + reference + "' was interrupted");
  }
  if (!pulled.ok()) {
    throw ContainerError("image_pull", "cannot pull image '" + reference + "': " + pulled.error_text());
  }
  auto info = inspect_image(calls, reference, error);
  if (!info) {
    throw ContainerError("image_pull", "image '" + reference + "' pulled but cannot be inspected: " + error);
  }
  return *info;
}

namespace {

// The threads a container's stop hooks start: joined when it ends,
// whatever way it ends. A helper never throws (a failure is logged in the
// attempt's outcome by what follows: the kill, then rm).
class Helpers {
 public:
  ~Helpers() { join(); }
  void start(std::function<void()> f) {
    std::lock_guard lock(mutex_);
    threads_.emplace_back([f = std::move(f)] {
      try {
        f();
      } catch (...) {
      }
    });
  }
  void join() {
    std::vector<std::thread> threads;
    {
      std::lock_guard lock(mutex_);
      threads.swap(threads_);
    }
    for (auto& t : threads) t.join();
  }

 private:
  std::mutex mutex_;
  std::vector<std::thread> threads_;
};

}  // namespace

// One container's run, from start_container to finish_container: what its
// stop hooks (on the reactor thread), their helper threads and its end
// share. Owned through shared_ptr by whoever waits for it.
class ContainerRun {
 public:
  ContainerRun(const RuntimeCalls& runtime, const ContainerSpec& spec)
      : calls(runtime),
        name(container_name(spec.job_id, spec.attempt)),
        cgroup(spec.cgroup_parent),
        env_file(spec.env, spec.env_dir) {}

  const RuntimeCalls& calls;
  const std::string name;
  const std::string cgroup;
  // The environment file: private to this worker's user, removed after the run.
  EnvFile env_file;
  std::atomic<bool> client_exited{false};
  std::deque<std::string> last_err;  // what the runtime said, should it fail itself (reactor thread, then the finisher)
  Helpers helpers;                   // last: joined before the rest goes
};

std::shared_ptr<ContainerRun> start_container(const RuntimeCalls& calls, const ContainerSpec& spec,
                                              const ProcessOptions& process, const std::atomic<StopReason>& stop,
                                              LineSink on_line, ContainerExit on_exit) {
  auto run = std::make_shared<ContainerRun>(calls, spec);
  ContainerSpec with_file = spec;
  with_file.env_file = run->env_file.path();
  ProcessOptions o = process;
  o.argv = {calls.runtime.program};
  const auto args = run_arguments(with_file);
  o.argv.insert(o.argv.end(), args.begin(), args.end());
  // The container's environment is the env file's: the client's proxy
  // settings stay out of it (a job that needs a proxy has its type say so).
  o.env = calls.env;
  for (const char* k : kProxyVariables) o.env.erase(k);

  // Stop requests run the runtime in the background (the hooks are called
  // on the reactor thread and return at once): the reactor keeps reading
  // the container's output meanwhile. A stop asked while the container is
  // still being created finds no container: it is asked again until it is
  // done or the client has exited. The hooks hold the run by a plain
  // pointer: its owner keeps it until finish_container, after the exit.
  ContainerRun* r = run.get();
  o.terminate = [r](std::chrono::milliseconds grace) {
    // Whole seconds, rounded down: the container is killed within the grace.
    const auto seconds = std::max<std::int64_t>(0, grace.count() / 1000);
    r->helpers.start([r, seconds] {
      for (int i = 0; i < 50 && !r->client_exited; ++i) {
        if (call(r->calls, {"stop", "--time", std::to_string(seconds), r->name}).ok()) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    });
  };
  o.kill = [r] {
    r->helpers.start([r] {
      auto a = rm_args(r->calls);
      a.push_back(r->name);
      call(r->calls, std::move(a));
    });
  };
  // The runtime's own stop timer kills the container within the grace; the
  // client is killed (and the container removed) only if it still waits.
  o.kill_margin = std::chrono::milliseconds(1500);

  Reactor::instance().start(
      std::move(o), &stop,
      [r, on_line = std::move(on_line)](std::string_view stream, std::string_view line) {
        on_line(stream, line);
        if (stream == "stderr") {
          r->last_err.emplace_back(line.substr(0, 500));
          if (r->last_err.size() > 3) r->last_err.pop_front();
        }
      },
      [run, on_exit = std::move(on_exit)](ProcessOutcome outcome) mutable {
        run->client_exited = true;
        on_exit(std::move(run), std::move(outcome));
      });
  return run;
}

ProcessOutcome finish_container(ContainerRun& run, ProcessOutcome outcome) {
  const RuntimeCalls& calls = run.calls;
  run.client_exited = true;
  run.helpers.join();
  // Gone already after a normal end (--rm). Anything else may have left it.
  const bool abnormal = outcome.timed_out || outcome.stopped != StopReason::none || outcome.term_signal ||
                        outcome.exit_code.value_or(0) >= 125;
  if (abnormal) {
    auto a = rm_args(calls);
    a.push_back(run.name);
    call(calls, std::move(a));
  }
  if (!run.cgroup.empty()) {
    outcome.usage = take_cgroup_usage(run.cgroup);
  } else {
    outcome.usage = Usage{};
  }
  // 125: the runtime could not create or start the container (podman and
  // docker alike), and says so on stderr ("Error: ..."; docker: "docker:
  // Error ..."). A program of the container that exits 125 itself is an
  // exit code like any other. 126 and 127 (the container's command not
  // executable, not found) mean what they mean for a process.
  const auto& last_err = run.last_err;
  const bool runtime_said_error =
      !last_err.empty() && (last_err.back().rfind("Error: ", 0) == 0 || last_err.back().rfind("docker: Error", 0) == 0);
  if (outcome.exit_code == 125 && runtime_said_error && !outcome.timed_out && outcome.stopped == StopReason::none) {
    std::string said;
    for (const auto& l : last_err) said += (said.empty() ? "" : "; ") + l;
    throw ContainerError("container_runtime", "the container runtime could not run the container (exit 125): " + said);
  }
  return outcome;
}

std::vector<LabeledContainer> list_containers(const RuntimeCalls& calls, const std::string& installation,
                                              std::optional<std::int64_t> job_id, const std::atomic<StopReason>* stop) {
  std::vector<std::string> args = {"ps", "--all", "--no-trunc", "--filter",
                                   std::string("label=") + kLabelInstallation + "=" + installation};
  if (job_id) {
    args.push_back("--filter");
    args.push_back(std::string("label=") + kLabelJobId + "=" + std::to_string(*job_id));
  }
  // One line per container: id, name, job id, attempt (the Go template
  // syntax podman and docker share).
  // The label lookup differs: podman's .Labels is a map, docker's a string
  // with a .Label function.
  auto label = [&](const char* key) {
    return calls.runtime.kind == "docker" ? std::string("{{.Label \"") + key + "\"}}"
                                          : std::string("{{index .Labels \"") + key + "\"}}";
  };
  args.push_back("--format");
  args.push_back("{{.ID}} {{.Names}} " + label(kLabelJobId) + " " + label(kLabelAttempt));
  auto r = call(calls, std::move(args), stop ? *stop : never_stop());
  if (!r.ok()) {
    throw ContainerError("container_runtime", "cannot list containers: " + r.error_text());
  }
  std::vector<LabeledContainer> out;
  for (const auto& line : r.out) {
    std::istringstream in(line);
    LabeledContainer c;
    std::string job, attempt;
    if (!(in >> c.id >> c.name >> job >> attempt)) continue;
    try {
      c.job_id = std::stoll(job);
      c.attempt = std::stoi(attempt);
    } catch (...) {
      continue;  // a label edited by hand: not ours to judge
    }
    out.push_back(std::move(c));
  }
  return out;
}

std::vector<std::string> remove_containers(const RuntimeCalls& calls, const std::vector<LabeledContainer>& containers,
                                           const std::string& cgroup_base, const std::string& installation,
                                           const std::atomic<StopReason>* stop) {
  std::vector<std::string> removed;
  if (containers.empty()) return removed;
  std::vector<std::string> args = rm_args(calls);
  for (const auto& c : containers) args.push_back(c.id);
  auto r = call(calls, std::move(args), stop ? *stop : never_stop());
  if (!rm_ok(r)) {
    throw ContainerError("container_runtime", "cannot remove containers: " + r.error_text());
  }
  for (const auto& c : containers) {
    removed.push_back(c.name);
    remove_cgroup(container_cgroup(cgroup_base, installation, c.job_id, c.attempt));
  }
  return removed;
}

std::string cgroup_manager(const RuntimeCalls& calls) {
  const auto r = call(
      calls, {"info", "--format", calls.runtime.kind == "docker" ? "{{.CgroupDriver}}" : "{{.Host.CgroupManager}}"});
  if (!r.ok() || r.out.empty()) return {};
  return r.out.front();
}

Usage take_cgroup_usage(const std::string& cgroup) {
  Usage u;
  const std::string rel = !cgroup.empty() && cgroup.front() == '/' ? cgroup.substr(1) : cgroup;
  if (cgroup_v2()) {
    const fs::path dir = fs::path("/sys/fs/cgroup") / rel;
    if (auto stat = read_file(dir / "cpu.stat")) {
      if (auto v = stat_value(*stat, "user_usec")) u.cpu_user_s = static_cast<double>(*v) / 1e6;
      if (auto v = stat_value(*stat, "system_usec")) u.cpu_system_s = static_cast<double>(*v) / 1e6;
    }
    if (auto peak = number_file(dir / "memory.peak")) u.max_rss_kb = *peak / 1024;
  } else {
    const double hz = static_cast<double>(::sysconf(_SC_CLK_TCK));
    for (const char* ctrl : {"cpuacct", "cpu,cpuacct"}) {
      if (auto stat = read_file(fs::path("/sys/fs/cgroup") / ctrl / rel / "cpuacct.stat")) {
        if (auto v = stat_value(*stat, "user")) u.cpu_user_s = static_cast<double>(*v) / hz;
        if (auto v = stat_value(*stat, "system")) u.cpu_system_s = static_cast<double>(*v) / hz;
        break;
      }
    }
    if (auto peak = number_file(fs::path("/sys/fs/cgroup/memory") / rel / "memory.max_usage_in_bytes")) {
      u.max_rss_kb = *peak / 1024;
    }
  }
  if (u.cpu_user_s || u.max_rss_kb) u.source = "cgroup";
  remove_cgroup(cgroup);
  return u;
}

}  // namespace conveyor::worker
