// `conveyor job ls|inspect|submit|cancel|retry|logs|stats`: the jobs of
// DESIGN §6 and runbooks 000, 002 and 003, straight on PostgreSQL so they
// work while the services are down. Submit, cancel and retry are the same
// functions the REST API calls (model::submit_job, cancel_job, retry_job), so
// a job moves the same way whoever asked; every change is recorded in the
// history with the actor conveyor-cli:<user>.
#include <charconv>
#include <cmath>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <ostream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "conveyor/error/error.hpp"
#include "conveyor/model/job.hpp"
#include "conveyor/model/job_control.hpp"
#include "conveyor/model/job_logs.hpp"
#include "conveyor/model/submission.hpp"
#include "conveyor/model/submission_json.hpp"
#include "conveyor/model/system_parameters.hpp"

namespace conveyor::cli {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr const char* kJobUsage =
    "usage: conveyor job ls [--status S[,S...]] [--type T] [--page N] [--size N]\n"
    "       conveyor job inspect ID\n"
    "       conveyor job submit TYPE [--params JSON | --params-file FILE] [--priority N]\n"
    "                         [--depends-on ID,ID] [--not-before TIME] [--idempotency-key K]\n"
    "       conveyor job submit --file FILE   (FILE, or - for stdin: {\"jobs\": [...]} as POST /v1/jobs/batch\n"
    "                         takes it; up to 1000 jobs in one transaction, all or none)\n"
    "       conveyor job cancel ID... [--yes]\n"
    "       conveyor job retry ID...\n"
    "       conveyor job hold ID...      (admission skips it until released; recorded in its changes)\n"
    "       conveyor job release ID...\n"
    "       conveyor job logs ID [--tail N] [--follow]\n"
    "       conveyor job kill ID... [--cleanup] [--yes]\n"
    "       conveyor job set-status ID... --to STATUS[,STATUS...] [--yes]\n"
    "       conveyor job patch --status S [--type T] [--since WHEN] [--until WHEN] [--ids ID,ID]\n"
    "                          [--param KEY=VALUE] [--to STATUS[,STATUS...]] [--set-param KEY=VALUE]...\n"
    "                          [--params-file FILE] [--limit N] [--apply] [--yes]\n"
    "       conveyor job stats [--type T] [--since DURATION]\n"
    "IDs are exact job ids. cancel, kill and set-status list the jobs and ask first (--yes: do not ask;\n"
    "without a terminal they refuse unless --yes). DURATION: a number and s, m, h or d (30m, 24h, 7d).\n"
    "WHEN (of created_at): a UTC time, 2026-11-20 or 2026-11-20T06:00:00Z, or a DURATION ago (7d).\n"
    "job stats: median and p95 of the wall time, CPU and peak memory of finished attempts, by job type.\n"
    "job patch --set-param/--params-file: new params (VALUE is JSON, else text), merged as a JSON merge patch\n"
    "(null removes a key), checked against the type's schema, recorded in the job's changes (job inspect);\n"
    "only for jobs initialized, failed, errored or canceled, or with a --to path ending at initialized.\n";

constexpr db::Statement kJobIdExists{"cli_job_id_exists", "SELECT 1 FROM conveyor.job WHERE id = $1"};
// `job patch` selects by status, type and creation time, oldest first. The
// apply locks each job and changes it only if it is still in that status.
// $1 status, $2 type, $3/$4 created_at range, $5 ids, $6/$7 a param's value
// as text (runbook 001 selects by ids and by fields of the job's JSON).
#define CONVEYOR_PATCH_WHERE                                          \
  "WHERE status = $1 AND ($2::text IS NULL OR job_type = $2::text) "  \
  "  AND ($3::timestamptz IS NULL OR created_at >= $3::timestamptz) " \
  "  AND ($4::timestamptz IS NULL OR created_at < $4::timestamptz) "  \
  "  AND ($5::bigint[] IS NULL OR id = ANY($5::bigint[])) "           \
  "  AND ($6::text IS NULL OR params->>$6::text = $7::text) "
constexpr db::Statement kPatchCandidates{"cli_job_patch_candidates",
                                         "SELECT id FROM conveyor.job " CONVEYOR_PATCH_WHERE "ORDER BY id LIMIT $8"};
constexpr db::Statement kPatchCount{"cli_job_patch_count", "SELECT count(*) FROM conveyor.job " CONVEYOR_PATCH_WHERE};
#undef CONVEYOR_PATCH_WHERE

constexpr db::Statement kWorkerName{"cli_worker_name", "SELECT name FROM conveyor.worker WHERE id = $1"};

// Every attempt of a job (conveyor.job_attempt, written by the worker), in order.
constexpr db::Statement kJobAttempts{
    "cli_job_attempts",
    "SELECT attempt, worker_id, worker, image, image_digest, "
    "  " CONVEYOR_RFC3339("started_at") " AS started_at, "
    "  " CONVEYOR_RFC3339("ended_at") " AS ended_at, "
    "  outcome, exit_code, wall_ms, cpu_user_ms, cpu_system_ms, max_rss_kb "
    "FROM conveyor.job_attempt WHERE job_id = $1 ORDER BY id"};

// `job stats`: the finished attempts of each job type ($1: one type or all;
// $2: ended within the last $2 seconds, or all). percentile_cont skips NULLs,
// so an attempt whose usage could not be read counts but is in no percentile.
constexpr db::Statement kAttemptStats{
    "cli_job_attempt_stats",
    "SELECT job_type, count(*) AS attempts, "
    "  percentile_cont(0.5) WITHIN GROUP (ORDER BY wall_ms) AS wall_p50, "
    "  percentile_cont(0.95) WITHIN GROUP (ORDER BY wall_ms) AS wall_p95, "
    "  percentile_cont(0.5) WITHIN GROUP (ORDER BY cpu_user_ms + cpu_system_ms) AS cpu_p50, "
    "  percentile_cont(0.95) WITHIN GROUP (ORDER BY cpu_user_ms + cpu_system_ms) AS cpu_p95, "
    "  percentile_cont(0.5) WITHIN GROUP (ORDER BY max_rss_kb) AS rss_p50, "
    "  percentile_cont(0.95) WITHIN GROUP (ORDER BY max_rss_kb) AS rss_p95 "
    "FROM conveyor.job_attempt "
    "WHERE ended_at IS NOT NULL AND ($1::text IS NULL OR job_type = $1::text) "
    "  AND ($2::bigint IS NULL OR ended_at >= now() - make_interval(secs => $2::bigint)) "
    "GROUP BY job_type ORDER BY job_type"};

// "2026-11-22T10:00:00.123456Z" -> "2026-11-22 10:00:00 UTC"
std::string short_time(const std::optional<std::string>& t) { return display_time(t); }

// "params.seconds: 5 -> 1", one per top-level key whose value differs (keys
// in order; "(absent)" for a key on one side only); a value that is not an
// object on both sides gives one "FIELD: OLD -> NEW". With `width`, values
// are cut with "…" (at a UTF-8 character's start) so that a line is at most
// about that long (each value keeps 12 characters at least).
std::vector<std::string> value_changes(const std::string& field, const json& before, const json& after,
                                       std::size_t width = 0) {
  std::vector<std::string> out;
  auto add = [&](const std::string& name, const json* b, const json* a) {
    const std::size_t used = name.size() + 2 + 4;  // "NAME: " and " -> "
    const std::size_t max_value = width == 0 ? 0 : std::max<std::size_t>(12, (width - std::min(width, used)) / 2);
    auto shown = [&](const json* v) {
      std::string s = v ? v->dump() : "(absent)";
      if (max_value == 0 || s.size() <= max_value) return s;
      std::size_t cut = max_value - 1;
      while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
      return s.substr(0, cut) + "…";
    };
    out.push_back(name + ": " + shown(b) + " -> " + shown(a));
  };
  if (!before.is_object() || !after.is_object()) {
    if (before != after) add(field, &before, &after);
    return out;
  }
  std::set<std::string> keys;
  for (const auto& [k, v] : before.items()) keys.insert(k);
  for (const auto& [k, v] : after.items()) keys.insert(k);
  for (const auto& k : keys) {
    const json* b = before.contains(k) ? &before[k] : nullptr;
    const json* a = after.contains(k) ? &after[k] : nullptr;
    if (b && a && *b == *a) continue;
    add(field + "." + k, b, a);
  }
  return out;
}

// The job's attempt as people count: stored from 0 (the attempt it is on, or
// will run next), shown from 1 against its maximum: "1 of 3".
std::string attempt_text(const model::Job& j) {
  return std::to_string(j.attempt + 1) + " of " + std::to_string(j.max_attempts);
}

// The job's error as `subtype: message`, or "" when it has none. Only a
// failed, internal_error or external_error job is in its error now; any
// other status keeps the error of a run before (a job requeued by its
// worker's shutdown, or retried after a failure, runs again with it) until
// a run succeeds, so it is shown as the last run's.
std::string error_text(const model::Job& j) {
  if (!j.error_subtype && !j.error_message) return "";
  std::string text = j.error_subtype.value_or("");
  if (j.error_message) text += (text.empty() ? "" : ": ") + *j.error_message;
  return model::is_error(j.status) ? text : "last run: " + text;
}

std::string fixed(double v, int decimals) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(decimals) << v;
  return s.str();
}

