#pragma once
// Runbook 001's restart in waves of dependent job types (issue 13, item 8).
// Wave 1 holds the enabled types with nothing upstream, wave k the types
// whose upstream types are all in earlier waves; upstream comes from the
// types' triggers and from depends_on seen in the last 30 days. A type in a
// cycle goes, with the rest of the cycle, into one last wave.
//
// A wave run (conveyor.wave_run, migration 20261210000400_wave_run) admits
// waves 1..current through job_types_list; conveyor-monitor calls
// advance_waves on each scan, which moves to the next wave once the current
// wave's backlog (its jobs in initialized..started, less ready ones that
// are held or of a paused type or pool: those never drain) is at or below the run's
// threshold, and after the last wave sets job_types_list back to NULL (every
// type) and the run to done. job_types_list is written by one UPDATE of that
// column only (the monitor may change no other parameter); the row's CHECKs
// and its history trigger are the same as for patch_system_parameters.
// Thread-safe: the functions use the caller's transaction.
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "conveyor/db/db.hpp"

namespace conveyor::model {

struct JobTypeWaves {
  std::vector<std::vector<std::string>> waves;  // wave k is waves[k-1]; names sorted
  // type -> the enabled types upstream of it (for "(after a, b)").
  std::vector<std::pair<std::string, std::vector<std::string>>> upstream;
};

JobTypeWaves job_type_waves(db::Tx& tx);

// Waves 1..n together, sorted: the job_types_list of wave n.
std::vector<std::string> admitted_types(const std::vector<std::vector<std::string>>& waves, std::size_t n);

struct WaveRun {
  std::int64_t id = 0;
  std::vector<std::vector<std::string>> waves;
  int current = 1;
  std::int64_t threshold = 0;
  std::string state;  // running | done | stopped
  std::string started_by;
  std::string started_at;
  std::string updated_at;
  std::int64_t backlog = 0;  // the current wave's jobs in initialized..started, now
};

// The running run, else the latest one; nullopt when there has been none.
std::optional<WaveRun> load_wave_run(db::Tx& tx);

// Starts a run with waves 1 admitted. Throws Error(conflict) when one runs,
// FieldError("threshold") when negative, Error(not_found) with no enabled type.
WaveRun start_waves(db::Tx& tx, std::int64_t threshold);

// Stops the running run (job_types_list stays as it is: the operator takes
// over). Returns the stopped run, nullopt when none was running.
std::optional<WaveRun> stop_waves(db::Tx& tx);

struct WaveStep {
  std::int64_t run_id = 0;
  int from = 0;  // the wave that drained
  int to = 0;    // the wave admitted now; 0 when the run is done
  std::int64_t backlog = 0;
  bool done = false;
};

// One step of the running run, if it can move: nullopt when no run is
// running, another transaction holds it (SKIP LOCKED), or the current wave's
// backlog is still above the threshold.
std::optional<WaveStep> advance_waves(db::Tx& tx);

}  // namespace conveyor::model
