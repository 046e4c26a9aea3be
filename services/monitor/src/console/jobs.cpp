// GET /jobs: the job list, filtered and paged on the server (keyset on id,
// newest first, so a page costs the same however deep).
#include <regex>

#include "../dashboard.hpp"
#include "conveyor/error/error.hpp"
#include "conveyor/model/status.hpp"
#include "console.hpp"
#include "page.hpp"

namespace conveyor::monitor::console {
namespace {

constexpr int kPageSize = 50;

// Every filter is a parameter; an absent one is NULL and matches all.
// $5 is an ILIKE pattern with % and _ of the user's text escaped.
constexpr db::Statement kJobs{
    "console_jobs",
    "SELECT id, job_type, status, attempt, max_attempts, " CONVEYOR_RFC3339("created_at") " AS created_at, "
    CONVEYOR_RFC3339("updated_at") " AS updated_at, coalesce(error_subtype, '') AS error_subtype, "
    "coalesce(error_message, '') AS error_message FROM conveyor.job "
    "WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR job_type = $2) "
    "  AND ($3::timestamptz IS NULL OR created_at >= $3::timestamptz) "
    "  AND ($4::timestamptz IS NULL OR created_at < $4::timestamptz) "
    "  AND ($5::text IS NULL OR error_message ILIKE $5 ESCAPE '\\' OR error_subtype ILIKE $5 ESCAPE '\\') "
    "  AND ($6::bigint IS NULL OR id < $6) "
    "ORDER BY id DESC LIMIT $7"};

constexpr db::Statement kTypes{"console_job_types", "SELECT name FROM conveyor.job_type ORDER BY name"};

struct Filters {
  std::string status, type, since, until, text, before;
};

std::optional<std::string> given(const std::string& v) {
  return v.empty() ? std::nullopt : std::optional<std::string>(v);
}

// A time from <input type="datetime-local"> or a date: UTC.
std::string checked_time(const http::Request& req, const std::string& name) {
  const std::string v = bounded_param(req, name, 32);
  static const std::regex kTime(R"(\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2})?)?Z?)");
  if (!v.empty() && !std::regex_match(v, kTime)) {
    throw FieldError(name, name + ": '" + v + "' is not a time (YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC)");
  }
  return v;
}

Filters parse_filters(const http::Request& req) {
  Filters f;
  f.status = bounded_param(req, "status", 40);
  if (!f.status.empty() && !model::parse_status(f.status)) {
    throw FieldError("status", "status: '" + f.status + "' is not a job status");
  }
  f.type = bounded_param(req, "type", 200);
  f.since = checked_time(req, "since");
  f.until = checked_time(req, "until");
  f.text = bounded_param(req, "q", 200);
  f.before = bounded_param(req, "before", 20);
  if (!f.before.empty() && !std::regex_match(f.before, std::regex("[0-9]{1,18}"))) {
    throw FieldError("before", "before: a job id");
  }
  return f;
}

std::string like_pattern(const std::string& text) {
  std::string p = "%";
  for (const char c : text) {
    if (c == '%' || c == '_' || c == '\\') p += '\\';
    p += c;
  }
  return p + "%";
}

std::string utc(std::string t) {
  if (t.empty()) return t;
  if (t.size() == 10) t += "T00:00";  // a date: its start
  return t.back() == 'Z' ? t : t + "Z";
}

std::string select(const char* name, const std::vector<std::string>& options, const std::string& chosen) {
  std::string h = "<select name=\"" + std::string(name) + "\"><option value=\"\">any " + name + "</option>";
  for (const auto& o : options) {
    h += "<option" + std::string(o == chosen ? " selected" : "") + ">" + html_escape(o) + "</option>";
  }
  return h + "</select>";
}

std::string filter_form(db::Tx& tx, const Filters& f) {
  std::vector<std::string> statuses, types;
  for (const auto s : model::kAllStatuses) statuses.emplace_back(model::to_string(s));
  for (const db::Row r : tx.exec(kTypes)) types.push_back(r[0].as_string());
  return "<form class=\"filters\" method=\"get\" action=\"/jobs\">" + select("status", statuses, f.status) +
         select("type", types, f.type) + "<label>since <input type=\"datetime-local\" name=\"since\" value=\"" +
         html_escape(f.since) + "\"></label><label>until <input type=\"datetime-local\" name=\"until\" value=\"" +
         html_escape(f.until) +
         "\"></label><input type=\"search\" name=\"q\" placeholder=\"error message or subtype\" "
         "value=\"" +
         html_escape(f.text) +
         "\"><button type=\"submit\">Filter</button> <a href=\"/jobs\">clear</a> "
         "<span class=\"muted\">(times in UTC)</span></form>";
}

std::string row(const db::Row& r) {
  const std::string id = std::to_string(r["id"].as_int());
  std::string error = r["error_subtype"].as_string();
  if (!r["error_message"].as_string().empty()) error += (error.empty() ? "" : ": ") + r["error_message"].as_string();
  if (error.size() > 160) error = error.substr(0, 160) + "…";
  return "<tr><td><a href=\"/jobs/" + id + "\">" + id + "</a></td><td>" + html_escape(r["job_type"].as_string()) +
         "</td><td>" + status_badge(r["status"].as_string()) + "</td><td>" + std::to_string(r["attempt"].as_int()) +
         "/" + std::to_string(r["max_attempts"].as_int()) + "</td><td>" +
         html_escape(short_time(r["created_at"].as_string())) + "</td><td>" +
         html_escape(short_time(r["updated_at"].as_string())) + "</td><td>" + html_escape(error) + "</td></tr>";
}

std::string jobs_page(db::Tx& tx, const Filters& f) {
  const auto rows = tx.exec(kJobs, {given(f.status), given(f.type), given(utc(f.since)), given(utc(f.until)),
                                    f.text.empty() ? std::nullopt : std::optional<std::string>(like_pattern(f.text)),
                                    given(f.before), kPageSize + 1});
  std::string h = filter_form(tx, f) +
                  "<table id=\"jobs\"><tr><th>id</th><th>type</th><th>status</th><th>attempt</th><th>created (UTC)"
                  "</th><th>updated (UTC)</th><th>error</th></tr>";
  std::string last_id;
  for (int i = 0; i < rows.size() && i < kPageSize; ++i) {
    h += row(rows[i]);
    last_id = std::to_string(rows[i]["id"].as_int());
  }
  h += "</table>";
  if (rows.empty()) h += "<p class=\"muted\">no job matches</p>";
  const std::string keep =
      query_string({{"status", f.status}, {"type", f.type}, {"since", f.since}, {"until", f.until}, {"q", f.text}});
  if (!f.before.empty()) h += "<a href=\"/jobs?" + html_escape(keep) + "\">« newest</a> ";
  if (rows.size() > kPageSize) {
    h += "<a id=\"older\" href=\"/jobs?" + html_escape(query_string({{"before", last_id}})) +
         (keep.empty() ? "" : "&amp;" + html_escape(keep)) + "\">older »</a>";
  }
  return h;
}

}  // namespace

void add_jobs_routes(runtime::Context& ctx) {
  ctx.http().route("GET", "/jobs", [&ctx](const http::Request& req) {
    const Filters f = parse_filters(req);
    const std::string body = ctx.db().transact([&](db::Tx& tx) { return jobs_page(tx, f); });
    return html_page(req, "/jobs", "Jobs", body);
  });
}

}  // namespace conveyor::monitor::console
