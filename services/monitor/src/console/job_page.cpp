// GET /jobs/{id}, its live log tail, and the operator's cancel and retry
// (model::cancel_job and model::retry_job, as POST /v1/jobs/{id}/cancel|retry).
#include <filesystem>
#include <regex>

#include "../dashboard.hpp"
#include "conveyor/auth/auth.hpp"
#include "conveyor/error/error.hpp"
#include "conveyor/model/job_control.hpp"
#include "conveyor/model/job_logs.hpp"
#include "conveyor/model/submission.hpp"
#include "console.hpp"
#include "page.hpp"

namespace conveyor::monitor::console {
namespace {

using json = nlohmann::json;

constexpr std::uint64_t kLogBytes = 64 * 1024;  // the page shows at most the last 64 KiB

constexpr db::Statement kUpstream{
    "console_job_upstream", "SELECT id, job_type, status FROM conveyor.job WHERE id = ANY($1::bigint[]) ORDER BY id"};
// The GIN index on depends_on (retention's) answers @>.
constexpr db::Statement kDownstream{
    "console_job_downstream",
    // depends_on <> '{}': job_depends_on_idx's predicate (migration 20261219000000).
    "SELECT id, job_type, status FROM conveyor.job WHERE depends_on @> ARRAY[$1::bigint] AND depends_on <> '{}' "
    "ORDER BY id LIMIT 101"};

model::JobId job_id(const http::Request& req) {
  const std::string& id = req.path_param("id");
  if (!std::regex_match(id, std::regex("[0-9]{1,18}")))
    throw FieldError("id", "id: '" + id.substr(0, 40) + "' is not a job id");
  return model::JobId(std::stoll(id));
}

std::string pre_json(const json& v) {
  return v.is_null() ? "<p class=\"muted\">none</p>" : "<pre>" + html_escape(v.dump(2)) + "</pre>";
}

std::string job_links(const db::Result& rows) {
  if (rows.empty()) return "<p class=\"muted\">none</p>";
  std::string h = "<ul>";
  for (int i = 0; i < rows.size() && i < 100; ++i) {
    const std::string id = std::to_string(rows[i]["id"].as_int());
    h += "<li><a href=\"/jobs/" + id + "\">" + id + "</a> " + html_escape(rows[i]["job_type"].as_string()) + " " +
         status_badge(rows[i]["status"].as_string()) + "</li>";
  }
  return h + (rows.size() > 100 ? "<li class=\"muted\">and more</li>" : "") + "</ul>";
}

std::string timeline(db::Tx& tx, model::JobId id) {
  std::string h = "<ol class=\"timeline\" id=\"history\">";
  for (const auto& c : model::load_history(tx, id)) {
    h += "<li>" + html_escape(short_time(c.at)) + " " +
         (c.from_status ? status_badge(model::to_string(*c.from_status)) + " → " : std::string("created ")) +
         status_badge(model::to_string(c.to_status)) + " <span class=\"muted\">by " + html_escape(c.actor) + "</span>";
    if (c.error_subtype) h += " <span class=\"err\">" + html_escape(*c.error_subtype) + "</span>";
    if (c.message) h += ": " + html_escape(*c.message);
    h += "</li>";
  }
  return h + "</ol>";
}

std::string outputs(const std::filesystem::path& data_dir, model::JobId id) {
  std::error_code ec;
  const auto dir = model::job_output_dir(data_dir, id.value());
  std::string h;
  int n = 0;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator() && n < 100; it.increment(ec), ++n) {
    if (!it->is_regular_file(ec)) continue;
    h += "<li>" + html_escape(std::filesystem::relative(it->path(), dir, ec).string()) + " <span class=\"muted\">" +
         std::to_string(it->file_size(ec)) + " bytes</span></li>";
  }
  return h.empty() ? "<p class=\"muted\">no files in " + html_escape(dir.string()) + "</p>" : "<ul>" + h + "</ul>";
}

std::string summary(const http::Request& req, const model::Job& j) {
  const std::string id = std::to_string(j.id.value());
  const bool can_retry = j.status == model::JobStatus::failed || j.status == model::JobStatus::internal_error ||
                         j.status == model::JobStatus::external_error || j.status == model::JobStatus::canceled;
  std::string h = "<p>" + html_escape(j.job_type) + " · status <span id=\"status\">" +
                  status_badge(model::to_string(j.status)) + "</span> · attempt " + std::to_string(j.attempt) + " of " +
                  std::to_string(j.max_attempts) + " · priority " + std::to_string(j.priority) + " · created " +
                  html_escape(short_time(j.created_at)) + " · updated " + html_escape(short_time(j.updated_at)) +
                  " UTC</p>";
  if (j.canceled_at) h += "<p>cancel requested at " + html_escape(short_time(*j.canceled_at)) + "</p>";
  if (j.error_subtype || j.error_message) {
    h += "<p class=\"err\" id=\"error\">" + html_escape(j.error_subtype.value_or("")) + ": " +
         html_escape(j.error_message.value_or("")) + "</p>";
  }
  if (!model::is_final(j.status)) {
    h += action_button(req, "/jobs/" + id + "/cancel", "Cancel", "Cancel job " + id + "?");
  }
  if (can_retry) h += action_button(req, "/jobs/" + id + "/retry", "Retry", "Retry job " + id + "?");
  return h;
}

// Re-fetches the tail every 2 s while the job is not final; text goes in
// with textContent, so a log line is never markup.
std::string live_script(const model::Job& j, std::uint64_t offset) {
  if (model::is_final(j.status)) return "";
  return "<script>(() => { let offset = " + std::to_string(offset) + "; const id = " + std::to_string(j.id.value()) +
         ";\nconst tick = async () => {\n"
         "  const r = await fetch('/jobs/' + id + '/log?offset=' + offset, {credentials: 'same-origin'});\n"
         "  if (!r.ok) return setTimeout(tick, 2000);\n"
         "  const t = await r.json(); const log = document.getElementById('log');\n"
         "  if (t.from < offset) log.textContent = '';\n"
         "  log.textContent += t.text; offset = t.offset;\n"
         "  const st = document.querySelector('#status .st'); st.textContent = t.status;"
         " st.className = 'st st-' + t.status;\n"
         "  if (t.final) { window.location.reload(); return; }\n"
         "  setTimeout(tick, 2000);\n};\nsetTimeout(tick, 2000); })();</script>";
}

std::string job_page(runtime::Context& ctx, db::Tx& tx, const http::Request& req, const model::Job& j) {
  const std::filesystem::path data_dir = ctx.config().get_string("CONVEYOR_DATA_DIR");
  const auto log = model::read_log_tail(model::job_log_file(data_dir, j), 0, kLogBytes);
  std::vector<std::int64_t> up(j.depends_on.begin(), j.depends_on.end());
  std::string h = summary(req, j);
  h += "<h2>History</h2>" + timeline(tx, j.id);
  h += "<h2>Log</h2><pre id=\"log\">" + html_escape(log.text) + "</pre>";
  if (!log.exists) h += "<p class=\"muted\">no logs.txt yet (it appears once a worker runs the job)</p>";
  h += "<h2>Params</h2>" + pre_json(j.params) + "<h2>Config</h2>" + pre_json(j.config);
  h += "<h2>Depends on</h2>" + job_links(tx.exec(kUpstream, {up}));
  h += "<h2>Needed by</h2>" + job_links(tx.exec(kDownstream, {j.id.value()}));
  h += "<h2>Result</h2>" + pre_json(j.result) + "<h2>Outputs</h2>" + outputs(data_dir, j.id);
  return h + live_script(j, log.size);
}

http::Response act(runtime::Context& ctx, const http::Request& req, bool cancel) {
  require_same_origin(req);
  const model::JobId id = job_id(req);
  db::TxOptions o;
  o.actor = auth::request_actor(req);
  const model::Job j = ctx.db().transact(
      [&](db::Tx& tx) { return cancel ? model::cancel_job(tx, id).job : model::retry_job(tx, id); }, o);
  ctx.log()->info("console: {} {} job {}", req.principal, cancel ? "canceled" : "retried", id.value());
  return http::Response::json(j.to_json());
}

}  // namespace

