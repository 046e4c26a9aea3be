// `conveyor system status|pause|unpause|prepare-for-reboot|waves|backup|restore`:
// the system-wide switches and procedures of runbooks 001, 002 and 003.
//   - pause: accepting_new_jobs = false (a row, so it persists); submissions
//     get 503 with the reason, jobs already in the system go on (runbook 003).
//   - prepare-for-reboot: after the workers stopped, running and queued jobs
//     back to ready (runbook 003).
//   - waves: job_types_list by dependency layers (runbook 001).
//   - backup / restore: pg_dump / pg_restore (runbooks 001 and 002).
// Queues (job types, pools): queue_commands.cpp.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <ostream>
#include <set>
#include <tuple>

#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "conveyor/error/error.hpp"
#include "conveyor/model/job_type.hpp"
#include "conveyor/model/sequences.hpp"
#include "conveyor/model/system_parameters.hpp"
#include "conveyor/model/waves.hpp"
#include "conveyor/model/worker.hpp"

namespace conveyor::cli {

namespace {

using nlohmann::json;

constexpr const char* kSystemUsage =
    "usage: conveyor system status\n"
    "       conveyor system pause [--reason TEXT]   stop accepting new jobs\n"
    "       conveyor system unpause                 accept new jobs again\n"
    "       conveyor system backup FILE [--force]  pg_dump of the database (custom format, compressed);\n"
    "                                              --force replaces an existing FILE\n"
    "       conveyor system restore FILE [--clean] [--force] [--yes]   pg_restore of a backup (--clean: replace what\n"
    "                                                    is there; refused while services or workers heartbeat,\n"
    "                                                    unless --force)\n"
    "       conveyor system waves [--start N | --all | --auto [--threshold N] | --stop]\n"
    "                 runbook 001's restart in waves of dependent job types (--auto: the monitor advances them)\n"
    "       conveyor system prepare-for-reboot [--force] [--yes]\n"
    "                 after stopping the workers: running and queued jobs back to ready\n";

constexpr db::Statement kJobCounts{
    "cli_system_job_counts",
    "SELECT s.name, count(j.id) FROM conveyor.job_status s LEFT JOIN conveyor.job j ON j.status = s.name "
    "GROUP BY s.name, s.position ORDER BY s.position"};

constexpr db::Statement kWorkerCounts{
    "cli_system_worker_counts",
    // A lost worker runs nothing: its jobs were recovered when it was marked
    // lost, whatever its row's last `running` said.
    "SELECT w.status, count(*), "
    "       CASE WHEN w.status = 'lost' THEN 0 ELSE coalesce(sum(w.running), 0) END, "
    "       coalesce(sum(w.concurrency), 0) "
    "FROM conveyor.worker w WHERE w.status IN ('active', 'draining', 'lost') GROUP BY w.status ORDER BY w.status"};

// Live state as the monitor's GET /v1/services computes it.
// Each service's health by the one live-status rule
// (conveyor.service_health, migration 20261210000100_service_health), with
// the broker as each live instance saw it at its last heartbeat.
constexpr db::Statement kServices{"cli_system_services",
                                  "SELECT service, state, live, down, replaced, stopped, broker_down, broker_up "
                                  "FROM conveyor.service_health ORDER BY service"};

// Unsent events, and why the relay refuses to publish (NULL: it may; a
// refusing relay counts every event as sent, so `unsent` cannot show it).
constexpr db::Statement kOutbox{"cli_system_outbox",
                                "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8, "
                                "conveyor.outbox_relay_refusal() "
                                "FROM conveyor.outbox_unsent()"};

// What waits on an operator: dead letters of triggers, schedules in error.
constexpr db::Statement kAttention{
    "cli_system_attention",
    "SELECT (SELECT count(*) FROM conveyor.trigger_pending WHERE failed_at IS NOT NULL), "
    "  (SELECT count(*) FROM conveyor.trigger_pending WHERE failed_at IS NULL), "
    "  (SELECT count(*) FROM conveyor.schedule_state WHERE last_error IS NOT NULL), "
    "  (SELECT count(*) FROM conveyor.schedule_state s JOIN conveyor.job_type t "
    "     ON t.name = s.job_type AND t.schedule IS NOT NULL WHERE s.paused)"};

constexpr db::Statement kLiveWorkers{
    "cli_system_live_workers",
    "SELECT w.name FROM conveyor.worker w, conveyor.system_parameters p "
    "WHERE w.status IN ('active', 'draining') "
    "  AND w.last_heartbeat > now() - make_interval(secs => p.worker_heartbeat_timeout_s) ORDER BY w.name"};

constexpr db::Statement kNoConveyorSchema{"cli_system_no_conveyor_schema",
                                          "SELECT to_regnamespace('conveyor') IS NULL"};

// Whether the schema has what kLiveWorkers and kLiveServices read.
constexpr db::Statement kHasLivenessTables{
    "cli_system_has_liveness_tables",
    "SELECT to_regclass('conveyor.worker') IS NOT NULL AND to_regclass('conveyor.system_parameters') IS NOT NULL "
    "  AND to_regclass('conveyor.service_health') IS NOT NULL"};

// The services with a live instance (conveyor.service_health's rule); the
// workers, named by kLiveWorkers, left out.
constexpr db::Statement kLiveServices{"cli_system_live_services",
                                      "SELECT service || ' (' || live || ')' FROM conveyor.service_health "
                                      "WHERE live > 0 AND service <> 'conveyor-worker' ORDER BY service"};

constexpr db::Statement kRunningJobs{
    "cli_system_running_jobs",
    "SELECT count(*) FILTER (WHERE status = 'started'), count(*) FILTER (WHERE status = 'queued') "
    "FROM conveyor.job WHERE status IN ('started', 'queued')"};

// The alerts firing as conveyor-monitor last recorded them (its alert pass,
// every CONVEYOR_GAUGE_INTERVAL_MS), most severe first.
constexpr db::Statement kOpenAlerts{
    "cli_system_open_alerts",
    "SELECT name, severity, summary, " CONVEYOR_RFC3339("fired_at") " AS fired_at "
    "FROM conveyor.alert_event WHERE resolved_at IS NULL "
    "ORDER BY CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, fired_at"};

constexpr db::Statement kPausedQueues{
    "cli_system_paused_queues",
    "SELECT kind, name, coalesce(reason, '') FROM conveyor.queue_state WHERE paused ORDER BY kind, name"};

// The live services (conveyor.service_health) and the broker as their
// heartbeats see it, into `out`.
void read_service_status(db::Tx& tx, json& out) {
  std::int64_t broker_up = 0, broker_down = 0;
  for (const db::Row r : tx.exec(kServices)) {
    // "up" stays the count of live instances, as before.
    out["services"][r["service"].as_string()] = {{"state", r["state"].as_string()},
                                                 {"up", r["live"].as_int()},
                                                 {"live", r["live"].as_int()},
                                                 {"down", r["down"].as_int()},
                                                 {"replaced", r["replaced"].as_int()},
                                                 {"stopped", r["stopped"].as_int()},
                                                 {"broker_down", r["broker_down"].as_int()}};
    broker_down += r["broker_down"].as_int();
    broker_up += r["broker_up"].as_int();
  }
  // The CLI reached the database to say any of this; the broker is
  // reported as the live services see it (their heartbeats).
  out["database"] = "up";
  out["broker"] = {{"state", broker_down > 0 ? "down"
                             : broker_up > 0 ? "up"
                                             : "unknown"},
                   {"instances_up", broker_up},
                   {"instances_down", broker_down}};
}

// What may need an operator: the outbox, failed triggers, schedules in
// error, paused queues, and a wave run in progress, into `out`.
void read_attention_status(db::Tx& tx, json& out) {
  const db::Result outbox = tx.exec(kOutbox);  // a Row points into its Result
  const db::Row ob = outbox[0];
  out["outbox"] = {{"unsent", ob[0].as_int()}, {"oldest_unsent_s", ob[1].as_double()}, {"relay_refusal", nullptr}};
  if (!ob[2].is_null()) out["outbox"]["relay_refusal"] = ob[2].as_string();
  const db::Result attention = tx.exec(kAttention);  // a Row points into its Result
  out["triggers"] = {{"failed", attention[0][0].as_int()}, {"pending", attention[0][1].as_int()}};
  out["schedules"] = {{"in_error", attention[0][2].as_int()}, {"paused", attention[0][3].as_int()}};
  for (const db::Row r : tx.exec(kPausedQueues)) {
    out["paused_queues"].push_back(
        {{"kind", r[0].as_string()}, {"name", r[1].as_string()}, {"reason", r[2].as_string()}});
  }
  out["alerts"] = json::array();
  for (const db::Row r : tx.exec(kOpenAlerts)) {
    out["alerts"].push_back({{"name", r["name"].as_string()},
                             {"severity", r["severity"].as_string()},
                             {"summary", r["summary"].as_string()},
                             {"since", r["fired_at"].as_string()}});
  }
  // A wave run conveyor-monitor advances (`system waves --auto`).
  const auto run = model::load_wave_run(tx);
  out["waves"] = run && run->state == "running" ? json{{"current", run->current},
                                                       {"of", run->waves.size()},
                                                       {"backlog", run->backlog},
                                                       {"threshold", run->threshold},
                                                       {"run", run->id}}
                                                : json();
}

// One consistent snapshot of the system, as `system status --json` prints it.
json read_status(db::Tx& tx) {
  const model::SystemParameters p = model::load_system_parameters(tx);
  json out = {{"accepting_new_jobs", p.accepting_new_jobs},
              {"not_accepting_reason", p.not_accepting_reason},
              {"job_types_list", p.job_types_list ? json(*p.job_types_list) : json()},
              {"max_number_of_worker_instances", p.max_number_of_worker_instances},
              {"min_number_of_worker_instances", p.min_number_of_worker_instances},
              {"jobs", json::object()},
              {"workers", json::object()},
              {"services", json::object()},
              {"paused_queues", json::array()}};
  for (const db::Row r : tx.exec(kJobCounts)) out["jobs"][r[0].as_string()] = r[1].as_int();
  for (const db::Row r : tx.exec(kWorkerCounts)) {
    out["workers"][r[0].as_string()] = {
        {"count", r[1].as_int()}, {"running", r[2].as_int()}, {"capacity", r[3].as_int()}};
  }
  read_service_status(tx, out);
  read_attention_status(tx, out);
  return out;
}

std::string join_names(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

// Intake, jobs, workers and services of `s` (read_status), one line each.
void print_status_load(std::ostream& out, const json& s) {
  out << "accepting new jobs : "
      << (s["accepting_new_jobs"].get<bool>() ? std::string("yes")
                                              : "NO (" +
                                                    (s["not_accepting_reason"].get<std::string>().empty()
                                                         ? std::string("no reason given")
                                                         : s["not_accepting_reason"].get<std::string>()) +
                                                    ")");
  // Submissions of any other type are refused (422), as during a wave run.
  if (s["job_types_list"].is_array()) {
    out << (s["job_types_list"].empty() ? std::string(", but of no job type: job_types_list is empty")
                                        : ", of these job types only (job_types_list): " +
                                              join_names(s["job_types_list"].get<std::vector<std::string>>()));
  }
  out << "\n";
  out << "jobs               :";
  for (const auto& [name, n] : s["jobs"].items()) {
    if (n.get<std::int64_t>() > 0) out << " " << name << " " << n.get<std::int64_t>();
  }
  out << "\n";
  out << "workers            : max " << s["max_number_of_worker_instances"] << ", min "
      << s["min_number_of_worker_instances"];
  for (const auto& [st, w] : s["workers"].items()) {
    out << "; " << st << " " << w["count"];
    if (st != "lost") out << " (running " << w["running"] << " of " << w["capacity"] << ")";
  }
  out << "\n";
  out << "services           :";
  if (s["services"].empty()) out << " none registered";
  // up (2 live) / DEGRADED (1 live, 1 down) / DOWN (0 live); workers the
  // pool replaced are history, idle workers (none live, none down) normal.
  for (const auto& [name, v] : s["services"].items()) {
    const std::string state = v["state"].get<std::string>();
    out << "\n  " << name << " "
        << (state == "degraded" ? "DEGRADED"
            : state == "down"   ? "DOWN"
                                : state)
        << " (" << v["live"] << " live";
    if (v["down"].get<std::int64_t>() > 0) out << ", " << v["down"] << " down";
    if (v["replaced"].get<std::int64_t>() > 0) out << ", " << v["replaced"] << " replaced (history)";
    out << ")";
  }
  out << "\n";
}

// The database, broker, outbox, triggers, schedules, paused queues and waves.
void print_status_health(std::ostream& out, const json& s) {
  out << "database           : up\n";
  out << "broker             : ";
  if (s["broker"]["state"] == "down") {
    out << "DOWN (" << s["broker"]["instances_down"] << " live instance(s) cannot reach it; "
        << "services work on their database poll)";
  } else if (s["broker"]["state"] == "up") {
    out << "up (as " << s["broker"]["instances_up"] << " live instance(s) see it)";
  } else {
    out << "unknown (no live instance reports it)";
  }
  out << "\n";
  out << "outbox             : " << s["outbox"]["unsent"] << " unsent";
  if (s["outbox"]["unsent"].get<std::int64_t>() > 0) {
    out << ", oldest " << static_cast<long long>(s["outbox"]["oldest_unsent_s"].get<double>()) << " s";
  }
  if (s["outbox"]["relay_refusal"].is_string()) {
    const std::string why = s["outbox"]["relay_refusal"].get<std::string>();
    out << "; the relay REFUSES to publish (" << why << "): "
        << (why == "past_cluster_ids" ? "stop the services, run SELECT conveyor.outbox_renumber(), start them"
                                      : "conveyor.outbox_relay has no row (restore it from a backup)");
  }
  out << "\n";
  out << "triggers           : " << s["triggers"]["pending"] << " pending, " << s["triggers"]["failed"]
      << " failed (conveyor.trigger_pending, failed_at set)\n";
  out << "schedules          : " << s["schedules"]["paused"] << " paused, " << s["schedules"]["in_error"]
      << " in error (`conveyor schedule list`)\n";
  out << "paused queues      :";
  if (s["paused_queues"].empty()) out << " none";
  for (const auto& q : s["paused_queues"]) {
    out << " " << q["kind"].get<std::string>() << " " << q["name"].get<std::string>();
    if (!q["reason"].get<std::string>().empty()) out << " (" << q["reason"].get<std::string>() << ")";
    out << ";";
  }
  out << "\n";
  if (!s["waves"].is_null()) {
    out << "waves              : " << s["waves"]["current"] << " of " << s["waves"]["of"] << " (auto; backlog "
        << s["waves"]["backlog"] << ", next wave at " << s["waves"]["threshold"] << " or less)\n";
  }
  out << "alerts             :";
  if (s["alerts"].empty()) out << " none firing (as conveyor-monitor last recorded)";
  for (const auto& a : s["alerts"]) {
    out << "\n  " << a["severity"].get<std::string>() << " " << a["name"].get<std::string>() << " since "
        << display_time(a["since"].get<std::string>()) << ": " << a["summary"].get<std::string>();
  }
  out << "\n";
}

// Every job type and pool there is, with the jobs waiting and running in it.
int status(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "system status", {});
  if (!o.positional.empty())
    throw FieldError(o.positional[0], "system status: unexpected argument '" + o.positional[0] + "'");
  db::Pool pool(pool_options(ctx));
  db::TxOptions snapshot;
  snapshot.isolation = db::Isolation::repeatable_read;
  const json s = pool.transact([](db::Tx& tx) { return read_status(tx); }, snapshot);
  if (ctx.json) {
    ctx.out << s.dump() << "\n";
    return kExitOk;
  }
  print_status_load(ctx.out, s);
  print_status_health(ctx.out, s);
  return kExitOk;
}

int set_accepting(Context& ctx, const std::vector<std::string>& args, bool accepting) {
  const std::string command = accepting ? "system unpause" : "system pause";
  const Options o =
      parse_options(args, command, accepting ? std::set<std::string>{} : std::set<std::string>{"--reason"});
  if (!o.positional.empty())
    throw FieldError(o.positional[0], command + ": unexpected argument '" + o.positional[0] + "'");
  json patch = {{"accepting_new_jobs", accepting}};
  if (accepting) {
    patch["not_accepting_reason"] = nullptr;
  } else {
    patch["not_accepting_reason"] = o.get("--reason").value_or("paused by an operator (conveyor system pause)");
  }
  db::Pool pool(pool_options(ctx));
  const bool was = pool.transact([&](db::Tx& tx) {
    const model::SystemParameters before = model::load_system_parameters(tx);
    // Paused already and no --reason: the reason the operator gave stays.
    if (!accepting && !before.accepting_new_jobs && !o.get("--reason") && !before.not_accepting_reason.empty()) {
      patch["not_accepting_reason"] = before.not_accepting_reason;
    }
    model::patch_system_parameters(tx, patch);
    return before.accepting_new_jobs;
  });
  if (accepting) {
    ctx.out << (was ? "already accepting new jobs\n" : "accepting new jobs again\n");
  } else {
    ctx.out << (was ? "not accepting new jobs from now on: " : "already not accepting new jobs; reason now: ")
            << patch["not_accepting_reason"].get<std::string>()
            << "\nsubmissions get 503 with that reason; jobs already in the system go on (`conveyor system "
               "unpause` to accept again)\n";
  }
  return kExitOk;
}

// Runbook 003: stop the workers (the worker pool drains or stops them), then
// this; after the reboot the jobs run again as if they had not started.
int prepare_for_reboot(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "system prepare-for-reboot", {}, {"--force", "--yes"});
  if (!o.positional.empty())
    throw FieldError(o.positional[0], "system prepare-for-reboot: unexpected argument '" + o.positional[0] + "'");
  db::Pool pool(pool_options(ctx));
  const auto [live, started, queued] = pool.transact([](db::Tx& tx) {
    std::vector<std::string> names;
    for (const db::Row r : tx.exec(kLiveWorkers)) names.push_back(r[0].as_string());
    const db::Result counts = tx.exec(kRunningJobs);
    return std::tuple{names, counts[0][0].as_int(), counts[0][1].as_int()};
  });
  if (!live.empty() && !o.has("--force")) {
    std::string names;
    for (std::size_t i = 0; i < live.size() && i < 10; ++i) names += (i ? ", " : "") + live[i];
    ctx.err << "conveyor: " << live.size() << " worker(s) still heartbeat (" << names
            << "): stop the worker pool first (`tools/dev stop`, or stop conveyor-workerpool), or pass --force "
               "to requeue their jobs anyway (they stop them)\n";
    return kExitFailed;
  }
  std::ostream& talk = ctx.json ? ctx.err : ctx.out;
  talk << started << " started and " << queued << " queued job(s) go back to ready; worker rows become stopped\n";
  if (!o.has("--yes") && !confirm(ctx, talk, "prepare for reboot?")) {
    talk << "not done: nothing changed\n";
    return kExitFailed;
  }
  const model::RebootPreparation r = pool.transact([](db::Tx& tx) { return model::prepare_for_reboot(tx); });
  if (ctx.json) {
    ctx.out << json{{"requeued", r.requeued}, {"canceled", r.canceled}, {"stopped_workers", r.stopped_workers}}.dump()
            << "\n";
  }
  talk << "ready for reboot: " << r.requeued << " job(s) back to ready, " << r.canceled
       << " canceled (cancel was asked), " << r.stopped_workers.size()
       << " worker row(s) stopped; start the system again after the reboot\n";
  return kExitOk;
}

int pause(Context& ctx, const std::vector<std::string>& args) { return set_accepting(ctx, args, false); }
int unpause(Context& ctx, const std::vector<std::string>& args) { return set_accepting(ctx, args, true); }

// Runs a PostgreSQL client program with argv as given (never a shell) and
// the connection in PG* variables (db::libpq_environment), not on its
// command line where a password would show; output passed through.
// Returns the exit status.
int run_program(const Context& ctx, const std::vector<std::string>& argv) {
  const auto pg = db::libpq_environment(ctx.database_url());
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string kv = *e;
    if (kv.rfind("PG", 0) != 0) env.push_back(kv);  // only the database the CLI uses
  }
  for (const auto& [k, v] : pg) env.push_back(k + "=" + v);
  std::vector<char*> cenv;
  for (auto& e : env) cenv.push_back(e.data());
  cenv.push_back(nullptr);
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  pid_t pid = 0;
  if (const int rc = ::posix_spawnp(&pid, cargv[0], nullptr, nullptr, cargv.data(), cenv.data()); rc != 0) {
    throw Error(errc::unavailable,
                argv[0] + ": cannot start: " + std::strerror(rc) + " (install postgresql-client-15)");
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw Error(errc::internal, argv[0] + ": waitpid: " + std::strerror(errno));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Runbook 002 "backup & restore", runbook 001 "reset the database content
// from a backup". The custom format is compressed and lets pg_restore
// replace objects (--clean) without dropping the schema by hand. Written to
// FILE.partial and renamed when whole, so a failed dump leaves no file that
// looks like a backup, and an existing FILE (replaced only with --force) is
// kept until the new one is complete.
int backup(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "system backup", {}, {"--force"});
  if (o.positional.size() != 1)
    throw FieldError("FILE", "system backup: one FILE is required\n" + std::string(kSystemUsage));
  const std::string& file = o.positional[0];
  const std::filesystem::path path(file);
  const std::filesystem::path folder = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  std::error_code ec;
  if (!std::filesystem::is_directory(folder, ec)) {
    throw FieldError("FILE", "system backup: " + folder.string() + " is not a folder: make it first");
  }
  const bool replaces = std::filesystem::exists(path, ec);
  if (replaces && !o.has("--force")) {
    throw FieldError("FILE", "system backup: " + file + " exists: name another file, or pass --force to replace it");
  }
  const std::string partial = file + ".partial";
  const auto start = std::chrono::steady_clock::now();
  const int rc = [&] {
    Progress progress("system backup", [&partial] {
      std::error_code size_ec;
      const auto written = std::filesystem::file_size(partial, size_ec);
      return size_ec ? std::string() : std::to_string(written / 1024) + " KiB written";
    });
    return run_program(ctx, {"pg_dump", "--format=custom", "--compress=9", "--no-owner", "--file=" + partial});
  }();
  if (rc != 0) {
    std::filesystem::remove(partial, ec);
    throw Error(errc::unavailable, "pg_dump failed (exit " + std::to_string(rc) + "): no backup was written" +
                                       (replaces ? "; " + file + " is unchanged" : ""));
  }
  std::filesystem::rename(partial, path, ec);
  if (ec) throw Error(errc::unavailable, "cannot rename " + partial + " to " + file + ": " + ec.message());
  const auto size = std::filesystem::file_size(path, ec);
  ctx.out << "backup written to " << file << " (" << (ec ? 0 : size) << " bytes, "
          << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count()
          << " ms); restore with `conveyor system restore " << file << "`\n";
  return kExitOk;
}

// The job id sequence's floor raised to the highest job folder on disk, so
// that no id of a job that left files is handed out again.
void raise_to_job_folders(Context& ctx, model::SequenceMarks& floors) {
  auto& job_floor = floors[model::kJobIdSequence];
  job_floor = std::max(job_floor, model::highest_job_id_on_disk(ctx.config.get_string("CONVEYOR_DATA_DIR")));
}

// pg_restore of FILE into DBNAME in one transaction; throws, saying why
// nothing changed, when it fails.
void run_pg_restore(Context& ctx, const std::string& dbname, const std::string& file, bool clean, bool empty_database) {
  // pg_restore needs the database named; the rest of the connection comes from PG*.
  std::vector<std::string> argv = {"pg_restore", "--no-owner", "--single-transaction", "--exit-on-error",
                                   "--dbname=" + dbname};
  if (clean) {
    argv.push_back("--clean");
    argv.push_back("--if-exists");
  }
  argv.push_back(file);
  const int rc = [&] {
    Progress progress("system restore");
    return run_program(ctx, argv);
  }();
  if (rc != 0) {
    throw Error(errc::unavailable,
                "pg_restore failed (exit " + std::to_string(rc) +
                    "); it ran in one transaction, so nothing was changed" +
                    (empty_database ? " (into a new cluster: if a role conveyor_... does not exist, run "
                                      "`conveyor db migrate` on any database of this cluster first; it "
                                      "creates the service roles the backup's grants name)"
                     : clean        ? ""
                                    : " (a database that is not empty needs --clean)"));
  }
}

// The outbox relay's place and the outbox's transaction ids, renumbered
// when the backup came from a cluster whose ids are past this one's
// (migration 20261225000000); a backup from before it has neither: the
// migration run after the restore numbers them.
constexpr db::Statement kHasOutboxRenumber{"cli_has_outbox_renumber",
                                           "SELECT to_regprocedure('conveyor.outbox_renumber()') IS NOT NULL"};
constexpr db::Statement kOutboxRenumber{"cli_outbox_renumber", "SELECT conveyor.outbox_renumber()"};

// The backup's worker rows and their started or queued jobs belong to
// processes of the time of the backup, which run no more (the services are
// stopped for a restore): the same rule as before a reboot, so after
// `start` the jobs run again and no pool counts a ghost worker as capacity
// until its heartbeat times out. The sequences move past `floors`.
void settle_restored(Context& ctx, const std::string& file, const model::SequenceMarks& floors) {
  model::RebootPreparation ghosts;
  std::optional<std::int64_t> renumbered;
  const auto advanced = db::Pool(pool_options(ctx)).transact([&](db::Tx& tx) {
    ghosts = model::prepare_for_reboot(tx);
    if (tx.exec(kHasOutboxRenumber)[0][0].as_bool()) {
      const auto r = tx.exec(kOutboxRenumber);
      if (!r[0][0].is_null()) renumbered = r[0][0].as_int();
    }
    return model::advance_sequences(tx, floors);
  });
  if (renumbered) {
    ctx.out << "the backup's transaction ids were past this cluster's: the outbox relay starts afresh, " << *renumbered
            << " unsent event(s) to send\n";
  }
  if (!ghosts.stopped_workers.empty() || ghosts.requeued > 0 || ghosts.canceled > 0) {
    ctx.out << "the backup's " << ghosts.stopped_workers.size() << " running worker row(s) marked stopped; "
            << ghosts.requeued << " started or queued job(s) back to ready, " << ghosts.canceled << " canceled\n";
  }
  ctx.out << "restored " << file
          << "; start the services again (`tools/dev start`; after a long stop: runbook 001's waves, "
          << "`conveyor params set job_types_list=...`)\n";
  for (const model::SequenceAdvance& a : advanced) {
    if (a.sequence == model::kJobIdSequence) ctx.out << "job ids continue from " << a.last_value + 1 << "\n";
  }
}

int restore(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "system restore", {}, {"--clean", "--force", "--yes"});
  if (o.positional.size() != 1)
    throw FieldError("FILE", "system restore: one FILE is required\n" + std::string(kSystemUsage));
  const std::string& file = o.positional[0];
  if (!std::filesystem::is_regular_file(file)) throw FieldError("FILE", "system restore: " + file + " is not a file");
  const auto pg = db::libpq_environment(ctx.database_url());
  const auto dbname = pg.find("PGDATABASE");
  if (dbname == pg.end()) throw Error(errc::invalid_config, "CONVEYOR_DATABASE_URL names no database to restore into");
  // Every id handed out so far, so none is handed out again after the restore
  // (issue 13): the sequences as they are now, and the job folders on disk.
  db::Pool pool(pool_options(ctx));
  model::SequenceMarks floors = pool.transact([](db::Tx& tx) { return model::sequence_marks(tx); });
  // No schema conveyor: nothing to --clean (one that `db init` made is there).
  const bool empty_database = pool.transact([](db::Tx& tx) { return tx.exec(kNoConveyorSchema)[0][0].as_bool(); });
  // A restore replaces the rows live processes work on: a worker's row goes
  // (its heartbeats are lost), and what a service writes meanwhile is lost
  // or mixed with the backup's.
  if (!empty_database && refuse_while_live(ctx, pool, o.has("--force"))) return kExitFailed;
  const bool clean = o.has("--clean");
  if (clean && !o.has("--yes") &&
      !confirm(ctx, ctx.out, "replace the database's Conveyor objects with the backup " + file + "?")) {
    ctx.out << "not restored: nothing changed\n";
    return kExitFailed;
  }
  raise_to_job_folders(ctx, floors);
  run_pg_restore(ctx, dbname->second, file, clean, empty_database);
  settle_restored(ctx, file, floors);
  return kExitOk;
}

