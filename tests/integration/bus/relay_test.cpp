// The outbox relay with a real PostgreSQL and a real devbroker: a status
// change made by raw SQL reaches Kafka as a CloudEvent on the topic of its
// type, rows count as sent only after the broker acked, and a second relay
// does not publish twice.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <future>
#include <map>
#include <set>
#include <thread>

#include "conveyor/bus/cloudevent.hpp"
#include "conveyor/bus/kafka.hpp"
#include "conveyor/bus/relay.hpp"
#include "conveyor/bus/topics.hpp"
#include "conveyor/db/db.hpp"
#include "conveyor/db/migrations.hpp"
#include "conveyor/testing/testing.hpp"

namespace conveyor::bus {
namespace {

using ::testing::HasSubstr;
using conveyor::testing::Broker;
using conveyor::testing::TestDatabase;
using conveyor::testing::wait_until;
using namespace std::chrono_literals;

RelayOptions relay_options(const TestDatabase& db, const Broker& broker, const std::string& prefix) {
  RelayOptions o;
  o.database_url = db.url();
  o.brokers = broker.bootstrap();
  o.topic_prefix = prefix;
  o.source = "conveyor-relay-test";  // only for rows that name no writer
  o.poll_interval = 200ms;
  return o;
}

// Reads events until `count` arrived or the timeout passes, in the order
// they were written (the outbox id: one job's events of different types are
// on different topics, so they may arrive in any order).
std::vector<CloudEvent> read_events(Consumer& consumer, const std::string& prefix, std::size_t count,
                                    std::chrono::milliseconds timeout) {
  std::vector<CloudEvent> out;
  wait_until(
      [&] {
        for (auto& m : consumer.poll(100, 100ms)) {
          // The Kafka binding's structured mode: SDKs read the envelope by this header.
          EXPECT_EQ(m.headers, (Headers{{"content-type", "application/cloudevents+json"}})) << m.value;
          out.push_back(decode(m.value));
          EXPECT_EQ(m.topic, job_event_topic(prefix, out.back().type)) << "one topic per event type";
          EXPECT_EQ(m.key, out.back().subject) << "key = job id";
        }
        return out.size() >= count;
      },
      timeout);
  std::sort(out.begin(), out.end(),
            [](const CloudEvent& a, const CloudEvent& b) { return std::stoll(a.id) < std::stoll(b.id); });
  return out;
}

// A consumer of the topics of these job event types.
std::unique_ptr<Consumer> consumer_for(const Broker& broker, const std::string& prefix,
                                       const std::vector<std::string>& types) {
  ConsumerOptions c;
  c.brokers = broker.bootstrap();
  c.group_id = conveyor::testing::unique_name("grp");
  c.topics = job_event_topics(prefix, types);
  return std::make_unique<Consumer>(c);
}

TEST(Relay, RawSqlStatusChangeReachesKafkaAsACloudEvent) {
  TestDatabase db;
  Broker broker;
  auto prefix = conveyor::testing::unique_name("t");
  auto id = db.query_value("INSERT INTO conveyor.job (job_type) VALUES ('sleep') RETURNING id");
  db.exec("UPDATE conveyor.job SET status = 'configured' WHERE id = " + id);

  Relay relay(relay_options(db, broker, prefix));
  relay.start();
  auto configured = consumer_for(broker, prefix, {"io.conveyor.job.configured"});
  auto consumer = consumer_for(broker, prefix,
                               {"io.conveyor.job.initialized", "io.conveyor.job.configured", "io.conveyor.job.ready"});
  auto events = read_events(*consumer, prefix, 2, 20s);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].type, "io.conveyor.job.initialized");
  EXPECT_EQ(events[1].type, "io.conveyor.job.configured");
  EXPECT_EQ(events[1].subject, id);
  // source: the program that made the change (TestDatabase::exec's session
  // is application_name conveyor-test), not the relay that published it.
  EXPECT_EQ(events[1].source, "conveyor-test");
  EXPECT_EQ(events[1].data.at("from_status"), "initialized");
  EXPECT_EQ(events[1].data.at("to_status"), "configured");
  EXPECT_EQ(events[1].data.at("job_id").get<std::int64_t>(), std::stoll(id));
  EXPECT_FALSE(events[1].time.empty());
  EXPECT_TRUE(wait_until([&] { return db.query_value("SELECT count(*) FROM conveyor.outbox_unsent()") == "0"; }, 10s));

