// The operator CLI's option parsing (parse_options, CLI11 underneath): what
// every verb of `conveyor` accepts and how it refuses, without a database.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "cli.hpp"
#include "conveyor/error/error.hpp"

namespace conveyor::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

using Args = std::vector<std::string>;

// The message and field of parse_options' refusal, "(accepted)" when it parses.
struct Refusal {
  std::string message;
  std::string field;
};
Refusal refusal(const Args& args, const std::set<std::string>& with_value, const std::set<std::string>& flags = {}) {
  try {
    parse_options(args, "job ls", with_value, flags);
  } catch (const FieldError& e) {
    EXPECT_EQ(e.code(), errc::bad_input);
    return {e.what(), e.field()};
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), errc::bad_input);
    return {e.what(), ""};
  }
  return {"(accepted)", ""};
}

TEST(ParseOptions, RefusesAnUnknownOptionNamingItAndTheCommand) {
  const auto r = refusal({"--sttaus", "failed"}, {"--status", "--type"}, {"--yes"});
  EXPECT_THAT(r.message, HasSubstr("job ls: unknown option --sttaus"));
  EXPECT_THAT(r.message, HasSubstr("(expected --status VALUE, --type VALUE, --yes)")) << "says what it accepts";
  EXPECT_EQ(r.field, "--sttaus");
  EXPECT_THAT(refusal({"--sttaus=failed"}, {"--status"}).message, HasSubstr("job ls: unknown option --sttaus"))
      << "the name without its =value";
  EXPECT_THAT(refusal({"--all"}, {}).message, HasSubstr("job ls: unknown option --all (it takes none)"));
  EXPECT_THAT(refusal({"-x"}, {"--status"}).message, HasSubstr("job ls: unknown option -x"));
}

TEST(ParseOptions, TakesAValueAfterAnEqualsSignOrAsTheNextArgument) {
  const Options joined = parse_options({"--status=failed"}, "job ls", {"--status"});
  EXPECT_EQ(joined.get("--status"), "failed");
  const Options apart = parse_options({"--status", "failed"}, "job ls", {"--status"});
  EXPECT_EQ(apart.get("--status"), "failed");
  EXPECT_TRUE(apart.positional.empty());
  EXPECT_EQ(parse_options({"--params={\"a\": [1, 2]}"}, "job submit", {"--params"}).get("--params"), "{\"a\": [1, 2]}")
      << "a value keeps its own = and brackets";
  EXPECT_EQ(parse_options({"--priority", "-5"}, "job submit", {"--priority"}).get("--priority"), "-5");
  EXPECT_EQ(parse_options({}, "job ls", {"--status"}).get("--status"), std::nullopt);
}

TEST(ParseOptions, KeepsEveryValueOfARepeatedOptionInOrder) {
  const Options o = parse_options({"--set-param", "b=2", "--status", "failed", "--set-param=a=1", "--set-param", "c=3"},
                                  "job patch", {"--set-param", "--status"});
  EXPECT_THAT(o.get_all("--set-param"), ElementsAre("b=2", "a=1", "c=3"));
  EXPECT_EQ(o.get("--set-param"), "c=3") << "values holds the last one";
  EXPECT_THAT(o.get_all("--status"), ElementsAre("failed"));
  EXPECT_TRUE(o.get_all("--to").empty());
}

TEST(ParseOptions, AMissingValueIsAnErrorNamingTheOption) {
  const auto r = refusal({"--type", "t", "--status"}, {"--status", "--type"});
  EXPECT_THAT(r.message, HasSubstr("job ls: --status needs a value"));
  EXPECT_EQ(r.field, "--status");
}

TEST(ParseOptions, AFlagGivenAValueIsAnError) {
  const auto r = refusal({"--yes=1"}, {}, {"--yes"});
  EXPECT_THAT(r.message, HasSubstr("job ls: --yes takes no value"));
  EXPECT_EQ(r.field, "--yes");
  EXPECT_THAT(refusal({"--yes=false"}, {}, {"--yes"}).message, HasSubstr("--yes takes no value"))
      << "a flag is given or not: --yes=false must not mean yes";
  const Options o = parse_options({"--yes", "-f"}, "job logs", {}, {"--yes", "-f", "--follow"});
  EXPECT_TRUE(o.has("--yes"));
  EXPECT_TRUE(o.has("-f"));
  EXPECT_FALSE(o.has("--follow"));
}

