#pragma once
// The operator console of conveyor-monitor (issue 15, item 1), HTML pages
// rendered on the server from PostgreSQL on each request:
//   GET /                 overview: jobs by status, graphs of the last hour
//                         and day, workers busy / capacity, alerts firing
//   GET /jobs             the job list: filters, paged on the server
//   GET /jobs/{id}        one job: params, config, history, dependencies,
//                         outputs, log tail (live while it runs)
//   GET /jobs/{id}/log    the log after ?offset= as JSON (the live tail)
//   POST /jobs/{id}/cancel, /jobs/{id}/retry            (operator)
//   GET /services         current instances and workers (?all=1: history)
//   GET /queues           queues and schedules
//   POST /queues/{kind}/{name}/pause|resume             (operator; kind
//                         job_type, pool, or schedule: the type's schedule)
//   GET /alerts           firing now
// Reads need a reader, actions an operator (auth::required_role). Actions
// call the same model functions as the REST API and the CLI.
#include <string>
#include <vector>

#include "../alerts.hpp"
#include "conveyor/runtime/runtime.hpp"

namespace conveyor::monitor::console {

// The alerts as a table (overview and /alerts); "none firing" when empty.
std::string alerts_table(const std::vector<Alert>& firing);

void add_overview_routes(runtime::Context& ctx);
void add_jobs_routes(runtime::Context& ctx);
void add_job_page_routes(runtime::Context& ctx);
void add_services_routes(runtime::Context& ctx);
void add_queues_routes(runtime::Context& ctx);

inline void add_console_routes(runtime::Context& ctx) {
  add_overview_routes(ctx);
  add_jobs_routes(ctx);
  add_job_page_routes(ctx);
  add_services_routes(ctx);
  add_queues_routes(ctx);
}

}  // namespace conveyor::monitor::console