  // Woken by NOTIFY: a later change arrives without a restart.
  db.exec("SET LOCAL application_name = 'psql'; UPDATE conveyor.job SET status = 'ready' WHERE id = " + id);
  auto more = read_events(*consumer, prefix, 1, 20s);
  ASSERT_EQ(more.size(), 1u);
  EXPECT_EQ(more[0].type, "io.conveyor.job.ready");
  EXPECT_EQ(more[0].source, "psql") << "a change made by hand names its session";
  EXPECT_TRUE(relay.stats().leader);

  // The consumer of one type reads that type's event and nothing else.
  auto only = read_events(*configured, prefix, 1, 20s);
  for (auto& m : configured->poll(10, 1s)) only.push_back(decode(m.value));
  ASSERT_EQ(only.size(), 1u);
  EXPECT_EQ(only[0].type, "io.conveyor.job.configured");
}

TEST(Relay, RowsStayUnsentWhileTheBrokerIsDownAndGoOutWhenItReturns) {
  TestDatabase db;
  auto broker = std::make_unique<Broker>();
  auto prefix = conveyor::testing::unique_name("t");
  auto opts = relay_options(db, *broker, prefix);
  opts.send_timeout = 1s;
  broker->stop();
  db.exec("INSERT INTO conveyor.job (job_type) VALUES ('sleep')");
  Relay relay(opts);
  EXPECT_EQ(relay.run_once(), 0u);
  EXPECT_EQ(db.query_value("SELECT count(*) FROM conveyor.outbox_unsent()"), "1")
      << "an event the broker did not ack is not sent";
  broker->restart();
  EXPECT_TRUE(wait_until([&] { return relay.run_once() == 1; }, 30s));
  EXPECT_EQ(db.query_value("SELECT count(*) FROM conveyor.outbox_unsent()"), "0");
}

// Each round is one statement: it saves the place the previous batch
// reached and reads the next, so a run ends with a round that saves the
// last batch's place and finds nothing. Nothing acked is left unsent, and nothing is sent twice.
TEST(Relay, ARunSendsEveryBatchAndLeavesNothingAckedUnsent) {
  TestDatabase db;
  Broker broker;
  auto prefix = conveyor::testing::unique_name("t");
  auto opts = relay_options(db, broker, prefix);
  opts.batch_size = 3;
  db.exec("INSERT INTO conveyor.job (job_type) SELECT 'sleep' FROM generate_series(1, 7)");
  auto consumer = consumer_for(broker, prefix, {"io.conveyor.job.initialized"});
  Relay relay(opts);
  EXPECT_EQ(relay.run_once(), 7u);
  EXPECT_EQ(relay.stats().batches, 3u) << "3 + 3 + 1";
  EXPECT_EQ(db.query_value("SELECT count(*) FROM conveyor.outbox_unsent()"), "0");
  EXPECT_EQ(relay.run_once(), 0u) << "sent rows are not read again";
  auto events = read_events(*consumer, prefix, 7, 20s);
  for (auto& m : consumer->poll(10, 500ms)) events.push_back(decode(m.value));
  ASSERT_EQ(events.size(), 7u) << "each event once";
  std::set<std::string> ids;
  for (const auto& e : events) ids.insert(e.id);
  EXPECT_EQ(ids.size(), 7u);
}

