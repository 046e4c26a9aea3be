#include "execution.hpp"

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "conveyor/error/error.hpp"
#include "conveyor/logging/logging.hpp"

namespace conveyor::execution {
namespace {

// What wakes admission: new work (a ready or released job), and everything
// that frees a slot. Not started: queued -> started leaves the jobs in
// flight as they were.
constexpr const char* kReadyEvent = "io.conveyor.job.ready";
constexpr const char* kReleasedEvent = "io.conveyor.job.released";
constexpr const char* kProcessedEvent = "io.conveyor.job.processed";
constexpr const char* kFailedEvent = "io.conveyor.job.failed";
constexpr const char* kCanceledEvent = "io.conveyor.job.canceled";
constexpr const char* kInternalErrorEvent = "io.conveyor.job.internal_error";

constexpr db::Statement kAdmissionLock{"execution_admission_lock", "SELECT pg_advisory_xact_lock($1)"};

// The earliest back-off end among ready jobs admissible then, in ms from
// now (NULL: none). A held or canceled job, or one of a paused type or
// pool, is not admissible then: no timer for it.
#define CONVEYOR_NEXT_BACKOFF_MS                                                              \
  "(SELECT ceil(extract(epoch FROM (min(j.not_before) - clock_timestamp())) * 1000)::bigint " \
  " FROM conveyor.job j WHERE j.status = 'ready' AND j.not_before > clock_timestamp() "       \
  " AND conveyor.job_admission_eligible(j, j.not_before, NULL, (SELECT conveyor.paused_queues())))"

// Whether any ready job is admissible now, types at their limit aside;
// `types` is job_types_list's parameter; _OF: of the job types `of` only.
#define CONVEYOR_ANY_ADMISSIBLE_WHERE(types, more)                                                                   \
  "EXISTS (SELECT 1 FROM conveyor.job j WHERE j.status = 'ready' "                                                   \
  "        AND conveyor.job_admission_eligible(j, now(), " types "::text[], (SELECT conveyor.paused_queues()))" more \
  ")"
#define CONVEYOR_ANY_ADMISSIBLE(types) CONVEYOR_ANY_ADMISSIBLE_WHERE(types, "")
#define CONVEYOR_ANY_ADMISSIBLE_OF(types, of) \
  CONVEYOR_ANY_ADMISSIBLE_WHERE(types, " AND j.job_type = ANY(" of "::text[])")

// What a pass decides on, in one read after the admission lock (a
// statement of its own, so that it sees what the admission before it
// committed), one row per item by kind:
// * 'type': in flight (admitted and not finished: what the workers have or
//   will have) by type, and each limited type's concurrency_limit, read live
//   from job_type (not job.config, so a changed limit applies at once): a
//   type may have jobs in flight, a limit, or both;
// * 'worker': the free slots of each active worker with any, its
//   concurrency less the jobs assigned to it (queued) or that it runs
//   (started), so the assignments of the admission before count. Only a
//   worker that beat within $1 seconds (two heartbeat intervals): one that
//   died is active until the reaper's timeout, and, claiming nothing, would
//   look the freest of all;
// * 'due' and 'admissible': when the next back-off ends
//   (CONVEYOR_NEXT_BACKOFF_MS) and whether any job is admissible now for
//   job_types_list $2 (1 or 0), as the probe says, for a pass the probe did
//   not precede: a timer for a backed-off job, and whether a freed slot may
//   admit one (Admission::waiting).
constexpr db::Statement kAdmissionState{
    "execution_admission_state",
    "WITH f AS (SELECT job_type, worker_id, n FROM conveyor.jobs_in_flight()) "
    "SELECT 'type' AS kind, coalesce(t.job_type, l.name) AS name, NULL::bigint AS id, coalesce(t.n, 0) AS n, "
    "       l.concurrency_limit::bigint AS n_limit "
    "FROM (SELECT job_type, sum(n)::bigint AS n FROM f GROUP BY job_type) t "
    "FULL JOIN (SELECT name, concurrency_limit FROM conveyor.job_type "
    "           WHERE concurrency_limit IS NOT NULL) l ON l.name = t.job_type "
    "UNION ALL "
    "SELECT 'worker', w.pool, w.id, w.concurrency - coalesce(b.n, 0), NULL FROM conveyor.worker w "
    "LEFT JOIN (SELECT worker_id, sum(n)::bigint AS n FROM f WHERE worker_id IS NOT NULL GROUP BY worker_id) b "
    "  ON b.worker_id = w.id "
    "WHERE w.status = 'active' AND w.concurrency > coalesce(b.n, 0) "
    "  AND w.last_heartbeat > now() - make_interval(secs => $1::float8) "
    "UNION ALL "
    "SELECT 'due', NULL, NULL, " CONVEYOR_NEXT_BACKOFF_MS
    ", NULL "
    "UNION ALL "
    "SELECT 'admissible', NULL, NULL, (" CONVEYOR_ANY_ADMISSIBLE("$2") ")::int::bigint, NULL"};

// The filters every candidate of kCandidatesAged passes (and, in the same
// words, conveyor.admission_candidates'): conveyor.job_admission_eligible (the
// one rule: ready, not canceled, not held, not_before passed, a type of $1
// job_types_list (NULL: all), no paused type or pool), and $2 the types at
// their limit. Excluding full types in SQL keeps a long run of one limited
// type from hiding the jobs behind it. The status test is repeated outside
// the function so the planner matches job_ready_idx.
// clang-format off: the SQL reads as SQL.
#define CONVEYOR_CANDIDATE_FILTER(j)                           \
  j ".status = 'ready' AND conveyor.job_admission_eligible(" j \
    ", now(), $1::text[], (SELECT conveyor.paused_queues())) " \
    "AND " j ".job_type <> ALL($2::text[]) "

// What admission needs of a candidate: its type (limits), and to assign it a
// worker, its pool and whether it runs in a container.
#define CONVEYOR_CANDIDATE_COLUMNS \
  "j.id, j.job_type, conveyor.job_pool(j.config) AS pool, coalesce(j.config->>'image', '') <> '' AS container"

// Admission order is conveyor.effective_priority DESC, created_at, id (the
// one aging rule). $3 how many.
//
// At rate 0 that is priority DESC, created_at, id: a walk of job_ready_idx
// that stops after $3 rows, the statement of conveyor.admission_candidates
// (migration 20261224000000). The function plans it once per connection,
// under settings of its own: PostgreSQL 15's generic plan of it would sort
// every ready job, and planned per call it cost 0.45-0.95 ms a pass.
constexpr db::Statement kCandidates{
    "execution_candidates",
    "SELECT id, job_type, pool, container "
    "FROM conveyor.admission_candidates($1::text[], $2::text[], $3::bigint) WITH ORDINALITY ORDER BY ordinality"};

// At rate $4 > 0 no index holds the order (it moves with now()), and sorting
// every ready job costs 0.5 s per pass at 100,000 of them. But within one
// priority an older job always ranks higher, so the first $3 come from the $3
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
    "SELECT " CONVEYOR_CANDIDATE_COLUMNS " FROM level "
    "CROSS JOIN LATERAL (SELECT c.id FROM conveyor.job c "
    "  WHERE c.priority = level.priority AND " CONVEYOR_CANDIDATE_FILTER("c")
    "  ORDER BY c.created_at, c.id LIMIT $3) oldest "
    "JOIN conveyor.job j ON j.id = oldest.id "
    "WHERE " CONVEYOR_CANDIDATE_FILTER("j")
    "ORDER BY conveyor.effective_priority(j.priority, j.created_at, $4::float8) DESC, j.created_at, j.id "
    "LIMIT $3 FOR UPDATE OF j SKIP LOCKED",
    true};
#undef CONVEYOR_CANDIDATE_FILTER
#undef CONVEYOR_CANDIDATE_COLUMNS
// clang-format on

// $2 each job's assigned worker, 0 for none (Assignment): the status
// trigger wakes that worker alone (conveyor.queued_channel).
constexpr db::Statement kSetQueued{
    "execution_set_queued",
    "UPDATE conveyor.job j SET status = 'queued', worker_id = nullif(a.worker_id, 0) "
    "FROM unnest($1::bigint[], $2::bigint[]) AS a (id, worker_id) WHERE j.id = a.id AND j.status = 'ready'"};

// Whether a job of the types at their limit ($2) is ready and admissible
// but for its limit: only then does a freed slot of such a type admit one.
constexpr db::Statement kFullTypeWaits{"execution_full_type_waits",
                                       "SELECT " CONVEYOR_ANY_ADMISSIBLE_OF("$1", "$2") " AS waits"};

// The probe of a wake-up that may bring no work (a poll, a Kafka event),
// one round trip: whether any job is admissible, types at their limit aside
// (when none is, the wake-up costs no locked pass), and in how many ms the
// next back-off ends.
constexpr db::Statement kProbe{"execution_probe", "SELECT " CONVEYOR_ANY_ADMISSIBLE(
                                                      "$1") " AS admissible, " CONVEYOR_NEXT_BACKOFF_MS " AS next_ms"};
#undef CONVEYOR_NEXT_BACKOFF_MS
#undef CONVEYOR_ANY_ADMISSIBLE_OF
#undef CONVEYOR_ANY_ADMISSIBLE
#undef CONVEYOR_ANY_ADMISSIBLE_WHERE

db::TxOptions tx_options() {
  db::TxOptions o;
  o.actor = kServiceName;
  return o;
}

}  // namespace

