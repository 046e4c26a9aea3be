// conveyor::runtime through a real service process (echo_service.cpp) with a
// real PostgreSQL and a real devbroker: admin routes over HTTP, the
// service_instance row and its heartbeat, wake-ups from job events, live
// system parameters, SIGTERM drain and start-up failures.
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "conveyor/error/error.hpp"
#include "conveyor/http/client.hpp"
#include "conveyor/testing/testing.hpp"

namespace {

using conveyor::http::http_request;
using conveyor::testing::Broker;
using conveyor::testing::ChildProcess;
using conveyor::testing::TestDatabase;
using conveyor::testing::wait_until;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

using conveyor::testing::read_text;

// One echo service process with its own database, broker, port and data dir.
class RuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / conveyor::testing::unique_name("runtime");
    fs::create_directories(dir_);
    port_ = conveyor::testing::free_port();
    instance_ = conveyor::testing::unique_name("echo");
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "--- service output ---\n" << read_text(log_path()) << "\n";
    service_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::map<std::string, std::string> env() const {
    return {{"CONVEYOR_DATABASE_URL", db_.url()},
            {"CONVEYOR_KAFKA_BROKERS", broker_.bootstrap()},
            {"CONVEYOR_TOPIC_PREFIX", prefix_},
            {"CONVEYOR_HTTP_PORT", std::to_string(port_)},
            {"CONVEYOR_DATA_DIR", dir_.string()},
            {"CONVEYOR_INSTANCE_ID", instance_},
            // Only events wake the loop, so its count proves they arrive.
            {"CONVEYOR_POLL_INTERVAL_MS", "1h"},
            {"CONVEYOR_HEARTBEAT_INTERVAL_MS", "100ms"},
            {"CONVEYOR_LOG_LEVEL", "debug"}};
  }

  fs::path log_path() const { return dir_ / "service.log"; }
  std::string url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(port_) + path; }

  void start() {
    ChildProcess::Options o;
    o.argv = {CONVEYOR_ECHO_SERVICE_PATH};
    o.env = env();
    o.stdout_file = log_path();
    service_ = std::make_unique<ChildProcess>(o);
    ASSERT_TRUE(wait_until(
        [&] {
          try {
            return http_request("GET", url("/healthz"), "", {}, 1s).status == 200;
          } catch (const conveyor::Error&) {
            return false;  // not listening yet
          }
        },
        30s))
        << "the service did not answer /healthz";
  }

  long wakeups() const {
    return nlohmann::json::parse(http_request("GET", url("/count")).body).at("wakeups").get<long>();
  }

  TestDatabase db_;
  Broker broker_;
  std::string prefix_ = conveyor::testing::unique_name("rt");
  fs::path dir_;
  int port_ = 0;
  std::string instance_;
  std::unique_ptr<ChildProcess> service_;
};

TEST_F(RuntimeTest, ServesAdminRoutesAndRegistersItsInstance) {
  start();
  EXPECT_TRUE(wait_until([&] { return http_request("GET", url("/readyz")).status == 200; }, 10s))
      << http_request("GET", url("/readyz")).body;

  auto metrics = http_request("GET", url("/metrics"));
  EXPECT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.body.find("conveyor_up 1"), std::string::npos) << metrics.body;
  EXPECT_NE(metrics.body.find("conveyor_parameter_reloads_total"), std::string::npos);

  auto version = nlohmann::json::parse(http_request("GET", url("/version")).body);
  EXPECT_EQ(version.at("service"), "conveyor-echo");
  EXPECT_FALSE(version.at("version").get<std::string>().empty());

  auto rows = db_.query("SELECT service, status, pid::text, image_tag FROM conveyor.service_instance WHERE id = '" +
                        instance_ + "'");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0][0], "conveyor-echo");
  EXPECT_EQ(rows[0][1], "up");
  EXPECT_EQ(rows[0][2], std::to_string(service_->pid()));
  EXPECT_EQ(rows[0][3], "dev");

  const std::string beat = db_.query_value("SELECT last_heartbeat::text FROM conveyor.service_instance WHERE id = '" +
                                           instance_ + "'");
  EXPECT_TRUE(wait_until(
      [&] {
        return db_.query_value("SELECT last_heartbeat > '" + beat +
                               "'::timestamptz FROM conveyor.service_instance WHERE id = '" + instance_ + "'") == "t";
      },
      10s))
      << "the heartbeat did not advance from " << beat;
}

TEST_F(RuntimeTest, AJobEventOfAWatchedTypeWakesTheLoop) {
  start();
  // The first wait returns at once (the initial scan); wait for it so the
  // count below only grows through events.
  ASSERT_TRUE(wait_until([&] { return wakeups() >= 1; }, 10s));
  const long before = wakeups();

  const std::string id = db_.query_value("INSERT INTO conveyor.job (job_type) VALUES ('echo') RETURNING id");
  db_.exec("UPDATE conveyor.job SET status = 'configured' WHERE id = " + id);

  EXPECT_TRUE(wait_until([&] { return wakeups() > before; }, 20s))
      << "no wake-up after the job became configured";
  auto metrics = http_request("GET", url("/metrics")).body;
  EXPECT_NE(metrics.find("conveyor_service_wakeups_total"), std::string::npos);
  EXPECT_NE(metrics.find("conveyor_events_consumed_total"), std::string::npos);
}

TEST_F(RuntimeTest, ParameterChangesAreSeenWithoutARestart) {
  start();
  auto concurrency = [&] {
    return nlohmann::json::parse(http_request("GET", url("/parameters")).body).at("worker_concurrency").get<int>();
  };
  ASSERT_EQ(concurrency(), 4);
  db_.exec("UPDATE conveyor.system_parameters SET worker_concurrency = 7");
  // Well under the 30 s reload timer: the parameters event did it.
  EXPECT_TRUE(wait_until([&] { return concurrency() == 7; }, 15s));
}

TEST_F(RuntimeTest, SigtermDrainsAndExitsZero) {
  start();
  service_->signal(SIGTERM);
  auto status = service_->wait(20s);
  ASSERT_TRUE(status.has_value()) << "still running 20 s after SIGTERM";
  EXPECT_EQ(*status, 0);
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.service_instance WHERE id = '" + instance_ + "'"),
            "stopped");
}

TEST_F(RuntimeTest, ABadConfigValueExitsOneNamingTheKey) {
  auto e = env();
  e["CONVEYOR_HTTP_PORT"] = "abc";
  auto result = conveyor::testing::run({CONVEYOR_ECHO_SERVICE_PATH}, e, 30s);
  EXPECT_EQ(result.status, 1);
  EXPECT_NE(result.output.find("CONVEYOR_HTTP_PORT"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("conveyor-echo:"), std::string::npos) << result.output;
}

TEST(RuntimeStartup, AnUnmigratedDatabaseFailsWithAClearMessage) {
  TestDatabase db(/*migrate=*/false);
  auto result = conveyor::testing::run({CONVEYOR_ECHO_SERVICE_PATH},
                                       {{"CONVEYOR_DATABASE_URL", db.url()},
                                        {"CONVEYOR_HTTP_PORT", std::to_string(conveyor::testing::free_port())}},
                                       30s);
  EXPECT_EQ(result.status, 1);
  EXPECT_NE(result.output.find("database not migrated: run `conveyor db migrate`"), std::string::npos)
      << result.output;
}

}  // namespace
