// The Kafka producer and consumer against a real broker process
// (conveyor-devbroker: librdkafka's mock cluster over TCP), one per test.
#include "conveyor/bus/kafka.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "conveyor/bus/topics.hpp"
#include "conveyor/error/error.hpp"
#include "conveyor/testing/testing.hpp"

namespace conveyor::bus {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
namespace ct = conveyor::testing;

// Group joins on the mock cluster take a few seconds.
constexpr auto kWait = 30s;

std::vector<Message> make_batch(const std::string& topic, int keys, int per_key, const std::string& tag) {
  std::vector<Message> batch;
  for (int seq = 0; seq < per_key; ++seq) {
    for (int k = 0; k < keys; ++k) {
      batch.push_back({topic, "job-" + std::to_string(k), tag + ":" + std::to_string(seq)});
    }
  }
  return batch;
}

ProducerOptions producer_options(const std::string& brokers) {
  ProducerOptions o;
  o.brokers = brokers;
  return o;
}

ConsumerOptions consumer_options(const ct::Broker& broker, const std::string& group, const std::string& topic) {
  ConsumerOptions o;
  o.brokers = broker.bootstrap();
  o.group_id = group;
  o.topics = {topic};
  // The mock cluster waits session.timeout.ms - 1 s to rebalance after the
  // last member left; keep that short so the redelivery test is quick.
  o.extra = {{"session.timeout.ms", "4000"}};
  return o;
}

// Polls until `count` messages arrived or kWait passed.
std::vector<ReceivedMessage> receive(Consumer& consumer, std::size_t count) {
  std::vector<ReceivedMessage> got;
  ct::wait_until(
      [&] {
        for (auto& m : consumer.poll(count - got.size(), 200ms)) got.push_back(std::move(m));
        return got.size() >= count;
      },
      kWait);
  return got;
}

bool all_true(const std::vector<bool>& flags) {
  return std::all_of(flags.begin(), flags.end(), [](bool b) { return b; });
}

// Record headers (Kafka record batch v2) go through the devbroker and back
// unchanged, in order, a repeated name and an empty value included.
TEST(Kafka, RecordHeadersArriveAsProduced) {
  ct::Broker broker;
  const std::string topic = job_event_topic(ct::unique_name("headers"), "io.conveyor.job.queued");
  Consumer consumer(consumer_options(broker, ct::unique_name("group"), topic));
  Producer producer(producer_options(broker.bootstrap()));
  const Headers headers = {
      {"content-type", "application/cloudevents+json"}, {"x-trace", "a"}, {"x-trace", "b"}, {"x-empty", ""}};
  std::vector<Message> batch = {{topic, "k", "with", headers}, {topic, "k", "without"}};
  ASSERT_TRUE(all_true(producer.send_batch(batch, 20s)));
  const auto got = receive(consumer, 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].value, "with");
  EXPECT_EQ(got[0].headers, headers);
  EXPECT_EQ(got[1].value, "without");
  EXPECT_TRUE(got[1].headers.empty());
}

TEST(Kafka, ProducedBatchIsAckedAndConsumedInOrderPerKey) {
  ct::Broker broker;
  const std::string topic = job_event_topic(ct::unique_name("kafka"), "io.conveyor.job.queued");
  // The consumer subscribes before the topic exists, as a service does on a
  // fresh cluster.
  Consumer consumer(consumer_options(broker, ct::unique_name("group"), topic));

  Producer producer(producer_options(broker.bootstrap()));
  auto batch = make_batch(topic, 5, 8, "a");
  auto acked = producer.send_batch(batch, 20s);
  ASSERT_EQ(acked.size(), batch.size());
  EXPECT_TRUE(all_true(acked));

  auto got = receive(consumer, batch.size());
  ASSERT_EQ(got.size(), batch.size());
  std::map<std::string, std::vector<std::string>> by_key;
  for (const auto& m : got) {
    EXPECT_EQ(m.topic, topic);
    by_key[m.key].push_back(m.value);
  }
  ASSERT_EQ(by_key.size(), 5u);
  for (const auto& [key, values] : by_key) {
    std::vector<std::string> expected;
    for (int seq = 0; seq < 8; ++seq) expected.push_back("a:" + std::to_string(seq));
    EXPECT_EQ(values, expected) << "key " << key;
  }
  consumer.commit();
}