// 850 -> "850ms", 12345 -> "12.3s", 245000 -> "4m05s", 7380000 -> "2h03m"
std::string human_ms(double ms) {
  if (ms < 999.5) return fixed(ms, 0) + "ms";
  if (ms < 59'950) return fixed(ms / 1000, 1) + "s";
  const std::int64_t s = std::llround(ms / 1000);
  auto two = [](std::int64_t n) { return (n < 10 ? "0" : "") + std::to_string(n); };
  if (s < 3600) return std::to_string(s / 60) + "m" + two(s % 60) + "s";
  return std::to_string(s / 3600) + "h" + two(s / 60 % 60) + "m";
}

// KiB (max_rss_kb) -> "812 KiB", "212.4 MiB", "1.5 GiB"
std::string human_kib(double kib) {
  if (kib < 1024) return fixed(kib, 0) + " KiB";
  if (kib < 1024 * 1024) return fixed(kib / 1024, 1) + " MiB";
  return fixed(kib / (1024 * 1024), 1) + " GiB";
}

template <typename T, typename F>
std::string or_dash(const std::optional<T>& v, F&& format) {
  return v ? format(*v) : "-";
}

// One row of conveyor.job_attempt: where one attempt of a job ran, how it
// ended and what it cost (usage NULL when the worker could not read it).
struct Attempt {
  int attempt = 0;
  std::optional<std::int64_t> worker_id;
  std::optional<std::string> worker;
  std::optional<std::string> image;
  std::optional<std::string> image_digest;
  std::string started_at;
  std::optional<std::string> ended_at;
  std::optional<std::string> outcome;  // the status it left the job in, or "lost"
  std::optional<std::int64_t> exit_code;
  std::optional<std::int64_t> wall_ms;
  std::optional<std::int64_t> cpu_user_ms;
  std::optional<std::int64_t> cpu_system_ms;
  std::optional<std::int64_t> max_rss_kb;

  std::optional<std::int64_t> cpu_ms() const {
    if (!cpu_user_ms || !cpu_system_ms) return std::nullopt;
    return *cpu_user_ms + *cpu_system_ms;
  }
  json to_json() const {
    auto j = [](const auto& v) { return v ? json(*v) : json(nullptr); };
    return {{"attempt", attempt},         {"worker_id", j(worker_id)},       {"worker", j(worker)},
            {"image", j(image)},          {"image_digest", j(image_digest)}, {"started_at", started_at},
            {"ended_at", j(ended_at)},    {"outcome", j(outcome)},           {"exit_code", j(exit_code)},
            {"wall_ms", j(wall_ms)},      {"cpu_user_ms", j(cpu_user_ms)},   {"cpu_system_ms", j(cpu_system_ms)},
            {"max_rss_kb", j(max_rss_kb)}};
  }
};

std::vector<Attempt> load_attempts(db::Tx& tx, model::JobId id) {
  std::vector<Attempt> attempts;
  for (const db::Row r : tx.exec(kJobAttempts, {id.value()})) {
    attempts.push_back({.attempt = r["attempt"].as<int>(),
                        .worker_id = r["worker_id"].opt<std::int64_t>(),
                        .worker = r["worker"].opt<std::string>(),
                        .image = r["image"].opt<std::string>(),
                        .image_digest = r["image_digest"].opt<std::string>(),
                        .started_at = r["started_at"].as_string(),
                        .ended_at = r["ended_at"].opt<std::string>(),
                        .outcome = r["outcome"].opt<std::string>(),
                        .exit_code = r["exit_code"].opt<std::int64_t>(),
                        .wall_ms = r["wall_ms"].opt<std::int64_t>(),
                        .cpu_user_ms = r["cpu_user_ms"].opt<std::int64_t>(),
                        .cpu_system_ms = r["cpu_system_ms"].opt<std::int64_t>(),
                        .max_rss_kb = r["max_rss_kb"].opt<std::int64_t>()});
  }
  return attempts;
}

// Exact ids only. Job ids are dense, so every substring of an id is another
// job's id: `job kill 91` meant for 391 must not reach job 91 (issue 13).
void check_job_id_syntax(const std::string& arg) {
  const bool digits = !arg.empty() && arg.size() <= 18 && arg.find_first_not_of("0123456789") == std::string::npos;
  if (!digits) throw FieldError("ID", "'" + arg + "' is not a job id (digits)");
}

model::JobId resolve_job_id(db::Tx& tx, const std::string& arg) {
  check_job_id_syntax(arg);
  const std::int64_t exact = std::stoll(arg);
  if (exact <= 0 || tx.exec(kJobIdExists, {exact}).empty()) {
    throw Error(errc::not_found, "no job with id " + arg + " (ids are exact; `conveyor job ls` lists them)");
  }
  return model::JobId(exact);
}

std::vector<std::string> need_ids(const Options& o, const std::string& command) {
  if (o.positional.empty()) {
    throw FieldError("ID", "job " + command + ": at least one job ID is required\n" + std::string(kJobUsage));
  }
  // A typo is a usage error (exit 2) before any job is touched, as for the
  // verbs of one job; an id no job has is refused on its own (exit 1).
  for (const auto& arg : o.positional) {
    try {
      check_job_id_syntax(arg);
    } catch (const FieldError& e) {
      throw FieldError("ID", "job " + command + ": " + e.what() + "; nothing was changed");
    }
  }
  return o.positional;
}

model::JobStatus status_option(const std::string& option, const std::string& value) {
  return model::status_named(value, option);
}

// For a --type that matched no job: if no job type has that name, most
// likely a typo, say so on stderr (a job of a removed type would have
// matched).
void say_if_no_such_type(Context& ctx, db::Pool& pool, const char* command, const std::optional<std::string>& type) {
  if (!type || pool.transact([&](db::Tx& tx) { return model::load_job_type(tx, *type).has_value(); })) return;
  ctx.err << "conveyor: " << command << ": no job type named '" << *type << "' (see `conveyor job-type list`)\n";
}

int ls(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "job ls", {"--status", "--type", "--page", "--size"});
  if (!o.positional.empty()) throw FieldError(o.positional[0], "job ls: unexpected argument '" + o.positional[0] + "'");
  model::JobQuery q;
  if (const auto s = o.get("--status")) q.statuses = model::statuses_named(*s, "--status");
  q.job_type = o.get("--type");
  q.page = int_option(o, "--page", 1, 1, 1'000'000'000);
  q.size = int_option(o, "--size", model::kDefaultPageSize, 1, model::kMaxPageSize);
  db::Pool pool(pool_options(ctx));
  db::TxOptions snapshot;
  snapshot.isolation = db::Isolation::repeatable_read;
  const model::JobPage page = pool.transact([&](db::Tx& tx) { return model::list_jobs(tx, q); }, snapshot);
  if (page.total == 0) say_if_no_such_type(ctx, pool, "job ls", q.job_type);
  if (ctx.json) {
    json items = json::array();
    for (const auto& j : page.items) items.push_back(j.to_json());
    ctx.out << json{{"items", items}, {"page", q.page}, {"size", q.size}, {"total", page.total}}.dump() << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& j : page.items) {
    std::string error = error_text(j);
    if (error.size() > 60) error = error.substr(0, 57) + "...";
    rows.push_back({std::to_string(j.id.value()), j.job_type, std::string(model::to_string(j.status)), attempt_text(j),
                    std::to_string(j.priority), j.worker_id ? std::to_string(*j.worker_id) : "-",
                    short_time(j.updated_at), j.canceled_at ? "yes" : "", j.held_at ? "HELD" : "", error});
  }
  print_table(ctx.out, {"ID", "TYPE", "STATUS", "ATTEMPT", "PRIORITY", "WORKER", "UPDATED", "CANCEL", "HELD", "ERROR"},
              rows);
  const std::int64_t pages = (page.total + q.size - 1) / q.size;
  ctx.out << page.total << " job(s)";
  if (pages >= 1 && q.page > pages) {
    ctx.out << "; page " << q.page << " is past the last, " << pages;
  } else if (pages > 1) {
    ctx.out << ", page " << q.page << " of " << pages << " (--page N)";
  }
  ctx.out << "\n";
  return kExitOk;
}

// What `job inspect` shows of one job, read in one snapshot.
struct JobView {
  model::Job job;
  std::vector<model::StatusChange> history;
  std::vector<model::AuditEntry> audit;
  std::vector<Attempt> attempts;
  std::optional<std::string> worker;  // the name of the worker it is on, when known
};

JobView read_job_view(Context& ctx, const std::string& id_arg) {
  db::Pool pool(pool_options(ctx));
  db::TxOptions snapshot;
  snapshot.isolation = db::Isolation::repeatable_read;
  return pool.transact(
      [&](db::Tx& tx) {
        JobView s{model::get_job(tx, resolve_job_id(tx, id_arg)), {}, {}, {}, std::nullopt};
        s.history = model::load_history(tx, s.job.id);
        s.audit = model::load_audit(tx, s.job.id);
        s.attempts = load_attempts(tx, s.job.id);
        if (s.job.worker_id) {
          const auto w = tx.exec(kWorkerName, {*s.job.worker_id});
          if (!w.empty()) s.worker = w[0][0].as_string();
        }
        return s;
      },
      snapshot);
}

json job_view_json(const JobView& seen) {
  json out = seen.job.to_json();
  out["history"] = json::array();
  for (const auto& c : seen.history) out["history"].push_back(c.to_json());
  out["audit"] = json::array();
  for (const auto& a : seen.audit) out["audit"].push_back(a.to_json());
  out["attempts"] = json::array();
  for (const auto& a : seen.attempts) out["attempts"].push_back(a.to_json());
  return out;
}

// "Status          : running", one line per field of the job.
void print_job_fields(std::ostream& out, const JobView& seen) {
  const model::Job& j = seen.job;
  auto line = [&](const std::string& k, const std::string& v) {
    out << k << std::string(k.size() < 16 ? 16 - k.size() : 1, ' ') << ": " << v << "\n";
  };
  line("ID", std::to_string(j.id.value()));
  line("Type", j.job_type);
  line("Status", std::string(model::to_string(j.status)));
  line("Attempt", attempt_text(j));
  line("Priority", std::to_string(j.priority));
  line("Params", j.params.dump());
  std::string deps;
  for (const auto d : j.depends_on) deps += (deps.empty() ? "" : ", ") + std::to_string(d);
  line("Depends on", deps.empty() ? "-" : deps);
  line("Worker", j.worker_id ? std::to_string(*j.worker_id) + (seen.worker ? " (" + *seen.worker + ")" : "") : "-");
  line("Created", short_time(j.created_at));
  line("Updated", short_time(j.updated_at));
  line("Not before", short_time(j.not_before));
  line("Canceled at", short_time(j.canceled_at));
  line("Held at", j.held_at ? short_time(j.held_at) + " (admission skips it: conveyor job release " +
                                  std::to_string(j.id.value()) + ")"
                            : "-");
  line("Idempotency key", j.idempotency_key.value_or("-"));
  const std::string error = error_text(j);
  line("Error", error.empty() ? "-" : error);
  line("Result", j.result.is_null() ? "-" : j.result.dump());
}

void print_job_history(std::ostream& out, const std::vector<model::StatusChange>& history) {
  out << "\nhistory:\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& c : history) {
    rows.push_back({short_time(c.at), c.from_status ? std::string(model::to_string(*c.from_status)) : "(insert)",
                    std::string(model::to_string(c.to_status)), c.actor,
                    c.error_subtype.value_or("") + (c.message ? (c.error_subtype ? ": " : "") + *c.message : "")});
  }
  print_table(out, {"AT", "FROM", "TO", "ACTOR", "NOTE"}, rows);
}

