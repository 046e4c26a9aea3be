#pragma once
// conveyor::runtime::StageLoop — the one loop every stage service runs
// (configuration, execution, publication): a pass claims a batch of jobs
// (FOR UPDATE SKIP LOCKED, ordered, at most CONVEYOR_BATCH_SIZE) and applies
// the stage's transition to the whole batch in the same transaction; passes
// repeat while a step moved a whole batch (more may wait); then the loop waits for a wake-up
// (PostgreSQL NOTIFY, or a Kafka event where NOTIFY cannot wake, see
// runtime.hpp), the fallback poll, or the moment a step says work becomes
// due. A failed pass (lost connection, PostgreSQL restart) is logged and
// retried at the next wake-up or poll; it never ends the service.
//
// A stage keeps only what is its own: what "eligible" means (the claim) and
// what the transition computes (apply, a function over the claimed batch).
#include <chrono>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "conveyor/db/db.hpp"
#include "conveyor/metrics/metrics.hpp"
#include "conveyor/model/system_parameters.hpp"
#include "conveyor/runtime/runtime.hpp"

namespace conveyor::runtime {

// What one pass of a step sees; valid during the pass.
struct Pass {
  Context& ctx;
  int batch_size;                             // rows one pass may claim
  const model::SystemParameters& parameters;  // one snapshot per pass
};

// The statement that claims a batch (ordered, LIMIT, FOR UPDATE SKIP
// LOCKED) and its parameters.
struct Claim {
  db::Statement statement;
  std::vector<db::Param> params;
};

struct StageStep {
  std::string name;  // "configure": logs and the metric label
  // Inside the pass's transaction: what to claim now; nullopt when nothing
  // can be (e.g. no capacity left). May run statements first (locks, counts).
  std::function<std::optional<Claim>(db::Tx&, const Pass&)> claim;
  // Inside the same transaction, when the claim returned rows: the
  // transition over the whole batch, as one set-based statement where the
  // stage allows. Returns the number of jobs moved.
  std::function<int(db::Tx&, const db::Result&, const Pass&)> apply;
  // Optional: a cheap read, run alone (db::Pool::exec_idempotent, one round
  // trip) before the step's transaction: when it returns no row, nothing
  // can be claimed and the transaction (BEGIN, the claim's statements,
  // COMMIT) is skipped. Most wake-ups find no work for a given step (it was
  // for another step, or a replica took it), and then cost one round trip.
  // It may match more than the claim, never less: what it misses waits for
  // the next wake-up or the poll.
  std::function<Claim(const Pass&)> probe{};
  // Optional: reads the probe's result instead of "any row": returns whether
  // there is work. Lets one probe also answer next_due (a row with both).
  std::function<bool(const db::Result&)> probed{};
  // Instead of claim + apply in one transaction: a pass of the step's own
  // (publication claims, commits, delivers, then records). Returns jobs moved.
  std::function<int(const Pass&)> run{};
  // Optional: time until work becomes due with no event (a back-off ending),
  // asked after the passes in which this step ran; a step that did not run
  // keeps the moment it gave last.
  std::function<std::optional<std::chrono::milliseconds>(Context&)> next_due{};
  // The job event types after which this step may have work (its NOTIFY
  // wakes the service). A wake-up by NOTIFY of none of them skips the step,
  // probe included, unless its next_due has come or it has not run for a
  // poll interval (a busy service's NOTIFYs may keep the poll from ever
  // timing out). A poll, a Kafka event or wake() runs every step. Empty:
  // every wake-up runs it.
  std::set<std::string> woken_by{};
  // Optional: those of woken_by that bring work only while `waiting` says
  // so (admission: a freed slot matters only while jobs wait for one). A
  // wake-up by NOTIFY of these alone skips the step while `waiting` returns
  // false, under the same terms as woken_by.
  std::set<std::string> woken_while_waiting{};
  std::function<bool()> waiting{};
  // Optional: those of woken_by whose NOTIFY all but promises the step work
  // (a job just entered the status it claims, or a slot was freed while jobs
  // waited for one): a wake-up by NOTIFY of one of them runs the transaction
  // without the probe, one round trip fewer. It finds nothing only when a
  // replica took the work first. A poll, a Kafka event or wake() still
  // probes; probed() is not called when the probe is skipped.
  std::set<std::string> unprobed_after{};
  // Counts the jobs this step moved; null: not counted.
  metrics::Counter* moved = nullptr;
};

struct StageLoopOptions {
  std::string name;              // "configuration": in log lines
  std::vector<StageStep> steps;  // run in this order in every pass
  int batch_size = 0;            // 0: CONVEYOR_BATCH_SIZE
};

class StageLoop {
 public:
  explicit StageLoop(StageLoopOptions options);

  // One pass of every step (each in its own transaction, the service's
  // name as actor). Returns the jobs moved; throws on a database error.
  int pass(Context& ctx);

  // The service loop: passes while a step moves a whole batch, then waits for a
  // wake-up, the poll (CONVEYOR_POLL_INTERVAL_MS) or the earliest next_due.
  // Returns once ctx.stopping(). Errors are logged and retried next pass.
  void run(Context& ctx);

  // The wait after the passes: the poll, or sooner when a step's work
  // becomes due sooner.
  std::chrono::milliseconds next_wait(Context& ctx, std::chrono::milliseconds poll);

 private:
  struct StepResult {
    int moved = 0;
    bool full = false;  // moved something and claimed a whole batch: more may wait
  };
  StepResult run_step(Context& ctx, const StageStep& step, const Pass& pass, bool probing);
  // The steps that `wake` concerns, whose next_due came or that did not run
  // for `poll`; records which ran (for next_wait).
  StepResult run_pass(Context& ctx, const Wake& wake, std::chrono::milliseconds poll);
  // Whether `wake` may have brought `step` work (woken_by, woken_while_waiting).
  static bool concerns(const StageStep& step, const Wake& wake);
  // Whether `wake` is a NOTIFY that lets `step` skip its probe (unprobed_after).
  static bool skips_probe(const StageStep& step, const Wake& wake);
  struct StepState {
    bool ran = true;                                           // since next_wait last asked its next_due
    std::optional<std::chrono::steady_clock::time_point> due;  // its last next_due
    std::chrono::steady_clock::time_point last_run{};
  };
  StageLoopOptions options_;
  std::vector<StepState> state_;  // per step
};

// The transaction options of a stage: the service's name as actor of every
// status change it makes.
db::TxOptions stage_tx_options(const Context& ctx);

// What a step costs, counted by the loop for claim + apply steps, and by a
// step's own pass (StageStep::run) the same way: a probe (a read of whether
// it has work, before its transaction) and a transaction that claims.
void count_probe(Context& ctx, const std::string& step);
void count_transaction(Context& ctx, const std::string& step);

}  // namespace conveyor::runtime
