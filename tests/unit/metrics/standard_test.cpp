#include "conveyor/metrics/standard.hpp"

#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <regex>
#include <string>

#include <gtest/gtest.h>

#include "conveyor/error/error.hpp"

namespace conveyor::metrics {
namespace {

// The value of the unlabelled series `name` in a rendering, or -1.
double value_of(const std::string& text, const std::string& name) {
  const std::regex line("(^|\n)" + name + " ([^\n]+)");
  std::smatch m;
  if (!std::regex_search(text, m, line)) return -1;
  return std::stod(m[2].str());
}

TEST(StandardMetrics, ProcessMetricsAreReadFromProcAtEachRender) {
  Registry r;
  register_process_metrics(r);
  const std::string before = r.render();
  EXPECT_NE(before.find("# TYPE process_cpu_seconds_total counter\n"), std::string::npos) << before;
  EXPECT_NE(before.find("# TYPE process_open_fds gauge\n"), std::string::npos) << before;
  EXPECT_GT(value_of(before, "process_resident_memory_bytes"), 1024 * 1024);
  EXPECT_GE(value_of(before, "process_virtual_memory_bytes"), value_of(before, "process_resident_memory_bytes"));
  const double started = value_of(before, "process_start_time_seconds");
  const double now = static_cast<double>(std::time(nullptr));
  EXPECT_GT(started, now - 3600) << "this test process started within the hour";
  EXPECT_LE(started, now + 1);
  EXPECT_GE(value_of(before, "process_max_fds"), value_of(before, "process_open_fds"));

  // One more open file is seen by the next render: the value is read, not kept.
  const double fds = value_of(before, "process_open_fds");
  FILE* f = std::fopen("/proc/self/stat", "r");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(value_of(r.render(), "process_open_fds"), fds + 1);
  std::fclose(f);
}

TEST(StandardMetrics, BuildInfoIsOneWithServiceAndVersion) {
  Registry r;
  register_build_info(r, "conveyor-test", "1.2.3");
  EXPECT_NE(r.render().find("conveyor_build_info{service=\"conveyor-test\",version=\"1.2.3\"} 1\n"), std::string::npos)
      << r.render();
}

TEST(StandardMetrics, KnownCountersOfAServiceStartAtZero) {
  Registry r;
  register_known_counters(r, "conveyor-worker");
  const std::string text = r.render();
  EXPECT_NE(text.find("conveyor_worker_errors_total 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("conveyor_worker_jobs_total{outcome=\"failed\"} 0\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("conveyor_monitor_scans_total"), std::string::npos) << "another service's counter";
  // The service's own later increment lands on the same series.
  r.counter("conveyor_worker_jobs_total", "jobs this worker ran, by outcome", {{"outcome", "failed"}}).inc();
  EXPECT_NE(r.render().find("conveyor_worker_jobs_total{outcome=\"failed\"} 1\n"), std::string::npos);
}

TEST(StandardMetrics, AReaderAndAValueCannotShareASeries) {
  Registry r;
  r.gauge_fn("g", "a gauge", [] { return 2.0; });
  EXPECT_THROW(r.gauge("g", "a gauge"), Error);
  r.counter("c_total", "a counter");
  EXPECT_THROW(r.counter_fn("c_total", "a counter", [] { return 1.0; }), Error);
  EXPECT_NE(r.render().find("\ng 2\n"), std::string::npos) << r.render();
}

}  // namespace
}  // namespace conveyor::metrics
