#include "page.hpp"

#include <array>
#include <cctype>

#include "../dashboard.hpp"
#include "conveyor/error/error.hpp"

namespace conveyor::monitor::console {
namespace {

constexpr std::string_view kStyle =
    "body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}"
    "nav{background:#243447;padding:.5em 1.5em;display:flex;gap:1.2em;align-items:center}"
    "nav a{color:#dde;text-decoration:none}nav a.on{color:#fff;font-weight:bold;border-bottom:2px solid #8cf}"
    "nav .who{margin-left:auto;color:#aab;font-size:.9em}main{padding:1em 1.5em}"
    "table{border-collapse:collapse;margin-bottom:1.2em;background:#fff}"
    "td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}th{background:#eef1f4}"
    ".st{padding:0 .4em;border-radius:3px;background:#eee}.st-done{background:#cfc}.st-started{background:#cdf}"
    ".st-failed,.st-internal_error,.st-external_error{background:#fcc}.st-canceled{background:#ddd;color:#555}"
    ".critical{background:#fdd}.warning{background:#ffd}.info{background:#eef}.down,.lost{color:#b00}"
    "pre{background:#fff;border:1px solid #ddd;padding:.5em;overflow:auto;max-height:30em}"
    ".err{color:#b00}.muted{color:#777}form.filters input,form.filters select{margin-right:.6em}"
    ".timeline li{margin-bottom:.3em}.charts{display:flex;flex-wrap:wrap;gap:1em}"
    "svg{background:#fff;border:1px solid #ddd}button{cursor:pointer}";

// Actions: POST {} as JSON, then reload; an error shows next to the button.
constexpr std::string_view kScript =
    "document.addEventListener('click', async (e) => {"
    "  const b = e.target.closest('button[data-post]'); if (!b) return;"
    "  if (b.dataset.confirm && !window.confirm(b.dataset.confirm)) return;"
    "  b.disabled = true; const out = b.nextElementSibling;"
    "  const r = await fetch(b.dataset.post, {method: 'POST', headers: {'Content-Type': 'application/json'},"
    "                                         body: '{}', credentials: 'same-origin'});"
    "  if (r.ok) { window.location.reload(); return; }"
    "  let detail = 'HTTP ' + r.status; try { detail = (await r.json()).detail; } catch (_) {}"
    "  b.disabled = false; if (out) out.textContent = detail;"
    "});";

constexpr std::array<std::pair<std::string_view, std::string_view>, 5> kNav = {{{"/", "Overview"},
                                                                                {"/jobs", "Jobs"},
                                                                                {"/services", "Workers &amp; services"},
                                                                                {"/queues", "Queues &amp; schedules"},
                                                                                {"/alerts", "Alerts"}}};

std::string nav(const http::Request& req, std::string_view active) {
  std::string h = "<nav><b style=\"color:#fff\">Conveyor</b>";
  for (const auto& [path, label] : kNav) {
    h += "<a href=\"" + std::string(path) + "\"" + (path == active ? " class=\"on\"" : "") + ">" + std::string(label) +
         "</a>";
  }
  h += "<span class=\"who\">" + html_escape(req.principal.empty() ? "" : req.principal + " (" + req.role + ")") +
       "</span></nav>";
  return h;
}

std::string host_of(std::string_view url) {
  const auto scheme = url.find("://");
  if (scheme == std::string_view::npos) return "";
  url.remove_prefix(scheme + 3);
  return std::string(url.substr(0, url.find('/')));
}

}  // namespace

http::Response html_page(const http::Request& req, std::string_view active, std::string_view title,
                         const std::string& body) {
  std::string h = "<!doctype html><html><head><meta charset=\"utf-8\"><title>";
  h += html_escape(std::string(title)) + " · Conveyor</title><style>" + std::string(kStyle) + "</style></head><body>";
  h += nav(req, active) + "<main><h1>" + html_escape(std::string(title)) + "</h1>" + body + "</main><script>" +
       std::string(kScript) + "</script></body></html>\n";
  http::Response r = http::Response::text(std::move(h), 200, "text/html; charset=utf-8");
  r.headers["Cache-Control"] = "no-store";
  r.headers["X-Frame-Options"] = "DENY";
  r.headers["Content-Security-Policy"] =
      "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; "
      "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'";
  return r;
}

bool is_operator(const http::Request& req) { return req.role == "operator"; }

std::string action_button(const http::Request& req, const std::string& path, std::string_view label,
                          std::string_view confirm) {
  if (!is_operator(req)) return "";
  return "<button data-post=\"" + html_escape(path) + "\" data-confirm=\"" + html_escape(std::string(confirm)) + "\">" +
         html_escape(std::string(label)) + "</button><span class=\"err\"></span> ";
}

void require_same_origin(const http::Request& req) {
  const auto host = req.header("Host");
  auto origin = req.header("Origin");
  if (!origin || *origin == "null") origin = req.header("Referer");
  if (!origin) return;  // not a browser (curl, a script with a token): nothing to forge
  if (!host || host_of(*origin) != *host) {
    throw Error(errc::forbidden, "console actions are accepted only from the console's own pages (Origin '" +
                                     origin->substr(0, 100) + "' is not this host)");
  }
}

std::string short_time(std::string_view t) {
  if (t.size() < 19) return std::string(t);
  std::string s(t.substr(0, 19));
  s[10] = ' ';
  return s;
}

std::string status_badge(std::string_view status) {
  const std::string s = html_escape(std::string(status));
  return "<span class=\"st st-" + s + "\">" + s + "</span>";
}

std::string bounded_param(const http::Request& req, const std::string& name, std::size_t max) {
  std::string v = req.query_param(name);
  if (v.size() > max) throw FieldError(name, name + ": at most " + std::to_string(max) + " characters");
  return v;
}

std::string query_string(std::initializer_list<std::pair<std::string_view, std::string>> pairs) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const auto& [key, value] : pairs) {
    if (value.empty()) continue;
    out += (out.empty() ? "" : "&") + std::string(key) + "=";
    for (const unsigned char c : value) {
      if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == ':') {
        out += static_cast<char>(c);
      } else {
        out += '%';
        out += kHex[c >> 4];
        out += kHex[c & 15];
      }
    }
  }
  return out;
}

}  // namespace conveyor::monitor::console
