// conveyor-stack: starts, stops and reports a private PostgreSQL cluster and a
// detached conveyor-devbroker in one directory. tools/dev uses .conveyor/,
// the ctest `testenv` fixture build/dev/testenv. It never runs migrations
// (that is `conveyor db migrate`).
//
// Layout of DIR:
//   env            sourceable shell file: CONVEYOR_DATABASE_URL, CONVEYOR_KAFKA_BROKERS, ...
//   pg-location    where the cluster lives: DIR/pg, or, when the postgres
//                  user cannot reach DIR (a 0700 parent), conveyor-<hash>/pg
//                  under /tmp (--ephemeral), /var/lib/conveyor-stack (root)
//                  or /var/tmp
//   broker/        devbroker.pid, bootstrap, devbroker.log, port
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>

#include "conveyor/error/error.hpp"
#include "conveyor/testing/testing.hpp"

namespace fs = std::filesystem;
namespace ct = conveyor::testing;

namespace {

constexpr const char* kUsage =
    "usage: conveyor-stack up --dir DIR [--ephemeral] [--pg-port N] [--broker-port N]\n"
    "       conveyor-stack down --dir DIR\n"
    "       conveyor-stack status --dir DIR\n"
    "       conveyor-stack --help | --version\n"
    "\n"
    "up      start (or keep) PostgreSQL in DIR/pg and a devbroker in DIR/broker,\n"
    "        create database `conveyor`, write DIR/env (source it)\n"
    "        --ephemeral: fsync off (tests; a crash may lose data)\n"
    "down    stop both (fine when nothing runs)\n"
    "status  print what runs; exit 0 when everything runs, else 3\n";

struct Args {
  std::string command;
  fs::path dir;
  bool ephemeral = false;
  int pg_port = 0;
  int broker_port = 0;
};

[[noreturn]] void usage_error(const std::string& what) {
  std::cerr << "conveyor-stack: " << what << "\n\n" << kUsage;
  std::exit(2);
}

int parse_port(const std::string& option, const std::string& text) {
  try {
    std::size_t used = 0;
    int port = std::stoi(text, &used);
    if (used == text.size() && port > 0 && port <= 65535) return port;
  } catch (const std::logic_error&) {
    // Reported below with the option's name.
  }
  usage_error(option + ": expected a port in [1, 65535], got '" + text + "'");
}

Args parse_args(int argc, char** argv) {
  Args args;
  if (argc < 2) usage_error("missing command");
  args.command = argv[1];
  if (args.command == "--help" || args.command == "-h" || args.command == "help") {
    std::cout << kUsage;
    std::exit(0);
  }
  if (args.command == "--version") {
    std::cout << "conveyor-stack " << CONVEYOR_VERSION << "\n";
    std::exit(0);
  }
  if (args.command != "up" && args.command != "down" && args.command != "status") {
    usage_error("unknown command '" + args.command + "'");
  }
  for (int i = 2; i < argc; ++i) {
    std::string option = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(option + ": missing value");
      return argv[++i];
    };
    if (option == "--dir") {
      args.dir = value();
    } else if (option == "--ephemeral" && args.command == "up") {
      args.ephemeral = true;
    } else if (option == "--pg-port" && args.command == "up") {
      args.pg_port = parse_port(option, value());
    } else if (option == "--broker-port" && args.command == "up") {
      args.broker_port = parse_port(option, value());
    } else {
      usage_error("unknown option " + option + " for " + args.command);
    }
  }
  if (args.dir.empty()) usage_error("--dir is required");
  args.dir = fs::absolute(args.dir).lexically_normal();
  return args;
}

std::string read_trimmed(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  std::string text = s.str();
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

// Readers (TestEnv, a shell sourcing env) must never see half a file.
void write_atomically(const fs::path& path, const std::string& content) {
  fs::path tmp = path;
  tmp += ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << content;
    if (!out.flush()) {
      throw conveyor::Error(conveyor::errc::unavailable, "cannot write " + tmp.string());
    }
  }
  fs::rename(tmp, path);
}

// ---------------------------------------------------------------- postgres

fs::path recorded_pg_dir(const fs::path& dir) {
  std::string recorded = read_trimmed(dir / "pg-location");
  return recorded.empty() ? dir / "pg" : fs::path(recorded);
}

