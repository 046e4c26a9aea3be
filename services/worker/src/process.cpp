#include "process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <vector>

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
    throw Error(errc::internal, std::string("cannot create a pipe for the job's output: ") + std::strerror(errno));
  }
  // Never 0-2 (a worker started with a closed stdio): the child's dup2
  // onto 0-2 must not overwrite the other end.
  for (auto& fd : fds) {
    if (fd < 3) {
      const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
      ::close(fd);
      fd = moved;
    }
  }
  *p.read.out() = fds[0];
  *p.write.out() = fds[1];
  ::fcntl(fds[0], F_SETFL, ::fcntl(fds[0], F_GETFL) | O_NONBLOCK);
}

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

// Everything the child needs, prepared by the parent: between clone and
// execve the child shares the parent's memory (CLONE_VM) and may not
// allocate, lock or throw, so it only makes system calls on these.
struct ChildArgs {
  const char* program = nullptr;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  const char* cwd = nullptr;
  int stdout_fd = -1;
  int stderr_fd = -1;
  pid_t parent = 0;
  // Written by the child when it cannot execute the program; the parent
  // reads them once clone returns (CLONE_VFORK: after execve or _exit).
  int failed_errno = 0;
  const char* failed_step = nullptr;
};

[[noreturn]] void child_fail(ChildArgs* a, const char* step) {
  a->failed_errno = errno;
  a->failed_step = step;
  ::_exit(127);
}

// Runs in the child, on its own small stack, before execve. Own process
// group (pgid = pid: a timeout or cancel kills the whole tree the job
// started); SIGKILL when the worker thread that started it goes away (the
// worker killed -9 included: checked after prctl, since the worker may have
// died before it); default signal dispositions and an empty mask, whatever
// the worker's threads block or ignore; stdin /dev/null, stdout/stderr the
// pipes, no other descriptor of the worker's.
int child_main(void* arg) {
  auto* a = static_cast<ChildArgs*>(arg);
  if (::setpgid(0, 0) != 0) child_fail(a, "setpgid");
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) child_fail(a, "prctl");
  if (::getppid() != a->parent) ::_exit(137);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);  // EINVAL for some: fine
  sigset_t empty;
  sigemptyset(&empty);
  ::sigprocmask(SIG_SETMASK, &empty, nullptr);
  const int null_fd = ::open("/dev/null", O_RDONLY);
  if (null_fd < 0) child_fail(a, "open /dev/null");
  if (::dup2(null_fd, 0) < 0 || ::dup2(a->stdout_fd, 1) < 0 || ::dup2(a->stderr_fd, 2) < 0) {
    child_fail(a, "dup2");
  }
  ::close_range(3, ~0U, 0);
  if (::chdir(a->cwd) != 0) child_fail(a, "chdir");
  ::execve(a->program, a->argv, a->envp);
  child_fail(a, "execve");
}

// NUL-terminated pointers into `strings`, for execve.
std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// The child's stack: clone needs one of its own while the parent's is in use.
class ChildStack {
 public:
  static constexpr std::size_t kSize = 64 * 1024;
  ChildStack()
      : base_(::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0)) {}
  ~ChildStack() {
    if (base_ != MAP_FAILED) ::munmap(base_, kSize);
  }
  ChildStack(const ChildStack&) = delete;
  ChildStack& operator=(const ChildStack&) = delete;
  bool ok() const { return base_ != MAP_FAILED; }
  void* top() const { return static_cast<char*>(base_) + kSize; }  // stacks grow down

 private:
  void* base_;
};

// Blocks every signal on this thread while the child borrows its memory: a
// handler must not run in the child (it would act on the worker's state).
class AllSignalsBlocked {
 public:
  AllSignalsBlocked() {
    sigset_t all;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &saved_);
  }
  ~AllSignalsBlocked() { ::pthread_sigmask(SIG_SETMASK, &saved_, nullptr); }
  AllSignalsBlocked(const AllSignalsBlocked&) = delete;
  AllSignalsBlocked& operator=(const AllSignalsBlocked&) = delete;

 private:
  sigset_t saved_{};
};

