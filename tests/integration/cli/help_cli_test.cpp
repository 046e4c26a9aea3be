// `conveyor NOUN --help`, `conveyor NOUN VERB --help` and the shell
// completions (issue 13, item 12), run as a real process with an empty
// environment: help needs no database and no configuration. The commands
// are not listed here: the test asks `conveyor __complete`, which lists them
// from the CLI's own tables, so a new noun or verb is covered the day it lands.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "conveyor/testing/testing.hpp"

namespace {

namespace fs = std::filesystem;
using conveyor::testing::RunResult;

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) out.push_back(l);
  return out;
}

bool contains(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : " ") + x;
  return s;
}

// The CLI's stdout alone (stderr dropped), run with nothing in the
// environment but PATH and `env`: no CONVEYOR_DATABASE_URL, no config.
RunResult conveyor_stdout(const std::vector<std::string>& args, const std::vector<std::string>& env = {}) {
  std::vector<std::string> argv{"/usr/bin/env", "-i", "PATH=/usr/bin:/bin"};
  argv.insert(argv.end(), env.begin(), env.end());
  argv.insert(argv.end(), {"/bin/sh", "-c", "\"$0\" \"$@\" 2>/dev/null", CONVEYOR_CLI_PATH});
  argv.insert(argv.end(), args.begin(), args.end());
  return conveyor::testing::run(argv);
}

// What `conveyor __complete` offers after `words` (the last one being typed).
std::vector<std::string> candidates(const std::vector<std::string>& words) {
  std::vector<std::string> args{"__complete"};
  args.insert(args.end(), words.begin(), words.end());
  const RunResult r = conveyor_stdout(args);
  EXPECT_EQ(r.status, 0) << joined(words) << ": " << r.output;
  return lines(r.output);
}

// `conveyor --help` is the one page that names every command (README:
// "conveyor help lists everything"): each noun's verbs, as the CLI's own
// tables list them, appear in it, an alias by its other spelling.
TEST(HelpCli, TheOverallHelpNamesEveryVerbOfEveryNoun) {
  const RunResult top = conveyor_stdout({"--help"});
  ASSERT_EQ(top.status, 0) << top.output;
  const std::map<std::string, std::string> other_spelling = {{"ls", "list"}, {"list", "ls"}, {"show", "inspect"}};
  for (const auto& noun : candidates({""})) {
    if (noun == "help" || noun == "version") continue;
    for (const auto& verb : candidates({noun, ""})) {
      if (verb == "help") continue;
      const auto other = other_spelling.find(verb);
      const bool named = has(top.output, noun + " " + verb) ||
                         (other != other_spelling.end() && has(top.output, noun + " " + other->second)) ||
                         (noun == "completion" && has(top.output, "completion bash|zsh"));
      EXPECT_TRUE(named) << "conveyor --help does not name `" << noun << " " << verb << "`";
    }
  }
}

