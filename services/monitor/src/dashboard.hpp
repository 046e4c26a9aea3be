#pragma once
// The monitor's web dashboard (DESIGN §1): `GET /` on the monitor's port, one
// self-contained HTML page (no script, refreshes itself every 5 s) with the
// alerts firing, jobs by status, the service instances and the workers, read
// from PostgreSQL on each request. `GET /v1/alerts` gives the alerts as JSON.
// Every value is HTML-escaped. Thread-safe: reads only.
#include <string>

#include "conveyor/runtime/runtime.hpp"

namespace conveyor::monitor {

// "<a & b>" -> "&lt;a &amp; b&gt;" (also " and ').
std::string html_escape(const std::string& text);

// Adds GET / and GET /v1/alerts to ctx.http().
void add_dashboard_routes(runtime::Context& ctx);

}  // namespace conveyor::monitor
