// conveyor-bench [--jobs N] [--latency-jobs M] [--workers W] [--submitters S] [--type T]
//
// Starts the whole job path (Stack: its own PostgreSQL database, devbroker,
// services, W workers), then
//  1. throughput: submits N `sleep 0` jobs through the REST API from S
//     threads and reports jobs/s from the first submission to the last `done`;
//  2. latency at low load: submits M jobs one at a time, each after the
//     previous is done, and reports median and p99 of created_at → done
//     (both timestamps taken by PostgreSQL).
// Publication posts to a local conveyor-webhook-sink and writes file manifests.
// --type: the job type of every job (default sleep; sleep-container runs the
// same program as a container, so the two runs give a container job's
// overhead). --jobs 0 skips the throughput part. CONTAINERS_CONF and
// DOCKER_HOST are passed on to the workers (their runtime's settings).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "conveyor/http/client.hpp"
#include "conveyor/http/server.hpp"
#include "conveyor/testing/stack.hpp"

namespace {

using namespace std::chrono_literals;
using conveyor::testing::Stack;

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  auto idx = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(idx, v.size() - 1)];
}

std::int64_t submit(const Stack& stack, const std::string& body) {
  auto r = conveyor::http::http_request("POST", stack.api_url() + "/v1/jobs", body,
                                        stack.api_headers(true));
  if (r.status != 201) throw std::runtime_error("submit failed: " + std::to_string(r.status) + " " + r.body);
  return nlohmann::json::parse(r.body).at("id").get<std::int64_t>();
}

}  // namespace