// conveyor.job_audit: edits of params and config, by the CLI or by SQL.
// One line per change, then its changed keys, each value cut to keep a line
// within 100 columns (--json has them whole).
void print_job_changes(std::ostream& out, const std::vector<model::AuditEntry>& audit) {
  out << "\nchanges:\n";
  if (audit.empty()) out << "  -\n";
  for (const auto& a : audit) {
    out << "  " << short_time(a.at) << "  " << a.actor << "  " << a.field << "\n";
    for (const auto& c : value_changes(a.field, a.old_value, a.new_value, 96)) out << "    " << c << "\n";
  }
}

// Counted from 1 like the Attempt field (stored from 0; --json keeps the stored number).
void print_job_attempts(std::ostream& out, const std::vector<Attempt>& attempts) {
  out << "\nattempts:\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& a : attempts) {
    const std::string worker = a.worker ? *a.worker : or_dash(a.worker_id, [](auto id) { return std::to_string(id); });
    rows.push_back({std::to_string(a.attempt + 1), worker, short_time(a.started_at), short_time(a.ended_at),
                    a.outcome.value_or(a.ended_at ? "-" : "(running)"),
                    or_dash(a.exit_code, [](auto c) { return std::to_string(c); }), or_dash(a.wall_ms, human_ms),
                    or_dash(a.cpu_ms(), human_ms), or_dash(a.max_rss_kb, human_kib),
                    a.image ? *a.image + (a.image_digest ? " (" + *a.image_digest + ")" : "") : "-"});
  }
  print_table(out, {"ATTEMPT", "WORKER", "STARTED", "ENDED", "OUTCOME", "EXIT", "WALL", "CPU", "PEAK MEM", "IMAGE"},
              rows);
}

