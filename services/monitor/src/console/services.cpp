// GET /services (instances and workers) and GET /alerts.
#include "../alert_history.hpp"
#include "../alerts.hpp"
#include "../dashboard.hpp"
#include "../registry.hpp"
#include "console.hpp"
#include "page.hpp"

namespace conveyor::monitor::console {
namespace {

using json = nlohmann::json;

std::string cell(const json& v) {
  if (v.is_string()) return html_escape(v.get<std::string>());
  if (v.is_null()) return "-";
  return html_escape(v.dump());
}

// Stopped instances and workers, and workers the pool replaced, are history:
// shown with ?all=1 only, and never a service down.
bool current(const json& status) { return status != "stopped" && status != "replaced"; }

std::string health_table(const json& health) {
  std::string h =
      "<h2>Services</h2><table><tr><th>service</th><th>state</th><th>live</th><th>down</th>"
      "<th>stopped</th><th>replaced</th></tr>";
  for (const auto& v : health) {
    h += "<tr><td>" + cell(v["service"]) + "</td><td class=\"" + cell(v["state"]) + "\">" + cell(v["state"]) +
         "</td><td>" + cell(v["live"]) + "</td><td>" + cell(v["down"]) + "</td><td>" + cell(v["stopped"]) +
         "</td><td>" + cell(v["replaced"]) + "</td></tr>";
  }
  return h + "</table>";
}

std::string instances_table(const json& services, bool all) {
  std::string h =
      "<h2>Service instances</h2><table id=\"instances\"><tr><th>service</th><th>instance</th>"
      "<th>status</th><th>version</th><th>host/pid</th><th>uptime s</th><th>heartbeat age s</th></tr>";
  for (const auto& i : services) {
    if (!all && !current(i["status"])) continue;
    h += "<tr><td>" + cell(i["service"]) + "</td><td>" + cell(i["instance_id"]) + "</td><td class=\"" +
         cell(i["status"]) + "\">" + cell(i["status"]) + "</td><td>" + cell(i["version"]) + "</td><td>" +
         cell(i["host"]) + "/" + cell(i["pid"]) + "</td><td>" + cell(i["uptime_s"]) + "</td><td>" +
         cell(i["heartbeat_age_s"]) + "</td></tr>";
  }
  return h + "</table>";
}

std::string workers_table(const json& workers, bool all) {
  std::string h =
      "<h2>Workers</h2><table id=\"workers\"><tr><th>name</th><th>pool</th><th>status</th>"
      "<th>busy / slots</th><th>host/pid</th><th>version</th><th>heartbeat age s</th></tr>";
  for (const auto& w : workers) {
    if (!all && !current(w["status"])) continue;
    h += "<tr><td>" + cell(w["name"]) + "</td><td>" + cell(w["pool"]) + "</td><td class=\"" + cell(w["status"]) +
         "\">" + cell(w["status"]) + "</td><td>" + cell(w["running"]) + " / " + cell(w["concurrency"]) + "</td><td>" +
         cell(w["host"]) + "/" + cell(w["pid"]) + "</td><td>" + cell(w["version"]) + "</td><td>" +
         cell(w["heartbeat_age_s"]) + "</td></tr>";
  }
  return h + "</table>";
}

}  // namespace

std::string alerts_table(const std::vector<Alert>& firing) {
  if (firing.empty()) return "<p class=\"muted\">no alert is firing</p>";
  std::string h = "<table id=\"alerts\"><tr><th>severity</th><th>alert</th><th>summary</th></tr>";
  for (const auto& a : firing) {
    h += "<tr class=\"" + html_escape(a.severity) + "\"><td>" + html_escape(a.severity) + "</td><td>" +
         html_escape(a.name) + "</td><td>" + html_escape(a.summary) + "</td></tr>";
  }
  return h + "</table>";
}

namespace {

std::string recent_alerts_table(const std::vector<PastAlert>& recent) {
  if (recent.empty()) return "<p class=\"muted\">no alert fired in the last 24 hours</p>";
  std::string h =
      "<table id=\"recent-alerts\"><tr><th>severity</th><th>alert</th><th>fired</th><th>resolved</th>"
      "<th>summary</th></tr>";
  for (const auto& a : recent) {
    h += "<tr class=\"" + html_escape(a.severity) + "\"><td>" + html_escape(a.severity) + "</td><td>" +
         html_escape(a.name) + "</td><td>" + html_escape(a.fired_at) + "</td><td>" +
         (a.resolved_at.empty() ? std::string("firing") : html_escape(a.resolved_at)) + "</td><td>" +
         html_escape(a.summary) + "</td></tr>";
  }
  return h + "</table>";
}

}  // namespace

void add_services_routes(runtime::Context& ctx) {
  ctx.http().route("GET", "/services", [&ctx](const http::Request& req) {
    const bool all = req.query_param("all") == "1";
    const std::string body = ctx.db().transact([&](db::Tx& tx) {
      const json listed = list_services(tx, ServiceQuery{});
      const json workers = list_workers(tx, WorkerQuery{})["workers"];
      return std::string(all ? "<p>All instances and workers, history included. <a href=\"/services\">Current "
                               "only</a></p>"
                             : "<p>Current instances and workers. <a href=\"/services?all=1\">With history "
                               "(stopped, replaced)</a></p>") +
             health_table(listed["health"]) + instances_table(listed["services"], all) + workers_table(workers, all);
    });
    return html_page(req, "/services", "Workers and services", body);
  });
  ctx.http().route("GET", "/alerts", [&ctx](const http::Request& req) {
    const auto [firing, recent] = ctx.db().transact([](db::Tx& tx) {
      return std::make_pair(evaluate_alerts(tx, model::load_system_parameters(tx)), recent_alerts(tx));
    });
    return html_page(req, "/alerts", "Alerts",
                     "<h2>Firing now</h2>" + alerts_table(firing) + "<h2>Recent (last 24 hours)</h2>" +
                         recent_alerts_table(recent) +
                         "<p class=\"muted\">Alerts are evaluated afresh on each request; the monitor records when "
                         "each starts and stops firing, logs it and posts the change to "
                         "CONVEYOR_ALERT_WEBHOOK_URL.</p>");
  });
}

}  // namespace conveyor::monitor::console
