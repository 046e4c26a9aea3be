// conveyor::runtime through a real service process (echo_service.cpp) with a
// real PostgreSQL and a real devbroker: admin routes over HTTP, the
// service_instance row and its heartbeat, wake-ups from job events, live
// system parameters, SIGTERM drain and start-up failures.
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <memory>
#include <iostream>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "conveyor/bus/kafka.hpp"
#include "conveyor/bus/topics.hpp"
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
    std::map<std::string, std::string> e = {{"CONVEYOR_DATABASE_URL", db_.url()},
                                            {"CONVEYOR_KAFKA_BROKERS", broker_.bootstrap()},
                                            {"CONVEYOR_TOPIC_PREFIX", prefix_},
                                            {"CONVEYOR_HTTP_PORT", std::to_string(port_)},
                                            {"CONVEYOR_DATA_DIR", dir_.string()},
                                            {"CONVEYOR_INSTANCE_ID", instance_},
                                            // Only events wake the loop, so its count proves they arrive.
                                            {"CONVEYOR_POLL_INTERVAL_MS", "1h"},
                                            {"CONVEYOR_HEARTBEAT_INTERVAL_MS", "100ms"},
                                            {"CONVEYOR_LOG_LEVEL", "debug"}};
    for (const auto& [k, v] : extra_env_) e[k] = v;
    return e;
  }
  std::map<std::string, std::string> extra_env_;

  fs::path log_path() const { return dir_ / "service.log"; }
  std::string url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(port_) + path; }
  // A service's own routes need a token (issue 12; the admin routes do not).
  std::map<std::string, std::string> reader() const {
    if (token_.empty()) token_ = conveyor::testing::create_api_token(db_.url(), "runtime-test-reader", "reader");
    return conveyor::testing::bearer(token_);
  }
  mutable std::string token_;

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
    return nlohmann::json::parse(http_request("GET", url("/count"), "", reader()).body).at("wakeups").get<long>();
  }
  // What ended the service loop's last wait: {"anything", "types"}.
  nlohmann::json last_wake() const {
    return nlohmann::json::parse(http_request("GET", url("/count"), "", reader()).body).at("last_wake");
  }

  // Moves job `id` through `statuses`, one change at a time, and expects
  // each change's event on Kafka within 20 s, before the next.
  void expect_each_published(const std::string& id, const std::vector<std::string>& statuses) {
    std::vector<std::string> types;
    for (const auto& status : statuses) types.push_back("io.conveyor.job." + status);
    conveyor::bus::ConsumerOptions o;
    o.brokers = broker_.bootstrap();
    o.group_id = conveyor::testing::unique_name("published");
    o.topics = conveyor::bus::job_event_topics(prefix_, types);
    conveyor::bus::Consumer consumer(o);
    std::size_t read = 0;
    for (const auto& status : statuses) {
      db_.exec("UPDATE conveyor.job SET status = '" + status + "' WHERE id = " + id);
      const std::size_t before = read;
      EXPECT_TRUE(wait_until(
          [&] {
            read += consumer.poll(10, 200ms).size();
            return read > before;
          },
          20s))
          << status << " was not published";
    }
  }

  // A counter of /metrics without labels; -1 when it is not there.
  long counter(const std::string& name) const {
    const std::string m = http_request("GET", url("/metrics")).body;
    const std::string sample = "\n" + name + " ";  // the sample, not the HELP line
    const auto at = m.find(sample);
    return at == std::string::npos ? -1L : std::stol(m.substr(at + sample.size()));
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

  const std::string beat =
      db_.query_value("SELECT last_heartbeat::text FROM conveyor.service_instance WHERE id = '" + instance_ + "'");
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

  EXPECT_TRUE(wait_until([&] { return wakeups() > before; }, 20s)) << "no wake-up after the job became configured";
  auto metrics = http_request("GET", url("/metrics")).body;
  EXPECT_NE(metrics.find("conveyor_service_wakeups_total"), std::string::npos);
  EXPECT_NE(metrics.find("conveyor_events_consumed_total"), std::string::npos);
}

