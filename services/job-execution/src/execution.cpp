#include "execution.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "conveyor/error/error.hpp"
#include "conveyor/logging/logging.hpp"

namespace conveyor::execution {
namespace {

constexpr db::Statement kAdmissionLock{"execution_admission_lock", "SELECT pg_advisory_xact_lock($1)"};

// In flight = admitted and not finished: what the workers have or will have.
constexpr db::Statement kInFlight{
    "execution_in_flight",
    "SELECT job_type, count(*) AS n FROM conveyor.job "
    "WHERE status IN ('queued', 'started') GROUP BY job_type"};

// Read live from job_type (not job.config) so a changed limit applies at once.
constexpr db::Statement kLimits{
    "execution_limits",
    "SELECT name, concurrency_limit FROM conveyor.job_type WHERE concurrency_limit IS NOT NULL"};

constexpr db::Statement kPaused{"execution_paused",
                                "SELECT kind, name FROM conveyor.queue_state WHERE paused"};

// The filters every candidate passes: conveyor.job_admissible (not
// canceled, not held, not_before passed), $1 job_types_list (NULL: all), $2
// excluded job types (paused or at their limit), $3 paused pools. Excluding
// full types in SQL keeps a long run of one limited type from hiding the
// jobs behind it.
#define CONVEYOR_CANDIDATE_FILTER(j)                                          \
  j ".status = 'ready' AND conveyor.job_admissible(" j ") "                   \
  "AND ($1::text[] IS NULL OR " j ".job_type = ANY($1::text[])) "             \
  "AND " j ".job_type <> ALL($2::text[]) "                                    \
  "AND coalesce(" j ".config->>'pool', 'default') <> ALL($3::text[]) "

// Admission order is conveyor.effective_priority DESC, created_at, id (the
// one aging rule). $4 how many.
//
// At rate 0 that is priority DESC, created_at, id: a walk of job_ready_idx
// that stops after $4 rows.
constexpr db::Statement kCandidates{
    "execution_candidates",
    "SELECT j.id, j.job_type FROM conveyor.job j WHERE " CONVEYOR_CANDIDATE_FILTER("j")
    "ORDER BY j.priority DESC, j.created_at, j.id LIMIT $4 FOR UPDATE SKIP LOCKED"};

// At rate $5 > 0 no index holds the order (it moves with now()), and sorting
// every ready job costs 0.5 s per pass at 100,000 of them. But within one
// priority an older job always ranks higher, so the first $4 come from the $4
// oldest of each priority present: a loose scan of job_ready_idx finds the
// priorities, each gives its oldest, and only those are sorted.
constexpr db::Statement kCandidatesAged{
    "execution_candidates_aged",
    "WITH RECURSIVE level (priority) AS ("
    " (SELECT priority FROM conveyor.job WHERE status = 'ready' ORDER BY priority DESC LIMIT 1)"
    " UNION ALL"
    " SELECT (SELECT l.priority FROM conveyor.job l WHERE l.status = 'ready' AND l.priority < level.priority"
    "         ORDER BY l.priority DESC LIMIT 1)"
    " FROM level WHERE level.priority IS NOT NULL) "
    "SELECT j.id, j.job_type FROM level "
    "CROSS JOIN LATERAL (SELECT c.id FROM conveyor.job c "
    "  WHERE c.priority = level.priority AND " CONVEYOR_CANDIDATE_FILTER("c")
    "  ORDER BY c.created_at, c.id LIMIT $4) oldest "
    "JOIN conveyor.job j ON j.id = oldest.id "
    "WHERE " CONVEYOR_CANDIDATE_FILTER("j")
    "ORDER BY conveyor.effective_priority(j.priority, j.created_at, $5::float8) DESC, j.created_at, j.id "
    "LIMIT $4 FOR UPDATE OF j SKIP LOCKED"};
#undef CONVEYOR_CANDIDATE_FILTER

constexpr db::Statement kSetQueued{
    "execution_set_queued",
    "UPDATE conveyor.job SET status = 'queued' WHERE id = ANY($1::bigint[]) AND status = 'ready'"};

// The next back-off to end among ready jobs that are admissible then (a held
// or canceled one is not: no timer for it).
constexpr db::Statement kNextNotBefore{
    "execution_next_not_before",
    "SELECT ceil(extract(epoch FROM (min(j.not_before) - clock_timestamp())) * 1000)::bigint AS ms "
    "FROM conveyor.job j WHERE j.status = 'ready' AND j.not_before > clock_timestamp() "
    "AND conveyor.job_admissible(j, j.not_before)"};

db::TxOptions tx_options() {
  db::TxOptions o;
  o.actor = kServiceName;
  return o;
}

}  // namespace

int admit_batch(db::Pool& pool, const model::SystemParameters& params, int batch_size) {
  const std::int64_t capacity =
      static_cast<std::int64_t>(params.max_number_of_worker_instances) * params.worker_concurrency;
  return pool.transact(
      [&](db::Tx& tx) {
        tx.exec(kAdmissionLock, {kAdmissionLockKey});

        std::map<std::string, std::int64_t> in_flight;
        std::int64_t total = 0;
        for (const auto r : tx.exec(kInFlight)) {
          in_flight[r["job_type"].as_string()] = r["n"].as_int();
          total += r["n"].as_int();
        }
        if (total >= capacity) return 0;

        std::map<std::string, std::int64_t> limits;
        for (const auto r : tx.exec(kLimits)) limits[r["name"].as_string()] = r["concurrency_limit"].as_int();

        std::set<std::string> excluded_types;
        std::vector<std::string> paused_pools;
        for (const auto r : tx.exec(kPaused)) {
          if (r["kind"].as_string() == "pool") paused_pools.push_back(r["name"].as_string());
          else excluded_types.insert(r["name"].as_string());
        }
        const auto full = [&](const std::string& type) {
          const auto l = limits.find(type);
          return l != limits.end() && in_flight[type] >= l->second;
        };
        for (const auto& [type, limit] : limits) {
          if (full(type)) excluded_types.insert(type);
        }

        const std::int64_t room = std::min<std::int64_t>(batch_size, capacity - total);
        const std::vector<std::string> excluded(excluded_types.begin(), excluded_types.end());
        const auto candidates =
            params.priority_aging_per_minute > 0
                ? tx.exec(kCandidatesAged, {params.job_types_list, excluded, paused_pools, room,
                                            params.priority_aging_per_minute})
                : tx.exec(kCandidates, {params.job_types_list, excluded, paused_pools, room});
        std::vector<std::int64_t> admit;
        for (const auto r : candidates) {
          if (total >= capacity) break;
          const std::string type = r["job_type"].as_string();
          if (full(type)) continue;  // filled up earlier in this batch
          admit.push_back(r["id"].as_int());
          ++in_flight[type];
          ++total;
        }
        if (admit.empty()) return 0;
        return static_cast<int>(tx.exec(kSetQueued, {admit}).affected_rows());
      },
      tx_options());
}

std::optional<std::chrono::milliseconds> next_not_before(db::Pool& pool) {
  return pool.transact(
      [](db::Tx& tx) -> std::optional<std::chrono::milliseconds> {
        const auto r = tx.exec(kNextNotBefore);
        if (r.empty() || r[0]["ms"].is_null()) return std::nullopt;
        return std::chrono::milliseconds(std::max<std::int64_t>(1, r[0]["ms"].as_int()));
      },
      tx_options());
}

runtime::ServiceSpec spec() {
  runtime::ServiceSpec s;
  s.name = kServiceName;
  s.schema = runtime::service_schema();
  // New work (a ready or released job), and everything that frees a slot.
  s.wake_on = {"io.conveyor.job.ready",    "io.conveyor.job.processed", "io.conveyor.job.failed",
               "io.conveyor.job.canceled", "io.conveyor.job.started",   "io.conveyor.job.internal_error",
               "io.conveyor.job.released"};
  return s;
}

void setup(runtime::Context& ctx) {
  const auto p = ctx.parameters();
  ctx.log()->info("execution: pool capacity {} x {}", p->max_number_of_worker_instances,
                  p->worker_concurrency);
}

void loop(runtime::Context& ctx) {
  const auto poll = ctx.config().get_duration("CONVEYOR_POLL_INTERVAL_MS");
  const int batch = static_cast<int>(ctx.config().get_int("CONVEYOR_BATCH_SIZE"));
  auto& admitted = ctx.metrics().counter("conveyor_execution_admitted_total", "jobs moved ready -> queued");
  auto timeout = poll;
  do {
    timeout = poll;
    try {
      int n = 0;
      do {
        n = admit_batch(ctx.db(), *ctx.parameters(), batch);
        admitted.inc(n);
      } while (n > 0 && !ctx.stopping());
      // A backed-off job becomes admissible without any event: wake for it.
      if (const auto next = next_not_before(ctx.db())) timeout = std::min(poll, *next);
    } catch (const Error& e) {
      // The database may be briefly away; the next wake-up or poll retries.
      ctx.log()->error("admission pass failed: {}", e.what());
    }
  } while (ctx.wait_for_work(timeout));
}

}  // namespace conveyor::execution