int inspect(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "job inspect", {});
  if (o.positional.size() != 1)
    throw FieldError("ID", "job inspect: one job ID is required\n" + std::string(kJobUsage));
  const JobView seen = read_job_view(ctx, o.positional[0]);
  if (ctx.json) {
    ctx.out << job_view_json(seen).dump() << "\n";
    return kExitOk;
  }
  print_job_fields(ctx.out, seen);
  print_job_history(ctx.out, seen.history);
  print_job_changes(ctx.out, seen.audit);
  print_job_attempts(ctx.out, seen.attempts);
  return kExitOk;
}

// "error_checked,ready" -> the path of an operator's status change.
std::vector<model::JobStatus> status_path(const Options& o) {
  const auto to = o.get("--to");
  if (!to || to->empty()) throw FieldError("--to", "--to STATUS[,STATUS...] is required");
  std::vector<model::JobStatus> path;
  std::stringstream ss(*to);
  for (std::string item; std::getline(ss, item, ',');) path.push_back(status_option("--to", item));
  return path;
}

std::string path_text(const std::vector<model::JobStatus>& path) {
  std::string t;
  for (const auto s : path) t += " -> " + std::string(model::to_string(s));
  return t;
}

json read_params(const Options& o) {
  const auto inline_params = o.get("--params");
  const auto file = o.get("--params-file");
  if (inline_params && file) throw FieldError("--params", "--params and --params-file: give one of them");
  std::string text = "{}";
  std::string source = "--params";
  if (inline_params) text = *inline_params;
  if (file) {
    std::ifstream in(*file);
    if (!in) throw FieldError("--params-file", "--params-file: cannot read " + *file);
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
    source = *file;
  }
  try {
    json j = json::parse(text);
    if (!j.is_object()) throw FieldError(file ? "--params-file" : "--params", source + ": expected a JSON object");
    return j;
  } catch (const json::parse_error& e) {
    throw FieldError(file ? "--params-file" : "--params", source + ": not valid JSON: " + e.what());
  }
}

// The system parameters, or Error(unavailable) while submissions are paused.
model::SystemParameters accepting_parameters(db::Tx& tx) {
  model::SystemParameters p = model::load_system_parameters(tx);
  if (!p.accepting_new_jobs) {
    throw Error(errc::unavailable, "not accepting new jobs: " +
                                       (p.not_accepting_reason.empty() ? "no reason given" : p.not_accepting_reason) +
                                       " (`conveyor system unpause` accepts them again)");
  }
  return p;
}

// `job submit --file FILE`: the jobs of a POST /v1/jobs/batch body (FILE
// "-": standard input), all in one transaction or none.
int submit_file(Context& ctx, const Options& o) {
  const std::string file = *o.get("--file");
  if (!o.positional.empty() || o.values.size() > 1) {
    throw FieldError("--file", "job submit --file: the jobs come from the file; give no TYPE and no other option");
  }
  std::stringstream text;
  if (file == "-") {
    text << std::cin.rdbuf();
  } else {
    std::ifstream in(file);
    if (!in) throw FieldError("--file", "--file: cannot read " + file);
    text << in.rdbuf();
  }
  const json body = json::parse(text.str(), nullptr, false);
  if (body.is_discarded()) throw FieldError("--file", "--file: " + file + " is not valid JSON");
  const std::vector<model::SubmitRequest> requests = model::parse_submit_batch(body);
  db::Pool pool(pool_options(ctx));
  const auto results =
      pool.transact([&](db::Tx& tx) { return model::submit_jobs(tx, accepting_parameters(tx), requests); });
  json items = json::array();
  std::int64_t created = 0;
  for (const auto& r : results) {
    created += r.created ? 1 : 0;
    items.push_back({{"created", r.created}, {"job", r.job.to_json()}});
    if (ctx.json) continue;
    ctx.out << (r.created ? "submitted job " : "existing job ") << r.job.id.value() << " (" << r.job.job_type
            << (r.created ? ")" : ", idempotency key '" + r.job.idempotency_key.value_or("") + "')") << "\n";
  }
  if (ctx.json) ctx.out << json({{"items", items}, {"created", created}}).dump() << "\n";
  else ctx.out << created << " of " << results.size() << " job(s) created\n";
  return kExitOk;
}

int submit(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(
      args, "job submit",
      {"--params", "--params-file", "--priority", "--depends-on", "--not-before", "--idempotency-key", "--file"});
  if (o.get("--file")) return submit_file(ctx, o);
  if (o.positional.size() != 1)
    throw FieldError("TYPE", "job submit: one job TYPE is required\n" + std::string(kJobUsage));
  model::SubmitRequest r;
  r.job_type = o.positional[0];
  r.params = read_params(o);
  if (o.get("--priority")) r.priority = static_cast<int>(int_option(o, "--priority", 0, INT32_MIN, INT32_MAX));
  if (const auto deps = o.get("--depends-on")) {
    std::stringstream ss(*deps);
    std::string item;
    while (std::getline(ss, item, ',')) {
      if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos || item.size() > 18) {
        throw FieldError("--depends-on", "--depends-on: '" + item + "' is not a job id");
      }
      r.depends_on.push_back(std::stoll(item));
    }
  }
  r.not_before = o.get("--not-before");
  r.idempotency_key = o.get("--idempotency-key");
  if (r.idempotency_key && (r.idempotency_key->empty() || r.idempotency_key->size() > model::kMaxIdempotencyKey)) {
    throw FieldError("--idempotency-key",
                     "--idempotency-key: 1 to " + std::to_string(model::kMaxIdempotencyKey) + " characters");
  }
  db::Pool pool(pool_options(ctx));
  const model::SubmitResult result =
      pool.transact([&](db::Tx& tx) { return model::submit_job(tx, accepting_parameters(tx), r); });
  if (ctx.json) {
    json out = result.job.to_json();
    out["created"] = result.created;
    ctx.out << out.dump() << "\n";
  } else if (result.created) {
    ctx.out << "submitted job " << result.job.id.value() << " (" << result.job.job_type << ")\n";
  } else {
    ctx.out << "job " << result.job.id.value() << " already exists with idempotency key '" << *r.idempotency_key
            << "' (" << model::to_string(result.job.status) << "): nothing created\n";
  }
  return kExitOk;
}