json wave_run_json(const model::WaveRun& r) {
  return json{{"id", r.id},
              {"waves", r.waves},
              {"current", r.current},
              {"threshold", r.threshold},
              {"state", r.state},
              {"backlog", r.backlog},
              {"started_by", r.started_by},
              {"started_at", r.started_at},
              {"updated_at", r.updated_at}};
}

// What `system waves` reads: the waves, the types handled now, the run.
struct WavesSeen {
  model::JobTypeWaves layers;
  std::optional<std::vector<std::string>> handled;
  std::optional<model::WaveRun> run;
};

// --auto: a wave run conveyor-monitor advances.
int waves_auto(Context& ctx, const Options& o, db::Pool& pool) {
  const std::int64_t threshold = int_option(o, "--threshold", 0, 0, std::numeric_limits<std::int64_t>::max());
  const model::WaveRun r = pool.transact([&](db::Tx& tx) { return model::start_waves(tx, threshold); });
  if (ctx.json) {
    ctx.out << wave_run_json(r).dump() << "\n";
    return kExitOk;
  }
  ctx.out << "wave run " << r.id << " started: wave 1 of " << r.waves.size() << " admitted (" << join_names(r.waves[0])
          << "); conveyor-monitor moves to the next wave once this one's jobs in "
          << "initialized..started (held or paused ready ones aside) are at most " << r.threshold
          << ", and admits every job type after the last\n";
  return kExitOk;
}

