// The e2e stack: real service processes on one test database and broker.
#include "conveyor/testing/stack.hpp"

#include <csignal>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "conveyor/http/client.hpp"

namespace conveyor::testing {

std::filesystem::path executable(const std::string& name) {
  static const std::map<std::string, std::string> kPaths = {
      {"conveyor", CONVEYOR_BIN_CONVEYOR},
      {"conveyor-creation", CONVEYOR_BIN_CREATION},
      {"conveyor-configuration", CONVEYOR_BIN_CONFIGURATION},
      {"conveyor-execution", CONVEYOR_BIN_EXECUTION},
      {"conveyor-publication", CONVEYOR_BIN_PUBLICATION},
      {"conveyor-worker", CONVEYOR_BIN_WORKER},
      {"conveyor-workerpool", CONVEYOR_BIN_WORKERPOOL},
      {"conveyor-monitor", CONVEYOR_BIN_MONITOR},
      {"conveyor-example-task", CONVEYOR_BIN_EXAMPLE_TASK},
      {"conveyor-webhook-sink", CONVEYOR_BIN_WEBHOOK_SINK},
  };
  auto it = kPaths.find(name);
  if (it == kPaths.end()) throw std::runtime_error("unknown executable " + name);
  return it->second;
}

Stack::Stack() : Stack(Options{}) {}

std::filesystem::path Stack::exe(const std::string& name) const {
  return options_.bin_dir.empty() ? executable(name) : options_.bin_dir / name;
}

Stack::Stack(Options options) : options_(std::move(options)) {
  data_dir_ = std::filesystem::temp_directory_path() / unique_name("conveyor-e2e");
  if (options_.private_postgres) {
    // The cluster lives in data_dir_, which the postgres user (we may be root) must traverse.
    std::filesystem::create_directories(data_dir_);
    std::filesystem::permissions(data_dir_, std::filesystem::perms::owner_all | std::filesystem::perms::group_exec |
                                                std::filesystem::perms::others_exec);
    PostgresCluster::Options po;
    po.dir = data_dir_ / "postgres";
    po.port = free_restartable_port();
    po.ephemeral = options_.postgres_durability != Options::Durability::full;  // fsync off
    // synchronous_commit on: an immediate stop (a PostgreSQL crash) loses no commit.
    po.durable_commits = options_.postgres_durability != Options::Durability::none;
    postgres_ = std::make_unique<PostgresCluster>(po);
    db_ = std::make_unique<TestDatabase>(*postgres_, true);
  } else {
    db_ = std::make_unique<TestDatabase>(true);
  }
  Broker::Options bo;
  bo.port = options_.broker_port;
  if (!options_.bin_dir.empty()) bo.executable = exe("conveyor-devbroker");
  broker_ = std::make_unique<Broker>(bo);
  prefix_ = unique_name("e2e");
  std::filesystem::create_directories(data_dir_);
  std::string path = exe("conveyor-example-task").parent_path().string();
  if (const char* p = std::getenv("PATH")) path += std::string(":") + p;
  env_ = {
      {"CONVEYOR_DATABASE_URL", db_->url()},
      {"CONVEYOR_KAFKA_BROKERS", broker_->bootstrap()},
      {"CONVEYOR_TOPIC_PREFIX", prefix_},
      {"CONVEYOR_DATA_DIR", data_dir_.string()},
      {"CONVEYOR_LOG_LEVEL", "info"},
      {"CONVEYOR_POLL_INTERVAL_MS", "1000"},
      {"CONVEYOR_MIGRATIONS_DIR", migrations_dir().string()},
      {"PATH", path},
  };
  for (const auto& [k, v] : options_.env) env_[k] = v;
  if (options_.apply_job_types) {
    auto file = options_.job_types_file.empty() ? migrations_dir().parent_path() / "config" / "job-types.json"
                                                : options_.job_types_file;
    auto r = cli({"job-type", "apply", "--yes", file.string()});
    if (r.status != 0) throw std::runtime_error("applying job types failed: " + r.output);
  }
  if (!options_.setup_sql.empty()) db_->exec(options_.setup_sql);
  api_token_ = create_api_token(db_->url(), "e2e-operator", "operator");
  for (const auto& s : options_.services) start(s);
  for (int i = 1; i <= options_.workers; ++i) start("worker-" + std::to_string(i));
}

Stack::~Stack() {
  // Workers and worker pools first (they hold jobs), then the services, each
  // drained by SIGTERM.
  for (auto& [name, p] : procs_) {
    const auto base = base_name(name);
    if ((base == "worker" || base == "workerpool") && p) p->signal(SIGTERM);
  }
  for (auto& [name, p] : procs_) {
    if (p) p->stop(std::chrono::seconds(10));
  }
  procs_.clear();
  broker_.reset();
  db_.reset();
  postgres_.reset();
  std::error_code ec;
  std::filesystem::remove_all(data_dir_, ec);
}

PostgresCluster& Stack::postgres() {
  if (!postgres_) throw std::runtime_error("this stack has no private PostgreSQL cluster (Options::private_postgres)");
  return *postgres_;
}

std::map<std::string, std::string> Stack::api_headers(bool json_body) const { return bearer(api_token_, json_body); }

std::string Stack::api_url() const { return "http://127.0.0.1:" + std::to_string(port("creation")); }

int Stack::port(const std::string& name) const {
  auto it = ports_.find(name);
  if (it == ports_.end()) throw std::runtime_error("no process " + name + " in the stack");
  return it->second;
}

std::vector<std::string> Stack::names() const {
  std::vector<std::string> out;
  for (const auto& [name, p] : procs_) out.push_back(name);
  return out;
}

ChildProcess& Stack::process(const std::string& name) {
  auto it = procs_.find(name);
  if (it == procs_.end() || !it->second) throw std::runtime_error("no process " + name + " in the stack");
  return *it->second;
}

// "worker-3" -> "worker", "creation-2" -> "creation", "monitor" -> "monitor".
std::string Stack::base_name(const std::string& name) {
  const auto dash = name.rfind('-');
  if (dash == std::string::npos || dash + 1 == name.size()) return name;
  for (std::size_t i = dash + 1; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return name;
  }
  return name.substr(0, dash);
}

void Stack::start(const std::string& name) {
  const std::string base = base_name(name);
  const std::string program = "conveyor-" + base;
  auto env = env_;
  int port = free_port();
  ports_[name] = port;
  env["CONVEYOR_HTTP_PORT"] = std::to_string(port);
  env["CONVEYOR_INSTANCE_ID"] = name;
  if (base == "worker") env["CONVEYOR_WORKER_NAME"] = prefix_ + "-" + name;
  ChildProcess::Options o;
  o.argv = {exe(program).string()};
  o.env = env;
  o.stdout_file = data_dir_ / (name + ".log");
  procs_[name].reset();  // a previous incarnation is stopped first
  procs_[name] = std::make_unique<ChildProcess>(o);
  wait_ready(name);
}

void Stack::kill(const std::string& name, int sig) {
  auto& p = process(name);
  p.signal(sig);
  p.wait(std::chrono::seconds(10));
}

void Stack::wait_ready(const std::string& name) {
  std::string url = "http://127.0.0.1:" + std::to_string(port(name)) + "/readyz";
  bool ok = wait_until(
      [&] {
        if (!procs_[name]->running()) return false;
        try {
          return http::http_request("GET", url, "", {}, std::chrono::milliseconds(500)).status == 200;
        } catch (const std::exception&) {
          return false;  // not listening yet
        }
      },
      std::chrono::seconds(30));
  if (!ok) throw std::runtime_error(name + " did not become ready:\n" + logs_tail());
}

RunResult Stack::cli(const std::vector<std::string>& args) const {
  std::vector<std::string> argv{exe("conveyor").string()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, env_);
}

std::string Stack::logs_tail(std::size_t lines) const {
  std::ostringstream out;
  for (const auto& [name, p] : procs_) {
    std::ifstream in(data_dir_ / (name + ".log"));
    std::vector<std::string> all;
    for (std::string l; std::getline(in, l);) all.push_back(l);
    out << "---- " << name << "\n";
    for (std::size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) out << all[i] << "\n";
  }
  if (postgres_) {
    std::ifstream in(postgres_->log_file());
    std::vector<std::string> all;
    for (std::string l; std::getline(in, l);) all.push_back(l);
    out << "---- postgres (" << postgres_->log_file().string() << ")\n";
    for (std::size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) out << all[i] << "\n";
  }
  return out.str();
}

}  // namespace conveyor::testing
