// conveyor::runtime::StageLoop against a real PostgreSQL: when passes
// repeat, and what a probe spares. The Context is a minimal stand-in (a
// pool, a config, parameters); the loop's steps are plain SQL over a table
// of the test's own.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <stdexcept>
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
  explicit LoopContext(const std::string& url)
      : config_(config::load(service_schema(), {}, {{"CONVEYOR_DATABASE_URL", url}})),
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
  bool wait_for_work(std::chrono::milliseconds) override { return false; }
  void wake() override {}
  void set_ready(bool, const std::string&) override {}

 private:
  std::string name_ = "stage-loop-test";
  config::Config config_;
  db::Pool pool_;
  metrics::Registry registry_;
  std::shared_ptr<const model::SystemParameters> parameters_;
};

constexpr db::Statement kClaim{"claim",
                               "SELECT id FROM item WHERE NOT done ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"};
constexpr db::Statement kApply{"apply", "UPDATE item SET done = true WHERE id = ANY($1::int[])"};
constexpr db::Statement kAny{"any", "SELECT 1 FROM item WHERE NOT done LIMIT 1"};

struct Counts {
  std::atomic<int> claims{0};
  std::atomic<int> probes{0};
};

StageStep item_step(Counts& counts, bool with_probe) {
  StageStep step;
  step.name = "item";
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

StageLoop item_loop(Counts& counts, bool with_probe) {
  StageLoopOptions o;
  o.name = "items";
  o.batch_size = 2;
  o.steps.push_back(item_step(counts, with_probe));
  return StageLoop(std::move(o));
}

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
  StageLoopOptions o;
  o.name = "items";
  o.batch_size = 2;
  o.steps.push_back(std::move(step));
  StageLoop loop(std::move(o));
  EXPECT_EQ(loop.pass(ctx), 0);
  EXPECT_EQ(counts.claims.load(), 0) << "the claim ran although probed() said no";
  db.exec("INSERT INTO item (id) VALUES (1)");
  EXPECT_EQ(loop.pass(ctx), 1);
  EXPECT_EQ(counts.claims.load(), 1);
  EXPECT_EQ(seen, (std::vector<std::int64_t>{0, 1}));
}

}  // namespace
}  // namespace conveyor::runtime