// --stop: ends the wave run, leaving job_types_list as it is.
int waves_stop(Context& ctx, db::Pool& pool) {
  const auto r = pool.transact([](db::Tx& tx) { return model::stop_waves(tx); });
  if (!r) {
    ctx.err << "system waves --stop: no wave run is running\n";
    return kExitFailed;
  }
  if (ctx.json) {
    ctx.out << wave_run_json(*r).dump() << "\n";
    return kExitOk;
  }
  ctx.out << "wave run " << r->id << " stopped at wave " << r->current << " of " << r->waves.size()
          << "; job_types_list stays "
          << join_names(model::admitted_types(r->waves, static_cast<std::size_t>(r->current)))
          << " (`conveyor system waves --start N` or `--all` from here)\n";
  return kExitOk;
}

// --start N or --all: job_types_list set by hand.
int waves_set(Context& ctx, const Options& o, db::Pool& pool, const WavesSeen& g) {
  const auto& layers = g.layers.waves;
  // The monitor would overwrite the operator's list at its next wave.
  if (g.run && g.run->state == "running") {
    ctx.err << "system waves: a wave run is active (started by " << g.run->started_by << " at "
            << display_time(g.run->started_at) << ", wave " << g.run->current << " of " << g.run->waves.size()
            << "); stop it first: conveyor system waves --stop\n";
    return kExitFailed;
  }
  json value = nullptr;
  std::string what = "every job type";
  if (!o.has("--all")) {
    const auto n = int_option(o, "--start", 1, 1, static_cast<std::int64_t>(std::max<std::size_t>(1, layers.size())));
    const std::vector<std::string> list = model::admitted_types(layers, static_cast<std::size_t>(n));
    value = list;
    what = "waves 1.." + std::to_string(n) + ": " + join_names(list);
  }
  pool.transact([&](db::Tx& tx) { model::patch_system_parameters(tx, {{"job_types_list", value}}); });
  ctx.out << "job_types_list set to " << what << "\n";
  return kExitOk;
}

