// A service's command line (command_line.hpp): what it takes, what it
// refuses by name, and the help that lists its settings.
#include "conveyor/runtime/command_line.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "conveyor/error/error.hpp"
#include "conveyor/runtime/runtime.hpp"

namespace conveyor::runtime {
namespace {

using Action = CommandLine::Action;

CommandLine parse(std::vector<const char*> args) {
  args.insert(args.begin(), "conveyor-creation");
  return parse_command_line(static_cast<int>(args.size()), args.data());
}

// The message of the Error that parsing `args` throws; "" when it does not.
std::string refusal(std::vector<const char*> args) {
  try {
    parse(std::move(args));
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), errc::bad_input);
    return e.what();
  }
  return "";
}

TEST(CommandLine, NoArgumentsRunsTheService) {
  const CommandLine line = parse({});
  EXPECT_EQ(line.action, Action::run);
  EXPECT_TRUE(line.env_files.empty());
}

TEST(CommandLine, EnvFilesAreKeptInOrderWithAnyAction) {
  const CommandLine run = parse({"--env-file", "a.env", "--env-file=b.env"});
  EXPECT_EQ(run.action, Action::run);
  ASSERT_EQ(run.env_files.size(), 2u);
  EXPECT_EQ(run.env_files[0], "a.env");
  EXPECT_EQ(run.env_files[1], "b.env");

  const CommandLine check = parse({"--env-file", "a.env", "--check"});
  EXPECT_EQ(check.action, Action::check);
  ASSERT_EQ(check.env_files.size(), 1u);
  // The path after --env-file is a path, whatever it looks like.
  const CommandLine odd = parse({"--env-file", "--check"});
  EXPECT_EQ(odd.action, Action::run);
  ASSERT_EQ(odd.env_files.size(), 1u);
  EXPECT_EQ(odd.env_files[0], "--check");
}

TEST(CommandLine, EachActionHasItsOption) {
  EXPECT_EQ(parse({"--check"}).action, Action::check);
  EXPECT_EQ(parse({"--help"}).action, Action::help);
  EXPECT_EQ(parse({"-h"}).action, Action::help);
  EXPECT_EQ(parse({"--version"}).action, Action::version);
  EXPECT_EQ(parse({"--check", "--check"}).action, Action::check);
}

TEST(CommandLine, HelpWinsOverAMistypedCommandLine) {
  EXPECT_EQ(parse({"--bogus", "--help"}).action, Action::help);
  EXPECT_EQ(parse({"--check", "-h", "--version"}).action, Action::help);
}

TEST(CommandLine, AnUnknownArgumentIsRefusedByName) {
  for (const char* arg : {"--hlep", "-v", "start", "--port", "CONVEYOR_HTTP_PORT=9000", "--", ""}) {
    const std::string why = refusal({"--env-file", "a.env", arg});
    EXPECT_NE(why.find(std::string("unknown argument '") + arg + "'"), std::string::npos) << arg << ": " << why;
    EXPECT_NE(why.find("--help lists them"), std::string::npos) << why;
  }
  // The first unknown one is named.
  EXPECT_NE(refusal({"--one", "--two"}).find("'--one'"), std::string::npos);
  // Whatever follows "--" belongs to no option, so it is refused too.
  EXPECT_NE(refusal({"--", "--check"}).find("'--'"), std::string::npos);
}

TEST(CommandLine, TwoActionsOrAnEnvFileWithoutAPathAreRefused) {
  EXPECT_NE(refusal({"--check", "--version"}).find("--check and --version are two actions"), std::string::npos);
  EXPECT_NE(refusal({"--env-file"}).find("--env-file needs a path"), std::string::npos);
  EXPECT_NE(refusal({"--env-file="}).find("--env-file needs a path"), std::string::npos);
}

TEST(CommandLine, HelpListsEverySettingWithItsDefaultAndKind) {
  config::Schema schema = service_schema();
  schema.add({.name = "CONVEYOR_OWN_TOKEN",
              .type = config::Type::string,
              .default_value = std::nullopt,
              .secret = true,
              .help = "a setting of this service's own"});
  const std::string text = help_text("conveyor-creation", schema, 8081);
  EXPECT_EQ(text.rfind("usage: conveyor-creation [--env-file FILE]... [--check | --help | --version]\n", 0), 0u)
      << text;
  for (const config::Key& key : schema.keys()) {
    EXPECT_NE(text.find("\n  " + key.name), std::string::npos) << key.name;
    if (!key.help.empty()) {
      EXPECT_NE(text.find("      " + key.help + "\n"), std::string::npos) << key.name;
    }
  }
  // The port a service listens on when none is set: its own, not the schema's.
  EXPECT_NE(text.find("\n  CONVEYOR_HTTP_PORT=8081  integer, 0 to 65535\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\n  CONVEYOR_LOG_LEVEL=info  one of trace, debug, info, warn, error\n"), std::string::npos);
  EXPECT_NE(text.find("\n  CONVEYOR_KAFKA_BROKERS=  text\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\n  CONVEYOR_DATABASE_URL (required)  text; secret: may be given as "
                      "CONVEYOR_DATABASE_URL_FILE=PATH\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("\n  CONVEYOR_OWN_TOKEN (required)  text; secret: may be given as CONVEYOR_OWN_TOKEN_FILE=PATH\n"
                      "      a setting of this service's own\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("\n  CONVEYOR_POLL_INTERVAL_MS=1000  duration (250ms, 5s, 2m, 1h; a bare number is ms)"),
            std::string::npos)
      << text;
}

}  // namespace
}  // namespace conveyor::runtime
