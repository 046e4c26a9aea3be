#pragma once
// Reading a job's logs.txt (written by the worker, DESIGN §6) where the
// reader sees the workers' data dir: `conveyor job logs` and the monitor's
// console (/jobs/{id}, its live tail). Thread-safe: stateless functions.
#include <cstdint>
#include <filesystem>
#include <string>

#include "conveyor/model/job.hpp"

namespace conveyor::model {

// <data_dir>/logs/<YYYY-MM>/job-<id>/logs.txt of `job`.
std::filesystem::path job_log_file(const std::filesystem::path& data_dir, const Job& job);

struct LogTail {
  bool exists = false;     // false: no logs.txt (the job has not run, or another data dir)
  std::uint64_t size = 0;  // the file's size when read: the offset to read on from
  std::uint64_t from = 0;  // where `text` starts in the file
  std::string text;        // at most max_bytes, starting at a line when cut
};

// The part of `file` after byte `offset`, at most its last `max_bytes`
// (bounded: a log of gigabytes costs one seek). When cut, the text starts
// after the first newline so that no half line shows. An offset beyond
// the end (the file was replaced) reads from the start.
LogTail read_log_tail(const std::filesystem::path& file, std::uint64_t offset, std::uint64_t max_bytes);

}  // namespace conveyor::model
