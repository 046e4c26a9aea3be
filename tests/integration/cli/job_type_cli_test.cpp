// `conveyor job-type apply|list` against a migrated database, run as a real
// process; and the example task behind the shipped job types.
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "conveyor/model/job_type.hpp"
#include "conveyor/testing/testing.hpp"

namespace {

namespace fs = std::filesystem;
using conveyor::testing::RunResult;
using conveyor::testing::TestDatabase;
using nlohmann::json;

bool has(const RunResult& r, const std::string& text) { return r.output.find(text) != std::string::npos; }

// A scratch directory per test.
class WithDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / conveyor::testing::unique_name("job-type-cli");
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  fs::path dir_;
};

class JobTypeCli : public WithDir {
 protected:
  RunResult conveyor(const std::vector<std::string>& args) {
    std::vector<std::string> argv{CONVEYOR_CLI_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    return conveyor::testing::run(argv, {{"CONVEYOR_DATABASE_URL", db_.url()}});
  }
  std::string write(const std::string& name, const json& content) {
    const auto path = dir_ / name;
    std::ofstream(path) << content.dump(2);
    return path.string();
  }
  int count_types() { return std::stoi(db_.query_value("SELECT count(*) FROM conveyor.job_type")); }

  static json two_types() {
    return {{"job_types",
             {{{"name", "alpha"},
               {"command", {"echo", "{word}"}},
               {"timeout_s", 60},
               {"params_schema", {{"type", "object"}, {"properties", {{"word", {{"type", "string"}}}}}}},
               {"env", {{"LANG", "C"}}},
               {"sinks", {{{"kind", "file"}, {"dir", "catalog"}}}}},
              {{"name", "beta"}, {"command", {"true"}}, {"max_attempts", 3}}}}};
  }

  TestDatabase db_;
};

TEST_F(JobTypeCli, ApplyYesStoresTheTypesAndListShowsThem) {
  const auto file = write("types.json", two_types());
  auto r = conveyor({"job-type", "apply", file, "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "+ alpha (added)")) << r.output;
  EXPECT_TRUE(has(r, "+ beta (added)")) << r.output;
  EXPECT_TRUE(has(r, "applied 2 change(s)")) << r.output;
  EXPECT_EQ(count_types(), 2);
  EXPECT_EQ(db_.query_value("SELECT timeout_s FROM conveyor.job_type WHERE name = 'alpha'"), "60");
  EXPECT_EQ(db_.query_value("SELECT env->>'LANG' FROM conveyor.job_type WHERE name = 'alpha'"), "C");
  EXPECT_EQ(db_.query_value("SELECT command->>1 FROM conveyor.job_type WHERE name = 'alpha'"), "{word}");

  r = conveyor({"job-type", "list"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "NAME")) << r.output;
  EXPECT_TRUE(has(r, "SINKS")) << r.output;
  EXPECT_TRUE(has(r, "alpha")) << r.output;
  EXPECT_TRUE(has(r, "file")) << r.output;

  r = conveyor({"--json", "job-type", "list"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "\"max_attempts\":3")) << r.output;
}

TEST_F(JobTypeCli, ApplyingTheSameFileAgainChangesNothing) {
  const auto file = write("types.json", two_types());
  ASSERT_EQ(conveyor({"job-type", "apply", file, "--yes"}).status, 0);
  const auto before = db_.query_value("SELECT max(updated_at)::text FROM conveyor.job_type");
  auto r = conveyor({"job-type", "apply", file, "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "= alpha (unchanged)")) << r.output;
  EXPECT_TRUE(has(r, "0 change(s)")) << r.output;
  EXPECT_TRUE(has(r, "nothing to apply")) << r.output;
  EXPECT_EQ(db_.query_value("SELECT max(updated_at)::text FROM conveyor.job_type"), before);
}

TEST_F(JobTypeCli, AChangeShowsTheFieldDiffAndTypesNotInTheFileAreLeftAlone) {
  ASSERT_EQ(conveyor({"job-type", "apply", write("types.json", two_types()), "--yes"}).status, 0);
  json changed = {{"job_types", {two_types()["job_types"][0]}}};
  changed["job_types"][0]["timeout_s"] = 120;
  const auto file = write("changed.json", changed);

  auto r = conveyor({"job-type", "apply", file, "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "~ alpha (changed)")) << r.output;
  EXPECT_TRUE(has(r, "timeout_s: 60 -> 120")) << r.output;
  EXPECT_TRUE(has(r, "? beta (not in file")) << r.output;
  EXPECT_TRUE(has(r, "1 change(s)")) << r.output;
  EXPECT_EQ(db_.query_value("SELECT timeout_s FROM conveyor.job_type WHERE name = 'alpha'"), "120");
  EXPECT_EQ(count_types(), 2);  // beta still there

  changed["job_types"][0]["timeout_s"] = 30;
  r = conveyor({"--json", "job-type", "apply", write("changed2.json", changed), "--dry-run"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, R"("timeout_s":{"new":30,"old":120})")) << r.output;
  EXPECT_EQ(db_.query_value("SELECT timeout_s FROM conveyor.job_type WHERE name = 'alpha'"), "120");
}

TEST_F(JobTypeCli, AnInvalidFileExitsTwoNamingTheFieldAndWritesNothing) {
  json bad = two_types();
  bad["job_types"][1]["max_attempts"] = 0;
  const auto file = write("bad.json", bad);
  auto r = conveyor({"job-type", "apply", file, "--yes"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "bad.json")) << r.output;
  EXPECT_TRUE(has(r, "job type 'beta': max_attempts")) << r.output;
  EXPECT_EQ(count_types(), 0);

  bad = two_types();
  bad["job_types"][0]["sinks"] = {{{"kind", "kafka"}}};
  r = conveyor({"job-type", "apply", write("bad2.json", bad), "--yes"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "sinks[0].topic")) << r.output;

  std::ofstream(dir_ / "broken.json") << "{\"job_types\": [";
  r = conveyor({"job-type", "apply", (dir_ / "broken.json").string(), "--yes"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(has(r, "not valid JSON")) << r.output;
  EXPECT_EQ(count_types(), 0);
}

TEST_F(JobTypeCli, WithoutYesAndNoTerminalItRefuses) {
  // conveyor::testing::run gives the child /dev/null as stdin.
  auto r = conveyor({"job-type", "apply", write("types.json", two_types())});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(has(r, "+ alpha (added)")) << r.output;  // the diff is still shown
  EXPECT_TRUE(has(r, "refusing to apply 2 change(s)")) << r.output;
  EXPECT_TRUE(has(r, "--yes")) << r.output;
  EXPECT_EQ(count_types(), 0);
}

TEST_F(JobTypeCli, TheShippedExampleFileApplies) {
  auto r = conveyor({"job-type", "apply", CONVEYOR_JOB_TYPES_FILE, "--yes"});
  ASSERT_EQ(r.status, 0) << r.output;
  // six process types, their container variants, and sleep-resident
  EXPECT_EQ(count_types(), 13);
  EXPECT_EQ(db_.query_value("SELECT string_agg(name || ' ' || runner, ',' ORDER BY name) "
                            "FROM conveyor.job_type "
                            "WHERE name LIKE 'sleep%' AND name NOT LIKE '%container'"),
            "sleep process,sleep-resident resident");
  EXPECT_EQ(db_.query_value("SELECT image || ' ' || (resources->>'cpus')::float8 || ' ' || "
                            "(resources->>'memory_mb') || ' ' || network FROM conveyor.job_type "
                            "WHERE name = 'fsc-rlie-container'"),
            "localhost/conveyor-example-task:dev 1 256 false");
  EXPECT_EQ(db_.query_value("SELECT max_attempts FROM conveyor.job_type WHERE name = 'flaky'"), "2");
}

// ------------------------------------------------------------ the example task

class ExampleTask : public WithDir {
 protected:
  RunResult task(const std::vector<std::string>& args) {
    std::vector<std::string> argv{CONVEYOR_EXAMPLE_TASK_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    return conveyor::testing::run(argv);
  }
  // The shipped type `name`, rendered as the configuration service would.
  std::vector<std::string> argv_of(const std::string& name, const conveyor::model::ArgvContext& ctx) {
    std::ifstream in(CONVEYOR_JOB_TYPES_FILE);
    std::stringstream ss;
    ss << in.rdbuf();
    for (const auto& t : conveyor::model::parse_job_types_file(json::parse(ss.str()))) {
      if (t.name != name) continue;
      auto argv = conveyor::model::render_argv(t.command, ctx);
      argv[0] = CONVEYOR_EXAMPLE_TASK_PATH;  // the worker finds it on PATH
      return argv;
    }
    ADD_FAILURE() << "no type " << name;
    return {};
  }
};

TEST_F(ExampleTask, ProductWithAMissingInputExitsFourNamingIt) {
  const auto missing = (dir_ / "nope.json").string();
  auto r = task({"product", "--kind", "gfsc", "--tile", "32TLR", "--date", "2026-01-01", "--out",
                 (dir_ / "out").string(), "--input", missing});
  EXPECT_EQ(r.status, 4) << r.output;
  EXPECT_TRUE(has(r, missing)) << r.output;
  EXPECT_FALSE(fs::exists(dir_ / "out" / "gfsc_32TLR_2026-01-01.json"));
}

TEST_F(ExampleTask, ShippedChainRunsFscRlieThenGfscFromItsOutputs) {
  conveyor::model::ArgvContext up;
  up.params = {{"tile", "32TLR"}, {"date", "2026-01-01"}};
  up.output_dir = (dir_ / "job-1").string();
  auto r = conveyor::testing::run(argv_of("fsc-rlie", up));
  ASSERT_EQ(r.status, 0) << r.output;
  const auto upstream = dir_ / "job-1" / "fsc-rlie_32TLR_2026-01-01.json";
  ASSERT_TRUE(fs::exists(upstream)) << r.output;

  conveyor::model::ArgvContext down = up;
  down.output_dir = (dir_ / "job-2").string();
  down.inputs = {upstream.string()};
  r = conveyor::testing::run(argv_of("gfsc", down));
  ASSERT_EQ(r.status, 0) << r.output;
  std::ifstream in(dir_ / "job-2" / "gfsc_32TLR_2026-01-01.json");
  const auto product = json::parse(in);
  ASSERT_EQ(product.at("inputs").size(), 1u);
  EXPECT_EQ(product["inputs"][0].at("path"), upstream.string());
  EXPECT_GT(product["inputs"][0].at("size").get<int>(), 0);
}

TEST_F(ExampleTask, FailFlakyAndSleep) {
  EXPECT_EQ(task({"fail"}).status, 3);
  EXPECT_EQ(task({"fail", "7"}).status, 7);
  EXPECT_NE(task({"flaky", "0"}).status, 0);
  EXPECT_EQ(task({"flaky", "1"}).status, 0);
  auto r = task({"sleep", "0.05"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r, "done sleeping")) << r.output;
}

TEST_F(ExampleTask, SleepExits143OnSigterm) {
  conveyor::testing::ChildProcess::Options o;
  o.argv = {CONVEYOR_EXAMPLE_TASK_PATH, "sleep", "60"};
  o.stdout_file = dir_ / "sleep.log";
  conveyor::testing::ChildProcess p(o);
  // Wait until it has installed its handler (it prints after doing so).
  ASSERT_TRUE(conveyor::testing::wait_until(
      [&] {
        std::ifstream in(dir_ / "sleep.log");
        std::string line;
        return static_cast<bool>(std::getline(in, line));
      },
      std::chrono::seconds(10)));
  p.signal(SIGTERM);
  const auto status = p.wait(std::chrono::seconds(10));
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(*status, 143);
}

}  // namespace
