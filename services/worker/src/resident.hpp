#pragma once
// Resident job programs (issue 14, item 5): a job type with "runner":
// "resident" has its command started once per worker and kept running; the
// worker hands it jobs as JSON lines on its stdin and reads each result as a
// JSON line on its stdout. The protocol is in the README ("Resident job
// programs"); in short:
//
//   worker -> program  {"id":42,"attempt":0,"job_type":"t","params":{..},
//                       "out_dir":"/..","deadline_ms":1764763200000}
//                      {"cancel":42,"reason":"canceled"|"timeout"|"shutdown"}
//   program -> worker  {"id":42,"log":"a line for job 42's logs.txt"}
//                      {"id":42,"status":"done","outputs":..}
//                      {"id":42,"status":"failed","error":"why"}
//
// One ResidentPool per worker; it owns one ResidentProgram per job type
// (and command/env: a changed type gets a new program), each with one
// supervisor thread that serves all of its jobs. Thread-safe.
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "process.hpp"

namespace spdlog {
class logger;
}

namespace conveyor::worker {

// A message line either way is at most this long (a longer result fails its
// job, naming it); nesting is bounded like every untrusted document.
inline constexpr std::size_t kResidentMaxLine = 1024 * 1024;

// The job as the program sees it.
struct ResidentJob {
  std::int64_t id = 0;
  int attempt = 0;
  std::string type;
  nlohmann::json params = nlohmann::json::object();
  std::filesystem::path out_dir;
  // Where the program runs (its cwd), created when missing; not a job's.
  std::filesystem::path program_dir;
  // The worker's log: program starts, deaths and stray lines.
  std::shared_ptr<spdlog::logger> log;
};

class ResidentProgram;

class ResidentPool {
 public:
  ResidentPool();
  // Closes every program's stdin, waits up to its kill grace, then kills it.
  ~ResidentPool();
  ResidentPool(const ResidentPool&) = delete;
  ResidentPool& operator=(const ResidentPool&) = delete;

  // Starts one job on the type's program (started on first use, restarted
  // when it died) and returns; the job runs until its result, its timeout
  // (options.timeout: a cancel line, then the program is killed after
  // options.kill_grace), or `stop` (the same, reason canceled or shutdown;
  // looked at every 50 ms). options.argv and options.env start the program
  // (CONVEYOR_JOB_ID, CONVEYOR_JOB_ATTEMPT and CONVEYOR_OUTPUT_DIR are left
  // out: they are per job); options.cwd is ignored (job.program_dir).
  // `on_line` gets the job's log lines, from the program's supervisor
  // thread, never after `on_exit`; `on_exit` gets the outcome, from that
  // thread (or this one, for a job that cannot be sent), and must return
  // at once. `stop` must outlive the job. The outcome: exit_code 0 for
  // "done"; error_subtype and error_message set for anything else but a
  // timeout or a stop.
  void start(const ProcessOptions& options, const ResidentJob& job, const std::atomic<StopReason>& stop,
             LineSink on_line, ExitSink on_exit);

 private:
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<ResidentProgram>> programs_;  // by type + command + env
};

}  // namespace conveyor::worker
