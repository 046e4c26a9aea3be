#include "resident.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "conveyor/error/error.hpp"
#include "conveyor/logging/thread_name.hpp"
#include "conveyor/text/text.hpp"
#include "child_signals.hpp"
#include "fd.hpp"

namespace conveyor::worker {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// A program that dies sooner than this after its start counts as a crash
// loop: the next start waits 100 ms, doubling to 30 s, so it cannot spin.
constexpr auto kHealthyRun = std::chrono::seconds(10);
constexpr auto kFirstBackoff = std::chrono::milliseconds(100);
constexpr auto kMaxBackoff = std::chrono::seconds(30);
// How often the supervisor looks at its jobs' stop flags (set without a
// notify) and deadlines.
constexpr auto kStopTick = std::chrono::milliseconds(50);
// stderr is only ever a stray line: cut into pieces like a process job's.
constexpr std::size_t kMaxStderrLine = 64 * 1024;

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = sigabbrev_np(WTERMSIG(status));
    return name ? std::string("was killed by SIG") + name : "was killed by signal " + std::to_string(WTERMSIG(status));
  }
  return "ended";
}

// The job id a line starts with ({"id": 42, ...}), read without parsing:
// a line too long or too broken to parse still names its job.
std::optional<std::int64_t> leading_id(std::string_view s) {
  auto skip = [&] {
    while (!s.empty() && (s[0] == ' ' || s[0] == '\t')) s.remove_prefix(1);
  };
  auto eat = [&](std::string_view token) {
    skip();
    if (s.substr(0, token.size()) != token) return false;
    s.remove_prefix(token.size());
    return true;
  };
  if (!eat("{") || !eat("\"id\"") || !eat(":")) return std::nullopt;
  skip();
  std::int64_t id = 0;
  std::size_t digits = 0;
  while (digits < s.size() && digits < 18 && s[digits] >= '0' && s[digits] <= '9') {
    id = id * 10 + (s[digits] - '0');
    ++digits;
  }
  if (digits == 0) return std::nullopt;
  return id;
}

struct Spawned {
  pid_t pid = -1;
  std::shared_ptr<Fd> in;  // our end of its stdin
  std::unique_ptr<Fd> out;
  std::unique_ptr<Fd> err;
};

// fork + exec, with everything the child does prepared before the fork
// (only async-signal-safe calls after it). The program gets its own process
// group (killing it kills what it started) and dies with the thread that
// started it (PR_SET_PDEATHSIG): that thread lives as long as the program.
Spawned spawn_program(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
                      const fs::path& cwd) {
  std::array<int, 2> in{-1, -1};
  std::array<int, 2> out{-1, -1};
  std::array<int, 2> err{-1, -1};
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in.data()) != 0 || ::pipe2(out.data(), O_CLOEXEC) != 0 ||
      ::pipe2(err.data(), O_CLOEXEC) != 0) {
    const std::string why = std::strerror(errno);
    for (int fd : {in[0], in[1], out[0], out[1], err[0], err[1]}) {
      if (fd >= 0) ::close(fd);
    }
    throw Error(errc::internal, "cannot create the pipes of a resident program: " + why);
  }
  Spawned s;
  s.in = std::make_shared<Fd>(in[0]);
  s.out = std::make_unique<Fd>(out[0]);
  s.err = std::make_unique<Fd>(err[0]);
  Fd child_in(in[1]);
  Fd child_out(out[1]);
  Fd child_err(err[1]);
  ::fcntl(out[0], F_SETFL, ::fcntl(out[0], F_GETFL) | O_NONBLOCK);
  ::fcntl(err[0], F_SETFL, ::fcntl(err[0], F_GETFL) | O_NONBLOCK);

  std::vector<std::string> args = argv;
  std::vector<char*> c_argv;
  for (auto& a : args) c_argv.push_back(a.data());
  c_argv.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> c_env;
  for (auto& e : env_strings) c_env.push_back(e.data());
  c_env.push_back(nullptr);
  const std::string dir = cwd.string();
  const std::string exec_failed = "cannot execute '" + argv[0] + "': ";
  const pid_t parent = ::getpid();

  const pid_t pid = ::fork();
  if (pid < 0) throw Error(errc::internal, std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    ::setpgid(0, 0);
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) ::_exit(137);
    ::dup2(child_in.get(), 0);
    ::dup2(child_out.get(), 1);
    ::dup2(child_err.get(), 2);
    ::syscall(SYS_close_range, 3U, ~0U, 0U);
    reset_signals_of_child();
    if (::chdir(dir.c_str()) == 0) ::execvpe(c_argv[0], c_argv.data(), c_env.data());
    const char* why = std::strerror(errno);
    [[maybe_unused]] auto w1 = ::write(2, exec_failed.data(), exec_failed.size());
    [[maybe_unused]] auto w2 = ::write(2, why, std::strlen(why));
    [[maybe_unused]] auto w3 = ::write(2, "\n", 1);
    ::_exit(127);
  }
  s.pid = pid;
  return s;
}

