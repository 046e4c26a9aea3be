#pragma once
// The `conveyor` operator CLI as a library: main() only calls run_cli, so
// tests drive the same code. Talks to PostgreSQL directly, so it works while
// the services are down.
#include <iosfwd>
#include <string>
#include <vector>

#include "conveyor/config/config.hpp"

namespace conveyor::cli {

// Exit codes: 0 ok, 1 the command failed, 2 usage error.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;

struct Context {
  config::Config config;
  bool json = false;  // --json: machine-readable output
  std::ostream& out;
  std::ostream& err;
  // CONVEYOR_DATABASE_URL, or Error(invalid_config) saying how to set it.
  std::string database_url() const;
};

int run_cli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

// Prints rows under headers, columns padded, with a dashed rule (runbook 002's look).
void print_table(std::ostream& out, const std::vector<std::string>& headers,
                 const std::vector<std::vector<std::string>>& rows);

int db_command(Context& ctx, const std::vector<std::string>& args);
int config_command(Context& ctx, const std::vector<std::string>& args);
int job_type_command(Context& ctx, const std::vector<std::string>& args);

}  // namespace conveyor::cli