TEST(Kafka, CommittedMessagesAreNotRedeliveredButUncommittedAre) {
  ct::Broker broker;
  const std::string topic = job_event_topic(ct::unique_name("kafka"), "io.conveyor.job.queued");
  const std::string group = ct::unique_name("group");
  Producer producer(producer_options(broker.bootstrap()));

  auto done = make_batch(topic, 3, 2, "done");
  ASSERT_TRUE(all_true(producer.send_batch(done, 20s)));
  {
    Consumer first(consumer_options(broker, group, topic));
    ASSERT_EQ(receive(first, done.size()).size(), done.size());
    first.commit();  // their work is committed

    auto open = make_batch(topic, 2, 1, "open");
    ASSERT_TRUE(all_true(producer.send_batch(open, 20s)));
    ASSERT_EQ(receive(first, open.size()).size(), open.size());
    // No commit: this member "crashes" before its work is committed.
  }

  Consumer second(consumer_options(broker, group, topic));
  auto again = receive(second, 2);
  ASSERT_EQ(again.size(), 2u);
  // Nothing more may follow: the committed messages stay consumed.
  for (auto& m : second.poll(10, 2s)) again.push_back(std::move(m));
  std::multiset<std::string> values;
  for (const auto& m : again) values.insert(m.value);
  EXPECT_EQ(values, (std::multiset<std::string>{"open:0", "open:0"}));
  std::set<std::string> keys;
  for (const auto& m : again) keys.insert(m.key);
  EXPECT_EQ(keys, (std::set<std::string>{"job-0", "job-1"}));

  second.commit();
  EXPECT_NO_THROW(second.commit());  // nothing new: a no-op
}

// One topic per job event type: a service subscribes to the topics of its
// types at start, most of which no event reached yet. The consumer makes
// them (allow.auto.create.topics), and the first event of a rare type, sent
// later, arrives like any other; only the subscribed topics are read.
TEST(Kafka, AConsumerOfTopicsThatDoNotExistYetGetsTheirFirstEvents) {
  ct::Broker broker;
  const std::string prefix = ct::unique_name("kafka");
  ConsumerOptions o =
      consumer_options(broker, ct::unique_name("group"), job_event_topic(prefix, "io.conveyor.job.queued"));
  o.topics.push_back(job_event_topic(prefix, "io.conveyor.job.cancel_requested"));
  Consumer consumer(o);
  EXPECT_TRUE(consumer.poll(10, 2s).empty());

  Producer producer(producer_options(broker.bootstrap()));
  std::vector<Message> batch = {{job_event_topic(prefix, "io.conveyor.job.started"), "7", "not subscribed"},
                                {job_event_topic(prefix, "io.conveyor.job.cancel_requested"), "7", "rare"},
                                {job_event_topic(prefix, "io.conveyor.job.queued"), "8", "common"}};
  ASSERT_TRUE(all_true(producer.send_batch(batch, 20s)));
  auto got = receive(consumer, 2);
  ASSERT_EQ(got.size(), 2u);
  for (auto& m : consumer.poll(10, 1s)) got.push_back(std::move(m));
  std::set<std::string> values;
  for (const auto& m : got) values.insert(m.value);
  EXPECT_EQ(values, (std::set<std::string>{"rare", "common"}));
}

TEST(Kafka, KcatReadsWhatTheProducerSent) {
  ct::Broker broker;
  const std::string topic = topic_name(ct::unique_name("kafka"), kParametersTopic);
  Producer producer(producer_options(broker.bootstrap()));
  std::vector<Message> batch = {{topic, "k1", R"({"n":1})"}, {topic, "k2", R"({"n":2})"}};
  ASSERT_TRUE(all_true(producer.send_batch(batch, 20s)));

  auto result = ct::run({"kcat", "-b", broker.bootstrap(), "-C", "-t", topic, "-e", "-q", "-f", "%k=%s\\n"}, {}, 60s);
  ASSERT_EQ(result.status, 0) << result.output;
  EXPECT_THAT(result.output, HasSubstr(R"(k1={"n":1})"));
  EXPECT_THAT(result.output, HasSubstr(R"(k2={"n":2})"));
}

// tools/dev restarts the devbroker on the same port; a running service's
// producer must carry on (the restarted broker forgot its producer ids).
TEST(Kafka, ProducerCarriesOnAfterBrokerRestart) {
  ct::Broker broker;
  const std::string topic = job_event_topic(ct::unique_name("kafka"), "io.conveyor.job.queued");
  const std::string before = broker.bootstrap();
  Producer producer(producer_options(before));
  ASSERT_TRUE(all_true(producer.send_batch(make_batch(topic, 2, 2, "before"), 20s)));

  broker.restart();
  ASSERT_EQ(broker.bootstrap(), before);
  auto batch = make_batch(topic, 2, 2, "after");
  EXPECT_TRUE(all_true(producer.send_batch(batch, 20s)));

  Consumer consumer(consumer_options(broker, ct::unique_name("group"), topic));
  auto got = receive(consumer, batch.size());
  ASSERT_EQ(got.size(), batch.size());
  for (const auto& m : got) EXPECT_THAT(m.value, HasSubstr("after:"));
}