// Starts the job's program directly (no shell, no trampoline):
// clone(CLONE_VM | CLONE_VFORK) costs no copy of the worker's address
// space, and this thread sleeps until the child has executed the program
// or given up, so what the child reports in ChildArgs is known on return.
// The caller's thread is the child's parent for PR_SET_PDEATHSIG: it must
// live as long as the program (run_process does: it returns after the exit).
int spawn(const ProcessOptions& options, Pipe& out, Pipe& err, std::string& error) {
  int resolve_error = 0;
  const auto program = resolve_program(options.argv[0], resolve_error);
  if (!program) {
    error = "cannot execute '" + options.argv[0] + "': " + std::strerror(resolve_error);
    return -1;
  }
  std::vector<std::string> argv_strings = options.argv;
  std::vector<std::string> env_strings;
  env_strings.reserve(options.env.size());
  for (const auto& [k, v] : options.env) env_strings.push_back(k + "=" + v);
  const auto argv = c_strings(argv_strings);
  const auto envp = c_strings(env_strings);
  ChildArgs args{.program = program->c_str(),
                 .argv = argv.data(),
                 .envp = envp.data(),
                 .cwd = options.cwd.c_str(),
                 .stdout_fd = out.write.get(),
                 .stderr_fd = err.write.get(),
                 .parent = ::getpid()};
  ChildStack stack;
  if (!stack.ok()) {
    error = "cannot execute '" + options.argv[0] + "': no memory for its start";
    return -1;
  }
  pid_t pid = -1;
  {
    AllSignalsBlocked blocked;
    pid = ::clone(child_main, stack.top(), CLONE_VM | CLONE_VFORK | SIGCHLD, &args);
  }
  if (pid < 0) {
    error = "cannot execute '" + options.argv[0] + "': " + std::strerror(errno);
    return -1;
  }
  if (args.failed_step != nullptr) {
    ::waitpid(pid, nullptr, 0);  // it exited 127 already
    const std::string why = std::strerror(args.failed_errno);
    error = std::strcmp(args.failed_step, "execve") == 0
                ? "cannot execute '" + options.argv[0] + "': " + why
                : "cannot execute '" + options.argv[0] + "' (" + args.failed_step + "): " + why;
    return -1;
  }
  return pid;
}

}  // namespace

namespace {

// One started program, watched by run_process until it has exited and its
// output is read.
class Watch {
 public:
  Watch(const ProcessOptions& options, int pid, Pipe& out, Pipe& err, ProcessOutcome& outcome)
      : options_(options),
        pid_(pid),
        outcome_(outcome),
        streams_{Stream{"stdout", &out.read, {}}, Stream{"stderr", &err.read, {}}} {
    // The exit wakes poll() through a pidfd. Without one (a kernel before
    // 5.3) the exit is noticed on a short tick once the pipes are closed.
    *pidfd_.out() = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (options.timeout) deadline_ = Clock::now() + *options.timeout;
  }

  // Waits for the next event (output, exit, a deadline, or the stop tick)
  // and handles it. Returns false once there is nothing left to watch.
  bool step(const std::atomic<StopReason>& stop, const LineSink& on_line) {
    wait_event();
    ++outcome_.wakeups;
    for (auto& s : streams_) read_available(s, on_line);
    const auto now = Clock::now();
    if (!exited_) reap_if_exited(now);
    if (!exited_) enforce_limits(now, stop.load());
    return !(exited_ && (!streams_open() || now >= drain_until_));
  }

  void flush(const LineSink& on_line) {
    for (auto& s : streams_) emit_lines(s, on_line, true);
  }

 private:
  bool streams_open() const { return streams_[0].fd->get() >= 0 || streams_[1].fd->get() >= 0; }

  // Stop requests (cancel, shutdown) come from other threads through an
  // atomic: they are looked at on this tick.
  static constexpr std::chrono::milliseconds kStopTick{100};
  // Only without a pidfd: how often a closed-pipe child is checked for exit.
  static constexpr std::chrono::milliseconds kExitTick{5};

  void wait_event() {
    std::array<pollfd, 3> pfds{};
    nfds_t n = 0;
    for (auto& s : streams_) {
      if (s.fd->get() >= 0) pfds[n++] = pollfd{s.fd->get(), POLLIN, 0};
    }
    if (!exited_ && pidfd_.get() >= 0) pfds[n++] = pollfd{pidfd_.get(), POLLIN, 0};
    ::poll(pfds.data(), n, static_cast<int>(wait_ms().count()));
  }