TEST(ParseOptions, KeepsPositionalsInOrderAroundOptions) {
  const Options o =
      parse_options({"391", "--yes", "7", "--to", "ready", "[1,2]", "-", "12"}, "job set-status", {"--to"}, {"--yes"});
  EXPECT_THAT(o.positional, ElementsAre("391", "7", "[1,2]", "-", "12"))
      << "a bracketed word is one argument, not a CLI11 list";
  EXPECT_EQ(o.get("--to"), "ready");
  // After `--` everything is positional, options included.
  const Options rest = parse_options({"a", "--", "--yes", "--to"}, "job set-status", {"--to"}, {"--yes"});
  EXPECT_THAT(rest.positional, ElementsAre("a", "--yes", "--to"));
  EXPECT_FALSE(rest.has("--yes"));
}

TEST(ParseOptions, HelpAnywhereIsHelpRequested) {
  EXPECT_THROW(parse_options({"--help"}, "job ls", {"--status"}), HelpRequested);
  EXPECT_THROW(parse_options({"-h"}, "job ls", {"--status"}), HelpRequested);
  EXPECT_THROW(parse_options({"--status", "failed", "--help"}, "job ls", {"--status"}), HelpRequested);
  EXPECT_THROW(parse_options({"--sttaus", "--help"}, "job ls", {"--status"}), HelpRequested)
      << "help wins over an unknown option";
  EXPECT_THROW(parse_options({"--help", "--status"}, "job ls", {"--status"}), HelpRequested)
      << "help wins over a missing value";
  EXPECT_THROW(parse_options({"--yes=1", "-h"}, "job ls", {}, {"--yes"}), HelpRequested);
}

// Through run_cli: a usage error is exit code 2 and says which command and option.
TEST(ParseOptions, RunCliRefusesAnUnknownOptionWithExitCodeTwo) {
  std::ostringstream out;
  std::ostringstream err;
  EXPECT_EQ(run_cli({"job", "ls", "--sttaus", "failed"}, out, err), kExitUsage);
  EXPECT_THAT(err.str(), HasSubstr("job ls: unknown option --sttaus"));
  EXPECT_EQ(out.str(), "");
  std::ostringstream help;
  EXPECT_EQ(run_cli({"job", "ls", "--help"}, help, err), kExitOk);
  EXPECT_THAT(help.str(), HasSubstr("conveyor job ls"));
}

// One duration rule for the CLI's options: a unit always works; a bare
// number only where the option's unit is seconds (events tail --for), as
// "--since 24" could mean hours as well as seconds.
TEST(DurationOption, TakesAUnitAndBareSecondsWhereTheOptionSaysSo) {
  EXPECT_EQ(duration_option("--since", "30s"), 30);
  EXPECT_EQ(duration_option("--since", "10m"), 600);
  EXPECT_EQ(duration_option("--since", "24h"), 86'400);
  EXPECT_EQ(duration_option("--since", "7d"), 7 * 86'400);
  EXPECT_EQ(duration_option("--for", "60", true), 60);
  EXPECT_EQ(duration_option("--for", "0", true), 0) << "no limit";
  EXPECT_EQ(duration_option("--for", "10s", true), 10);
  EXPECT_EQ(duration_option("--for", "2m", true), 120);
  for (const std::string bad : {"24", "0s", "-5h", "1w", "h", "", "99999999999d"}) {
    try {
      duration_option("--since", bad);
      ADD_FAILURE() << "--since " << bad << " accepted";
    } catch (const FieldError& e) {
      EXPECT_EQ(e.field(), "--since");
      EXPECT_THAT(e.what(), HasSubstr("--since: expected a duration such as 30m, 24h or 7d"));
      EXPECT_THAT(e.what(), HasSubstr("got '" + bad + "'"));
    }
  }
  for (const std::string bad : {"-1", "10x", "1.5m", "s"}) {
    try {
      duration_option("--for", bad, true);
      ADD_FAILURE() << "--for " << bad << " accepted";
    } catch (const FieldError& e) {
      EXPECT_THAT(e.what(), HasSubstr("--for: expected a whole number of seconds or a duration such as 30m"));
    }
  }
}

}  // namespace
}  // namespace conveyor::cli
