#include "conveyor/metrics/standard.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <vector>

namespace conveyor::metrics {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The fields of /proc/self/stat after "pid (comm)", so that fields()[0] is
// field 3 (state) of proc(5). comm may hold spaces and parentheses: the
// fields start after the last ')'.
std::vector<std::string> stat_fields() {
  std::ifstream in("/proc/self/stat");
  std::string line;
  if (!std::getline(in, line)) return {};
  const auto close = line.rfind(')');
  if (close == std::string::npos) return {};
  std::istringstream rest(line.substr(close + 1));
  std::vector<std::string> fields;
  for (std::string f; rest >> f;) fields.push_back(f);
  return fields;
}

// Field `n` (1-based, as proc(5) numbers them) of /proc/self/stat, or NaN.
double stat_field(const std::vector<std::string>& fields, std::size_t n) {
  if (n < 3 || n - 3 >= fields.size()) return kNaN;
  try {
    return std::stod(fields[n - 3]);
  } catch (const std::exception&) {
    return kNaN;
  }
}

double clock_ticks() { return static_cast<double>(sysconf(_SC_CLK_TCK)); }

double cpu_seconds() {
  const auto f = stat_fields();
  return (stat_field(f, 14) + stat_field(f, 15)) / clock_ticks();  // utime + stime
}

double resident_bytes() { return stat_field(stat_fields(), 24) * static_cast<double>(sysconf(_SC_PAGESIZE)); }

double virtual_bytes() { return stat_field(stat_fields(), 23); }

// Boot time (btime of /proc/stat) plus the start time in ticks after boot.
double start_time_seconds() {
  std::ifstream in("/proc/stat");
  double boot = kNaN;
  for (std::string key; in >> key;) {
    if (key == "btime") {
      in >> boot;
      break;
    }
    in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return boot + stat_field(stat_fields(), 22) / clock_ticks();
}

double open_fds() {
  std::error_code ec;
  double n = 0;
  for (std::filesystem::directory_iterator it("/proc/self/fd", ec), end; !ec && it != end; it.increment(ec)) {
    ++n;
  }
  // The iterator's own descriptor is one of them while it runs.
  return ec ? kNaN : std::max(0.0, n - 1);
}

double max_fds() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return kNaN;
  return limit.rlim_cur == RLIM_INFINITY ? std::numeric_limits<double>::infinity()
                                         : static_cast<double>(limit.rlim_cur);
}

struct KnownCounter {
  const char* service;  // nullptr: every service
  const char* name;
  const char* help;
  const char* label;                // nullptr: no label
  std::vector<const char*> values;  // of `label`
};

// The help texts are the ones the services pass when they increment: the
// first registration's help is the one rendered.
std::vector<KnownCounter> stage_counters() {
  return {
      {"conveyor-creation",
       "conveyor_http_rate_limited_total",
       "Submissions refused by the per-token rate limit.",
       nullptr,
       {}},
      {"conveyor-creation", "conveyor_trigger_jobs_created_total", "downstream jobs created by triggers", nullptr, {}},
      {"conveyor-creation",
       "conveyor_trigger_failures_total",
       "upstream jobs whose triggers could not be created",
       nullptr,
       {}},
      {"conveyor-creation", "conveyor_creation_passes_total", "passes over schedules and triggers", nullptr, {}},
      {"conveyor-creation", "conveyor_creation_trigger_passes_total", "reads of the pending triggers", nullptr, {}},
      {"conveyor-configuration",
       "conveyor_configuration_jobs_total",
       "jobs moved by configuration",
       "step",
       {"configure", "ready"}},
      {"conveyor-configuration",
       "conveyor_stage_probes_total",
       "reads of whether a step has work, before its transaction",
       "step",
       {"configure", "ready"}},
      {"conveyor-configuration",
       "conveyor_stage_transactions_total",
       "transactions a step ran to claim and move jobs",
       "step",
       {"configure", "ready"}},
      {"conveyor-execution", "conveyor_execution_admitted_total", "jobs moved ready -> queued", nullptr, {}},
      {"conveyor-execution",
       "conveyor_stage_probes_total",
       "reads of whether a step has work, before its transaction",
       "step",
       {"admit"}},
      {"conveyor-execution",
       "conveyor_stage_transactions_total",
       "transactions a step ran to claim and move jobs",
       "step",
       {"admit"}},
      {"conveyor-publication",
       "conveyor_stage_transactions_total",
       "transactions a step ran to claim and move jobs",
       "step",
       {"retry"}},
      {"conveyor-publication",
       "conveyor_publication_jobs_total",
       "jobs moved out of processed or external_error by publication",
       nullptr,
       {}},
  };
}

std::vector<KnownCounter> worker_counters() {
  return {
      {"conveyor-worker", "conveyor_worker_errors_total", "failed claim/cancel cycles", nullptr, {}},
      {"conveyor-worker",
       "conveyor_worker_stale_containers_removed_total",
       "containers of this installation removed because no started attempt owned them",
       nullptr,
       {}},
      {"conveyor-worker",
       "conveyor_worker_process_wakeups_total",
       "wake-ups of the waits for job programs (output, exit, deadlines, stop checks)",
       nullptr,
       {}},
      {"conveyor-worker",
       "conveyor_worker_jobs_total",
       "jobs this worker ran, by outcome",
       "outcome",
       {"processed", "retried", "failed", "canceled", "requeued", "internal_error", "dropped", "unrecorded"}},
      {"conveyor-worker", "conveyor_worker_claim_probes_total", "reads of whether any job is claimable", nullptr, {}},
      {"conveyor-worker", "conveyor_worker_empty_claims_total", "claims that found no job to take", nullptr, {}},
      {"conveyor-worker",
       "conveyor_worker_outcome_retries_total",
       "failed attempts to record a job's outcome, retried",
       nullptr,
       {}},
      {"conveyor-workerpool", "conveyor_workerpool_errors_total", "ticks that failed", nullptr, {}},
  };
}

std::vector<KnownCounter> monitor_counters() {
  return {
      {"conveyor-monitor",
       "conveyor_monitor_errors_total",
       "reconciler parts that failed, by part",
       "part",
       {"lost_workers", "cancels", "restarts", "stalled", "instances", "waves", "alerts", "retention", "gauges"}},
      {"conveyor-monitor", "conveyor_monitor_workers_lost_total", "workers marked lost by the reconciler", nullptr, {}},
      {"conveyor-monitor",
       "conveyor_monitor_orphaned_jobs_total",
       "started jobs that their live worker no longer ran, recovered",
       nullptr,
       {}},
      {"conveyor-monitor",
       "conveyor_monitor_recovered_jobs_total",
       "started jobs of lost workers recovered by the reconciler, by outcome",
       "outcome",
       {"requeued", "failed", "canceled"}},
      {"conveyor-monitor",
       "conveyor_monitor_restarted_total",
       "canceled jobs restarted by the reconciler",
       nullptr,
       {}},
      {"conveyor-monitor",
       "conveyor_monitor_instances_down_total",
       "service instances marked down by the reconciler",
       nullptr,
       {}},
      {"conveyor-monitor", "conveyor_monitor_wave_steps_total", "waves advanced by the monitor", nullptr, {}},
      {"conveyor-monitor", "conveyor_monitor_scans_total", "reconciler scans", nullptr, {}},
      {"conveyor-monitor",
       "conveyor_monitor_alert_webhook_failures_total",
       "alert changes the webhook did not take",
       nullptr,
       {}},
  };
}

const std::vector<KnownCounter>& known_counters() {
  static const std::vector<KnownCounter> known = [] {
    std::vector<KnownCounter> all = stage_counters();
    for (KnownCounter& c : worker_counters()) all.push_back(std::move(c));
    for (KnownCounter& c : monitor_counters()) all.push_back(std::move(c));
    return all;
  }();
  return known;
}

}  // namespace

void register_process_metrics(Registry& registry) {
  registry.counter_fn("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", cpu_seconds);
  registry.gauge_fn("process_resident_memory_bytes", "Resident memory size in bytes.", resident_bytes);
  registry.gauge_fn("process_virtual_memory_bytes", "Virtual memory size in bytes.", virtual_bytes);
  const double started = start_time_seconds();  // fixed for the process's life
  registry.gauge_fn("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
                    [started] { return started; });
  registry.gauge_fn("process_open_fds", "Number of open file descriptors.", open_fds);
  registry.gauge_fn("process_max_fds", "Maximum number of open file descriptors.", max_fds);
}

void register_build_info(Registry& registry, const std::string& service, const std::string& version) {
  registry
      .gauge("conveyor_build_info", "Always 1: the service and version this process runs.",
             {{"service", service}, {"version", version}})
      .set(1);
}

void register_known_counters(Registry& registry, const std::string& service) {
  for (const KnownCounter& c : known_counters()) {
    if (c.service != nullptr && service != c.service) continue;
    if (c.label == nullptr) {
      registry.counter(c.name, c.help);
      continue;
    }
    for (const char* value : c.values) registry.counter(c.name, c.help, {{c.label, value}});
  }
}

}  // namespace conveyor::metrics