// Issue 14: the relay's thread ran two statements per wake-up, one to read
// and send, one to record what was acked and find nothing more. Now a
// wake-up's acked rows are recorded (the relay's place) by the next one's
// statement, or by stop(), before the lock goes, so that the next leader
// does not send them again.
TEST(Relay, TheLastAckedRowsAreMarkedByTheNextStatementOrByStop) {
  TestDatabase db;
  Broker broker;
  auto prefix = conveyor::testing::unique_name("t");
  auto opts = relay_options(db, broker, prefix);
  opts.poll_interval = 60s;  // only NOTIFY and stop() run statements here
  auto consumer = consumer_for(broker, prefix, {"io.conveyor.job.initialized", "io.conveyor.job.configured"});
  Relay relay(opts);
  relay.start();
  ASSERT_TRUE(wait_until([&] { return relay.stats().leader.load(); }, 10s));
  db.exec("INSERT INTO conveyor.job (job_type) SELECT 'sleep' FROM generate_series(1, 5)");
  ASSERT_TRUE(wait_until([&] { return relay.stats().published.load() == 5; }, 20s));
  EXPECT_EQ(db.query_value("SELECT count(*) FROM conveyor.outbox_unsent()"), "5")
      << "acked, to be saved by the next statement";
  db.exec("UPDATE conveyor.job SET status = 'configured'");
  ASSERT_TRUE(wait_until([&] { return relay.stats().published.load() == 10; }, 20s));
  EXPECT_EQ(db.query_value("SELECT count(*) FROM conveyor.outbox_unsent() "
                           "WHERE type = 'io.conveyor.job.initialized'"),
            "0")
      << "saved by the round that read the configured events";
  relay.stop();
  EXPECT_EQ(db.query_value("SELECT count(*) FROM conveyor.outbox_unsent()"), "0") << "saved by stop()";
  Relay next(opts);
  EXPECT_EQ(next.run_once(), 0u) << "the next leader sends nothing again";
  EXPECT_EQ(read_events(*consumer, prefix, 10, 20s).size(), 10u);
}

// Issue 14: PostgreSQL 15 signals every listening backend on every
// notifying commit, so the relay of a service, which has a listener anyway,
// LISTENs on nothing: its owner hears kOutboxChannel and calls notify().
TEST(Relay, ARelayWokenByItsOwnerListensToNothingAndRunsWhenNotified) {
  TestDatabase db;
  Broker broker;
  auto prefix = conveyor::testing::unique_name("t");
  auto opts = relay_options(db, broker, prefix);
  opts.poll_interval = 1h;  // only the first pass and notify() run it
  opts.woken_by_owner = true;
  const auto unsent = [&] { return db.query_value("SELECT count(*) FROM conveyor.outbox_unsent()"); };
  db.exec("INSERT INTO conveyor.job (job_type) VALUES ('sleep')");
  Relay relay(opts);
  relay.set_heard(true);  // the owner hears kOutboxChannel: no unheard polls
  relay.start();
  ASSERT_TRUE(wait_until([&] { return relay.stats().published.load() == 1; }, 20s)) << "the first pass";
  EXPECT_TRUE(relay.leader());

  db.exec("INSERT INTO conveyor.job (job_type) VALUES ('sleep')");  // notifies conveyor_outbox
  EXPECT_FALSE(wait_until([&] { return relay.stats().published.load() > 1; }, 1s))
      << "the relay's session heard the NOTIFY: it listens";
  relay.notify();
  ASSERT_TRUE(wait_until([&] { return relay.stats().published.load() == 2; }, 20s)) << "notify() runs a pass";
  relay.stop();
  EXPECT_EQ(unsent(), "0");
}