// A program's stdout and stderr, read as they fill and cut into lines, each
// handed to `line`. A stdout line over kResidentMaxLine is dropped, its head
// handed to `oversized` (a message that long is refused); a stderr line over
// kMaxStderrLine is handed on in pieces. The supervisor's, under its lock.
class OutputLines {
 public:
  using Line = std::function<void(std::string_view stream, std::string_view line)>;
  using Oversized = std::function<void(std::string_view head)>;

  OutputLines(Fd& out, Fd& err, Line line, Oversized oversized)
      : streams_{Stream{"stdout", &out, {}, false}, Stream{"stderr", &err, {}, false}},
        line_(std::move(line)),
        oversized_(std::move(oversized)) {}

  // The pipes still open, as poll entries from pfds[0]; how many.
  nfds_t add_polls(std::array<pollfd, 4>& pfds) const {
    nfds_t n = 0;
    for (const auto& s : streams_) {
      if (s.fd->get() >= 0) pfds[n++] = pollfd{s.fd->get(), POLLIN, 0};
    }
    return n;
  }

  // Reads what the pipes hold; `last`: the program is gone, so what they
  // hold now is all there is (a stream ends at EAGAIN too).
  void read_available(bool last) {
    for (auto& s : streams_) {
      while (s.fd->get() >= 0) {
        const ssize_t r = ::read(s.fd->get(), chunk_.data(), chunk_.size());
        if (r > 0) {
          s.buffer.append(chunk_.data(), static_cast<std::size_t>(r));
          emit(s, false);
          continue;
        }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && !last) break;
        emit(s, true);
        s.fd->reset();
      }
    }
  }

 private:
  struct Stream {
    std::string_view name;
    Fd* fd;
    std::string buffer;
    bool oversized = false;  // dropping the rest of a line over the limit
  };

  // Hands on the whole lines of the buffer; `all`: the rest too (the stream ended).
  void emit(Stream& s, bool all) {
    std::size_t start = 0;
    for (std::size_t nl; (nl = s.buffer.find('\n', start)) != std::string::npos; start = nl + 1) {
      const std::string_view line = std::string_view(s.buffer).substr(start, nl - start);
      if (s.oversized) {
        s.oversized = false;  // its end: the next line is whole again
      } else {
        line_(s.name, line);
      }
    }
    s.buffer.erase(0, start);
    const std::size_t limit = s.name == "stdout" ? kResidentMaxLine : kMaxStderrLine;
    if (s.buffer.size() > limit) {
      if (s.name == "stdout") {
        if (!s.oversized) oversized_(std::string_view(s.buffer).substr(0, 256));
        s.oversized = true;
      } else {
        line_(s.name, s.buffer);
      }
      s.buffer.clear();
    }
    if (all && !s.buffer.empty()) {
      if (!s.oversized) line_(s.name, s.buffer);
      s.buffer.clear();
    }
  }

  std::array<Stream, 2> streams_;
  Line line_;
  Oversized oversized_;
  std::array<char, 65536> chunk_{};
};

}  // namespace

// ---------------------------------------------------------------- program

// One job on a program, from start() until its result is read (or its
// stop or timeout before it was sent). Moved on by the program's
// supervisor (ResidentProgram::drive), under the program's mutex.
struct InFlight {
  std::int64_t id = 0;
  LineSink on_line;
  ExitSink on_exit;
  std::string text;  // its line to the program
  const std::atomic<StopReason>* stop = nullptr;
  std::chrono::milliseconds kill_grace{0};
  std::chrono::milliseconds shutdown_kill_grace{0};
  std::optional<Clock::time_point> deadline;
  Clock::time_point kill_at = Clock::time_point::max();  // set once its cancel was sent
  bool cancel_sent = false;
  int generation = 0;  // the program start it was sent to; 0: not sent
  bool done = false;   // its result (or its program's death) came
  bool ended = false;  // stopped or timed out before it was sent
  bool succeeded = false;
  std::string error_subtype;
  std::string error_message;
  ProcessOutcome outcome;
};

