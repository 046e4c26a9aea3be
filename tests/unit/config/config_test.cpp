#include "conveyor/config/config.hpp"

#include <fstream>
#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "conveyor/error/error.hpp"
#include "conveyor/logging/logging.hpp"

namespace conveyor::config {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// A private directory of env files, removed afterwards.
class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::random_device rd;
    dir_ = std::filesystem::temp_directory_path() /
           ("conveyor-config-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::filesystem::path write(const std::string& name, const std::string& text) {
    const auto path = dir_ / name;
    std::ofstream(path) << text;
    return path;
  }

  // The message of the invalid_config error load() throws.
  static std::string load_error(const Schema& schema, const std::vector<std::filesystem::path>& files,
                                const std::map<std::string, std::string>& env) {
    try {
      load(schema, files, env);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), errc::invalid_config);
      return e.what();
    }
    ADD_FAILURE() << "load() did not throw";
    return "";
  }

  std::filesystem::path dir_;
  const std::map<std::string, std::string> db_env_{{"CONVEYOR_DATABASE_URL", "postgresql://localhost/conveyor"}};
};

TEST_F(ConfigTest, DefaultsApplyWhenNothingIsSet) {
  const Config c = load(core_schema(), {}, db_env_);
  EXPECT_EQ(c.get_int("CONVEYOR_HTTP_PORT"), 0);
  EXPECT_EQ(c.get_string("CONVEYOR_HTTP_HOST"), "127.0.0.1");
  EXPECT_EQ(c.get_string("CONVEYOR_LOG_LEVEL"), "info");
  EXPECT_EQ(c.get_string("CONVEYOR_LOG_FORMAT"), "text");
  EXPECT_EQ(c.get_string("CONVEYOR_KAFKA_BROKERS"), "");
  EXPECT_EQ(c.get_string("CONVEYOR_DATA_DIR"), "/var/lib/conveyor");
  EXPECT_EQ(c.get_string("CONVEYOR_TOPIC_PREFIX"), "conveyor");
  EXPECT_EQ(c.source("CONVEYOR_HTTP_PORT").to_string(), "default");
  EXPECT_EQ(c.source("CONVEYOR_DATABASE_URL").to_string(), "environment");
  EXPECT_TRUE(c.warnings().empty());
}

TEST_F(ConfigTest, LayersDefaultThenFilesInOrderThenEnvironment) {
  const auto f1 = write("01_defaults.env",
                        "# defaults\n"
                        "CONVEYOR_HTTP_PORT=9001\n"
                        "CONVEYOR_LOG_LEVEL=debug\n"
                        "CONVEYOR_DATA_DIR=/from/file1\n"
                        "CONVEYOR_TOPIC_PREFIX=file1\n");
  const auto f2 = write("04_local.env",
                        "\n"
                        "export CONVEYOR_HTTP_PORT=9002\n"
                        "CONVEYOR_DATA_DIR=\"/from/file2\"\n");
  auto env = db_env_;
  env["CONVEYOR_HTTP_PORT"] = "9003";

  const Config c = load(core_schema(), {f1, f2}, env);
  EXPECT_EQ(c.get_int("CONVEYOR_HTTP_PORT"), 9003);  // environment beats files
  EXPECT_EQ(c.source("CONVEYOR_HTTP_PORT").to_string(), "environment");
  EXPECT_EQ(c.get_string("CONVEYOR_DATA_DIR"), "/from/file2");  // later file wins
  EXPECT_EQ(c.source("CONVEYOR_DATA_DIR").to_string(), f2.string() + ":3");
  EXPECT_EQ(c.get_string("CONVEYOR_TOPIC_PREFIX"), "file1");  // file beats default
  EXPECT_EQ(c.source("CONVEYOR_TOPIC_PREFIX").to_string(), f1.string() + ":5");
  EXPECT_EQ(c.get_string("CONVEYOR_LOG_LEVEL"), "debug");
  EXPECT_EQ(c.get_string("CONVEYOR_HTTP_HOST"), "127.0.0.1");  // default under all
  EXPECT_EQ(c.source("CONVEYOR_HTTP_HOST").to_string(), "default");
}