TEST(HelpCli, EveryNounAndVerbHasHelp) {
  std::vector<std::string> nouns;
  for (const auto& n : candidates({""}))
    if (n != "help" && n != "version" && n != "completion") nouns.push_back(n);
  for (const char* expected :
       {"db", "config", "job-type", "job", "worker", "params", "system", "queue", "events", "schedule", "token"}) {
    EXPECT_TRUE(contains(nouns, expected)) << expected << " not listed: " << joined(nouns);
  }
  for (const auto& noun : nouns) {
    for (const char* help : {"--help", "-h", "help"}) {
      const RunResult r = conveyor_stdout({noun, help});
      EXPECT_EQ(r.status, 0) << noun << " " << help << ": " << r.output;
      EXPECT_TRUE(has(r.output, "usage")) << noun << " " << help << ": " << r.output;
    }
    std::vector<std::string> verbs;
    for (const auto& v : candidates({noun, ""}))
      if (v != "help") verbs.push_back(v);
    EXPECT_FALSE(verbs.empty()) << noun << " lists no verb";
    for (const auto& verb : verbs) {
      for (const char* help : {"--help", "-h"}) {
        const RunResult r = conveyor_stdout({noun, verb, help});
        EXPECT_EQ(r.status, 0) << noun << " " << verb << " " << help << ": " << r.output;
        EXPECT_TRUE(has(r.output, "usage")) << noun << " " << verb << " " << help << ": " << r.output;
        EXPECT_TRUE(has(r.output, "conveyor " + noun + " ")) << noun << " " << verb << ": " << r.output;
      }
    }
  }

  // The case: `job --help` was rc 2. A verb's help is its own lines, not the noun's.
  const RunResult job = conveyor_stdout({"job", "--help"});
  EXPECT_EQ(job.status, 0) << job.output;
  EXPECT_TRUE(has(job.output, "conveyor job ls")) << job.output;
  const RunResult patch = conveyor_stdout({"job", "patch", "--help"});
  EXPECT_TRUE(has(patch.output, "usage: conveyor job patch")) << patch.output;
  EXPECT_TRUE(has(patch.output, "--set-param")) << patch.output;
  EXPECT_FALSE(has(patch.output, "conveyor job ls")) << patch.output;
  EXPECT_EQ(conveyor_stdout({"help", "job", "patch"}).output, patch.output);
  EXPECT_EQ(conveyor_stdout({"job", "help", "patch"}).output, patch.output);

  // Help even when the configuration does not load; the command itself still says why it cannot
  // run.
  const RunResult broken_help = conveyor_stdout({"job", "ls", "--help"}, {"CONVEYOR_HTTP_PORT=not-a-port"});
  EXPECT_EQ(broken_help.status, 0) << broken_help.output;
  EXPECT_TRUE(has(broken_help.output, "usage: conveyor job ls")) << broken_help.output;
  const RunResult broken = conveyor::testing::run(
      {"/usr/bin/env", "-i", "PATH=/usr/bin:/bin", "CONVEYOR_HTTP_PORT=not-a-port", CONVEYOR_CLI_PATH, "job", "ls"});
  EXPECT_EQ(broken.status, 1) << broken.output;
  EXPECT_TRUE(has(broken.output, "CONVEYOR_HTTP_PORT")) << broken.output;

  // Usage errors keep their code and wording.
  const RunResult unknown = conveyor::testing::run({CONVEYOR_CLI_PATH, "job", "ls", "--bogus"});
  EXPECT_EQ(unknown.status, 2) << unknown.output;
  EXPECT_TRUE(has(unknown.output, "unknown option --bogus")) << unknown.output;
}

class ShellCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / conveyor::testing::unique_name("help-cli");
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  fs::path script(const std::string& shell) {
    const RunResult r = conveyor_stdout({"completion", shell});
    EXPECT_EQ(r.status, 0) << r.output;
    const fs::path file = dir_ / ("conveyor." + shell);
    std::ofstream(file) << r.output;
    return file;
  }
  // COMPREPLY of the bash script's function after `conveyor WORDS` (the
  // last word is the one being completed), one candidate a line.
  std::vector<std::string> bash_complete(const fs::path& file, const std::vector<std::string>& words) {
    std::string line = "source '" + file.string() + "' && COMP_WORDS=('" + CONVEYOR_CLI_PATH + "'";
    for (const auto& w : words) line += " '" + w + "'";
    line += ") && COMP_CWORD=" + std::to_string(words.size()) +
            " && _conveyor && for c in \"${COMPREPLY[@]}\"; do echo \"$c\"; done";
    const RunResult r = conveyor::testing::run({"/bin/bash", "-c", line});
    EXPECT_EQ(r.status, 0) << line << ": " << r.output;
    return lines(r.output);
  }
  fs::path dir_;
};

