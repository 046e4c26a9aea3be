#include "dashboard.hpp"

#include "alerts.hpp"
#include "conveyor/auth/auth.hpp"
#include "conveyor/http/problem.hpp"
#include "console/console.hpp"

namespace conveyor::monitor {
namespace {

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
  return std::string(kSessionCookie) + "=" + value +
         "; Path=/; HttpOnly; SameSite=Strict; Max-Age=" + std::to_string(max_age) + (secure ? "; Secure" : "");
}

}  // namespace

std::string html_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
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
  console::add_console_routes(ctx);
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
