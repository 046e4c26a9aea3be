#pragma once
// The monitor's web console (DESIGN §1; issue 15): the pages of
// console/console.hpp (overview at `GET /`, jobs, a job, services, queues,
// alerts) and `GET /v1/alerts` (the alerts as JSON). Every value is
// HTML-escaped with html_escape. Thread-safe: handlers read per request.
//
// Who may look (issue 12): every route but /login needs a reader token,
// as a bearer header or as the HttpOnly, SameSite=Strict session cookie that
// `POST /login` ({"token": "..."}, from the form at GET /login) sets: a
// session id (conveyor.console_session), not the token, valid 12 hours at
// most and only while its token is; a browser without one is sent to
// /login. `POST /logout` ends the session and clears the cookie.
#include <string>

#include "conveyor/runtime/runtime.hpp"

namespace conveyor::monitor {

// "<a & b>" -> "&lt;a &amp; b&gt;" (also " and ').
std::string html_escape(const std::string& text);

// The session cookie's name (runtime::ServiceSpec::auth_cookie).
inline constexpr const char* kSessionCookie = "conveyor_session";

// Adds the console's pages, GET /v1/alerts and the login routes to ctx.http().
void add_dashboard_routes(runtime::Context& ctx);

}  // namespace conveyor::monitor
