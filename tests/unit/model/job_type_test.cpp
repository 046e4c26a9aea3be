// Job types as data: strict parsing, the params schema subset, argv rendering.
#include "conveyor/model/job_type.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "conveyor/error/error.hpp"

namespace {

using conveyor::errc;
using conveyor::Error;
using conveyor::model::ArgvContext;
using conveyor::model::parse_job_type;
using conveyor::model::parse_job_types_file;
using conveyor::model::render_argv;
using conveyor::model::validate_params;
using nlohmann::json;

json minimal() { return {{"name", "tool"}, {"command", {"tool", "--tile", "{tile}"}}}; }

// The message of the bad_input Error parse_job_type throws for `j`.
std::string parse_error(const json& j) {
  try {
    parse_job_type(j);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), errc::bad_input) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error for " << j.dump();
  return "";
}

TEST(JobTypeParse, MinimalTypeGetsDefaults) {
  const auto t = parse_job_type(minimal());
  EXPECT_EQ(t.name, "tool");
  EXPECT_TRUE(t.enabled);
  EXPECT_EQ(t.command, (std::vector<std::string>{"tool", "--tile", "{tile}"}));
  EXPECT_EQ(t.timeout_s, 3600);
  EXPECT_EQ(t.max_attempts, 1);
  EXPECT_EQ(t.pool, "default");
  EXPECT_FALSE(t.concurrency_limit);
  EXPECT_TRUE(t.sinks.empty());
}

TEST(JobTypeParse, ToJsonRoundTrips) {
  json j = minimal();
  j["concurrency_limit"] = 2;
  j["env"] = {{"GDAL_CACHEMAX", "512"}};
  j["sinks"] = json::array({{{"kind", "kafka"}, {"topic", "products"}}, {{"kind", "webhook"}}});
  j["schedule"] = "*/5 * * * *";
  const auto t = parse_job_type(j);
  const auto again = parse_job_type(t.to_json());
  EXPECT_EQ(again.to_json(), t.to_json());
  EXPECT_EQ(again.sinks.at(0).settings.at("topic"), "products");
  EXPECT_EQ(again.env.at("GDAL_CACHEMAX"), "512");
}