// One running (or restarting) program of a job type. Its supervisor thread
// starts it when a job waits for it, reads its stdout and stderr, writes
// its stdin, notices its death and moves its jobs on (drive): no thread
// per job. Thread-safe.
class ResidentProgram {
 public:
  ResidentProgram(std::string type, std::vector<std::string> argv, std::map<std::string, std::string> env, fs::path dir,
                  std::chrono::milliseconds kill_grace, std::shared_ptr<spdlog::logger> log)
      : type_(std::move(type)),
        argv_(std::move(argv)),
        env_(std::move(env)),
        dir_(std::move(dir)),
        kill_grace_(kill_grace),
        log_(std::move(log)) {
    thread_ = std::thread([this] {
      logging::name_this_thread("resident");
      supervise();
    });
  }
  ~ResidentProgram() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    poke();
    if (thread_.joinable()) thread_.join();
  }
  ResidentProgram(const ResidentProgram&) = delete;
  ResidentProgram& operator=(const ResidentProgram&) = delete;

  void start(const ProcessOptions& options, const ResidentJob& job, const std::atomic<StopReason>& stop,
             LineSink on_line, ExitSink on_exit);

 private:
  void supervise();
  void start_program(std::unique_lock<std::mutex>& lock);
  void read_until_exit(std::unique_lock<std::mutex>& lock, Spawned& p);
  void stop_program(std::unique_lock<std::mutex>& lock, Spawned& p);
  void on_output(std::string_view stream, std::string_view line);
  void on_oversized(std::string_view head);
  void stray(std::string_view stream, std::string_view line);
  void finish(InFlight& f, bool succeeded, std::string subtype, std::string message);
  void fail_sent(int generation, const std::string& message);
  void kill_locked(const std::string& why);
  void program_ended(pid_t pid, int status);
  void drive(std::unique_lock<std::mutex>& lock);
  void step(InFlight& f, Clock::time_point now);
  void send(const std::string& line, Clock::time_point now);
  void flush_stdin(Clock::time_point now);
  static void complete(InFlight& f);
  std::string name() const { return "resident program of " + type_; }
  // Ends the supervisor's wait on the program's pipes at once (a job to send).
  void wait_for_output(std::array<pollfd, 4>& pfds, nfds_t n, bool reads);
  void poke() {
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(poke_.get(), &one, sizeof one);
  }

  const std::string type_;
  const std::vector<std::string> argv_;
  const std::map<std::string, std::string> env_;
  const fs::path dir_;
  const std::chrono::milliseconds kill_grace_;
  const std::shared_ptr<spdlog::logger> log_;

  std::mutex mutex_;
  std::condition_variable wake_;  // the supervisor: a job waits, or stopping
  std::map<std::int64_t, std::shared_ptr<InFlight>> in_flight_;
  pid_t pid_ = -1;             // unreaped while set: a kill cannot hit another process
  std::shared_ptr<Fd> stdin_;  // set while the program runs
  int generation_ = 0;         // counts starts
  std::string kill_reason_;    // why we killed the running program, if we did
  std::string last_stderr_;    // its last words, for the jobs its death fails
  bool stopping_ = false;
  // What its stdin has not taken yet, and since when (it is killed when it
  // does not read for longer than the kill grace and a second).
  std::string outbox_;
  Clock::time_point outbox_since_{};
  // Written by poke(): part of the supervisor's poll, so a job handed over
  // is sent to the program at once, not at the next stop tick (50 ms: that
  // capped a worker's four slots at 80 no-op jobs a second).
  Fd poke_{::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)};
  std::thread thread_;
};

void ResidentProgram::finish(InFlight& f, bool succeeded, std::string subtype, std::string message) {
  if (f.done) return;
  f.done = true;
  f.succeeded = succeeded;
  f.error_subtype = std::move(subtype);
  f.error_message = std::move(message);
}

void ResidentProgram::fail_sent(int generation, const std::string& message) {
  for (auto& [id, f] : in_flight_) {
    if (f->generation == generation) finish(*f, false, "resident_program", message);
  }
}

