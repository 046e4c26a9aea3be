#include "finish_batch.hpp"

#include <map>
#include <nlohmann/json.hpp>

namespace conveyor::worker {
namespace {

// $1: the batch as a JSON array of {id, attempt, result, exit_code, ...}.
// The job moves only while it is still started by this worker ($2), as the
// single-job statement does; its attempt's row is closed in the same
// statement with what it cost.
constexpr db::Statement kFinishProcessedBatch{
    "worker_finish_processed_batch",
    "WITH v AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS v(id bigint, attempt int, result jsonb,"
    "             exit_code int, image_digest text, wall_ms bigint, cpu_user_ms bigint,"
    "             cpu_system_ms bigint, max_rss_kb bigint)),"
    " moved AS (UPDATE conveyor.job j SET status = conveyor.status_after_success(j.canceled_at, j.config),"
    "             result = v.result,"
    "             error_subtype = NULL, error_message = NULL"
    "           FROM v WHERE j.id = v.id AND j.status = 'started' AND j.worker_id = $2"
    "           RETURNING j.id, j.status),"
    " closed AS (UPDATE conveyor.job_attempt a SET ended_at = now(), outcome = m.status,"
    "             exit_code = v.exit_code, image_digest = coalesce(v.image_digest, a.image_digest),"
    "             wall_ms = v.wall_ms, cpu_user_ms = v.cpu_user_ms, cpu_system_ms = v.cpu_system_ms,"
    "             max_rss_kb = v.max_rss_kb"
    "           FROM moved m JOIN v ON v.id = m.id"
    "           WHERE a.job_id = m.id AND a.attempt = v.attempt AND a.ended_at IS NULL)"
    " SELECT id, status FROM moved"};

template <typename T>
nlohmann::json or_null(const std::optional<T>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

nlohmann::json row_of(const FinishBatch::Item& item) {
  return {{"id", item.job_id},
          {"attempt", item.attempt},
          {"result", nlohmann::json::parse(item.result)},
          {"exit_code", or_null(item.cost.exit_code)},
          {"image_digest", or_null(item.cost.image_digest)},
          {"wall_ms", or_null(item.cost.wall_ms)},
          {"cpu_user_ms", or_null(item.cost.cpu_user_ms)},
          {"cpu_system_ms", or_null(item.cost.cpu_system_ms)},
          {"max_rss_kb", or_null(item.cost.max_rss_kb)}};
}

}  // namespace

FinishBatch::FinishBatch(db::Pool& pool, std::int64_t worker_id)
    : pool_(pool),
      worker_id_(worker_id),
      group_([this](const auto& batch, auto& written) { write_batch(batch, written); }) {}

void FinishBatch::write_batch(const std::vector<const Item*>& batch, std::vector<Written>& written) {
  nlohmann::json rows = nlohmann::json::array();
  for (const Item* item : batch) rows.push_back(row_of(*item));
  try {
    // Not retried here: the callers retry, each alone.
    const db::Result moved = pool_.exec_once(kFinishProcessedBatch, {rows.dump(), worker_id_});
    std::map<std::int64_t, std::string> ours;
    for (const auto row : moved) ours.emplace(row[0].as_int(), row[1].as_string());
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const auto it = ours.find(batch[i]->job_id);
      written[i] = {.committed = true,
                    .moved = it != ours.end(),
                    .in_doubt = false,
                    .status = it != ours.end() ? it->second : std::string()};
    }
  } catch (const std::exception& e) {
    const auto* db_error = dynamic_cast<const db::DbError*>(&e);
    const bool in_doubt = db_error != nullptr && db_error->sqlstate() == "08007";
    for (auto& w : written) w = {.committed = false, .moved = false, .in_doubt = in_doubt, .status = {}};
  }
}

}  // namespace conveyor::worker
