#include "conveyor/metrics/metrics.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "conveyor/error/error.hpp"

namespace conveyor::metrics {
namespace {

enum FamilyType { kCounter = 0, kGauge = 1, kHistogram = 2 };

const char* type_name(int type) {
  switch (type) {
    case kCounter:
      return "counter";
    case kGauge:
      return "gauge";
    default:
      return "histogram";
  }
}

// Shortest text that reads back as the same double ("3", "0.25", "1e-05"),
// with Prometheus's spellings of infinities and NaN.
std::string format_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buf[64];
  const auto [ptr, ec] = std::to_chars(buf, buf + sizeof buf, value);
  if (ec != std::errc{}) return "NaN";  // cannot happen with 64 bytes
  return std::string(buf, ptr);
}

std::string escape_label_value(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string escape_help(const std::string& help) {
  std::string out;
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// {a="1",b="2"} with an optional extra label last (le for buckets).
std::string label_text(const Labels& labels, const std::string& extra_name = "", const std::string& extra_value = "") {
  if (labels.empty() && extra_name.empty()) return "";
  std::string out = "{";
  bool first = true;
  auto append = [&](const std::string& name, const std::string& value) {
    if (!first) out += ',';
    first = false;
    out += name + "=\"" + escape_label_value(value) + "\"";
  };
  for (const auto& [name, value] : labels) append(name, value);
  if (!extra_name.empty()) append(extra_name, extra_value);
  out += '}';
  return out;
}

void check_labels(const std::string& metric, const Labels& labels, bool histogram) {
  for (const auto& [name, value] : labels) {
    if (!valid_label_name(name)) {
      throw Error(errc::bad_input, "metric " + metric + ": invalid label name '" + name + "'");
    }
    if (histogram && name == "le") {
      throw Error(errc::bad_input, "metric " + metric + ": label 'le' is reserved for buckets");
    }
  }
}

}  // namespace

struct Registry::Family {
  int type = kCounter;
  std::string help;
  std::vector<double> buckets;  // histograms
  std::map<Labels, std::unique_ptr<Counter>> counters;
  std::map<Labels, std::unique_ptr<Gauge>> gauges;
  std::map<Labels, std::unique_ptr<Histogram>> histograms;
  std::map<Labels, std::function<double()>> readers;  // counter_fn, gauge_fn
};

void Counter::inc(double amount) {
  if (!(amount > 0)) return;
  value_.fetch_add(amount, std::memory_order_relaxed);
}

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)) {
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    if (!std::isfinite(bounds_[i]) || (i > 0 && !(bounds_[i - 1] < bounds_[i]))) {
      throw Error(errc::bad_input, "histogram buckets must be finite and strictly ascending");
    }
  }
  counts_.assign(bounds_.size() + 1, 0);
}

void Histogram::observe(double value) {
  // First bucket whose upper bound is >= value (buckets are "le").
  const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), value);
  const auto index = static_cast<std::size_t>(it - bounds_.begin());
  std::lock_guard lock(mutex_);
  ++counts_[index];
  sum_ += value;
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.bounds = bounds_;
  std::lock_guard lock(mutex_);
  std::uint64_t running = 0;
  for (std::uint64_t c : counts_) {
    running += c;
    s.cumulative.push_back(running);
  }
  s.count = running;
  s.sum = sum_;
  return s;
}

std::vector<double> default_buckets() { return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}; }

Registry::Registry() = default;
Registry::~Registry() = default;

Registry::Family& Registry::family(const std::string& name, const std::string& help, int type) {
  if (!valid_metric_name(name)) {
    throw Error(errc::bad_input, "invalid metric name '" + name + "'");
  }
  auto it = families_.find(name);
  if (it == families_.end()) {
    auto f = std::make_unique<Family>();
    f->type = type;
    f->help = help;
    it = families_.emplace(name, std::move(f)).first;
  } else if (it->second->type != type) {
    throw Error(errc::bad_input,
                "metric " + name + " is already a " + type_name(it->second->type) + ", not a " + type_name(type));
  }
  return *it->second;
}