void add_job_page_routes(runtime::Context& ctx) {
  ctx.http().route("GET", "/jobs/{id}", [&ctx](const http::Request& req) {
    const model::JobId id = job_id(req);
    const std::string body = ctx.db().transact([&](db::Tx& tx) {
      const auto j = model::load_job(tx, id);
      if (!j) throw Error(errc::not_found, "no job " + std::to_string(id.value()));
      return job_page(ctx, tx, req, *j);
    });
    return html_page(req, "/jobs", "Job " + std::to_string(id.value()), body);
  });
  ctx.http().route("GET", "/jobs/{id}/log", [&ctx](const http::Request& req) {
    const model::JobId id = job_id(req);
    const std::string offset = bounded_param(req, "offset", 20);
    if (!offset.empty() && !std::regex_match(offset, std::regex("[0-9]{1,18}"))) {
      throw FieldError("offset", "offset: a byte offset");
    }
    const model::Job j = ctx.db().transact([&](db::Tx& tx) { return model::get_job(tx, id); });
    const auto tail = model::read_log_tail(model::job_log_file(ctx.config().get_string("CONVEYOR_DATA_DIR"), j),
                                           offset.empty() ? 0 : std::stoull(offset), kLogBytes);
    return http::Response::json({{"status", model::to_string(j.status)},
                                 {"final", model::is_final(j.status)},
                                 {"exists", tail.exists},
                                 {"from", tail.from},
                                 {"offset", tail.size},
                                 {"text", tail.text}});
  });
  ctx.http().route("POST", "/jobs/{id}/cancel", [&ctx](const http::Request& req) { return act(ctx, req, true); });
  ctx.http().route("POST", "/jobs/{id}/retry", [&ctx](const http::Request& req) { return act(ctx, req, false); });
}

}  // namespace conveyor::monitor::console