TEST_F(ConfigTest, EnvFileSyntax) {
  const auto f = write("a.env",
                       "  # indented comment\n"
                       "CONVEYOR_INSTANCE_ID='single # quoted'\n"
                       "CONVEYOR_TOPIC_PREFIX=plain   # trailing comment\n"
                       "CONVEYOR_DATA_DIR=/with#hash\n"
                       "CONVEYOR_MIGRATIONS_DIR=\"esc \\\"q\\\"\"\n"
                       "OTHER_TOOL_VAR=ignored\n");
  const Config c = load(core_schema(), {f}, db_env_);
  EXPECT_EQ(c.get_string("CONVEYOR_INSTANCE_ID"), "single # quoted");
  EXPECT_EQ(c.get_string("CONVEYOR_TOPIC_PREFIX"), "plain");
  EXPECT_EQ(c.get_string("CONVEYOR_DATA_DIR"), "/with#hash");
  EXPECT_EQ(c.get_string("CONVEYOR_MIGRATIONS_DIR"), "esc \"q\"");
}

TEST_F(ConfigTest, ValidationErrorNamesKeyAndSource) {
  const auto f = write("04_local.env", "# local\n\nCONVEYOR_HTTP_PORT=abc\n");
  const std::string message = load_error(core_schema(), {f}, db_env_);
  EXPECT_THAT(message,
              HasSubstr("CONVEYOR_HTTP_PORT (from " + f.string() + ":3): expected an integer 0..65535, got 'abc'"));
}

TEST_F(ConfigTest, AllProblemsAreReportedAtOnce) {
  const auto f = write("bad.env",
                       "CONVEYOR_HTTP_PORT=70000\n"
                       "CONVEYOR_LOG_FORMAT=xml\n"
                       "not a key value line\n");
  const std::map<std::string, std::string> env{{"CONVEYOR_LOG_LEVEL", "loud"}};
  const std::string message = load_error(core_schema(), {f}, env);
  EXPECT_THAT(message, HasSubstr("5 problems"));
  EXPECT_THAT(message, HasSubstr("CONVEYOR_DATABASE_URL: required but not set"));
  EXPECT_THAT(message,
              HasSubstr("CONVEYOR_HTTP_PORT (from " + f.string() + ":1): expected an integer 0..65535, got '70000'"));
  EXPECT_THAT(message,
              HasSubstr("CONVEYOR_LOG_FORMAT (from " + f.string() + ":2): expected one of json, text, got 'xml'"));
  EXPECT_THAT(message, HasSubstr(f.string() + ":3: expected KEY=VALUE"));
  EXPECT_THAT(message, HasSubstr("CONVEYOR_LOG_LEVEL (from environment): expected one of "
                                 "trace, debug, info, warn, error, got 'loud'"));
}

TEST_F(ConfigTest, MissingEnvFileIsAnError) {
  const std::string message = load_error(core_schema(), {dir_ / "nope.env"}, db_env_);
  EXPECT_THAT(message, HasSubstr((dir_ / "nope.env").string() + ": cannot read env file"));
}

TEST_F(ConfigTest, UnknownKeyInFileIsAnErrorWithSuggestion) {
  const auto f = write("typo.env", "CONVEYOR_HTTP_PROT=8081\n");
  const std::string message = load_error(core_schema(), {f}, db_env_);
  EXPECT_THAT(message, HasSubstr("CONVEYOR_HTTP_PROT (from " + f.string() +
                                 ":1): unknown key; did you mean CONVEYOR_HTTP_PORT?"));
}

TEST_F(ConfigTest, UnknownKeyInEnvironmentIsAWarning) {
  auto env = db_env_;
  env["CONVEYOR_LOG_LEVLE"] = "debug";
  env["PATH"] = "/usr/bin";  // not ours: not even a warning
  const Config c = load(core_schema(), {}, env);
  ASSERT_EQ(c.warnings().size(), 1u);
  EXPECT_THAT(c.warnings()[0], HasSubstr("CONVEYOR_LOG_LEVLE"));
  EXPECT_THAT(c.warnings()[0], HasSubstr("did you mean CONVEYOR_LOG_LEVEL?"));
}

