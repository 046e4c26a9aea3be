#include "process.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
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
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "conveyor/error/error.hpp"
#include "conveyor/logging/thread_name.hpp"
#include "conveyor/model/job_type.hpp"
#include "child_signals.hpp"
#include "fd.hpp"

namespace conveyor::worker {
namespace {

using Clock = std::chrono::steady_clock;

// A line longer than this is emitted in pieces so one runaway line cannot
// grow the worker's memory without bound.
constexpr std::size_t kMaxLine = 64 * 1024;

struct Pipe {
  Fd read;
  Fd write;
};

void make_pipe(Pipe& p) {
  std::array<int, 2> fds{-1, -1};
  // CLOEXEC: other threads of the worker fork too (resident programs); one
  // job's pipe must not leak into another program (it would hold it open).
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
  p.read.reset(fds[0]);
  p.write.reset(fds[1]);
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
// died before it); default signal dispositions and an empty mask, without a
// signal that was sent to the worker's group; stdin /dev/null, stdout/stderr the
// pipes, no other descriptor of the worker's.
int child_main(void* arg) {
  auto* a = static_cast<ChildArgs*>(arg);
  if (::setpgid(0, 0) != 0) child_fail(a, "setpgid");
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) child_fail(a, "prctl");
  if (::getppid() != a->parent) ::_exit(137);
  reset_signals_of_child();
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
// live as long as the program (the reactor's thread: as long as the process).
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

// One program the reactor watches, from its spawn until its exit has been
// reaped and its output read. Lives on the heap (its streams point at its
// pipes); touched by the reactor thread only once start() handed it over.
struct Reactor::Run {
  ProcessOptions options;
  const std::atomic<StopReason>* stop = nullptr;
  LineSink on_line;
  ExitSink on_exit;
  ProcessOutcome outcome;
  Pipe out;
  Pipe err;
  std::array<Stream, 2> streams{Stream{"stdout", &out.read, {}}, Stream{"stderr", &err.read, {}}};
  Fd pidfd;
  bool pidfd_ready = false;  // the pidfd said the program exited
  std::optional<Clock::time_point> deadline;
  std::optional<Clock::time_point> kill_at;
  bool killed = false;
  bool exited = false;
  Clock::time_point drain_until{};
  bool touched = false;  // this wake-up was (also) for this program

  bool streams_open() const { return out.read.get() >= 0 || err.read.get() >= 0; }
  // The next thing to act on: the timeout, the SIGKILL after the grace,
  // the end of the output drain.
  std::optional<Clock::time_point> next_due() const {
    if (exited) return drain_until;
    if (!kill_at) return deadline;
    if (!killed) return kill_at;
    return std::nullopt;
  }
};

namespace {

// Only without a pidfd (a kernel before 5.3): how often a child whose pipes
// are closed is checked for its exit.
constexpr std::chrono::milliseconds kExitTick{5};
// What one wake-up reads of one pipe at most, so that a program writing
// without pause cannot starve the others (epoll reports it again).
constexpr int kReadsPerWake = 16;

// epoll's data: which program (its id) and which of its descriptors.
enum Kind : std::uint64_t { kStdout = 0, kStderr = 1, kPidfd = 2 };
constexpr std::uint64_t kWakeTag = 0;  // the eventfd; program ids start at 1
std::uint64_t tag(std::uint64_t id, Kind kind) { return id << 2 | kind; }

}  // namespace

class Reactor::Loop {
 public:
  Loop() {
    epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
    event_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (epoll_.get() < 0 || event_.get() < 0) {
      throw Error(errc::internal, std::string("cannot create the worker's reactor: ") + std::strerror(errno));
    }
    watch(event_.get(), kWakeTag);
    // Detached: the loop lives as long as the process (see Reactor).
    std::thread([this] {
      logging::name_this_thread("reactor");
      main();
    }).detach();
  }

  void add(std::unique_ptr<Run> run) {
    {
      std::lock_guard lock(mutex_);
      incoming_.push_back(std::move(run));
    }
    ++running_;
    signal();
  }

  void signal() {
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto n = ::write(event_.get(), &one, sizeof one);  // EAGAIN: a wake is pending anyway
  }

  std::size_t running() const { return running_.load(); }

 private:
  void main() {
    // Signals are the worker's main thread's business; the reactor only
    // ever sees EINTR-free waits.
    sigset_t all;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, nullptr);
    std::array<epoll_event, 64> events{};
    while (true) {
      const int n = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), wait_ms());
      for (int i = 0; i < n; ++i) on_event(events[static_cast<std::size_t>(i)].data.u64);
      step(Clock::now());
    }
  }

