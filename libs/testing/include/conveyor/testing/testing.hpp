#pragma once
// conveyor::testing — the fixture library for tests, benchmarks and tools/dev.
//
// Gives real parts on free ports: a private PostgreSQL cluster (initdb and
// pg_ctl from Debian's postgresql-15, run as the `postgres` user when we are
// root), a database per test, and a conveyor-devbroker process per test.
// Everything is torn down by destructors, so a failing test still cleans up.
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace conveyor::testing {

// ---------------------------------------------------------------- processes

// A child process in its own process group. Destructor: SIGTERM to the
// group, then SIGKILL after 5 s. Not thread-safe.
class ChildProcess {
 public:
  struct Options {
    std::vector<std::string> argv;
    std::map<std::string, std::string> env;  // added to (and overriding) our environment
    std::filesystem::path stdout_file;       // empty: inherit
    std::filesystem::path stderr_file;       // empty: same as stdout_file, or inherit
    bool detach = false;                     // new session, not killed by the destructor (tools/dev)
  };
  explicit ChildProcess(Options options);  // throws std::runtime_error naming argv[0]
  ~ChildProcess();
  ChildProcess(ChildProcess&&) noexcept;
  ChildProcess& operator=(ChildProcess&&) = delete;

  int pid() const noexcept { return pid_; }
  bool running();
  // Sends `sig` to the whole process group.
  void signal(int sig);
  // Waits up to `timeout` for exit; returns the exit status (128+signal when
  // killed) or nullopt if it is still running.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  // SIGTERM, wait up to grace, then SIGKILL; returns the exit status.
  int stop(std::chrono::milliseconds grace = std::chrono::seconds(5));

 private:
  int pid_ = -1;
  bool detached_ = false;
  std::optional<int> status_;
};

// Runs argv to completion; returns {exit status, stdout+stderr}.
struct RunResult {
  int status = -1;
  std::string output;
};
RunResult run(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env = {},
              std::chrono::milliseconds timeout = std::chrono::seconds(120));

// Runs the conveyor CLI (`cli` is its path) with `args` and `env`; the output
// without the CLI's "conveyor: warning:" lines (it warns about the harness's
// own variables, such as CONVEYOR_TESTENV_DIR, which are no CLI keys).
RunResult run_cli(const std::string& cli, const std::vector<std::string>& args,
                  const std::map<std::string, std::string>& env);

// The whole content of a file; "" when it cannot be read.
std::string read_text(const std::filesystem::path& path);

// How many threads process `pid` has now (/proc/<pid>/task); 0 when it is gone.
std::size_t thread_count(int pid);

// Runs `sql` with psql (-X -q -A -t, ON_ERROR_STOP) against `url`. For what a
// transaction cannot do (CREATE/DROP DATABASE); tests and tools only.
RunResult psql(const std::string& url, const std::string& sql);

// Live (non-zombie) members of process group `pgid`, read from /proc.
std::set<int> process_group_members(int pgid);
// The parent of process `pid` (/proc/<pid>/stat); 0 when it is gone.
int parent_pid(int pid);

// A TCP port on 127.0.0.1 that was free when asked.
int free_port();

// A TCP port on 127.0.0.1 that was free when asked and lies below the
// kernel's ephemeral range (net.ipv4.ip_local_port_range), so that neither
// free_port() nor the source port of an outgoing connection takes it while
// its server is down: for a server a test stops and starts again on the same
// port (PostgresCluster::start, Broker::resume).
int free_restartable_port();

// Polls `condition` every 10 ms (backing off to 100 ms) until it returns true
// or `timeout` passes; returns the last result. The one way tests wait.
bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout);

// ---------------------------------------------------------------- postgres

// A private PostgreSQL cluster in `dir` listening on 127.0.0.1:port (and a
// unix socket in dir/run). trust authentication, superuser `postgres`.
// Reuses a cluster already running in `dir`. Owned by one test process or
// conveyor-stack; not thread-safe.
class PostgresCluster {
 public:
  struct Options {
    std::filesystem::path dir;
    int port = 0;               // 0: the port it had last time if free, else a free port
    bool keep_running = false;  // destructor leaves it running (tools/dev)
    bool ephemeral = false;     // fsync off: fast, but a crash may lose data (tests)
    // With ephemeral: synchronous_commit stays on, so that stop(immediate) (a
    // crash of PostgreSQL, not of the machine) loses no acknowledged commit.
    bool durable_commits = false;
  };
  // pg_ctl stop -m <mode>: fast (clients disconnected, checkpoint) or
  // immediate (every process quits at once; crash recovery at the next start).
  enum class StopMode { fast, immediate };
  explicit PostgresCluster(Options options);  // initdb if needed, then start
  ~PostgresCluster();                         // stop unless keep_running
  int port() const noexcept { return port_; }
  // libpq URI for `database` on this cluster.
  std::string url(const std::string& database = "postgres") const;
  // Stops it (fast); the destructor then does nothing.
  void stop();
  // Stops it with `mode` (pg_ctl -w: returns once the postmaster is gone);
  // start() brings it back.
  void stop(StopMode mode);
  // Starts a stopped cluster again on the same port (pg_ctl -w: returns once
  // it accepts connections, crash recovery included). Retries for up to
  // `port_wait` while something else holds the port; throws after that.
  // No-op while it runs.
  void start(std::chrono::milliseconds port_wait = std::chrono::seconds(10));
  bool running() const;
  const std::filesystem::path& dir() const noexcept { return options_.dir; }
  // Its server log (dir/postgres.log).
  std::filesystem::path log_file() const;
  // Stops a cluster left running in `dir` (pg_ctl stop -m fast); false if none ran.
  static bool stop_in(const std::filesystem::path& dir);
  static bool running_in(const std::filesystem::path& dir);
  // Port of the cluster running in `dir`, from its postmaster.pid.
  static std::optional<int> port_in(const std::filesystem::path& dir);
  // False when we are root and the `postgres` user could not create and use
  // `dir` (a parent directory it cannot traverse); true otherwise.
  static bool reachable_by_postgres(const std::filesystem::path& dir);

