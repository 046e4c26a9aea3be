// model::JobConfig: a job's config parsed once, with errors naming the field.
#include <gtest/gtest.h>

#include "conveyor/error/error.hpp"
#include "conveyor/model/job_config.hpp"

namespace conveyor::model {
namespace {

using nlohmann::json;

// The field a parse error names ("" when it parsed).
std::string refused_field(const json& config) {
  try {
    (void)parse_job_config(config);
  } catch (const FieldError& e) {
    return e.field() + ": " + e.what();
  }
  return "";
}

TEST(JobConfig, ParsesWhatConfigurationWrites) {
  const json config = {
      {"job_type", "ingest"},
      {"argv", {"/bin/echo", "1"}},
      {"command_template", {"/bin/echo", "{attempt}"}},
      {"image", ""},
      {"runner", "resident"},
      {"resources", {{"cpus", 0.5}, {"memory_mb", 64}}},
      {"network", true},
      {"env", {{"A", "x"}, {"N", 3}}},
      {"timeout_s", 1.5},
      {"max_attempts", 3},
      {"retry_backoff_s", 10},
      {"inputs", {"/data/1"}},
      {"output_dir", "/out/1/"},
      {"sinks", {{{"kind", "webhook"}, {"url", "http://x"}}}},
      {"pool", "gpu"},
      {"concurrency_limit", nullptr},
  };
  const auto c = parse_job_config(config);
  EXPECT_EQ(c.job_type, "ingest");
  EXPECT_EQ(c.argv, (std::vector<std::string>{"/bin/echo", "1"}));
  EXPECT_EQ(c.command_template, (std::vector<std::string>{"/bin/echo", "{attempt}"}));
  EXPECT_EQ(c.runner, "resident");
  EXPECT_EQ(c.resources.cpus, 0.5);
  EXPECT_EQ(c.resources.memory_mb, 64);
  EXPECT_TRUE(c.network);
  EXPECT_EQ(c.env.at("A"), "x");
  EXPECT_EQ(c.env.at("N"), "3") << "a non-string value as its JSON text";
  EXPECT_EQ(c.timeout(), std::chrono::milliseconds(1500));
  EXPECT_EQ(c.max_attempts, 3);
  EXPECT_EQ(c.retry_backoff_s, 10);
  EXPECT_EQ(c.inputs, (std::vector<std::string>{"/data/1"}));
  EXPECT_EQ(c.output_dir, "/out/1/");
  EXPECT_EQ(c.sinks.size(), 1u);
  EXPECT_EQ(c.pool, "gpu");
  EXPECT_FALSE(c.concurrency_limit.has_value());
}

TEST(JobConfig, MissingFieldsTakeTheirDefaults) {
  const auto c = parse_job_config(json::object());
  EXPECT_TRUE(c.argv.empty());
  EXPECT_EQ(c.runner, "process");
  EXPECT_EQ(c.pool, "default") << "as conveyor.job_pool";
  EXPECT_EQ(c.retry_backoff_s, 30);
  EXPECT_EQ(c.max_attempts, 1);
  EXPECT_FALSE(c.timeout().has_value());
  EXPECT_TRUE(c.sinks.is_array());
}

TEST(JobConfig, AWrongTypeIsRefusedNamingTheField) {
  EXPECT_EQ(refused_field(json::array()).rfind("config: job config must be a JSON object", 0), 0u);
  EXPECT_EQ(refused_field({{"argv", "echo"}}), "config.argv: job config: argv must be an array of strings");
  EXPECT_EQ(refused_field({{"argv", {"echo", 1}}}), "config.argv: job config: argv must be an array of strings");
  EXPECT_EQ(refused_field({{"timeout_s", "10"}}), "config.timeout_s: job config: timeout_s must be a number >= 0");
  EXPECT_EQ(refused_field({{"timeout_s", -1}}), "config.timeout_s: job config: timeout_s must be a number >= 0");
  EXPECT_EQ(refused_field({{"max_attempts", 0}}),
            "config.max_attempts: job config: max_attempts must be an integer >= 1");
  EXPECT_EQ(refused_field({{"pool", 7}}), "config.pool: job config: pool must be a string");
  EXPECT_EQ(refused_field({{"env", {1, 2}}}), "config.env: job config: env must be an object");
  EXPECT_EQ(refused_field({{"sinks", {{{"url", "x"}}}}}),
            "config.sinks: job config: sinks must be an array of objects, each with a string \"kind\"");
  EXPECT_EQ(refused_field({{"network", "yes"}}), "config.network: job config: network must be true or false");
  EXPECT_EQ(refused_field({{"resources", {{"cpus", "2"}}}}),
            "config.resources.cpus: job config: resources.cpus must be a number >= 0");
}

}  // namespace
}  // namespace conveyor::model