// Issue 14: every service read every job event (one topic for all: 42
// deliveries per job over the six services). Now a service reads the topics
// of its wake_on types only: the echo service (wake_on configured) reads the
// configured events of two jobs and none of the initialized, ready and
// queued events on the other topics.
TEST_F(RuntimeTest, TheJobConsumerReadsOnlyTheTopicsOfItsWakeOnTypes) {
  start();
  ASSERT_TRUE(wait_until([&] { return wakeups() >= 1; }, 10s));
  auto consumed = [&] { return counter("conveyor_events_consumed_total"); };
  ASSERT_EQ(consumed(), 0);
  // One job through four types; the service's relay publishes each to its topic.
  const std::string id = db_.query_value("INSERT INTO conveyor.job (job_type) VALUES ('echo') RETURNING id");
  for (const char* status : {"configured", "ready", "queued"}) {
    db_.exec(std::string("UPDATE conveyor.job SET status = '") + status + "' WHERE id = " + id);
  }
  conveyor::bus::ConsumerOptions o;
  o.brokers = broker_.bootstrap();
  o.group_id = conveyor::testing::unique_name("others");
  o.topics = conveyor::bus::job_event_topics(
      prefix_, {"io.conveyor.job.initialized", "io.conveyor.job.ready", "io.conveyor.job.queued"});
  conveyor::bus::Consumer others(o);
  std::size_t on_other_topics = 0;
  ASSERT_TRUE(wait_until(
      [&] {
        on_other_topics += others.poll(10, 200ms).size();
        return on_other_topics >= 3;
      },
      30s))
      << "the other types' events were not on their topics";
  ASSERT_TRUE(wait_until([&] { return consumed() >= 1; }, 20s));
  // A second configured event, published after the others were on the
  // broker: once it is read, a subscription to their topics would have
  // read them too.
  const std::string second = db_.query_value("INSERT INTO conveyor.job (job_type) VALUES ('echo') RETURNING id");
  db_.exec("UPDATE conveyor.job SET status = 'configured' WHERE id = " + second);
  ASSERT_TRUE(wait_until([&] { return consumed() >= 2; }, 20s));
  EXPECT_EQ(consumed(), 2) << "it read events of types it does not wake on";
}

// Issue 14: the relay's own LISTEN connection was one more backend that
// PostgreSQL 15 signals on every notifying commit. The service's listener
// now hears the outbox channel for it while it leads: with the relay's poll
// an hour away, each change still reaches Kafka.
TEST_F(RuntimeTest, TheServiceListenerWakesTheRelay) {
  extra_env_["CONVEYOR_RELAY_POLL_INTERVAL_MS"] = "1h";
  extra_env_["CONVEYOR_RELAY_UNHEARD_POLL_INTERVAL_MS"] = "1h";  // nor while unheard: only the listener
  const auto unsent = [&] { return db_.query_value("SELECT count(*) FROM conveyor.outbox_unsent()"); };
  const std::string id = db_.query_value("INSERT INTO conveyor.job (job_type) VALUES ('echo') RETURNING id");
  start();
  // The first pass sends it; the next, which only the listener can start
  // now (its notify() once it LISTENs for the relay), marks it sent.
  ASSERT_TRUE(wait_until([&] { return unsent() == "0"; }, 20s)) << "no pass after the first";
  expect_each_published(id, {"configured", "ready"});
}

// Issue 14: a process that hears no status (the monitor, the worker-pool,
// creation while no type has triggers) kept a LISTEN connection for its
// relay alone, one more backend that every notifying commit signals. Now it
// keeps none, and the leading relay looks every
// CONVEYOR_RELAY_UNHEARD_POLL_INTERVAL_MS: with the relay's poll an hour
// away, each change still reaches Kafka at once, a change to started
// (which notifies no one) too.
TEST_F(RuntimeTest, AServiceThatHearsNoStatusKeepsNoListeningConnectionForItsRelay) {
  extra_env_["CONVEYOR_RELAY_POLL_INTERVAL_MS"] = "1h";
  extra_env_["CONVEYOR_RELAY_UNHEARD_POLL_INTERVAL_MS"] = "100ms";
  extra_env_["ECHO_KAFKA_ONLY"] = "1";
  const std::string id = db_.query_value("INSERT INTO conveyor.job (job_type) VALUES ('echo') RETURNING id");
  start();
  ASSERT_TRUE(wait_until([&] { return db_.query_value("SELECT count(*) FROM conveyor.outbox_unsent()") == "0"; }, 20s))
      << "the relay never led";
  expect_each_published(id, {"configured", "ready", "queued", "started"});
  // The runtime's listener (the relay's own connection is named
  // conveyor-relay: what it LISTENs is not visible from here).
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND application_name = 'conveyor-echo-listen'"),
            "0")
      << "the service keeps a listening connection";
}

