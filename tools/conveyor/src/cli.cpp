// Argument dispatch, shared output helpers and error reporting of the CLI.
#include "cli.hpp"

#include <algorithm>
#include <iostream>

#include "conveyor/error/error.hpp"

namespace conveyor::cli {

namespace {

constexpr const char* kUsage = R"(usage: conveyor [--env-file FILE]... [--json] <command> [args]

commands:
  db init       create the migration tables
  db status     pending count, current version, up to date or not
  db pending    list migrations not yet applied
  db applied    list applied migrations with group ids and times
  db create N   write an empty up/down migration pair named N
  db migrate    apply every pending migration as one group, in one transaction
  db rollback   undo the last group
  db lock       refuse migrate and rollback until unlocked
  db unlock     allow migrate and rollback again
  config show   effective configuration, secrets masked, with where each value came from
  job-type apply FILE [--yes] [--dry-run]
                validate a job-types file, show the diff with the database, ask, apply in one transaction
  job-type list job types in the database
  job-type show NAME   one job type as JSON
  version       print the version

Configuration: CONVEYOR_* environment variables over --env-file files (later files win).
)";

config::Schema cli_schema() {
  auto schema = config::core_schema();
  // The CLI starts without a database for `db create`, `config show` and help;
  // commands that need one say so (Context::database_url).
  config::Key url;
  url.name = "CONVEYOR_DATABASE_URL";
  url.default_value = "";
  url.secret = true;
  url.help = "libpq connection string or URI of the Conveyor database";
  schema.add(url);
  return schema;
}

}  // namespace

std::string Context::database_url() const {
  std::string url = config.get_string("CONVEYOR_DATABASE_URL");
  if (url.empty()) {
    throw Error(errc::invalid_config,
                "CONVEYOR_DATABASE_URL is not set: export it, pass --env-file FILE, or `. .conveyor/env`");
  }
  return url;
}

void print_table(std::ostream& out, const std::vector<std::string>& headers,
                 const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width(headers.size());
  for (std::size_t i = 0; i < headers.size(); ++i) width[i] = headers[i].size();
  for (const auto& row : rows)
    for (std::size_t i = 0; i < row.size() && i < width.size(); ++i) width[i] = std::max(width[i], row[i].size());
  auto line = [&](const std::vector<std::string>& cells) {
    std::string s = " ";
    for (std::size_t i = 0; i < width.size(); ++i) {
      std::string cell = i < cells.size() ? cells[i] : "";
      s += " " + cell;
      if (i + 1 < width.size()) s += std::string(width[i] - cell.size() + 1, ' ');
    }
    out << s << "\n";
  };
  line(headers);
  std::size_t total = 2;
  for (auto w : width) total += w + 2;
  out << std::string(total, '-') << "\n";
  for (const auto& row : rows) line(row);
}

int run_cli(const std::vector<std::string>& raw_args, std::ostream& out, std::ostream& err) {
  try {
    auto split = config::split_env_file_args(raw_args);
    std::vector<std::string> args;
    bool json = false;
    for (auto& a : split.args) {
      if (a == "--json") json = true;
      else args.push_back(a);
    }
    if (args.empty() || args[0] == "help" || args[0] == "--help" || args[0] == "-h") {
      (args.empty() ? err : out) << kUsage;
      return args.empty() ? kExitUsage : kExitOk;
    }
    if (args[0] == "version" || args[0] == "--version") {
      out << "conveyor " << CONVEYOR_CLI_VERSION << "\n";
      return kExitOk;
    }
    Context ctx{config::load(cli_schema(), split.env_files, config::process_environment()), json, out, err};
    for (const auto& w : ctx.config.warnings()) err << "conveyor: warning: " << w << "\n";
    std::vector<std::string> rest(args.begin() + 1, args.end());
    if (args[0] == "db") return db_command(ctx, rest);
    if (args[0] == "config") return config_command(ctx, rest);
    if (args[0] == "job-type") return job_type_command(ctx, rest);
    err << "conveyor: unknown command '" << args[0] << "'\n\n" << kUsage;
    return kExitUsage;
  } catch (const Error& e) {
    err << "conveyor: error: " << e.what() << "\n";
    return e.code() == errc::bad_input ? kExitUsage : kExitFailed;
  } catch (const std::exception& e) {
    err << "conveyor: error: " << e.what() << "\n";
    return kExitFailed;
  }
}

}  // namespace conveyor::cli
