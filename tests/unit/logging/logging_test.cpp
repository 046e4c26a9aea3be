#include "conveyor/logging/logging.hpp"

#include <regex>
#include <sstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/ostream_sink.h>

#include "conveyor/error/error.hpp"

namespace conveyor::logging {
namespace {

using ::testing::HasSubstr;

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(Logging, JsonFormatIsOneEscapedObjectPerLine) {
  std::ostringstream out;
  auto early = get("early");  // created before setup(): must be reconfigured
  setup(Format::json, Level::info, "conveyor-test", std::make_shared<spdlog::sinks::ostream_sink_mt>(out));
  get("db")->info("quote \" backslash \\ newline \n tab \t done");
  get("db")->debug("below the level");
  early->warn("from {}", "early");
  early->flush();
  get("db")->flush();

  const auto lines = lines_of(out.str());
  ASSERT_EQ(lines.size(), 2u) << out.str();
  const auto first = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(first["msg"], "quote \" backslash \\ newline \n tab \t done");
  EXPECT_EQ(first["level"], "info");
  EXPECT_EQ(first["service"], "conveyor-test");
  EXPECT_EQ(first["logger"], "db");
  EXPECT_TRUE(
      std::regex_match(first["time"].get<std::string>(), std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")))
      << first["time"];
  const auto second = nlohmann::json::parse(lines[1]);
  EXPECT_EQ(second["level"], "warn");
  EXPECT_EQ(second["logger"], "early");
  EXPECT_EQ(second["msg"], "from early");
}

TEST(Logging, TextFormatNamesServiceAndLogger) {
  std::ostringstream out;
  setup(Format::text, Level::debug, "svc", std::make_shared<spdlog::sinks::ostream_sink_mt>(out));
  get("relay")->debug("hello");
  get("relay")->flush();
  EXPECT_THAT(out.str(), HasSubstr("[svc/relay] hello"));
}

TEST(Logging, ParseNames) {
  EXPECT_EQ(parse_level("warn"), Level::warn);
  EXPECT_EQ(parse_format("json"), Format::json);
  EXPECT_THROW(parse_level("loud"), Error);
  EXPECT_THROW(parse_format("xml"), Error);
}

TEST(Logging, RedactUrl) {
  EXPECT_EQ(redact_url("postgresql://u:p@h:5432/db?sslmode=require"), "postgresql://u:****@h:5432/db?sslmode=require");
  EXPECT_EQ(redact_url("postgresql://u@h/db"), "postgresql://u@h/db");
  EXPECT_EQ(redact_url("host=h password=p user=u"), "host=h password=**** user=u");
  // Issue 9: the client key's passphrase is a secret too, and libpq allows
  // spaces around '='.
  EXPECT_EQ(redact_url("host=h sslpassword=s3cret sslkey=/k"), "host=h sslpassword=**** sslkey=/k");
  EXPECT_EQ(redact_url("host=h password = 'a b' user=u"), "host=h password = **** user=u");
  EXPECT_EQ(redact_url("postgresql://h/db?sslpassword=s3cret&sslmode=verify-full"),
            "postgresql://h/db?sslpassword=****&sslmode=verify-full");
  EXPECT_EQ(redact_url("mypassword=visible"), "mypassword=visible") << "not a libpq keyword";
}

}  // namespace
}  // namespace conveyor::logging