void ResidentProgram::kill_locked(const std::string& why) {
  if (pid_ <= 0) return;
  if (kill_reason_.empty()) kill_reason_ = why;
  ::kill(-pid_, SIGKILL);
}

// Not in any job's log: the worker's, unless exactly one job is in flight
// (then it can only be about that job).
void ResidentProgram::stray(std::string_view stream, std::string_view line) {
  if (stream == "stderr") last_stderr_ = std::string(line.substr(0, 1000));
  std::shared_ptr<InFlight> only;
  int sent = 0;
  for (auto& [id, f] : in_flight_) {
    if (f->generation == generation_ && !f->done) {
      only = f;
      ++sent;
    }
  }
  if (sent == 1) {
    only->on_line(stream, line);
  } else if (log_) {
    log_->warn("{} (pid {}) {}: {}", name(), pid_, stream, line.substr(0, 4096));
  }
}

void ResidentProgram::on_oversized(std::string_view head) {
  const auto id = leading_id(head);
  const auto it = id ? in_flight_.find(*id) : in_flight_.end();
  const std::string what = fmt::format("{} (pid {}) wrote a line longer than {} bytes", name(), pid_, kResidentMaxLine);
  if (it == in_flight_.end()) {
    if (log_) log_->warn("{} naming no job in flight: dropped", what);
    return;
  }
  finish(*it->second, false, "resident_protocol",
         fmt::format("{} for job {} (a message is one line of at most 1 MiB)", what, *id));
}

// One line of the program's stdout: a message about a job, or stray.
void ResidentProgram::on_output(std::string_view stream, std::string_view line) {
  if (stream != "stdout" || line.find_first_not_of(" \t") == std::string_view::npos ||
      line[line.find_first_not_of(" \t")] != '{') {
    stray(stream, line);
    return;
  }
  json m;
  try {
    m = text::parse_json(line, {.max_bytes = kResidentMaxLine, .max_depth = 64});
  } catch (const std::exception& e) {
    const auto id = leading_id(line);
    if (auto it = id ? in_flight_.find(*id) : in_flight_.end(); it != in_flight_.end()) {
      finish(*it->second, false, "resident_protocol",
             fmt::format("{} wrote a malformed line for job {}: {}", name(), *id, e.what()));
    } else {
      stray(stream, line);
    }
    return;
  }
  const auto idj = m.is_object() ? m.find("id") : m.end();
  if (!m.is_object() || idj == m.end() || !idj->is_number_integer()) {
    stray(stream, line);
    return;
  }
  const std::int64_t id = idj->get<std::int64_t>();
  const auto it = in_flight_.find(id);
  if (it == in_flight_.end() || it->second->done) {
    if (log_) log_->warn("{} wrote about job {}, which is not in flight on it: ignored", name(), id);
    return;
  }
  InFlight& f = *it->second;
  auto protocol_error = [&](const std::string& what) {
    finish(f, false, "resident_protocol", fmt::format("{} wrote an invalid message for job {}: {}", name(), id, what));
  };
  if (auto log = m.find("log"); log != m.end()) {
    if (!log->is_string()) return protocol_error("\"log\" must be a string");
    const std::string s = m.value("stream", std::string("stdout"));
    f.on_line(s == "stderr" ? "stderr" : "stdout", log->get_ref<const std::string&>());
    return;
  }
  const auto status = m.find("status");
  if (status == m.end()) return protocol_error("it needs \"log\" or \"status\"");
  if (*status == "done") {
    if (auto o = m.find("outputs"); o != m.end() && !o->is_null()) {
      f.on_line("conveyor", "result outputs: " + o->dump());
    }
    finish(f, true, "", "");
  } else if (*status == "failed") {
    const auto error = m.find("error");
    finish(f, false, "job_failed",
           error != m.end() && error->is_string() && !error->get_ref<const std::string&>().empty()
               ? error->get<std::string>()
               : "the resident program reported the job failed (no \"error\" given)");
  } else {
    protocol_error("\"status\" must be \"done\" or \"failed\", got " + status->dump());
  }
}

