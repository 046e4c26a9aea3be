// conveyor::testing processes: ChildProcess, run(), free_port(), wait_until(),
// unique_name(). Linux only (process groups, /proc).
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <random>
#include <sstream>
#include <thread>

#include "conveyor/error/error.hpp"
#include "conveyor/testing/testing.hpp"

extern char** environ;

namespace conveyor::testing {
namespace {

using Clock = std::chrono::steady_clock;

std::string describe(const std::vector<std::string>& argv) {
  return argv.empty() ? std::string("<empty argv>") : argv.front();
}

// exit status as the shell reports it: code, or 128+signal.
int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// Everything the child needs, built before fork(): after fork() in a
// threaded process only async-signal-safe calls are allowed.
struct ExecPlan {
  std::vector<std::string> argv_storage;
  std::vector<std::string> env_storage;
  std::vector<char*> argv;
  std::vector<char*> envp;

  ExecPlan(const std::vector<std::string>& args, const std::map<std::string, std::string>& env) : argv_storage(args) {
    std::map<std::string, std::string> merged;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
      std::string entry(*e);
      auto eq = entry.find('=');
      if (eq == std::string::npos) continue;
      merged[entry.substr(0, eq)] = entry.substr(eq + 1);
    }
    for (const auto& [k, v] : env) merged[k] = v;
    for (const auto& [k, v] : merged) env_storage.push_back(k + "=" + v);
    for (auto& a : argv_storage) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : env_storage) envp.push_back(e.data());
    envp.push_back(nullptr);
  }
};

int open_output(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw Error(errc::unavailable, "cannot open " + path.string() + ": " + std::strerror(errno));
  }
  return fd;
}

// Child side after fork(): only async-signal-safe calls. Reports an exec
// failure's errno through `report_fd` (close-on-exec, so success closes it).
[[noreturn]] void exec_child(const ExecPlan& plan, bool detach, int in_fd, int out_fd, int err_fd, int report_fd) {
  if (detach) {
    ::setsid();
  } else {
    ::setpgid(0, 0);
  }
  // Signals blocked or ignored by the parent (a test runner's threads) must
  // not leak into the child.
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::signal(SIGPIPE, SIG_DFL);
  if (in_fd >= 0) ::dup2(in_fd, 0);
  if (out_fd >= 0) ::dup2(out_fd, 1);
  if (err_fd >= 0) ::dup2(err_fd, 2);
  // Nothing else of ours may stay open in the child: a daemon holding a
  // pipe of ours would keep readers (ctest) waiting.
  if (::syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
    for (int fd = 3; fd < 4096; ++fd) {
      if (fd != report_fd) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
  }
  ::execvpe(plan.argv[0], plan.argv.data(), plan.envp.data());
  int e = errno;
  [[maybe_unused]] auto n = ::write(report_fd, &e, sizeof e);
  ::_exit(127);
}

// Forks and execs; returns the pid or throws naming argv[0].
int spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env, bool detach, int out_fd,
          int err_fd) {
  if (argv.empty()) throw Error(errc::bad_input, "cannot start a process: empty argv");
  ExecPlan plan(argv, env);
  int in_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) {
    if (in_fd >= 0) ::close(in_fd);
    throw Error(errc::unavailable, "pipe for " + describe(argv) + ": " + std::strerror(errno));
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    ::close(report[0]);
    ::close(report[1]);
    if (in_fd >= 0) ::close(in_fd);
    throw Error(errc::unavailable, "cannot fork for " + describe(argv) + ": " + std::strerror(e));
  }
  if (pid == 0) exec_child(plan, detach, in_fd, out_fd, err_fd, report[1]);
  if (!detach) ::setpgid(pid, pid);  // also here: whoever runs first wins the race
  ::close(report[1]);
  if (in_fd >= 0) ::close(in_fd);
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(report[0], &child_errno, sizeof child_errno);
  } while (n < 0 && errno == EINTR);
  ::close(report[0]);
  if (n == static_cast<ssize_t>(sizeof child_errno)) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    throw Error(errc::not_found, "cannot execute " + describe(argv) + ": " + std::strerror(child_errno));
  }
  return pid;
}

// True while any process of group `pgid` is alive (zombies do not count:
// a reparented zombie may wait for a reaper that never comes in a container).
bool group_alive(int pgid) {
  if (::kill(-pgid, 0) != 0 && errno == ESRCH) return false;
  return !process_group_members(pgid).empty();
}

}  // namespace

