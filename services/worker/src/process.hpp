#pragma once
// Runs job programs as child processes: argv executed directly (never
// through a shell) in its own process group, stdout/stderr read line by line,
// the timeout enforced with SIGTERM then SIGKILL to the whole group, and
// stop requests (cancel, shutdown) honoured the same way. Every program of
// the worker process is watched by one Reactor thread (epoll), not by a
// thread of its own.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace conveyor::worker {

// Why a process was asked to stop before it exited by itself. Set by other
// threads (the cancel watcher, the shutdown path) through request_stop(),
// which wakes the reactor; read by the reactor.
// taken: the job is no longer this worker's (the reconciler requeued it, an
// operator moved it): its program is stopped and its end recorded nowhere.
enum class StopReason : int { none = 0, canceled = 1, shutdown = 2, taken = 3 };

// Sets `stop` to `reason` unless a reason is set already, then wakes the
// reactor so that it acts on it now. True when this call set it.
bool request_stop(std::atomic<StopReason>& stop, StopReason reason);

struct ProcessOptions {
  std::vector<std::string> argv;                     // argv[0] is looked up in PATH
  std::map<std::string, std::string> env;            // the complete environment
  std::filesystem::path cwd;                         // must exist
  std::optional<std::chrono::milliseconds> timeout;  // nullopt: none
  std::chrono::milliseconds kill_grace{5000};        // SIGTERM -> SIGKILL
  // The same for StopReason::shutdown: shorter when the service's own
  // shutdown deadline leaves less time.
  std::chrono::milliseconds shutdown_kill_grace{5000};
  // How to stop the job when it is more than this process group (a
  // container outlives the `podman run` client). Unset: SIGTERM, then
  // SIGKILL after the grace, to the process group. Set: terminate(grace)
  // instead of SIGTERM, and kill() then SIGKILL to the group once the grace
  // and kill_margin have passed. Called on the reactor thread: they must
  // return at once (start what they do in the background).
  std::function<void(std::chrono::milliseconds grace)> terminate;
  std::function<void()> kill;
  std::chrono::milliseconds kill_margin{0};
};

// What an attempt cost. Process jobs: wait4's rusage (the program and the
// children it waited for). Container jobs: the container's cgroup. Unset
// when it could not be read.
struct Usage {
  std::optional<double> cpu_user_s;
  std::optional<double> cpu_system_s;
  std::optional<std::int64_t> max_rss_kb;
  std::string source;  // "rusage" | "cgroup" | "" (none)
};

struct ProcessOutcome {
  int pid = -1;
  // Set when argv[0] could not be executed; exit_code is then 127.
  std::optional<std::string> spawn_error;
  std::optional<int> exit_code;           // normal exit
  std::optional<int> term_signal;         // killed by a signal
  bool timed_out = false;                 // we killed it after the timeout
  StopReason stopped = StopReason::none;  // we killed it on request
  // Why the job failed, when its runner knows better than an exit code
  // (a resident program's "failed" result, its death, a protocol error).
  std::string error_subtype{};
  std::string error_message{};
  std::chrono::system_clock::time_point started;
  std::chrono::system_clock::time_point ended;
  Usage usage;
  // How often the reactor woke up for this program (its output, its exit,
  // its deadlines, a stop request for it): a sleeping program with closed
  // pipes costs a few, not one every 5 ms.
  int wakeups = 0;
};

// Called for every complete line (without the newline) and for a last
// partial line (a line over 64 KiB comes in pieces); stream is "stdout" or
// "stderr". Called on the reactor thread: it must not block for long.
using LineSink = std::function<void(std::string_view stream, std::string_view line)>;

// Called on the reactor thread once the program has exited and its output
// is read: it must return at once (hand the outcome to another thread).
using ExitSink = std::function<void(ProcessOutcome outcome)>;

// The thread that starts and watches every job program of this process:
// one epoll loop over the programs' pipes and pidfds (the exit), woken by
// an eventfd for new programs and stop requests, sleeping until the nearest
// deadline (a timeout, the SIGKILL after a grace). Process-wide and never
// destroyed: its thread is the parent of every program it spawns, and
// PR_SET_PDEATHSIG kills a program when the thread that started it goes
// away, so it must live as long as the worker. Thread-safe.
class Reactor {
 public:
  static Reactor& instance();
  Reactor(const Reactor&) = delete;
  Reactor& operator=(const Reactor&) = delete;

  // Starts `options` on the reactor thread and watches it to its end, then
  // calls `on_exit` (a program that cannot be executed: at once, with
  // spawn_error set and exit code 127). `stop` (may be null) must outlive
  // the run; set it with request_stop(). Throws conveyor::Error(internal)
  // when the pipes cannot be created. Never call it from on_line/on_exit
  // and wait on the result there.
  void start(ProcessOptions options, const std::atomic<StopReason>* stop, LineSink on_line, ExitSink on_exit);
  // Makes the reactor look at every stop flag now.
  void wake();
  // Programs started and not yet ended (for tests and metrics).
  std::size_t running() const;

 private:
  Reactor();
  struct Run;
  class Loop;
  std::unique_ptr<Loop> loop_;
};

// Runs the process to its end on the reactor and waits for it on the
// calling thread (the runtime's short calls: podman inspect, pull, rm; the
// tests). `stop` may be set from another thread (request_stop) at any
// time. Never throws for a failure of the program itself (see
// ProcessOutcome); throws conveyor::Error(internal) when the pipes cannot
// be created. Must not be called on the reactor thread.
//
// The program is started directly with clone(CLONE_VM | CLONE_VFORK) and
// execve (no shell, no trampoline: a few hundred microseconds of the
// worker's CPU) by the reactor thread. The job's program dies with the
// worker: before execve the child asks the kernel for SIGKILL when the
// thread that started it goes away (PR_SET_PDEATHSIG; the reactor's, which
// lives as long as the process). So a worker killed -9 leaves no job
// running behind it, while the reconciler requeues that job elsewhere.
ProcessOutcome run_process(const ProcessOptions& options, const std::atomic<StopReason>& stop, const LineSink& on_line);

// The environment a job's program starts from, taken from the worker's own
// (`worker_env`): PATH (a default when unset), HOME (the worker's, else
// "/"), and LANG, LC_ALL, TZ and TMPDIR when set. Nothing else of the
// worker's reaches a job: not its configuration (CONVEYOR_*: the database
// URL, API tokens, TLS files), not its database settings (PG*), not any
// other secret it was started with. The job type's `env` and the job's own
// variables go on top (job_environment).
std::map<std::string, std::string> job_base_environment(const std::map<std::string, std::string>& worker_env);

// `base`, then the type's `type_env` without its reserved names (their names
// go to `refused`, when given), then `own` (CONVEYOR_JOB_ID, ...), each
// layer winning over the one before.
std::map<std::string, std::string> job_environment(const std::map<std::string, std::string>& base,
                                                   const std::map<std::string, std::string>& type_env,
                                                   const std::map<std::string, std::string>& own,
                                                   std::vector<std::string>* refused = nullptr);

}  // namespace conveyor::worker