// An owner that hears no kOutboxChannel (it listens to nothing else) keeps
// no connection for the relay: the leader then looks every
// unheard_poll_interval, and again at poll_interval once the owner hears.
TEST(Relay, ALeaderWhoseOwnerDoesNotHearItsChannelPollsOften) {
  TestDatabase db;
  Broker broker;
  auto prefix = conveyor::testing::unique_name("t");
  auto opts = relay_options(db, broker, prefix);
  opts.poll_interval = 1h;
  opts.unheard_poll_interval = 100ms;
  opts.woken_by_owner = true;
  Relay relay(opts);
  relay.start();
  ASSERT_TRUE(wait_until([&] { return relay.leader(); }, 20s));
  for (std::uint64_t n = 1; n <= 3; ++n) {
    db.exec("INSERT INTO conveyor.job (job_type) VALUES ('sleep')");
    ASSERT_TRUE(wait_until([&] { return relay.stats().published.load() == n; }, 10s)) << "no poll sent event " << n;
  }
  // Heard from now on: after the pass notify() runs (none may be under way
  // then), the next poll is an hour away.
  relay.set_heard(true);
  const auto passes = relay.stats().passes.load();
  relay.notify();
  ASSERT_TRUE(wait_until([&] { return relay.stats().passes.load() > passes; }, 10s));
  const auto published = relay.stats().published.load();
  db.exec("INSERT INTO conveyor.job (job_type) VALUES ('sleep')");
  EXPECT_FALSE(wait_until([&] { return relay.stats().published.load() > published; }, 1s))
      << "a relay whose owner hears its channel still polled often";
  relay.notify();
  EXPECT_TRUE(wait_until([&] { return relay.stats().published.load() == published + 1; }, 10s));
  relay.stop();
}

// A change to started notifies no one (conveyor.job_status.notified): the
// relay still sends its event, at its poll when no notified change follows.
TEST(Relay, AnEventOfAChangeThatNotifiesNoOneIsSentAtThePoll) {
  TestDatabase db;
  Broker broker;
  auto prefix = conveyor::testing::unique_name("t");
  auto opts = relay_options(db, broker, prefix);
  opts.poll_interval = 300ms;
  const std::string id = db.query_value("INSERT INTO conveyor.job (job_type) VALUES ('sleep') RETURNING id");
  for (const char* status : {"configured", "ready", "queued"}) {
    db.exec(std::string("UPDATE conveyor.job SET status = '") + status + "' WHERE id = " + id);
  }
  Relay relay(opts);
  relay.start();
  ASSERT_TRUE(wait_until([&] { return relay.stats().published.load() == 4; }, 20s)) << "the first pass";
  auto consumer = consumer_for(broker, prefix, {"io.conveyor.job.started"});

  db.exec("UPDATE conveyor.job SET status = 'started' WHERE id = " + id);
  const auto events = read_events(*consumer, prefix, 1, 20s);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].data.at("job_id").get<std::int64_t>(), std::stoll(id));
  EXPECT_TRUE(wait_until([&] { return relay.stats().published.load() == 5u; }, 10s));
  relay.stop();
}

TEST(Relay, ASecondRelayDoesNotPublishWhileTheFirstHoldsTheLock) {
  TestDatabase db;
  Broker broker;
  auto prefix = conveyor::testing::unique_name("t");
  Relay first(relay_options(db, broker, prefix));
  Relay second(relay_options(db, broker, prefix));
  first.start();
  ASSERT_TRUE(wait_until([&] { return first.stats().leader.load(); }, 10s));
  second.start();

  constexpr int kJobs = 200;
  db.exec("INSERT INTO conveyor.job (job_type) SELECT 'sleep' FROM generate_series(1, " + std::to_string(kJobs) + ")");
  db.exec("UPDATE conveyor.job SET status = 'configured'");
  const std::size_t expected = 2 * kJobs;
  auto consumer = consumer_for(broker, prefix,
                               {"io.conveyor.job.initialized", "io.conveyor.job.configured", "io.conveyor.job.ready"});
  auto events = read_events(*consumer, prefix, expected, 30s);
  // Nothing more arrives once every row is sent.
  ASSERT_TRUE(wait_until([&] { return db.query_value("SELECT count(*) FROM conveyor.outbox_unsent()") == "0"; }, 10s));
  for (auto& m : consumer->poll(1000, 500ms)) events.push_back(decode(m.value));
  EXPECT_EQ(events.size(), expected);
  std::set<std::string> ids;
  for (const auto& e : events) ids.insert(e.id);
  EXPECT_EQ(ids.size(), expected) << "no event published twice";
  EXPECT_EQ(second.stats().published.load(), 0u);
  EXPECT_FALSE(second.stats().leader.load());

  // Per job, the event ids (the outbox's) follow the order of the changes.
  std::map<std::string, std::vector<std::string>> by_job;
  for (const auto& e : events) by_job[e.subject].push_back(e.type);
  for (const auto& [job, types] : by_job) {
    ASSERT_EQ(types.size(), 2u) << job;
    EXPECT_EQ(types[0], "io.conveyor.job.initialized");
    EXPECT_EQ(types[1], "io.conveyor.job.configured");
  }

  // Failover: when the leader stops, the second takes over.
  first.stop();
  ASSERT_TRUE(wait_until([&] { return second.stats().leader.load(); }, 10s));
  db.exec("UPDATE conveyor.job SET status = 'ready'");
  auto after = read_events(*consumer, prefix, kJobs, 30s);
  EXPECT_EQ(after.size(), static_cast<std::size_t>(kJobs));
  EXPECT_EQ(second.stats().published.load(), static_cast<std::uint64_t>(kJobs));
}

