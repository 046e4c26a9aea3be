#include "dashboard.hpp"

#include <sstream>

#include "alerts.hpp"
#include "conveyor/auth/auth.hpp"
#include "conveyor/http/problem.hpp"
#include "conveyor/model/status.hpp"
#include "registry.hpp"

namespace conveyor::monitor {
namespace {

constexpr db::Statement kJobCounts{
    "monitor_dashboard_job_counts",
    "SELECT s.name, count(j.id) FROM conveyor.job_status s LEFT JOIN conveyor.job j ON j.status = s.name "
    "GROUP BY s.name, s.position ORDER BY s.position"};

struct Snapshot {
  std::vector<Alert> alerts;
  std::vector<std::pair<std::string, std::int64_t>> jobs;
  nlohmann::json services;
  nlohmann::json health;  // one row per service: state, live, down, replaced
  nlohmann::json workers;
  bool accepting = true;
};

Snapshot read(runtime::Context& ctx) {
  db::TxOptions o;
  o.isolation = db::Isolation::repeatable_read;  // one picture, not four
  return ctx.db().transact(
      [&](db::Tx& tx) {
        const model::SystemParameters fresh = model::load_system_parameters(tx);
        Snapshot s;
        s.alerts = evaluate_alerts(tx, fresh);
        for (const db::Row r : tx.exec(kJobCounts)) s.jobs.emplace_back(r[0].as_string(), r[1].as_int());
        const nlohmann::json listed = list_services(tx, ServiceQuery{});
        s.services = listed["services"];
        s.health = listed["health"];
        WorkerQuery active;
        s.workers = list_workers(tx, active)["workers"];
        s.accepting = fresh.accepting_new_jobs;
        return s;
      },
      o);
}

std::string cell(const nlohmann::json& v) {
  if (v.is_string()) return html_escape(v.get<std::string>());
  if (v.is_null()) return "-";
  return html_escape(v.dump());
}

std::string page(const Snapshot& s) {
  std::ostringstream h;
  h << "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">"
       "<title>Conveyor</title><style>"
       "body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin-bottom:1.5em}"
       "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f3f3f3}"
       ".critical{background:#fdd}.warning{background:#ffd}.info{background:#eef}.down,.lost{color:#b00}"
       ".degraded{color:#a60}"
       "</style></head><body><h1>Conveyor</h1>";
  h << "<p>accepting new jobs: <b>" << (s.accepting ? "yes" : "no") << "</b></p>";
  h << "<h2>Alerts (" << s.alerts.size() << ")</h2>";
  if (s.alerts.empty()) {
    h << "<p>none firing</p>";
  } else {
    h << "<table><tr><th>severity</th><th>alert</th><th>summary</th></tr>";
    for (const auto& a : s.alerts) {
      h << "<tr class=\"" << html_escape(a.severity) << "\"><td>" << html_escape(a.severity) << "</td><td>"
        << html_escape(a.name) << "</td><td>" << html_escape(a.summary) << "</td></tr>";
    }
    h << "</table>";
  }
  h << "<h2>Jobs</h2><table><tr>";
  for (const auto& [status, n] : s.jobs) h << "<th>" << html_escape(status) << "</th>";
  h << "</tr><tr>";
  for (const auto& [status, n] : s.jobs) h << "<td>" << n << "</td>";
  h << "</tr></table>";
  h << "<h2>Services</h2><table><tr><th>service</th><th>state</th><th>live</th><th>down</th>"
       "<th>replaced (history)</th></tr>";
  for (const auto& v : s.health) {
    h << "<tr><td>" << cell(v["service"]) << "</td><td class=\"" << cell(v["state"]) << "\">" << cell(v["state"])
      << "</td><td>" << cell(v["live"]) << "</td><td>" << cell(v["down"]) << "</td><td>" << cell(v["replaced"])
      << "</td></tr>";
  }
  h << "</table><h2>Service instances</h2><table><tr><th>service</th><th>instance</th><th>status</th>"
       "<th>version</th><th>image tag</th><th>host/pid</th><th>uptime s</th><th>heartbeat age s</th></tr>";
  for (const auto& i : s.services) {
    // Workers the pool replaced are history (GET /v1/services?status=replaced).
    if (i["status"] == "replaced") continue;
    h << "<tr><td>" << cell(i["service"]) << "</td><td>" << cell(i["instance_id"]) << "</td><td class=\""
      << cell(i["status"]) << "\">" << cell(i["status"]) << "</td><td>" << cell(i["version"]) << "</td><td>"
      << cell(i["image_tag"]) << "</td><td>" << cell(i["host"]) << "/" << cell(i["pid"]) << "</td><td>"
      << cell(i["uptime_s"]) << "</td><td>" << cell(i["heartbeat_age_s"]) << "</td></tr>";
  }
  h << "</table><h2>Workers</h2><table><tr><th>name</th><th>pool</th><th>status</th><th>running</th>"
       "<th>concurrency</th><th>host/pid</th><th>heartbeat age s</th></tr>";
  for (const auto& w : s.workers) {
    if (w["status"] == "stopped") continue;
    h << "<tr><td>" << cell(w["name"]) << "</td><td>" << cell(w["pool"]) << "</td><td class=\"" << cell(w["status"])
      << "\">" << cell(w["status"]) << "</td><td>" << cell(w["running"]) << "</td><td>" << cell(w["concurrency"])
      << "</td><td>" << cell(w["host"]) << "/" << cell(w["pid"]) << "</td><td>" << cell(w["heartbeat_age_s"])
      << "</td></tr>";
  }
  h << "</table><p><a href=\"/v1/alerts\">/v1/alerts</a> · <a href=\"/v1/services\">/v1/services</a> · "
       "<a href=\"/v1/workers\">/v1/workers</a> · <a href=\"/metrics\">/metrics</a></p></body></html>\n";
  return h.str();
}

// The login page: the token goes in a POST body as JSON (never in a URL);
// without JavaScript the form posts a form body, which the server refuses
// (415) rather than leaking the token into a URL or a log.
constexpr const char* kLoginPage = R"html(<!doctype html><html><head><meta charset="utf-8">
<title>Conveyor: log in</title><style>body{font-family:sans-serif;margin:1.5em;color:#222}
input{font-family:monospace;width:34em}.error{color:#b00}</style></head><body>
<h1>Conveyor</h1><form id="login" method="post" action="/login">
<p><label>API token (reader or higher): <input id="token" type="password" autocomplete="off" required></label></p>
<p><button type="submit">Log in</button></p><p id="error" class="error"></p></form>
<script>
document.getElementById('login').addEventListener('submit', async (e) => {
  e.preventDefault();
  const r = await fetch('/login', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                   body: JSON.stringify({token: document.getElementById('token').value})});
  if (r.ok) { window.location.assign('/'); return; }
  let detail = 'HTTP ' + r.status;
  try { detail = (await r.json()).detail; } catch (_) {}
  document.getElementById('error').textContent = detail;
});
</script></body></html>
)html";

// A session of up to 12 hours; the token's own expiry or revocation ends it sooner.
constexpr int kSessionSeconds = 12 * 3600;

// Marked Secure when the monitor serves HTTPS (CONVEYOR_TLS_CERT_FILE).
bool tls_enabled(runtime::Context& ctx) {
  for (const auto& [key, value, source] : ctx.config().show()) {
    if (key == "CONVEYOR_TLS_CERT_FILE") return !value.empty();
  }
  return false;
}

std::string session_cookie(const std::string& value, int max_age, bool secure) {
  return std::string(kSessionCookie) + "=" + value + "; Path=/; HttpOnly; SameSite=Strict; Max-Age=" +
         std::to_string(max_age) + (secure ? "; Secure" : "");
}

}  // namespace

std::string html_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

void add_login_routes(runtime::Context& ctx) {
  ctx.http().route("GET", "/login", [](const http::Request&) {
    http::Response r = http::Response::text(kLoginPage, 200, "text/html; charset=utf-8");
    r.headers["Cache-Control"] = "no-store";
    r.headers["X-Frame-Options"] = "DENY";
    return r;
  });
  ctx.http().route("POST", "/login", [&ctx](const http::Request& req) {
    const nlohmann::json body = req.json();
    if (!body.is_object() || !body.contains("token") || !body["token"].is_string()) {
      throw http::FieldError("token", "send {\"token\": \"<an API token>\"}");
    }
    const std::string token = body["token"].get<std::string>();
    auth::Identity who;
    if (auto refused = auth::authenticate(ctx.db(), token, auth::Role::reader, "the console", false, &who)) {
      return *refused;
    }
    // The browser keeps a session id, never the token: a copied cookie is
    // no API token, and the server ends it after 12 hours whatever the
    // browser does.
    const std::string session = auth::create_session(ctx.db(), who.name, std::chrono::seconds(kSessionSeconds));
    ctx.log()->info("console: token '{}' ({}) logged in", who.name, auth::to_string(who.role));
    http::Response r = http::Response::json({{"name", who.name}, {"role", std::string(auth::to_string(who.role))}});
    r.headers["Set-Cookie"] = session_cookie(session, kSessionSeconds, tls_enabled(ctx));
    r.headers["Cache-Control"] = "no-store";
    return r;
  });
  ctx.http().route("POST", "/logout", [&ctx](const http::Request& req) {
    auth::end_session(ctx.db(), auth::session_of(req, kSessionCookie));
    http::Response r = http::Response::json({{"logged_out", true}});
    r.headers["Set-Cookie"] = session_cookie("", 0, tls_enabled(ctx));
    return r;
  });
}

void add_dashboard_routes(runtime::Context& ctx) {
  add_login_routes(ctx);
  ctx.http().route("GET", "/", [&ctx](const http::Request&) {
    http::Response r = http::Response::text(page(read(ctx)), 200, "text/html; charset=utf-8");
    r.headers["X-Frame-Options"] = "DENY";
    return r;
  });
  ctx.http().route("GET", "/v1/alerts", [&ctx](const http::Request&) {
    nlohmann::json alerts = nlohmann::json::array();
    const auto firing = ctx.db().transact([](db::Tx& tx) {
      return evaluate_alerts(tx, model::load_system_parameters(tx));  // fresh: a pause shows at once
    });
    for (const auto& a : firing) alerts.push_back(a.to_json());
    return http::Response::json({{"alerts", alerts}});
  });
}

}  // namespace conveyor::monitor