Counter& Registry::counter(const std::string& name, const std::string& help, const Labels& labels) {
  check_labels(name, labels, false);
  std::lock_guard lock(mutex_);
  Family& f = family(name, help, kCounter);
  if (f.readers.count(labels) > 0) {
    throw Error(errc::bad_input, "metric " + name + " already has this series as a reader");
  }
  auto& series = f.counters[labels];
  if (!series) series = std::make_unique<Counter>();
  return *series;
}

Gauge& Registry::gauge(const std::string& name, const std::string& help, const Labels& labels) {
  check_labels(name, labels, false);
  std::lock_guard lock(mutex_);
  Family& f = family(name, help, kGauge);
  if (f.readers.count(labels) > 0) {
    throw Error(errc::bad_input, "metric " + name + " already has this series as a reader");
  }
  auto& series = f.gauges[labels];
  if (!series) series = std::make_unique<Gauge>();
  return *series;
}

Histogram& Registry::histogram(const std::string& name, const std::string& help, const std::vector<double>& buckets,
                               const Labels& labels) {
  check_labels(name, labels, true);
  std::lock_guard lock(mutex_);
  Family& f = family(name, help, kHistogram);
  if (f.histograms.empty()) {
    f.buckets = buckets;
  } else if (f.buckets != buckets) {
    // One family, one bucket layout: otherwise sums across series are meaningless.
    throw Error(errc::bad_input, "histogram " + name + " is already registered with other buckets");
  }
  auto& series = f.histograms[labels];
  if (!series) series = std::make_unique<Histogram>(buckets);
  return *series;
}

void Registry::add_reader(const std::string& name, const std::string& help, int type, std::function<double()> read,
                          const Labels& labels) {
  check_labels(name, labels, false);
  std::lock_guard lock(mutex_);
  Family& f = family(name, help, type);
  if ((type == kCounter && f.counters.count(labels) > 0) || (type == kGauge && f.gauges.count(labels) > 0)) {
    throw Error(errc::bad_input, "metric " + name + " already has this series as a value, not a reader");
  }
  f.readers[labels] = std::move(read);
}

void Registry::counter_fn(const std::string& name, const std::string& help, std::function<double()> read,
                          const Labels& labels) {
  add_reader(name, help, kCounter, std::move(read), labels);
}

void Registry::gauge_fn(const std::string& name, const std::string& help, std::function<double()> read,
                        const Labels& labels) {
  add_reader(name, help, kGauge, std::move(read), labels);
}

std::string Registry::render() const {
  std::lock_guard lock(mutex_);
  std::string out;
  for (const auto& [name, f] : families_) {
    out += "# HELP " + name + " " + escape_help(f->help) + "\n";
    out += "# TYPE " + name + " " + type_name(f->type) + "\n";
    for (const auto& [labels, c] : f->counters) {
      out += name + label_text(labels) + " " + format_value(c->value()) + "\n";
    }
    for (const auto& [labels, g] : f->gauges) {
      out += name + label_text(labels) + " " + format_value(g->value()) + "\n";
    }
    for (const auto& [labels, read] : f->readers) {
      out += name + label_text(labels) + " " + format_value(read()) + "\n";
    }
    for (const auto& [labels, h] : f->histograms) {
      const Histogram::Snapshot s = h->snapshot();
      for (std::size_t i = 0; i < s.bounds.size(); ++i) {
        out += name + "_bucket" + label_text(labels, "le", format_value(s.bounds[i])) + " " +
               std::to_string(s.cumulative[i]) + "\n";
      }
      out += name + "_bucket" + label_text(labels, "le", "+Inf") + " " + std::to_string(s.count) + "\n";
      out += name + "_sum" + label_text(labels) + " " + format_value(s.sum) + "\n";
      out += name + "_count" + label_text(labels) + " " + std::to_string(s.count) + "\n";
    }
  }
  return out;
}

Registry& default_registry() {
  static Registry registry;
  return registry;
}

bool valid_metric_name(const std::string& name) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    const bool digit = c >= '0' && c <= '9';
    if (!(alpha || (i > 0 && digit))) return false;
  }
  return true;
}

bool valid_label_name(const std::string& name) {
  if (name.empty() || name.rfind("__", 0) == 0) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    const bool digit = c >= '0' && c <= '9';
    if (!(alpha || (i > 0 && digit))) return false;
  }
  return true;
}

}  // namespace conveyor::metrics
