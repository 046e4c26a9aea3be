// conveyor::runtime::StageLoop against a real PostgreSQL: when passes
// repeat, and what a probe spares. The Context is a minimal stand-in (a
// pool, a config, parameters); the loop's steps are plain SQL over a table
// of the test's own.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "conveyor/config/config.hpp"
#include "conveyor/metrics/metrics.hpp"
#include "conveyor/runtime/stage_loop.hpp"
#include "conveyor/testing/testing.hpp"

namespace conveyor::runtime {
namespace {

using conveyor::testing::TestDatabase;

// Just enough of a service for a StageLoop: no HTTP, no broker. The loop
// waits once after its passes; the first wait ends it.
class LoopContext final : public Context {
 public:
  // `poll_ms`: CONVEYOR_POLL_INTERVAL_MS (a minute: no step runs for want
  // of one in these tests, unless they ask).
  explicit LoopContext(const std::string& url, const std::string& poll_ms = "60000")
      : config_(config::load(service_schema(), {},
                             {{"CONVEYOR_DATABASE_URL", url}, {"CONVEYOR_POLL_INTERVAL_MS", poll_ms}})),
        pool_(db::PoolOptions{.url = url, .size = 2, .actor = "stage-loop-test"}),
        parameters_(std::make_shared<model::SystemParameters>()) {}
  const std::string& service() const override { return name_; }
  const std::string& instance_id() const override { return name_; }
  const config::Config& config() const override { return config_; }
  db::Pool& db() override { return pool_; }
  metrics::Registry& metrics() override { return registry_; }
  std::shared_ptr<spdlog::logger> log() override { return spdlog::default_logger(); }
  http::Server& http() override { throw std::logic_error("no HTTP server in this test"); }
  bus::Producer* producer() override { return nullptr; }
  std::shared_ptr<const model::SystemParameters> parameters() const override { return parameters_; }
  void reload_parameters() override {}
  bool stopping() const override { return false; }
  // Returns the scripted wake-ups one by one, each after `between_` (the
  // time between two notifications of a busy system), then false (the
  // loop ends).
  bool wait_for_work(std::chrono::milliseconds) override {
    if (script_.empty()) return false;
    std::this_thread::sleep_for(between_);
    last_ = script_.front();
    script_.erase(script_.begin());
    return true;
  }
  Wake last_wake() const override { return last_; }
  void script(std::vector<Wake> wakes, std::chrono::milliseconds between = std::chrono::milliseconds(0)) {
    script_ = std::move(wakes);
    between_ = between;
  }
  void wake() override {}
  void set_ready(bool, const std::string&) override {}