// A batch that times out while the broker is down is answered unsent, and
// no copy of it stays in librdkafka's queue to be delivered when the broker
// is back: the caller (the outbox relay) sends those rows again itself, so
// every retry during an outage would otherwise leave one more copy queued,
// held in memory and delivered later.
TEST(Kafka, ABatchThatTimedOutIsNotDeliveredWhenTheBrokerIsBack) {
  ct::Broker broker;
  const std::string topic = job_event_topic(ct::unique_name("kafka"), "io.conveyor.job.queued");
  Producer producer(producer_options(broker.bootstrap()));
  ASSERT_TRUE(all_true(producer.send_batch(make_batch(topic, 1, 1, "warm"), 20s)));

  broker.stop();
  for (int i = 0; i < 5; ++i) {
    const auto acked = producer.send_batch(make_batch(topic, 1, 20, "outage" + std::to_string(i)), 300ms);
    ASSERT_EQ(acked.size(), 20u);
    EXPECT_EQ(std::count(acked.begin(), acked.end(), true), 0) << "batch " << i << " acked during the outage";
  }
  broker.resume();
  // One key, one partition: anything still queued from the outage would be
  // delivered before this batch.
  const auto after = make_batch(topic, 1, 3, "after");
  ASSERT_TRUE(all_true(producer.send_batch(after, 20s)));

  Consumer consumer(consumer_options(broker, ct::unique_name("group"), topic));
  const auto got = receive(consumer, after.size());
  ASSERT_EQ(got.size(), after.size());
  for (const auto& m : got) EXPECT_THAT(m.value, HasSubstr("after:"));
  EXPECT_TRUE(consumer.poll(10, 500ms).empty()) << "more messages than the batch sent after the outage";
}

// The idempotent producer numbers every message it enqueues; dropping
// the unsent ones of a batch that timed out must not leave a gap the broker
// refuses in the next batch (librdkafka bumps the producer's epoch).
TEST(Kafka, ABatchAfterOneThatTimedOutIsAcked) {
  ct::Broker broker;
  const std::string topic = job_event_topic(ct::unique_name("kafka"), "io.conveyor.job.queued");
  Producer producer(producer_options(broker.bootstrap()));
  ASSERT_TRUE(all_true(producer.send_batch(make_batch(topic, 1, 1, "warm"), 20s)));
  for (int i = 0; i < 20; ++i) {
    // 1-20 ms: some of the batch sent and acked, some in flight, some queued.
    const auto rushed =
        producer.send_batch(make_batch(topic, 4, 250, "rushed" + std::to_string(i)), std::chrono::milliseconds(1 + i));
    const auto next = make_batch(topic, 4, 2, "next" + std::to_string(i));
    ASSERT_TRUE(all_true(producer.send_batch(next, 20s)))
        << "round " << i << ": " << std::count(rushed.begin(), rushed.end(), true) << " of the rushed batch acked";
  }
}

TEST(Kafka, UnreachableBrokerReportsEveryMessageUnsentAtTimeout) {
  Producer producer(producer_options("127.0.0.1:" + std::to_string(ct::free_port())));
  std::vector<Message> batch = {{"t.job.queued", "k", "v1"}, {"t.job.queued", "k", "v2"}};
  auto start = std::chrono::steady_clock::now();
  auto acked = producer.send_batch(batch, 500ms);
  EXPECT_EQ(acked, (std::vector<bool>{false, false}));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST(Kafka, BadConfigurationNamesTheProperty) {
  try {
    ProducerOptions o = producer_options("127.0.0.1:1");
    o.extra = {{"no.such.property", "1"}};
    Producer producer(o);
    FAIL() << "accepted an unknown property";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), errc::invalid_config);
    EXPECT_THAT(e.what(), HasSubstr("kafka: no.such.property: "));
  }
  try {
    ConsumerOptions o;
    o.brokers = "127.0.0.1:1";
    o.group_id = "g";
    o.topics = {"t"};
    o.auto_offset_reset = "sometimes";
    Consumer consumer(o);
    FAIL() << "accepted auto.offset.reset=sometimes";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), errc::invalid_config);
    EXPECT_THAT(e.what(), HasSubstr("kafka: auto.offset.reset: "));
  }
  EXPECT_THROW(Producer(producer_options("")), Error);
}

}  // namespace
}  // namespace conveyor::bus
