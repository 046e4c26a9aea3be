// `conveyor system status` after an incident (issue 13, item 7): each service
// up, DEGRADED or DOWN with its count of live instances, by the one rule of
// conveyor.service_health; workers the pool replaced are history, not DOWN;
// a stopped service is DOWN (0 live). The CLI runs as a real process against
// a migrated database; no service runs, the rows are written by hand.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "conveyor/testing/testing.hpp"
#include "cli_test.hpp"

namespace {

namespace fs = std::filesystem;
using conveyor::testing::RunResult;
using conveyor::testing::cli::CliTest;
using conveyor::testing::cli::has;
using nlohmann::json;

class StatusCli : public CliTest {
 protected:
  json status_json() {
    const auto r = conveyor({"--json", "system", "status"});
    EXPECT_EQ(r.status, 0) << r.output;
    return json::parse(r.output);
  }
  // A service instance with a heartbeat `age` old and a recorded `status`.
  void instance(const std::string& id, const std::string& service, const std::string& status, const std::string& age) {
    db_.exec("INSERT INTO conveyor.service_instance (id, service, status, last_heartbeat) VALUES ('" + id + "', '" +
             service + "', '" + status + "', now() - interval '" + age + "')");
  }
  // A worker: its service instance and its conveyor.worker row share the name.
  void worker(const std::string& name, const std::string& worker_status, const std::string& instance_status,
              const std::string& age) {
    db_.exec("INSERT INTO conveyor.worker (name, host, pid, concurrency, status, last_heartbeat) VALUES ('" + name +
             "', 'hostA', 1, 1, '" + worker_status + "', now() - interval '" + age + "')");
    instance(name, "conveyor-worker", instance_status, age);
  }
};

// The incident of the issue: the pool replaced killed workers (their rows
// lost, their instances stale or marked down by the reconciler), one
// creation replica died, the monitor was stopped.
TEST_F(StatusCli, SystemStatusShowsUpDegradedDownAndReplacedWorkersAsHistory) {
  instance("c1", "conveyor-creation", "up", "0 seconds");
  instance("c2", "conveyor-creation", "up", "1 hour");
  instance("e1", "conveyor-execution", "up", "0 seconds");
  instance("m1", "conveyor-monitor", "stopped", "10 minutes");
  worker("w-live", "active", "up", "0 seconds");
  worker("w-killed-1", "lost", "up", "1 hour");
  worker("w-killed-2", "lost", "down", "1 hour");
  worker("w-drained", "stopped", "down", "1 hour");
  // Killed -9 a moment ago: the pool marked its row lost at once, while the
  // instance's heartbeat is still fresh.
  worker("w-killed-now", "lost", "up", "0 seconds");
  // Retention removed its worker row before its instance row.
  instance("w-purged", "conveyor-worker", "down", "2 days");
  // A lost row keeps the last `running` it reported; its jobs were recovered.
  db_.exec("UPDATE conveyor.worker SET running = 1 WHERE status = 'lost'");

  const json s = status_json();
  const json& services = s.at("services");
  EXPECT_EQ(services.at("conveyor-creation").at("state"), "degraded");
  EXPECT_EQ(services.at("conveyor-creation").at("live"), 1);
  EXPECT_EQ(services.at("conveyor-creation").at("down"), 1);
  EXPECT_EQ(services.at("conveyor-execution").at("state"), "up");
  EXPECT_EQ(services.at("conveyor-monitor").at("state"), "down") << "a stopped service is down";
  EXPECT_EQ(services.at("conveyor-monitor").at("live"), 0);
  EXPECT_EQ(services.at("conveyor-worker").at("state"), "up");
  EXPECT_EQ(services.at("conveyor-worker").at("live"), 1);
  EXPECT_EQ(services.at("conveyor-worker").at("down"), 0) << "replaced workers are not down";
  EXPECT_EQ(services.at("conveyor-worker").at("replaced"), 5);
  EXPECT_EQ(s.at("workers").at("lost").at("running"), 0) << "a lost worker runs nothing";

  const auto r = conveyor({"system", "status"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "conveyor-creation DEGRADED (1 live, 1 down)")) << r.output;
  EXPECT_TRUE(has(r, "conveyor-execution up (1 live)")) << r.output;
  EXPECT_TRUE(has(r, "conveyor-monitor DOWN (0 live)")) << r.output;
  EXPECT_TRUE(has(r, "conveyor-worker up (1 live, 5 replaced (history))")) << r.output;
  EXPECT_FALSE(has(r, "conveyor-worker DEGRADED")) << r.output;
  EXPECT_TRUE(has(r, "; lost 3\n")) << r.output;
}

// A worker whose instance is stale while its row is still active (not yet
// lost, so not replaced) is a real fault: down. Workers with nothing live
// and nothing down are idle (the pool's min may be 0), not DOWN.
TEST_F(StatusCli, AStaleWorkerNotYetReplacedIsDownAndNoWorkersIsIdle) {
  worker("w-stale", "active", "up", "1 hour");
  auto r = conveyor({"system", "status"});
  EXPECT_TRUE(has(r, "conveyor-worker DOWN (0 live, 1 down)")) << r.output;

  db_.exec("UPDATE conveyor.worker SET status = 'lost' WHERE name = 'w-stale'");
  r = conveyor({"system", "status"});
  EXPECT_TRUE(has(r, "conveyor-worker idle (0 live, 1 replaced (history))")) << r.output;
  EXPECT_EQ(status_json().at("services").at("conveyor-worker").at("state"), "idle");
}

}  // namespace
