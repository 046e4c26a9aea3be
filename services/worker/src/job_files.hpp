#pragma once
// The files a job leaves behind (DESIGN §6, runbook 003):
//   <data_dir>/logs/<YYYY-MM>/job-<id>/logs.txt       timestamped stdout/stderr, every attempt
//   <data_dir>/logs/<YYYY-MM>/job-<id>/metadata.json  the latest attempt, secrets redacted
//   <data_dir>/outputs/job-<id>/                      the job's working and output directory
// YYYY-MM is the month the job was created, so every attempt of a job
// writes to the same directory.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "fd.hpp"

namespace conveyor::worker {

std::filesystem::path log_dir(const std::filesystem::path& data_dir, const std::string& month, std::int64_t job_id);
std::filesystem::path output_dir(const std::filesystem::path& data_dir, std::int64_t job_id);

// "2026-11-22T10:11:12.345Z"
std::string rfc3339_ms(std::chrono::system_clock::time_point t);

// True for an environment variable name that looks like it holds a secret
// (contains SECRET, PASSWORD, TOKEN or KEY, any case).
bool is_secret_name(std::string_view name);
// A copy of env with the values of secret-looking names replaced by "****".
nlohmann::json redact_env(const std::map<std::string, std::string>& env);

// Absolute paths of the regular files under dir (recursive; a symbolic
// link counts as what it points to, and a linked folder is not entered),
// sorted. None when dir is missing.
std::vector<std::string> list_outputs(const std::filesystem::path& dir);

// Creates the folder `dir` and, when missing, its parents, as
// std::filesystem::create_directories does, but asks with one mkdir first:
// a job's folders are new and their parents exist. Sets `ec` when it cannot,
// or when something not a folder has the name.
void make_dirs(const std::filesystem::path& dir, std::error_code& ec);

// Appends timestamped lines to logs.txt, a write(2) each, on a descriptor
// no program the worker starts inherits (close-on-exec). Owned by one job;
// its program's lines come from the reactor thread, the worker's from the
// executor; the mutex makes write() safe should two threads log into it at
// once.
class LogFile {
 public:
  // Creates the directory; appends to an existing file (a retried job).
  // Throws conveyor::Error(internal) naming the path when it cannot be opened.
  explicit LogFile(const std::filesystem::path& path);
  // "<time> <stream> <line>"
  void write(std::string_view stream, std::string_view line);

 private:
  std::mutex mutex_;
  Fd fd_;
  std::filesystem::path path_;
};

// Writes metadata.json atomically (temp file + rename).
void write_json_file(const std::filesystem::path& path, const nlohmann::json& j);

}  // namespace conveyor::worker
