#include "conveyor/runtime/command_line.hpp"

#include <cstdint>
#include <optional>
#include <string_view>

#include "conveyor/error/error.hpp"

namespace conveyor::runtime {
namespace {

using Action = CommandLine::Action;

// The option that names `action`, for the message about two of them.
std::string_view option_of(Action action) {
  switch (action) {
    case Action::check:
      return "--check";
    case Action::help:
      return "--help";
    case Action::version:
      return "--version";
    case Action::run:
      break;
  }
  return "";
}

// What a setting takes, in words.
std::string kind_of(const config::Key& key) {
  const bool low = key.min != INT64_MIN;
  const bool high = key.max != INT64_MAX;
  const std::string unit = key.type == config::Type::duration_ms ? " ms" : "";
  std::string range;
  if (low && high) range = ", " + std::to_string(key.min) + unit + " to " + std::to_string(key.max) + unit;
  else if (low) range = ", at least " + std::to_string(key.min) + unit;
  else if (high) range = ", at most " + std::to_string(key.max) + unit;
  switch (key.type) {
    case config::Type::string:
      return "text";
    case config::Type::integer:
      return "integer" + range;
    case config::Type::boolean:
      return "true or false";
    case config::Type::enumeration: {
      std::string choices;
      for (const std::string& a : key.allowed) choices += (choices.empty() ? "" : ", ") + a;
      return "one of " + choices;
    }
    case config::Type::duration_ms:
      return "duration (250ms, 5s, 2m, 1h; a bare number is ms)" + range;
    case config::Type::url:
      return "URL";
  }
  return "text";
}

}  // namespace

CommandLine parse_command_line(int argc, const char* const* argv) {
  const config::EnvFileArgs split = config::split_env_file_args(argc, argv);
  CommandLine line;
  line.env_files = split.env_files;
  std::optional<std::string> unknown;
  for (std::size_t i = 1; i < split.args.size(); ++i) {
    const std::string& arg = split.args[i];
    Action action = Action::run;
    if (arg == "--help" || arg == "-h") action = Action::help;
    else if (arg == "--check") action = Action::check;
    else if (arg == "--version") action = Action::version;
    if (action == Action::help) return CommandLine{Action::help, line.env_files};
    if (action == Action::run) {
      if (!unknown) unknown = arg;
      continue;
    }
    if (line.action != Action::run && line.action != action) {
      throw Error(errc::bad_input, std::string(option_of(line.action)) + " and " + arg + " are two actions: give one");
    }
    line.action = action;
  }
  // Found after the loop: a --help anywhere still answers.
  if (unknown) {
    throw Error(errc::bad_input, "unknown argument '" + *unknown +
                                     "': a service takes --env-file FILE, --check, --help and --version; its "
                                     "settings are CONVEYOR_* variables (--help lists them)");
  }
  return line;
}

std::string help_text(const std::string& service, const config::Schema& schema, int default_http_port) {
  std::string text = "usage: " + service + " [--env-file FILE]... [--check | --help | --version]\n\n" + "Runs " +
                     service +
                     " until SIGTERM or SIGINT, then drains and exits 0.\n\n"
                     "options:\n"
                     "  --env-file FILE  read settings from FILE, KEY=VALUE lines (repeatable: a later file wins,\n"
                     "                   and the environment wins over every file)\n"
                     "  --check          ask the running instance's GET /readyz (the image's health probe):\n"
                     "                   exit 0 when it answers 200, else 1; never starts the service\n"
                     "  --help, -h       print this help and exit\n"
                     "  --version        print the version and exit\n\n"
                     "settings (CONVEYOR_* environment variables or --env-file lines), with their defaults:\n";
  for (const config::Key& key : schema.keys()) {
    std::string line = "  " + key.name;
    if (key.name == "CONVEYOR_HTTP_PORT") line += "=" + std::to_string(default_http_port);
    else if (key.default_value) line += "=" + *key.default_value;
    else line += " (required)";
    line += "  " + kind_of(key);
    if (key.secret) line += "; secret: may be given as " + key.name + "_FILE=PATH";
    text += line + "\n";
    if (!key.help.empty()) text += "      " + key.help + "\n";
  }
  return text;
}

}  // namespace conveyor::runtime
