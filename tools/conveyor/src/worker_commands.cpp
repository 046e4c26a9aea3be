// `conveyor worker list|ping|drain` (runbook 002's `worker list` and
// `worker ping`): workers as conveyor.worker records them. A worker is
// alive while its heartbeat is younger than worker_heartbeat_timeout_s,
// measured on PostgreSQL's clock (the one the worker writes with).
#include <cmath>
#include <ostream>

#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "conveyor/error/error.hpp"

namespace conveyor::cli {

namespace {

using nlohmann::json;

constexpr const char* kWorkerUsage =
    "usage: conveyor worker list [--pool P] [--all]\n"
    "       conveyor worker ping NAME      (NAME, or HOST/PID as `worker list` shows it)\n"
    "       conveyor worker drain NAME [--yes]   the worker claims no new job and exits once idle;\n"
    "                                    it lists the worker and asks first (--yes: do not ask)\n";

// `alive`: active or draining with a heartbeat younger than the timeout.
constexpr db::Statement kWorkers{
    "cli_workers",
    "SELECT w.id, w.name, coalesce(w.host, '') AS host, coalesce(w.pid, 0) AS pid, w.pool, w.concurrency, "
    // A stopped or lost worker runs nothing, whatever it last reported.
    "  CASE WHEN w.status IN ('active', 'draining') THEN w.running ELSE 0 END AS running, w.status,"
    "  coalesce(w.version, '') AS version,"
    "  extract(epoch FROM (CASE WHEN w.status IN ('active', 'draining') THEN now() "
    "                           ELSE w.last_heartbeat END) - w.started_at)::float8 AS uptime_s,"
    "  extract(epoch FROM now() - w.last_heartbeat)::float8 AS heartbeat_age_s,"
    "  (w.status IN ('active', 'draining') AND w.last_heartbeat > "
    "     now() - make_interval(secs => p.worker_heartbeat_timeout_s)) AS alive "
    "FROM conveyor.worker w, conveyor.system_parameters p "
    "WHERE ($1::text IS NULL OR w.pool = $1::text) AND ($2 OR w.status IN ('active', 'draining')) "
    "  AND ($3::text IS NULL OR w.name = $3::text OR coalesce(w.host, '') || '/' || w.pid = $3::text) "
    "ORDER BY w.pool, w.name"};

constexpr db::Statement kDrain{"cli_worker_drain", "SELECT * FROM conveyor.drain_worker($1) AS running"};

// 3725.4 -> "1h2m5s"
std::string duration(double seconds) {
  auto s = static_cast<long long>(std::llround(std::max(0.0, seconds)));
  std::string out;
  if (s >= 86400) out += std::to_string(s / 86400) + "d", s %= 86400;
  if (s >= 3600 || !out.empty()) out += std::to_string(s / 3600) + "h", s %= 3600;
  if (s >= 60 || !out.empty()) out += std::to_string(s / 60) + "m", s %= 60;
  return out + std::to_string(s) + "s";
}

struct WorkerRow {
  std::int64_t id;
  std::string name, host, pool, status, version;
  int pid, concurrency, running;
  double uptime_s, heartbeat_age_s;
  bool alive;
  json to_json() const {
    return {{"id", id},
            {"name", name},
            {"host", host},
            {"pid", pid},
            {"pool", pool},
            {"concurrency", concurrency},
            {"running", running},
            {"status", status},
            {"version", version},
            {"uptime_s", uptime_s},
            {"heartbeat_age_s", heartbeat_age_s},
            {"alive", alive}};
  }
};

std::vector<WorkerRow> load(db::Pool& pool, const std::optional<std::string>& pool_name, bool all,
                            const std::optional<std::string>& name) {
  return pool.transact([&](db::Tx& tx) {
    std::vector<WorkerRow> rows;
    for (const db::Row r : tx.exec(kWorkers, {pool_name, all, name})) {
      rows.push_back({r["id"].as_int(), r["name"].as_string(), r["host"].as_string(), r["pool"].as_string(),
                      r["status"].as_string(), r["version"].as_string(), r["pid"].as<int>(), r["concurrency"].as<int>(),
                      r["running"].as<int>(), r["uptime_s"].as_double(), r["heartbeat_age_s"].as_double(),
                      r["alive"].as_bool()});
    }
    return rows;
  });
}

int list(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "worker list", {"--pool"}, {"--all"});
  if (!o.positional.empty())
    throw FieldError(o.positional[0], "worker list: unexpected argument '" + o.positional[0] + "'");
  db::Pool pool(pool_options(ctx));
  const auto workers = load(pool, o.get("--pool"), o.has("--all"), std::nullopt);
  if (ctx.json) {
    json j = json::array();
    for (const auto& w : workers) j.push_back(w.to_json());
    ctx.out << j.dump() << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& w : workers) {
    const std::string status =
        w.status == "active" || w.status == "draining" ? (w.alive ? w.status : w.status + " (no heartbeat)") : w.status;
    rows.push_back({w.host, std::to_string(w.pid), w.name, w.pool, std::to_string(w.concurrency),
                    std::to_string(w.running), status, duration(w.uptime_s), duration(w.heartbeat_age_s) + " ago"});
  }
  print_table(ctx.out, {"HOST", "PID", "NAME", "POOL", "CONCURRENCY", "RUNNING", "STATUS", "UPTIME", "HEARTBEAT"},
              rows);
  return kExitOk;
}

WorkerRow one(db::Pool& pool, const std::string& command, const std::vector<std::string>& positional) {
  if (positional.size() != 1) {
    throw FieldError("NAME",
                     "worker " + command + ": one worker NAME (or HOST/PID) is required\n" + std::string(kWorkerUsage));
  }
  const auto rows = load(pool, std::nullopt, true, positional[0]);
  if (rows.empty())
    throw Error(errc::not_found, "no worker named '" + positional[0] + "' (see `conveyor worker list --all`)");
  if (rows.size() > 1) throw FieldError("NAME", "'" + positional[0] + "' names several workers: use the NAME column");
  return rows[0];
}

// Runbook 002: "HOST/PID: OK", or exit 1 when the worker is not available.
int ping(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "worker ping", {});
  db::Pool pool(pool_options(ctx));
  const WorkerRow w = one(pool, "ping", o.positional);
  if (ctx.json) {
    ctx.out << w.to_json().dump() << "\n";
  } else if (w.alive) {
    ctx.out << w.host << "/" << w.pid << ": OK (" << w.name << ", " << w.status << ", heartbeat "
            << duration(w.heartbeat_age_s) << " ago)\n";
  } else {
    ctx.out << w.host << "/" << w.pid << ": NOT RESPONDING (" << w.name << ", " << w.status << ", last heartbeat "
            << duration(w.heartbeat_age_s) << " ago)\n";
  }
  return w.alive ? kExitOk : kExitFailed;
}