// What a destructive command asks before it acts ("kill" -> "kill 2 job(s)?"),
// or nothing when --yes answered it.
std::optional<std::string> ask_unless_yes(const Options& o, const std::string& verb) {
  return o.has("--yes") ? std::nullopt : std::optional<std::string>(verb);
}

// Runs `fn` on each job in its own transaction, so one refused job (done,
// missing) does not hold back the others; exit 1 if any was refused.
// With `ask` (a destructive command without --yes) it first lists the jobs it
// will touch and asks; refused (or no terminal), nothing changes and exit 1.
// A job each_job could not act on: in the JSON answer, or on stderr. A
// message that names its job ("job 11: failed -> done is not allowed") is
// not prefixed with the id once more.
void report_refusal(Context& ctx, json& results, const std::string& command, const std::string& arg,
                    const std::string& why) {
  if (ctx.json) results.push_back({{"id", arg}, {"error", why}});
  else if (why.rfind("job ", 0) == 0) ctx.err << "conveyor: job " << command << ": " << why << "\n";
  else ctx.err << "conveyor: job " << command << " " << arg << ": " << why << "\n";
}

template <typename F>
int each_job(Context& ctx, const std::vector<std::string>& ids, const std::string& command, F&& fn,
             const std::optional<std::string>& ask = std::nullopt) {
  db::Pool pool(pool_options(ctx));
  json results = json::array();
  int refused = 0;
  auto refuse = [&](const std::string& arg, const std::string& why) {
    ++refused;
    report_refusal(ctx, results, command, arg, why);
  };
  std::vector<std::string> todo = ids;
  if (ask) {
    struct Seen {
      std::vector<std::string> found;                            // as given, each an existing job's id
      std::vector<std::pair<std::string, std::string>> missing;  // arg, why
      std::string table;
    };
    const Seen seen = pool.transact([&](db::Tx& tx) {
      Seen s;
      std::vector<std::int64_t> found_ids;
      for (const auto& arg : ids) {
        try {
          found_ids.push_back(resolve_job_id(tx, arg).value());
          s.found.push_back(arg);
        } catch (const Error& e) {
          if (e.code() != errc::not_found && e.code() != errc::bad_input) throw;
          s.missing.emplace_back(arg, e.what());
        }
      }
      std::ostringstream table;
      if (!found_ids.empty()) print_jobs(table, tx, found_ids);
      s.table = table.str();
      return s;
    });
    for (const auto& [arg, why] : seen.missing) refuse(arg, why);
    todo = seen.found;
    if (!todo.empty()) {
      std::ostream& talk = ctx.json ? ctx.err : ctx.out;
      talk << "job " << command << " will touch:\n" << seen.table;
      if (!confirm(ctx, talk, *ask + " " + std::to_string(todo.size()) + " job(s)?")) {
        talk << "not applied: nothing changed\n";
        return kExitFailed;
      }
    }
  }
  for (const auto& arg : todo) {
    try {
      json r = pool.transact([&](db::Tx& tx) { return fn(tx, resolve_job_id(tx, arg)); });
      if (ctx.json) results.push_back(r);
      else ctx.out << r.at("text").get<std::string>() << "\n";
    } catch (const Error& e) {
      refuse(arg, e.what());
    }
  }
  if (ctx.json) ctx.out << results.dump() << "\n";
  return refused == 0 ? kExitOk : kExitFailed;
}

int cancel(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "job cancel", {}, {"--yes"});
  return each_job(
      ctx, need_ids(o, "cancel"), "cancel",
      [](db::Tx& tx, model::JobId id) {
        const model::JobStatus before = model::get_job(tx, id).status;
        const model::CancelResult r = model::cancel_job(tx, id);
        json out = r.job.to_json();
        const std::string n = "job " + std::to_string(id.value());
        if (!r.completed) {
          out["text"] = n + ": cancel requested; it is running, its worker stops it (status " +
                        std::string(model::to_string(r.job.status)) + ")";
        } else if (before == model::JobStatus::canceled) {
          out["text"] = n + ": already canceled";
        } else {
          out["text"] = n + ": " + std::string(model::to_string(before)) + " -> canceled";
        }
        return out;
      },
      ask_unless_yes(o, "cancel"));
}

// For commands that do not ask first: a named empty question rather than
// each_job's default argument, whose temporary gcc 12 warns about
// (maybe-uninitialized) in some inlining of each_job.
const std::optional<std::string> kNoQuestion;

int retry(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "job retry", {});
  return each_job(
      ctx, need_ids(o, "retry"), "retry",
      [](db::Tx& tx, model::JobId id) {
        const model::JobStatus before = model::get_job(tx, id).status;
        const model::Job j = model::retry_job(tx, id);
        json out = j.to_json();
        out["text"] = "job " + std::to_string(id.value()) + ": " + std::string(model::to_string(before)) + " -> " +
                      std::string(model::to_string(j.status));
        return out;
      },
      kNoQuestion);
}

// Issue 13, item 9: `job hold` and `job release` (model::hold_job /
// release_job), one transaction per job.
json hold_one(db::Tx& tx, model::JobId id, bool hold) {
  const model::HoldChange r = hold ? model::hold_job(tx, id) : model::release_job(tx, id);
  const std::string n = "job " + std::to_string(id.value());
  const std::string status(model::to_string(r.job.status));
  std::string text;
  if (hold && r.changed) {
    text = n + ": held (" + status + "); admission skips it until `conveyor job release " + std::to_string(id.value()) +
           "`";
  } else if (hold) {
    text = n + ": already held since " + r.job.held_at.value_or("?");
  } else {
    text = n + (r.changed ? ": released (" + status + ")" : ": not held");
  }
  json out = r.job.to_json();
  out["text"] = text;
  return out;
}

int hold(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "job hold", {});
  return each_job(
      ctx, need_ids(o, "hold"), "hold", [](db::Tx& tx, model::JobId id) { return hold_one(tx, id, true); },
      kNoQuestion);
}

int release(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "job release", {});
  return each_job(
      ctx, need_ids(o, "release"), "release", [](db::Tx& tx, model::JobId id) { return hold_one(tx, id, false); },
      kNoQuestion);
}

bool still_running(model::JobStatus s) {
  return s == model::JobStatus::initialized || s == model::JobStatus::configured || s == model::JobStatus::ready ||
         s == model::JobStatus::queued || s == model::JobStatus::started;
}