  // Until the next thing to act on: the timeout, the SIGKILL after the
  // grace, the end of the output drain; at most the stop tick.
  std::chrono::milliseconds wait_ms() const {
    auto wait = kStopTick;
    if (!exited_ && pidfd_.get() < 0 && !streams_open()) wait = kExitTick;
    std::optional<Clock::time_point> next;
    if (exited_) {
      next = drain_until_;
    } else if (!kill_at_) {
      next = deadline_;
    } else if (!killed_) {
      next = kill_at_;
    }
    if (!next) return wait;
    const auto left = std::max(*next - Clock::now(), Clock::duration::zero());
    return std::min(wait, std::chrono::ceil<std::chrono::milliseconds>(left));
  }

  void reap_if_exited(Clock::time_point now) {
    siginfo_t info{};
    // WNOWAIT: the exited leader stays a zombie while we kill what is left
    // of its group, so the group id cannot be reused in between.
    if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid != pid_) {
      return;
    }
    ::kill(-pid_, SIGKILL);
    int status = 0;
    struct rusage ru {};
    while (::wait4(pid_, &status, 0, &ru) < 0 && errno == EINTR) {
    }
    auto seconds = [](const timeval& t) {
      return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
    };
    outcome_.usage.cpu_user_s = seconds(ru.ru_utime);
    outcome_.usage.cpu_system_s = seconds(ru.ru_stime);
    outcome_.usage.max_rss_kb = static_cast<std::int64_t>(ru.ru_maxrss);  // KiB on Linux
    outcome_.usage.source = "rusage";
    if (WIFEXITED(status)) outcome_.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) outcome_.term_signal = WTERMSIG(status);
    outcome_.ended = std::chrono::system_clock::now();
    exited_ = true;
    pidfd_.reset();
    drain_until_ = now + std::chrono::seconds(2);
  }

  void enforce_limits(Clock::time_point now, StopReason requested) {
    if (!kill_at_ && requested != StopReason::none) {
      outcome_.stopped = requested;
      terminate(now, requested == StopReason::shutdown ? options_.shutdown_kill_grace : options_.kill_grace);
    } else if (!kill_at_ && deadline_ && now >= *deadline_) {
      outcome_.timed_out = true;
      terminate(now, options_.kill_grace);
    } else if (kill_at_ && !killed_ && now >= *kill_at_) {
      if (options_.kill) options_.kill();
      ::kill(-pid_, SIGKILL);
      killed_ = true;
    }
  }

  void terminate(Clock::time_point now, std::chrono::milliseconds grace) {
    if (options_.terminate) {
      options_.terminate(grace);
    } else {
      ::kill(-pid_, SIGTERM);
    }
    kill_at_ = now + grace + options_.kill_margin;
  }

  const ProcessOptions& options_;
  const int pid_;
  ProcessOutcome& outcome_;
  std::array<Stream, 2> streams_;
  Fd pidfd_;
  std::optional<Clock::time_point> deadline_;
  std::optional<Clock::time_point> kill_at_;
  bool killed_ = false;
  bool exited_ = false;
  Clock::time_point drain_until_{};
};

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
  Watch watch(options, pid, out, err, outcome);
  while (watch.step(stop, on_line)) {
  }
  watch.flush(on_line);
  return outcome;
}

std::map<std::string, std::string> job_base_environment(const std::map<std::string, std::string>& worker_env) {
  std::map<std::string, std::string> env;
  const auto path = worker_env.find("PATH");
  env["PATH"] = path != worker_env.end() && !path->second.empty() ? path->second : "/usr/local/bin:/usr/bin:/bin";
  // Programs (and their libraries) expect a HOME; the worker's is where its
  // user's tools are installed. "/" when the worker has none.
  const auto home = worker_env.find("HOME");
  env["HOME"] = home != worker_env.end() && !home->second.empty() ? home->second : "/";
  for (const char* name : {"LANG", "LC_ALL", "TZ", "TMPDIR"}) {
    if (const auto it = worker_env.find(name); it != worker_env.end()) env[name] = it->second;
  }
  return env;
}

std::map<std::string, std::string> job_environment(const std::map<std::string, std::string>& base,
                                                   const std::map<std::string, std::string>& type_env,
                                                   const std::map<std::string, std::string>& own,
                                                   std::vector<std::string>* refused) {
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

}  // namespace conveyor::worker