TEST(JobTypeParse, ErrorsNameTheTypeAndTheField) {
  json j = minimal();
  j["timeout_s"] = 0;
  auto msg = parse_error(j);
  EXPECT_NE(msg.find("job type 'tool'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("timeout_s"), std::string::npos) << msg;

  j = minimal();
  j["max_attempts"] = "3";
  EXPECT_NE(parse_error(j).find("max_attempts"), std::string::npos);

  j = minimal();
  j["name"] = "Bad Name";
  EXPECT_NE(parse_error(j).find("name"), std::string::npos);

  j = minimal();
  j["catchup_policy"] = "sometimes";
  EXPECT_NE(parse_error(j).find("catchup_policy"), std::string::npos);

  j = minimal();
  j["schedule"] = "every hour";
  EXPECT_NE(parse_error(j).find("schedule"), std::string::npos);

  j = minimal();
  j["env"] = {{"A", 1}};
  EXPECT_NE(parse_error(j).find("env.A"), std::string::npos);

  // The worker's database settings and Conveyor's own never reach a job (issue 12).
  for (const char* reserved : {"PGPASSWORD", "PGHOST", "CONVEYOR_DATABASE_URL", "CONVEYOR_JOB_ID"}) {
    j = minimal();
    j["env"] = {{reserved, "x"}};
    EXPECT_NE(parse_error(j).find(std::string("env.") + reserved + ": is reserved"), std::string::npos) << reserved;
  }

  j = minimal();
  j.erase("command");
  EXPECT_NE(parse_error(j).find("command"), std::string::npos);
}

TEST(JobTypeParse, AContainerTypeHasResourcesAndANetworkSwitch) {
  json j = minimal();
  j["image"] = "registry.example:5000/tools/tile:1.0";
  j["resources"] = {{"cpus", 1.5}, {"memory_mb", 512}};
  j["network"] = true;
  const auto t = parse_job_type(j);
  EXPECT_EQ(t.resources.cpus, 1.5);
  EXPECT_EQ(t.resources.memory_mb, 512);
  EXPECT_TRUE(t.network);
  EXPECT_EQ(parse_job_type(t.to_json()).to_json(), t.to_json());
  // Without command, the image's own entrypoint runs.
  json bare = {{"name", "bare"}, {"image", "tool:1"}};
  EXPECT_TRUE(parse_job_type(bare).command.empty());
  EXPECT_FALSE(parse_job_type(bare).network);
  EXPECT_TRUE(parse_job_type(bare).resources.empty());
}

TEST(JobTypeParse, ContainerFieldsAreRefusedWhereTheyMeanNothingOrAreUnsafe) {
  json j = minimal();
  j["resources"] = {{"memory_mb", 512}};
  EXPECT_NE(parse_error(j).find("resources: limits apply to container jobs only"), std::string::npos);
  j = minimal();
  j["network"] = true;
  EXPECT_NE(parse_error(j).find("network: applies to container jobs only"), std::string::npos);
  j = minimal();
  j["image"] = "tool:1";
  j["resources"] = {{"memory", 512}};
  EXPECT_NE(parse_error(j).find("resources.memory: unknown field"), std::string::npos);
  j["resources"] = {{"cpus", 0}};
  EXPECT_NE(parse_error(j).find("resources.cpus"), std::string::npos);
  j["resources"] = {{"memory_mb", 2}};
  EXPECT_NE(parse_error(j).find("resources.memory_mb"), std::string::npos);
  // An image is an argument of `podman run`, never an option.
  j = minimal();
  j["image"] = "--privileged";
  EXPECT_NE(parse_error(j).find("image: must be an image reference"), std::string::npos);
  j["image"] = "tool:1 --privileged";
  EXPECT_NE(parse_error(j).find("image"), std::string::npos);
}

TEST(JobTypeParse, OutputDirPlaceholderIsTheMountPointForContainerJobs) {
  EXPECT_EQ(conveyor::model::argv_output_dir("", "/data/outputs/job-1/"), "/data/outputs/job-1/");
  EXPECT_EQ(conveyor::model::argv_output_dir("tool:1", "/data/outputs/job-1/"), "/conveyor/output/");
}

TEST(JobTypeParse, UnknownFieldIsAnErrorWithASuggestion) {
  json j = minimal();
  j["timout_s"] = 10;
  const auto msg = parse_error(j);
  EXPECT_NE(msg.find("timout_s: unknown field"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'timeout_s'"), std::string::npos) << msg;
}

TEST(JobTypeParse, SinksAreValidatedPerKind) {
  json j = minimal();
  j["sinks"] = json::array({{{"kind", "kafka"}}});
  EXPECT_NE(parse_error(j).find("sinks[0].topic"), std::string::npos);

  j["sinks"] = json::array({{{"kind", "file"}}});
  EXPECT_NE(parse_error(j).find("sinks[0].dir"), std::string::npos);

  j["sinks"] = json::array({{{"kind", "file"}, {"dir", "{data_dir}/catalog"}}});
  EXPECT_NE(parse_error(j).find("placeholders"), std::string::npos);

  j["sinks"] = json::array({{{"kind", "ftp"}}});
  EXPECT_NE(parse_error(j).find("sinks[0].kind"), std::string::npos);

  j["sinks"] = json::array({{{"kind", "webhook"}, {"url", "ftp://x"}}});
  EXPECT_NE(parse_error(j).find("sinks[0].url"), std::string::npos);

  j["sinks"] = json::array({{{"kind", "webhook"}, {"topic", "x"}}});
  EXPECT_NE(parse_error(j).find("unknown field 'topic'"), std::string::npos);

  // A webhook without url uses publication_endpoint_url.
  j["sinks"] = json::array({{{"kind", "webhook"}}, {{"kind", "file"}, {"dir", "catalog"}}});
  const auto t = parse_job_type(j);
  ASSERT_EQ(t.sinks.size(), 2u);
  EXPECT_EQ(t.sinks[0].kind, "webhook");
  EXPECT_FALSE(t.sinks[0].settings.contains("url"));
  EXPECT_EQ(t.sinks[1].settings.at("dir"), "catalog");
}

TEST(JobTypeParse, CommandPlaceholdersMustBeDeclared) {
  json j = minimal();
  j["params_schema"] = {{"type", "object"}, {"properties", {{"tile", {{"type", "string"}}}}}};
  EXPECT_NO_THROW(parse_job_type(j));
  j["command"] = {"tool", "--tile", "{tlie}"};
  const auto msg = parse_error(j);
  EXPECT_NE(msg.find("command[2]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("{tlie}"), std::string::npos) << msg;

  j["command"] = {"tool", "{unclosed"};
  EXPECT_NE(parse_error(j).find("command[1]"), std::string::npos);
}

TEST(JobTypeParse, ParamsSchemaIsChecked) {
  json j = minimal();
  j["params_schema"] = {{"properties", {{"tile", {{"type", "text"}}}}}};
  EXPECT_NE(parse_error(j).find("params_schema.properties.tile.type"), std::string::npos);
  j["params_schema"] = {{"properties", {{"tile", {{"type", "string"}, {"patern", "x"}}}}}};
  EXPECT_NE(parse_error(j).find("unsupported keyword 'patern' (did you mean 'pattern'?)"), std::string::npos);
  j["params_schema"] = {{"properties", {{"tile", {{"type", "string"}}}}}, {"required", {"date"}}};
  EXPECT_NE(parse_error(j).find("params_schema.required"), std::string::npos);
  j["params_schema"] = {{"properties", {{"job_id", {{"type", "string"}}}}}};
  EXPECT_NE(parse_error(j).find("built-in"), std::string::npos);
}

TEST(JobTypeFile, NamesMustBeUniqueAndItemsNamed) {
  json one = minimal();
  EXPECT_THROW(parse_job_types_file({{"job_types", {one, one}}}), Error);
  EXPECT_EQ(parse_job_types_file(json::array({one})).size(), 1u);
  try {
    parse_job_types_file({{"job_types", {one, {{"command", {"x"}}}}}});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("job_types[1]: name"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_job_types_file({{"jobtypes", {one}}}), Error);
}

TEST(JobTypeFile, ShippedExampleFileParses) {
  std::ifstream in(CONVEYOR_JOB_TYPES_FILE);
  ASSERT_TRUE(in) << CONVEYOR_JOB_TYPES_FILE;
  std::stringstream ss;
  ss << in.rdbuf();
  const auto types = parse_job_types_file(json::parse(ss.str()));
  std::map<std::string, conveyor::model::JobType> by_name;
  for (const auto& t : types) by_name[t.name] = t;
  for (const char* n : {"sleep", "fail", "flaky", "fsc-rlie", "sws-wds", "gfsc"}) {
    EXPECT_TRUE(by_name.count(n)) << n;
  }
  EXPECT_EQ(by_name["flaky"].max_attempts, 2);
  EXPECT_EQ(by_name["sleep-resident"].runner, "resident");
  EXPECT_LE(by_name["flaky"].retry_backoff_s, 1);
  EXPECT_TRUE(validate_params(by_name["sleep"].params_schema, {{"seconds", 0.5}}).empty());
  EXPECT_FALSE(validate_params(by_name["sleep"].params_schema, json::object()).empty());
  // The dependent products take the upstream outputs.
  for (const char* n : {"sws-wds", "gfsc"}) {
    const auto& cmd = by_name[n].command;
    EXPECT_NE(std::find(cmd.begin(), cmd.end(), "{inputs}"), cmd.end()) << n;
  }
  for (const auto& t : types) {
    for (const auto& s : t.sinks) {
      if (s.kind == "file") {
        EXPECT_EQ(s.settings.at("dir"), "catalog") << t.name;
      }
    }
  }
}

TEST(JobTypeParse, FullJsonSchemaBelowEachParameterIsCheckedWhenApplied) {
  json j = minimal();
  j["params_schema"] = {{"properties", {{"tile", {{"type", "string"}, {"pattern", "([a-z]"}}}}}};
  EXPECT_NE(parse_error(j).find("params_schema.properties.tile.pattern: not a valid regular expression"),
            std::string::npos);
  j["params_schema"] = {{"properties", {{"tile", {{"type", "string"}, {"pattern", std::string(300, 'a')}}}}}};
  EXPECT_NE(parse_error(j).find("params_schema.properties.tile.pattern: at most 256 characters"), std::string::npos);
  j["params_schema"] = {{"properties", {{"tile", {{"type", "string"}, {"format", "email"}}}}}};
  EXPECT_NE(parse_error(j).find("params_schema.properties.tile.format: must be one of date"), std::string::npos);
  j["params_schema"] = {
      {"properties", {{"tile", {{"type", "object"}, {"properties", {{"x", {{"type", "integer"}, {"maxium", 3}}}}}}}}}};
  EXPECT_NE(parse_error(j).find("params_schema.properties.tile.properties.x: unsupported keyword 'maxium'"),
            std::string::npos);
  j["params_schema"] = {{"properties", {{"tile", {{"type", "string"}, {"default", 5}}}}}};
  EXPECT_NE(parse_error(j).find("params_schema.properties.tile.default: params.tile:"), std::string::npos);
}

// ------------------------------------------------------------ validate_params

const json kSchema = {{"type", "object"},
                      {"properties",
                       {{"seconds", {{"type", "number"}, {"minimum", 0}, {"maximum", 3600}}},
                        {"count", {{"type", "integer"}}},
                        {"tile", {{"type", "string"}, {"minLength", 5}, {"maxLength", 5}}},
                        {"mode", {{"type", "string"}, {"enum", {"fast", "slow"}}}},
                        {"dry", {{"type", "boolean"}}},
                        {"list", {{"type", "array"}}}}},
                      {"required", {"seconds"}},
                      {"additionalProperties", false}};

bool has_problem(const std::vector<std::string>& problems, const std::string& text) {
  for (const auto& p : problems) {
    if (p.find(text) != std::string::npos) return true;
  }
  return false;
}

TEST(ValidateParams, AcceptsValidParams) {
  EXPECT_TRUE(validate_params(kSchema, {{"seconds", 1.5}}).empty());
  EXPECT_TRUE(
      validate_params(
          kSchema,
          {{"seconds", 3600}, {"count", 2}, {"tile", "32TLR"}, {"mode", "fast"}, {"dry", true}, {"list", {1, 2}}})
          .empty());
  EXPECT_TRUE(validate_params(kSchema, {{"seconds", 1}, {"count", 2.0}}).empty());  // 2.0 is an integer
  EXPECT_TRUE(validate_params(json::object(), {{"anything", 1}}).empty());          // no schema
}

TEST(ValidateParams, ReportsEachProblemNamingTheParameter) {
  EXPECT_TRUE(has_problem(validate_params(kSchema, json::object()), "params.seconds: required"));
  EXPECT_TRUE(has_problem(validate_params(kSchema, {{"seconds", "5"}}), "params.seconds: expected a number"));
  EXPECT_TRUE(has_problem(validate_params(kSchema, {{"seconds", -1}}), "params.seconds: must be >= 0"));
  EXPECT_TRUE(has_problem(validate_params(kSchema, {{"seconds", 5000}}), "params.seconds: must be <= 3600"));
  EXPECT_TRUE(
      has_problem(validate_params(kSchema, {{"seconds", 1}, {"count", 1.5}}), "params.count: expected an integer"));
  EXPECT_TRUE(
      has_problem(validate_params(kSchema, {{"seconds", 1}, {"tile", "32T"}}), "params.tile: must be at least"));
  EXPECT_TRUE(
      has_problem(validate_params(kSchema, {{"seconds", 1}, {"mode", "medium"}}), "params.mode: must be one of"));
  EXPECT_TRUE(
      has_problem(validate_params(kSchema, {{"seconds", 1}, {"dry", "yes"}}), "params.dry: expected a boolean"));
  EXPECT_TRUE(has_problem(validate_params(kSchema, {{"seconds", 1}, {"secs", 1}}), "params.secs: unknown parameter"));
  EXPECT_TRUE(has_problem(validate_params(kSchema, json::array()), "params: expected an object"));
  const auto many = validate_params(kSchema, {{"count", "x"}, {"extra", 1}});
  EXPECT_EQ(many.size(), 3u);
}

// Issue 13 (12e): these keywords were refused by the hand-written subset; the
// schema is now JSON Schema (draft 7, valijson) below each parameter.
TEST(ValidateParams, PatternItemsFormatAndNestedObjectsAreEnforced) {
  json j = minimal();
  j["params_schema"] = {
      {"type", "object"},
      {"properties",
       {{"tile", {{"type", "string"}, {"pattern", "^[0-9]{2}[A-Z]{3}$"}, {"default", "32TLR"}}},
        {"dates", {{"type", "array"}, {"items", {{"type", "string"}, {"format", "date"}}}, {"minItems", 1}}},
        {"area",
         {{"type", "object"},
          {"properties",
           {{"west", {{"type", "number"}, {"minimum", -180}}},
            {"corners", {{"type", "array"}, {"items", {{"type", "integer"}}}}}}},
          {"required", {"west"}},
          {"additionalProperties", false}}}}},
      {"required", {"tile"}}};
  const json schema = parse_job_type(j).params_schema;  // accepted now

  EXPECT_TRUE(validate_params(schema, {{"tile", "32TLR"},
                                       {"dates", {"2026-11-30", "2026-12-01"}},
                                       {"area", {{"west", 5.5}, {"corners", {1, 2.0}}}}})
                  .empty());
  EXPECT_TRUE(has_problem(validate_params(schema, {{"tile", "32tlr"}}), "params.tile: failed to match regex"));
  EXPECT_TRUE(has_problem(validate_params(schema, {{"tile", "32TLR"}, {"dates", {"2026-11-30", "yesterday"}}}),
                          "params.dates[1]: string should be a valid date"));
  EXPECT_TRUE(has_problem(validate_params(schema, {{"tile", "32TLR"}, {"dates", {"2026-13-01"}}}), "params.dates[0]"));
  EXPECT_TRUE(has_problem(validate_params(schema, {{"tile", "32TLR"}, {"dates", {3}}}), "params.dates[0]"));
  EXPECT_TRUE(has_problem(validate_params(schema, {{"tile", "32TLR"}, {"dates", json::array()}}), "params.dates:"));
  EXPECT_TRUE(
      has_problem(validate_params(schema, {{"tile", "32TLR"}, {"area", {{"west", -200}}}}), "params.area.west:"));
  EXPECT_TRUE(has_problem(validate_params(schema, {{"tile", "32TLR"}, {"area", {{"corners", {1}}}}}),
                          "params.area:"));  // west is required
  EXPECT_TRUE(
      has_problem(validate_params(schema, {{"tile", "32TLR"}, {"area", {{"west", 1}, {"corners", {1, "two"}}}}}),
                  "params.area.corners[1]:"));
  EXPECT_TRUE(has_problem(validate_params(schema, {{"tile", "32TLR"}, {"area", {{"west", 1}, {"north", 2}}}}),
                          "params.area:"));  // additionalProperties false
  // The project's own messages are unchanged and not repeated by the validator.
  const auto own = validate_params(schema, {{"tile", 5}});
  ASSERT_EQ(own.size(), 1u) << own.front();
  EXPECT_EQ(own.front(), "params.tile: expected a string");
}

// std::regex recurses once per character of the value: before this check a
// 200,000-character tile (or date) crashed the process that validated it, so
// one submitted job could take conveyor-creation down.
TEST(ValidateParams, AValueTooLongForARegexIsRefusedNotMatched) {
  json j = minimal();
  j["params_schema"] = {{"type", "object"},
                        {"properties",
                         {{"tile", {{"type", "string"}, {"pattern", "^[a-z]+$"}}},
                          {"dates", {{"type", "array"}, {"items", {{"type", "string"}, {"format", "date"}}}}},
                          {"note", {{"type", "string"}}}}}};
  const json schema = parse_job_type(j).params_schema;
  const std::string huge(200000, 'a');
  const std::string digits(200000, '1');

  auto problems = validate_params(schema, {{"tile", huge}});
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems.front(), "params.tile: longer than 4096 bytes, the most a pattern or format is checked on");
  EXPECT_TRUE(has_problem(validate_params(schema, {{"dates", {"2026-12-03", digits}}}),
                          "params.dates[1]: longer than 4096 bytes"));
  EXPECT_TRUE(has_problem(validate_params(schema, {{"tile", "abc"}, {"note", {{std::string(5000, 'k'), 1}}}}),
                          "params.note"));  // a non-string note is refused either way
  // Within the bound, the pattern is applied; a long value a regex never reads is fine.
  EXPECT_TRUE(validate_params(schema, {{"tile", std::string(4096, 'a')}}).empty());
  EXPECT_TRUE(validate_params(schema, {{"tile", "abc"}, {"note", huge}}).empty());

  // A schema that reads nothing with a regex takes any length.
  json plain = minimal();
  plain["params_schema"] = {{"type", "object"},
                            {"properties", {{"tile", {{"type", "string"}}}, {"note", {{"type", "string"}}}}}};
  EXPECT_TRUE(validate_params(parse_job_type(plain).params_schema, {{"tile", huge}, {"note", huge}}).empty());
}

// ------------------------------------------------------------ render_argv

TEST(RenderArgv, KeepsAValueWithSpacesAndShellCharactersAsOneArgument) {
  ArgvContext ctx;
  ctx.params = {{"name", "a b; rm -rf /"}};
  const auto argv = render_argv({"tool", "--name", "{name}"}, ctx);
  ASSERT_EQ(argv.size(), 3u);
  EXPECT_EQ(argv[2], "a b; rm -rf /");
}

TEST(RenderArgv, ExpandsBuiltinsAndInputs) {
  ArgvContext ctx;
  ctx.job_id = 42;
  ctx.attempt = 1;
  ctx.output_dir = "/data/outputs/job-42/";
  ctx.inputs = {"/in/a.json", "/in/b c.json"};
  const auto argv =
      render_argv({"tool", "--job={job_id}", "{attempt}", "--out", "{output_dir}", "{inputs}", "end"}, ctx);
  EXPECT_EQ(argv, (std::vector<std::string>{"tool", "--job=42", "1", "--out", "/data/outputs/job-42/", "/in/a.json",
                                            "/in/b c.json", "end"}));
  ctx.inputs.clear();
  EXPECT_EQ(render_argv({"tool", "{inputs}"}, ctx), (std::vector<std::string>{"tool"}));
}

TEST(RenderArgv, RendersValuesByType) {
  ArgvContext ctx;
  ctx.params = {{"n", 3}, {"x", 2.5}, {"b", false}, {"s", "text"}, {"a", {1, "two"}}, {"o", {{"k", 1}}}};
  EXPECT_EQ(render_argv({"{n}", "{x}", "{b}", "{s}", "{a}", "{o}", "n={n},s={s}"}, ctx),
            (std::vector<std::string>{"3", "2.5", "false", "text", R"([1,"two"])", R"({"k":1})", "n=3,s=text"}));
}

TEST(RenderArgv, DoubledBracesAreLiteral) {
  ArgvContext ctx;
  ctx.params = {{"v", 1}};
  EXPECT_EQ(render_argv({"{{\"v\": {v}}}"}, ctx), (std::vector<std::string>{"{\"v\": 1}"}));
  EXPECT_EQ(render_argv({"{{v}}"}, ctx), (std::vector<std::string>{"{v}"}));
}

TEST(RenderArgv, MissingParameterIsBadInputNamingIt) {
  ArgvContext ctx;
  ctx.params = {{"tile", "32TLR"}};
  try {
    render_argv({"tool", "--date", "{date}"}, ctx);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), errc::bad_input);
    EXPECT_NE(std::string(e.what()).find("{date}"), std::string::npos) << e.what();
  }
  EXPECT_THROW(render_argv({"{tile"}, ctx), Error);
  EXPECT_THROW(render_argv({"tile}"}, ctx), Error);
}

}  // namespace

TEST(JobTypeParse, ARunnerIsProcessOrResidentAndAResidentCommandHasNoPerJobPlaceholder) {
  EXPECT_EQ(parse_job_type(minimal()).runner, "process");
  json j = {{"name", "warm"}, {"command", {"tool", "--serve"}}, {"runner", "resident"}};
  const auto t = parse_job_type(j);
  EXPECT_EQ(t.runner, "resident");
  EXPECT_EQ(parse_job_type(t.to_json()).to_json(), t.to_json());
  j["runner"] = "daemon";
  EXPECT_NE(parse_error(j).find("job type 'warm': runner: must be \"process\""), std::string::npos) << parse_error(j);
  j["runner"] = "resident";
  j["command"] = {"tool", "--tile", "{job_id}"};
  EXPECT_NE(parse_error(j).find("command[2]: placeholder {job_id}: a resident type's command is "
                                "started once for many jobs"),
            std::string::npos)
      << parse_error(j);
  j["command"] = {"tool"};
  j["image"] = "tool:1";
  EXPECT_NE(parse_error(j).find("runner: \"resident\" runs a process on the worker"), std::string::npos)
      << parse_error(j);
}
