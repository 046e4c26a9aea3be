#pragma once
// The endpoints every Conveyor service exposes:
//   GET /healthz  200 {"status":"ok"} while the process serves HTTP
//   GET /readyz   200 "ready"; 200 "degraded" when only the broker is down
//                 (the service works on its database poll); 503 "not ready"
//                 when the database is down or the service is draining
//   GET /metrics  Prometheus text format 0.0.4: the registry, to which
//                 add_admin_routes adds process_*, conveyor_build_info and
//                 the service's known counters at 0 (metrics/standard.hpp)
//   GET /version  {"service","version"}
#include <functional>
#include <string>

#include "conveyor/http/server.hpp"

namespace conveyor::metrics {
class Registry;
}

namespace conveyor::http {

struct AdminOptions {
  std::string service;
  std::string version;
  // Readiness checks; empty means "not used by this service" (always ready).
  // They run on a server thread per /readyz call, so keep them quick; one
  // that throws counts as down.
  std::function<bool()> db_ready;
  std::function<bool()> broker_ready;
  metrics::Registry* registry = nullptr;  // nullptr: metrics::default_registry()
  // Non-empty answer: /readyz is 503 with this reason (e.g. "draining")
  // whatever the checks say. Empty function: not used.
  std::function<std::string()> not_ready_reason{};
};

void add_admin_routes(Server& server, AdminOptions options);

}  // namespace conveyor::http
