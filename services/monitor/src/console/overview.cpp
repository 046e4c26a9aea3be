// GET /: the console's overview.
#include <algorithm>

#include "../alerts.hpp"
#include "../dashboard.hpp"
#include "console.hpp"
#include "page.hpp"
#include "svg.hpp"

namespace conveyor::monitor::console {
namespace {

constexpr db::Statement kJobCounts{
    "console_job_counts",
    "SELECT s.name, count(j.id) FROM conveyor.job_status s LEFT JOIN conveyor.job j ON j.status = s.name "
    "GROUP BY s.name, s.position ORDER BY s.position"};

// Per step of $1 seconds over the last $2 seconds: jobs submitted (the
// insert's history row), done, failed, and the change of the queue depth
// (jobs in ready or queued) that the step's moves made.
constexpr db::Statement kThroughput{
    "console_throughput",
    "SELECT floor(extract(epoch FROM at) / $1)::bigint AS step,"
    "  count(*) FILTER (WHERE from_status IS NULL) AS submitted,"
    "  count(*) FILTER (WHERE to_status = 'done') AS done,"
    "  count(*) FILTER (WHERE to_status IN ('failed', 'internal_error')) AS failed,"
    "  sum((to_status IN ('ready', 'queued'))::int - (coalesce(from_status, '') IN ('ready', 'queued'))::int)"
    "    AS depth_change "
    "FROM conveyor.job_status_change WHERE at > now() - make_interval(secs => $2::int) GROUP BY 1"};

constexpr db::Statement kNowStep{"console_now_step",
                                 "SELECT floor(extract(epoch FROM now()) / $1)::bigint,"
                                 "  (SELECT count(*) FROM conveyor.job WHERE status IN ('ready', 'queued'))"};

constexpr db::Statement kCapacity{
    "console_capacity",
    "SELECT pool, count(*) AS workers, sum(running)::bigint AS busy, sum(concurrency)::bigint AS capacity "
    "FROM conveyor.worker WHERE status IN ('active', 'draining') GROUP BY pool ORDER BY pool"};

struct Window {
  int step_s;
  int steps;
  std::string label;
};

// The four series of one window, oldest step first. The depth is walked
// back from now: the depth at the end of a step is today's minus the
// changes after it.
std::vector<Series> throughput(db::Tx& tx, const Window& w) {
  const db::Result now_rows = tx.exec(kNowStep, {w.step_s});  // the Row below reads it
  const db::Row now = now_rows[0];
  const std::int64_t last = now[0].as_int();
  std::vector<double> submitted(w.steps), done(w.steps), failed(w.steps), change(w.steps), depth(w.steps);
  for (const db::Row r : tx.exec(kThroughput, {w.step_s, w.step_s * w.steps})) {
    const std::int64_t i = w.steps - 1 - (last - r["step"].as_int());
    if (i < 0 || i >= w.steps) continue;
    submitted[i] = r["submitted"].as_double();
    done[i] = r["done"].as_double();
    failed[i] = r["failed"].as_double();
    change[i] = r["depth_change"].as_double();
  }
  double d = now[1].as_double();
  for (int i = w.steps - 1; i >= 0; --i) {
    depth[i] = std::max(0.0, d);
    d -= change[i];
  }
  return {{"submitted", "#36c", submitted},
          {"done", "#393", done},
          {"failed", "#c33", failed},
          {"queue depth", "#c80", depth}};
}

std::string graphs(db::Tx& tx) {
  std::string h = "<h2>Throughput and queue depth</h2><div class=\"charts\">";
  for (const Window& w : {Window{60, 60, "1 hour ago"}, Window{900, 96, "1 day ago"}}) {
    auto series = throughput(tx, w);
    const std::string per = w.step_s == 60 ? "per minute" : "per 15 min";
    h += line_chart("Jobs " + per + ", last " + (w.step_s == 60 ? "hour" : "day"), w.label,
                    {series[0], series[1], series[2]});
    h += line_chart("Queue depth (ready + queued), last " + std::string(w.step_s == 60 ? "hour" : "day"), w.label,
                    {series[3]});
  }
  return h + "</div>";
}

std::string job_counts(db::Tx& tx) {
  std::string head, cells;
  for (const db::Row r : tx.exec(kJobCounts)) {
    const std::string status = r[0].as_string();
    head += "<th>" + status_badge(status) + "</th>";
    cells += "<td><a href=\"/jobs?" + query_string({{"status", status}}) + "\">" + std::to_string(r[1].as_int()) +
             "</a></td>";
  }
  return "<h2>Jobs by status</h2><table><tr>" + head + "</tr><tr>" + cells + "</tr></table>";
}

std::string capacity(db::Tx& tx) {
  std::string rows;
  std::int64_t busy = 0, total = 0;
  for (const db::Row r : tx.exec(kCapacity)) {
    busy += r["busy"].as_int();
    total += r["capacity"].as_int();
    rows += "<tr><td>" + html_escape(r["pool"].as_string()) + "</td><td>" + std::to_string(r["workers"].as_int()) +
            "</td><td>" + std::to_string(r["busy"].as_int()) + " / " + std::to_string(r["capacity"].as_int()) +
            "</td></tr>";
  }
  return "<h2>Workers: " + std::to_string(busy) + " busy of " + std::to_string(total) +
         " slots</h2><table><tr><th>pool</th><th>workers</th><th>busy / capacity</th></tr>" + rows + "</table>";
}

std::string alerts_summary(db::Tx& tx) {
  const auto firing = evaluate_alerts(tx, model::load_system_parameters(tx));
  return "<h2>Alerts firing (" + std::to_string(firing.size()) + ")</h2>" + alerts_table(firing);
}

}  // namespace

void add_overview_routes(runtime::Context& ctx) {
  ctx.http().route("GET", "/", [&ctx](const http::Request& req) {
    db::TxOptions o;
    o.isolation = db::Isolation::repeatable_read;  // one picture
    const std::string body = ctx.db().transact(
        [&](db::Tx& tx) {
          const bool accepting = model::load_system_parameters(tx).accepting_new_jobs;
          return std::string(accepting ? "" : "<p class=\"warning\">Not accepting new jobs (system paused).</p>") +
                 alerts_summary(tx) + job_counts(tx) + capacity(tx) + graphs(tx);
        },
        o);
    return html_page(req, "/", "Overview", body);
  });
}

}  // namespace conveyor::monitor::console