// Runs while the pool lives: (re)starts the program whenever a job waits
// for it, with a back-off after a short-lived run; moves waiting jobs on
// meanwhile (their stop or timeout).
void ResidentProgram::supervise() {
  std::unique_lock lock(mutex_);
  int crashes = 0;
  Clock::time_point next_start = Clock::now();
  while (true) {
    drive(lock);
    if (stopping_) return;
    if (in_flight_.empty()) {
      wake_.wait(lock, [&] { return stopping_ || !in_flight_.empty(); });
      continue;
    }
    if (const auto now = Clock::now(); now < next_start) {
      wake_.wait_until(lock, std::min(next_start, now + kStopTick));
      continue;
    }
    const auto started = Clock::now();
    start_program(lock);
    const bool short_run = Clock::now() - started < kHealthyRun;
    crashes = short_run ? crashes + 1 : 0;
    if (crashes > 0) {
      const auto backoff = std::min<Clock::duration>(kMaxBackoff, kFirstBackoff * (1 << std::min(crashes - 1, 9)));
      next_start = Clock::now() + backoff;
      if (!stopping_ && log_) {
        log_->warn("{}: next start in {} ms ({} short run(s) in a row)", name(),
                   std::chrono::duration_cast<std::chrono::milliseconds>(backoff).count(), crashes);
      }
    }
  }
}

// Starts the program and serves it until it exits (or the pool stops).
void ResidentProgram::start_program(std::unique_lock<std::mutex>& lock) {
  const int generation = ++generation_;
  Spawned p;
  try {
    std::error_code ec;
    fs::create_directories(dir_, ec);
    lock.unlock();
    p = spawn_program(argv_, env_, dir_);
    lock.lock();
  } catch (const std::exception& e) {
    if (!lock.owns_lock()) lock.lock();
    for (auto& [id, f] : in_flight_) {
      finish(*f, false, "resident_program", fmt::format("cannot start the {}: {}", name(), e.what()));
    }
    return;
  }
  pid_ = p.pid;
  stdin_ = p.in;
  kill_reason_.clear();
  last_stderr_.clear();
  if (log_) log_->info("{} started (pid {}, start {})", name(), p.pid, generation);
  read_until_exit(lock, p);
}

