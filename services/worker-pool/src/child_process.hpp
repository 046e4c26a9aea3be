#pragma once
// Child processes of the local backend: started with posix_spawn (argv only,
// never through a shell), left in the caller's process group (so whoever
// signals the pool's group reaches its workers too), collected with
// waitpid(WNOHANG). Plain functions on pids; the caller owns the bookkeeping.
// Thread-safe in the sense of the system calls they wrap: a pid must be
// reaped by one thread only.
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace conveyor::workerpool {

struct SpawnOptions {
  std::filesystem::path executable;        // absolute, or relative to the current directory
  std::vector<std::string> args;           // after argv[0] (argv[0] is the executable's file name)
  std::map<std::string, std::string> env;  // the complete environment
  // Empty: stdout and stderr are inherited; else both are appended to this file.
  std::filesystem::path log_file;
};

// Starts the process and returns its pid. The child gets /dev/null as stdin,
// default signal dispositions and an empty signal mask (whatever the
// caller's threads block), and none of the caller's other descriptors.
// Throws conveyor::Error(unavailable) naming the executable when it cannot
// be started.
int spawn_child(const SpawnOptions& options);

struct ExitStatus {
  std::optional<int> code;    // exited normally
  std::optional<int> signal;  // killed by a signal
  bool success() const { return code && *code == 0; }
  // "exit code 0", "exit code 3", "killed by SIGKILL".
  std::string describe() const;
};

// waitpid(pid, WNOHANG): the status once the child has exited (it is then
// reaped), nullopt while it runs. A pid that is not our child any more
// reports an exit with signal 0 ("gone").
std::optional<ExitStatus> try_reap(int pid);

// kill(pid, sig); false when the process no longer exists.
bool send_signal(int pid, int sig);

// The executable to run: `configured` when set; else `name` in the
// directory of `self` (/proc/self/exe: an installed image), then in
// `self`/../worker (the build tree), then on `path` (PATH). nullopt when
// none is an executable file.
std::optional<std::filesystem::path> find_executable(const std::string& configured, const std::string& name,
                                                     const std::filesystem::path& self, const std::string& path);

// A new 0700 directory under $TMPDIR named <prefix>XXXXXX; `what` names its
// purpose in the error. Throws Error(unavailable).
std::filesystem::path make_private_dir(const std::string& prefix, const std::string& what);
// Writes `content` to `file` with mode 0600. Throws Error(unavailable).
void write_private_file(const std::filesystem::path& file, const std::string& content);

}  // namespace conveyor::workerpool
