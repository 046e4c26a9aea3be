// Every executable Conveyor ships, and its two development tools, answer
// --help and --version, and refuse an argument they do not know, by name
// and with exit 2, before starting anything. A service once ignored its arguments and ran:
// `conveyor-creation --help` started a service; so did the webhook sink.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "conveyor/testing/stack.hpp"
#include "conveyor/testing/testing.hpp"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// The build paths of the image's executables (deploy/container/executables),
// and of conveyor-bench and conveyor-stack.
std::vector<fs::path> executables() {
  std::vector<fs::path> paths;
  std::ifstream list(fs::path(CONVEYOR_SOURCE_DIR) / "deploy/container/executables");
  std::string line;
  while (std::getline(list, line)) {
    if (!line.empty() && line[0] != '#') paths.push_back(fs::path(CONVEYOR_BUILD_DIR) / line);
  }
  paths.push_back(fs::path(CONVEYOR_BUILD_DIR) / "tools/bench/conveyor-bench");
  paths.push_back(fs::path(CONVEYOR_BUILD_DIR) / "tools/stack/conveyor-stack");
  return paths;
}

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

// Without any CONVEYOR_* variable: a service that started would fail on its
// missing database URL (exit 1), not answer.
const std::map<std::string, std::string> kNoSettings = {{"CONVEYOR_DATABASE_URL", ""}, {"CONVEYOR_KAFKA_BROKERS", ""}};

TEST(CommandLine, EveryExecutableAnswersHelp) {
  const auto paths = executables();
  ASSERT_GE(paths.size(), 13u);
  for (const fs::path& exe : paths) {
    const auto r = conveyor::testing::run({exe.string(), "--help"}, kNoSettings, 30s);
    EXPECT_EQ(r.status, 0) << exe << ":\n" << r.output;
    EXPECT_NE(lower(r.output).find("usage: "), std::string::npos) << exe << ":\n" << r.output;
    EXPECT_NE(r.output.find(exe.filename().string()), std::string::npos) << exe << ":\n" << r.output;
  }
}

TEST(CommandLine, EveryExecutableAnswersVersionWithItsName) {
  for (const fs::path& exe : executables()) {
    const auto r = conveyor::testing::run({exe.string(), "--version"}, kNoSettings, 30s);
    EXPECT_EQ(r.status, 0) << exe << ":\n" << r.output;
    EXPECT_EQ(r.output, exe.filename().string() + " " + CONVEYOR_VERSION + "\n") << exe;
  }
}

TEST(CommandLine, EveryExecutableRefusesAnUnknownArgumentByName) {
  for (const fs::path& exe : executables()) {
    const auto r = conveyor::testing::run({exe.string(), "--definitely-not-an-option"}, kNoSettings, 30s);
    EXPECT_EQ(r.status, 2) << exe << ":\n" << r.output;
    EXPECT_NE(r.output.find("--definitely-not-an-option"), std::string::npos) << exe << ":\n" << r.output;
  }
}

// A service's help lists its own settings beside the common ones, and
// --version names the build.
TEST(CommandLine, AServicesHelpListsItsOwnSettings) {
  const std::map<std::string, std::string> own = {
      {"conveyor-creation", "CONVEYOR_SUBMIT_RATE"},
      {"conveyor-worker", "CONVEYOR_WORKER_NAME"},
      {"conveyor-workerpool", "CONVEYOR_WORKER_POOL"},
  };
  for (const auto& [name, key] : own) {
    const fs::path exe = conveyor::testing::executable(name);
    const auto help = conveyor::testing::run({exe.string(), "-h"}, kNoSettings, 30s);
    EXPECT_EQ(help.status, 0) << help.output;
    EXPECT_NE(help.output.find("\n  " + key), std::string::npos) << name << ":\n" << help.output;
    EXPECT_NE(help.output.find("\n  CONVEYOR_DATABASE_URL (required)"), std::string::npos) << help.output;
    const auto version = conveyor::testing::run({exe.string(), "--version"}, kNoSettings, 30s);
    EXPECT_EQ(version.status, 0) << version.output;
    EXPECT_EQ(version.output.rfind(name + " ", 0), 0u) << version.output;
  }
}

}  // namespace
