// conveyor-publication as a real process against a real PostgreSQL and
// devbroker: webhook sinks (received by a test HTTP server, HMAC-SHA256
// signed), file manifests, Kafka topics, sink failures retried through
// external_error -> error_checked -> processed, the attempt limit, and
// deliveries refused by sink_allowed_hosts.
#include "publication.hpp"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <nlohmann/json.hpp>
#include <vector>

#include "conveyor/bus/cloudevent.hpp"
#include "conveyor/bus/kafka.hpp"
#include "conveyor/db/db.hpp"
#include "conveyor/error/error.hpp"
#include "conveyor/http/server.hpp"
#include "conveyor/model/job_control.hpp"
#include "conveyor/model/system_parameters.hpp"
#include "stage_fixture.hpp"

namespace conveyor::stages_test {
namespace {

using nlohmann::json;

constexpr const char* kSecretVar = "CONVEYOR_TEST_WEBHOOK_SECRET";
constexpr const char* kSecret = "s3cret-for-tests";

// A webhook receiver that answers `fail_first` requests with 500, then 200.
class Receiver {
 public:
  explicit Receiver(int fail_first = 0) : server_("127.0.0.1", 0), fail_first_(fail_first) {
    server_.route("POST", "/hook", [this](const http::Request& r) {
      std::lock_guard lock(mutex_);
      requests_.push_back(r);
      if (static_cast<int>(requests_.size()) <= fail_first_) return http::Response::text("no", 500);
      return http::Response::json(json{{"ok", true}});
    });
    server_.start();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_.port()) + "/hook"; }
  std::vector<http::Request> requests() const {
    std::lock_guard lock(mutex_);
    return requests_;
  }