// Issue 14: each status change woke a stage twice, by its NOTIFY and 10-20 ms
// later by its Kafka event, whose pass found the work done. With the
// listener connected the event no longer wakes the loop; an event NOTIFY
// does not carry (a cancel request) still does.
TEST_F(RuntimeTest, AStatusChangeWakesTheLoopOnceAndOnlyKafkaOnlyEventsWakeItFromKafka) {
  start();
  auto configured = [&](const std::string& key) {
    const std::string id = db_.query_value("INSERT INTO conveyor.job (job_type, idempotency_key) VALUES ('echo', '" +
                                           key + "') RETURNING id");
    db_.exec("UPDATE conveyor.job SET status = 'configured' WHERE id = " + id);
    return id;
  };
  // A first job, read both ways: the listener is connected and the
  // consumer has joined its group.
  configured("first");
  ASSERT_TRUE(wait_until(
      [&] { return counter("conveyor_notify_wakeups_total") >= 1 && counter("conveyor_events_consumed_total") >= 1; },
      30s));
  const long before = wakeups();

  const std::string second = configured("second");
  ASSERT_TRUE(wait_until([&] { return counter("conveyor_events_consumed_total") >= 2; }, 20s))
      << "the second job's configured event was not read";
  // A cancel request comes from Kafka alone, after the configured event was
  // read: once its wake-up is counted, a wake-up by that event would be too.
  db_.exec("UPDATE conveyor.job SET canceled_at = now() WHERE id = " + second);
  ASSERT_TRUE(wait_until([&] { return counter("conveyor_events_consumed_total") >= 3; }, 20s))
      << "the cancel request was not read";
  ASSERT_TRUE(wait_until([&] { return wakeups() >= before + 2; }, 20s)) << "the cancel request did not wake the loop";
  EXPECT_EQ(wakeups(), before + 2) << "the configured event woke the loop again after its NOTIFY";
}

// A wake-up by NOTIFY says which statuses were notified, so that a stage
// runs only the steps they concern; any other wake-up (here a cancel
// request, from Kafka) says anything.
TEST_F(RuntimeTest, AWakeUpByNotifyNamesItsEventTypes) {
  start();
  const std::string id =
      db_.query_value("INSERT INTO conveyor.job (job_type, idempotency_key) VALUES ('echo', 'w') RETURNING id");
  db_.exec("UPDATE conveyor.job SET status = 'configured' WHERE id = " + id);
  const nlohmann::json by_notify = {{"anything", false}, {"types", {"io.conveyor.job.configured"}}};
  ASSERT_TRUE(wait_until([&] { return last_wake() == by_notify; }, 30s)) << last_wake().dump();
  db_.exec("UPDATE conveyor.job SET canceled_at = now() WHERE id = " + id);
  ASSERT_TRUE(wait_until([&] { return last_wake().at("anything").get<bool>(); }, 20s)) << last_wake().dump();
}

TEST_F(RuntimeTest, ParameterChangesAreSeenWithoutARestart) {
  start();
  auto concurrency = [&] {
    return nlohmann::json::parse(http_request("GET", url("/parameters"), "", reader()).body)
        .at("worker_concurrency")
        .get<int>();
  };
  ASSERT_EQ(concurrency(), 4);
  db_.exec("UPDATE conveyor.system_parameters SET worker_concurrency = 7");
  // Well under the 30 s reload timer: the parameters event did it.
  EXPECT_TRUE(wait_until([&] { return concurrency() == 7; }, 15s));
}

