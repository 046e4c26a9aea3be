// The worker pool's `kubernetes` and `nomad` backends against FAKE API
// servers (conveyor/testing/fake_cluster.hpp: only the documented requests
// the backends make, in the APIs' published JSON shapes). The pool, its
// workers, PostgreSQL and the broker are real: each fake pod or dispatched
// job is a real conveyor-worker process. Covered for each backend: scale up
// to max, drain to scale down with the busy workers' pods/dispatches never
// deleted, a lost worker's pod/dispatch stopped and replaced, API errors
// (403, 409, 5xx, timeout) logged with back-off and no crash, parameters
// changed live, and a restarted pool adopting the running workers.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "conveyor/testing/fake_cluster.hpp"
#include "conveyor/testing/stack.hpp"
#include "sleep_job_type.hpp"

namespace conveyor::testing {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

// The worker pod's shape, as deploy/kubernetes ships it (reduced to what a
// worker needs here): its configuration from a ConfigMap by envFrom.
json pod_template(const std::string& image) {
  return {{"apiVersion", "v1"},
          {"kind", "PodTemplate"},
          {"metadata", {{"name", "conveyor-worker"}, {"namespace", "conveyor"}}},
          {"template",
           {{"metadata", {{"labels", {{"app.kubernetes.io/part-of", "conveyor"}}}}},
            {"spec",
             {{"terminationGracePeriodSeconds", 45},
              {"containers",
               {{{"name", "worker"},
                 {"image", image},
                 {"envFrom", {{{"configMapRef", {{"name", "conveyor-config"}}}}}},
                 {"env", {{{"name", "CONVEYOR_HTTP_PORT"}, {"value", "0"}}}}}}}}}}}};
}

bool pool_only(const std::string& key) {
  return key.starts_with("CONVEYOR_WORKERPOOL_") || key == "CONVEYOR_KUBECONFIG";
}

class ClusterPoolTest : public ::testing::Test {
 protected:
  void TearDown() override {
    stack_.reset();
    kube_.reset();
    nomad_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Heartbeats every second, a worker lost after 3 s of silence, one job
  // per worker, a 1 s scale-down delay; the pool is started by start_pool().
  void start_stack(int min, int max, std::map<std::string, std::string> env) {
    fs::create_directories(dir_ / "pods");
    Stack::Options o;
    o.workers = 0;
    o.services = {"configuration", "execution", "publication"};
    o.job_types_file = testing::write_sleep_job_type(dir_);
    env["CONVEYOR_POLL_INTERVAL_MS"] = "500";
    env["CONVEYOR_WORKERPOOL_SCALE_DOWN_DELAY_MS"] = "1000";
    env["CONVEYOR_WORKERPOOL_KILL_GRACE_MS"] = "1000";
    env["CONVEYOR_WORKERPOOL_API_TIMEOUT_MS"] = "1000";
    env["CONVEYOR_SHUTDOWN_GRACE_MS"] = "10000";
    o.env = env;
    o.setup_sql =
        "UPDATE conveyor.system_parameters SET worker_heartbeat_interval_s = 1, "
        "worker_heartbeat_timeout_s = 3, worker_concurrency = 1, min_number_of_worker_instances = " +
        std::to_string(min) + ", max_number_of_worker_instances = " + std::to_string(max);
    stack_ = std::make_unique<Stack>(std::move(o));
  }

  // What a worker container gets from the platform (the ConfigMap, the
  // Nomad job's env): the stack's settings without the pool's own keys.
  std::map<std::string, std::string> worker_env() {
    std::map<std::string, std::string> env;
    for (const auto& [k, v] : stack().env()) {
      if (!pool_only(k)) env[k] = v;
    }
    return env;
  }

  void start_kubernetes(int min, int max, const std::string& token = "fake-kubernetes-token") {
    FakeKubernetes::Options ko;
    ko.images = {{"conveyor-worker", executable("conveyor-worker")}};
    ko.log_dir = dir_ / "pods";
    kube_ = std::make_unique<FakeKubernetes>(ko);
    kube_->put_pod_template(pod_template("registry.example/conveyor-worker:1a2b3c4"));
    fs::create_directories(dir_);
    FakeKubernetes::Options shown = ko;
    shown.token = token;
    const fs::path kubeconfig = dir_ / "kubeconfig.json";
    kube_->write_kubeconfig(kubeconfig);
    if (token != ko.token) {  // a kubeconfig with another token
      json k = json::parse(read_text(kubeconfig));
      k["users"][0]["user"]["token"] = token;
      std::ofstream(kubeconfig) << k.dump();
    }
    start_stack(min, max,
                {{"CONVEYOR_WORKERPOOL_BACKEND", "kubernetes"}, {"CONVEYOR_KUBECONFIG", kubeconfig.string()}});
    kube_->put_config_map("conveyor-config", worker_env());
    stack().start("workerpool");
  }

  void start_nomad(int min, int max, const std::string& token = "fake-nomad-token") {
    FakeNomad::Options no;
    no.log_dir = dir_ / "pods";
    nomad_ = std::make_unique<FakeNomad>(no);
    fs::create_directories(dir_);
    std::ofstream(dir_ / "nomad-token") << token << "\n";
    start_stack(min, max,
                {{"CONVEYOR_WORKERPOOL_BACKEND", "nomad"},
                 {"CONVEYOR_WORKERPOOL_NOMAD_ADDR", nomad_->url()},
                 {"CONVEYOR_WORKERPOOL_NOMAD_TOKEN_FILE", (dir_ / "nomad-token").string()}});
    FakeNomad::ParameterizedJob job;
    job.id = "conveyor-worker";
    job.meta_required = {"worker_name", "pool"};
    job.executable = executable("conveyor-worker");
    job.kill_timeout = 1s;
    job.env = worker_env();
    job.env["CONVEYOR_HTTP_PORT"] = "0";
    job.env["CONVEYOR_WORKER_NAME"] = "${NOMAD_META_worker_name}";
    job.env["CONVEYOR_INSTANCE_ID"] = "${NOMAD_META_worker_name}";
    job.env["CONVEYOR_WORKER_POOL"] = "${NOMAD_META_pool}";
    nomad_->register_job(job);
    stack().start("workerpool");
  }

  Stack& stack() { return *stack_; }
  int count(const std::string& sql) { return std::stoi(stack().db().query_value(sql)); }
  int active() { return count("SELECT count(*) FROM conveyor.worker WHERE status = 'active'"); }
  int done() { return count("SELECT count(*) FROM conveyor.job WHERE status = 'done'"); }
  int started() { return count("SELECT count(*) FROM conveyor.job WHERE status = 'started'"); }
  std::string pool_log() { return read_text(stack().data_dir() / "workerpool.log"); }
  bool pool_running() { return stack().process("workerpool").running(); }

  void insert_sleeps(int n, double seconds) {
    stack().db().exec("INSERT INTO conveyor.job (job_type, params) SELECT 'sleep', '{\"seconds\": " +
                      std::to_string(seconds) + "}'::jsonb FROM generate_series(1, " + std::to_string(n) + ")");
  }

  // Pods (or dispatches) not finished.
  int live_pods() {
    const auto pods = kube_->pods();
    return static_cast<int>(std::count_if(pods.begin(), pods.end(), [](const FakeKubernetes::Pod& p) {
      return p.phase == "Pending" || p.phase == "Running";
    }));
  }
  int live_dispatches() {
    const auto d = nomad_->dispatches();
    return static_cast<int>(
        std::count_if(d.begin(), d.end(), [](const FakeNomad::Dispatch& x) { return x.status != "dead"; }));
  }

  // Every DELETE the fake served, with what it deleted.
  std::vector<std::string> deletes(const FakeApiServer& api) {
    std::vector<std::string> out;
    for (const auto& r : api.requests()) {
      if (r.method == "DELETE" && r.status == 200) out.push_back(r.note);
    }
    return out;
  }

  fs::path dir_ = fs::temp_directory_path() / unique_name("cluster-pool-test");
  std::unique_ptr<FakeKubernetes> kube_;
  std::unique_ptr<FakeNomad> nomad_;
  std::unique_ptr<Stack> stack_;
};

// ---------------------------------------------------------------- kubernetes

// A backlog brings the pool to max pods and never beyond; a lowered max
// drains busy workers (their pods complete; none is deleted while it runs);
// then the pool drains to min, deleting only completed pods.
TEST_F(ClusterPoolTest, KubernetesScalesToMaxDrainsAndDeletesOnlyCompletedPods) {
  start_kubernetes(0, 3);
  insert_sleeps(9, 1.5);
  int peak = 0;
  ASSERT_TRUE(wait_until(
      [&] {
        peak = std::max(peak, live_pods());
        return active() == 3 && started() == 3;
      },
      30s))
      << stack().logs_tail();
  const auto pods = kube_->pods();
  ASSERT_FALSE(pods.empty());
  const json& m = pods.front().manifest;
  EXPECT_EQ(m["spec"]["restartPolicy"], "Never");
  EXPECT_EQ(m["metadata"]["labels"]["app.kubernetes.io/managed-by"], "conveyor-workerpool");
  EXPECT_EQ(m["metadata"]["labels"]["conveyor.dev/pool"], "default");
  EXPECT_EQ(m["metadata"]["labels"]["app.kubernetes.io/part-of"], "conveyor") << "the template's labels are kept";
  EXPECT_EQ(pods.front().image, "registry.example/conveyor-worker:1a2b3c4") << "the PodTemplate's image";
  EXPECT_EQ(m["spec"]["terminationGracePeriodSeconds"], 45);

  // Live: max 3 -> 1 while all three are busy. Two drain: they finish the
  // job they run, take no other and exit 0; their pods complete.
  stack().db().exec("UPDATE conveyor.system_parameters SET max_number_of_worker_instances = 1");
  ASSERT_TRUE(wait_until(
      [&] {
        peak = std::max(peak, live_pods());
        return live_pods() == 1;
      },
      30s))
      << stack().logs_tail();
  EXPECT_EQ(stack().db().query_value("SELECT max(attempt) FROM conveyor.job"), "0") << "no job was interrupted";
  stack().db().exec("UPDATE conveyor.system_parameters SET max_number_of_worker_instances = 3");
  ASSERT_TRUE(wait_until(
      [&] {
        peak = std::max(peak, live_pods());
        return done() == 9;
      },
      60s))
      << stack().logs_tail();
  ASSERT_TRUE(wait_until([&] { return kube_->pods().empty(); }, 30s)) << stack().logs_tail();
  EXPECT_LE(peak, 3) << "never more pods than max_number_of_worker_instances";
  EXPECT_EQ(count("SELECT count(*) FROM conveyor.job_status_change WHERE to_status = 'started'"), 9)
      << "each job ran once";
  const auto d = deletes(*kube_);
  EXPECT_FALSE(d.empty());
  for (const auto& note : d) {
    EXPECT_TRUE(note.starts_with("deleted Succeeded pod")) << "a pod deleted before it completed: " << note;
  }
  EXPECT_TRUE(pool_running());
  EXPECT_NE(pool_log().find("scaling up 0 -> 3"), std::string::npos) << pool_log();
}

// A worker that stops heartbeating (its process frozen) is marked lost; the
// pool deletes exactly its pod and creates a replacement.
TEST_F(ClusterPoolTest, KubernetesLostWorkerPodIsDeletedAndReplaced) {
  start_kubernetes(2, 2);
  ASSERT_TRUE(wait_until([&] { return active() == 2 && live_pods() == 2; }, 30s)) << stack().logs_tail();
  const auto victim = kube_->pods().front();
  ASSERT_GT(victim.pid, 0);
  ASSERT_EQ(::kill(victim.pid, SIGSTOP), 0);
  ASSERT_TRUE(wait_until(
      [&] {
        const auto d = deletes(*kube_);
        return std::find(d.begin(), d.end(), "deleted Running pod " + victim.name) != d.end();
      },
      20s))
      << stack().logs_tail();
  ASSERT_TRUE(wait_until(
      [&] {
        const auto pods = kube_->pods();
        return active() == 2 && live_pods() == 2 &&
               std::none_of(pods.begin(), pods.end(), [&](const auto& p) { return p.name == victim.name; });
      },
      30s))
      << stack().logs_tail();
  EXPECT_EQ(deletes(*kube_), std::vector<std::string>{"deleted Running pod " + victim.name})
      << "only the lost worker's pod was deleted";
  EXPECT_EQ(count("SELECT count(*) FROM conveyor.worker WHERE status = 'lost'"), 1);
  EXPECT_EQ(count("SELECT count(*) FROM conveyor.worker"), 3) << "one replacement";
}

// 403, 409 and 5xx answers and a call that times out: each is logged with
// the API's message, calls back off, the pool never crashes, and it reaches
// the desired size once the API answers again; then min/max changed live.
TEST_F(ClusterPoolTest, KubernetesApiErrorsAreLoggedWithBackoffAndThePoolRecovers) {
  FakeKubernetes* k = nullptr;
  start_kubernetes(0, 2);
  k = kube_.get();
  k->inject({.method = "POST", .path_prefix = "/api/v1/namespaces/conveyor/pods", .status = 403, .count = 2});
  k->inject({.method = "POST", .path_prefix = "/api/v1/namespaces/conveyor/pods", .status = 409, .count = 1});
  k->inject({.method = "GET", .path_prefix = "/api/v1/namespaces/conveyor/pods", .status = 503, .count = 2});
  k->inject({.method = "GET", .path_prefix = "/api/v1/namespaces/conveyor/pods", .delay = 2500ms, .count = 1});
  stack().db().exec("UPDATE conveyor.system_parameters SET min_number_of_worker_instances = 1");
  ASSERT_TRUE(wait_until([&] { return active() == 1 && live_pods() == 1; }, 60s)) << stack().logs_tail();
  const std::string log = pool_log();
  EXPECT_NE(log.find("403 Forbidden: injected fault"), std::string::npos) << log;
  EXPECT_NE(log.find("409 Conflict"), std::string::npos) << log;
  EXPECT_NE(log.find("503 Service Unavailable"), std::string::npos) << log;
  EXPECT_NE(log.find("timed out after 1000 ms"), std::string::npos) << log;
  EXPECT_NE(log.find("next try in"), std::string::npos) << log;
  EXPECT_NE(log.find("worker start(s) in a row failed"), std::string::npos) << "spawns back off too: " << log;
  EXPECT_TRUE(pool_running());
  // Parameters live: min 2, max 2.
  stack().db().exec(
      "UPDATE conveyor.system_parameters SET min_number_of_worker_instances = 2, "
      "max_number_of_worker_instances = 2");
  ASSERT_TRUE(wait_until([&] { return active() == 2 && live_pods() == 2; }, 30s)) << stack().logs_tail();
  EXPECT_LE(live_pods(), 2);
}

// A token the API refuses and a PodTemplate that does not exist: the log
// names the cause and the key to fix; the pool keeps running.
TEST_F(ClusterPoolTest, KubernetesRefusalsNameTheCause) {
  start_kubernetes(1, 1, "wrong-token");
  ASSERT_TRUE(wait_until([&] { return pool_log().find("401 Unauthorized") != std::string::npos; }, 20s))
      << stack().logs_tail();
  EXPECT_EQ(pool_log().find("wrong-token"), std::string::npos) << "the token is never logged";
  EXPECT_TRUE(pool_running());
  EXPECT_EQ(live_pods(), 0);
}

// The pool stops (SIGTERM, e.g. a rolling update to a new image): its pods
// keep running; the next pool adopts them instead of starting new ones.
TEST_F(ClusterPoolTest, KubernetesRestartedPoolAdoptsRunningPods) {
  start_kubernetes(2, 2);
  ASSERT_TRUE(wait_until([&] { return active() == 2 && live_pods() == 2; }, 30s)) << stack().logs_tail();
  EXPECT_EQ(stack().process("workerpool").stop(15s), 0);
  EXPECT_EQ(live_pods(), 2) << "pods are not children of the pool";
  EXPECT_EQ(active(), 2);
  stack().start("workerpool");
  ASSERT_TRUE(wait_until([&] { return pool_log().find("adopted worker") != std::string::npos; }, 20s))
      << stack().logs_tail();
  ASSERT_TRUE(wait_until(
      [&] {
        return stack().db().query_value(
                   "SELECT count(*) FROM conveyor.service_instance WHERE service = 'conveyor-workerpool' AND status = 'up'") ==
               "1";
      },
      10s));
  // A few ticks: nothing new is created.
  const auto posts = [&] {
    int n = 0;
    for (const auto& r : kube_->requests()) n += r.method == "POST" && r.status == 201;
    return n;
  };
  const int before = posts();
  EXPECT_FALSE(wait_until([&] { return posts() > before; }, 3s)) << "the new pool started pods it did not need";
  EXPECT_EQ(live_pods(), 2);
  EXPECT_EQ(count("SELECT count(*) FROM conveyor.worker"), 2);
}

// In-cluster: the API server over TLS, found by KUBERNETES_SERVICE_HOST and
// _PORT, with the service account's token, CA and namespace.
TEST_F(ClusterPoolTest, KubernetesInClusterOverTls) {
  fs::create_directories(dir_ / "sa");
  const auto r = run({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                      "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", (dir_ / "key.pem").string(),
                      "-out", (dir_ / "sa" / "ca.crt").string()});
  ASSERT_EQ(r.status, 0) << r.output;
  std::ofstream(dir_ / "sa" / "token") << "fake-kubernetes-token\n";
  std::ofstream(dir_ / "sa" / "namespace") << "conveyor";
  FakeKubernetes::Options ko;
  ko.images = {{"conveyor-worker", executable("conveyor-worker")}};
  ko.log_dir = dir_ / "pods";
  ko.cert_file = dir_ / "sa" / "ca.crt";
  ko.key_file = dir_ / "key.pem";
  fs::create_directories(ko.log_dir);
  kube_ = std::make_unique<FakeKubernetes>(ko);
  kube_->put_pod_template(pod_template("conveyor-worker:dev"));
  const std::string port = kube_->url().substr(kube_->url().rfind(':') + 1);
  start_stack(1, 1,
              {{"CONVEYOR_WORKERPOOL_BACKEND", "kubernetes"},
               {"CONVEYOR_WORKERPOOL_KUBERNETES_SERVICE_ACCOUNT_DIR", (dir_ / "sa").string()},
               {"KUBERNETES_SERVICE_HOST", "127.0.0.1"},
               {"KUBERNETES_SERVICE_PORT", port}});
  kube_->put_config_map("conveyor-config", worker_env());
  stack().start("workerpool");
  ASSERT_TRUE(wait_until([&] { return active() == 1 && live_pods() == 1; }, 30s)) << stack().logs_tail();
  EXPECT_NE(pool_log().find("API https://127.0.0.1:" + port + ", namespace conveyor"), std::string::npos);
}

// ---------------------------------------------------------------- nomad

// Nomad: a backlog dispatches up to max workers; they drain by themselves
// (dispatches end dead, complete) and none is stopped by the pool.
TEST_F(ClusterPoolTest, NomadScalesToMaxAndDrainsWithoutStoppingADispatch) {
  start_nomad(0, 3);
  insert_sleeps(8, 1.5);
  int peak = 0;
  ASSERT_TRUE(wait_until(
      [&] {
        peak = std::max(peak, live_dispatches());
        return active() == 3;
      },
      30s))
      << stack().logs_tail();
  stack().db().exec("UPDATE conveyor.system_parameters SET max_number_of_worker_instances = 1");
  ASSERT_TRUE(wait_until(
      [&] {
        peak = std::max(peak, live_dispatches());
        return live_dispatches() <= 1;
      },
      30s))
      << stack().logs_tail();
  EXPECT_EQ(stack().db().query_value("SELECT max(attempt) FROM conveyor.job"), "0") << "no job was interrupted";
  stack().db().exec("UPDATE conveyor.system_parameters SET max_number_of_worker_instances = 3");
  ASSERT_TRUE(wait_until(
      [&] {
        peak = std::max(peak, live_dispatches());
        return done() == 8;
      },
      60s))
      << stack().logs_tail();
  ASSERT_TRUE(wait_until([&] { return live_dispatches() == 0; }, 30s)) << stack().logs_tail();
  EXPECT_LE(peak, 3);
  EXPECT_TRUE(deletes(*nomad_).empty()) << "drained workers end by themselves";
  for (const auto& d : nomad_->dispatches()) {
    EXPECT_EQ(d.meta.at("pool"), "default");
    EXPECT_FALSE(d.meta.at("worker_name").empty());
  }
  EXPECT_EQ(count("SELECT count(*) FROM conveyor.job_status_change WHERE to_status = 'started'"), 8);
}

// Nomad: a frozen worker is marked lost; the pool stops exactly its
// dispatch and dispatches a replacement.
TEST_F(ClusterPoolTest, NomadLostWorkerIsStoppedAndReplaced) {
  start_nomad(2, 2);
  ASSERT_TRUE(wait_until([&] { return active() == 2 && live_dispatches() == 2; }, 30s)) << stack().logs_tail();
  const auto victim = nomad_->dispatches().front();
  ASSERT_EQ(::kill(victim.pid, SIGSTOP), 0);
  ASSERT_TRUE(wait_until([&] { return !deletes(*nomad_).empty(); }, 20s)) << stack().logs_tail();
  ASSERT_TRUE(wait_until([&] { return active() == 2 && live_dispatches() == 2; }, 30s)) << stack().logs_tail();
  EXPECT_EQ(deletes(*nomad_), std::vector<std::string>{"stopped running job " + victim.id});
  EXPECT_EQ(count("SELECT count(*) FROM conveyor.worker WHERE status = 'lost'"), 1);
}

// Nomad: 403 (bad token), 5xx and a timeout are logged with back-off; the
// pool recovers when the API answers again.
TEST_F(ClusterPoolTest, NomadApiErrorsAreLoggedWithBackoffAndThePoolRecovers) {
  start_nomad(0, 1);
  nomad_->inject({.method = "POST", .path_prefix = "/v1/job/", .status = 403, .count = 1});
  nomad_->inject({.method = "POST", .path_prefix = "/v1/job/", .status = 500, .count = 1});
  nomad_->inject({.method = "GET", .path_prefix = "/v1/jobs", .status = 502, .count = 2});
  nomad_->inject({.method = "GET", .path_prefix = "/v1/jobs", .delay = 2500ms, .count = 1});
  stack().db().exec("UPDATE conveyor.system_parameters SET min_number_of_worker_instances = 1");
  ASSERT_TRUE(wait_until([&] { return active() == 1 && live_dispatches() == 1; }, 60s)) << stack().logs_tail();
  const std::string log = pool_log();
  EXPECT_NE(log.find("403 Forbidden: injected fault"), std::string::npos) << log;
  EXPECT_NE(log.find("500 Internal Server Error"), std::string::npos) << log;
  EXPECT_NE(log.find("502 Bad Gateway"), std::string::npos) << log;
  EXPECT_NE(log.find("timed out after 1000 ms"), std::string::npos) << log;
  EXPECT_NE(log.find("next try in"), std::string::npos) << log;
  EXPECT_TRUE(pool_running());
}

TEST_F(ClusterPoolTest, NomadWrongTokenIsRefusedAndNeverLogged) {
  start_nomad(1, 1, "not-the-token");
  ASSERT_TRUE(wait_until([&] { return pool_log().find("403 Forbidden: Permission denied") != std::string::npos; }, 20s))
      << stack().logs_tail();
  EXPECT_EQ(pool_log().find("not-the-token"), std::string::npos);
  EXPECT_TRUE(pool_running());
}

}  // namespace
}  // namespace conveyor::testing