// No mode: the waves, what is handled now and the run, with what to do next.
int waves_show(Context& ctx, const WavesSeen& g) {
  const auto& layers = g.layers.waves;
  if (ctx.json) {
    ctx.out << json{{"waves", layers},
                    {"job_types_list", g.handled ? json(*g.handled) : json()},
                    {"run", g.run ? wave_run_json(*g.run) : json()}}
                   .dump()
            << "\n";
    return kExitOk;
  }
  for (std::size_t i = 0; i < layers.size(); ++i) {
    std::set<std::string> after;
    for (const auto& t : layers[i]) {
      for (const auto& [type, ups] : g.layers.upstream) {
        if (type == t) after.insert(ups.begin(), ups.end());
      }
    }
    ctx.out << "wave " << i + 1 << ": " << join_names(layers[i])
            << (after.empty() ? ""
                              : "   (after " + join_names(std::vector<std::string>(after.begin(), after.end())) + ")")
            << "\n";
  }
  ctx.out << "job_types_list now: " << (g.handled ? join_names(*g.handled) : std::string("every job type")) << "\n";
  if (g.run) {
    ctx.out << "wave run " << g.run->id << ": " << g.run->state << ", wave " << g.run->current << " of "
            << g.run->waves.size() << " (backlog " << g.run->backlog << ", threshold " << g.run->threshold
            << "), started by " << g.run->started_by << " at " << display_time(g.run->started_at) << "\n";
  }
  // While a run is active, --start, --all and --auto are refused: the one
  // next step is to let it finish or stop it.
  if (g.run && g.run->state == "running") {
    ctx.out << "conveyor-monitor advances this run by itself; `conveyor system waves --stop` ends it "
            << "(then --start N or --all by hand)\n";
    return kExitOk;
  }
  ctx.out
      << "start wave by wave: `conveyor system waves --start 1`, then 2, ... once each caught up; `--all` at the end;\n"
      << "or let conveyor-monitor do it: `conveyor system waves --auto [--threshold N]` (`--stop` ends it)\n";
  return kExitOk;
}