TEST_F(ConfigTest, SecretsAreMaskedInShow) {
  Schema schema = core_schema();
  schema.add({.name = "CONVEYOR_WEBHOOK_TOKEN", .default_value = "", .secret = true});
  auto env = db_env_;
  env["CONVEYOR_DATABASE_URL"] = "postgresql://user:s3cret@db.example:5432/conveyor";
  env["CONVEYOR_WEBHOOK_TOKEN"] = "tok-123";
  const Config c = load(schema, {}, env);
  std::map<std::string, std::pair<std::string, std::string>> rows;
  for (const auto& [key, value, source] : c.show()) rows[key] = {value, source};
  EXPECT_EQ(rows["CONVEYOR_DATABASE_URL"].first, "postgresql://user:****@db.example:5432/conveyor");
  EXPECT_EQ(rows["CONVEYOR_DATABASE_URL"].second, "environment");
  EXPECT_EQ(rows["CONVEYOR_WEBHOOK_TOKEN"].first, "****");
  EXPECT_EQ(rows["CONVEYOR_HTTP_PORT"].first, "0");
  EXPECT_EQ(rows["CONVEYOR_HTTP_PORT"].second, "default");
  // The real value is still available to the program.
  EXPECT_EQ(c.get_string("CONVEYOR_WEBHOOK_TOKEN"), "tok-123");
}

TEST_F(ConfigTest, SecretValuesNeverAppearInErrors) {
  Schema schema = core_schema();
  schema.add({.name = "CONVEYOR_PIN", .type = Type::integer, .default_value = "0", .secret = true});
  auto env = db_env_;
  env["CONVEYOR_PIN"] = "hunter2";
  const std::string message = load_error(schema, {}, env);
  EXPECT_THAT(message, HasSubstr("CONVEYOR_PIN (from environment): expected an integer"));
  EXPECT_THAT(message, Not(HasSubstr("hunter2")));
}

TEST_F(ConfigTest, MaskSecretHandlesConninfoAndUrls) {
  EXPECT_EQ(mask_secret("host=db user=app password=s3cret dbname=x"), "host=db user=app password=**** dbname=x");
  EXPECT_EQ(mask_secret("postgresql://app@db/x?password=s3cret&sslmode=require"),
            "postgresql://app@db/x?password=****&sslmode=require");
  EXPECT_EQ(mask_secret("postgresql://localhost/x"), "postgresql://localhost/x");
  EXPECT_EQ(mask_secret("plain-token"), "****");
  EXPECT_EQ(mask_secret(""), "");
  // Issue 9: `config show` printed the client key's passphrase.
  EXPECT_EQ(mask_secret("postgresql://app@db/x?sslpassword=k3y&sslmode=verify-full"),
            "postgresql://app@db/x?sslpassword=****&sslmode=verify-full");
  EXPECT_EQ(mask_secret("host=db sslkey=/k sslpassword=k3y"), "host=db sslkey=/k sslpassword=****");
}

TEST_F(ConfigTest, ServiceKeysOfEveryType) {
  Schema schema = core_schema();
  schema.add({.name = "CONVEYOR_POLL", .type = Type::duration_ms, .default_value = "5s"})
      .add({.name = "CONVEYOR_DRY_RUN", .type = Type::boolean, .default_value = "false"})
      .add({.name = "CONVEYOR_SINK_URL", .type = Type::url, .default_value = ""})
      .add({.name = "CONVEYOR_HTTP_PORT",
            .type = Type::integer,
            .default_value = "8181",
            .min = 0,
            .max = 65535});  // a service changing a core default
  auto env = db_env_;
  env["CONVEYOR_DRY_RUN"] = "Yes";
  env["CONVEYOR_SINK_URL"] = "http://sink:9000/hook";
  const Config c = load(schema, {}, env);
  EXPECT_EQ(c.get_duration("CONVEYOR_POLL"), std::chrono::seconds(5));
  EXPECT_TRUE(c.get_bool("CONVEYOR_DRY_RUN"));
  EXPECT_EQ(c.get_string("CONVEYOR_SINK_URL"), "http://sink:9000/hook");
  EXPECT_EQ(c.get_int("CONVEYOR_HTTP_PORT"), 8181);

  env["CONVEYOR_POLL"] = "5 parsecs";
  env["CONVEYOR_DRY_RUN"] = "maybe";
  env["CONVEYOR_SINK_URL"] = "sink:9000";
  const std::string message = load_error(schema, {}, env);
  EXPECT_THAT(message, HasSubstr("CONVEYOR_POLL (from environment): expected a duration"));
  EXPECT_THAT(message, HasSubstr("CONVEYOR_DRY_RUN (from environment): expected true or false"));
  EXPECT_THAT(message, HasSubstr("CONVEYOR_SINK_URL (from environment): expected a URL"));
}

