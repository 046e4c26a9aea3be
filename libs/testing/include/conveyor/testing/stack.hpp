#pragma once
// conveyor::testing::Stack — the whole job path as real processes for e2e
// tests and benchmarks: a migrated database of its own, a devbroker, the
// example job types applied with the real CLI, and the services
// (creation, configuration, execution, publication; optionally workerpool
// and monitor, and replicas) plus N workers, each on
// its own free port with its log in data_dir()/<name>.log.
// Not thread-safe; owned by one test.
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "conveyor/testing/testing.hpp"

namespace conveyor::testing {

class Stack {
 public:
  struct Options {
    int workers = 2;
    std::vector<std::string> services = {"creation", "configuration", "execution", "publication"};
    std::map<std::string, std::string> env;  // extra CONVEYOR_* for every process
    std::filesystem::path job_types_file;    // empty: deploy/config/job-types.json
    bool apply_job_types = true;
    // Literal SQL run after migrations and job types, before any service
    // starts (e.g. system parameters the services must see from the start).
    std::string setup_sql;
    // A PostgreSQL cluster of the stack's own (in data_dir()/postgres, on a
    // free_restartable_port()) instead of a database on the shared test
    // cluster, so that the test may stop and start it (postgres()) without
    // disturbing other tests. Slower to start (initdb).
    bool private_postgres = false;
    // How durable the private cluster is. tests: fsync off, synchronous_commit
    // on (a PostgreSQL crash loses no commit; only a machine crash could);
    // full: both on, as in production (conveyor-bench); none: both off
    // (conveyor-bench --fast-db).
    enum class Durability { tests, full, none };
    Durability postgres_durability = Durability::tests;
    // Where the conveyor-* executables and conveyor-devbroker are; empty: this
    // build's (executable()). conveyor-bench --bin-dir runs another build.
    std::filesystem::path bin_dir{};
    // The broker's port; 0: a free port. A free_restartable_port() keeps
    // broker().resume() from finding its port taken after a long stop.
    int broker_port = 0;
  };
  Stack();
  explicit Stack(Options options);
  ~Stack();

  TestDatabase& db() { return *db_; }
  // The private cluster (Options::private_postgres); throws without one.
  PostgresCluster& postgres();
  Broker& broker() { return *broker_; }
  const std::filesystem::path& data_dir() const { return data_dir_; }
  const std::string& topic_prefix() const { return prefix_; }
  // http://127.0.0.1:<port> of the creation service.
  std::string api_url() const;
  // An operator token of this stack's database (made before any service
  // starts), and the headers that send it: {"Authorization": "Bearer ..."},
  // plus Content-Type: application/json when `json_body`.
  const std::string& api_token() const { return api_token_; }
  std::map<std::string, std::string> api_headers(bool json_body = false) const;
  int port(const std::string& name) const;
  // Process names: "creation", ..., "worker-1".."worker-N", "workerpool",
  // "monitor"; a replica is "<service>-<n>" ("creation-2").
  std::vector<std::string> names() const;
  ChildProcess& process(const std::string& name);
  // Starts a process by name (again): "worker-3" starts a new worker,
  // "execution-2" a second execution replica, "workerpool" the pool.
  void start(const std::string& name);
  // The service a process name runs: "worker-3" -> "worker", "creation-2" ->
  // "creation", "monitor" -> "monitor".
  static std::string base_name(const std::string& name);
  void kill(const std::string& name, int sig);
  // The environment every process gets (for running the CLI against this stack).
  std::map<std::string, std::string> env() const { return env_; }
  // Runs the conveyor CLI with this stack's environment.
  RunResult cli(const std::vector<std::string>& args) const;
  // The last lines of every process log (for failure messages), and of the
  // private cluster's server log.
  std::string logs_tail(std::size_t lines = 30) const;

 private:
  void wait_ready(const std::string& name);
  // `name` in Options::bin_dir, or this build's executable(name).
  std::filesystem::path exe(const std::string& name) const;
  Options options_;
  std::unique_ptr<PostgresCluster> postgres_;  // private_postgres only
  std::unique_ptr<TestDatabase> db_;
  std::unique_ptr<Broker> broker_;
  std::filesystem::path data_dir_;
  std::string prefix_;
  std::map<std::string, std::string> env_;
  std::string api_token_;
  std::map<std::string, int> ports_;
  std::map<std::string, std::unique_ptr<ChildProcess>> procs_;
};

// Path of a built executable of this project: "conveyor", "conveyor-creation",
// "conveyor-worker", "conveyor-example-task"...
std::filesystem::path executable(const std::string& name);

}  // namespace conveyor::testing