// Issue 9: one poisoned message on each topic killed every service, and
// again on each restart (consumers start from the earliest offset). Now each
// is skipped, logged, counted and committed, and the next event still wakes.
TEST_F(RuntimeTest, PoisonedEventsAreSkippedCountedAndCommitted) {
  start();
  ASSERT_TRUE(wait_until([&] { return wakeups() >= 1; }, 10s));
  auto invalid = [&] { return counter("conveyor_events_invalid_total"); };
  const std::string head = R"({"specversion":"1.0","id":"p","source":"fuzz","type":"io.conveyor.job.configured",)";
  std::string deep = head + R"("data":)";
  for (int i = 0; i < 150000; ++i) deep += "[";
  for (int i = 0; i < 150000; ++i) deep += "]";
  deep += "}";
  const std::vector<std::string> poison = {
      head + R"("time":"2026-01-01T00:00:00.)" + std::string(200000, '9') + R"(Z"})",
      deep,
      std::string(2 * 1024 * 1024, '{'),  // over the 1 MiB message limit
      "not json at all",
      head + R"("data":{"job_id":1}, "time": 5})",
  };
  conveyor::bus::ProducerOptions po;
  po.brokers = broker_.bootstrap();
  po.extra = {{"message.max.bytes", "10000000"}};  // the 2 MiB message must reach the broker
  conveyor::bus::Producer producer(po);
  std::vector<conveyor::bus::Message> messages;
  // The topic of the type it wakes on, and the parameters topic.
  for (const std::string& topic : {conveyor::bus::job_event_topic(prefix_, "io.conveyor.job.configured"),
                                   conveyor::bus::topic_name(prefix_, conveyor::bus::kParametersTopic)}) {
    for (const auto& p : poison) messages.push_back({topic, "1", p});
  }
  for (const bool acked : producer.send_batch(messages, 20s)) ASSERT_TRUE(acked);

  const long expected = static_cast<long>(messages.size());
  ASSERT_TRUE(wait_until([&] { return invalid() >= expected; }, 30s))
      << "conveyor_events_invalid_total is " << invalid() << ", expected " << expected;
  EXPECT_TRUE(service_->running()) << "the service died on a poisoned event";
  EXPECT_EQ(http_request("GET", url("/healthz")).status, 200);

  // A valid event after the poison still wakes the loop.
  const long before = wakeups();
  const std::string id = db_.query_value("INSERT INTO conveyor.job (job_type) VALUES ('echo') RETURNING id");
  db_.exec("UPDATE conveyor.job SET status = 'configured' WHERE id = " + id);
  EXPECT_TRUE(wait_until([&] { return wakeups() > before; }, 20s));

  // The offsets were committed: a restart does not read the poison again.
  service_->stop(10s);
  start();
  ASSERT_TRUE(wait_until([&] { return wakeups() >= 1; }, 10s));
  const long after_restart = invalid();
  EXPECT_EQ(after_restart, 0) << "the restarted service read poison again";
  EXPECT_TRUE(service_->running());
}

// Issue 9: with the broker stopped, /readyz said "broker":"up" for 97 s and
// longer. It follows librdkafka's view within seconds, stays ready (the
// service works on its database poll) and says it is degraded; the registry
// row says it too.
TEST_F(RuntimeTest, ReadinessFollowsTheBrokerWithinSeconds) {
  start();
  auto readyz = [&] { return nlohmann::json::parse(http_request("GET", url("/readyz")).body); };
  ASSERT_TRUE(wait_until([&] { return readyz().value("status", "") == "ready"; }, 20s));
  broker_.stop();
  const auto stopped = std::chrono::steady_clock::now();
  ASSERT_TRUE(wait_until([&] { return readyz()["checks"].value("broker", "") == "down"; }, 10s)) << readyz().dump();
  std::cout << "[recovery] broker stopped -> readyz says down: "
            << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - stopped).count()
            << " ms" << std::endl;
  const auto r = http_request("GET", url("/readyz"));
  EXPECT_EQ(r.status, 200) << "ready, degraded: it works on the database poll";
  EXPECT_EQ(nlohmann::json::parse(r.body).value("status", ""), "degraded");
  EXPECT_TRUE(wait_until(
      [&] {
        return db_.query_value("SELECT broker FROM conveyor.service_instance WHERE id = '" + instance_ + "'") == "down";
      },
      10s));

  broker_.resume();
  const auto resumed = std::chrono::steady_clock::now();
  ASSERT_TRUE(wait_until([&] { return readyz().value("status", "") == "ready"; }, 20s)) << readyz().dump();
  std::cout << "[recovery] broker back -> readyz says ready: "
            << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - resumed).count()
            << " ms" << std::endl;
  EXPECT_TRUE(wait_until(
      [&] {
        return db_.query_value("SELECT broker FROM conveyor.service_instance WHERE id = '" + instance_ + "'") == "up";
      },
      10s));
}

TEST_F(RuntimeTest, SigtermDrainsAndExitsZero) {
  start();
  service_->signal(SIGTERM);
  auto status = service_->wait(20s);
  ASSERT_TRUE(status.has_value()) << "still running 20 s after SIGTERM";
  EXPECT_EQ(*status, 0);
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.service_instance WHERE id = '" + instance_ + "'"), "stopped");
}