 private:
  // pg_ctl start on `port`; the pg_ctl output and server log tail in *error.
  bool launch(int port, std::string* error);
  Options options_;
  int port_ = 0;
  bool stopped_ = false;
};

// ---------------------------------------------------------------- broker

// A conveyor-devbroker process on a free port. Destructor stops it. Owned by
// one test; not thread-safe.
class Broker {
 public:
  struct Options {
    std::filesystem::path dir;           // empty: a fresh temp dir
    int port = 0;                        // 0: a free port
    bool detach = false;                 // tools/dev: survives this process
    std::filesystem::path executable{};  // empty: devbroker_path()
  };
  Broker();
  explicit Broker(Options options);
  ~Broker();
  const std::string& bootstrap() const noexcept { return bootstrap_; }
  int pid() const;
  // Stops the broker; clients see it down until resume().
  void stop();
  // Starts a stopped broker again on the same port (messages are lost: the
  // devbroker keeps data in memory). No-op while it runs.
  void resume();
  // stop() then resume().
  void restart();

 private:
  void start();
  Options options_;
  std::unique_ptr<ChildProcess> process_;
  std::string bootstrap_;
  bool owns_dir_ = false;  // a temp dir we made: removed by the destructor
};

// ---------------------------------------------------------------- environment

// The PostgreSQL cluster a test run shares. Comes from CONVEYOR_TESTENV_DIR
// (written by `conveyor-stack up`, the ctest fixture) when set, else a
// cluster started for this process and stopped at exit. get() is safe from
// any thread (a function-local static).
class TestEnv {
 public:
  static TestEnv& get();
  // URL of the maintenance database (postgres) of the shared cluster.
  std::string admin_url() const;
  std::string url(const std::string& database) const;
};

// A database of its own for one test, dropped (WITH (FORCE)) by the destructor.
// Owned by one test; query/exec open a connection per call, so they may be
// called from several threads.
class TestDatabase {
 public:
  // migrate: run `db init` and every migration of the repository's migrations dir.
  explicit TestDatabase(bool migrate = true);
  // The same on another cluster than the shared one (a Stack's private one).
  explicit TestDatabase(const PostgresCluster& cluster, bool migrate = true);
  ~TestDatabase();
  const std::string& name() const noexcept { return name_; }
  const std::string& url() const noexcept { return url_; }
  // Runs literal SQL (tests only) and returns the first column of the first
  // row as text, or "" when there is no row; throws on error with the message.
  std::string query_value(const std::string& sql) const;
  // Runs literal SQL; returns every row as a vector of text fields ("" for NULL).
  std::vector<std::vector<std::string>> query(const std::string& sql) const;
  void exec(const std::string& sql) const;

 private:
  void create(bool migrate);
  std::string name_;
  std::string admin_url_;  // the maintenance database of its cluster
  std::string url_;
};

// Creates an API token named `name` with `role` ("reader", "submitter",
// "operator") in the database at `url` (auth::create_token) and returns it.
std::string create_api_token(const std::string& url, const std::string& name, const std::string& role);
// {"Authorization": "Bearer <token>"}, plus Content-Type: application/json
// when `json_body`.
std::map<std::string, std::string> bearer(const std::string& token, bool json_body = false);

// The value of sample `name` (`conveyor_stage_probes_total{step="admit"}`)
// on the /metrics of the service at `address` (host:port); -1 when it is
// not exposed or the service does not answer (yet).
double metric_sample(const std::string& address, const std::string& name);

// A name unique in this run, e.g. for topic prefixes: "<prefix>_<pid>_<n>_<rand>".
std::string unique_name(const std::string& prefix);

// Path of the repository's migrations directory (compile-time default).
std::filesystem::path migrations_dir();
// Path of the built conveyor-devbroker executable.
std::filesystem::path devbroker_path();

}  // namespace conveyor::testing
