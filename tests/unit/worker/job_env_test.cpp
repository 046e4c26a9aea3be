// What a job's environment is made of (issue 12): a minimal base, the type's
// env without PG* and CONVEYOR_*, the job's own variables; and what a
// container's environment file holds.
#include <gtest/gtest.h>

#include "container.hpp"
#include "process.hpp"

#include "conveyor/model/job_type.hpp"

namespace {

using conveyor::worker::env_file_text;
using conveyor::worker::job_base_environment;
using conveyor::worker::job_environment;
using conveyor::model::reserved_env_name;
using conveyor::worker::runtime_client_environment;
using Env = std::map<std::string, std::string>;

const Env kWorker = {
    {"PATH", "/opt/tools/bin:/usr/bin"},
    {"HOME", "/home/conveyor"},
    {"LANG", "C.UTF-8"},
    {"TZ", "UTC"},
    {"TMPDIR", "/scratch"},
    {"PGPASSWORD", "pg-secret"},
    {"PGHOST", "db"},
    {"CONVEYOR_DATABASE_URL", "postgresql://conveyor:pw@db/conveyor"},
    {"CONVEYOR_API_TOKEN", "cvt_secret"},
    {"CONVEYOR_TLS_KEY_FILE", "/run/secrets/key.pem"},
    {"SECRET_X", "x-secret"},
    {"AWS_SECRET_ACCESS_KEY", "aws-secret"},
    {"XDG_RUNTIME_DIR", "/run/user/1000"},
    {"https_proxy", "http://user:proxy-pw@proxy:3128"},
};

TEST(JobEnvironment, TheBaseIsMinimal) {
  EXPECT_EQ(job_base_environment(kWorker), (Env{{"PATH", "/opt/tools/bin:/usr/bin"},
                                                {"HOME", "/home/conveyor"},
                                                {"LANG", "C.UTF-8"},
                                                {"TZ", "UTC"},
                                                {"TMPDIR", "/scratch"}}));
  // A worker with nothing set still gives its jobs a PATH and a HOME.
  EXPECT_EQ(job_base_environment({{"SECRET_X", "x"}}), (Env{{"PATH", "/usr/local/bin:/usr/bin:/bin"}, {"HOME", "/"}}));
}

TEST(JobEnvironment, TheTypeCannotSetPgOrConveyorNames) {
  EXPECT_TRUE(reserved_env_name("PGPASSWORD"));
  EXPECT_TRUE(reserved_env_name("PG"));
  EXPECT_TRUE(reserved_env_name("CONVEYOR_API_TOKEN"));
  EXPECT_TRUE(reserved_env_name("CONVEYOR_JOB_ID"));
  EXPECT_FALSE(reserved_env_name("GDAL_CACHEMAX"));
  EXPECT_FALSE(reserved_env_name("CONVEYOR"));
  EXPECT_FALSE(reserved_env_name("pgpassword"));

  std::vector<std::string> refused;
  const Env env = job_environment(
      job_base_environment(kWorker),
      {{"GDAL_CACHEMAX", "512"},
       {"PATH", "/type/bin"},
       {"PGPASSWORD", "type-pw"},
       {"CONVEYOR_JOB_ID", "999"},
       {"CONVEYOR_DATABASE_URL", "postgresql://x"}},
      {{"CONVEYOR_JOB_ID", "7"}, {"CONVEYOR_JOB_ATTEMPT", "0"}, {"CONVEYOR_OUTPUT_DIR", "/data/outputs/job-7"}},
      &refused);
  EXPECT_EQ(env, (Env{{"PATH", "/type/bin"},
                      {"HOME", "/home/conveyor"},
                      {"LANG", "C.UTF-8"},
                      {"TZ", "UTC"},
                      {"TMPDIR", "/scratch"},
                      {"GDAL_CACHEMAX", "512"},
                      {"CONVEYOR_JOB_ID", "7"},
                      {"CONVEYOR_JOB_ATTEMPT", "0"},
                      {"CONVEYOR_OUTPUT_DIR", "/data/outputs/job-7"}}));
  EXPECT_EQ(refused, (std::vector<std::string>{"CONVEYOR_DATABASE_URL", "CONVEYOR_JOB_ID", "PGPASSWORD"}));
}

TEST(JobEnvironment, TheRuntimeClientKeepsWhatItNeedsButNoConveyorOrPgVariable) {
  const Env env = runtime_client_environment(kWorker);
  EXPECT_EQ(env.count("XDG_RUNTIME_DIR"), 1u);
  EXPECT_EQ(env.count("HOME"), 1u);
  for (const auto& [k, v] : env) {
    EXPECT_NE(k.rfind("PG", 0), 0u) << k;
    EXPECT_NE(k.rfind("CONVEYOR_", 0), 0u) << k;
  }
}

TEST(JobEnvironment, TheEnvFileHoldsTheJobsVariablesOnly) {
  const std::string text = env_file_text({{"GDAL_CACHEMAX", "512"},
                                          {"CONVEYOR_JOB_ID", "7"},
                                          {"MULTI", "a\nb"},
                                          {"SPACED", " kept as is "},
                                          {"HOST_COPY", "x"},
                                          {"BAD NAME", "x"},
                                          {"", "x"},
                                          {"#COMMENT", "x"}});
  EXPECT_EQ(text, "CONVEYOR_JOB_ID=7\nGDAL_CACHEMAX=512\nHOST_COPY=x\nSPACED= kept as is \n");
  EXPECT_EQ(env_file_text({}), "");
}

}  // namespace