 private:
  std::string name_ = "stage-loop-test";
  config::Config config_;
  db::Pool pool_;
  metrics::Registry registry_;
  std::shared_ptr<const model::SystemParameters> parameters_;
  std::vector<Wake> script_;
  std::chrono::milliseconds between_{0};
  Wake last_;
};

// A NOTIFY wake-up of these job event types only.
Wake notified(std::set<std::string> types) { return Wake{.anything = false, .types = std::move(types)}; }

constexpr db::Statement kClaim{"claim",
                               "SELECT id FROM item WHERE NOT done ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"};
constexpr db::Statement kApply{"apply", "UPDATE item SET done = true WHERE id = ANY($1::int[])"};
constexpr db::Statement kAny{"any", "SELECT 1 FROM item WHERE NOT done LIMIT 1"};

struct Counts {
  std::atomic<int> claims{0};
  std::atomic<int> probes{0};
};

StageStep item_step(Counts& counts, bool with_probe, std::set<std::string> woken_by = {}) {
  StageStep step;
  step.name = "item";
  step.woken_by = std::move(woken_by);
  step.claim = [&counts](db::Tx&, const Pass& pass) {
    ++counts.claims;
    return Claim{kClaim, {pass.batch_size}};
  };
  step.apply = [](db::Tx& tx, const db::Result& rows, const Pass&) {
    std::vector<std::int64_t> ids;
    for (const auto r : rows) ids.push_back(r[0].as_int());
    return static_cast<int>(tx.exec(kApply, {ids}).affected_rows());
  };
  if (with_probe) {
    step.probe = [&counts](const Pass&) {
      ++counts.probes;
      return Claim{kAny, {}};
    };
  }
  return step;
}

// A loop of `steps` over the items, in batches of two.
StageLoop loop_of(std::vector<StageStep> steps) {
  StageLoopOptions o;
  o.name = "items";
  o.batch_size = 2;
  o.steps = std::move(steps);
  return StageLoop(std::move(o));
}

StageLoop item_loop(Counts& counts, bool with_probe) { return loop_of({item_step(counts, with_probe)}); }

// Issue 14: every wake-up ran one more, idle pass after its last useful one
// (a transaction per step for nothing). Five items in batches of two: two
// full batches, then one of one that ends the passes.
TEST(StageLoop, PassesRepeatOnlyWhileAStepMovesAWholeBatch) {
  TestDatabase db(false);
  db.exec("CREATE TABLE item (id int PRIMARY KEY, done boolean NOT NULL DEFAULT false)");
  db.exec("INSERT INTO item (id) SELECT generate_series(1, 5)");
  LoopContext ctx(db.url());
  Counts counts;
  item_loop(counts, false).run(ctx);
  EXPECT_EQ(db.query_value("SELECT count(*) FROM item WHERE done"), "5");
  EXPECT_EQ(counts.claims.load(), 3) << "2 + 2 + 1: no idle pass after the batch that was not full";
}

// A probe that finds nothing skips the step's transaction (and its claim);
// one that finds something lets it run.
TEST(StageLoop, AProbeThatFindsNothingSkipsTheStepsTransaction) {
  TestDatabase db(false);
  db.exec("CREATE TABLE item (id int PRIMARY KEY, done boolean NOT NULL DEFAULT false)");
  LoopContext ctx(db.url());
  Counts counts;
  StageLoop loop = item_loop(counts, true);
  EXPECT_EQ(loop.pass(ctx), 0);
  EXPECT_EQ(counts.probes.load(), 1);
  EXPECT_EQ(counts.claims.load(), 0) << "the claim ran although the probe found nothing";
  db.exec("INSERT INTO item (id) VALUES (1)");
  EXPECT_EQ(loop.pass(ctx), 1);
  EXPECT_EQ(counts.probes.load(), 2);
  EXPECT_EQ(counts.claims.load(), 1);
}

// A probe whose row answers more than "is there work" (execution's: whether
// any job is admissible, and when the next back-off ends) is read by the
// step's probed(): its false skips the transaction although a row came back.
TEST(StageLoop, AProbedRowSaysWhetherTheStepRuns) {
  TestDatabase db(false);
  db.exec("CREATE TABLE item (id int PRIMARY KEY, done boolean NOT NULL DEFAULT false)");
  LoopContext ctx(db.url());
  Counts counts;
  static constexpr db::Statement kCount{"count", "SELECT count(*) FILTER (WHERE NOT done) AS open FROM item"};
  std::vector<std::int64_t> seen;
  StageStep step = item_step(counts, false);
  step.probe = [&counts](const Pass&) {
    ++counts.probes;
    return Claim{kCount, {}};
  };
  step.probed = [&seen](const db::Result& r) {
    seen.push_back(r[0]["open"].as_int());
    return seen.back() > 0;
  };
  StageLoop loop = loop_of({std::move(step)});
  EXPECT_EQ(loop.pass(ctx), 0);
  EXPECT_EQ(counts.claims.load(), 0) << "the claim ran although probed() said no";
  db.exec("INSERT INTO item (id) VALUES (1)");
  EXPECT_EQ(loop.pass(ctx), 1);
  EXPECT_EQ(counts.claims.load(), 1);
  EXPECT_EQ(seen, (std::vector<std::int64_t>{0, 1}));
}

// Issue 14: every wake-up probed every step, although a NOTIFY names what
// changed. A step runs after a NOTIFY of one of its woken_by types, and
// after anything else (the first pass, a poll, a Kafka event, wake()).
TEST(StageLoop, ANotifyWakesOnlyTheStepsItConcerns) {
  TestDatabase db(false);
  db.exec("CREATE TABLE item (id int PRIMARY KEY, done boolean NOT NULL DEFAULT false)");
  LoopContext ctx(db.url());
  Counts a;
  Counts b;
  StageStep step_a = item_step(a, true, {"io.conveyor.job.a"});
  StageStep step_b = item_step(b, true, {"io.conveyor.job.b"});
  ctx.script({notified({"io.conveyor.job.a"}), notified({"io.conveyor.job.b"}), notified({"io.conveyor.job.c"}),
              notified({"io.conveyor.job.a", "io.conveyor.job.b"}), Wake{}});
  loop_of({std::move(step_a), std::move(step_b)}).run(ctx);
  EXPECT_EQ(a.probes.load(), 4) << "first pass, a, a+b, anything";
  EXPECT_EQ(b.probes.load(), 4) << "first pass, b, a+b, anything";
}

// Issue 14: a NOTIFY that all but promises a step work (a job just entered
// the status it claims: unprobed_after) runs its transaction without the
// probe; any other wake-up probes first. One item: the first pass takes it.
TEST(StageLoop, ANotifyThatPromisesWorkSkipsTheProbe) {
  TestDatabase db(false);
  db.exec("CREATE TABLE item (id int PRIMARY KEY, done boolean NOT NULL DEFAULT false)");
  db.exec("INSERT INTO item (id) VALUES (1)");
  LoopContext ctx(db.url());
  Counts a;
  StageStep step = item_step(a, true, {"io.conveyor.job.a", "io.conveyor.job.b"});
  step.unprobed_after = {"io.conveyor.job.a"};
  ctx.script({notified({"io.conveyor.job.a"}), notified({"io.conveyor.job.b"}),
              notified({"io.conveyor.job.a", "io.conveyor.job.b"}), Wake{}});
  loop_of({std::move(step)}).run(ctx);
  EXPECT_EQ(a.probes.load(), 3) << "the first pass, b, anything; not a, nor a+b";
  EXPECT_EQ(a.claims.load(), 3) << "the first pass, a, a+b (b's and anything's probes found nothing)";
  EXPECT_EQ(db.query_value("SELECT count(*) FROM item WHERE done"), "1");
}

// Issue 14: admission probed after every job's end (a freed slot), though a
// freed slot can admit a job only while one waits for it. A NOTIFY of only
// woken_while_waiting types runs the step while waiting() says so; one that
// also names another of its types, or anything, runs it regardless.
TEST(StageLoop, ATypeThatMattersOnlyWhileJobsWaitRunsTheStepOnlyThen) {
  TestDatabase db(false);
  db.exec("CREATE TABLE item (id int PRIMARY KEY, done boolean NOT NULL DEFAULT false)");
  LoopContext ctx(db.url());
  Counts a;
  std::atomic<bool> waiting{false};
  StageStep step = item_step(a, true, {"io.conveyor.job.ready", "io.conveyor.job.processed"});
  step.woken_while_waiting = {"io.conveyor.job.processed"};
  step.waiting = [&waiting] { return waiting.load(); };
  const Wake freed = notified({"io.conveyor.job.processed"});
  // Jobs wait from the second probe on (its pass left some behind).
  step.probe = [&a, &waiting](const Pass&) {
    waiting = ++a.probes >= 2;
    return Claim{kAny, {}};
  };
  ctx.script({freed, notified({"io.conveyor.job.ready", "io.conveyor.job.processed"}), freed,
              notified({"io.conveyor.job.other"}), Wake{}});
  loop_of({std::move(step)}).run(ctx);
  EXPECT_EQ(a.probes.load(), 4) << "the first pass; (a freed slot, nothing waiting: skipped); ready+processed; a "
                                   "freed slot while jobs wait; (another type: skipped); anything";
}

// A failed pass leaves work that the next notification may not name: the
// pass after it runs every step.
TEST(StageLoop, ThePassAfterAFailedOneRunsEveryStep) {
  TestDatabase db(false);
  db.exec("CREATE TABLE item (id int PRIMARY KEY, done boolean NOT NULL DEFAULT false)");
  db.exec("INSERT INTO item (id) VALUES (1)");
  LoopContext ctx(db.url());
  Counts a;
  std::atomic<int> failures{1};
  StageStep step = item_step(a, true, {"io.conveyor.job.a"});
  step.probe = [&a, &failures](const Pass&) {
    ++a.probes;
    if (failures.fetch_sub(1) > 0) throw std::runtime_error("connection lost");
    return Claim{kAny, {}};
  };
  ctx.script({notified({"io.conveyor.job.b"}), notified({"io.conveyor.job.b"})});
  loop_of({std::move(step)}).run(ctx);
  EXPECT_EQ(a.probes.load(), 2) << "the failed first pass, then the retry a NOTIFY of b brought";
  EXPECT_EQ(db.query_value("SELECT count(*) FROM item WHERE done"), "1");
}

// NOTIFYs of other steps' work may come faster than the poll, so that the
// wait never times out: a step still runs once per poll interval. Here the
// poll is 20 ms and a NOTIFY of b comes every 15 ms: after 60 ms, step a
// (never notified) ran again at least once.
TEST(StageLoop, AStepNeverNotifiedStillRunsOncePerPollInterval) {
  TestDatabase db(false);
  db.exec("CREATE TABLE item (id int PRIMARY KEY, done boolean NOT NULL DEFAULT false)");
  LoopContext ctx(db.url(), "20");
  Counts a;
  const Wake b = notified({"io.conveyor.job.b"});
  ctx.script({b, b, b, b}, std::chrono::milliseconds(15));
  loop_of({item_step(a, true, {"io.conveyor.job.a"})}).run(ctx);
  EXPECT_GE(a.probes.load(), 2) << "the first pass, then at least one for the poll";
}

// next_due reads what only its own step changes: it is asked after the
// passes in which that step ran, and its answer stands in between.
TEST(StageLoop, NextDueIsAskedOnlyAfterItsStepRan) {
  TestDatabase db(false);
  db.exec("CREATE TABLE item (id int PRIMARY KEY, done boolean NOT NULL DEFAULT false)");
  LoopContext ctx(db.url());
  Counts a;
  std::atomic<int> asked{0};
  StageStep step = item_step(a, true, {"io.conveyor.job.a"});
  step.next_due = [&asked](Context&) -> std::optional<std::chrono::milliseconds> {
    ++asked;
    return std::chrono::milliseconds(60'000);
  };
  StageLoop loop = loop_of({std::move(step)});
  ctx.script({notified({"io.conveyor.job.b"}), notified({"io.conveyor.job.a"})});
  loop.run(ctx);
  EXPECT_EQ(a.probes.load(), 2) << "first pass and a";
  EXPECT_EQ(asked.load(), 2) << "after the first pass and after a; not after b";
  const auto wait = loop.next_wait(ctx, std::chrono::milliseconds(120'000));
  EXPECT_GT(wait, std::chrono::milliseconds(50'000)) << "the last answer stands";
  EXPECT_LE(wait, std::chrono::milliseconds(60'000));
  EXPECT_EQ(asked.load(), 2);
}

}  // namespace
}  // namespace conveyor::runtime
