// `conveyor queue list|inspect|pause|resume|drain`: the queues of runbook 002
// are job types and pools. Pauses persist: a conveyor.queue_state row that
// admission (conveyor-execution) honours (ready jobs of it wait, running ones
// finish); a drain cancels the queue's jobs that are not running.
#include <ostream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "conveyor/error/error.hpp"
#include "conveyor/model/job_control.hpp"
#include "conveyor/model/queue.hpp"

namespace conveyor::cli {

namespace {

using nlohmann::json;

constexpr const char* kQueueUsage =
    "usage: conveyor queue list\n"
    "       conveyor queue inspect (--type T | --pool P)\n"
    "       conveyor queue pause (--type T | --pool P) [--reason TEXT]\n"
    "       conveyor queue resume (--type T | --pool P)\n"
    "       conveyor queue drain (--type T | --pool P) [--status S,S...] [--apply] [--yes]\n"
    "                 cancel the queue's jobs that are not running (default statuses: initialized,\n"
    "                 configured, ready, queued; also failed, internal_error, external_error,\n"
    "                 error_checked); a dry run unless --apply\n";

// One queue's jobs by status, and how long its oldest ready job has waited
// (runbook 002's "Latency"), plus the day's done and failed.
constexpr db::Statement kQueueDetail{
    "cli_queue_detail",
    "SELECT count(*) FILTER (WHERE status = 'initialized') AS initialized,"
    "  count(*) FILTER (WHERE status = 'configured') AS configured,"
    "  count(*) FILTER (WHERE status = 'processed') AS processed,"
    "  count(*) FILTER (WHERE status = 'external_error') AS external_error,"
    "  count(*) FILTER (WHERE status = 'error_checked') AS error_checked,"
    "  count(*) FILTER (WHERE status = 'done' AND updated_at > now() - interval '1 day') AS done_daily,"
    "  count(*) FILTER (WHERE status IN ('failed', 'internal_error') AND updated_at > now() - interval '1 day')"
    "    AS failed_daily,"
    "  coalesce(extract(epoch FROM now() - min(updated_at) FILTER (WHERE status = 'ready')), 0)::float8 AS latency_s "
    "FROM conveyor.job WHERE ($1 = 'job_type' AND job_type = $2) "
    "   OR ($1 = 'pool' AND conveyor.job_pool(config) = $2)"};

// A pool's jobs: the pool their configuration chose, or their type's.
constexpr db::Statement kDrainCandidates{
    "cli_queue_drain_candidates",
    "SELECT j.id FROM conveyor.job j LEFT JOIN conveyor.job_type t ON t.name = j.job_type "
    "WHERE j.status = ANY($3::text[]) AND j.canceled_at IS NULL "
    "  AND (($1 = 'job_type' AND j.job_type = $2) "
    "    OR ($1 = 'pool' AND conveyor.job_pool(j.config, t.pool) = $2)) "
    "ORDER BY j.id LIMIT 100001"};

constexpr db::Statement kCountDrained{
    "cli_queue_count_drained",
    "INSERT INTO conveyor.queue_state (kind, name, drained_count) VALUES ($1, $2, $3) "
    "ON CONFLICT (kind, name) DO UPDATE SET drained_count = conveyor.queue_state.drained_count + EXCLUDED.drained_count"};

// ------------------------------------------------------------------ queue

struct QueueName {
  std::string kind;  // job_type | pool
  std::string name;
};

QueueName queue_name(const Options& o, const std::string& command) {
  const auto type = o.get("--type");
  const auto pool = o.get("--pool");
  if (!o.positional.empty())
    throw FieldError(o.positional[0],
                     command + ": unexpected argument '" + o.positional[0] + "' (use --type T or --pool P)");
  if (type.has_value() == pool.has_value()) {
    throw FieldError("--type",
                     command + ": give exactly one of --type JOB_TYPE or --pool POOL\n" + std::string(kQueueUsage));
  }
  return type ? QueueName{"job_type", *type} : QueueName{"pool", *pool};
}

// The checks and statements live in libs/core (model/queue.hpp), shared with the console.
void require_known(db::Tx& tx, const QueueName& q) { model::require_known_queue(tx, {q.kind, q.name}); }

int queue_list(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "queue list", {});
  if (!o.positional.empty())
    throw FieldError(o.positional[0], "queue list: unexpected argument '" + o.positional[0] + "'");
  db::Pool pool(pool_options(ctx));
  const json queues = pool.transact([](db::Tx& tx) {
    json out = json::array();
    for (const auto& q : model::list_queues(tx)) out.push_back(q);
    return out;
  });
  if (ctx.json) {
    ctx.out << queues.dump() << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& q : queues) {
    std::string paused = q["paused"].get<bool>() ? "yes" : "no";
    if (q["paused"].get<bool>() && !q["reason"].get<std::string>().empty())
      paused += " (" + q["reason"].get<std::string>() + ")";
    rows.push_back({q["kind"].get<std::string>() == "job_type" ? "type" : "pool", q["name"].get<std::string>(),
                    std::to_string(q["ready"].get<std::int64_t>()), std::to_string(q["queued"].get<std::int64_t>()),
                    std::to_string(q["started"].get<std::int64_t>()), paused});
  }
  print_table(ctx.out, {"KIND", "NAME", "READY", "QUEUED", "STARTED", "PAUSED"}, rows);
  return kExitOk;
}

int queue_inspect(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "queue inspect", {"--type", "--pool"});
  const QueueName q = queue_name(o, "queue inspect");
  db::Pool pool(pool_options(ctx));
  db::TxOptions snapshot;
  snapshot.isolation = db::Isolation::repeatable_read;
  const json d = pool.transact(
      [&](db::Tx& tx) {
        require_known(tx, q);
        json out = model::list_queues(tx, model::QueueRef{q.kind, q.name})[0];
        const db::Result detail = tx.exec(kQueueDetail, {q.kind, q.name});  // a Row points into its Result
        const db::Row r = detail[0];
        for (const char* k : {"initialized", "configured", "processed", "external_error", "error_checked", "done_daily",
                              "failed_daily"}) {
          out[k] = r[k].as_int();
        }
        out["latency_s"] = r["latency_s"].as_double();
        return out;
      },
      snapshot);
  if (ctx.json) {
    ctx.out << d.dump() << "\n";
    return kExitOk;
  }
  auto line = [&](const std::string& k, const std::string& v) {
    ctx.out << k << std::string(k.size() < 20 ? 20 - k.size() : 1, ' ') << ": " << v << "\n";
  };
  auto n = [&](const char* k) { return std::to_string(d[k].get<std::int64_t>()); };
  line("Name", d["name"].get<std::string>());
  line("Kind", d["kind"].get<std::string>() == "job_type" ? "job type" : "pool");
  line("Is Paused", d["paused"].get<bool>() ? "true" : "false");
  if (d["paused"].get<bool>()) {
    line("Paused Reason", d["reason"].get<std::string>().empty() ? "-" : d["reason"].get<std::string>());
    line("Paused By", d["paused_by"].get<std::string>());
    line("Paused At", display_time(d["paused_at"].get<std::string>()));
  }
  line("Latency", std::to_string(static_cast<long long>(d["latency_s"].get<double>())) + "s (oldest ready job)");
  line("Initialized", n("initialized"));
  line("Configured", n("configured"));
  line("Ready", n("ready"));
  line("Queued", n("queued"));
  line("Started", n("started"));
  line("Processed", n("processed"));
  line("External errors", n("external_error"));
  line("Error checked", n("error_checked"));
  line("Done (daily)", n("done_daily"));
  line("Failed (daily)", n("failed_daily"));
  return kExitOk;
}