 private:
  http::Server server_;
  int fail_first_;
  mutable std::mutex mutex_;
  std::vector<http::Request> requests_;
};

class PublicationTest : public StageTest {
 protected:
  // A job that ran: processed, with `sinks` in its config as configuration wrote them.
  std::string processed_job(const json& sinks) const {
    const json config = {{"sinks", sinks}};
    const json result = {{"exit_code", 0}, {"outputs", {"/data/outputs/x.tif"}}};
    const auto id =
        db_.query_value("INSERT INTO conveyor.job (job_type, params, config) VALUES ('tile', '{\"tile\": \"T31\"}', '" +
                        config.dump() + "') RETURNING id");
    for (const char* s : {"configured", "ready", "queued", "started"}) {
      db_.exec("UPDATE conveyor.job SET status = '" + std::string(s) + "' WHERE id = " + id);
    }
    db_.exec("UPDATE conveyor.job SET status = 'processed', result = '" + result.dump() + "' WHERE id = " + id);
    return id;
  }
  void start_publication() {
    start(CONVEYOR_PUBLICATION_PATH, {{kSecretVar, kSecret}, {"CONVEYOR_PUBLICATION_BACKOFF_BASE_MS", "100ms"}});
  }
  std::string count_in_history(const std::string& id, const std::string& to) const {
    return db_.query_value("SELECT count(*) FROM conveyor.job_status_change WHERE job_id = " + id +
                           " AND to_status = '" + to + "'");
  }
};

TEST(PublicationUnit, HmacSha256MatchesRfc4231) {
  EXPECT_EQ(publication::hmac_sha256_hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(PublicationUnit, BackoffDoublesUpToTheMaximum) {
  publication::Settings s;
  s.backoff_base = 1000ms;
  s.backoff_max = 60000ms;
  EXPECT_EQ(publication::backoff(s, 1), 1000ms);
  EXPECT_EQ(publication::backoff(s, 2), 2000ms);
  EXPECT_EQ(publication::backoff(s, 4), 8000ms);
  EXPECT_EQ(publication::backoff(s, 40), 60000ms);
}

// A claim statement that failed may still have committed (PostgreSQL
// stopped during it; e2e_chaos found it): its job, claimed by this instance,
// waited the whole claim (5 min). The next pass frees the claims of its own
// first, and delivers it.
TEST_F(PublicationTest, AClaimInDoubtIsFreedByTheNextPass) {
  const auto id = processed_job(json::array());
  db_.exec(
      "UPDATE conveyor.job SET publication_claimed_by = 'pub-test', "
      "publication_claimed_until = now() + interval '5 minutes' WHERE id = " +
      id);
  db::Pool pool(db::PoolOptions{.url = db_.url(), .size = 1, .actor = "conveyor-publication"});
  const auto params = pool.transact([](db::Tx& tx) { return model::load_system_parameters(tx); });
  publication::Settings settings;
  settings.data_dir = data_dir();
  settings.instance = "pub-test";
  publication::PublishState state;
  EXPECT_EQ(publication::publish_batch(pool, params, settings, state), 0) << "claimed: left alone";
  EXPECT_EQ(status(id), "processed");
  state.claim_in_doubt = true;
  EXPECT_EQ(publication::publish_batch(pool, params, settings, state), 1);
  EXPECT_EQ(status(id), "done");
  EXPECT_FALSE(state.claim_in_doubt);
}

TEST_F(PublicationTest, WebhookAndFileSinksThenDone) {
  Receiver receiver;
  const auto id = processed_job(json::array({
      {{"kind", "webhook"}, {"url", receiver.url()}, {"secret_env", kSecretVar}},
      {{"kind", "file"}, {"dir", "catalog"}},
  }));
  start_publication();
  ASSERT_TRUE(reaches(id, "done"));
  EXPECT_EQ(history(id).substr(history(id).rfind(',') + 1), "processed>done");

  const auto requests = receiver.requests();
  ASSERT_EQ(requests.size(), 1u);
  const auto& r = requests[0];
  ASSERT_TRUE(r.header("x-conveyor-signature").has_value());
  EXPECT_EQ(*r.header("x-conveyor-signature"), "sha256=" + publication::hmac_sha256_hex(kSecret, r.body));
  const auto event = bus::decode(r.body);
  EXPECT_EQ(event.type, "io.conveyor.job.published");
  EXPECT_EQ(event.subject, id);
  EXPECT_EQ(event.data.at("job_id").get<std::int64_t>(), std::stoll(id));
  EXPECT_EQ(event.data.at("job_type"), "tile");
  EXPECT_EQ(event.data.at("params"), json({{"tile", "T31"}}));
  EXPECT_EQ(event.data.at("result").at("outputs"), json({"/data/outputs/x.tif"}));
  EXPECT_EQ(event.data.at("attempt"), 0);

  // Relative catalog dirs are under CONVEYOR_DATA_DIR.
  const auto manifest = data_dir() / "catalog" / ("job-" + id + ".json");
  ASSERT_TRUE(fs::exists(manifest));
  const auto from_file = bus::decode(read_text(manifest));
  EXPECT_EQ(from_file.id, event.id);
  EXPECT_EQ(from_file.data.at("job_id").get<std::int64_t>(), std::stoll(id));
  for (const auto& entry : fs::directory_iterator(data_dir() / "catalog")) {
    EXPECT_EQ(entry.path().filename().string().rfind(".job-", 0), std::string::npos)
        << "temporary file left behind: " << entry.path();
  }
}

// Issue 14, item 4: the webhook is posted outside the row-locking
// transaction. While the receiver holds the request, the job's row can be
// locked at once by anyone else (NOWAIT); the job is done once it answers.
TEST_F(PublicationTest, AWebhookIsDeliveredWithoutHoldingTheJobsRowLock) {
  std::mutex mutex;
  std::condition_variable cv;
  bool arrived = false;
  bool release = false;
  http::Server server("127.0.0.1", 0);
  server.route("POST", "/hook", [&](const http::Request&) {
    std::unique_lock lock(mutex);
    arrived = true;
    cv.notify_all();
    cv.wait_for(lock, 30s, [&] { return release; });
    return http::Response::json(json{{"ok", true}});
  });
  server.start();
  const auto id = processed_job(
      json::array({{{"kind", "webhook"}, {"url", "http://127.0.0.1:" + std::to_string(server.port()) + "/hook"}}}));
  start_publication();
  {
    std::unique_lock lock(mutex);
    ASSERT_TRUE(cv.wait_for(lock, 20s, [&] { return arrived; })) << "the webhook was never posted";
  }
  // Throws (55P03, lock_not_available) if publication holds the row.
  EXPECT_NO_THROW(db_.query_value("SELECT id::text FROM conveyor.job WHERE id = " + id + " FOR UPDATE NOWAIT"));
  EXPECT_EQ(status(id), "processed");
  {
    std::lock_guard lock(mutex);
    release = true;
  }
  cv.notify_all();
  ASSERT_TRUE(reaches(id, "done"));
  EXPECT_EQ(count_in_history(id, "done"), "1");
  server.stop();
}

// The jobs of a pass are delivered on CONVEYOR_PUBLICATION_CONCURRENCY
// lanes at once: a receiver that answers only once three requests are in
// flight together gets all three (delivered one after another, the first
// would wait for the others until the sink's timeout and fail).
TEST_F(PublicationTest, TheJobsOfAPassAreDeliveredConcurrently) {
  constexpr int kJobs = 3;
  std::mutex mutex;
  std::condition_variable cv;
  int in_flight = 0;
  int most = 0;
  int answered_ok = 0;
  http::Server server("127.0.0.1", 0);
  server.route("POST", "/hook", [&](const http::Request&) {
    std::unique_lock lock(mutex);
    most = std::max(most, ++in_flight);
    cv.notify_all();
    const bool together = cv.wait_for(lock, 3s, [&] { return most >= kJobs; });
    --in_flight;
    if (!together) return http::Response::text("alone", 500);
    ++answered_ok;
    return http::Response::json(json{{"ok", true}});
  });
  server.start();
  const json sinks =
      json::array({{{"kind", "webhook"}, {"url", "http://127.0.0.1:" + std::to_string(server.port()) + "/hook"}}});
  std::vector<std::string> ids;
  for (int i = 0; i < kJobs; ++i) ids.push_back(processed_job(sinks));
  start(CONVEYOR_PUBLICATION_PATH, {{"CONVEYOR_PUBLICATION_CONCURRENCY", std::to_string(kJobs)}});
  for (const auto& id : ids) {
    ASSERT_TRUE(reaches(id, "done"));
    EXPECT_EQ(count_in_history(id, "external_error"), "0") << "job " << id << " was delivered alone";
  }
  std::lock_guard lock(mutex);
  EXPECT_EQ(most, kJobs);
  EXPECT_EQ(answered_ok, kJobs);
}

// No delivery starts after half the claim (CONVEYOR_PUBLICATION_CLAIM_MS):
// a claim must not end while its jobs are delivered, or another replica
// would deliver them again. The jobs not started are released at once, and
// the next pass delivers them.
TEST_F(PublicationTest, JobsNotStartedWithinHalfTheClaimAreReleasedForTheNextPass) {
  std::atomic<int> requests{0};
  http::Server server("127.0.0.1", 0);
  server.route("POST", "/hook", [&](const http::Request&) {
    // The first delivery outlasts half the claim (1 s of 2 s).
    if (requests++ == 0) std::this_thread::sleep_for(1500ms);
    return http::Response::json(json{{"ok", true}});
  });
  server.start();
  const json sinks =
      json::array({{{"kind", "webhook"}, {"url", "http://127.0.0.1:" + std::to_string(server.port()) + "/hook"}}});
  const auto first = processed_job(sinks);
  const auto second = processed_job(sinks);
  db::Pool pool(db::PoolOptions{.url = db_.url(), .size = 1, .actor = "conveyor-publication"});
  const auto params = pool.transact([](db::Tx& tx) { return model::load_system_parameters(tx); });
  publication::Settings settings;
  settings.data_dir = data_dir();
  settings.instance = "pub-test";
  settings.claim = 2000ms;
  settings.delivery_concurrency = 1;
  publication::PublishState state;
  EXPECT_EQ(publication::publish_batch(pool, params, settings, state), 1);
  EXPECT_EQ(status(first), "done");
  EXPECT_EQ(status(second), "processed");
  EXPECT_EQ(db_.query_value("SELECT coalesce(publication_claimed_until::text, 'free') FROM conveyor.job WHERE id = " +
                            second),
            "free");
  EXPECT_EQ(requests.load(), 1);
  EXPECT_EQ(publication::publish_batch(pool, params, settings, state), 1);
  EXPECT_EQ(status(second), "done");
  EXPECT_EQ(requests.load(), 2);
}

// A delivery that started in time must still end before its claim does: a
// webhook that never answers is given up at nine tenths of the claim (here
// 3.6 of 4 s), the job goes to external_error, and the claim never ends
// while the request is open.
TEST_F(PublicationTest, ADeliveryNeverOutlastsItsClaim) {
  std::mutex mutex;
  std::condition_variable cv;
  bool release = false;
  http::Server server("127.0.0.1", 0);
  server.route("POST", "/hook", [&](const http::Request&) {
    std::unique_lock lock(mutex);
    cv.wait_for(lock, 60s, [&] { return release; });
    return http::Response::json(json{{"ok", true}});
  });
  server.start();
  const auto id = processed_job(json::array({{{"kind", "webhook"},
                                              {"url", "http://127.0.0.1:" + std::to_string(server.port()) + "/hook"},
                                              {"timeout_ms", 60000}}}));
  db::Pool pool(db::PoolOptions{.url = db_.url(), .size = 1, .actor = "conveyor-publication"});
  const auto params = pool.transact([](db::Tx& tx) { return model::load_system_parameters(tx); });
  publication::Settings settings;
  settings.data_dir = data_dir();
  settings.instance = "pub-test";
  settings.claim = 4000ms;
  publication::PublishState state;
  const auto began = std::chrono::steady_clock::now();
  EXPECT_EQ(publication::publish_batch(pool, params, settings, state), 1);
  EXPECT_LT(std::chrono::steady_clock::now() - began, settings.claim) << "the delivery outlasted the claim";
  EXPECT_EQ(status(id), "external_error");
  {
    std::lock_guard lock(mutex);
    release = true;
  }
  cv.notify_all();
  server.stop();
}

TEST_F(PublicationTest, WebhookWithoutUrlUsesTheSystemEndpoint) {
  Receiver receiver;
  db_.exec("UPDATE conveyor.system_parameters SET publication_endpoint_url = '" + receiver.url() + "'");
  const auto id = processed_job(json::array({{{"kind", "webhook"}}}));
  start_publication();
  ASSERT_TRUE(reaches(id, "done"));
  ASSERT_EQ(receiver.requests().size(), 1u);
  EXPECT_FALSE(receiver.requests()[0].header("x-conveyor-signature").has_value());
}

TEST_F(PublicationTest, KafkaSinkProducesTheEventOnItsTopic) {
  const auto topic = conveyor::testing::unique_name("catalog");
  const auto id = processed_job(json::array({{{"kind", "kafka"}, {"topic", topic}}}));
  start_publication();
  ASSERT_TRUE(reaches(id, "done"));

  bus::ConsumerOptions c;
  c.brokers = broker_.bootstrap();
  c.group_id = conveyor::testing::unique_name("grp");
  c.topics = {topic};
  bus::Consumer consumer(c);
  std::vector<bus::ReceivedMessage> got;
  ASSERT_TRUE(wait_until(
      [&] {
        for (auto& m : consumer.poll(10, 100ms)) got.push_back(m);
        return !got.empty();
      },
      20s));
  EXPECT_EQ(got[0].key, id);
  EXPECT_EQ(bus::decode(got[0].value).subject, id);
}

TEST_F(PublicationTest, SinkFailingTwiceThenSucceedingEndsDone) {
  Receiver receiver(2);
  const auto id = processed_job(json::array({{{"kind", "webhook"}, {"url", receiver.url()}}}));
  start_publication();
  ASSERT_TRUE(reaches(id, "done", 30s));
  EXPECT_EQ(receiver.requests().size(), 3u);
  EXPECT_EQ(count_in_history(id, "external_error"), "2");
  EXPECT_EQ(count_in_history(id, "error_checked"), "2");
  EXPECT_EQ(history(id),
            ">initialized,initialized>configured,configured>ready,ready>queued,queued>started,started>processed,"
            "processed>external_error,external_error>error_checked,error_checked>processed,"
            "processed>external_error,external_error>error_checked,error_checked>processed,processed>done");
  const auto row = db_.query("SELECT error_subtype, message FROM conveyor.job_status_change WHERE job_id = " + id +
                             " AND to_status = 'external_error' ORDER BY id LIMIT 1");
  ASSERT_EQ(row.size(), 1u);
  EXPECT_EQ(row[0][0], "sink_failed");
  EXPECT_NE(row[0][1].find("500"), std::string::npos) << row[0][1];
  EXPECT_NE(row[0][1].find("webhook"), std::string::npos) << row[0][1];
}

TEST_F(PublicationTest, MaxAttemptsEndsInInternalError) {
  db_.exec("UPDATE conveyor.system_parameters SET publication_max_attempts = 3");
  Receiver receiver(1000);
  const auto id = processed_job(json::array({{{"kind", "webhook"}, {"url", receiver.url()}}}));
  const auto no_url = processed_job(json::array({{{"kind", "file"}}}));
  start_publication();
  ASSERT_TRUE(reaches(id, "internal_error", 30s));
  EXPECT_EQ(receiver.requests().size(), 3u);
  EXPECT_EQ(count_in_history(id, "external_error"), "2");
  EXPECT_EQ(db_.query_value("SELECT error_subtype FROM conveyor.job WHERE id = " + id), "publication_failed");
  ASSERT_TRUE(reaches(no_url, "internal_error", 30s));
  EXPECT_NE(db_.query_value("SELECT error_message FROM conveyor.job WHERE id = " + no_url).find("file sink"),
            std::string::npos);
}

// An operator's retry after the attempt limit (`conveyor job retry`:
// internal_error -> error_checked -> processed) begins a new publication
// run with every attempt again (conveyor.publication_failures). Before,
// the failures of the earlier run still counted: the first failure after
// the retry ended the job in internal_error at once, with no back-off.
TEST_F(PublicationTest, AnOperatorsRetryGivesPublicationAFreshSetOfAttempts) {
  db_.exec("UPDATE conveyor.system_parameters SET publication_max_attempts = 3");
  Receiver receiver(4);  // 500 four times, then 200
  const auto id = processed_job(json::array({{{"kind", "webhook"}, {"url", receiver.url()}}}));
  start_publication();
  ASSERT_TRUE(reaches(id, "internal_error", 30s));
  ASSERT_EQ(receiver.requests().size(), 3u);

  db::Pool operator_pool(db::PoolOptions{.url = db_.url(), .size = 1, .actor = "operator"});
  operator_pool.transact([&](db::Tx& tx) { model::retry_job(tx, model::JobId(std::stoll(id))); });
  // The fourth request fails and is retried after its back-off; the fifth is delivered.
  ASSERT_TRUE(reaches(id, "done", 30s)) << history(id);
  EXPECT_EQ(receiver.requests().size(), 5u);
  EXPECT_EQ(history(id),
            ">initialized,initialized>configured,configured>ready,ready>queued,queued>started,started>processed,"
            "processed>external_error,external_error>error_checked,error_checked>processed,"
            "processed>external_error,external_error>error_checked,error_checked>processed,"
            "processed>internal_error,internal_error>error_checked,error_checked>processed,"
            "processed>external_error,external_error>error_checked,error_checked>processed,processed>done");
  EXPECT_EQ(db_.query_value("SELECT conveyor.publication_failures(" + id + ", 'conveyor-publication')"), "1");
}

TEST_F(PublicationTest, MissingSecretIsASinkFailureNotAnUnsignedRequest) {
  db_.exec("UPDATE conveyor.system_parameters SET publication_max_attempts = 1");
  Receiver receiver;
  const auto id = processed_job(
      json::array({{{"kind", "webhook"}, {"url", receiver.url()}, {"secret_env", "CONVEYOR_NOT_SET_ANYWHERE"}}}));
  start_publication();
  ASSERT_TRUE(reaches(id, "internal_error"));
  EXPECT_TRUE(receiver.requests().empty());
  EXPECT_NE(
      db_.query_value("SELECT error_message FROM conveyor.job WHERE id = " + id).find("CONVEYOR_NOT_SET_ANYWHERE"),
      std::string::npos);
}

db::PoolOptions pool_options(const std::string& url) {
  db::PoolOptions o;
  o.url = url;
  o.size = 1;
  return o;
}

// sink_allowed_hosts set through the same path as PATCH /v1/parameters.
void patch_parameters(const std::string& url, const json& patch) {
  db::Pool pool(pool_options(url));
  pool.transact([&](db::Tx& tx) { model::patch_system_parameters(tx, patch); });
}

TEST_F(PublicationTest, AWebhookToAHostOutsideTheAllowListIsRefusedAndLogged) {
  // An entry is a host, not a URL: refused, naming the parameter.
  try {
    patch_parameters(db_.url(), {{"sink_allowed_hosts", {"https://hooks.example.org:443"}}});
    ADD_FAILURE() << "an entry with a scheme and a port was accepted";
  } catch (const FieldError& e) {
    EXPECT_EQ(e.field(), "sink_allowed_hosts") << e.what();
  }
  patch_parameters(db_.url(),
                   {{"sink_allowed_hosts", {"hooks.example.org", ".example.net"}}, {"publication_max_attempts", 1}});
  {
    db::Pool pool(pool_options(db_.url()));
    const auto p = pool.transact([](db::Tx& tx) { return model::load_system_parameters(tx); });
    ASSERT_TRUE(p.sink_allowed_hosts.has_value());
    EXPECT_EQ(*p.sink_allowed_hosts, (std::vector<std::string>{"hooks.example.org", ".example.net"}));
    EXPECT_EQ(p.to_json().at("sink_allowed_hosts"), json({"hooks.example.org", ".example.net"}));
  }
  Receiver receiver;
  db_.exec("UPDATE conveyor.system_parameters SET publication_endpoint_url = '" + receiver.url() + "'");
  // The allowed name as userinfo: the request would go to 127.0.0.1.
  const std::string port = receiver.url().substr(std::string("http://127.0.0.1:").size());
  const auto by_url =
      processed_job(json::array({{{"kind", "webhook"}, {"url", "http://hooks.example.org:s3cret@127.0.0.1:" + port}}}));
  const auto by_endpoint = processed_job(json::array({{{"kind", "webhook"}}}));
  start_publication();
  ASSERT_TRUE(reaches(by_url, "internal_error"));
  ASSERT_TRUE(reaches(by_endpoint, "internal_error"));
  EXPECT_TRUE(receiver.requests().empty());

  for (const auto& [id, source] :
       {std::pair{by_url, "settings.url"}, std::pair{by_endpoint, "publication_endpoint_url"}}) {
    const auto row = db_.query("SELECT error_subtype, error_message FROM conveyor.job WHERE id = " + id);
    ASSERT_EQ(row.size(), 1u);
    EXPECT_EQ(row[0][0], "publication_failed");
    EXPECT_NE(row[0][1].find(std::string("webhook sink (") + source +
                             "): delivery to host '127.0.0.1' refused: it is not in sink_allowed_hosts"),
              std::string::npos)
        << row[0][1];
    EXPECT_EQ(row[0][1].find("s3cret"), std::string::npos) << row[0][1];
  }
  // The service's log says which host was refused, for which job, and why.
  const std::string log = read_text(log_path());
  EXPECT_NE(log.find("job " + by_url + ": webhook sink (settings.url): delivery to host '127.0.0.1' refused"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("job " + by_endpoint +
                     ": webhook sink (publication_endpoint_url): delivery to host "
                     "'127.0.0.1' refused"),
            std::string::npos)
      << log;
  EXPECT_EQ(log.find("s3cret"), std::string::npos);
}

TEST_F(PublicationTest, AWebhookToAHostInTheAllowListIsDelivered) {
  patch_parameters(db_.url(), {{"sink_allowed_hosts", {".example.net", "127.0.0.1."}}});
  Receiver receiver;
  const auto id = processed_job(json::array({{{"kind", "webhook"}, {"url", receiver.url()}}}));
  start_publication();
  ASSERT_TRUE(reaches(id, "done"));
  EXPECT_EQ(receiver.requests().size(), 1u);
}

}  // namespace
}  // namespace conveyor::stages_test
