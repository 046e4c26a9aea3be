#include "conveyor/runtime/stage_loop.hpp"

#include <algorithm>

#include "conveyor/error/error.hpp"
#include "conveyor/logging/logging.hpp"

namespace conveyor::runtime {

using std::chrono::milliseconds;

db::TxOptions stage_tx_options(const Context& ctx) {
  db::TxOptions o;
  o.actor = ctx.service();
  return o;
}

void count_probe(Context& ctx, const std::string& step) {
  ctx.metrics()
      .counter("conveyor_stage_probes_total", "reads of whether a step has work, before its transaction",
               {{"step", step}})
      .inc();
}

void count_transaction(Context& ctx, const std::string& step) {
  ctx.metrics()
      .counter("conveyor_stage_transactions_total", "transactions a step ran to claim and move jobs", {{"step", step}})
      .inc();
}

StageLoop::StageLoop(StageLoopOptions options) : options_(std::move(options)), state_(options_.steps.size()) {
  for (const StageStep& step : options_.steps) {
    if (!step.run && (!step.claim || !step.apply)) {
      throw Error(errc::internal, "stage step '" + step.name + "' needs claim and apply, or run");
    }
  }
}

StageLoop::StepResult StageLoop::run_step(Context& ctx, const StageStep& step, const Pass& pass, bool probing) {
  if (step.run) {
    const int n = step.run(pass);
    return {n, n >= pass.batch_size};
  }
  if (step.probe && probing) {
    count_probe(ctx, step.name);
    const Claim probe = step.probe(pass);
    const db::Result found = ctx.db().exec_idempotent(probe.statement, probe.params);
    if (step.probed ? !step.probed(found) : found.empty()) return {};
  }
  count_transaction(ctx, step.name);
  return ctx.db().transact(
      [&](db::Tx& tx) -> StepResult {
        const std::optional<Claim> claim = step.claim(tx, pass);
        if (!claim) return {};
        const db::Result rows = tx.exec(claim->statement, claim->params);
        if (rows.empty()) return {};
        const int moved = step.apply(tx, rows, pass);
        return {moved, moved > 0 && static_cast<int>(rows.size()) >= pass.batch_size};
      },
      stage_tx_options(ctx));
}

bool StageLoop::concerns(const StageStep& step, const Wake& wake) {
  if (!wake.concerns(step.woken_by)) return false;
  if (wake.anything || !step.waiting || step.waiting()) return true;
  // Nothing waits: only the types that bring work of their own count.
  return std::any_of(wake.types.begin(), wake.types.end(), [&](const std::string& t) {
    return (step.woken_by.empty() || step.woken_by.contains(t)) && !step.woken_while_waiting.contains(t);
  });
}

bool StageLoop::skips_probe(const StageStep& step, const Wake& wake) {
  if (wake.anything) return false;
  // Only a type that concerns the step now: one of woken_while_waiting only
  // while jobs wait.
  const bool waiting = !step.waiting || step.waiting();
  return std::any_of(wake.types.begin(), wake.types.end(), [&](const std::string& t) {
    return step.unprobed_after.contains(t) && (waiting || !step.woken_while_waiting.contains(t));
  });
}

int StageLoop::pass(Context& ctx) { return run_pass(ctx, Wake{}, milliseconds(0)).moved; }

StageLoop::StepResult StageLoop::run_pass(Context& ctx, const Wake& wake, milliseconds poll) {
  const int batch_size =
      options_.batch_size > 0 ? options_.batch_size : static_cast<int>(ctx.config().get_int("CONVEYOR_BATCH_SIZE"));
  // One snapshot for the whole pass: every step sees the same parameters.
  const auto parameters = ctx.parameters();
  const Pass pass{ctx, batch_size, *parameters};
  StepResult total;
  const auto now = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < options_.steps.size(); ++i) {
    const StageStep& step = options_.steps[i];
    StepState& state = state_[i];
    const bool due = state.due && *state.due <= now;
    if (!concerns(step, wake) && !due && now - state.last_run < poll) continue;
    state.ran = true;
    state.last_run = now;
    // A step run for its next_due or the poll probes: the NOTIFY was not
    // about its work.
    const bool probe = !skips_probe(step, wake);
    const StepResult r = run_step(ctx, step, pass, probe);
    if (step.moved != nullptr && r.moved > 0) step.moved->inc(r.moved);
    total.moved += r.moved;
    total.full = total.full || r.full;
  }
  return total;
}

milliseconds StageLoop::next_wait(Context& ctx, milliseconds poll) {
  const auto now = std::chrono::steady_clock::now();
  milliseconds wait = poll;
  for (std::size_t i = 0; i < options_.steps.size(); ++i) {
    const StageStep& step = options_.steps[i];
    if (!step.next_due) continue;
    // A step that did not run since it was last asked changed nothing its
    // next_due reads: its earlier answer stands.
    StepState& state = state_[i];
    if (state.ran) {
      const auto due = step.next_due(ctx);
      state.due = due ? std::optional(now + *due) : std::nullopt;
      state.ran = false;
    }
    if (state.due) {
      wait = std::min(wait, std::max(std::chrono::ceil<milliseconds>(*state.due - now), milliseconds(1)));
    }
  }
  return wait;
}

void StageLoop::run(Context& ctx) {
  const milliseconds poll = ctx.config().get_duration("CONVEYOR_POLL_INTERVAL_MS");
  milliseconds wait = poll;
  Wake wake;  // the first pass runs every step
  for (;;) {
    wait = poll;
    bool failed = false;
    try {
      // A full batch may have left more behind: pass again while a step
      // claimed as many rows as it could. A batch that was not full took
      // everything there was; what changed since is notified, so the next
      // wait returns at once (an idle pass after each would cost every
      // wake-up a transaction per step for nothing).
      while (run_pass(ctx, wake, poll).full && !ctx.stopping()) {
      }
      wait = next_wait(ctx, poll);
    } catch (const std::exception& e) {
      // The database may be briefly away (a restart, a lost connection): the
      // next wake-up or poll retries; nothing was half-applied.
      ctx.log()->error("{} pass failed: {}", options_.name, logging::redact_url(e.what()));
      failed = true;
    }
    if (!ctx.wait_for_work(wait)) break;
    // After a failed pass, the next runs every step: the work the failed
    // step left is not what the next notification will name.
    wake = failed ? Wake{} : ctx.last_wake();
  }
}

}  // namespace conveyor::runtime