// Issue 14: the relay keeps its place as snapshots, not as an id: sequence
// ids commit out of order. A transaction holds a lower id open while later
// ones commit and are sent, across several pages of a window; its event is
// sent when it commits, each event goes once, and no outbox row is ever
// written twice (a row version's xmin is the transaction that inserted it).
TEST(Relay, AnEventThatCommitsAfterHigherIdsIsSentOnceWhenItCommits) {
  TestDatabase db;
  Broker broker;
  auto prefix = conveyor::testing::unique_name("t");
  auto opts = relay_options(db, broker, prefix);
  opts.batch_size = 3;
  auto consumer = consumer_for(broker, prefix, {"io.conveyor.job.initialized"});
  Relay relay(opts);

  db::PoolOptions po;
  po.url = db.url();
  po.size = 1;
  db::Pool pool(po);
  std::promise<void> inserted, release;
  std::thread late([&] {
    pool.transact([&](db::Tx& tx) {
      tx.exec_script("INSERT INTO conveyor.job (job_type) VALUES ('sleep')");
      inserted.set_value();
      release.get_future().wait();
    });
  });
  inserted.get_future().wait();
  const auto late_id = db.query_value("SELECT last_value FROM conveyor.outbox_id_seq");
  db.exec("INSERT INTO conveyor.job (job_type) SELECT 'sleep' FROM generate_series(1, 7)");
  EXPECT_EQ(relay.run_once(), 7u) << "the committed ones, in pages of 3";
  EXPECT_EQ(db.query_value("SELECT count(*) FROM conveyor.outbox_unsent()"), "0")
      << "the open transaction's row is not visible yet";
  release.set_value();
  late.join();
  EXPECT_EQ(db.query_value("SELECT string_agg(id::text, ',') FROM conveyor.outbox_unsent()"), late_id)
      << "committed after the window that passed its id";
  db.exec("INSERT INTO conveyor.job (job_type) VALUES ('sleep')");
  EXPECT_EQ(relay.run_once(), 2u) << "the late one and a new one";
  EXPECT_EQ(relay.run_once(), 0u);
  EXPECT_EQ(db.query_value("SELECT count(*) FROM conveyor.outbox_unsent()"), "0");

  auto events = read_events(*consumer, prefix, 9, 20s);
  for (auto& m : consumer->poll(10, 500ms)) events.push_back(decode(m.value));
  std::set<std::string> ids;
  for (const auto& e : events) ids.insert(e.id);
  EXPECT_EQ(events.size(), 9u);
  EXPECT_EQ(ids.size(), 9u) << "each event once";
  EXPECT_TRUE(ids.count(late_id));
  EXPECT_EQ(db.query_value("SELECT count(*) FROM conveyor.outbox "
                           "WHERE xmin::text::bigint <> txid::text::bigint % 4294967296"),
            "0")
      << "an outbox row was updated";
}