// ---------------------------------------------------------------- <KEY>_FILE

TEST_F(ConfigTest, SecretKeyIsReadFromTheFileItsFileKeyNames) {
  const auto secret = write("db-url", "postgresql://svc:s3cret@db.example/conveyor\n");
  const std::map<std::string, std::string> env{{"CONVEYOR_DATABASE_URL_FILE", secret.string()}};
  const Config c = load(core_schema(), {}, env);
  EXPECT_EQ(c.get_string("CONVEYOR_DATABASE_URL"), "postgresql://svc:s3cret@db.example/conveyor");
  EXPECT_EQ(c.source("CONVEYOR_DATABASE_URL").kind, Source::Kind::secret_file);
  EXPECT_EQ(c.source("CONVEYOR_DATABASE_URL").file, secret);
  const std::string from = "file " + secret.string() + " (CONVEYOR_DATABASE_URL_FILE from environment)";
  EXPECT_EQ(c.source("CONVEYOR_DATABASE_URL").to_string(), from);
  std::map<std::string, std::pair<std::string, std::string>> rows;
  for (const auto& [key, value, source] : c.show()) rows[key] = {value, source};
  EXPECT_EQ(rows["CONVEYOR_DATABASE_URL"].first, "postgresql://svc:****@db.example/conveyor");
  EXPECT_EQ(rows["CONVEYOR_DATABASE_URL"].second, from);
  EXPECT_EQ(rows.count("CONVEYOR_DATABASE_URL_FILE"), 0u);  // not a key of its own
  EXPECT_TRUE(c.warnings().empty());
}

TEST_F(ConfigTest, SecretFileStripsOnlyTrailingNewlines) {
  Schema schema = core_schema();
  schema.add({.name = "CONVEYOR_WEBHOOK_TOKEN", .default_value = "", .secret = true});
  const auto token = write("token", " tok en \r\n\n");
  auto env = db_env_;
  env["CONVEYOR_WEBHOOK_TOKEN_FILE"] = token.string();
  EXPECT_EQ(load(schema, {}, env).get_string("CONVEYOR_WEBHOOK_TOKEN"), " tok en ");
}

TEST_F(ConfigTest, EnvFileNamesASecretFileRelativeToItself) {
  std::filesystem::create_directories(dir_ / "secrets");
  write("secrets/db-url", "postgresql://svc@db/conveyor");
  const auto f = write("04_local.env", "# secrets beside this file\nCONVEYOR_DATABASE_URL_FILE=secrets/db-url\n");
  const Config c = load(core_schema(), {f}, {});
  EXPECT_EQ(c.get_string("CONVEYOR_DATABASE_URL"), "postgresql://svc@db/conveyor");
  EXPECT_EQ(c.source("CONVEYOR_DATABASE_URL").to_string(),
            "file " + (dir_ / "secrets/db-url").string() + " (CONVEYOR_DATABASE_URL_FILE from " + f.string() + ":2)");
}

TEST_F(ConfigTest, KeyAndItsFileKeyInOneLayerAreAnError) {
  const auto secret = write("db-url", "postgresql://svc@db/conveyor\n");
  std::map<std::string, std::string> env{{"CONVEYOR_DATABASE_URL", "postgresql://other@db/conveyor"},
                                         {"CONVEYOR_DATABASE_URL_FILE", secret.string()}};
  EXPECT_THAT(load_error(core_schema(), {}, env),
              HasSubstr("CONVEYOR_DATABASE_URL (from environment) and CONVEYOR_DATABASE_URL_FILE (from "
                        "environment) are both set: set one"));

  const auto f = write(
      "both.env", "CONVEYOR_DATABASE_URL=postgresql://a@db/x\nCONVEYOR_DATABASE_URL_FILE=" + secret.string() + "\n");
  EXPECT_THAT(load_error(core_schema(), {f}, {}),
              HasSubstr("CONVEYOR_DATABASE_URL (from " + f.string() + ":1) and CONVEYOR_DATABASE_URL_FILE (from " +
                        f.string() + ":2) are both set: set one"));
}