void ResidentProgram::read_until_exit(std::unique_lock<std::mutex>& lock, Spawned& p) {
  OutputLines output(
      *p.out, *p.err, [this](std::string_view stream, std::string_view line) { on_output(stream, line); },
      [this](std::string_view head) { on_oversized(head); });
  int status = 0;
  while (true) {
    drive(lock);
    std::array<pollfd, 4> pfds{};
    nfds_t n = output.add_polls(pfds);
    const bool reads = n > 0;
    if (!outbox_.empty() && stdin_) pfds[n++] = pollfd{stdin_->get(), POLLOUT, 0};
    const bool stopping = stopping_;
    lock.unlock();
    if (stopping) stop_program(lock, p);  // returns with the program exited, unlocked
    wait_for_output(pfds, n, reads);
    lock.lock();
    output.read_available(false);
    siginfo_t info{};
    // WNOWAIT: it stays a zombie (pid_ still ours to kill) until we are done.
    if (::waitid(P_PID, static_cast<id_t>(p.pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == p.pid) {
      // What is left in the pipes (from it or what it started) is its last output.
      ::kill(-p.pid, SIGKILL);
      output.read_available(true);
      while (::waitpid(p.pid, &status, 0) < 0 && errno == EINTR) {
      }
      break;
    }
  }
  program_ended(p.pid, status);
}

// Waits, unlocked, for output on the program's pipes (pfds[0, n)), room on
// its stdin, a poke (a job to send) or the stop tick; with no pipe left
// open, a short sleep.
void ResidentProgram::wait_for_output(std::array<pollfd, 4>& pfds, nfds_t n, bool reads) {
  if (!reads) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return;
  }
  pfds[n++] = pollfd{poke_.get(), POLLIN, 0};
  ::poll(pfds.data(), n, static_cast<int>(kStopTick.count()));
  std::uint64_t pokes = 0;
  [[maybe_unused]] const ssize_t drained = ::read(poke_.get(), &pokes, sizeof pokes);
}

// The program (pid) ended with `status`: the jobs sent to it fail, saying
// why, and so does the worker's log. Locked.
void ResidentProgram::program_ended(pid_t pid, int status) {
  const std::string how = kill_reason_.empty() ? describe_status(status) : "was killed: " + kill_reason_;
  std::string message = fmt::format("the {} (pid {}) {} while the job ran", name(), pid, how);
  if (!last_stderr_.empty()) message += "; its last stderr line: " + last_stderr_;
  const bool had_jobs = std::any_of(in_flight_.begin(), in_flight_.end(), [&](const auto& kv) {
    return kv.second->generation == generation_ && !kv.second->done;
  });
  fail_sent(generation_, message);
  // It could not be executed at all: the jobs still waiting for it would
  // only wait for the next failed start.
  if (kill_reason_.empty() && WIFEXITED(status) && WEXITSTATUS(status) == 127) {
    for (auto& [id, f] : in_flight_) finish(*f, false, "resident_program", message);
  }
  if (log_ && !stopping_) {
    if (had_jobs || kill_reason_.empty()) {
      log_->warn("the {} (pid {}) {}{}", name(), pid, how, had_jobs ? ": its jobs in flight failed" : "");
    }
  }
  pid_ = -1;
  stdin_.reset();
  outbox_.clear();
}

// The pool is going away: EOF on its stdin asks it to exit; after the kill
// grace it is killed. Called unlocked; returns unlocked once it exited.
void ResidentProgram::stop_program(std::unique_lock<std::mutex>& lock, Spawned& p) {
  p.in->reset();
  lock.lock();
  stdin_.reset();
  lock.unlock();
  const auto kill_at = Clock::now() + kill_grace_;
  while (Clock::now() < kill_at) {
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(p.pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == p.pid) {
      return;
    }
    // Its output is not read any more: drain it so it cannot block on a full pipe.
    std::array<char, 65536> sink{};
    for (Fd* fd : {p.out.get(), p.err.get()}) {
      if (fd->get() >= 0) {
        while (::read(fd->get(), sink.data(), sink.size()) > 0) {
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  lock.lock();
  kill_locked("the worker stopped and it did not exit within the kill grace");
  lock.unlock();
}

void ResidentProgram::start(const ProcessOptions& options, const ResidentJob& job, const std::atomic<StopReason>& stop,
                            LineSink on_line, ExitSink on_exit) {
  auto f = std::make_shared<InFlight>();
  f->outcome.started = std::chrono::system_clock::now();
  json line = {{"id", job.id},
               {"attempt", job.attempt},
               {"job_type", job.type},
               {"params", job.params},
               {"out_dir", job.out_dir.string()},
               {"deadline_ms", options.timeout ? json(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                          (f->outcome.started + *options.timeout).time_since_epoch())
                                                          .count())
                                               : json(nullptr)}};
  f->text = line.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  f->id = job.id;
  f->on_line = std::move(on_line);
  f->on_exit = std::move(on_exit);
  f->stop = &stop;
  f->kill_grace = options.kill_grace;
  f->shutdown_kill_grace = options.shutdown_kill_grace;
  if (options.timeout) f->deadline = Clock::now() + *options.timeout;
  {
    std::lock_guard lock(mutex_);
    if (f->text.size() > kResidentMaxLine) {
      finish(*f, false, "resident_protocol",
             fmt::format("job {}'s message to the {} is {} bytes, over the {} bytes of a line", job.id, name(),
                         f->text.size(), kResidentMaxLine));
    } else if (!in_flight_.emplace(job.id, f).second) {
      finish(*f, false, "resident_protocol", fmt::format("job {} is already in flight on the {}", job.id, name()));
    } else {
      wake_.notify_all();
      poke();
      return;
    }
  }
  complete(*f);
}

// Moves every job in flight on (step), writes what the program's stdin can
// take, and ends the jobs that are over. Called by the supervisor, locked;
// unlocks to hand the ended jobs over.
void ResidentProgram::drive(std::unique_lock<std::mutex>& lock) {
  const auto now = Clock::now();
  std::vector<std::shared_ptr<InFlight>> over;
  for (auto it = in_flight_.begin(); it != in_flight_.end();) {
    if (!it->second->done && !it->second->ended) step(*it->second, now);
    if (it->second->done || it->second->ended) {
      over.push_back(it->second);
      it = in_flight_.erase(it);
    } else {
      ++it;
    }
  }
  flush_stdin(now);
  if (over.empty()) return;
  lock.unlock();
  for (auto& f : over) complete(*f);
  lock.lock();
}

// One job: sent once the program runs; on a stop or its timeout, its
// cancel line, and the program killed if the job has not ended after the
// grace (its death then ends the job).
void ResidentProgram::step(InFlight& f, Clock::time_point now) {
  if (f.generation == 0 && stdin_) {
    f.generation = generation_;
    send(f.text, now);
  }
  const StopReason requested = f.stop->load();
  const bool timed_out = f.deadline && now >= *f.deadline;
  if (!f.cancel_sent && (requested != StopReason::none || timed_out)) {
    f.cancel_sent = true;
    if (requested != StopReason::none) {
      f.outcome.stopped = requested;
    } else {
      f.outcome.timed_out = true;
    }
    if (f.generation == 0) {
      f.ended = true;  // never sent: nothing to stop
      return;
    }
    // A job taken from this worker is canceled, as far as the program knows.
    const char* reason = requested == StopReason::shutdown ? "shutdown"
                         : requested != StopReason::none   ? "canceled"
                                                           : "timeout";
    f.kill_at = now + (requested == StopReason::shutdown ? f.shutdown_kill_grace : f.kill_grace);
    if (f.generation == generation_ && stdin_) send(json{{"cancel", f.id}, {"reason", reason}}.dump() + "\n", now);
    return;
  }
  if (now >= f.kill_at) {
    if (f.generation == generation_) {
      kill_locked(fmt::format("job {} did not stop within the kill grace after its cancel ({})", f.id,
                              f.outcome.timed_out ? "timeout" : "stop"));
    }
    f.kill_at = Clock::time_point::max();  // its death ends the job
  }
}

void ResidentProgram::send(const std::string& line, Clock::time_point now) {
  if (outbox_.empty()) outbox_since_ = now;
  outbox_ += line;
}

// Writes what the program's stdin (a socket: a dead reader is EPIPE, not a
// SIGPIPE that would end the worker) takes without blocking. A program
// that does not read it for longer than the kill grace and a second is
// killed.
void ResidentProgram::flush_stdin(Clock::time_point now) {
  while (!outbox_.empty() && stdin_) {
    const ssize_t n = ::send(stdin_->get(), outbox_.data(), outbox_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      outbox_.erase(0, static_cast<std::size_t>(n));
      outbox_since_ = now;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    outbox_.clear();  // it cannot take any more: its death fails its jobs
    return;
  }
  if (!outbox_.empty() && now - outbox_since_ > kill_grace_ + std::chrono::seconds(1)) {
    outbox_.clear();
    kill_locked("it did not read its stdin");
  }
}

// Hands the job's outcome over (ExitSink), unlocked.
void ResidentProgram::complete(InFlight& f) {
  ProcessOutcome outcome = std::move(f.outcome);
  outcome.ended = std::chrono::system_clock::now();
  if (f.done && f.succeeded && outcome.stopped == StopReason::none && !outcome.timed_out) {
    outcome.exit_code = 0;
  } else if (f.done && !f.succeeded) {
    outcome.error_subtype = f.error_subtype;
    outcome.error_message = f.error_message;
  }
  f.on_exit(std::move(outcome));
}

// ---------------------------------------------------------------- pool

ResidentPool::ResidentPool() = default;

ResidentPool::~ResidentPool() {
  std::lock_guard lock(mutex_);
  programs_.clear();  // each stops its program
}

void ResidentPool::start(const ProcessOptions& options, const ResidentJob& job, const std::atomic<StopReason>& stop,
                         LineSink on_line, ExitSink on_exit) {
  if (options.argv.empty() || options.argv[0].empty()) {
    ProcessOutcome o;
    o.started = o.ended = std::chrono::system_clock::now();
    o.error_subtype = "resident_program";
    o.error_message = "cannot start the resident program of " + job.type + ": its argv is empty";
    on_exit(std::move(o));
    return;
  }
  std::map<std::string, std::string> env = options.env;
  for (const char* own : {"CONVEYOR_JOB_ID", "CONVEYOR_JOB_ATTEMPT", "CONVEYOR_OUTPUT_DIR"}) {
    env.erase(own);
  }
  // A type whose command or env changed gets a program of its own; the old
  // one keeps serving the jobs it has (and idles until the pool stops).
  std::string key = job.type;
  for (const auto& a : options.argv) key += '\0' + a;
  key += '\1';
  for (const auto& [k, v] : env) key += '\0' + k + '=' + v;
  std::shared_ptr<ResidentProgram> program;
  {
    std::lock_guard lock(mutex_);
    auto& slot = programs_[key];
    if (!slot) {
      slot =
          std::make_shared<ResidentProgram>(job.type, options.argv, env, job.program_dir, options.kill_grace, job.log);
    }
    program = slot;
  }
  program->start(options, job, stop, std::move(on_line), std::move(on_exit));
}

}  // namespace conveyor::worker