// Runbook 001 "starting the system after a long downtime": the job types in
// waves by their dependencies (model::job_type_waves); --start N sets
// job_types_list to waves 1..N, so the later ones wait until the earlier
// caught up; --all handles every type again. --auto records a wave run that
// conveyor-monitor advances by itself (model::advance_waves); --stop ends it.
int waves(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "system waves", {"--start", "--threshold"}, {"--all", "--auto", "--stop"});
  if (!o.positional.empty())
    throw FieldError(o.positional[0], "system waves: unexpected argument '" + o.positional[0] + "'");
  const int modes =
      (o.get("--start") ? 1 : 0) + (o.has("--all") ? 1 : 0) + (o.has("--auto") ? 1 : 0) + (o.has("--stop") ? 1 : 0);
  if (modes > 1) throw FieldError("--start", "system waves: one of --start N, --all, --auto, --stop");
  if (o.get("--threshold") && !o.has("--auto"))
    throw FieldError("--threshold", "system waves: --threshold goes with --auto");
  db::Pool pool(pool_options(ctx));
  if (o.has("--auto")) return waves_auto(ctx, o, pool);
  if (o.has("--stop")) return waves_stop(ctx, pool);
  const WavesSeen g = pool.transact([](db::Tx& tx) {
    return WavesSeen{model::job_type_waves(tx), model::load_system_parameters(tx).job_types_list,
                     model::load_wave_run(tx)};
  });
  if (o.get("--start") || o.has("--all")) return waves_set(ctx, o, pool, g);
  return waves_show(ctx, g);
}

}  // namespace

