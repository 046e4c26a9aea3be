// Topic names (conveyor/bus/topics.hpp): one topic per job event type, and
// the list of job event types against what the migrations can emit.
#include "conveyor/bus/topics.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

namespace conveyor::bus {
namespace {

TEST(Topics, TopicNameJoinsPrefixAndSuffix) {
  EXPECT_EQ(topic_name("conveyor", kParametersTopic), "conveyor.parameters");
  EXPECT_EQ(topic_name("t_1", kControlTopic), "t_1.control");
}

TEST(Topics, AJobEventHasTheTopicOfItsType) {
  EXPECT_EQ(job_event_topic("conveyor", "io.conveyor.job.queued"), "conveyor.job.queued");
  EXPECT_EQ(job_event_topic("t_1", "io.conveyor.job.cancel_requested"), "t_1.job.cancel_requested");
  EXPECT_EQ(job_event_topic("conveyor", "io.conveyor.parameters.changed"), "") << "not a job event";
  EXPECT_EQ(job_event_topic("conveyor", "io.conveyor.job."), "") << "no name";
  EXPECT_EQ(job_event_topic("conveyor", "io.conveyor.job.a.b"), "") << "a dot would make the name ambiguous";
  EXPECT_EQ(job_event_topic("conveyor", "io.conveyor.job.d\xc3\xa9j\xc3\xa0"), "") << "not a Kafka topic name";
  EXPECT_EQ(job_event_topic("conveyor", "io.conveyor.job." + std::string(201, 'x')), "") << "too long for Kafka";
}

TEST(Topics, AnOutboxRowGoesToTheTopicOfItsTypeElseOfItsStream) {
  EXPECT_EQ(topic_for("conveyor", kJobsTopic, "io.conveyor.job.done"), "conveyor.job.done");
  EXPECT_EQ(topic_for("conveyor", kParametersTopic, "io.conveyor.parameters.changed"), "conveyor.parameters");
  EXPECT_EQ(topic_for("conveyor", kJobsTopic, "io.conveyor.test"), "conveyor.jobs")
      << "a row written by hand with another type still goes somewhere: it must not block the outbox";
}

TEST(Topics, ConsumersSubscribeToTheTopicsOfTheirTypesOnly) {
  EXPECT_EQ(job_event_topics("p", {"io.conveyor.job.queued", "io.conveyor.job.cancel_requested"}),
            (std::vector<std::string>{"p.job.queued", "p.job.cancel_requested"}));
  EXPECT_EQ(job_event_topics("p", {"io.conveyor.parameters.changed"}), std::vector<std::string>{});
  const auto all = job_event_topics("p", job_event_types());
  EXPECT_EQ(all.size(), job_event_types().size());
  EXPECT_EQ(std::set<std::string>(all.begin(), all.end()).size(), all.size()) << "one topic per type";
}

// Every job event type a migration writes to the outbox (a literal
// 'io.conveyor.job.<name>'; '... ' || status is a status, listed through
// model::kAllStatuses) is one `conveyor events tail` subscribes to.
TEST(Topics, TheListOfJobEventTypesHoldsEveryTypeTheMigrationsEmit) {
  const std::set<std::string> known(job_event_types().begin(), job_event_types().end());
  EXPECT_TRUE(known.contains("io.conveyor.job.initialized"));
  EXPECT_TRUE(known.contains("io.conveyor.job.canceled"));
  const std::regex literal(R"('io\.conveyor\.job\.([a-z_]+)')");
  std::set<std::string> emitted;
  for (const auto& entry : std::filesystem::directory_iterator(CONVEYOR_MIGRATIONS_DIR)) {
    if (!entry.path().string().ends_with(".up.sql")) continue;
    std::ifstream in(entry.path());
    std::stringstream text;
    text << in.rdbuf();
    const std::string sql = text.str();
    for (std::sregex_iterator it(sql.begin(), sql.end(), literal), end; it != end; ++it) {
      emitted.insert("io.conveyor.job." + (*it)[1].str());
    }
  }
  EXPECT_TRUE(emitted.contains("io.conveyor.job.cancel_requested")) << "the scan finds the literals";
  EXPECT_TRUE(emitted.contains("io.conveyor.job.held"));
  for (const std::string& type : emitted) EXPECT_TRUE(known.contains(type)) << type << " is not in job_event_types()";
}

}  // namespace
}  // namespace conveyor::bus