  void watch(int fd, std::uint64_t data) {
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.u64 = data;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &e) != 0) {
      throw Error(errc::internal, std::string("cannot watch a job program's descriptor: ") + std::strerror(errno));
    }
  }

  // Stops watching and closes `fd` (removed before the close: a copy of it
  // in a child being forked elsewhere must not keep reporting it).
  void unwatch(Fd& fd) {
    if (fd.get() < 0) return;
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd.get(), nullptr);
    fd.reset();
  }

  void on_event(std::uint64_t data) {
    if (data == kWakeTag) {
      std::uint64_t count = 0;
      [[maybe_unused]] const auto n = ::read(event_.get(), &count, sizeof count);
      take_incoming();
      return;
    }
    const auto it = runs_.find(data >> 2);
    if (it == runs_.end()) return;
    Run& r = *it->second;
    r.touched = true;
    const auto kind = static_cast<Kind>(data & 3);
    if (kind == kPidfd) {
      r.pidfd_ready = true;
    } else {
      read_stream(r, r.streams[kind]);
    }
  }

  // Reads what the pipe holds; at its end, emits the last line and closes it.
  void read_stream(Run& r, Stream& s) {
    std::array<char, 8192> chunk{};
    for (int reads = 0; s.fd->get() >= 0 && reads < kReadsPerWake; ++reads) {
      const ssize_t n = ::read(s.fd->get(), chunk.data(), chunk.size());
      if (n > 0) {
        s.buffer.append(chunk.data(), static_cast<std::size_t>(n));
        emit_lines(s, r.on_line, false);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      // End of file (or a read error, which ends the stream the same way).
      emit_lines(s, r.on_line, true);
      unwatch(*s.fd);
    }
  }

  void take_incoming() {
    std::vector<std::unique_ptr<Run>> runs;
    {
      std::lock_guard lock(mutex_);
      runs.swap(incoming_);
    }
    for (auto& r : runs) begin(std::move(r));
  }

  // Spawns the program on this thread (its parent for PR_SET_PDEATHSIG).
  void begin(std::unique_ptr<Run> run) {
    Run& r = *run;
    r.outcome.started = std::chrono::system_clock::now();
    std::string error;
    int pid = -1;
    if (r.options.argv.empty() || r.options.argv[0].empty()) {
      error = "cannot execute the job: its argv is empty";
    } else {
      pid = spawn(r.options, r.out, r.err, error);
    }
    r.out.write.reset();
    r.err.write.reset();
    if (pid < 0) {
      r.outcome.spawn_error = error;
      r.outcome.exit_code = 127;
      end(r);
      return;
    }
    r.outcome.pid = pid;
    // The exit wakes the loop through a pidfd. Without one (a kernel
    // before 5.3) the exit is noticed on a short tick once the pipes are
    // closed.
    r.pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    if (r.options.timeout) r.deadline = Clock::now() + *r.options.timeout;
    const std::uint64_t id = next_id_++;
    try {
      watch(r.out.read.get(), tag(id, kStdout));
      watch(r.err.read.get(), tag(id, kStderr));
      if (r.pidfd.get() >= 0) watch(r.pidfd.get(), tag(id, kPidfd));
    } catch (const Error&) {
      // Cannot happen short of running out of memory: watch it the way a
      // kernel without pidfds is watched (the exit tick), output unread.
      unwatch(r.out.read);
      unwatch(r.err.read);
      unwatch(r.pidfd);
    }
    runs_.emplace(id, std::move(run));
  }

  // Acts on what is due for every program: exits, stop requests, deadlines.
  void step(Clock::time_point now) {
    for (auto it = runs_.begin(); it != runs_.end();) {
      Run& r = *it->second;
      if (const auto due = r.next_due(); due && *due <= now) r.touched = true;
      if (!r.exited && (r.pidfd_ready || r.pidfd.get() < 0)) reap_if_exited(r, now);
      if (!r.exited && enforce_limits(r, now)) r.touched = true;
      if (r.touched) {
        ++r.outcome.wakeups;
        r.touched = false;
      }
      if (r.exited && (!r.streams_open() || now >= r.drain_until)) {
        end(r);
        it = runs_.erase(it);
      } else {
        ++it;
      }
    }
  }

  // Until the nearest deadline of any program; -1: none.
  int wait_ms() const {
    std::optional<Clock::time_point> next;
    const auto now = Clock::now();
    for (const auto& [id, run] : runs_) {
      auto due = run->next_due();
      if (!run->exited && run->pidfd.get() < 0 && !run->streams_open()) {
        due = std::min(due.value_or(Clock::time_point::max()), now + kExitTick);
      }
      if (due && (!next || *due < *next)) next = due;
    }
    if (!next) return -1;
    const auto left = std::max(*next - now, Clock::duration::zero());
    return static_cast<int>(std::min<std::int64_t>(std::chrono::ceil<std::chrono::milliseconds>(left).count(),
                                                   std::numeric_limits<int>::max()));
  }

  void reap_if_exited(Run& r, Clock::time_point now) {
    const int pid = r.outcome.pid;
    siginfo_t info{};
    // WNOWAIT: the exited leader stays a zombie while we kill what is left
    // of its group, so the group id cannot be reused in between.
    if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid != pid) {
      r.pidfd_ready = false;
      return;
    }
    ::kill(-pid, SIGKILL);
    int status = 0;
    struct rusage ru {};
    while (::wait4(pid, &status, 0, &ru) < 0 && errno == EINTR) {
    }
    auto seconds = [](const timeval& t) {
      return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
    };
    ProcessOutcome& o = r.outcome;
    o.usage.cpu_user_s = seconds(ru.ru_utime);
    o.usage.cpu_system_s = seconds(ru.ru_stime);
    o.usage.max_rss_kb = static_cast<std::int64_t>(ru.ru_maxrss);  // KiB on Linux
    o.usage.source = "rusage";
    if (WIFEXITED(status)) o.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) o.term_signal = WTERMSIG(status);
    o.ended = std::chrono::system_clock::now();
    r.exited = true;
    unwatch(r.pidfd);
    // What is in the pipes now is read below; what the group's survivors
    // (a process that left the group) still write, for a moment longer.
    for (auto& s : r.streams) read_stream(r, s);
    r.drain_until = now + std::chrono::seconds(2);
  }

  // True when it acted (a stop request, the timeout, the end of a grace).
  bool enforce_limits(Run& r, Clock::time_point now) {
    const StopReason requested = r.stop != nullptr ? r.stop->load() : StopReason::none;
    if (!r.kill_at && requested != StopReason::none) {
      r.outcome.stopped = requested;
      terminate(r, now, requested == StopReason::shutdown ? r.options.shutdown_kill_grace : r.options.kill_grace);
      return true;
    }
    if (!r.kill_at && r.deadline && now >= *r.deadline) {
      r.outcome.timed_out = true;
      terminate(r, now, r.options.kill_grace);
      return true;
    }
    if (r.kill_at && !r.killed && now >= *r.kill_at) {
      if (r.options.kill) r.options.kill();
      ::kill(-r.outcome.pid, SIGKILL);
      r.killed = true;
      return true;
    }
    return false;
  }

  static void terminate(Run& r, Clock::time_point now, std::chrono::milliseconds grace) {
    if (r.options.terminate) {
      r.options.terminate(grace);
    } else {
      ::kill(-r.outcome.pid, SIGTERM);
    }
    r.kill_at = now + grace + r.options.kill_margin;
  }

  // The program is done: its last partial lines, then its outcome.
  void end(Run& r) {
    for (auto& s : r.streams) {
      emit_lines(s, r.on_line, true);
      unwatch(*s.fd);
    }
    unwatch(r.pidfd);
    if (r.outcome.ended == std::chrono::system_clock::time_point{}) r.outcome.ended = std::chrono::system_clock::now();
    --running_;
    r.on_exit(std::move(r.outcome));
  }

  Fd epoll_;
  Fd event_;
  std::mutex mutex_;  // guards incoming_
  std::vector<std::unique_ptr<Run>> incoming_;
  std::atomic<std::size_t> running_{0};
  // The reactor thread's alone.
  std::map<std::uint64_t, std::unique_ptr<Run>> runs_;
  std::uint64_t next_id_ = 1;
};