std::optional<runtime::Claim> Admission::claim(db::Tx& tx, const model::SystemParameters& params, int batch_size) {
  capacity_ = static_cast<std::int64_t>(params.max_number_of_worker_instances) * params.worker_concurrency;
  left_waiting_ = true;  // until this pass shows otherwise (it may fail half-way)
  tx.exec(kAdmissionLock, {kAdmissionLockKey});
  read_state(tx.exec(kAdmissionState, {2.0 * std::max(1, params.worker_heartbeat_interval_s), params.job_types_list}));
  if (total_ >= capacity_) {
    // Nothing is admitted: whether jobs wait for a slot is whether any is
    // admissible (read with the state).
    left_waiting_ = admissible_;
    return std::nullopt;
  }

  // Paused types and pools are conveyor.job_admission_eligible's to exclude.
  std::vector<std::string> full_types;
  for (const auto& [type, limit] : limits_) {
    if (full(type)) full_types.push_back(type);
  }

  const std::int64_t room = std::min<std::int64_t>(batch_size, capacity_ - total_);
  room_ = room;
  // Jobs of a full type wait for a slot of their type, if there are any:
  // one read, only while a type is at its limit.
  left_waiting_ =
      !full_types.empty() && tx.exec(kFullTypeWaits, {params.job_types_list, full_types})[0]["waits"].as_bool();
  return candidates_claim(params.job_types_list, full_types, room, params.priority_aging_per_minute);
}

