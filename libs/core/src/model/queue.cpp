#include "conveyor/model/queue.hpp"

#include "conveyor/error/error.hpp"

namespace conveyor::model {
namespace {

using json = nlohmann::json;

constexpr db::Statement kQueues{
    "model_queues",
    "WITH names AS ("
    "  SELECT 'job_type' AS kind, name FROM conveyor.job_type"
    "  UNION SELECT 'pool', pool FROM conveyor.job_type"
    "  UNION SELECT kind, name FROM conveyor.queue_state),"
    " counts AS ("
    "  SELECT job_type, conveyor.job_pool(config) AS pool, status, count(*) AS n"
    "  FROM conveyor.job WHERE status IN ('ready', 'queued', 'started') GROUP BY 1, 2, 3)"
    "SELECT n.kind, n.name,"
    "  coalesce(sum(c.n) FILTER (WHERE c.status = 'ready'), 0)::bigint AS ready,"
    "  coalesce(sum(c.n) FILTER (WHERE c.status = 'queued'), 0)::bigint AS queued,"
    "  coalesce(sum(c.n) FILTER (WHERE c.status = 'started'), 0)::bigint AS started,"
    "  coalesce(qs.paused, false) AS paused, coalesce(qs.reason, '') AS reason,"
    "  coalesce(qs.paused_by, '') AS paused_by, coalesce(" CONVEYOR_RFC3339("qs.paused_at") ", '') AS paused_at,"
    "  coalesce(qs.drained_count, 0) AS drained "
    "FROM names n"
    " LEFT JOIN counts c ON (n.kind = 'job_type' AND c.job_type = n.name) OR (n.kind = 'pool' AND c.pool = n.name)"
    " LEFT JOIN conveyor.queue_state qs ON qs.kind = n.kind AND qs.name = n.name "
    "WHERE ($1::text IS NULL OR (n.kind = $1::text AND n.name = $2::text)) "
    "GROUP BY n.kind, n.name, qs.paused, qs.reason, qs.paused_by, qs.paused_at, qs.drained_count "
    "ORDER BY n.kind DESC, n.name"};

constexpr db::Statement kKnownQueue{
    "model_queue_known",
    "SELECT EXISTS (SELECT 1 FROM conveyor.job_type WHERE ($1 = 'job_type' AND name = $2) "
    "                                                  OR ($1 = 'pool' AND pool = $2))"};

constexpr db::Statement kPauseQueue{
    "model_queue_pause",
    "INSERT INTO conveyor.queue_state (kind, name, paused, reason, paused_at, paused_by) "
    "VALUES ($1, $2, true, $3, now(), conveyor.current_actor()) "
    "ON CONFLICT (kind, name) DO UPDATE SET paused = true, reason = EXCLUDED.reason, "
    "  paused_at = CASE WHEN conveyor.queue_state.paused THEN conveyor.queue_state.paused_at ELSE now() END, "
    "  paused_by = EXCLUDED.paused_by"};

constexpr db::Statement kResumeQueue{
    "model_queue_resume",
    "UPDATE conveyor.queue_state SET paused = false, reason = NULL, paused_at = NULL, paused_by = NULL "
    "WHERE kind = $1 AND name = $2 AND paused RETURNING 1"};

constexpr db::Statement kPauseSchedule{
    "model_schedule_pause",
    "INSERT INTO conveyor.schedule_state (job_type, last_slot, paused, paused_reason, paused_by) "
    "VALUES ($1, now(), true, $2, conveyor.current_actor()) "
    "ON CONFLICT (job_type) DO UPDATE SET paused = true, paused_reason = EXCLUDED.paused_reason, "
    "  paused_by = EXCLUDED.paused_by, updated_at = now()"};

constexpr db::Statement kResumeSchedule{
    "model_schedule_resume",
    "UPDATE conveyor.schedule_state SET paused = false, paused_reason = NULL, paused_by = NULL, updated_at = now() "
    "WHERE job_type = $1 AND paused RETURNING 1"};

}  // namespace

void require_known_queue(db::Tx& tx, const QueueRef& queue) {
  if (queue.kind != "job_type" && queue.kind != "pool") {
    throw FieldError("kind", "a queue is a job_type or a pool, not '" + queue.kind.substr(0, 40) + "'");
  }
  if (!tx.exec(kKnownQueue, {queue.kind, queue.name})[0][0].as_bool()) {
    throw Error(errc::not_found, queue.kind == "job_type"
                                     ? "no job type named '" + queue.name + "' (see `conveyor job-type list`)"
                                     : "no job type runs in pool '" + queue.name + "' (see `conveyor queue list`)");
  }
}

void pause_queue(db::Tx& tx, const QueueRef& queue, const std::optional<std::string>& reason) {
  require_known_queue(tx, queue);
  tx.exec(kPauseQueue, {queue.kind, queue.name, reason});
}

bool resume_queue(db::Tx& tx, const QueueRef& queue) {
  require_known_queue(tx, queue);
  return !tx.exec(kResumeQueue, {queue.kind, queue.name}).empty();
}

json list_queues(db::Tx& tx, const std::optional<QueueRef>& only) {
  json out = json::array();
  const std::optional<std::string> kind = only ? std::optional<std::string>(only->kind) : std::nullopt;
  const std::optional<std::string> name = only ? std::optional<std::string>(only->name) : std::nullopt;
  for (const db::Row r : tx.exec(kQueues, {kind, name})) {
    out.push_back({{"kind", r["kind"].as_string()},
                   {"name", r["name"].as_string()},
                   {"ready", r["ready"].as_int()},
                   {"queued", r["queued"].as_int()},
                   {"started", r["started"].as_int()},
                   {"paused", r["paused"].as_bool()},
                   {"reason", r["reason"].as_string()},
                   {"paused_by", r["paused_by"].as_string()},
                   {"paused_at", r["paused_at"].as_string()},
                   {"drained", r["drained"].as_int()}});
  }
  return out;
}

JobType require_scheduled(db::Tx& tx, const std::string& name) {
  const auto t = load_job_type(tx, name);
  if (!t) throw Error(errc::not_found, "job type '" + name + "' does not exist (see `conveyor job-type list`)");
  if (t->schedule.empty()) throw Error(errc::conflict, "job type '" + name + "' has no schedule");
  return *t;
}

void pause_schedule(db::Tx& tx, const std::string& job_type, const std::optional<std::string>& reason) {
  require_scheduled(tx, job_type);
  tx.exec(kPauseSchedule, {job_type, reason});
}

bool resume_schedule(db::Tx& tx, const std::string& job_type) {
  require_scheduled(tx, job_type);
  return !tx.exec(kResumeSchedule, {job_type}).empty();
}

}  // namespace conveyor::model
