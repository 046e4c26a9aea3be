#include "backend.hpp"

#include <filesystem>

#include "child_process.hpp"
#include "conveyor/error/error.hpp"

namespace conveyor::workerpool {

bool is_pool_only_key(std::string_view key) {
  return key.starts_with("CONVEYOR_WORKERPOOL_") || key == "CONVEYOR_WORKER_EXECUTABLE";
}

std::map<std::string, std::string> worker_environment(const std::map<std::string, std::string>& environment,
                                                      const std::string& name, const std::string& pool) {
  std::map<std::string, std::string> env;
  for (const auto& [key, value] : environment) {
    if (is_pool_only_key(key)) continue;
    env.emplace(key, value);
  }
  // Per process: each worker gets its own (a free HTTP port, its name as
  // instance id), never the pool's.
  env["CONVEYOR_WORKER_NAME"] = name;
  env["CONVEYOR_INSTANCE_ID"] = name;
  env["CONVEYOR_WORKER_POOL"] = pool;
  env["CONVEYOR_HTTP_PORT"] = "0";
  return env;
}

std::unique_ptr<Backend> make_backend(const config::Config& config, const std::string& instance_id,
                                      const std::vector<std::filesystem::path>& env_files) {
  const std::string kind = config.get_string("CONVEYOR_WORKERPOOL_BACKEND");
  if (kind != "local") {
    throw Error(errc::invalid_config,
                "CONVEYOR_WORKERPOOL_BACKEND=" + kind + " is not implemented yet (only: local)");
  }
  LocalBackendOptions o;
  o.environment = config::process_environment();
  const std::string configured = config.get_string("CONVEYOR_WORKER_EXECUTABLE");
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  const auto path = o.environment.find("PATH");
  const auto exe = find_executable(configured, "conveyor-worker", ec ? std::filesystem::path() : self,
                                   path == o.environment.end() ? std::string() : path->second);
  if (!exe) {
    throw Error(errc::invalid_config,
                configured.empty()
                    ? "CONVEYOR_WORKER_EXECUTABLE: conveyor-worker is neither next to conveyor-workerpool, "
                      "nor in ../worker, nor on PATH; set CONVEYOR_WORKER_EXECUTABLE"
                    : "CONVEYOR_WORKER_EXECUTABLE (from " + config.source("CONVEYOR_WORKER_EXECUTABLE").to_string() +
                          "): '" + configured + "' is not an executable file");
  }
  o.executable = *exe;
  o.pool = config.get_string("CONVEYOR_WORKER_POOL");
  o.env_files = env_files;
  o.log_dir = config.get_string("CONVEYOR_WORKERPOOL_LOG_DIR");
  o.kill_grace = config.get_duration("CONVEYOR_WORKERPOOL_KILL_GRACE_MS");
  o.instance_id = instance_id;
  return make_local_backend(std::move(o));
}

}  // namespace conveyor::workerpool