runtime::Claim candidates_claim(const std::optional<std::vector<std::string>>& job_types,
                                const std::vector<std::string>& full_types, std::int64_t room,
                                double aging_per_minute) {
  if (aging_per_minute > 0) return runtime::Claim{kCandidatesAged, {job_types, full_types, room, aging_per_minute}};
  return runtime::Claim{kCandidates, {job_types, full_types, room}};
}

int Admission::apply(db::Tx& tx, const db::Result& candidates) {
  // All the room taken: more may be ready behind these.
  if (static_cast<std::int64_t>(candidates.size()) >= room_) left_waiting_ = true;
  std::vector<std::int64_t> admit;
  for (const auto r : candidates) {
    if (total_ >= capacity_) {
      left_waiting_ = true;
      break;
    }
    const std::string type = r["job_type"].as_string();
    if (full(type)) {  // filled up earlier in this batch
      left_waiting_ = true;
      continue;
    }
    admit.push_back(r["id"].as_int());
    ++in_flight_[type];
    ++total_;
  }
  if (admit.empty()) return 0;
  std::vector<std::int64_t> workers;
  workers.reserve(admit.size());
  for (const auto r : candidates) {
    if (workers.size() == admit.size()) break;
    if (r["id"].as_int() != admit[workers.size()]) continue;  // not admitted
    workers.push_back(r["container"].as_bool() ? 0 : assignment_.take(r["pool"].as_string()));
  }
  return static_cast<int>(tx.exec(kSetQueued, {admit, workers}).affected_rows());
}

void Assignment::add(const std::string& pool, std::int64_t id, std::int64_t free) {
  pools_[pool].push_back({free, id});
}

std::int64_t Assignment::take(const std::string& pool) {
  const auto p = pools_.find(pool);
  if (p == pools_.end()) return 0;
  // The most free slots; of equals, the lowest id (the order they were read in does not matter).
  const auto most = std::max_element(p->second.begin(), p->second.end(), [](const auto& a, const auto& b) {
    return a.free < b.free || (a.free == b.free && a.id > b.id);
  });
  if (most == p->second.end() || most->free <= 0) return 0;
  --most->free;
  return most->id;
}

bool Admission::full(const std::string& type) {
  const auto l = limits_.find(type);
  return l != limits_.end() && in_flight_[type] >= l->second;
}

int admit_batch(db::Pool& pool, const model::SystemParameters& params, int batch_size) {
  return pool.transact(
      [&](db::Tx& tx) {
        Admission admission;
        const auto claim = admission.claim(tx, params, batch_size);
        if (!claim) return 0;
        return admission.apply(tx, tx.exec(claim->statement, claim->params));
      },
      tx_options());
}

