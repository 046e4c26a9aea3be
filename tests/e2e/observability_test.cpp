// Observability of the running system (issue 15, item 3), on real processes:
// every process found through the monitor's Prometheus service discovery
// serves a /metrics that `promtool check metrics` accepts without a lint
// remark, every thread of a service or a worker has a name of its own, and
// every event of a job on the Kafka topics is a CloudEvent in the Kafka
// binding's structured mode, naming the service that made the change.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "conveyor/bus/cloudevent.hpp"
#include "conveyor/bus/kafka.hpp"
#include "conveyor/bus/topics.hpp"
#include "conveyor/http/client.hpp"
#include "conveyor/testing/stack.hpp"
#include "conveyor/text/text.hpp"
#include "e2e.hpp"

namespace {

namespace ct = conveyor::testing;
namespace fs = std::filesystem;
using conveyor::e2e::SleepTypeFile;
using conveyor::e2e::file_sink;
using conveyor::e2e::status_of;
using conveyor::e2e::submit;
using ct::Stack;
using ct::wait_until;
using json = nlohmann::json;
using namespace std::chrono_literals;

// The six services and one worker, which the pool starts (so it has a free
// port and is found only through the registry).
Stack::Options whole_system(const SleepTypeFile& types) {
  Stack::Options o;
  o.workers = 0;
  o.services = {"creation", "configuration", "execution", "publication", "monitor", "workerpool"};
  o.job_types_file = types.path();
  o.setup_sql =
      "UPDATE conveyor.system_parameters SET min_number_of_worker_instances = 1, "
      "max_number_of_worker_instances = 1";
  return o;
}

std::string done_job(Stack& stack) {
  const auto j = submit(stack, {{"job_type", "sleep"}, {"params", {{"seconds", 0}}}});
  const std::string id = std::to_string(j.at("id").get<std::int64_t>());
  EXPECT_TRUE(wait_until([&] { return status_of(stack, id) == "done"; }, 90s)) << status_of(stack, id) << "\n"
                                                                               << stack.logs_tail();
  return id;
}

// The monitor's GET /v1/sd, once it lists `services` (the pool's worker
// registers a moment after it starts).
json discovered(Stack& stack, const std::set<std::string>& services) {
  const std::string url = "http://127.0.0.1:" + std::to_string(stack.port("monitor")) + "/v1/sd";
  json groups;
  const bool all = wait_until(
      [&] {
        const auto r = conveyor::http::http_request("GET", url, "", stack.api_headers(), 5s);
        if (r.status != 200) return false;
        groups = json::parse(r.body);
        std::set<std::string> seen;
        for (const auto& g : groups) seen.insert(g.at("labels").at("service").get<std::string>());
        return seen == services;
      },
      30s);
  EXPECT_TRUE(all) << groups.dump();
  return groups;
}

TEST(Observability, PromtoolAcceptsTheMetricsOfEveryDiscoveredProcess) {
  SleepTypeFile types(30, 1, json::array({file_sink()}));
  Stack stack(whole_system(types));
  done_job(stack);  // so histograms and labelled counters have values too

  const std::set<std::string> services = {"conveyor-creation",    "conveyor-configuration", "conveyor-execution",
                                          "conveyor-publication", "conveyor-monitor",       "conveyor-workerpool",
                                          "conveyor-worker"};
  const json groups = discovered(stack, services);
  ASSERT_EQ(groups.size(), services.size()) << groups.dump();
  for (const auto& g : groups) {
    const std::string service = g.at("labels").at("service");
    const std::string target = g.at("targets").at(0);
    const auto r = conveyor::http::http_request("GET", "http://" + target + "/metrics", "", {}, 5s);
    ASSERT_EQ(r.status, 200) << service << " at " << target;
    EXPECT_NE(r.body.find("conveyor_build_info{service=\"" + service + "\""), std::string::npos) << service;
    for (const char* name :
         {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
          "process_start_time_seconds", "process_open_fds", "process_max_fds"}) {
      EXPECT_NE(r.body.find(std::string("\n") + name + " "), std::string::npos) << service << ": " << name;
    }
    const fs::path file = stack.data_dir() / (service + ".metrics");
    std::ofstream(file) << r.body;
    // promtool reads the exposition on stdin; lint remarks go to its output
    // with exit 0 in some versions, so the output must be empty too.
    const auto check = ct::run({"sh", "-c", "promtool check metrics < '" + file.string() + "'"});
    EXPECT_EQ(check.status, 0) << service << ":\n" << check.output;
    EXPECT_EQ(check.output, "") << service << ": promtool lint remarks";
  }
  if (HasFailure()) std::cerr << stack.logs_tail();
}

// The names of process `pid`'s threads other than its main thread
// (/proc/<pid>/task/<tid>/comm).
std::multiset<std::string> thread_names(int pid) {
  std::multiset<std::string> names;
  for (const auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    if (task.path().filename() == std::to_string(pid)) continue;
    std::string name;
    std::getline(std::ifstream(task.path() / "comm"), name);
    names.insert(name);
  }
  return names;
}

// `top -H`, `ps -L` and perf name a busy thread by what it does: every thread
// a service or a worker starts has a name of its own (librdkafka names its
// own, "rdk:..."); none is left with the process's name.
TEST(Observability, EveryThreadOfAServiceOrAWorkerIsNamed) {
  SleepTypeFile types(30, 1, json::array({file_sink()}));
  Stack::Options o;
  o.workers = 1;
  o.services = {"creation", "configuration", "execution", "publication"};
  o.job_types_file = types.path();
  Stack stack(o);
  done_job(stack);  // the job path's threads have all run

  const std::map<std::string, std::set<std::string>> expected = {
      {"creation", {"signals", "timer", "relay", "kafka-params", "http-accept", "http-0"}},
      {"configuration", {"signals", "timer", "listen", "relay", "kafka-params", "kafka-jobs", "http-accept"}},
      {"publication", {"signals", "timer", "listen", "relay", "kafka-params", "kafka-jobs", "http-accept"}},
      {"worker-1", {"executor-0", "executor-1", "reactor", "monitor", "http-accept"}},
  };
  for (const auto& [process, names] : expected) {
    const int pid = stack.process(process).pid();
    std::string process_name;
    std::getline(std::ifstream("/proc/" + std::to_string(pid) + "/comm"), process_name);
    const auto threads = thread_names(pid);
    std::string listed;
    for (const auto& t : threads) listed += " " + t;
    for (const auto& name : names) {
      EXPECT_TRUE(threads.count(name)) << process << " has no thread " << name << ":" << listed;
    }
    EXPECT_EQ(threads.count(process_name), 0u) << process << ": a thread without a name of its own:" << listed;
  }
}

// The stage that makes each change of a job's hot path (DESIGN §3).
const std::map<std::string, std::string> kSourceOf = {
    {"io.conveyor.job.initialized", "conveyor-creation"}, {"io.conveyor.job.configured", "conveyor-configuration"},
    {"io.conveyor.job.ready", "conveyor-configuration"},  {"io.conveyor.job.queued", "conveyor-execution"},
    {"io.conveyor.job.started", "conveyor-worker"},       {"io.conveyor.job.processed", "conveyor-worker"},
    {"io.conveyor.job.done", "conveyor-publication"},
};

TEST(Observability, EveryEventOfAJobIsAStructuredCloudEventNamingItsService) {
  SleepTypeFile types(30, 1, json::array({file_sink()}));
  Stack stack(whole_system(types));
  const std::string id = done_job(stack);

  conveyor::bus::ConsumerOptions o;
  o.brokers = stack.broker().bootstrap();
  o.group_id = ct::unique_name("cloudevents-check");
  o.topics = conveyor::bus::job_event_topics(stack.topic_prefix(), conveyor::bus::job_event_types());
  conveyor::bus::Consumer consumer(o);
  std::map<std::string, json> by_type;  // this job's events, as sent
  std::set<std::string> ids;
  ASSERT_TRUE(wait_until(
      [&] {
        for (const auto& m : consumer.poll(100, 200ms)) {
          const json envelope = json::parse(m.value);
          if (envelope.value("subject", "") != id) continue;
          EXPECT_EQ(m.headers, (conveyor::bus::Headers{{"content-type", "application/cloudevents+json"}})) << m.value;
          const auto event = conveyor::bus::decode(m.value);  // validates the envelope
          ids.insert(event.id);
          by_type[event.type] = envelope;
        }
        // One topic per type: the events of a job arrive in any order.
        return std::all_of(kSourceOf.begin(), kSourceOf.end(),
                           [&](const auto& type_source) { return by_type.contains(type_source.first); });
      },
      60s))
      << "events seen: " << by_type.size() << "\n"
      << stack.logs_tail();

  for (const auto& [type, source] : kSourceOf) {
    ASSERT_TRUE(by_type.contains(type)) << type << " was not on the topic";
    const json& e = by_type[type];
    EXPECT_EQ(e.at("specversion"), "1.0") << type;
    EXPECT_FALSE(e.at("id").get<std::string>().empty()) << type;
    EXPECT_EQ(e.at("source"), source) << type << ": the service that made the change, not the relay";
    EXPECT_TRUE(conveyor::text::is_rfc3339(e.at("time").get<std::string>())) << e.dump();
    EXPECT_EQ(e.at("datacontenttype"), "application/json") << type;
    EXPECT_EQ(e.at("data").at("to_status"), type.substr(std::string("io.conveyor.job.").size())) << e.dump();
  }
  EXPECT_GE(ids.size(), kSourceOf.size()) << "every event has its own id";
}

}  // namespace
