#pragma once
// Shared fixture of the stage-service tests: a migrated database and a
// devbroker of the test's own, a data dir, and one stage service started as
// a real process (its output in <dir>/service.log, printed when a test
// fails). Not thread-safe; owned by one test.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>

#include "conveyor/testing/testing.hpp"

namespace conveyor::stages_test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using conveyor::testing::wait_until;

using conveyor::testing::read_text;

class StageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / conveyor::testing::unique_name("stages");
    fs::create_directories(dir_);
    prefix_ = conveyor::testing::unique_name("t");
  }
  void TearDown() override {
    if (service_) {
      // SIGTERM must drain and exit 0.
      EXPECT_EQ(service_->stop(10s), 0) << "service did not exit cleanly on SIGTERM";
    }
    if (HasFailure()) std::cerr << "--- service output ---\n" << read_text(log_path()) << "\n";
    service_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  fs::path log_path() const { return dir_ / "service.log"; }
  fs::path data_dir() const { return dir_ / "data"; }

  // Starts `binary` against this test's database and broker; `extra`
  // overrides or adds CONVEYOR_* values.
  void start(const std::string& binary, const std::map<std::string, std::string>& extra = {}) {
    std::map<std::string, std::string> env{
        {"CONVEYOR_DATABASE_URL", db_.url()},       {"CONVEYOR_KAFKA_BROKERS", broker_.bootstrap()},
        {"CONVEYOR_TOPIC_PREFIX", prefix_},         {"CONVEYOR_HTTP_PORT", "0"},
        {"CONVEYOR_DATA_DIR", data_dir().string()}, {"CONVEYOR_INSTANCE_ID", instance_},
        {"CONVEYOR_POLL_INTERVAL_MS", "500ms"},     {"CONVEYOR_LOG_LEVEL", "debug"}};
    for (const auto& [k, v] : extra) env[k] = v;
    conveyor::testing::ChildProcess::Options o;
    o.argv = {binary};
    o.env = env;
    o.stdout_file = log_path();
    service_ = std::make_unique<conveyor::testing::ChildProcess>(o);
  }

  // A sample's value on the service's /metrics ("conveyor_stage_probes_total{step=\"admit\"}"); -1
  // while the service does not serve it (yet).
  double sample(const std::string& name) const {
    const std::string address = db_.query_value(
        "SELECT coalesce(http_address, '') FROM conveyor.service_instance WHERE id = '" + instance_ + "'");
    return address.empty() ? -1.0 : conveyor::testing::metric_sample(address, name);
  }

  // Whether the service's NOTIFY listener LISTENs to every channel it wants
  // (conveyor_listening), within 10 s. Once it does, it has woken the loop
  // for what it may have missed: a wake-up that, under load, can come after
  // the start-up passes. A test that counts passes or probes lets a marker
  // job through after this, so that its count starts after that wake-up.
  ::testing::AssertionResult listening() const {
    if (wait_until([&] { return sample("conveyor_listening") == 1.0; }, 10s)) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "the service never listened";
  }

  std::string status(const std::string& id) const {
    return db_.query_value("SELECT status FROM conveyor.job WHERE id = " + id);
  }
  // Waits until job `id` has `expected` status; false (with the actual
  // status in the failure message) after `timeout`.
  ::testing::AssertionResult reaches(const std::string& id, const std::string& expected,
                                     std::chrono::milliseconds timeout = 20s) const {
    if (wait_until([&] { return status(id) == expected; }, timeout)) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "job " << id << " is " << status(id) << ", expected " << expected;
  }
  // The job's history as "from>to" steps, e.g. "initialized>configured,configured>ready".
  std::string history(const std::string& id) const {
    return db_.query_value(
        "SELECT string_agg(coalesce(from_status, '') || '>' || to_status, ',' ORDER BY id) "
        "FROM conveyor.job_status_change WHERE job_id = " +
        id);
  }
  std::string insert_job(const std::string& type, const std::string& params_json = "{}",
                         const std::string& depends_on = "{}") const {
    return db_.query_value("INSERT INTO conveyor.job (job_type, params, depends_on) VALUES ('" + type + "', '" +
                           params_json + "', '" + depends_on + "') RETURNING id");
  }

  conveyor::testing::TestDatabase db_;
  conveyor::testing::Broker broker_;
  fs::path dir_;
  std::string prefix_;
  std::unique_ptr<conveyor::testing::ChildProcess> service_;
  std::string instance_ = conveyor::testing::unique_name("stage");
};

}  // namespace conveyor::stages_test