// A relay that fails between a send and the save of its place leaves the
// place it saved: the next leader sends those events again (at least
// once), and nothing is lost. Here the save fails (a trigger refuses it).
TEST(Relay, TheNextLeaderSendsAgainWhatWasSentButNotSaved) {
  TestDatabase db;
  Broker broker;
  auto prefix = conveyor::testing::unique_name("t");
  db.exec("INSERT INTO conveyor.job (job_type) SELECT 'sleep' FROM generate_series(1, 4)");
  db.exec(
      "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RAISE 'refused'; END$$;"
      "CREATE TRIGGER refuse BEFORE UPDATE ON conveyor.outbox_relay FOR EACH ROW EXECUTE FUNCTION refuse()");
  Relay first(relay_options(db, broker, prefix));
  first.run_once();
  EXPECT_EQ(first.stats().published.load(), 4u);
  EXPECT_FALSE(first.stats().leader.load()) << "a failed statement ends the leadership";
  EXPECT_EQ(db.query_value("SELECT count(*) FROM conveyor.outbox_unsent()"), "4");
  db.exec("DROP TRIGGER refuse ON conveyor.outbox_relay");
  Relay next(relay_options(db, broker, prefix));
  EXPECT_EQ(next.run_once(), 4u) << "sent again";
  EXPECT_EQ(db.query_value("SELECT count(*) FROM conveyor.outbox_unsent()"), "0");
}

// Migration 20261225000000: a row unsent before it is sent after it, a row
// sent before it is not sent again; its down gives a sent_at to what the
// relay's place says was sent, and leaves the rest unsent.
TEST(RelayMigration, WhatWasUnsentBeforeIsSentAfterAndTheDownKeepsWhatWasSent) {
  namespace fs = std::filesystem;
  constexpr std::string_view kOurs = "20261225000000_outbox_snapshot_relay";
  TestDatabase db(false);
  Broker broker;
  const fs::path dir = fs::temp_directory_path() / conveyor::testing::unique_name("migr");
  fs::create_directories(dir);
  // The relay of this build reads its place through functions of later
  // migrations (conveyor.outbox_relay_refusal): they come with ours, in
  // one group, as an upgrade from before ours would apply them.
  std::vector<fs::path> ours, later;
  for (const auto& e : fs::directory_iterator(conveyor::testing::migrations_dir())) {
    const std::string name = e.path().filename().string();
    if (name.starts_with(kOurs)) {
      ours.push_back(e.path());
    } else if (name < kOurs) {
      fs::copy_file(e.path(), dir / e.path().filename());
    } else {
      later.push_back(e.path());
    }
  }
  ASSERT_EQ(ours.size(), 2u);
  db::Migrator m(db.url(), dir);
  m.init();
  m.migrate();
  db.exec(
      "INSERT INTO conveyor.outbox (topic, key, type, payload, sent_at) "
      "VALUES ('jobs', '1', 'io.conveyor.job.initialized', '{}', now());"
      "INSERT INTO conveyor.outbox (topic, key, type, payload) "
      "VALUES ('jobs', '2', 'io.conveyor.job.initialized', '{}')");
  const auto unsent_before = db.query_value("SELECT id FROM conveyor.outbox WHERE sent_at IS NULL");

  for (const auto& p : ours) fs::copy_file(p, dir / p.filename());
  for (const auto& p : later) fs::copy_file(p, dir / p.filename());
  m.migrate();
  EXPECT_EQ(db.query_value("SELECT string_agg(id::text, ',') FROM conveyor.outbox_unsent()"), unsent_before);
  auto prefix = conveyor::testing::unique_name("t");
  Relay relay(relay_options(db, broker, prefix));
  EXPECT_EQ(relay.run_once(), 1u) << "the row unsent before the migration, only";
  EXPECT_EQ(relay.run_once(), 0u);
  db.exec(
      "INSERT INTO conveyor.outbox (topic, key, type, payload) "
      "VALUES ('jobs', '3', 'io.conveyor.job.initialized', '{}')");
  const auto unsent_after = db.query_value("SELECT max(id) FROM conveyor.outbox");

  m.rollback();
  EXPECT_EQ(db.query_value("SELECT string_agg(id::text, ',') FROM conveyor.outbox WHERE sent_at IS NULL"),
            unsent_after);
  EXPECT_EQ(db.query_value("SELECT count(*) FROM pg_indexes WHERE indexname = 'outbox_unsent_idx'"), "1");
  fs::remove_all(dir);
}