int queue_pause(Context& ctx, const std::vector<std::string>& args, bool pause) {
  const std::string command = pause ? "queue pause" : "queue resume";
  const Options o = parse_options(
      args, command,
      pause ? std::set<std::string>{"--type", "--pool", "--reason"} : std::set<std::string>{"--type", "--pool"});
  const QueueName q = queue_name(o, command);
  db::Pool pool(pool_options(ctx));
  const bool changed = pool.transact([&](db::Tx& tx) {
    if (pause) {
      model::pause_queue(tx, {q.kind, q.name}, o.get("--reason"));
      return true;
    }
    return model::resume_queue(tx, {q.kind, q.name});
  });
  const std::string what = (q.kind == "job_type" ? "job type " : "pool ") + q.name;
  if (pause) {
    ctx.out << what << " paused: its ready jobs wait, running ones finish (`conveyor queue resume "
            << (q.kind == "job_type" ? "--type " : "--pool ") << q.name << "`)\n";
  } else {
    ctx.out << what << (changed ? " resumed\n" : " was not paused\n");
  }
  return kExitOk;
}

// --status S,S: the statuses a drain cancels (default: not yet started).
std::vector<std::string> drain_statuses(const Options& o) {
  const auto given = o.get("--status");
  if (!given) return {"initialized", "configured", "ready", "queued"};
  static const std::set<std::string> drainable = {"initialized", "configured",     "ready",          "queued",
                                                  "failed",      "internal_error", "external_error", "error_checked"};
  std::vector<std::string> statuses;
  std::stringstream ss(*given);
  for (std::string st; std::getline(ss, st, ',');) {
    if (!drainable.count(st)) {
      throw FieldError("--status", "--status: '" + st +
                                       "' cannot be drained (initialized, configured, ready, queued, failed, "
                                       "internal_error, external_error, error_checked; a running job: `conveyor job "
                                       "cancel`)");
    }
    statuses.push_back(st);
  }
  return statuses;
}