TEST_F(ShellCli, CompletionScriptsListEveryCommand) {
  const fs::path bash = script("bash");
  const RunResult syntax = conveyor::testing::run({"/bin/bash", "-n", bash.string()});
  EXPECT_EQ(syntax.status, 0) << syntax.output;
  const RunResult registered =
      conveyor::testing::run({"/bin/bash", "-c", "source '" + bash.string() + "' && complete -p conveyor"});
  EXPECT_TRUE(has(registered.output, "-F _conveyor")) << registered.output;

  EXPECT_EQ(bash_complete(bash, {"jo"}), (std::vector<std::string>{"job", "job-type"}));
  EXPECT_EQ(bash_complete(bash, {"job", "pa"}), (std::vector<std::string>{"patch"}));
  EXPECT_EQ(bash_complete(bash, {"job", "patch", "--set"}), (std::vector<std::string>{"--set-param"}));
  EXPECT_EQ(bash_complete(bash, {"--json", "queue", "drain", "--a"}), (std::vector<std::string>{"--apply"}));
  EXPECT_EQ(bash_complete(bash, {"db", "gr"}), (std::vector<std::string>{"grant-login"}));
  EXPECT_EQ(bash_complete(bash, {"completion", ""}), (std::vector<std::string>{"bash", "zsh"}));
  // After an option that takes a value nothing is offered: bash completes file names.
  EXPECT_TRUE(bash_complete(bash, {"job", "patch", "--params-file", ""}).empty());
  // Every noun, and every verb of every noun, as the CLI's tables have them.
  const auto nouns = bash_complete(bash, {""});
  for (const char* n : {"db", "config", "job-type", "job", "worker", "params", "system", "queue", "events", "schedule",
                        "token", "help", "completion"}) {
    EXPECT_TRUE(contains(nouns, n)) << n << " missing: " << joined(nouns);
  }
  const auto job_verbs = bash_complete(bash, {"job", ""});
  for (const char* v : {"ls", "inspect", "submit", "cancel", "retry", "logs", "kill", "set-status", "patch", "stats"}) {
    EXPECT_TRUE(contains(job_verbs, v)) << v << " missing: " << joined(job_verbs);
  }

  // zsh: syntax only, and only where zsh is installed.
  const fs::path zsh = script("zsh");
  EXPECT_TRUE(has(conveyor::testing::read_text(zsh), "#compdef conveyor"));
  if (fs::exists("/usr/bin/zsh") || fs::exists("/bin/zsh")) {
    const RunResult z =
        conveyor::testing::run({fs::exists("/usr/bin/zsh") ? "/usr/bin/zsh" : "/bin/zsh", "-n", zsh.string()});
    EXPECT_EQ(z.status, 0) << z.output;
  }
}

// Long operations show progress on a terminal only (script(1) gives the CLI
// one): the line is drawn at once and cleared at the end; piped, nothing.
TEST_F(ShellCli, LongOperationsShowProgressOnATerminalOnly) {
  if (!fs::exists("/usr/bin/script")) GTEST_SKIP() << "script(1) is not installed";
  conveyor::testing::TestDatabase db(/*migrate=*/false);
  const std::map<std::string, std::string> env{{"CONVEYOR_DATABASE_URL", db.url()}};
  const auto on_terminal = [&](const std::string& command) {
    return conveyor::testing::run({"/usr/bin/script", "-qec", "'" CONVEYOR_CLI_PATH "' " + command, "/dev/null"}, env);
  };
  ASSERT_EQ(conveyor::testing::run_cli(CONVEYOR_CLI_PATH, {"db", "init"}, env).status, 0);
  const RunResult migrate = on_terminal("db migrate");
  EXPECT_EQ(migrate.status, 0) << migrate.output;
  EXPECT_TRUE(has(migrate.output, "\rdb migrate: 0 s")) << migrate.output;
  EXPECT_TRUE(has(migrate.output, "\r\x1b[Kdatabase migrated")) << "the line is cleared: " << migrate.output;

  const RunResult backup = on_terminal("system backup '" + (dir_ / "a.dump").string() + "'");
  EXPECT_EQ(backup.status, 0) << backup.output;
  EXPECT_TRUE(has(backup.output, "\rsystem backup: 0 s")) << backup.output;

  const RunResult piped =
      conveyor::testing::run_cli(CONVEYOR_CLI_PATH, {"system", "backup", (dir_ / "b.dump").string()}, env);
  EXPECT_EQ(piped.status, 0) << piped.output;
  EXPECT_TRUE(has(piped.output, "backup written")) << piped.output;
  EXPECT_FALSE(has(piped.output, "system backup:")) << piped.output;
}

}  // namespace
