// What the CLI tests (the integration_cli executable) share: `conveyor` run
// as a real process against the test's own migrated database, with a data
// dir of its own, and readers of its output.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "conveyor/testing/testing.hpp"

namespace conveyor::testing::cli {

// True when the run's output (stdout and stderr) contains `text`.
inline bool has(const RunResult& r, const std::string& text) { return r.output.find(text) != std::string::npos; }

// The table row whose first cell is `first`, its cells joined by " | "
// (print_table separates cells by two spaces or more), or "" when none is.
inline std::string row(const RunResult& r, const std::string& first) {
  std::istringstream lines(r.output);
  for (std::string l; std::getline(lines, l);) {
    std::vector<std::string> cells;
    std::string cell;
    int spaces = 0;
    for (const char c : l + "  ") {
      if (c == ' ') {
        ++spaces;
        continue;
      }
      if (spaces >= 2 && !cell.empty()) cells.push_back(cell), cell.clear();
      else if (spaces == 1 && !cell.empty()) cell += ' ';
      spaces = 0;
      cell += c;
    }
    if (!cell.empty()) cells.push_back(cell);
    if (cells.empty() || cells[0] != first) continue;
    std::string joined;
    for (const auto& x : cells) joined += (joined.empty() ? "" : " | ") + x;
    return joined;
  }
  return "";
}

// A test with its own database (db_) and data dir (data_dir_, removed after
// the test). A fixture that overrides SetUp or TearDown calls these first.
class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_dir_ = std::filesystem::temp_directory_path() / unique_name("cli");
    std::filesystem::create_directories(data_dir_);
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(data_dir_, ec);
  }
  // `conveyor ARGS` with CONVEYOR_DATABASE_URL and CONVEYOR_DATA_DIR set.
  RunResult conveyor(const std::vector<std::string>& args) const {
    return run_cli(CONVEYOR_CLI_PATH, args,
                   {{"CONVEYOR_DATABASE_URL", db_.url()}, {"CONVEYOR_DATA_DIR", data_dir_.string()}});
  }

  TestDatabase db_;
  std::filesystem::path data_dir_;
};

}  // namespace conveyor::testing::cli
