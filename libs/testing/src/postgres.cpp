// conveyor::testing PostgresCluster: a private cluster from Debian's
// postgresql-15 binaries. PostgreSQL refuses to run as root, so as root
// every initdb/pg_ctl runs as the `postgres` user through runuser(1).
#include <pwd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "conveyor/error/error.hpp"
#include "conveyor/testing/testing.hpp"

namespace fs = std::filesystem;

namespace conveyor::testing {
namespace {

constexpr const char* kPgUser = "postgres";

fs::path pg_bindir() {
  if (const char* env = std::getenv("CONVEYOR_PG_BINDIR"); env != nullptr && *env != '\0') {
    return env;
  }
  // Newest installed major version wins.
  fs::path best;
  std::error_code ec;
  int best_version = 0;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    int version = std::atoi(entry.path().filename().c_str());
    if (version > best_version && fs::exists(entry.path() / "bin" / "pg_ctl")) {
      best_version = version;
      best = entry.path() / "bin";
    }
  }
  if (best.empty()) {
    throw Error(errc::not_found,
                "PostgreSQL server binaries not found under /usr/lib/postgresql "
                "(install postgresql-15, or set CONVEYOR_PG_BINDIR)");
  }
  return best;
}

bool as_root() { return ::geteuid() == 0; }

// argv for a PostgreSQL tool, run as `postgres` when we are root.
std::vector<std::string> pg_command(const std::string& tool, std::vector<std::string> args) {
  std::vector<std::string> argv;
  if (as_root()) argv = {"runuser", "-u", kPgUser, "--"};
  argv.push_back((pg_bindir() / tool).string());
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

void chown_to_postgres(const fs::path& path) {
  if (!as_root()) return;
  passwd* pw = ::getpwnam(kPgUser);
  if (pw == nullptr) {
    throw Error(errc::not_found,
                "user postgres does not exist (install postgresql-15); needed to run PostgreSQL as root");
  }
  if (::chown(path.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
    throw Error(errc::unavailable, "chown postgres " + path.string() + ": " + std::strerror(errno));
  }
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string tail(const std::string& text, std::size_t n = 3000) {
  return text.size() <= n ? text : "..." + text.substr(text.size() - n);
}

// postmaster.pid: pid, data dir, start time, port, socket dir, listen address, ...
struct PidFile {
  long pid = 0;
  int port = 0;
};

std::optional<PidFile> read_pid_file(const fs::path& dir) {
  std::ifstream in(dir / "data" / "postmaster.pid");
  if (!in) return std::nullopt;
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  if (lines.size() < 4) return std::nullopt;
  PidFile f;
  f.pid = std::atol(lines[0].c_str());
  f.port = std::atoi(lines[3].c_str());
  if (f.pid <= 0 || f.port <= 0) return std::nullopt;
  return f;
}

// Alive and a postgres (a stale postmaster.pid may name a reused pid).
bool pid_alive(long pid) {
  if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno != EPERM) return false;
  std::string cmdline = read_file("/proc/" + std::to_string(pid) + "/cmdline");
  return cmdline.find("postgres") != std::string::npos;
}

}  // namespace

RunResult psql(const std::string& url, const std::string& sql) {
  fs::path bin = pg_bindir() / "psql";
  if (!fs::exists(bin)) bin = "psql";
  return run({bin.string(), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql}, {},
             std::chrono::seconds(60));
}

bool PostgresCluster::reachable_by_postgres(const fs::path& dir) {
  if (!as_root()) return true;
  // The nearest existing ancestor: we create the rest as root and chown it.
  fs::path p = fs::absolute(dir);
  while (!fs::exists(p) && p.has_parent_path() && p != p.parent_path()) p = p.parent_path();
  std::vector<std::string> argv = {"runuser", "-u", kPgUser, "--", "test", "-x", p.string()};
  if (p == fs::absolute(dir) && fs::exists(p)) {
    // The directory itself exists: it must also become writable for postgres,
    // which chown gives it; only traversal of the parents matters.
    argv.back() = p.has_parent_path() ? p.parent_path().string() : p.string();
  }
  return run(argv, {}, std::chrono::seconds(30)).status == 0;
}

std::optional<int> PostgresCluster::port_in(const fs::path& dir) {
  auto f = read_pid_file(dir);
  if (!f || !pid_alive(f->pid)) return std::nullopt;
  return f->port;
}

bool PostgresCluster::running_in(const fs::path& dir) { return port_in(dir).has_value(); }

bool PostgresCluster::stop_in(const fs::path& dir) {
  if (!running_in(dir)) return false;
  auto r = run(pg_command("pg_ctl", {"-D", (dir / "data").string(), "-m", "fast", "-w", "-t", "60", "stop"}));
  if (r.status != 0 && running_in(dir)) {
    throw Error(errc::unavailable, "pg_ctl stop in " + dir.string() + " failed: " + tail(r.output));
  }
  return true;
}

PostgresCluster::PostgresCluster(Options options) : options_(std::move(options)) {
  if (options_.dir.empty()) throw Error(errc::bad_input, "PostgresCluster: empty dir");
  const fs::path dir = fs::absolute(options_.dir);
  options_.dir = dir;
  if (!reachable_by_postgres(dir)) {
    throw Error(errc::unavailable, "PostgreSQL runs as user postgres, which cannot reach " + dir.string() +
                                       " (a parent directory is not traversable): make the parents "
                                       "traversable (chmod o+x) or use a directory under /tmp");
  }
  const fs::path data = dir / "data";
  const fs::path run_dir = dir / "run";
  fs::create_directories(dir);
  fs::create_directories(run_dir);
  chown_to_postgres(dir);
  chown_to_postgres(run_dir);

  if (auto port = port_in(dir)) {  // already running (tools/dev up twice): reuse
    port_ = *port;
    return;
  }

  if (!fs::exists(data / "PG_VERSION")) {
    std::error_code ec;
    fs::remove_all(data, ec);  // a half-done initdb
    auto r = run(pg_command("initdb", {"-D", data.string(), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8",
                                       "--locale=C.UTF-8", "--no-instructions"}));
    if (r.status != 0) {
      throw Error(errc::unavailable,
                  "initdb -D " + data.string() + " failed (exit " + std::to_string(r.status) + "): " + tail(r.output));
    }
  }
  // A crashed cluster leaves a stale postmaster.pid; PostgreSQL handles it.

  // The port it had last time, so URLs in .conveyor/env stay valid.
  const fs::path port_file = dir / "port";
  int stored = 0;
  if (std::ifstream in(port_file); in) in >> stored;

  std::string last_error;
  for (int attempt = 0; attempt < 5; ++attempt) {
    int port = options_.port;
    bool chosen = false;
    if (port == 0) {
      chosen = true;
      port = (attempt == 0 && stored > 0) ? stored : free_port();
    }
    if (launch(port, &last_error)) {
      port_ = port;
      std::ofstream(port_file) << port << "\n";
      return;
    }
    // Another process took the port between free_port() and the bind: try another.
    if (!chosen || last_error.find("Address already in use") == std::string::npos) break;
  }
  throw Error(errc::unavailable, "cannot start PostgreSQL in " + dir.string() + ": " + last_error);
}

bool PostgresCluster::launch(int port, std::string* error) {
  const fs::path& dir = options_.dir;
  const fs::path run_dir = dir / "run";
  std::string socket_dir = run_dir.string();
  // sun_path holds 107 bytes; beyond that PostgreSQL cannot create the socket.
  if ((run_dir / ".s.PGSQL.65535.lock").string().size() > 100) socket_dir.clear();
  if (socket_dir.find('\'') != std::string::npos) {
    throw Error(errc::bad_input, "PostgresCluster: dir may not contain a quote: " + dir.string());
  }
  std::string opts =
      "-p " + std::to_string(port) + " -k '" + socket_dir + "' -c listen_addresses=127.0.0.1 -c max_connections=200";
  if (options_.ephemeral) {
    opts += " -c fsync=off -c full_page_writes=off";
    if (!options_.durable_commits) opts += " -c synchronous_commit=off";
  }
  // For profiling, e.g. "-c shared_preload_libraries=pg_stat_statements".
  if (const char* extra = std::getenv("CONVEYOR_TEST_PG_OPTIONS"); extra != nullptr && *extra != '\0') {
    opts += std::string(" ") + extra;
  }
  auto r = run(pg_command(
      "pg_ctl", {"-D", (dir / "data").string(), "-l", log_file().string(), "-w", "-t", "60", "-o", opts, "start"}));
  if (r.status == 0) return true;
  *error = "pg_ctl start failed (exit " + std::to_string(r.status) + "): " + tail(r.output) + "\n" +
           log_file().string() + ":\n" + tail(read_file(log_file()));
  return false;
}

void PostgresCluster::start(std::chrono::milliseconds port_wait) {
  if (running()) {
    stopped_ = false;
    return;
  }
  std::string error;
  const auto deadline = std::chrono::steady_clock::now() + port_wait;
  bool started = false;
  while (!(started = launch(port_, &error))) {
    // Only a port held by someone else is worth waiting for.
    if (error.find("Address already in use") == std::string::npos || std::chrono::steady_clock::now() >= deadline) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // retry pacing
  }
  if (!started) {
    throw Error(errc::unavailable, "cannot start PostgreSQL again in " + options_.dir.string() + " on port " +
                                       std::to_string(port_) + ": " + error);
  }
  stopped_ = false;
}

bool PostgresCluster::running() const { return running_in(options_.dir); }

fs::path PostgresCluster::log_file() const { return options_.dir / "postgres.log"; }

void PostgresCluster::stop(StopMode mode) {
  stopped_ = true;
  if (!running()) return;
  const char* m = mode == StopMode::immediate ? "immediate" : "fast";
  auto r = run(pg_command("pg_ctl", {"-D", (options_.dir / "data").string(), "-m", m, "-w", "-t", "60", "stop"}));
  if (r.status != 0 && running()) {
    throw Error(errc::unavailable,
                std::string("pg_ctl stop -m ") + m + " in " + options_.dir.string() + " failed: " + tail(r.output));
  }
}

PostgresCluster::~PostgresCluster() {
  if (options_.keep_running || stopped_) return;
  try {
    stop();
  } catch (const std::exception& e) {
    // A destructor cannot throw; say what was left behind.
    std::cerr << "conveyor::testing: stopping PostgreSQL in " << options_.dir << ": " << e.what() << "\n";
  }
}

std::string PostgresCluster::url(const std::string& database) const {
  return "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/" + database;
}

void PostgresCluster::stop() {
  stopped_ = true;
  stop_in(options_.dir);
}

}  // namespace conveyor::testing