TEST_F(ConfigTest, AcrossLayersTheHigherLayerWinsInEitherForm) {
  const auto secret = write("db-url", "postgresql://from-file@db/conveyor\n");
  const auto by_value = write("1.env", "CONVEYOR_DATABASE_URL=postgresql://env-file@db/conveyor\n");
  const auto by_file = write("2.env", "CONVEYOR_DATABASE_URL_FILE=" + secret.string() + "\n");
  // The environment's file beats an env file's value...
  Config c = load(core_schema(), {by_value}, {{"CONVEYOR_DATABASE_URL_FILE", secret.string()}});
  EXPECT_EQ(c.get_string("CONVEYOR_DATABASE_URL"), "postgresql://from-file@db/conveyor");
  // ...the environment's value beats an env file's file...
  c = load(core_schema(), {by_file}, {{"CONVEYOR_DATABASE_URL", "postgresql://env@db/conveyor"}});
  EXPECT_EQ(c.get_string("CONVEYOR_DATABASE_URL"), "postgresql://env@db/conveyor");
  EXPECT_EQ(c.source("CONVEYOR_DATABASE_URL").to_string(), "environment");
  // ...and a later env file beats an earlier one.
  c = load(core_schema(), {by_value, by_file}, {});
  EXPECT_EQ(c.get_string("CONVEYOR_DATABASE_URL"), "postgresql://from-file@db/conveyor");
  c = load(core_schema(), {by_file, by_value}, {});
  EXPECT_EQ(c.get_string("CONVEYOR_DATABASE_URL"), "postgresql://env-file@db/conveyor");
}

TEST_F(ConfigTest, UnreadableSecretFileNamesKeyAndPathNeverContent) {
  const auto missing = dir_ / "nope";
  std::string message = load_error(core_schema(), {}, {{"CONVEYOR_DATABASE_URL_FILE", missing.string()}});
  EXPECT_THAT(message, HasSubstr("CONVEYOR_DATABASE_URL_FILE (from environment): cannot read " + missing.string()));
  EXPECT_THAT(message, Not(HasSubstr("required but not set")));  // one problem, not two

  message = load_error(core_schema(), {}, {{"CONVEYOR_DATABASE_URL_FILE", dir_.string()}});
  EXPECT_THAT(message, HasSubstr("cannot read " + dir_.string() + ": not a regular file"));

  const auto empty = write("empty", "\n");
  message = load_error(core_schema(), {}, {{"CONVEYOR_DATABASE_URL_FILE", empty.string()}});
  EXPECT_THAT(message, HasSubstr("cannot read " + empty.string() + ": the file is empty"));

  // A value from a file that fails validation is not echoed either.
  Schema schema = core_schema();
  schema.add({.name = "CONVEYOR_PIN", .type = Type::integer, .default_value = "0", .secret = true});
  const auto pin = write("pin", "hunter2\n");
  auto env = db_env_;
  env["CONVEYOR_PIN_FILE"] = pin.string();
  message = load_error(schema, {}, env);
  EXPECT_THAT(message, HasSubstr("CONVEYOR_PIN (from file " + pin.string() +
                                 " (CONVEYOR_PIN_FILE from environment)): expected an integer"));
  EXPECT_THAT(message, Not(HasSubstr("hunter2")));
}

