#pragma once
// conveyor::runtime — `<service> --check`, the health probe every service
// image carries (compose healthcheck, a Kubernetes exec probe, a Nomad
// script check). It reads the same configuration as the service (defaults,
// --env-file, environment), asks the running instance's GET /readyz and
// never starts the service. Plain functions, thread-safe.
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "conveyor/config/config.hpp"

namespace conveyor::runtime {

// The port the admin HTTP server listens on: CONVEYOR_HTTP_PORT when it is
// set (file or environment), else the service's default (ServiceSpec), where
// 0 means any free port. The one rule, used by run() and by the probe.
int http_port(const config::Config& config, int default_http_port);

// The /readyz URL of the instance `config` describes: CONVEYOR_HTTP_HOST,
// or 127.0.0.1 when it is a wildcard (0.0.0.0, ::, empty). Throws
// Error(errc::invalid_config) when the port is 0: a free port chosen at
// start-up is known only to the running process.
std::string readyz_url(const config::Config& config, int default_http_port);

struct CheckResult {
  bool ok = false;
  std::string message;  // one line: what was asked and what answered
};

// GET readyz_url() with `timeout` for connect and read: ok on HTTP 200;
// otherwise the reason (status and body, refused, timed out, port 0).
CheckResult check_ready(const config::Config& config, int default_http_port,
                        std::chrono::milliseconds timeout = std::chrono::seconds(3));

// The whole `--check` command (command_line.hpp): loads the configuration
// from `env_files` and the environment, runs check_ready() and prints one
// line (stdout when ready, stderr otherwise) prefixed with `service`.
// Returns 0 when ready, 1 otherwise.
int check_main(const std::vector<std::filesystem::path>& env_files, const std::string& service,
               const config::Schema& schema, int default_http_port);

}  // namespace conveyor::runtime