Reactor::Reactor() : loop_(std::make_unique<Loop>()) {}

Reactor& Reactor::instance() {
  // Never destroyed: its thread must outlive every program it started.
  static Reactor* const reactor = new Reactor();
  return *reactor;
}

void Reactor::start(ProcessOptions options, const std::atomic<StopReason>* stop, LineSink on_line, ExitSink on_exit) {
  auto run = std::make_unique<Run>();
  if (!options.argv.empty() && !options.argv[0].empty()) {
    make_pipe(run->out);
    make_pipe(run->err);
  }
  run->options = std::move(options);
  run->stop = stop;
  run->on_line = std::move(on_line);
  run->on_exit = std::move(on_exit);
  loop_->add(std::move(run));
}

void Reactor::wake() { loop_->signal(); }

std::size_t Reactor::running() const { return loop_->running(); }

bool request_stop(std::atomic<StopReason>& stop, StopReason reason) {
  StopReason expected = StopReason::none;
  if (!stop.compare_exchange_strong(expected, reason)) return false;
  Reactor::instance().wake();
  return true;
}

ProcessOutcome run_process(const ProcessOptions& options, const std::atomic<StopReason>& stop,
                           const LineSink& on_line) {
  std::promise<ProcessOutcome> done;
  auto outcome = done.get_future();
  Reactor::instance().start(options, &stop, on_line, [&done](ProcessOutcome o) { done.set_value(std::move(o)); });
  return outcome.get();
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
