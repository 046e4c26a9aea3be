#pragma once
// conveyor::runtime — a service's command line, the same for every service
// executable (runtime::run):
//
//   <service> [--env-file FILE]... [--check | --help | --version]
//
// The settings themselves are CONVEYOR_* variables (config.hpp); the command
// line only names env files and what to do. An argument it does not know is
// refused by name, before anything starts: `conveyor-creation --hlep` must
// not start a service that an operator meant to ask about.
#include <filesystem>
#include <string>
#include <vector>

#include "conveyor/config/config.hpp"

namespace conveyor::runtime {

struct CommandLine {
  enum class Action {
    run,      // no action named: run the service
    check,    // --check: probe the running instance (check.hpp)
    help,     // --help or -h: print help_text() and exit 0
    version,  // --version: print the name and version and exit 0
  };
  Action action = Action::run;
  std::vector<std::filesystem::path> env_files;  // --env-file, in order
};

// Reads argv (argv[0] is the program). At most one action; --help wins over
// any other argument, so that a mistyped command line still gets its help.
// Throws Error(errc::bad_input) naming what is wrong: an unknown argument,
// --env-file without a path, or two actions.
CommandLine parse_command_line(int argc, const char* const* argv);

// The --help text: the usage, the options, and every setting of `schema`
// with its type, its default (`default_http_port` for CONVEYOR_HTTP_PORT,
// as runtime::run uses it) or "required", its range or choices, and its
// help; a secret one says it may be read from <KEY>_FILE.
std::string help_text(const std::string& service, const config::Schema& schema, int default_http_port);

}  // namespace conveyor::runtime