std::vector<std::string> live_processes(db::Tx& tx) {
  if (!tx.exec(kHasLivenessTables)[0][0].as_bool()) return {};
  std::vector<std::string> names;
  for (const db::Row r : tx.exec(kLiveWorkers)) names.push_back("worker " + r[0].as_string());
  for (const db::Row r : tx.exec(kLiveServices)) names.push_back(r[0].as_string());
  return names;
}

bool refuse_while_live(Context& ctx, db::Pool& pool, bool force) {
  if (force) return false;
  const auto live = pool.transact([](db::Tx& tx) { return live_processes(tx); });
  if (live.empty()) return false;
  std::string names;
  for (std::size_t i = 0; i < live.size() && i < 10; ++i) names += (i ? ", " : "") + live[i];
  ctx.err << "conveyor: " << live.size() << " process(es) still heartbeat (" << names
          << "): stop the services and workers first (`tools/dev stop`), or pass --force; nothing was changed\n";
  return true;
}

int system_command(Context& ctx, const std::vector<std::string>& args) {
  return dispatch(ctx, args, "system", kSystemUsage,
                  {{"status", status},
                   {"pause", pause},
                   {"unpause", unpause},
                   {"prepare-for-reboot", prepare_for_reboot},
                   {"backup", backup},
                   {"restore", restore},
                   {"waves", waves}});
}

}  // namespace conveyor::cli