TEST_F(RuntimeTest, ABadConfigValueExitsOneNamingTheKey) {
  auto e = env();
  e["CONVEYOR_HTTP_PORT"] = "abc";
  auto result = conveyor::testing::run({CONVEYOR_ECHO_SERVICE_PATH}, e, 30s);
  EXPECT_EQ(result.status, 1);
  EXPECT_NE(result.output.find("CONVEYOR_HTTP_PORT"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("conveyor-echo:"), std::string::npos) << result.output;
}

// `--check` (the images' health probe) reads the service's configuration,
// asks the running instance's /readyz and never starts a service itself.
TEST_F(RuntimeTest, CheckProbesTheRunningInstanceAndNeverStartsOne) {
  // Nothing running: not ready, at once, and no instance was registered.
  auto before = conveyor::testing::run({CONVEYOR_ECHO_SERVICE_PATH, "--check"}, env(), 30s);
  EXPECT_EQ(before.status, 1) << before.output;
  EXPECT_NE(
      before.output.find("conveyor-echo --check: not ready: GET http://127.0.0.1:" + std::to_string(port_) + "/readyz"),
      std::string::npos)
      << before.output;
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.service_instance WHERE id = '" + instance_ + "'"), "0");

  start();
  ASSERT_TRUE(wait_until([&] { return http_request("GET", url("/readyz")).status == 200; }, 10s));
  // The same configuration through an --env-file (the port) and the environment.
  const fs::path env_file = dir_ / "check.env";
  std::ofstream(env_file) << "CONVEYOR_HTTP_PORT=" << port_ << "\n";
  auto e = env();
  e.erase("CONVEYOR_HTTP_PORT");
  auto ready = conveyor::testing::run({CONVEYOR_ECHO_SERVICE_PATH, "--env-file", env_file.string(), "--check"}, e, 30s);
  EXPECT_EQ(ready.status, 0) << ready.output;
  EXPECT_EQ(ready.output,
            "conveyor-echo --check: ready: GET http://127.0.0.1:" + std::to_string(port_) + "/readyz answered 200\n");

  // Port 0 (a free port chosen at start-up) cannot be probed.
  auto bad = e;
  bad["CONVEYOR_HTTP_PORT"] = "0";
  auto zero = conveyor::testing::run({CONVEYOR_ECHO_SERVICE_PATH, "--check"}, bad, 30s);
  EXPECT_EQ(zero.status, 1);
  EXPECT_NE(zero.output.find("CONVEYOR_HTTP_PORT is 0"), std::string::npos) << zero.output;
  // A wrong configuration fails the probe like it fails the service, naming the key.
  bad["CONVEYOR_HTTP_PORT"] = "abc";
  auto invalid = conveyor::testing::run({CONVEYOR_ECHO_SERVICE_PATH, "--check"}, bad, 30s);
  EXPECT_EQ(invalid.status, 1);
  EXPECT_NE(
      invalid.output.find("cannot check: invalid configuration (1 problem): CONVEYOR_HTTP_PORT (from environment)"),
      std::string::npos)
      << invalid.output;
  // Still exactly the one instance the test started.
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.service_instance"), "1");
}

// A database that cannot be reached at start-up is reported once, as a
// connection that could not be made: before, "connection lost" (nothing
// was), then a second error from marking a never-registered instance stopped.
TEST(RuntimeStartup, AnUnreachableDatabaseFailsSayingItCannotConnect) {
  const int closed = conveyor::testing::free_port();  // nothing listens there
  auto result = conveyor::testing::run(
      {CONVEYOR_ECHO_SERVICE_PATH},
      {{"CONVEYOR_DATABASE_URL", "postgresql://postgres@127.0.0.1:" + std::to_string(closed) + "/conveyor"},
       {"CONVEYOR_HTTP_PORT", std::to_string(conveyor::testing::free_port())}},
      30s);
  EXPECT_EQ(result.status, 1);
  EXPECT_NE(result.output.find("database: cannot connect: "), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find("connection lost"), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find("marking the instance stopped failed"), std::string::npos) << result.output;
}

TEST(RuntimeStartup, AnUnmigratedDatabaseFailsWithAClearMessage) {
  TestDatabase db(/*migrate=*/false);
  auto result = conveyor::testing::run(
      {CONVEYOR_ECHO_SERVICE_PATH},
      {{"CONVEYOR_DATABASE_URL", db.url()}, {"CONVEYOR_HTTP_PORT", std::to_string(conveyor::testing::free_port())}},
      30s);
  EXPECT_EQ(result.status, 1);
  EXPECT_NE(result.output.find("database not migrated: run `conveyor db migrate`"), std::string::npos) << result.output;
}

}  // namespace
