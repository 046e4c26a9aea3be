// GET /queues: queues (job types and pools) and schedules, with pause and
// resume for operators through model/queue.hpp, as `conveyor queue|schedule
// pause|resume` do.
#include "../dashboard.hpp"
#include "conveyor/auth/auth.hpp"
#include "conveyor/error/error.hpp"
#include "conveyor/model/job_type.hpp"
#include "conveyor/model/queue.hpp"
#include "console.hpp"
#include "page.hpp"

namespace conveyor::monitor::console {
namespace {

using json = nlohmann::json;

constexpr db::Statement kScheduleStates{
    "console_schedule_states",
    "SELECT job_type, " CONVEYOR_RFC3339("last_slot") " AS last_slot, coalesce(" CONVEYOR_RFC3339("next_slot")
    ", '') AS next_slot, created_count, coalesce(last_error, '') AS last_error, paused, "
    "coalesce(paused_reason, '') AS paused_reason FROM conveyor.schedule_state WHERE job_type = $1"};

std::string queues_table(const http::Request& req, const json& queues) {
  std::string h =
      "<h2>Queues</h2><table id=\"queues\"><tr><th>kind</th><th>name</th><th>ready</th><th>queued</th>"
      "<th>started</th><th>state</th><th></th></tr>";
  for (const auto& q : queues) {
    const std::string kind = q["kind"], name = q["name"];
    const bool paused = q["paused"];
    const std::string path = "/queues/" + query_string({{"k", kind}}).substr(2) + "/" +
                             query_string({{"n", name}}).substr(2) + (paused ? "/resume" : "/pause");
    std::string state = paused ? "paused by " + q["paused_by"].get<std::string>() + " at " +
                                     short_time(q["paused_at"].get<std::string>())
                               : "running";
    if (paused && !q["reason"].get<std::string>().empty()) state += " (" + q["reason"].get<std::string>() + ")";
    h += "<tr><td>" + html_escape(kind) + "</td><td>" + html_escape(name) + "</td><td>" +
         std::to_string(q["ready"].get<std::int64_t>()) + "</td><td>" +
         std::to_string(q["queued"].get<std::int64_t>()) + "</td><td>" +
         std::to_string(q["started"].get<std::int64_t>()) + "</td><td class=\"" + (paused ? "warning" : "") + "\">" +
         html_escape(state) + "</td><td>" + action_button(req, path, paused ? "Resume" : "Pause") + "</td></tr>";
  }
  return h + "</table>";
}

std::string schedule_row(db::Tx& tx, const http::Request& req, const model::JobType& t) {
  const auto rows = tx.exec(kScheduleStates, {t.name});
  const bool paused = !rows.empty() && rows[0]["paused"].as_bool();
  std::string state = !t.enabled ? "disabled" : rows.empty() ? "not started" : paused ? "paused" : "active";
  if (paused && !rows[0]["paused_reason"].as_string().empty())
    state += " (" + rows[0]["paused_reason"].as_string() + ")";
  if (!rows.empty() && !rows[0]["last_error"].as_string().empty())
    state += "; error: " + rows[0]["last_error"].as_string();
  const std::string path =
      "/queues/schedule/" + query_string({{"t", t.name}}).substr(2) + (paused ? "/resume" : "/pause");
  return "<tr><td>" + html_escape(t.name) + "</td><td>" + html_escape(t.schedule) + "</td><td>" +
         html_escape(t.catchup_policy) + "</td><td>" +
         (rows.empty() ? "-" : html_escape(short_time(rows[0]["last_slot"].as_string()))) + "</td><td>" +
         (rows.empty() ? "-" : html_escape(short_time(rows[0]["next_slot"].as_string()))) + "</td><td>" +
         html_escape(state) + "</td><td>" + action_button(req, path, paused ? "Resume" : "Pause") + "</td></tr>";
}

std::string schedules_table(db::Tx& tx, const http::Request& req) {
  std::string rows;
  for (const auto& t : model::load_job_types(tx)) {
    if (!t.schedule.empty()) rows += schedule_row(tx, req, t);
  }
  if (rows.empty()) return "<h2>Schedules</h2><p class=\"muted\">no job type has a schedule</p>";
  return "<h2>Schedules</h2><table id=\"schedules\"><tr><th>job type</th><th>schedule</th><th>catch-up</th>"
         "<th>last slot</th><th>next slot</th><th>state</th><th></th></tr>" +
         rows + "</table>";
}

db::TxOptions as_requester(const http::Request& req) {
  require_same_origin(req);
  db::TxOptions o;
  o.actor = auth::request_actor(req);
  return o;
}

// A queue's kind is job_type or pool (conveyor.queue_state); kind "schedule"
// pauses the schedule of the job type `name` (conveyor.schedule_state).
bool pause_or_resume(db::Tx& tx, const model::QueueRef& q, bool pause, const std::string& reason) {
  if (q.kind == "schedule") {
    if (!pause) return model::resume_schedule(tx, q.name);
    model::pause_schedule(tx, q.name, reason);
    return true;
  }
  if (!pause) return model::resume_queue(tx, q);
  model::pause_queue(tx, q, reason);
  return true;
}

void add_actions(runtime::Context& ctx) {
  auto act = [&ctx](const http::Request& req, bool pause) {
    const model::QueueRef q{req.path_param("kind"), req.path_param("name")};
    const bool changed = ctx.db().transact(
        [&](db::Tx& tx) { return pause_or_resume(tx, q, pause, "paused from the console by " + req.principal); },
        as_requester(req));
    ctx.log()->info("console: {} {} {} {}", req.principal, pause ? "paused" : "resumed", q.kind, q.name);
    return http::Response::json({{"kind", q.kind}, {"name", q.name}, {"paused", pause}, {"changed", changed}});
  };
  ctx.http().route("POST", "/queues/{kind}/{name}/pause", [act](const http::Request& r) { return act(r, true); });
  ctx.http().route("POST", "/queues/{kind}/{name}/resume", [act](const http::Request& r) { return act(r, false); });
}

}  // namespace

void add_queues_routes(runtime::Context& ctx) {
  ctx.http().route("GET", "/queues", [&ctx](const http::Request& req) {
    const std::string body = ctx.db().transact(
        [&](db::Tx& tx) { return queues_table(req, model::list_queues(tx)) + schedules_table(tx, req); });
    return html_page(req, "/queues", "Queues and schedules", body);
  });
  add_actions(ctx);
}

}  // namespace conveyor::monitor::console
