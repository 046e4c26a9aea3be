// The `local` backend: workers are child processes of the pool.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <thread>

#include <fmt/format.h>

#include "backend.hpp"
#include "child_process.hpp"
#include "conveyor/error/error.hpp"
#include "conveyor/logging/logging.hpp"

namespace conveyor::workerpool {

namespace fs = std::filesystem;

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// The key a KEY=VALUE line of an env file sets ("" for comments and the rest).
std::string_view line_key(std::string_view line) {
  line = trim(line);
  if (line.starts_with("export ")) line = trim(line.substr(7));
  const auto eq = line.find('=');
  if (line.empty() || line.front() == '#' || eq == std::string_view::npos) return {};
  return trim(line.substr(0, eq));
}

class LocalBackend final : public Backend {
 public:
  explicit LocalBackend(LocalBackendOptions options) : options_(std::move(options)) {
    if (!options_.log_dir.empty()) {
      std::error_code ec;
      fs::create_directories(options_.log_dir, ec);
      if (ec) {
        throw Error(errc::invalid_config,
                    "CONVEYOR_WORKERPOOL_LOG_DIR: cannot create " + options_.log_dir.string() + ": " + ec.message());
      }
    }
    for (const fs::path& file : options_.env_files) env_files_.push_back(worker_env_file(file));
  }

  ~LocalBackend() override {
    // Own workers still running stay (as after a kill -9 of the pool): the
    // next pool adopts them through the database. They read their env files
    // at start only, so the filtered copies can go.
    if (!private_dir_.empty()) {
      std::error_code ec;
      fs::remove_all(private_dir_, ec);
    }
  }

  LocalBackend(const LocalBackend&) = delete;
  LocalBackend& operator=(const LocalBackend&) = delete;

  std::string_view kind() const override { return "local"; }
  bool exits_are_certain() const override { return true; }

  void spawn(const std::string& name) override {
    SpawnOptions o;
    o.executable = options_.executable;
    for (const fs::path& f : env_files_) {
      o.args.push_back("--env-file");
      o.args.push_back(f.string());
    }
    o.env = worker_environment(options_.environment, name, options_.pool, options_.database);
    if (!options_.log_dir.empty()) o.log_file = options_.log_dir / (name + ".log");
    const int pid = spawn_child(o);
    children_[name] = Child{pid, Clock::now(), std::nullopt, false};
    log_->info("started worker {} (pid {}){}", name, pid, o.log_file.empty() ? "" : ", log " + o.log_file.string());
  }

  void drain(const std::string& name) override {
    // The worker sees its row `draining` at its next heartbeat and exits 0
    // once idle; reap() collects it then.
    log_->debug("worker {} drains by itself", name);
  }

  void terminate(const std::string& name) override {
    auto it = children_.find(name);
    if (it == children_.end() || it->second.kill_at) return;
    send_signal(it->second.pid, SIGTERM);
    it->second.kill_at = Clock::now() + options_.kill_grace;
    log_->warn("stopping worker {} (pid {}): SIGTERM, SIGKILL in {} ms if it is still there", name, it->second.pid,
               options_.kill_grace.count());
  }

  std::vector<ExitedWorker> reap() override {
    std::vector<ExitedWorker> out;
    const auto now = Clock::now();
    for (auto it = children_.begin(); it != children_.end();) {
      Child& c = it->second;
      if (const auto status = try_reap(c.pid)) {
        out.push_back(ExitedWorker{it->first, c.pid, status->success(), status->describe()});
        it = children_.erase(it);
        continue;
      }
      if (c.kill_at && !c.killed && now >= *c.kill_at) {
        log_->warn("worker {} (pid {}) still there {} ms after SIGTERM: SIGKILL", it->first, c.pid,
                   options_.kill_grace.count());
        send_signal(c.pid, SIGKILL);
        c.killed = true;
      }
      ++it;
    }
    return out;
  }

  std::vector<OwnWorker> workers() const override {
    std::vector<OwnWorker> out;
    for (const auto& [name, c] : children_) {
      out.push_back(OwnWorker{name, c.pid, c.spawned, c.kill_at.has_value()});
    }
    return out;
  }

  std::vector<ExitedWorker> shutdown(Clock::time_point deadline) override {
    for (auto& [name, c] : children_) {
      send_signal(c.pid, SIGTERM);
      if (!c.kill_at) c.kill_at = deadline;
    }
    if (!children_.empty()) {
      log_->info("asked {} worker(s) to stop; waiting for them", children_.size());
    }
    std::vector<ExitedWorker> out;
    while (true) {
      for (auto& e : reap()) out.push_back(std::move(e));
      if (children_.empty()) break;
      if (Clock::now() >= deadline) {
        for (auto& [name, c] : children_) {
          log_->warn("worker {} (pid {}) did not stop within the shutdown grace: SIGKILL", name, c.pid);
          send_signal(c.pid, SIGKILL);
          c.killed = true;
        }
        // SIGKILL is not refused: collect them, with a bound in case one is
        // stuck in the kernel.
        const auto give_up = Clock::now() + std::chrono::seconds(2);
        while (!children_.empty() && Clock::now() < give_up) {
          for (auto& e : reap()) out.push_back(std::move(e));
          std::this_thread::sleep_for(std::chrono::milliseconds(20));  // waiting for exits
        }
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // waiting for exits
    }
    return out;
  }

 private:
  struct Child {
    int pid = 0;
    Clock::time_point spawned{};
    std::optional<Clock::time_point> kill_at;  // terminate(): when SIGKILL follows
    bool killed = false;
  };

  // `file` when it sets none of the pool's own keys; else a copy without
  // them (a worker refuses unknown keys in env files), lines kept in place
  // so a worker's error names the same line number. Copies live in a 0700
  // directory of this pool, removed when it exits.
  fs::path worker_env_file(const fs::path& file) {
    std::ifstream in(file);
    if (!in) return file;  // the worker reports it, as the pool did not
    std::string text;
    bool filtered = false;
    for (std::string line; std::getline(in, line);) {
      const std::string_view key = line_key(line);
      if (!key.empty() && is_pool_only_key(key)) {
        text += "# " + std::string(key) + ": a conveyor-workerpool key, not passed to workers\n";
        filtered = true;
      } else {
        text += line + "\n";
      }
    }
    if (!filtered) return file;
    if (private_dir_.empty()) {
      private_dir_ = make_private_dir("conveyor-workerpool-" + options_.instance_id + "-", "the workers' env files");
    }
    const fs::path copy = private_dir_ / (std::to_string(env_files_.size() + 1) + "-" + file.filename().string());
    write_private_file(copy, text);
    log_->info("env file {} sets conveyor-workerpool keys: workers get {} without them", file.string(), copy.string());
    return copy;
  }

  LocalBackendOptions options_;
  std::vector<fs::path> env_files_;  // what workers get: the pool's files or filtered copies
  fs::path private_dir_;
  std::map<std::string, Child> children_;
  std::shared_ptr<spdlog::logger> log_ = logging::get("backend");
};

}  // namespace

std::unique_ptr<Backend> make_local_backend(LocalBackendOptions options) {
  return std::make_unique<LocalBackend>(std::move(options));
}

}  // namespace conveyor::workerpool