TEST_F(ConfigTest, OnlySecretKeysAreReadFromFiles) {
  const auto port = write("port", "9000\n");
  auto env = db_env_;
  env["CONVEYOR_HTTP_PORT_FILE"] = port.string();
  const Config c = load(core_schema(), {}, env);
  EXPECT_EQ(c.get_int("CONVEYOR_HTTP_PORT"), 0);
  ASSERT_EQ(c.warnings().size(), 1u);
  EXPECT_THAT(c.warnings()[0], HasSubstr("CONVEYOR_HTTP_PORT_FILE (from environment): unknown key, ignored; "
                                         "CONVEYOR_HTTP_PORT is not a secret"));

  const auto f = write("port.env", "CONVEYOR_HTTP_PORT_FILE=" + port.string() + "\n");
  EXPECT_THAT(load_error(core_schema(), {f}, db_env_), HasSubstr("CONVEYOR_HTTP_PORT_FILE (from " + f.string() +
                                                                 ":1): unknown key; CONVEYOR_HTTP_PORT is "
                                                                 "not a secret"));
  // A typo of a file key is still suggested.
  env = db_env_;
  env["CONVEYOR_DATABASE_URL_FIEL"] = port.string();
  const Config typo = load(core_schema(), {}, env);
  ASSERT_EQ(typo.warnings().size(), 1u);
  EXPECT_THAT(typo.warnings()[0], HasSubstr("did you mean CONVEYOR_DATABASE_URL_FILE?"));
}

TEST_F(ConfigTest, ASchemasOwnFileKeyStaysAnOrdinaryKey) {
  // e.g. the worker pool's CONVEYOR_WORKERPOOL_NOMAD_TOKEN_FILE, re-read at every call.
  Schema schema = core_schema();
  schema.add({.name = "CONVEYOR_TOKEN", .default_value = "", .secret = true})
      .add({.name = "CONVEYOR_TOKEN_FILE", .default_value = ""});
  auto env = db_env_;
  env["CONVEYOR_TOKEN_FILE"] = (dir_ / "not-read").string();
  const Config c = load(schema, {}, env);
  EXPECT_EQ(c.get_string("CONVEYOR_TOKEN"), "");
  EXPECT_EQ(c.get_string("CONVEYOR_TOKEN_FILE"), (dir_ / "not-read").string());
}

TEST_F(ConfigTest, AccessorsRejectKeysOutsideTheSchema) {
  const Config c = load(core_schema(), {}, db_env_);
  EXPECT_THROW(c.get_string("CONVEYOR_NOPE"), Error);
  EXPECT_THROW(c.get_bool("CONVEYOR_HTTP_PORT"), Error);
}

TEST(EnvFileArgs, SplitsRepeatedFlags) {
  const char* argv[] = {"conveyor", "--env-file", "/a.env",     "job", "--env-file=/b.env",
                        "ls",       "--",         "--env-file", "kept"};
  const EnvFileArgs parsed = split_env_file_args(9, argv);
  ASSERT_EQ(parsed.env_files.size(), 2u);
  EXPECT_EQ(parsed.env_files[0], "/a.env");
  EXPECT_EQ(parsed.env_files[1], "/b.env");
  EXPECT_EQ(parsed.args, (std::vector<std::string>{"conveyor", "job", "ls", "--", "--env-file", "kept"}));
  EXPECT_THROW(split_env_file_args(std::vector<std::string>{"--env-file"}), Error);
}

TEST(ClosestMatch, SuggestsOnlyPlausibleTypos) {
  const std::vector<std::string> keys{"CONVEYOR_HTTP_PORT", "CONVEYOR_HTTP_HOST"};
  EXPECT_EQ(closest_match("CONVEYOR_HTTP_POTR", keys), "CONVEYOR_HTTP_PORT");
  EXPECT_EQ(closest_match("CONVEYOR_SOMETHING_ELSE_ENTIRELY", keys), "");
}

TEST(ProcessEnvironment, ReadsTheRealEnvironment) {
  ::setenv("CONVEYOR_CONFIG_TEST_MARKER", "present", 1);
  const auto env = process_environment();
  ASSERT_TRUE(env.count("CONVEYOR_CONFIG_TEST_MARKER"));
  EXPECT_EQ(env.at("CONVEYOR_CONFIG_TEST_MARKER"), "present");
  ::unsetenv("CONVEYOR_CONFIG_TEST_MARKER");
}

TEST(RedactUrl, MasksPasswordsOnly) {
  EXPECT_EQ(logging::redact_url("postgresql://user:pw@host/db"), "postgresql://user:****@host/db");
  EXPECT_EQ(logging::redact_url("http://host:8080/path@x"), "http://host:8080/path@x");
  EXPECT_EQ(logging::redact_url("password='a b\\'c' host=x"), "password=**** host=x");
  EXPECT_EQ(logging::redact_url("no secrets here"), "no secrets here");
}

}  // namespace
}  // namespace conveyor::config