// Cancels the jobs in one transaction; how many are canceled now (a running
// one is canceled by its worker later).
std::int64_t drain_jobs(db::Pool& pool, const QueueName& q, const std::vector<std::int64_t>& ids) {
  Progress progress("queue drain");
  return pool.transact([&](db::Tx& tx) {
    std::int64_t n = 0;
    std::size_t done = 0;
    for (const auto id : ids) {
      if (model::cancel_job(tx, model::JobId(id)).completed) ++n;  // not running: canceled now
      progress.set(std::to_string(++done) + " of " + std::to_string(ids.size()) + " job(s)");
    }
    tx.exec(kCountDrained, {q.kind, q.name, n});
    return n;
  });
}

int queue_drain(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "queue drain", {"--type", "--pool", "--status"}, {"--apply", "--yes"});
  const QueueName q = queue_name(o, "queue drain");
  const std::vector<std::string> statuses = drain_statuses(o);
  db::Pool pool(pool_options(ctx));
  // The jobs it would cancel, listed in the same snapshot as counted.
  const auto selected = pool.transact([&](db::Tx& tx) {
    require_known(tx, q);
    std::vector<std::int64_t> out;
    for (const db::Row r : tx.exec(kDrainCandidates, {q.kind, q.name, statuses})) out.push_back(r[0].as_int());
    std::ostringstream listed;
    if (!out.empty() && out.size() <= 100'000) print_jobs(listed, tx, out);
    return std::pair{out, listed.str()};
  });
  const std::vector<std::int64_t>& ids = selected.first;
  const std::string& table = selected.second;
  if (ids.size() > 100'000)
    throw FieldError("--status", "queue drain: more than 100000 jobs: drain one status at a time");
  std::string list;
  for (const auto& st : statuses) list += (list.empty() ? "" : ",") + st;
  const std::string what = (q.kind == "job_type" ? "job type " : "pool ") + q.name;
  std::ostream& talk = ctx.json ? ctx.err : ctx.out;
  talk << ids.size() << " job(s) of " << what << " in " << list << "\n" << table;
  if (ids.empty() || !o.has("--apply")) {
    if (!ids.empty()) talk << "dry run: nothing changed; add --apply to cancel them\n";
    if (ctx.json) ctx.out << json{{"matched", ids.size()}, {"drained", 0}}.dump() << "\n";
    return kExitOk;
  }
  if (!o.has("--yes") && !confirm(ctx, talk, "cancel " + std::to_string(ids.size()) + " job(s)?")) {
    talk << "not applied: nothing changed\n";
    return kExitFailed;
  }
  const std::int64_t drained = drain_jobs(pool, q, ids);
  if (ctx.json) ctx.out << json{{"matched", ids.size()}, {"drained", drained}}.dump() << "\n";
  talk << "drained " << drained << " job(s) of " << what << " (canceled; `conveyor job retry` brings one back)\n";
  return kExitOk;
}

int queue_pause_cmd(Context& ctx, const std::vector<std::string>& args) { return queue_pause(ctx, args, true); }
int queue_resume_cmd(Context& ctx, const std::vector<std::string>& args) { return queue_pause(ctx, args, false); }

}  // namespace

int queue_command(Context& ctx, const std::vector<std::string>& args) {
  return dispatch(ctx, args, "queue", kQueueUsage,
                  {{"list", queue_list},
                   {"ls", queue_list},
                   {"inspect", queue_inspect},
                   {"pause", queue_pause_cmd},
                   {"resume", queue_resume_cmd},
                   {"drain", queue_drain}});
}

}  // namespace conveyor::cli
