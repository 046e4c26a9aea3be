#include "process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "conveyor/error/error.hpp"
#include "conveyor/model/job_type.hpp"

namespace conveyor::worker {
namespace {

using Clock = std::chrono::steady_clock;

// A line longer than this is emitted in pieces so one runaway line cannot
// grow the worker's memory without bound.
constexpr std::size_t kMaxLine = 64 * 1024;

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int* out() { return &fd_; }

 private:
  int fd_ = -1;
};

struct Pipe {
  Fd read;
  Fd write;
};

void make_pipe(Pipe& p) {
  std::array<int, 2> fds{-1, -1};
  // CLOEXEC: several job threads spawn concurrently; one job's pipe must not
  // leak into another job's process (it would hold the pipe open).
  if (::pipe2(fds.data(), O_CLOEXEC) != 0) {
    throw Error(errc::internal,
                std::string("cannot create a pipe for the job's output: ") + std::strerror(errno));
  }
  *p.read.out() = fds[0];
  *p.write.out() = fds[1];
  ::fcntl(fds[0], F_SETFL, ::fcntl(fds[0], F_GETFL) | O_NONBLOCK);
}

// RAII wrappers of the posix_spawn attribute objects.
struct SpawnAttr {
  posix_spawnattr_t attr{};
  SpawnAttr() { posix_spawnattr_init(&attr); }
  ~SpawnAttr() { posix_spawnattr_destroy(&attr); }
  SpawnAttr(const SpawnAttr&) = delete;
  SpawnAttr& operator=(const SpawnAttr&) = delete;
};
struct SpawnActions {
  posix_spawn_file_actions_t actions{};
  SpawnActions() { posix_spawn_file_actions_init(&actions); }
  ~SpawnActions() { posix_spawn_file_actions_destroy(&actions); }
  SpawnActions(const SpawnActions&) = delete;
  SpawnActions& operator=(const SpawnActions&) = delete;
};

struct Stream {
  const char* name;
  Fd* fd;
  std::string buffer;
};

void emit_lines(Stream& s, const LineSink& on_line, bool flush_all) {
  std::size_t start = 0;
  while (true) {
    auto nl = s.buffer.find('\n', start);
    if (nl == std::string::npos) break;
    on_line(s.name, std::string_view(s.buffer).substr(start, nl - start));
    start = nl + 1;
  }
  s.buffer.erase(0, start);
  while (s.buffer.size() >= kMaxLine) {
    on_line(s.name, std::string_view(s.buffer).substr(0, kMaxLine));
    s.buffer.erase(0, kMaxLine);
  }
  if (flush_all && !s.buffer.empty()) {
    on_line(s.name, s.buffer);
    s.buffer.clear();
  }
}

// Reads what is available; closes the fd at end of file.
void read_available(Stream& s, const LineSink& on_line) {
  std::array<char, 8192> chunk{};
  while (s.fd->get() >= 0) {
    ssize_t n = ::read(s.fd->get(), chunk.data(), chunk.size());
    if (n > 0) {
      s.buffer.append(chunk.data(), static_cast<std::size_t>(n));
      emit_lines(s, on_line, false);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    // End of file (or a read error, which ends the stream the same way).
    emit_lines(s, on_line, true);
    s.fd->reset();
  }
}

// What posix_spawnp would execute for `name`: itself when it holds a '/',
// else the first executable regular file of that name on the worker's PATH.
// Sets errno-style `err` when there is none.
std::optional<std::string> resolve_program(const std::string& name, int& err) {
  auto executable = [](const std::string& path, int& e) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      e = errno;
      return false;
    }
    if (!S_ISREG(st.st_mode) || ::access(path.c_str(), X_OK) != 0) {
      e = EACCES;
      return false;
    }
    return true;
  };
  if (name.find('/') != std::string::npos) {
    if (executable(name, err)) return name;
    return std::nullopt;
  }
  const char* path_env = std::getenv("PATH");
  std::string_view path = path_env != nullptr ? path_env : "/usr/local/bin:/usr/bin:/bin";
  err = ENOENT;
  while (true) {
    const auto colon = path.find(':');
    std::string dir(path.substr(0, colon));
    if (dir.empty()) dir = ".";
    int e = 0;
    const std::string candidate = dir + "/" + name;
    if (executable(candidate, e)) return candidate;
    if (e == EACCES) err = EACCES;  // found but not executable: say so, as execvp does
    if (colon == std::string_view::npos) break;
    path.remove_prefix(colon + 1);
  }
  return std::nullopt;
}