int drain(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "worker drain", {}, {"--yes"});
  db::Pool pool(pool_options(ctx));
  const WorkerRow w = one(pool, "drain", o.positional);
  // Like the job commands that change things: show what it touches, then ask.
  if (!o.has("--yes") && w.status == "active") {
    std::ostream& talk = ctx.json ? ctx.err : ctx.out;
    talk << "worker drain will touch:\n";
    print_table(talk, {"NAME", "HOST/PID", "POOL", "STATUS", "RUNNING", "UPTIME"},
                {{w.name, w.host + "/" + std::to_string(w.pid), w.pool, w.status, std::to_string(w.running),
                  duration(w.uptime_s)}});
    if (!confirm(ctx, talk, "drain worker " + w.name + "?")) {
      talk << "not applied: nothing changed\n";
      return kExitFailed;
    }
  }
  const auto running = pool.transact([&](db::Tx& tx) -> std::optional<std::int64_t> {
    const auto r = tx.exec(kDrain, {w.id});
    if (r.empty()) return std::nullopt;
    return r[0][0].as_int();
  });
  if (!running) {
    if (w.status == "draining") {
      ctx.out << "worker " << w.name << " is already draining\n";
      return kExitOk;
    }
    throw Error(errc::conflict, "worker " + w.name + " is " + w.status + ", not active: nothing to drain");
  }
  ctx.out << "worker " << w.name << " draining: it claims no new job and exits after its " << *running
          << " running job(s); the worker pool starts a replacement if the queue needs one\n";
  return kExitOk;
}

}  // namespace

int worker_command(Context& ctx, const std::vector<std::string>& args) {
  return dispatch(ctx, args, "worker", kWorkerUsage, {{"list", list}, {"ls", list}, {"ping", ping}, {"drain", drain}});
}

}  // namespace conveyor::cli