int main(int argc, char** argv) {
  int jobs = 1000, latency_jobs = 50, workers = 2, submitters = 4;
  std::string type = "sleep";
  const char* kUsage =
      "usage: conveyor-bench [--jobs N] [--latency-jobs M] [--workers W] [--submitters S] [--type T]\n";
  if (argc % 2 == 0) {
    std::cerr << kUsage;
    return 2;
  }
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const std::string value = argv[i + 1];
    if (a == "--type") {
      type = value;
      continue;
    }
    int v = 0;
    try {
      std::size_t used = 0;
      v = std::stoi(value, &used);
      if (used != value.size() || v < 0) throw std::invalid_argument(value);
    } catch (const std::exception&) {
      std::cerr << "conveyor-bench: " << a << ": expected a whole number >= 0, got '" << value << "'\n" << kUsage;
      return 2;
    }
    if (a == "--jobs") jobs = v;
    else if (a == "--latency-jobs") latency_jobs = v;
    else if (a == "--workers") workers = v;
    else if (a == "--submitters") submitters = v;
    else {
      std::cerr << kUsage;
      return 2;
    }
  }
  // A webhook receiver in this process, as the endpoint of every webhook sink.
  conveyor::http::Server hook("127.0.0.1", 0);
  hook.route("POST", "/hook", [](const conveyor::http::Request&) {
    return conveyor::http::Response::json(nlohmann::json::object());
  });
  hook.start();

  Stack::Options o;
  o.workers = workers;
  o.env["CONVEYOR_LOG_LEVEL"] = "warn";
  for (const char* k : {"CONTAINERS_CONF", "DOCKER_HOST", "HOME"}) {
    if (const char* v = std::getenv(k)) o.env[k] = v;
  }
  o.setup_sql = "UPDATE conveyor.system_parameters SET publication_endpoint_url = 'http://127.0.0.1:" +
                std::to_string(hook.port()) + "/hook'";
  Stack stack(o);
  auto& db = stack.db();
  const std::string body =
      nlohmann::json{{"job_type", type}, {"params", {{"seconds", 0}}}}.dump();
  auto open_jobs = [&] {
    return std::stoll(db.query_value("SELECT count(*) FROM conveyor.job WHERE status NOT IN ('done','failed','canceled','internal_error')"));
  };

  // Warm-up: consumer groups joined, connections open.
  submit(stack, body);
  conveyor::testing::wait_until([&] { return open_jobs() == 0; }, 60s);

  // 1. Throughput.
  if (jobs > 0) {
    std::int64_t before = std::stoll(db.query_value("SELECT coalesce(max(id), 0) FROM conveyor.job"));
    auto t0 = std::chrono::steady_clock::now();
    std::atomic<int> next{0};
    std::vector<std::thread> threads;
    for (int s = 0; s < submitters; ++s) {
      threads.emplace_back([&] {
        while (next.fetch_add(1) < jobs) submit(stack, body);
      });
  }
  for (auto& t : threads) t.join();
  auto t_submitted = std::chrono::steady_clock::now();
  bool finished = conveyor::testing::wait_until([&] { return open_jobs() == 0; }, 600s);
  auto t1 = std::chrono::steady_clock::now();
  auto secs = std::chrono::duration<double>(t1 - t0).count();
  auto sub_secs = std::chrono::duration<double>(t_submitted - t0).count();
  auto done = db.query_value("SELECT count(*) FROM conveyor.job WHERE id > " + std::to_string(before) +
                             " AND status = 'done'");
  std::printf("throughput: %d %s 0 s jobs, %d workers: %s done in %.2f s = %.1f jobs/s "
              "(submission alone %.2f s = %.1f jobs/s)%s\n",
              jobs, type.c_str(), workers, done.c_str(), secs, jobs / secs, sub_secs, jobs / sub_secs,
              finished ? "" : " [TIMED OUT]");
  auto sql_span = db.query_value(
      "SELECT extract(epoch FROM max(c.at) - min(j.created_at)) FROM conveyor.job j "
      "JOIN conveyor.job_status_change c ON c.job_id = j.id AND c.to_status = 'done' WHERE j.id > " +
      std::to_string(before));
  std::printf("throughput (database clock, first created_at to last done): %s s\n", sql_span.c_str());
  if (!finished) return 1;
  }

  // 2. Latency at low load.
  std::vector<double> ms;
  for (int i = 0; i < latency_jobs; ++i) {
    auto id = std::to_string(submit(stack, body));
    conveyor::testing::wait_until(
        [&] { return db.query_value("SELECT status FROM conveyor.job WHERE id = " + id) == "done"; }, 60s);
    auto v = db.query_value(
        "SELECT extract(epoch FROM c.at - j.created_at) * 1000 FROM conveyor.job j JOIN conveyor.job_status_change c "
        "ON c.job_id = j.id AND c.to_status = 'done' WHERE j.id = " + id);
    if (!v.empty()) ms.push_back(std::stod(v));
  }
  std::printf("latency submit->done at low load (%zu %s jobs, one at a time): median %.1f ms, p99 %.1f ms, max %.1f ms\n",
              ms.size(), type.c_str(), percentile(ms, 0.5), percentile(ms, 0.99), percentile(ms, 1.0));
  // The attempt itself, as the worker measured it (spawn or container start
  // to exit), and what it cost.
  auto attempts = db.query(
      "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY wall_ms), "
      "percentile_cont(0.5) WITHIN GROUP (ORDER BY cpu_user_ms + cpu_system_ms), "
      "percentile_cont(0.5) WITHIN GROUP (ORDER BY max_rss_kb) FROM conveyor.job_attempt "
      "WHERE job_id > (SELECT max(id) - " + std::to_string(latency_jobs) + " FROM conveyor.job)");
  if (!attempts.empty() && !attempts[0][0].empty()) {
    std::printf("  median attempt: wall %s ms, cpu %s ms, peak memory %s KiB\n", attempts[0][0].c_str(),
                attempts[0][1].empty() ? "-" : attempts[0][1].c_str(),
                attempts[0][2].empty() ? "-" : attempts[0][2].c_str());
  }
  // Per stage, from the history, for the low-load jobs.
  auto stages = db.query(
      "SELECT c.to_status, percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM c.at - p.at) * 1000) "
      "FROM conveyor.job_status_change c JOIN conveyor.job_status_change p "
      "ON p.job_id = c.job_id AND p.id = (SELECT max(id) FROM conveyor.job_status_change x WHERE x.job_id = c.job_id AND x.id < c.id) "
      "WHERE c.job_id > (SELECT max(id) - " + std::to_string(latency_jobs) + " FROM conveyor.job) "
      "GROUP BY c.to_status ORDER BY min(c.id)");
  for (const auto& row : stages) std::printf("  median time to %-11s %8.1f ms\n", row[0].c_str(), std::stod(row[1]));
  return 0;
}