// This executable, for the exec_job trampoline.
const std::string& self_executable() {
  static const std::string self = [] {
    std::error_code ec;
    auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
    return ec ? std::string() : p.string();
  }();
  return self;
}

int spawn(const ProcessOptions& options, Pipe& out, Pipe& err, std::string& error) {
  int resolve_error = 0;
  const auto program = resolve_program(options.argv[0], resolve_error);
  if (!program) {
    error = "cannot execute '" + options.argv[0] + "': " + std::strerror(resolve_error);
    return -1;
  }
  if (self_executable().empty()) {
    error = "cannot execute '" + options.argv[0] + "': /proc/self/exe is unreadable";
    return -1;
  }
  // conveyor-worker --exec-job <our pid> <program> <the job's argv...>
  std::vector<std::string> trampoline = {self_executable(), std::string(kExecJobFlag),
                                         std::to_string(::getpid()), *program};
  trampoline.insert(trampoline.end(), options.argv.begin(), options.argv.end());
  std::vector<char*> argv;
  argv.reserve(trampoline.size() + 1);
  for (auto& a : trampoline) argv.push_back(a.data());
  argv.push_back(nullptr);

  std::vector<std::string> env_strings;
  env_strings.reserve(options.env.size());
  for (const auto& [k, v] : options.env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  envp.reserve(env_strings.size() + 1);
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);

  SpawnActions fa;
  posix_spawn_file_actions_addopen(&fa.actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa.actions, out.write.get(), 1);
  posix_spawn_file_actions_adddup2(&fa.actions, err.write.get(), 2);
  // The worker's own descriptors (database, broker, other jobs) stay ours.
  posix_spawn_file_actions_addclosefrom_np(&fa.actions, 3);
  posix_spawn_file_actions_addchdir_np(&fa.actions, options.cwd.c_str());

  SpawnAttr sa;
  // Own process group (pgid = pid), so a timeout or cancel kills the whole
  // tree the job started; default signal dispositions and an empty mask,
  // whatever the worker's threads block or ignore.
  sigset_t empty;
  sigemptyset(&empty);
  sigset_t all;
  sigfillset(&all);
  posix_spawnattr_setflags(&sa.attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&sa.attr, 0);
  posix_spawnattr_setsigmask(&sa.attr, &empty);
  posix_spawnattr_setsigdefault(&sa.attr, &all);

  pid_t pid = -1;
  // posix_spawn rather than fork: safe in a multi-threaded process and
  // reports a failure to start as a return value. The program itself is
  // executed by the trampoline with execv: never through /bin/sh.
  int rc = ::posix_spawn(&pid, argv[0], &fa.actions, &sa.attr, argv.data(), envp.data());
  if (rc != 0) {
    error = "cannot execute '" + options.argv[0] + "': " + std::strerror(rc);
    return -1;
  }
  return pid;
}

}  // namespace

