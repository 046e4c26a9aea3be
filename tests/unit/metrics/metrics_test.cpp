#include "conveyor/metrics/metrics.hpp"

#include <limits>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "conveyor/error/error.hpp"

namespace conveyor::metrics {
namespace {

TEST(Metrics, CounterFamilyWithLabels) {
  Registry r;
  r.counter("jobs_total", "Jobs seen.", {{"status", "done"}}).inc();
  r.counter("jobs_total", "Jobs seen.", {{"status", "done"}}).inc(2);
  r.counter("jobs_total", "Jobs seen.", {{"status", "failed"}}).inc();
  r.counter("jobs_total", "Jobs seen.", {{"status", "failed"}}).inc(-5);  // ignored
  EXPECT_EQ(r.render(),
            "# HELP jobs_total Jobs seen.\n"
            "# TYPE jobs_total counter\n"
            "jobs_total{status=\"done\"} 3\n"
            "jobs_total{status=\"failed\"} 1\n");
}

TEST(Metrics, GaugeWithoutLabelsAndFractions) {
  Registry r;
  Gauge& g = r.gauge("queue_depth", "Jobs waiting.");
  g.set(10);
  g.inc(0.5);
  g.dec(3);
  EXPECT_DOUBLE_EQ(g.value(), 7.5);
  EXPECT_EQ(r.render(),
            "# HELP queue_depth Jobs waiting.\n"
            "# TYPE queue_depth gauge\n"
            "queue_depth 7.5\n");
}

TEST(Metrics, HistogramBucketsAreCumulative) {
  Registry r;
  Histogram& h = r.histogram("latency_seconds", "Latency.", {0.1, 0.5, 1}, {{"route", "/x"}});
  h.observe(0.05);
  h.observe(0.1);  // le is inclusive
  h.observe(0.3);
  h.observe(7);
  EXPECT_EQ(r.render(),
            "# HELP latency_seconds Latency.\n"
            "# TYPE latency_seconds histogram\n"
            "latency_seconds_bucket{route=\"/x\",le=\"0.1\"} 2\n"
            "latency_seconds_bucket{route=\"/x\",le=\"0.5\"} 3\n"
            "latency_seconds_bucket{route=\"/x\",le=\"1\"} 3\n"
            "latency_seconds_bucket{route=\"/x\",le=\"+Inf\"} 4\n"
            "latency_seconds_sum{route=\"/x\"} 7.45\n"
            "latency_seconds_count{route=\"/x\"} 4\n");
}

TEST(Metrics, HistogramWithoutLabels) {
  Registry r;
  r.histogram("size_bytes", "Sizes.", {10}).observe(3);
  EXPECT_EQ(r.render(),
            "# HELP size_bytes Sizes.\n"
            "# TYPE size_bytes histogram\n"
            "size_bytes_bucket{le=\"10\"} 1\n"
            "size_bytes_bucket{le=\"+Inf\"} 1\n"
            "size_bytes_sum 3\n"
            "size_bytes_count 1\n");
}

TEST(Metrics, LabelValuesAndHelpAreEscaped) {
  Registry r;
  r.counter("odd_total", "Help with \\ and\nnewline.", {{"a", "back\\slash"}, {"b", "q\"uote\nnl"}}).inc();
  EXPECT_EQ(r.render(),
            "# HELP odd_total Help with \\\\ and\\nnewline.\n"
            "# TYPE odd_total counter\n"
            "odd_total{a=\"back\\\\slash\",b=\"q\\\"uote\\nnl\"} 1\n");
}

TEST(Metrics, FamiliesAreSortedAndEachHasOneHeader) {
  Registry r;
  r.gauge("b_gauge", "B.").set(1);
  r.counter("a_total", "A.", {{"x", "2"}}).inc();
  r.counter("a_total", "A.", {{"x", "1"}}).inc();
  EXPECT_EQ(r.render(),
            "# HELP a_total A.\n"
            "# TYPE a_total counter\n"
            "a_total{x=\"1\"} 1\n"
            "a_total{x=\"2\"} 1\n"
            "# HELP b_gauge B.\n"
            "# TYPE b_gauge gauge\n"
            "b_gauge 1\n");
}

TEST(Metrics, InvalidNamesAndTypeClashesAreRejected) {
  Registry r;
  EXPECT_THROW(r.counter("1bad", "x"), Error);
  EXPECT_THROW(r.counter("has-dash", "x"), Error);
  EXPECT_THROW(r.counter("ok_total", "x", {{"bad-label", "v"}}), Error);
  EXPECT_THROW(r.counter("ok_total", "x", {{"__reserved", "v"}}), Error);
  EXPECT_THROW(r.histogram("h", "x", {1}, {{"le", "v"}}), Error);
  EXPECT_THROW(r.histogram("h2", "x", {2, 1}), Error);
  r.counter("ns:name_total", "x");
  EXPECT_THROW(r.gauge("ns:name_total", "x"), Error);
  r.histogram("h3", "x", {1, 2});
  EXPECT_THROW(r.histogram("h3", "x", {1, 3}, {{"a", "b"}}), Error);
  EXPECT_TRUE(valid_metric_name("a:b_c9"));
  EXPECT_FALSE(valid_metric_name(""));
}

TEST(Metrics, SpecialValues) {
  Registry r;
  r.gauge("g", "x").set(-std::numeric_limits<double>::infinity());
  EXPECT_EQ(r.render(), "# HELP g x\n# TYPE g gauge\ng -Inf\n");
}

TEST(Metrics, ConcurrentIncrementsAreNotLost) {
  Registry r;
  Counter& c = r.counter("c_total", "x");
  Histogram& h = r.histogram("h_seconds", "x", {1});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c.inc();
        h.observe(0.5);
        r.counter("c_total", "x");  // concurrent lookups too
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_DOUBLE_EQ(c.value(), 40000);
  EXPECT_EQ(h.snapshot().count, 40000u);
}

TEST(Metrics, DefaultRegistryIsOneInstance) { EXPECT_EQ(&default_registry(), &default_registry()); }

}  // namespace
}  // namespace conveyor::metrics