void Admission::read_state(const db::Result& rows) {
  in_flight_.clear();
  limits_.clear();
  assignment_ = Assignment{};
  total_ = 0;
  for (const auto r : rows) {
    const std::string kind = r["kind"].as_string();
    if (kind == "type") {
      const std::string type = r["name"].as_string();
      in_flight_[type] = r["n"].as_int();
      total_ += r["n"].as_int();
      if (!r["n_limit"].is_null()) limits_[type] = r["n_limit"].as_int();
    } else if (kind == "worker") {
      assignment_.add(r["name"].as_string(), r["id"].as_int(), r["n"].as_int());
    } else if (kind == "due") {
      read_due(r["n"]);
    } else if (kind == "admissible") {
      admissible_ = r["n"].as_int() != 0;
    }
  }
}

bool Admission::read_probe(const db::Result& r) {
  admissible_ = !r.empty() && r[0]["admissible"].as_bool();
  if (r.empty()) {
    due_.reset();
  } else {
    read_due(r[0]["next_ms"]);
  }
  return admissible_;
}

void Admission::read_due(const db::Field& next_ms) {
  due_.reset();
  if (!next_ms.is_null()) {
    due_ = std::chrono::steady_clock::now() + std::chrono::milliseconds(std::max<std::int64_t>(1, next_ms.as_int()));
  }
}

std::optional<std::chrono::milliseconds> Admission::next_due() const {
  if (!due_) return std::nullopt;
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(*due_ - std::chrono::steady_clock::now());
  return std::max(left, std::chrono::milliseconds(1));
}

runtime::ServiceSpec spec() {
  runtime::ServiceSpec s;
  s.name = kServiceName;
  s.schema = runtime::service_schema();
  s.wake_on = {kReadyEvent, kProcessedEvent, kFailedEvent, kCanceledEvent, kInternalErrorEvent, kReleasedEvent};
  return s;
}

void setup(runtime::Context& ctx) {
  const auto p = ctx.parameters();
  ctx.log()->info("execution: pool capacity {} x {}", p->max_number_of_worker_instances, p->worker_concurrency);
}

runtime::StageLoop stage_loop(runtime::Context& ctx) {
  // One pass's counts, from its claim to its apply (same thread, same transaction).
  auto admission = std::make_shared<Admission>();
  runtime::StageStep admit;
  admit.name = "admit";
  admit.claim = [admission](db::Tx& tx, const runtime::Pass& pass) {
    return admission->claim(tx, pass.parameters, pass.batch_size);
  };
  admit.apply = [admission](db::Tx& tx, const db::Result& rows, const runtime::Pass&) {
    return admission->apply(tx, rows);
  };
  // A wake-up that may bring no work (a poll, a Kafka event) reads first
  // whether any job is admissible; the read also says when the next back-off
  // ends (a backed-off job becomes admissible with no event), as each pass's
  // state read does.
  admit.probe = [](const runtime::Pass& pass) { return runtime::Claim{kProbe, {pass.parameters.job_types_list}}; };
  admit.probed = [admission](const db::Result& r) { return admission->read_probe(r); };
  admit.next_due = [admission](runtime::Context&) { return admission->next_due(); };
  // A slot freed (a job left queued or started) admits a job only while
  // admissible jobs wait for one: at a low rate each job is admitted as it
  // becomes ready, and its end then costs no probe. A new ready job is
  // notified (ready, released) and runs the step as before.
  admit.woken_by = {kReadyEvent, kReleasedEvent, kProcessedEvent, kFailedEvent, kCanceledEvent, kInternalErrorEvent};
  admit.woken_while_waiting = {kProcessedEvent, kFailedEvent, kCanceledEvent, kInternalErrorEvent};
  admit.waiting = [admission] { return admission->waiting(); };
  // Each of these brings work as good as certainly: a job became ready, or a
  // slot was freed while admissible jobs waited for one (woken_while_waiting).
  // So the locked pass runs at once, without the probe.
  admit.unprobed_after = admit.woken_by;
  admit.moved = &ctx.metrics().counter("conveyor_execution_admitted_total", "jobs moved ready -> queued");
  runtime::StageLoopOptions options;
  options.name = "admission";
  options.steps = {std::move(admit)};
  return runtime::StageLoop(std::move(options));
}

void loop(runtime::Context& ctx) { stage_loop(ctx).run(ctx); }

}  // namespace conveyor::execution