ProcessOutcome run_process(const ProcessOptions& options, const std::atomic<StopReason>& stop,
                           const LineSink& on_line) {
  ProcessOutcome outcome;
  outcome.started = std::chrono::system_clock::now();
  if (options.argv.empty() || options.argv[0].empty()) {
    outcome.spawn_error = "cannot execute the job: its argv is empty";
    outcome.exit_code = 127;
    outcome.ended = std::chrono::system_clock::now();
    return outcome;
  }

  Pipe out;
  Pipe err;
  make_pipe(out);
  make_pipe(err);
  std::string error;
  const int pid = spawn(options, out, err, error);
  out.write.reset();
  err.write.reset();
  if (pid < 0) {
    outcome.spawn_error = error;
    outcome.exit_code = 127;
    outcome.ended = std::chrono::system_clock::now();
    return outcome;
  }
  outcome.pid = pid;

  const auto start = Clock::now();
  std::optional<Clock::time_point> deadline;
  if (options.timeout) deadline = start + *options.timeout;
  std::optional<Clock::time_point> kill_at;
  bool killed = false;
  bool exited = false;
  Clock::time_point drain_until{};

  std::array<Stream, 2> streams{Stream{"stdout", &out.read, {}}, Stream{"stderr", &err.read, {}}};

  auto terminate = [&](Clock::time_point now, std::chrono::milliseconds grace) {
    if (options.terminate) {
      options.terminate(grace);
    } else {
      ::kill(-pid, SIGTERM);
    }
    kill_at = now + grace + options.kill_margin;
  };

  while (true) {
    std::array<pollfd, 2> pfds{};
    nfds_t n = 0;
    for (auto& s : streams) {
      if (s.fd->get() >= 0) pfds[n++] = pollfd{s.fd->get(), POLLIN, 0};
    }
    // With the pipes open, output or EOF wakes us; once they are closed
    // only the exit is left to notice, so tick faster.
    const int tick_ms = n > 0 ? 100 : 5;
    if (n > 0) {
      ::poll(pfds.data(), n, tick_ms);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(tick_ms));
    }
    for (auto& s : streams) read_available(s, on_line);

    const auto now = Clock::now();
    if (!exited) {
      siginfo_t info{};
      // WNOWAIT: the exited leader stays a zombie while we kill what is left
      // of its group, so the group id cannot be reused in between.
      if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
          info.si_pid == pid) {
        ::kill(-pid, SIGKILL);
        int status = 0;
        struct rusage ru {};
        while (::wait4(pid, &status, 0, &ru) < 0 && errno == EINTR) {
        }
        outcome.usage.cpu_user_s =
            static_cast<double>(ru.ru_utime.tv_sec) + static_cast<double>(ru.ru_utime.tv_usec) / 1e6;
        outcome.usage.cpu_system_s =
            static_cast<double>(ru.ru_stime.tv_sec) + static_cast<double>(ru.ru_stime.tv_usec) / 1e6;
        outcome.usage.max_rss_kb = static_cast<std::int64_t>(ru.ru_maxrss);  // KiB on Linux
        outcome.usage.source = "rusage";
        if (WIFEXITED(status)) outcome.exit_code = WEXITSTATUS(status);
        if (WIFSIGNALED(status)) outcome.term_signal = WTERMSIG(status);
        outcome.ended = std::chrono::system_clock::now();
        exited = true;
        drain_until = now + std::chrono::seconds(2);
      }
    }
    if (!exited) {
      const StopReason requested = stop.load();
      if (!kill_at && requested != StopReason::none) {
        outcome.stopped = requested;
        terminate(now, requested == StopReason::shutdown ? options.shutdown_kill_grace
                                                         : options.kill_grace);
      } else if (!kill_at && deadline && now >= *deadline) {
        outcome.timed_out = true;
        terminate(now, options.kill_grace);
      } else if (kill_at && !killed && now >= *kill_at) {
        if (options.kill) options.kill();
        ::kill(-pid, SIGKILL);
        killed = true;
      }
    }
    const bool streams_open = streams[0].fd->get() >= 0 || streams[1].fd->get() >= 0;
    if (exited && (!streams_open || now >= drain_until)) break;
  }
  for (auto& s : streams) emit_lines(s, on_line, true);
  return outcome;
}

std::map<std::string, std::string> job_base_environment(
    const std::map<std::string, std::string>& worker_env) {
  std::map<std::string, std::string> env;
  const auto path = worker_env.find("PATH");
  env["PATH"] = path != worker_env.end() && !path->second.empty() ? path->second
                                                                  : "/usr/local/bin:/usr/bin:/bin";
  // Programs (and their libraries) expect a HOME; the worker's is where its
  // user's tools are installed. "/" when the worker has none.
  const auto home = worker_env.find("HOME");
  env["HOME"] = home != worker_env.end() && !home->second.empty() ? home->second : "/";
  for (const char* name : {"LANG", "LC_ALL", "TZ", "TMPDIR"}) {
    if (const auto it = worker_env.find(name); it != worker_env.end()) env[name] = it->second;
  }
  return env;
}

std::map<std::string, std::string> job_environment(
    const std::map<std::string, std::string>& base,
    const std::map<std::string, std::string>& type_env,
    const std::map<std::string, std::string>& own, std::vector<std::string>* refused) {
  std::map<std::string, std::string> env = base;
  for (const auto& [k, v] : type_env) {
    if (model::reserved_env_name(k)) {
      if (refused != nullptr) refused->push_back(k);
      continue;
    }
    env[k] = v;
  }
  for (const auto& [k, v] : own) env[k] = v;
  return env;
}

int exec_job(int argc, char** argv) {
  // argv: [0] conveyor-worker, [1] --exec-job, [2] worker pid, [3] program, [4...] job argv
  if (argc < 5) {
    std::fprintf(stderr, "conveyor-worker %s: expected <worker pid> <program> <argv...>\n",
                 std::string(kExecJobFlag).c_str());
    return 127;
  }
  // The kernel kills us when the worker thread that started us ends (the
  // worker killed -9 included); checked after the call, since the worker
  // may have died before it.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 ||
      std::to_string(::getppid()) != argv[2]) {
    return 137;
  }
  ::execv(argv[3], argv + 4);
  std::fprintf(stderr, "cannot execute '%s': %s\n", argv[4], std::strerror(errno));
  return 127;
}

}  // namespace conveyor::worker