// Runbook 003's watch-job-logs: what is appended, until the job stops running
// (any status after started, a retry's ready excepted) or Ctrl-C.
// `offset`: how much of the file was printed already.
void follow(Context& ctx, db::Pool& pool, model::JobId id, const fs::path& file, std::streamoff offset) {
  const InterruptGuard guard;
  std::ifstream in;
  auto drain = [&] {
    if (!in.is_open()) {
      in.open(file);
      if (!in.is_open()) return;
      in.seekg(offset);
    }
    std::string chunk(4096, '\0');
    while (in.read(chunk.data(), static_cast<std::streamsize>(chunk.size())) || in.gcount() > 0) {
      ctx.out.write(chunk.data(), in.gcount());
    }
    ctx.out.flush();
    in.clear();  // at EOF: more may come
  };
  for (;;) {
    drain();
    const model::JobStatus s = pool.transact([&](db::Tx& tx) { return model::get_job(tx, id).status; });
    if (!still_running(s) || InterruptGuard::interrupted()) {
      drain();
      if (!InterruptGuard::interrupted()) ctx.err << "job " << id.value() << " is " << model::to_string(s) << "\n";
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // polling a file and a row, not a test
  }
}

int logs(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "job logs", {"--tail"}, {"--follow", "-f"});
  const bool following = o.has("--follow") || o.has("-f");
  if (o.positional.size() != 1) throw FieldError("ID", "job logs: one job ID is required\n" + std::string(kJobUsage));
  // --tail N: the last N lines (0: none, with --follow only what comes); none given: all.
  const std::int64_t tail = o.get("--tail") ? int_option(o, "--tail", 0, 0, 100'000'000) : -1;
  db::Pool pool(pool_options(ctx));
  // Whether a worker ever started it: only then is there a log to find.
  static constexpr db::Statement kEverStarted{
      "cli_job_ever_started",
      "SELECT EXISTS (SELECT 1 FROM conveyor.job_status_change WHERE job_id = $1 AND to_status = 'started')"};
  const auto [job, ran] = pool.transact([&](db::Tx& tx) {
    model::Job j = model::get_job(tx, resolve_job_id(tx, o.positional[0]));
    const bool started = tx.exec(kEverStarted, {j.id.value()})[0][0].as_bool();
    return std::pair{std::move(j), started};
  });
  const fs::path file = model::job_log_file(ctx.config.get_string("CONVEYOR_DATA_DIR"), job);
  std::ifstream in(file);
  if (!in && following && still_running(job.status)) {
    follow(ctx, pool, job.id, file, 0);  // it has not run yet: its log appears once it does
    return kExitOk;
  }
  if (!in) {
    throw Error(errc::not_found, "job " + std::to_string(job.id.value()) + " (" +
                                     std::string(model::to_string(job.status)) + ") has no log at " + file.string() +
                                     (ran                         ? " (is CONVEYOR_DATA_DIR the workers' data dir?)"
                                      : still_running(job.status) ? ": it has not run yet"
                                                                  : ": it ended before a worker ever started it"));
  }
  if (tail < 0) {
    if (in.peek() != std::ifstream::traits_type::eof()) ctx.out << in.rdbuf();
  } else {
    std::deque<std::string> last;
    std::string l;
    while (std::getline(in, l)) {
      last.push_back(std::move(l));
      if (static_cast<std::int64_t>(last.size()) > tail) last.pop_front();
    }
    for (const auto& x : last) ctx.out << x << "\n";
  }
  if (following) {
    in.clear();
    const std::streamoff printed = in.rdbuf()->pubseekoff(0, std::ios::cur, std::ios::in);
    in.close();
    follow(ctx, pool, job.id, file, printed);
  }
  return kExitOk;
}

// Runbook 003's kill_job: stop it (or keep it from starting); --cleanup
// removes its outputs once nothing runs it. Idempotent: run it again later
// with --cleanup. Logs stay: they are the record of what happened, and so
// do a done job's outputs: they are its result, published and perhaps the
// inputs of other jobs.
int kill(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "job kill", {}, {"--cleanup", "--yes"});
  const fs::path data_dir = ctx.config.get_string("CONVEYOR_DATA_DIR");
  const bool cleanup = o.has("--cleanup");
  return each_job(
      ctx, need_ids(o, "kill"), "kill",
      [&](db::Tx& tx, model::JobId id) {
        const model::Job before = model::get_job(tx, id);
        std::string n = "job " + std::to_string(id.value());
        json out;
        if (before.status == model::JobStatus::done) {
          out = before.to_json();
          out["text"] = n + ": done, nothing to kill" +
                        (cleanup ? "; its outputs are kept: they are its result (remove them by hand if need be)" : "");
          return out;
        }
        if (before.status == model::JobStatus::canceled) {
          out = before.to_json();
          out["text"] = n + ": already canceled";
        } else {
          const model::CancelResult r = model::cancel_job(tx, id);
          out = r.job.to_json();
          out["text"] = n + (r.completed ? ": " + std::string(model::to_string(before.status)) + " -> canceled"
                                         : ": killing it (its worker stops the process group)");
          if (cleanup && !r.completed) {
            out["text"] = out["text"].get<std::string>() + "; outputs kept while it runs: run again with --cleanup";
          }
        }
        const bool running = out.value("status", "") == "started";
        if (cleanup && !running) {
          std::error_code ec;
          const fs::path dir = model::job_output_dir(data_dir, id.value());
          const auto removed = fs::remove_all(dir, ec);
          if (ec) throw Error(errc::unavailable, n + ": could not remove " + dir.string() + ": " + ec.message());
          out["cleaned"] = removed > 0;
          out["text"] =
              out["text"].get<std::string>() + (removed > 0 ? "; removed " + dir.string() : "; no outputs to remove");
        }
        return out;
      },
      ask_unless_yes(o, "kill"));
}

int set_status(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "job set-status", {"--to"}, {"--yes"});
  const auto path = status_path(o);
  return each_job(
      ctx, need_ids(o, "set-status"), "set-status",
      [&](db::Tx& tx, model::JobId id) {
        const model::JobStatus before = model::get_job(tx, id).status;
        json out = model::set_status(tx, id, path).to_json();
        out["text"] =
            "job " + std::to_string(id.value()) + ": " + std::string(model::to_string(before)) + path_text(path);
        return out;
      },
      ask_unless_yes(o, "change the status of"));
}

// `--set-param KEY=VALUE` (repeatable; VALUE is JSON, else text, as in
// `params set`) over `--params-file FILE`: one JSON merge patch for the
// jobs' params ({} when neither is given).
json params_change(const Options& o) {
  json change = read_params(o);
  std::set<std::string> seen;
  for (const auto& kv : o.get_all("--set-param")) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw FieldError("--set-param", "--set-param: expected KEY=VALUE, got '" + kv + "'");
    }
    const std::string key = kv.substr(0, eq), value = kv.substr(eq + 1);
    if (!seen.insert(key).second) throw FieldError("--set-param", "--set-param: " + key + " given twice");
    change[key] = json::parse(value, nullptr, /*allow_exceptions=*/false);
    if (change[key].is_discarded()) change[key] = value;  // not JSON: text
  }
  return change;
}