// Where a cluster goes that the postgres user cannot reach in DIR: /tmp for
// an ephemeral one (tests); else a folder kept across reboots (Debian
// empties /tmp at boot, and with it a development stack's jobs):
// /var/lib/conveyor-stack when it can be made (root), else /var/tmp.
fs::path fallback_parent(bool ephemeral) {
  if (ephemeral) return "/tmp";
  std::error_code ec;
  const fs::path lib = "/var/lib/conveyor-stack";
  fs::create_directories(lib, ec);
  if (!ec && ::access(lib.c_str(), W_OK) == 0) return lib;
  return "/var/tmp";
}

// DIR/pg when the postgres user can reach it, else a folder named after DIR
// under fallback_parent() (clones may live under a 0700 home directory).
// Once chosen it is recorded in DIR/pg-location and kept.
fs::path choose_pg_dir(const fs::path& dir, bool ephemeral) {
  if (fs::exists(dir / "pg-location")) return recorded_pg_dir(dir);
  fs::path pg = dir / "pg";
  if (!ct::PostgresCluster::reachable_by_postgres(pg)) {
    std::ostringstream name;
    name << "conveyor-" << std::hex << std::hash<std::string>{}(dir.string());
    pg = fallback_parent(ephemeral) / name.str() / "pg";
    std::cout << "postgres: user postgres cannot reach " << dir.string() << "; using " << pg.string()
              << (pg.string().starts_with("/tmp/") ? " (emptied at boot)" : " (kept across reboots)") << "\n";
  }
  write_atomically(dir / "pg-location", pg.string() + "\n");
  return pg;
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

void ensure_database(const ct::PostgresCluster& cluster, const std::string& name) {
  const std::string admin = cluster.url("postgres");
  auto exists = [&] {
    auto r = ct::psql(admin, "SELECT 1 FROM pg_database WHERE datname = '" + name + "'");
    if (r.status != 0) {
      throw conveyor::Error(conveyor::errc::unavailable, "psql " + admin + ": " + r.output);
    }
    return trimmed(r.output) == "1";
  };
  if (exists()) return;
  auto r = ct::psql(admin, "CREATE DATABASE \"" + name + "\"");
  if (r.status != 0 && !exists()) {  // another `up` may have created it meanwhile
    throw conveyor::Error(conveyor::errc::unavailable, "CREATE DATABASE " + name + " failed: " + r.output);
  }
  std::cout << "postgres: created database " << name << "\n";
}

// ---------------------------------------------------------------- devbroker

// Alive and not a zombie (an orphan may wait long for its reaper).
bool alive(long pid) {
  if (pid <= 0) return false;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return false;
  auto close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return false;
  char state = stat[close + 2];
  return state != 'Z' && state != 'X';
}

// The pid in broker/devbroker.pid when that process is a running devbroker.
std::optional<long> running_broker(const fs::path& broker_dir) {
  long pid = std::atol(read_trimmed(broker_dir / "devbroker.pid").c_str());
  if (!alive(pid)) return std::nullopt;
  std::string cmdline = read_trimmed("/proc/" + std::to_string(pid) + "/cmdline");
  if (cmdline.find("conveyor-devbroker") == std::string::npos) return std::nullopt;  // pid reused
  return pid;
}

std::string start_broker(const fs::path& broker_dir, int requested_port) {
  if (auto pid = running_broker(broker_dir)) {
    std::string bootstrap = read_trimmed(broker_dir / "bootstrap");
    std::cout << "devbroker: already running, pid " << *pid << " at " << bootstrap << "\n";
    return bootstrap;
  }
  fs::create_directories(broker_dir);
  // The port it had last time, so an exported CONVEYOR_KAFKA_BROKERS stays valid.
  int previous = std::atoi(read_trimmed(broker_dir / "port").c_str());
  ct::Broker::Options o;
  o.dir = broker_dir;
  o.detach = true;
  o.port = requested_port != 0 ? requested_port : previous;
  std::unique_ptr<ct::Broker> broker;
  try {
    broker = std::make_unique<ct::Broker>(o);
  } catch (const conveyor::Error&) {
    if (requested_port != 0 || previous == 0) throw;
    std::cout << "devbroker: port " << previous << " is taken; using a free one\n";
    o.port = 0;
    broker = std::make_unique<ct::Broker>(o);
  }
  std::string bootstrap = broker->bootstrap();
  write_atomically(broker_dir / "devbroker.pid", std::to_string(broker->pid()) + "\n");
  std::string port = bootstrap.substr(0, bootstrap.find(','));
  write_atomically(broker_dir / "port", port.substr(port.rfind(':') + 1) + "\n");
  std::cout << "devbroker: started, pid " << broker->pid() << " at " << bootstrap << "\n";
  return bootstrap;
}

bool stop_broker(const fs::path& broker_dir) {
  auto pid = running_broker(broker_dir);
  if (!pid) return false;
  ::kill(static_cast<pid_t>(*pid), SIGTERM);
  if (!ct::wait_until([&] { return !alive(*pid); }, std::chrono::seconds(5))) {
    ::kill(static_cast<pid_t>(*pid), SIGKILL);
    ct::wait_until([&] { return !alive(*pid); }, std::chrono::seconds(5));
  }
  std::error_code ec;
  fs::remove(broker_dir / "devbroker.pid", ec);
  return true;
}

// ---------------------------------------------------------------- commands

int up(const Args& args) {
  fs::create_directories(args.dir);
  const fs::path pg_dir = choose_pg_dir(args.dir, args.ephemeral);
  bool was_running = ct::PostgresCluster::running_in(pg_dir);
  ct::PostgresCluster::Options o;
  o.dir = pg_dir;
  o.port = args.pg_port;
  o.keep_running = true;
  o.ephemeral = args.ephemeral;
  ct::PostgresCluster cluster(o);
  if (was_running) {
    std::cout << "postgres: already running on port " << cluster.port() << " (" << pg_dir.string() << ")\n";
    if (args.pg_port != 0 && args.pg_port != cluster.port()) {
      std::cout << "postgres: note: --pg-port " << args.pg_port
                << " ignored; run `conveyor-stack down` first to change it\n";
    }
  } else {
    std::cout << "postgres: started on port " << cluster.port() << " (" << pg_dir.string() << ")\n";
  }
  ensure_database(cluster, "conveyor");

  const fs::path broker_dir = args.dir / "broker";
  std::string bootstrap = start_broker(broker_dir, args.broker_port);
  auto broker_pid = running_broker(broker_dir);

  const std::string base = "postgresql://postgres@127.0.0.1:" + std::to_string(cluster.port());
  std::ostringstream env;
  env << "# Written by `conveyor-stack up --dir " << args.dir.string() << "`; source it.\n"
      << "export CONVEYOR_DATABASE_URL=" << base << "/conveyor\n"
      << "export CONVEYOR_KAFKA_BROKERS=" << bootstrap << "\n"
      << "# For conveyor::testing and people, not exported: services warn about\n"
      << "# CONVEYOR_* variables they do not know.\n"
      << "CONVEYOR_PG_URL_BASE=" << base << "\n"
      << "CONVEYOR_TEST_PG_PORT=" << cluster.port() << "\n"
      << "CONVEYOR_PG_DIR='" << pg_dir.string() << "'\n"
      << "CONVEYOR_DEVBROKER_PID=" << broker_pid.value_or(0) << "\n";
  write_atomically(args.dir / "env", env.str());
  std::cout << "env: " << (args.dir / "env").string() << "\n";
  return 0;
}

int down(const Args& args) {
  const fs::path pg_dir = recorded_pg_dir(args.dir);
  if (stop_broker(args.dir / "broker")) {
    std::cout << "devbroker: stopped\n";
  } else {
    std::cout << "devbroker: was not running\n";
  }
  if (ct::PostgresCluster::stop_in(pg_dir)) {
    std::cout << "postgres: stopped\n";
  } else {
    std::cout << "postgres: was not running\n";
  }
  return 0;
}

int status(const Args& args) {
  const fs::path pg_dir = recorded_pg_dir(args.dir);
  bool all = true;
  if (auto port = ct::PostgresCluster::port_in(pg_dir)) {
    std::cout << "postgres: running on port " << *port << " (" << pg_dir.string() << ")\n";
  } else {
    std::cout << "postgres: stopped\n";
    all = false;
  }
  const fs::path broker_dir = args.dir / "broker";
  if (auto pid = running_broker(broker_dir)) {
    std::cout << "devbroker: running pid " << *pid << " at " << read_trimmed(broker_dir / "bootstrap") << "\n";
  } else {
    std::cout << "devbroker: stopped\n";
    all = false;
  }
  return all ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
  Args args = parse_args(argc, argv);
  try {
    if (args.command == "up") return up(args);
    if (args.command == "down") return down(args);
    return status(args);
  } catch (const std::exception& e) {
    std::cerr << "conveyor-stack " << args.command << ": " << e.what() << "\n";
    return 1;
  }
}
