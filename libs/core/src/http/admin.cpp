#include "conveyor/http/admin.hpp"

#include <nlohmann/json.hpp>

#include "conveyor/http/openapi.hpp"
#include "conveyor/logging/logging.hpp"
#include "conveyor/metrics/metrics.hpp"
#include "conveyor/metrics/standard.hpp"

namespace conveyor::http {
namespace {

// "up", "down" or "not used"; a check that throws is down, and says why in the log.
std::string check(const std::string& name, const std::function<bool()>& probe) {
  if (!probe) return "not used";
  try {
    return probe() ? "up" : "down";
  } catch (const std::exception& e) {
    logging::get("http")->warn("readiness check {} failed: {}", name, logging::redact_url(e.what()));
    return "down";
  }
}

}  // namespace

void add_admin_routes(Server& server, AdminOptions options) {
  auto shared = std::make_shared<const AdminOptions>(std::move(options));
  metrics::Registry& registry = shared->registry != nullptr ? *shared->registry : metrics::default_registry();
  metrics::register_process_metrics(registry);
  metrics::register_build_info(registry, shared->service, shared->version);
  metrics::register_known_counters(registry, shared->service);

  server.route("GET", "/healthz", [](const Request&) { return Response::json({{"status", "ok"}}); });

  server.route("GET", "/readyz", [shared](const Request&) {
    const std::string db = check("database", shared->db_ready);
    const std::string broker = check("broker", shared->broker_ready);
    const std::string reason = shared->not_ready_reason ? shared->not_ready_reason() : "";
    // Without the broker a service still works, on its database poll (events
    // only make it faster): it stays ready, and says it is degraded. Without
    // the database it can do nothing: not ready.
    const bool ready = db != "down" && reason.empty();
    const char* status = !ready ? "not ready" : broker == "down" ? "degraded" : "ready";
    nlohmann::json body = {{"status", status}, {"checks", {{"database", db}, {"broker", broker}}}};
    if (!reason.empty()) body["reason"] = reason;
    return Response::json(body, ready ? 200 : 503);
  });

  server.route("GET", "/metrics", [&registry](const Request&) {
    return Response::text(registry.render(), 200, "text/plain; version=0.0.4; charset=utf-8");
  });

  server.route("GET", "/version", [shared](const Request&) {
    return Response::json({{"service", shared->service}, {"version", shared->version}});
  });

  add_openapi_route(server, shared->version);
}

}  // namespace conveyor::http