// "params.seconds: 0 -> 1; params.mode: (absent) -> \"fast\"": the top-level
// keys whose value differs.
std::string params_diff(const json& before, const json& after) {
  std::string text;
  for (const auto& c : value_changes("params", before, after)) text += (text.empty() ? "" : "; ") + c;
  return text.empty() ? "params unchanged" : text;
}

// What `job patch` was asked, checked before anything is read: which jobs
// (the filter of kPatchCandidates and kPatchCount) and how they change.
struct PatchRequest {
  model::JobStatus from;               // --status
  std::vector<model::JobStatus> path;  // --to, empty when only the params change
  model::JobStatus at;                 // where the path ends: the params are written there
  json change;                         // the params' merge patch; {} for none
  std::int64_t limit;                  // --limit
  std::vector<db::Param> filter;       // $1 to $7 of kPatchCandidates and kPatchCount
  bool edits_params() const { return !change.empty(); }
};

// Where PATH leads from FROM; throws at the first step the status machine
// refuses. Checked before counting, so a typo in --to never shows a count
// for nothing.
model::JobStatus path_end(model::JobStatus from, const std::vector<model::JobStatus>& path) {
  model::JobStatus at = from;
  for (const auto to : path) {
    if (!model::is_valid_transition(at, to)) {
      throw Error(errc::invalid_transition, std::string(model::to_string(at)) + " -> " +
                                                std::string(model::to_string(to)) +
                                                " is not allowed by the status machine");
    }
    at = to;
  }
  return at;
}

// --ids ID,ID: only these jobs (nullopt: any).
std::optional<std::vector<std::int64_t>> ids_option(const Options& o) {
  const auto list = o.get("--ids");
  if (!list) return std::nullopt;
  std::vector<std::int64_t> ids;
  std::stringstream ss(*list);
  for (std::string item; std::getline(ss, item, ',');) {
    if (item.empty() || item.size() > 18 || item.find_first_not_of("0123456789") != std::string::npos) {
      throw FieldError("--ids", "--ids: '" + item + "' is not a job id");
    }
    ids.push_back(std::stoll(item));
  }
  return ids;
}

// --param KEY=VALUE: only the jobs whose params->>KEY is VALUE (nullopt: any).
std::pair<std::optional<std::string>, std::optional<std::string>> param_filter(const Options& o) {
  const auto kv = o.get("--param");
  if (!kv) return {std::nullopt, std::nullopt};
  const auto eq = kv->find('=');
  if (eq == std::string::npos || eq == 0) throw FieldError("--param", "--param: expected KEY=VALUE, got '" + *kv + "'");
  return {kv->substr(0, eq), kv->substr(eq + 1)};
}

PatchRequest read_patch_request(const Options& o) {
  if (!o.positional.empty())
    throw FieldError(o.positional[0], "job patch: unexpected argument '" + o.positional[0] + "' (filters are options)");
  const auto status = o.get("--status");
  if (!status) throw FieldError("--status", "job patch: --status is required (the status the jobs are in now)");
  const model::JobStatus from = status_option("--status", *status);
  json change = params_change(o);
  if (!o.get("--to") && change.empty()) {
    throw FieldError("--to",
                     "job patch: nothing to change: give --to STATUS[,STATUS...], --set-param KEY=VALUE "
                     "or --params-file FILE");
  }
  auto path = o.get("--to") ? status_path(o) : std::vector<model::JobStatus>{};
  const std::int64_t limit = int_option(o, "--limit", 10'000, 1, 1'000'000);
  const model::JobStatus at = path_end(from, path);
  // The params are written at the end of the path: that status must let them change.
  if (!change.empty()) {
    if (const auto reason = model::params_frozen_reason(at)) {
      throw Error(errc::conflict,
                  "job patch: the params of a " + std::string(model::to_string(at)) + " job cannot change: " + *reason);
    }
  }
  const auto only_ids = ids_option(o);
  const auto [param_key, param_value] = param_filter(o);
  const auto time = [&](const char* option) -> std::optional<std::string> {
    const auto v = o.get(option);
    return v ? std::optional(time_or_age_option(option, *v)) : std::nullopt;
  };
  std::vector<db::Param> filter{std::string(model::to_string(from)),
                                o.get("--type"),
                                time("--since"),
                                time("--until"),
                                only_ids,
                                param_key,
                                param_value};
  return PatchRequest{from, std::move(path), at, std::move(change), limit, std::move(filter)};
}

// "failed -> initialized; params {...}": what the patch does, for its messages.
std::string patch_text(const PatchRequest& r) {
  return std::string(model::to_string(r.from)) + path_text(r.path) +
         (r.edits_params() ? (r.path.empty() ? ", params " : "; params ") + r.change.dump() : "");
}

// The jobs a patch would change (the oldest, up to its limit) and how many match in all.
struct PatchMatch {
  std::vector<std::int64_t> ids;
  std::int64_t total;
};

PatchMatch match_patch(db::Pool& pool, const PatchRequest& r) {
  return pool.transact([&](db::Tx& tx) {
    std::vector<db::Param> p = r.filter;
    p.emplace_back(r.limit);
    std::vector<std::int64_t> ids;
    for (const db::Row row : tx.exec(kPatchCandidates, p)) ids.push_back(row[0].as_int());
    return PatchMatch{ids, tx.exec(kPatchCount, r.filter)[0][0].as_int()};
  });
}

void print_patch_match(std::ostream& talk, const PatchRequest& r, const PatchMatch& m) {
  std::string sample;
  for (std::size_t i = 0; i < m.ids.size() && i < 10; ++i) sample += (i ? ", " : "") + std::to_string(m.ids[i]);
  talk << m.total << " job(s) match (" << patch_text(r) << ")"
       << (m.ids.empty() ? "" : ": " + sample + (m.ids.size() > 10 ? ", ..." : "")) << "\n";
  if (m.total > static_cast<std::int64_t>(m.ids.size())) {
    talk << "only the oldest " << m.ids.size() << " would change (--limit " << r.limit << ")\n";
  }
}

// New params: each job's ({"id", "old", "new"}), checked against its type's
// schema now, so the dry run already shows what --apply would refuse (the
// apply checks again under the row locks). Prints the first ten changes;
// throws when a job cannot take the new params.
json new_params(Context& ctx, std::ostream& talk, db::Pool& pool, const PatchRequest& r,
                const std::vector<std::int64_t>& ids) {
  json params_json = json::array();
  if (!r.edits_params() || ids.empty()) return params_json;
  std::vector<std::string> refused;
  pool.transact([&](db::Tx& tx) {
    params_json = json::array();
    refused.clear();
    for (const auto& j : model::load_jobs(tx, ids)) {
      try {
        const json after = model::patched_params(tx, j, r.change);
        params_json.push_back({{"id", j.id.value()}, {"old", j.params}, {"new", after}});
      } catch (const Error& e) {
        if (e.code() != errc::bad_input && e.code() != errc::not_found) throw;
        refused.push_back(e.what());
      }
    }
  });
  for (std::size_t i = 0; i < params_json.size() && i < 10; ++i) {
    talk << "  job " << params_json[i]["id"] << ": " << params_diff(params_json[i]["old"], params_json[i]["new"])
         << "\n";
  }
  if (params_json.size() > 10) talk << "  ... and " << params_json.size() - 10 << " more\n";
  if (!refused.empty()) {
    for (std::size_t i = 0; i < refused.size() && i < 10; ++i) ctx.err << "conveyor: " << refused[i] << "\n";
    throw Error(errc::bad_input, "job patch: nothing changed: " + std::to_string(refused.size()) +
                                     " job(s) cannot take the new params (see above)");
  }
  return params_json;
}

// With --json, the outcome on stdout: {"matched", "ids", "applied"[, "params"]}.
void print_patch_json(Context& ctx, const PatchRequest& r, const PatchMatch& m, const json& params, bool applied) {
  if (!ctx.json) return;
  json out{{"matched", m.total}, {"ids", m.ids}, {"applied", applied}};
  if (r.edits_params()) out["params"] = params;
  ctx.out << out.dump() << "\n";
}

// Before it asks, the jobs it would change, as the other destructive commands show them.
bool confirm_patch(Context& ctx, std::ostream& talk, db::Pool& pool, const std::vector<std::int64_t>& ids) {
  talk << "job patch will touch:\n"
       << pool.transact([&](db::Tx& tx) {
            std::ostringstream table;
            print_jobs(table, tx, ids);
            return table.str();
          });
  return confirm(ctx, talk, "change " + std::to_string(ids.size()) + " job(s)?");
}

// Every job in one transaction, each through the status machine and then its
// params; one refusal changes none.
void apply_patch(db::Pool& pool, const PatchRequest& r, const std::vector<std::int64_t>& ids) {
  try {
    Progress progress("job patch");
    pool.transact([&](db::Tx& tx) {
      std::size_t done = 0;
      for (const auto id : ids) {
        if (!r.path.empty()) model::set_status(tx, model::JobId(id), r.path, r.from);
        if (r.edits_params()) model::patch_params(tx, model::JobId(id), r.change, r.at);
        progress.set(std::to_string(++done) + " of " + std::to_string(ids.size()) + " job(s)");
      }
    });
  } catch (const Error& e) {
    throw Error(e.code(), "nothing changed: " + std::string(e.what()) + "; run the patch again to see the count now");
  }
}

// Runbook 001's update_jobs_status in bulk, the safe way: a dry run by
// default showing the count; --apply asks (or --yes), then changes exactly
// the jobs counted, in one transaction, each through the status machine.
// --set-param/--params-file also change their params (runbook 001's fix of
// a job's JSON), after the status path, checked against the type's schema
// in the dry run already; the audit trigger records each change.
int patch(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "job patch",
                                  {"--status", "--type", "--since", "--until", "--to", "--limit", "--ids", "--param",
                                   "--set-param", "--params-file"},
                                  {"--apply", "--yes"});
  const PatchRequest r = read_patch_request(o);
  db::Pool pool(pool_options(ctx));
  const PatchMatch m = match_patch(pool, r);
  if (m.total == 0) say_if_no_such_type(ctx, pool, "job patch", o.get("--type"));
  std::ostream& talk = ctx.json ? ctx.err : ctx.out;
  print_patch_match(talk, r, m);
  const json params = new_params(ctx, talk, pool, r, m.ids);
  if (m.ids.empty() || !o.has("--apply")) {
    print_patch_json(ctx, r, m, params, false);
    if (!m.ids.empty()) talk << "dry run: nothing changed; add --apply to change them\n";
    return kExitOk;
  }
  if (!o.has("--yes") && !confirm_patch(ctx, talk, pool, m.ids)) {
    talk << "not applied: nothing changed\n";
    return kExitFailed;
  }
  apply_patch(pool, r, m.ids);
  print_patch_json(ctx, r, m, params, true);
  talk << "changed " << m.ids.size() << " job(s): " << patch_text(r) << "\n";
  return kExitOk;
}