namespace {

// State, parent and process group of /proc/<pid> (`dir`); nullopt when gone.
struct ProcStat {
  char state = 0;
  long ppid = 0;
  long pgrp = 0;
};
std::optional<ProcStat> read_proc_stat(const std::filesystem::path& dir) {
  std::ifstream in(dir / "stat");
  std::string stat;
  if (!std::getline(in, stat)) return std::nullopt;
  // "pid (comm) state ppid pgrp ..."; comm may hold spaces and parens.
  auto close = stat.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(stat.substr(close + 1));
  ProcStat out;
  rest >> out.state >> out.ppid >> out.pgrp;
  return out;
}

}  // namespace

std::set<int> process_group_members(int pgid) {
  std::set<int> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    const auto st = read_proc_stat(entry.path());
    if (st && st->pgrp == pgid && st->state != 'Z' && st->state != 'X') out.insert(std::stoi(name));
  }
  return out;
}

int parent_pid(int pid) {
  const auto st = read_proc_stat(std::filesystem::path("/proc") / std::to_string(pid));
  return st ? static_cast<int>(st->ppid) : 0;
}

// ---------------------------------------------------------------- ChildProcess

ChildProcess::ChildProcess(Options options) : detached_(options.detach) {
  int out_fd = -1;
  int err_fd = -1;
  try {
    if (!options.stdout_file.empty()) out_fd = open_output(options.stdout_file);
    if (!options.stderr_file.empty()) {
      err_fd = open_output(options.stderr_file);
    } else if (out_fd >= 0) {
      err_fd = out_fd;
    }
    if (options.detach) {
      // A detached process must not hold our terminal or our caller's pipes.
      if (out_fd < 0) out_fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
      if (err_fd < 0) err_fd = out_fd;
    }
    pid_ = spawn(options.argv, options.env, options.detach, out_fd, err_fd);
  } catch (...) {
    if (err_fd >= 0 && err_fd != out_fd) ::close(err_fd);
    if (out_fd >= 0) ::close(out_fd);
    throw;
  }
  if (err_fd >= 0 && err_fd != out_fd) ::close(err_fd);
  if (out_fd >= 0) ::close(out_fd);
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(other.pid_), detached_(other.detached_), status_(other.status_) {
  other.pid_ = -1;
}

ChildProcess::~ChildProcess() {
  if (pid_ <= 0 || detached_) return;
  stop();
}

bool ChildProcess::running() {
  if (pid_ <= 0 || status_) return false;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    status_ = decode_status(status);
    return false;
  }
  if (r < 0 && errno == ECHILD) {
    // Not our child any more (should not happen): fall back to kill(0).
    return ::kill(pid_, 0) == 0;
  }
  return true;
}

void ChildProcess::signal(int sig) {
  if (pid_ <= 0) return;
  // The group id is the pid: setpgid (or setsid) in the child made it so.
  if (::kill(-pid_, sig) != 0 && !status_) ::kill(pid_, sig);
}

std::optional<int> ChildProcess::wait(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return status_;
  wait_until([this] { return !running(); }, timeout);
  return status_;
}

int ChildProcess::stop(std::chrono::milliseconds grace) {
  if (pid_ <= 0) return status_.value_or(-1);
  auto deadline = Clock::now() + grace;
  signal(SIGTERM);
  if (!wait(grace)) {
    signal(SIGKILL);
    int status = 0;
    if (::waitpid(pid_, &status, 0) == pid_) status_ = decode_status(status);
  }
  // The leader is gone; children it left in its group get the rest of the
  // grace period, then SIGKILL.
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  if (!wait_until([this] { return !group_alive(pid_); }, std::max(left, std::chrono::milliseconds(100)))) {
    ::kill(-pid_, SIGKILL);
    wait_until([this] { return !group_alive(pid_); }, std::chrono::seconds(5));
  }
  return status_.value_or(-1);
}

// ---------------------------------------------------------------- run

