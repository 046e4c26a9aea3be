// Jobs that run as containers (issue 11), end to end with podman: the real
// services and workers, the `-container` job types of
// deploy/config/job-types.json, and the image localhost/conveyor-example-task:dev
// that the ctest fixture container_task_image builds (tools/containers task-image).
// Every check of a container asks podman itself, by the labels the worker set.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "conveyor/db/db.hpp"
#include "conveyor/testing/stack.hpp"
#include "e2e.hpp"

namespace {

namespace fs = std::filesystem;
using conveyor::testing::Stack;
using conveyor::testing::wait_until;
using json = nlohmann::json;
using conveyor::e2e::status_of;
using conveyor::e2e::submit;
using namespace std::chrono_literals;

const std::string kImage = "localhost/conveyor-example-task:dev";

std::map<std::string, std::string> podman_env() {
  return {{"CONTAINERS_CONF", std::string(CONVEYOR_SOURCE_DIR) + "/deploy/podman/containers.conf"}, {"HOME", "/root"}};
}

conveyor::testing::RunResult podman(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"podman"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto env = podman_env();
  if (const char* p = std::getenv("PATH")) env["PATH"] = p;
  return conveyor::testing::run(argv, env, 120s);
}

// Containers (running or not) that carry the job's label.
std::string containers_of(const std::string& job_id) {
  auto r = podman({"ps", "--all", "--filter", "label=io.conveyor.job-id=" + job_id, "--format", "{{.Names}}"});
  EXPECT_EQ(r.status, 0) << r.output;
  std::string out = r.output;
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

Stack::Options options(const std::string& setup_sql = "", int workers = 1) {
  Stack::Options o;
  o.workers = workers;
  o.env = podman_env();
  o.env["CONVEYOR_KILL_GRACE_MS"] = "2000";
  o.setup_sql = "UPDATE conveyor.system_parameters SET worker_heartbeat_interval_s = 1;" + setup_sql;
  return o;
}

std::string id_of(const json& j) { return std::to_string(j.at("id").get<std::int64_t>()); }

bool wait_status(Stack& stack, const std::string& id, const std::string& status,
                 std::chrono::milliseconds timeout = 60s) {
  const bool ok = wait_until([&] { return status_of(stack, id) == status; }, timeout);
  if (!ok) {
    ADD_FAILURE() << "job " << id << " is " << status_of(stack, id) << ", expected " << status << "\n"
                  << stack.logs_tail();
  }
  return ok;
}

fs::path log_dir(Stack& stack, const std::string& id) {
  const auto month = stack.db().query_value(
      "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM') FROM conveyor.job WHERE id = " + id);
  return stack.data_dir() / "logs" / month / ("job-" + id);
}

json metadata(Stack& stack, const std::string& id) {
  return json::parse(conveyor::testing::read_text(log_dir(stack, id) / "metadata.json"));
}

// Waits until the job's container runs (podman sees it with its labels).
bool wait_container_running(const std::string& id) {
  return wait_until(
      [&] {
        auto r = podman({"ps", "--filter", "label=io.conveyor.job-id=" + id, "--filter", "status=running", "--format",
                         "{{.Names}}"});
        return r.status == 0 && r.output.find("conveyor-job-" + id + "-") != std::string::npos;
      },
      60s);
}

std::string image_id(const std::string& ref) {
  auto r = podman({"image", "inspect", "--format", "{{.Id}}", ref});
  EXPECT_EQ(r.status, 0) << r.output;
  std::string id = r.output.substr(0, r.output.find('\n'));
  return id.rfind("sha256:", 0) == 0 ? id : "sha256:" + id;
}

TEST(ContainerJobs, AContainerChainIsDoneWithItsOutputInTheCatalogAndItsLogs) {
  Stack stack(options());
  const auto up = id_of(
      submit(stack, {{"job_type", "fsc-rlie-container"}, {"params", {{"tile", "32TLR"}, {"date", "2026-01-01"}}}}));
  const auto down = id_of(submit(stack, {{"job_type", "sws-wds-container"},
                                         {"params", {{"tile", "32TLR"}, {"date", "2026-01-01"}}},
                                         {"depends_on", {std::stoll(up)}}}));
  ASSERT_TRUE(wait_status(stack, up, "done"));
  ASSERT_TRUE(wait_status(stack, down, "done"));

  // The product, written inside the container to /conveyor/output/, is on the
  // host in the job's output dir, in its result and in the catalog.
  const fs::path product = stack.data_dir() / "outputs" / ("job-" + up) / "fsc-rlie_32TLR_2026-01-01.json";
  EXPECT_TRUE(fs::exists(product)) << product;
  const auto result = json::parse(stack.db().query_value("SELECT result FROM conveyor.job WHERE id = " + up));
  EXPECT_NE(result.dump().find("fsc-rlie_32TLR_2026-01-01.json"), std::string::npos) << result.dump();
  bool in_catalog = false;
  for (const auto& e : fs::recursive_directory_iterator(stack.data_dir() / "catalog")) {
    if (conveyor::testing::read_text(e.path()).find("fsc-rlie_32TLR_2026-01-01.json") != std::string::npos) {
      in_catalog = true;
    }
  }
  EXPECT_TRUE(in_catalog) << "no catalog manifest names the product";
  // The downstream container read the upstream product through its read-only mount.
  const auto logs = conveyor::testing::read_text(log_dir(stack, down) / "logs.txt");
  EXPECT_NE(logs.find("fsc-rlie_32TLR_2026-01-01.json"), std::string::npos) << logs;
  EXPECT_NE(logs.find("container conveyor-job-" + down + "-0 from " + kImage), std::string::npos) << logs;

  const auto meta = metadata(stack, up);
  EXPECT_EQ(meta.value("image", ""), kImage);
  EXPECT_EQ(meta.value("image_id", ""), image_id(kImage));
  EXPECT_EQ(meta.value("image_digest", "").rfind("sha256:", 0), 0u) << meta.dump();
  EXPECT_EQ(meta.value("container", ""), "conveyor-job-" + up + "-0");
  EXPECT_EQ(meta["usage"].value("source", ""), "cgroup") << meta.dump();
  EXPECT_EQ(meta["argv"].dump(), json({"product", "--kind", "fsc-rlie", "--tile", "32TLR", "--date", "2026-01-01",
                                       "--out", "/conveyor/output/"})
                                     .dump());
  // The attempt's row: the image and the digest that ran, and what it cost.
  EXPECT_EQ(stack.db().query_value("SELECT image || ' ' || image_digest || ' ' || outcome || ' ' || "
                                   "(wall_ms IS NOT NULL) FROM conveyor.job_attempt WHERE job_id = " +
                                   up),
            kImage + " " + meta.value("image_digest", "") + " processed true");
  // Output files belong to the container's user, not root.
  struct stat st {};
  ASSERT_EQ(::stat(product.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 10001u);
  EXPECT_EQ(containers_of(up), "");
}

TEST(ContainerJobs, TheContainerGetsTheTypesEnvironmentNoNetworkAndANonRootUser) {
  // A type of the test's own, on the base image: a shell prints what the
  // container sees.
  Stack stack(options(R"SQL(
    INSERT INTO conveyor.job_type (name, image, command, env, params_schema) VALUES
      ('inside', 'localhost/debian:bookworm',
       '["sh", "-c", "echo env=$GREETING job=$CONVEYOR_JOB_ID out=$CONVEYOR_OUTPUT_DIR; echo uid=$(id -u); echo net=$(ls /sys/class/net); echo pwd=$(pwd); touch {output_dir}made-inside; sleep 2"]',
       '{"GREETING": "hello world"}', '{"type": "object"}');
  )SQL"));
  const auto id = id_of(submit(stack, {{"job_type", "inside"}, {"params", json::object()}}));
  ASSERT_TRUE(wait_container_running(id)) << stack.logs_tail();
  // While it runs, no command line on the host holds the value: it went
  // through an environment file (removed after the run).
  for (const auto& p : fs::directory_iterator("/proc")) {
    const auto cmdline = conveyor::testing::read_text(p.path() / "cmdline");
    EXPECT_EQ(cmdline.find("hello world"), std::string::npos) << p.path();
  }
  ASSERT_TRUE(wait_status(stack, id, "done"));
  const auto logs = conveyor::testing::read_text(log_dir(stack, id) / "logs.txt");
  EXPECT_NE(logs.find("env=hello world job=" + id + " out=/conveyor/output/"), std::string::npos) << logs;
  EXPECT_NE(logs.find("uid=10001"), std::string::npos) << logs;
  EXPECT_NE(logs.find("net=lo\n"), std::string::npos) << logs;  // --network none: loopback only
  EXPECT_NE(logs.find("pwd=/conveyor/output"), std::string::npos) << logs;
  EXPECT_TRUE(fs::exists(stack.data_dir() / "outputs" / ("job-" + id) / "made-inside"));
  EXPECT_EQ(metadata(stack, id)["env"].value("GREETING", ""), "hello world");
  EXPECT_TRUE(fs::is_empty(stack.data_dir() / "run" / "job-env"));
}

TEST(ContainerJobs, AProgramThatExits125FailsWithItsExitCodeLikeAProcess) {
  // 125 is also what the runtime exits with when it cannot run a container;
  // a program's own 125 is still the program's.
  Stack stack(options(R"SQL(
    INSERT INTO conveyor.job_type (name, image, command, params_schema) VALUES
      ('exits-125', 'localhost/debian:bookworm', '["sh", "-c", "echo about to fail >&2; exit 125"]',
       '{"type": "object"}');
  )SQL"));
  const auto id = id_of(submit(stack, {{"job_type", "exits-125"}, {"params", json::object()}}));
  ASSERT_TRUE(wait_status(stack, id, "failed"));
  EXPECT_EQ(stack.db().query_value("SELECT error_subtype || ': ' || error_message FROM conveyor.job WHERE id = " + id),
            "exit_code: exited with code 125");
}

TEST(ContainerJobs, AWorkerWithoutAContainerRuntimeLeavesContainerJobsToOthers) {
  auto o = options();
  o.env["CONVEYOR_CONTAINER_RUNTIME"] = "/nonexistent/podman";
  Stack stack(o);
  const auto in_container = id_of(submit(stack, {{"job_type", "sleep-container"}, {"params", {{"seconds", 0}}}}));
  // (alloc: a process type without a webhook sink, which needs an endpoint)
  const auto as_process = id_of(submit(stack, {{"job_type", "alloc"}, {"params", {{"mb", 0}}}}));
  ASSERT_TRUE(wait_status(stack, as_process, "done"));
  EXPECT_EQ(status_of(stack, in_container), "queued") << "claimed by a worker that cannot run it";
  // A worker that can run it takes it.
  auto env = stack.env();
  env.erase("CONVEYOR_CONTAINER_RUNTIME");
  env["CONVEYOR_WORKER_NAME"] = conveyor::testing::unique_name("with-podman");
  env["CONVEYOR_HTTP_PORT"] = std::to_string(conveyor::testing::free_port());
  conveyor::testing::ChildProcess with_podman(conveyor::testing::ChildProcess::Options{
      .argv = {conveyor::testing::executable("conveyor-worker").string()},
      .env = env,
      .stdout_file = stack.data_dir() / "with-podman.log",
      .stderr_file = {},
      .detach = false,
  });
  EXPECT_TRUE(wait_status(stack, in_container, "done"))
      << conveyor::testing::read_text(stack.data_dir() / "with-podman.log");
}

TEST(ContainerJobs, ACancelBySqlStopsTheContainerAndEndsCanceled) {
  Stack stack(options());
  const auto id = id_of(submit(stack, {{"job_type", "sleep-container"}, {"params", {{"seconds", 120}}}}));
  ASSERT_TRUE(wait_container_running(id)) << stack.logs_tail();
  stack.db().exec("UPDATE conveyor.job SET canceled_at = now() WHERE id = " + id);
  ASSERT_TRUE(wait_status(stack, id, "canceled", 30s));
  EXPECT_EQ(containers_of(id), "");
  EXPECT_EQ(stack.db().query_value("SELECT outcome FROM conveyor.job_attempt WHERE job_id = " + id), "canceled");
}

TEST(ContainerJobs, ATimeoutEndsTheJobAsForAProcessAndRemovesTheContainer) {
  Stack stack(options("UPDATE conveyor.job_type SET timeout_s = 2 WHERE name = 'sleep-container';"));
  const auto id = id_of(submit(stack, {{"job_type", "sleep-container"}, {"params", {{"seconds", 60}}}}));
  ASSERT_TRUE(wait_status(stack, id, "failed", 60s));
  EXPECT_EQ(stack.db().query_value("SELECT error_subtype FROM conveyor.job WHERE id = " + id), "timeout");
  EXPECT_EQ(containers_of(id), "");
  EXPECT_TRUE(metadata(stack, id).value("timed_out", false));
}

TEST(ContainerJobs, AWorkerKilledMinusNineLeavesNoContainerAndTheJobIsDoneOnce) {
  // Attempt 0 would run for two minutes, attempt 1 at once: the job can only
  // be done in time if attempt 0's container is found and removed.
  Stack stack(options(R"SQL(
    INSERT INTO conveyor.job_type (name, image, command, max_attempts, params_schema) VALUES
      ('slow-first', 'localhost/debian:bookworm',
       '["sh", "-c", "echo attempt {attempt} begins; if [ {attempt} = 0 ]; then sleep 120; fi; echo attempt {attempt} ends"]',
       3, '{"type": "object"}');
  )SQL"));
  const auto id = id_of(submit(stack, {{"job_type", "slow-first"}, {"params", json::object()}}));
  ASSERT_TRUE(wait_container_running(id)) << stack.logs_tail();
  stack.kill("worker-1", SIGKILL);
  // The container outlives its worker: podman still runs it.
  EXPECT_EQ(containers_of(id), "conveyor-job-" + id + "-0");
  // The worker comes back under its name: it requeues what it left started,
  // removes the container no started attempt owns, and runs the job again.
  stack.start("worker-1");
  ASSERT_TRUE(wait_status(stack, id, "done", 60s));
  EXPECT_EQ(containers_of(id), "") << "attempt 0's container still runs";
  const auto logs = conveyor::testing::read_text(log_dir(stack, id) / "logs.txt");
  EXPECT_NE(logs.find("stdout attempt 1 ends"), std::string::npos) << logs;
  EXPECT_EQ(logs.find("stdout attempt 0 ends"), std::string::npos) << logs;
  EXPECT_EQ(stack.db().query_value("SELECT count(*) FROM conveyor.job_status_change WHERE job_id = " + id +
                                   " AND to_status = 'processed'"),
            "1");
  EXPECT_EQ(stack.db().query_value("SELECT string_agg(attempt || ':' || outcome, ' ' ORDER BY id) "
                                   "FROM conveyor.job_attempt WHERE job_id = " +
                                   id),
            "0:lost 1:done");  // it delivers nothing: done through processed
}

TEST(ContainerJobs, AWorkerThatDrainsStopsItsContainerAndTheJobRunsAgain) {
  auto o = options();
  o.env["CONVEYOR_SHUTDOWN_GRACE_MS"] = "4000";  // waits ~1.5 s for the job, then stops it
  Stack stack(o);
  const auto id = id_of(submit(stack, {{"job_type", "sleep-container"}, {"params", {{"seconds", 8}}}}));
  ASSERT_TRUE(wait_container_running(id)) << stack.logs_tail();
  stack.process("worker-1").signal(SIGTERM);
  EXPECT_EQ(stack.process("worker-1").wait(20s), std::optional<int>(0)) << stack.logs_tail();
  EXPECT_EQ(containers_of(id), "");
  // Requeued (execution may have admitted it again already), not failed,
  // and without using a retry: the worker stopped it, not the job itself
  // (model::kRequeueStoppedRuns, as prepare-for-reboot).
  EXPECT_EQ(stack.db().query_value("SELECT (status IN ('ready', 'queued')) || ' ' || attempt || ' ' || "
                                   "error_subtype FROM conveyor.job WHERE id = " +
                                   id),
            "true 0 worker_shutdown");
  stack.start("worker-1");
  ASSERT_TRUE(wait_status(stack, id, "done", 60s));
  EXPECT_EQ(stack.db().query_value("SELECT string_agg(attempt || ':' || outcome, ' ' ORDER BY id) "
                                   "FROM conveyor.job_attempt WHERE job_id = " +
                                   id),
            "0:ready 0:processed");
  EXPECT_EQ(containers_of(id), "");
}

TEST(ContainerJobs, ChangingImageTagsLiveRunsTheNextJobOnTheNewTagWhileTheRunningOneKeepsItsOwn) {
  // A second image of the same repository, distinct from :dev.
  const std::string v2 = "localhost/conveyor-example-task:test-v2";
  const fs::path ctx = fs::temp_directory_path() / conveyor::testing::unique_name("v2-context");
  fs::create_directories(ctx);
  {
    std::ofstream(ctx / "Containerfile") << "FROM " << kImage << "\nLABEL io.conveyor.test=" << ctx.filename().string()
                                         << "\n";
  }
  auto built = podman({"build", "-q", "-t", v2, ctx.string()});
  ASSERT_EQ(built.status, 0) << built.output;
  fs::remove_all(ctx);
  ASSERT_NE(image_id(v2), image_id(kImage));

  Stack stack(options("", 2));
  const auto running = id_of(submit(stack, {{"job_type", "sleep-container"}, {"params", {{"seconds", 8}}}}));
  ASSERT_TRUE(wait_container_running(running)) << stack.logs_tail();
  // Configuration resolves the tag: the change reaches it as a parameters
  // event, within seconds. Its log names the version it read; an earlier
  // event (the setup's, found late) may reload the old one meanwhile.
  auto set = stack.cli({"params", "set", "image_tags", R"({"sleep-container":"test-v2"})"});
  ASSERT_EQ(set.status, 0) << set.output;
  const std::string version =
      "as of " + stack.db().query_value("SELECT " CONVEYOR_RFC3339("updated_at") " FROM conveyor.system_parameters");
  ASSERT_TRUE(wait_until(
      [&] {
        return conveyor::testing::read_text(stack.data_dir() / "configuration.log").find(version) != std::string::npos;
      },
      15s))
      << version << "\n"
      << stack.logs_tail();
  const auto next = id_of(submit(stack, {{"job_type", "sleep-container"}, {"params", {{"seconds", 0}}}}));
  ASSERT_TRUE(wait_status(stack, next, "done", 60s));
  EXPECT_EQ(status_of(stack, running), "started") << "the running job must not have been restarted";
  ASSERT_TRUE(wait_status(stack, running, "done", 60s));

  EXPECT_EQ(metadata(stack, running).value("image_id", ""), image_id(kImage));
  EXPECT_EQ(metadata(stack, next).value("image_id", ""), image_id(v2));
  EXPECT_EQ(stack.db().query_value("SELECT image FROM conveyor.job_attempt WHERE job_id = " + running), kImage);
  EXPECT_EQ(stack.db().query_value("SELECT image FROM conveyor.job_attempt WHERE job_id = " + next), v2);
  auto inspect = stack.cli({"job", "inspect", next});
  EXPECT_NE(inspect.output.find(v2), std::string::npos) << inspect.output;
  podman({"rmi", "--force", v2});
}

TEST(ContainerJobs, AnImageThatDoesNotExistEndsInternalErrorImagePull) {
  Stack stack(options("UPDATE conveyor.system_parameters SET image_tags = '{\"sleep-container\": \"no-such-tag\"}';"));
  const auto id = id_of(submit(stack, {{"job_type", "sleep-container"}, {"params", {{"seconds", 0}}}}));
  ASSERT_TRUE(wait_status(stack, id, "internal_error", 120s));
  EXPECT_EQ(stack.db().query_value("SELECT error_subtype FROM conveyor.job WHERE id = " + id), "image_pull");
  const auto message = stack.db().query_value("SELECT error_message FROM conveyor.job WHERE id = " + id);
  EXPECT_NE(message.find("cannot pull image 'localhost/conveyor-example-task:no-such-tag'"), std::string::npos)
      << message;
  EXPECT_EQ(containers_of(id), "");
}

TEST(ContainerJobs, AJobThatAllocates200MbShowsItsPeakMemoryInMetadataAndJobStats) {
  Stack stack(options("", 2));
  const auto in_container = id_of(submit(stack, {{"job_type", "alloc-container"}, {"params", {{"mb", 200}}}}));
  const auto as_process = id_of(submit(stack, {{"job_type", "alloc"}, {"params", {{"mb", 200}}}}));
  ASSERT_TRUE(wait_status(stack, in_container, "done"));
  ASSERT_TRUE(wait_status(stack, as_process, "done"));
  const std::int64_t at_least = 200 * 1024;
  for (const auto& [id, source] : {std::pair{in_container, "cgroup"}, std::pair{as_process, "rusage"}}) {
    const auto usage = metadata(stack, id)["usage"];
    EXPECT_EQ(usage.value("source", ""), source) << usage.dump();
    EXPECT_GE(usage.value("max_rss_kb", std::int64_t{0}), at_least) << usage.dump();
    EXPECT_GE(usage.value("cpu_user_ms", std::int64_t{-1}) + usage.value("cpu_system_ms", std::int64_t{-1}), 0)
        << usage.dump();
    EXPECT_GE(std::stoll(stack.db().query_value("SELECT max_rss_kb FROM conveyor.job_attempt WHERE job_id = " + id)),
              at_least);
  }
  for (const std::string type : {"alloc-container", "alloc"}) {
    auto stats = stack.cli({"--json", "job", "stats", "--type", type});
    ASSERT_EQ(stats.status, 0) << stats.output;
    const auto doc = json::parse(stats.output.substr(stats.output.rfind("\n{") + 1));
    ASSERT_EQ(doc["items"].size(), 1u) << stats.output;
    EXPECT_EQ(doc["items"][0].value("job_type", ""), type);
    EXPECT_GE(doc["items"][0]["max_rss_kb"].value("p50", 0.0), static_cast<double>(at_least)) << stats.output;
  }
  auto human = stack.cli({"job", "stats", "--type", "alloc-container"});
  ASSERT_EQ(human.status, 0) << human.output;
  EXPECT_NE(human.output.find("MiB"), std::string::npos) << human.output;
}

}  // namespace
