// The `run` command line a worker gives the container runtime (container.hpp).
#include <gtest/gtest.h>

#include <algorithm>

#include "container.hpp"

namespace {

using conveyor::worker::container_cgroup;
using conveyor::worker::container_name;
using conveyor::worker::ContainerSpec;
using conveyor::worker::run_arguments;

ContainerSpec spec() {
  ContainerSpec s;
  s.installation = "a1b2c3";
  s.job_id = 391;
  s.attempt = 2;
  s.job_type = "fsc-rlie";
  s.worker = "w-1";
  s.image = "sha256:abc";
  s.argv = {"product", "--out", "/conveyor/output/", "a value; rm -rf /"};
  s.env = {{"GDAL_CACHEMAX", "512"}};
  s.host_output_dir = "/data/outputs/job-391/";
  s.inputs = {"/data/outputs/job-7/a.json", "/data/outputs/job-8/", "/data/outputs/job-7/a.json"};
  s.user = "10001:10001";
  s.cgroup_parent = container_cgroup("conveyor-jobs", "a1b2c3", 391, 2);
  return s;
}

// The value after `flag` (the first occurrence), or "".
std::string after(const std::vector<std::string>& a, const std::string& flag) {
  auto it = std::find(a.begin(), a.end(), flag);
  return it == a.end() || it + 1 == a.end() ? "" : *(it + 1);
}

std::size_t count(const std::vector<std::string>& a, const std::string& v) {
  return static_cast<std::size_t>(std::count(a.begin(), a.end(), v));
}

TEST(ContainerArgs, NameLabelsUserAndNoNetworkByDefault) {
  const auto a = run_arguments(spec());
  EXPECT_EQ(a.at(0), "run");
  EXPECT_EQ(count(a, "--rm"), 1u);
  EXPECT_EQ(after(a, "--name"), "conveyor-job-391-2");
  EXPECT_EQ(container_name(391, 2), "conveyor-job-391-2");
  for (const char* label : {"io.conveyor.installation=a1b2c3", "io.conveyor.job-id=391",
                            "io.conveyor.job-type=fsc-rlie", "io.conveyor.attempt=2", "io.conveyor.worker=w-1"}) {
    EXPECT_EQ(count(a, label), 1u) << label;
  }
  EXPECT_EQ(after(a, "--user"), "10001:10001");
  EXPECT_EQ(after(a, "--network"), "none");
  EXPECT_EQ(count(a, "--cap-drop=ALL"), 1u);
  EXPECT_EQ(after(a, "--security-opt"), "no-new-privileges");
  EXPECT_EQ(count(a, "--pull=never"), 1u);
  EXPECT_EQ(count(a, "--sig-proxy=false"), 1u);
  EXPECT_EQ(after(a, "--cgroup-parent"), "/conveyor-jobs/a1b2c3-job-391-2");
  EXPECT_EQ(count(a, "--cpus"), 0u);
  EXPECT_EQ(count(a, "--memory"), 0u);
}

TEST(ContainerArgs, MountsOutputReadWriteAndInputsReadOnlyOnce) {
  const auto a = run_arguments(spec());
  EXPECT_EQ(count(a, "type=bind,source=/data/outputs/job-391,target=/conveyor/output"), 1u);
  EXPECT_EQ(count(a, "type=bind,source=/data/outputs/job-7/a.json,target=/data/outputs/job-7/a.json,readonly"), 1u);
  EXPECT_EQ(count(a, "type=bind,source=/data/outputs/job-8,target=/data/outputs/job-8,readonly"), 1u);
  EXPECT_EQ(count(a, "--mount"), 3u);
  EXPECT_EQ(count(a, "--volume"), 0u);
  EXPECT_EQ(after(a, "--workdir"), "/conveyor/output");
  EXPECT_EQ(after(a, "--env"), "GDAL_CACHEMAX=512");
}

TEST(ContainerArgs, WithAnEnvFileNoValueIsOnTheCommandLineButOneWithANewline) {
  auto s = spec();
  s.env = {{"TOKEN", "s3cret"}, {"MULTI", "a\nb"}};
  s.env_file = "/tmp/conveyor-job-env.abc";
  const auto a = run_arguments(s);
  EXPECT_EQ(after(a, "--env-file"), "/tmp/conveyor-job-env.abc");
  EXPECT_EQ(count(a, "TOKEN=s3cret"), 0u);
  EXPECT_EQ(after(a, "--env"), "MULTI=a\nb");
}

TEST(ContainerArgs, APathWithAColonMountsAndOneWithACommaIsRefusedByName) {
  auto s = spec();
  s.inputs = {"/data/outputs/job-7/fsc_2026-01-01T10:00:00.json"};
  EXPECT_EQ(count(run_arguments(s),
                  "type=bind,source=/data/outputs/job-7/fsc_2026-01-01T10:00:00.json,"
                  "target=/data/outputs/job-7/fsc_2026-01-01T10:00:00.json,readonly"),
            1u);
  s.inputs = {"/data/outputs/job-7/a,b.json"};
  try {
    run_arguments(s);
    ADD_FAILURE() << "a comma in a mounted path must be refused";
  } catch (const conveyor::worker::ContainerError& e) {
    EXPECT_EQ(e.subtype(), "container_runtime");
    EXPECT_NE(std::string(e.what()).find("/data/outputs/job-7/a,b.json"), std::string::npos) << e.what();
  }
}

TEST(ContainerArgs, TheCommandFollowsTheImageEachArgumentWhole) {
  const auto a = run_arguments(spec());
  auto image = std::find(a.begin(), a.end(), "sha256:abc");
  ASSERT_NE(image, a.end());
  EXPECT_EQ(std::vector<std::string>(image + 1, a.end()),
            (std::vector<std::string>{"product", "--out", "/conveyor/output/", "a value; rm -rf /"}));
}

TEST(ContainerArgs, ResourcesAndNetworkWhenTheTypeAsks) {
  auto s = spec();
  s.resources.cpus = 1.5;
  s.resources.memory_mb = 512;
  s.network = true;
  s.keep_id = true;
  s.cgroup_parent.clear();
  const auto a = run_arguments(s);
  EXPECT_EQ(after(a, "--cpus"), "1.5");
  EXPECT_EQ(after(a, "--memory"), "512m");
  EXPECT_EQ(after(a, "--network"), "bridge");
  EXPECT_EQ(count(a, "--userns=keep-id"), 1u);
  EXPECT_EQ(count(a, "--cgroup-parent"), 0u);
  // An empty command: the image's entrypoint; the image is the last argument.
  s.argv.clear();
  EXPECT_EQ(run_arguments(s).back(), "sha256:abc");
}

}  // namespace