// Migration 20261225000000 reads every row committed before its ALTER's
// lock, which only READ COMMITTED guarantees: at REPEATABLE READ it
// refuses to run, naming why, and applies nothing of its group.
TEST(RelayMigration, RefusesToRunAtRepeatableRead) {
  namespace fs = std::filesystem;
  constexpr std::string_view kOurs = "20261225000000_outbox_snapshot_relay";
  TestDatabase db(false);
  const fs::path dir = fs::temp_directory_path() / conveyor::testing::unique_name("migr");
  fs::create_directories(dir);
  std::vector<fs::path> ours;
  for (const auto& e : fs::directory_iterator(conveyor::testing::migrations_dir())) {
    const std::string name = e.path().filename().string();
    if (name.starts_with(kOurs)) ours.push_back(e.path());
    if (name < kOurs) fs::copy_file(e.path(), dir / e.path().filename());
  }
  ASSERT_EQ(ours.size(), 2u);
  db::Migrator before(db.url(), dir);
  before.init();
  before.migrate();
  for (const auto& p : ours) fs::copy_file(p, dir / p.filename());

  // The session's default isolation, as an operator's PGOPTIONS might set it.
  const std::string url = db.url();
  const std::string repeatable = url + (url.find('?') == std::string::npos ? "?" : "&") +
                                 "options=-c%20default_transaction_isolation%3Drepeatable%5C%20read";
  db::Migrator at_repeatable_read(repeatable, dir);
  try {
    at_repeatable_read.migrate();
    ADD_FAILURE() << "the migration ran at REPEATABLE READ";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("must run at READ COMMITTED, not repeatable read")) << e.what();
    EXPECT_THAT(e.what(), HasSubstr(std::string(kOurs))) << e.what();
  }
  EXPECT_EQ(db.query_value("SELECT count(*) FROM pg_tables WHERE tablename = 'outbox_relay'"), "0");
  EXPECT_EQ(db.query_value("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'conveyor' "
                           "AND table_name = 'outbox' AND column_name = 'txid'"),
            "0");

  before.migrate();
  EXPECT_EQ(db.query_value("SELECT count(*) FROM pg_tables WHERE tablename = 'outbox_relay'"), "1");
  fs::remove_all(dir);
}