RunResult run(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
              std::chrono::milliseconds timeout) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    throw Error(errc::unavailable, "pipe for " + describe(argv) + ": " + std::strerror(errno));
  }
  int pid = -1;
  try {
    pid = spawn(argv, env, false, pipe_fds[1], pipe_fds[1]);
  } catch (...) {
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    throw;
  }
  ::close(pipe_fds[1]);
  RunResult result;
  auto deadline = Clock::now() + timeout;
  bool exited = false;
  bool eof = false;
  int status = 0;
  char buf[4096];
  // Read until the child exits; a daemon it started may keep the pipe open
  // (pg_ctl), so EOF is not waited for once the child is gone.
  while (!exited) {
    if (!eof) {
      pollfd p{pipe_fds[0], POLLIN, 0};
      int ready = ::poll(&p, 1, 20);
      if (ready > 0) {
        ssize_t n = ::read(pipe_fds[0], buf, sizeof buf);
        if (n > 0) result.output.append(buf, static_cast<std::size_t>(n));
        if (n == 0) eof = true;
      }
    } else {
      ::poll(nullptr, 0, 10);
    }
    if (::waitpid(pid, &status, WNOHANG) == pid) exited = true;
    if (!exited && Clock::now() > deadline) {
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      ::close(pipe_fds[0]);
      throw Error(errc::timeout, describe(argv) + " did not finish within " + std::to_string(timeout.count()) +
                                     " ms; output: " + result.output);
    }
  }
  // Drain what is already buffered, without waiting for writers to close.
  ::fcntl(pipe_fds[0], F_SETFL, O_NONBLOCK);
  while (!eof) {
    ssize_t n = ::read(pipe_fds[0], buf, sizeof buf);
    if (n <= 0) break;
    result.output.append(buf, static_cast<std::size_t>(n));
  }
  ::close(pipe_fds[0]);
  result.status = decode_status(status);
  return result;
}

// ---------------------------------------------------------------- helpers

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw Error(errc::unavailable, std::string("socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    int e = errno;
    ::close(fd);
    throw Error(errc::unavailable, std::string("bind 127.0.0.1:0: ") + std::strerror(e));
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

int free_restartable_port() {
  // Ports below the ephemeral range: [10000, low) where low is the range's
  // start (32768 by default), picked at random and checked by binding.
  int low = 32768;
  if (std::ifstream in("/proc/sys/net/ipv4/ip_local_port_range"); in) in >> low;
  const int first = 10000;
  if (low - first < 1000) {
    throw Error(errc::unavailable, "no room below the ephemeral port range (starts at " + std::to_string(low) + ")");
  }
  static thread_local std::mt19937 rng{std::random_device{}()};
  std::uniform_int_distribution<int> pick(first, low - 1);
  for (int attempt = 0; attempt < 200; ++attempt) {
    const int port = pick(rng);
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw Error(errc::unavailable, std::string("socket: ") + std::strerror(errno));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    const bool free = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    if (free) return port;
  }
  throw Error(errc::unavailable, "no free port found in [" + std::to_string(first) + ", " + std::to_string(low) + ")");
}

bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  auto pause = std::chrono::milliseconds(10);
  while (true) {
    if (condition()) return true;
    auto now = Clock::now();
    if (now >= deadline) return condition();
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    std::this_thread::sleep_for(std::min(pause, left));
    pause = std::min(pause * 2, std::chrono::milliseconds(100));
  }
}

std::string unique_name(const std::string& prefix) {
  static std::atomic<int> counter{0};
  static thread_local std::mt19937 rng{std::random_device{}()};
  std::ostringstream out;
  out << prefix << '_' << ::getpid() << '_' << counter.fetch_add(1) << '_' << std::hex << (rng() & 0xffffffU);
  return out.str();
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

std::size_t thread_count(int pid) {
  std::size_t n = 0;
  std::error_code ec;
  for (std::filesystem::directory_iterator it("/proc/" + std::to_string(pid) + "/task", ec), end; !ec && it != end;
       it.increment(ec)) {
    ++n;
  }
  return n;
}

RunResult run_cli(const std::string& cli, const std::vector<std::string>& args,
                  const std::map<std::string, std::string>& env) {
  std::vector<std::string> argv{cli};
  argv.insert(argv.end(), args.begin(), args.end());
  RunResult r = run(argv, env);
  std::string out;
  std::istringstream lines(r.output);
  for (std::string l; std::getline(lines, l);) {
    if (l.rfind("conveyor: warning:", 0) != 0) out += l + "\n";
  }
  r.output = out;
  return r;
}

}  // namespace conveyor::testing
