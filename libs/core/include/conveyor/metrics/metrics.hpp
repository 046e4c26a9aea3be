#pragma once
// conveyor::metrics — counters, gauges and histograms rendered in the
// Prometheus text exposition format 0.0.4 (GET /metrics).
//
// A series is a metric name plus a constant label set; series of one name
// form a family with one # HELP and one # TYPE line. Keep label values
// low-cardinality (route patterns, statuses, job types; never ids).
//
// Thread-safe: Registry and every metric may be used from any thread.
// Metrics are owned by their Registry; references stay valid for its life.
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace conveyor::metrics {

using Labels = std::map<std::string, std::string>;

class Counter {
 public:
  void inc(double amount = 1.0);  // amount < 0 is ignored: counters only go up
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Gauge {
 public:
  void set(double value) { value_.store(value, std::memory_order_relaxed); }
  void inc(double amount = 1.0) { value_.fetch_add(amount, std::memory_order_relaxed); }
  void dec(double amount = 1.0) { value_.fetch_sub(amount, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Histogram {
 public:
  struct Snapshot {
    std::vector<double> bounds;             // upper bounds, ascending, without +Inf
    std::vector<std::uint64_t> cumulative;  // one per bound, then +Inf (= count)
    double sum = 0;
    std::uint64_t count = 0;
  };
  // `bounds` must be ascending and finite; throws Error(bad_input) otherwise.
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  Snapshot snapshot() const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mutex_;
  std::vector<std::uint64_t> counts_;  // per bucket, last one is +Inf
  double sum_ = 0;
};

// Prometheus's default buckets: 5 ms to 10 s.
std::vector<double> default_buckets();

class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Returns the series for (name, labels), creating it on first use. Throws
  // Error(bad_input) for an invalid metric or label name, or a name already
  // registered with another type (or, for histograms, other buckets).
  Counter& counter(const std::string& name, const std::string& help, const Labels& labels = {});
  Gauge& gauge(const std::string& name, const std::string& help, const Labels& labels = {});
  Histogram& histogram(const std::string& name, const std::string& help,
                       const std::vector<double>& buckets = default_buckets(), const Labels& labels = {});

  // A series whose value `read` returns at each render (process_* metrics
  // read from /proc). Registering it again replaces the reader. `read` runs
  // under the registry's lock: it must be quick and must not use the registry.
  void counter_fn(const std::string& name, const std::string& help, std::function<double()> read,
                  const Labels& labels = {});
  void gauge_fn(const std::string& name, const std::string& help, std::function<double()> read,
                const Labels& labels = {});

  // Text exposition format 0.0.4; families sorted by name, series by labels.
  std::string render() const;

 private:
  struct Family;
  Family& family(const std::string& name, const std::string& help, int type);
  void add_reader(const std::string& name, const std::string& help, int type, std::function<double()> read,
                  const Labels& labels);

  mutable std::mutex mutex_;
  std::map<std::string, std::unique_ptr<Family>> families_;
};

// The process-wide registry that GET /metrics renders by default.
Registry& default_registry();

// [a-zA-Z_:][a-zA-Z0-9_:]*
bool valid_metric_name(const std::string& name);
// [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__" (reserved)
bool valid_label_name(const std::string& name);

}  // namespace conveyor::metrics
