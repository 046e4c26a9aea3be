#include "child_process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "conveyor/error/error.hpp"

namespace conveyor::workerpool {

namespace fs = std::filesystem;

namespace {

bool is_executable_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec) && ::access(p.c_str(), X_OK) == 0;
}

}  // namespace

int spawn_child(const SpawnOptions& options) {
  std::vector<std::string> argv_strings;
  argv_strings.push_back(options.executable.filename().string());
  argv_strings.insert(argv_strings.end(), options.args.begin(), options.args.end());
  std::vector<char*> argv;
  for (auto& a : argv_strings) argv.push_back(a.data());
  argv.push_back(nullptr);

  std::vector<std::string> env_strings;
  for (const auto& [k, v] : options.env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);

  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  if (!options.log_file.empty()) {
    posix_spawn_file_actions_addopen(&actions, 1, options.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
  }
  // The pool's own descriptors (database, broker, HTTP) stay the pool's.
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);

  // The runtime blocks SIGTERM/SIGINT in every thread (it sigwait()s for
  // them); a worker must start with a clean mask and default handlers. No
  // POSIX_SPAWN_SETPGROUP: the worker stays in the pool's process group.
  sigset_t empty;
  sigemptyset(&empty);
  sigset_t all;
  sigfillset(&all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &all);

  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, options.executable.c_str(), &actions, &attr, argv.data(), envp.data());
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    throw Error(errc::unavailable, fmt::format("cannot start {}: {}", options.executable.string(), std::strerror(rc)));
  }
  return pid;
}

std::string ExitStatus::describe() const {
  if (code) return fmt::format("exit code {}", *code);
  if (signal && *signal > 0) {
    const char* name = sigabbrev_np(*signal);
    return name ? fmt::format("killed by SIG{}", name) : fmt::format("killed by signal {}", *signal);
  }
  return "gone";
}

std::optional<ExitStatus> try_reap(int pid) {
  int status = 0;
  pid_t r = -1;
  do {
    r = ::waitpid(pid, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return std::nullopt;
  ExitStatus out;
  if (r < 0) {
    out.signal = 0;  // ECHILD: not ours any more
  } else if (WIFEXITED(status)) {
    out.code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    out.signal = WTERMSIG(status);
  } else {
    return std::nullopt;  // stopped/continued: still there
  }
  return out;
}

bool send_signal(int pid, int sig) { return pid > 0 && ::kill(pid, sig) == 0; }

std::optional<fs::path> find_executable(const std::string& configured, const std::string& name, const fs::path& self,
                                        const std::string& path) {
  // A path is taken as it is; a bare name is looked up on PATH, as a shell would.
  if (configured.find('/') != std::string::npos) {
    if (is_executable_file(configured)) return fs::path(configured);
    return std::nullopt;
  }
  const std::string wanted = configured.empty() ? name : configured;
  if (configured.empty() && !self.empty()) {
    for (const fs::path& candidate : {self.parent_path() / name, self.parent_path().parent_path() / "worker" / name}) {
      if (is_executable_file(candidate)) return candidate;
    }
  }
  std::size_t start = 0;
  while (start <= path.size()) {
    const std::size_t colon = path.find(':', start);
    const std::string dir = path.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    if (!dir.empty()) {
      const fs::path candidate = fs::path(dir) / wanted;
      if (is_executable_file(candidate)) return candidate;
    }
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  return std::nullopt;
}

std::filesystem::path make_private_dir(const std::string& prefix, const std::string& what) {
  std::string templ = (std::filesystem::temp_directory_path() / (prefix + "XXXXXX")).string();
  if (::mkdtemp(templ.data()) == nullptr) {
    throw Error(errc::unavailable, "cannot create a directory for " + what + ": " + std::strerror(errno));
  }
  return templ;
}

void write_private_file(const std::filesystem::path& file, const std::string& content) {
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || ::write(fd, content.data(), content.size()) != static_cast<ssize_t>(content.size())) {
    const std::string reason = std::strerror(errno);
    if (fd >= 0) ::close(fd);
    throw Error(errc::unavailable, "cannot write " + file.string() + ": " + reason);
  }
  ::close(fd);
}

}  // namespace conveyor::workerpool