// What finished attempts cost, by job type: one query, the percentiles
// computed by PostgreSQL.
int stats(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "job stats", {"--type", "--since"});
  if (!o.positional.empty())
    throw FieldError(o.positional[0], "job stats: unexpected argument '" + o.positional[0] + "'");
  const auto type = o.get("--type");
  const auto since = o.get("--since");
  const std::optional<std::int64_t> since_s = since ? std::optional(duration_option("--since", *since)) : std::nullopt;
  db::Pool pool(pool_options(ctx));
  const db::Result result = pool.transact([&](db::Tx& tx) { return tx.exec(kAttemptStats, {type, since_s}); });

  if (ctx.json) {
    json items = json::array();
    for (const db::Row r : result) {
      auto value = [&](const char* column) {
        return r[column].is_null() ? json(nullptr) : json(r[column].as_double());
      };
      auto pair = [&](const char* p50, const char* p95) { return json{{"p50", value(p50)}, {"p95", value(p95)}}; };
      items.push_back({{"job_type", r["job_type"].as_string()},
                       {"attempts", r["attempts"].as_int()},
                       {"wall_ms", pair("wall_p50", "wall_p95")},
                       {"cpu_ms", pair("cpu_p50", "cpu_p95")},
                       {"max_rss_kb", pair("rss_p50", "rss_p95")}});
    }
    ctx.out << json{{"items", items},
                    {"type", type ? json(*type) : json(nullptr)},
                    {"since", since ? json(*since) : json(nullptr)}}
                   .dump()
            << "\n";
    return kExitOk;
  }
  const std::string scope = (type ? " of type " + *type : "") + (since ? " (since " + *since + ")" : "");
  if (result.empty()) {
    ctx.out << "no finished attempts" << scope << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  std::int64_t total = 0;
  for (const db::Row r : result) {
    auto cell = [&](const char* column, auto format) { return or_dash(r[column].opt<double>(), format); };
    total += r["attempts"].as_int();
    rows.push_back({r["job_type"].as_string(), std::to_string(r["attempts"].as_int()), cell("wall_p50", human_ms),
                    cell("wall_p95", human_ms), cell("cpu_p50", human_ms), cell("cpu_p95", human_ms),
                    cell("rss_p50", human_kib), cell("rss_p95", human_kib)});
  }
  print_table(ctx.out, {"TYPE", "ATTEMPTS", "WALL P50", "WALL P95", "CPU P50", "CPU P95", "MEM P50", "MEM P95"}, rows);
  ctx.out << total << " finished attempt(s)" << scope << "; CPU is user + system, MEM the peak resident set\n";
  return kExitOk;
}

}  // namespace

int job_command(Context& ctx, const std::vector<std::string>& args) {
  return dispatch(ctx, args, "job", kJobUsage,
                  {{"ls", ls},
                   {"list", ls},
                   {"inspect", inspect},
                   {"show", inspect},
                   {"submit", submit},
                   {"cancel", cancel},
                   {"retry", retry},
                   {"hold", hold},
                   {"release", release},
                   {"logs", logs},
                   {"kill", kill},
                   {"set-status", set_status},
                   {"patch", patch},
                   {"stats", stats}});
}

}  // namespace conveyor::cli