// conveyor.outbox_unsent never walks the whole outbox: a new window (and
// the monitor's count) through outbox_txid_idx, even though the planner
// cannot tell how few rows a txid range holds, and the next page of a long
// window from the primary key after the last id sent. auto_explain shows
// the plans of the statements inside the function.
TEST(RelayPlan, ANewWindowIsReadByTxidAndALongOneIsPagedByTheKey) {
  TestDatabase db;
  db.exec(
      "INSERT INTO conveyor.outbox (topic, key, type, payload) "
      "SELECT 'jobs', g::text, 'io.conveyor.job.done', '{}' FROM generate_series(1, 20000) g");
  db.exec("UPDATE conveyor.outbox_relay SET sent = pg_current_snapshot()");
  db.exec("INSERT INTO conveyor.outbox (topic, key, type, payload) VALUES ('jobs', '1', 'io.conveyor.job.done', '{}')");
  db.exec("ANALYZE conveyor.outbox");
  const auto plan_of = [&](const std::string& call) {
    const auto r = conveyor::testing::psql(
        db.url(),
        "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on; "
        "SET auto_explain.log_level = notice; SET client_min_messages = notice; " +
            call + "; " + call + ";");
    EXPECT_EQ(r.status, 0) << r.output;
    const auto at = r.output.rfind("FROM conveyor.outbox o");
    EXPECT_NE(at, std::string::npos) << r.output;
    return at == std::string::npos ? r.output : r.output.substr(at, r.output.find("Query Text:", at) - at);
  };
  const auto fresh = plan_of(
      "SELECT count(*) FROM conveyor.outbox_relay r, "
      "conveyor.outbox_unsent(r.sent, NULL, 0, pg_current_snapshot(), 500)");
  EXPECT_NE(fresh.find("Bitmap Index Scan on outbox_txid_idx"), std::string::npos) << fresh;
  EXPECT_EQ(fresh.find("outbox_pkey"), std::string::npos) << fresh;
  EXPECT_EQ(fresh.find("Seq Scan"), std::string::npos) << fresh;
  const auto count = plan_of("SELECT count(*) FROM conveyor.outbox_unsent()");
  EXPECT_NE(count.find("outbox_txid_idx"), std::string::npos) << count;
  EXPECT_EQ(count.find("Seq Scan"), std::string::npos) << count;
  const auto next = plan_of(
      "SELECT count(*) FROM conveyor.outbox_unsent('1:1:', pg_current_snapshot(), 15000, "
      "pg_current_snapshot(), 500)");
  EXPECT_NE(next.find("Index Scan using outbox_pkey"), std::string::npos) << next;
  EXPECT_NE(next.find("Index Cond: (id >"), std::string::npos) << next;
}

// A place past this cluster's transaction ids (a database restored into
// another cluster) would count every new row as sent: the relay refuses to
// lead until conveyor.outbox_renumber() (run by `conveyor system restore`)
// renumbers the backup's ids, and then sends what the backup's place says
// was unsent, and only that.
TEST(Relay, APlacePastThisClustersIdsIsRefusedUntilRenumbered) {
  TestDatabase db;
  Broker broker;
  auto prefix = conveyor::testing::unique_name("t");
  EXPECT_EQ(db.query_value("SELECT coalesce(conveyor.outbox_renumber()::text, 'nothing to do')"), "nothing to do");
  db.exec("INSERT INTO conveyor.job (job_type) SELECT 'sleep' FROM generate_series(1, 3)");
  // The backup's numbering: the first event sent, the other two not.
  db.exec(
      "UPDATE conveyor.outbox o SET txid = (4000000000 + n.n)::text::xid8 "
      "FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM conveyor.outbox) n WHERE n.id = o.id");
  db.exec("UPDATE conveyor.outbox_relay SET sent = '4000000002:4000000002:'");
  EXPECT_EQ(db.query_value("SELECT count(*) FROM conveyor.outbox_unsent()"), "2");
  // The rule the relay refuses by, and the monitor alerts on.
  EXPECT_EQ(db.query_value("SELECT conveyor.outbox_relay_refusal()"), "past_cluster_ids");
  Relay relay(relay_options(db, broker, prefix));
  EXPECT_EQ(relay.run_once(), 0u);
  EXPECT_FALSE(relay.stats().leader.load()) << "a place past the cluster's ids";
  EXPECT_EQ(db.query_value("SELECT conveyor.outbox_renumber()"), "2");
  EXPECT_EQ(db.query_value("SELECT coalesce(conveyor.outbox_relay_refusal(), 'may publish')"), "may publish");
  EXPECT_EQ(db.query_value("SELECT count(*) FROM conveyor.outbox_unsent()"), "2");
  EXPECT_EQ(relay.run_once(), 2u);
  EXPECT_TRUE(relay.stats().leader.load());
  db.exec("INSERT INTO conveyor.job (job_type) VALUES ('sleep')");
  EXPECT_EQ(relay.run_once(), 1u) << "a new event after the renumbering";
  EXPECT_EQ(db.query_value("SELECT count(*) FROM conveyor.outbox_unsent()"), "0");
}

}  // namespace
}  // namespace conveyor::bus
