#pragma once
// The series every Conveyor process exposes on GET /metrics besides its own:
// the standard process_* metrics, conveyor_build_info, and the service's
// counters at 0 before their first use (so rate() and absent() work from
// the first scrape). http::add_admin_routes registers them.
//
// Thread-safe, as Registry.
#include <string>

#include "conveyor/metrics/metrics.hpp"

namespace conveyor::metrics {

// process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_start_time_seconds, process_open_fds
// and process_max_fds, as the Prometheus client libraries define them, read
// from /proc/self at each render. Off Linux (no /proc) the readers give NaN.
void register_process_metrics(Registry& registry);

// conveyor_build_info{service="...",version="..."} 1.
void register_build_info(Registry& registry, const std::string& service, const std::string& version);

// Creates at 0 the counters `service` ("conveyor-worker", ...) increments
// later, each with every value of its labels where that set is finite and
// known in advance (outcomes, parts; not job types or routes).
void register_known_counters(Registry& registry, const std::string& service);

}  // namespace conveyor::metrics
