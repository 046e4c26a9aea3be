#pragma once
// conveyor-execution (DESIGN §1): admission, ready -> queued, by priority then
// age, honouring not_before (retry back-off), job_types_list, paused job types
// and pools (conveyor.queue_state), per-type concurrency_limit and the pool
// capacity (max_number_of_worker_instances * worker_concurrency).
//
// Limits are exact across replicas because every admission transaction first
// takes one transaction-level advisory lock: admissions are serialised, and
// each sees the in-flight counts the previous one committed. Stateless
// between batches; the functions are safe to call from any thread.
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "conveyor/db/db.hpp"
#include "conveyor/model/system_parameters.hpp"
#include "conveyor/runtime/runtime.hpp"
#include "conveyor/runtime/stage_loop.hpp"

namespace conveyor::execution {

inline constexpr const char* kServiceName = "conveyor-execution";
// pg_advisory_xact_lock key of admission ("cvexec" in ASCII).
inline constexpr std::int64_t kAdmissionLockKey = 0x637665786563;

// Whom each admitted job is assigned to: of the active workers of its pool,
// the one with the most free slots (so a batch spreads over the pool), which
// the status trigger then wakes alone (conveyor.queued_channel); a job no
// worker has room for goes to none, and every worker is woken. Only a hint:
// a worker claims another's job once that one is gone or has left it queued
// for 1 s (services/worker). Only workers whose heartbeat is recent get jobs.
class Assignment {
 public:
  // An active worker of `pool` with `free` slots.
  void add(const std::string& pool, std::int64_t id, std::int64_t free);
  // The worker for a job of `pool`, one of whose slots it takes; 0 for none.
  std::int64_t take(const std::string& pool);

 private:
  struct Room {
    std::int64_t free = 0;
    std::int64_t id = 0;
  };
  std::map<std::string, std::vector<Room>> pools_;
};

// The claim of admission's candidates: the next `room` ready jobs admission
// may queue (conveyor.job_admission_eligible, of no type in `full_types`),
// in admission order, locked. At aging 0, conveyor.admission_candidates
// (its filter in the migration); above, a statement of this service's
// (its filter in execution.cpp): both must take the same jobs.
runtime::Claim candidates_claim(const std::optional<std::vector<std::string>>& job_types,
                                const std::vector<std::string>& full_types, std::int64_t room, double aging_per_minute);

// One admission pass, split as the StageLoop runs it: claim takes the
// admission lock, reads the in-flight counts, limits, the workers' room and
// the next back-off end in one statement, and says which ready jobs to claim
// (nullopt: the pool is full); apply admits the claimed candidates that
// still fit, each assigned a worker, in one statement. Also what the loop
// knows between passes: whether admissible jobs wait for a slot, and when
// the next back-off ends (from the probe, or the last pass). Not
// thread-safe: one pass at a time.
class Admission {
 public:
  std::optional<runtime::Claim> claim(db::Tx& tx, const model::SystemParameters& params, int batch_size);
  int apply(db::Tx& tx, const db::Result& candidates);
  // Takes the probe's row (kProbe: admissible, next_ms); returns whether
  // any ready job is admissible now, types at their limit aside.
  bool read_probe(const db::Result& row);
  // Whether the last pass may have left admissible jobs for want of a slot
  // (the pool or a type's limit was full, or it took all the room it had):
  // only then can a freed slot admit one. True until a pass says otherwise.
  bool left_waiting() const { return left_waiting_; }
  // left_waiting, unless a probe since found nothing admissible.
  bool waiting() const { return admissible_ && left_waiting_; }
  // Time until the next back-off ends, from now; nullopt: none.
  std::optional<std::chrono::milliseconds> next_due() const;

 private:
  void read_state(const db::Result& rows);
  void read_due(const db::Field& next_ms);
  bool full(const std::string& type);
  bool left_waiting_ = true;
  bool admissible_ = false;
  std::optional<std::chrono::steady_clock::time_point> due_;
  std::int64_t room_ = 0;
  std::int64_t capacity_ = 0;
  std::int64_t total_ = 0;
  std::map<std::string, std::int64_t> in_flight_;
  std::map<std::string, std::int64_t> limits_;
  Assignment assignment_;
};

// ready -> queued for up to batch_size jobs in one transaction. Returns the
// number admitted.
int admit_batch(db::Pool& pool, const model::SystemParameters& params, int batch_size);

// The service's StageLoop: one admit step, woken early for the next back-off end.
runtime::StageLoop stage_loop(runtime::Context& ctx);

runtime::ServiceSpec spec();
void setup(runtime::Context& ctx);
void loop(runtime::Context& ctx);

}  // namespace conveyor::execution
