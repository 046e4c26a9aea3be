#pragma once
// Runs one job's program as a child process: argv executed directly (never
// through a shell) in its own process group, stdout/stderr read line by line,
// the timeout enforced with SIGTERM then SIGKILL to the whole group, and
// stop requests (cancel, shutdown) honoured the same way.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace conveyor::worker {

// Why a process was asked to stop before it exited by itself. Set by other
// threads (the cancel watcher, the shutdown path); read by run_process.
enum class StopReason : int { none = 0, canceled = 1, shutdown = 2 };

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
  // and kill_margin have passed. Called on the run_process thread: they
  // must return at once (start what they do in the background).
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
  // How often the wait for the program woke up (output, exit, deadlines,
  // the stop tick): a sleeping program with closed pipes costs a few, not
  // one every 5 ms.
  int wakeups = 0;
};

// Called for every complete line (without the newline) and for a last
// partial line; stream is "stdout" or "stderr". Called from the calling thread.
using LineSink = std::function<void(std::string_view stream, std::string_view line)>;

// Runs the process to its end on the calling thread. `stop` may be set from
// another thread at any time. Never throws for a failure of the program
// itself (see ProcessOutcome); throws conveyor::Error(internal) when the
// pipes cannot be created.
//
// The program is started directly with clone(CLONE_VM | CLONE_VFORK) and
// execve (no shell, no trampoline: a few hundred microseconds of the
// worker's CPU). The job's program dies with the worker: before execve the
// child asks the kernel for SIGKILL when the thread that started it goes
// away (PR_SET_PDEATHSIG; this thread, which lives until the program has
// exited). So a worker killed -9 leaves no job running behind it, while the
// reconciler requeues that job elsewhere. The exit wakes the wait through a
// pidfd: no tick once the program's pipes are closed.
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
