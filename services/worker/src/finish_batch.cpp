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
    " moved AS (UPDATE conveyor.job j SET status = 'processed', result = v.result,"
    "             error_subtype = NULL, error_message = NULL"
    "           FROM v WHERE j.id = v.id AND j.status = 'started' AND j.worker_id = $2"
    "           RETURNING j.id, j.status),"
    " closed AS (UPDATE conveyor.job_attempt a SET ended_at = now(), outcome = m.status,"
    "             exit_code = v.exit_code, image_digest = coalesce(v.image_digest, a.image_digest),"
    "             wall_ms = v.wall_ms, cpu_user_ms = v.cpu_user_ms, cpu_system_ms = v.cpu_system_ms,"
    "             max_rss_kb = v.max_rss_kb"
    "           FROM moved m JOIN v ON v.id = m.id"
    "           WHERE a.job_id = m.id AND a.attempt = v.attempt AND a.ended_at IS NULL)"
    " SELECT id FROM moved"};

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

FinishBatch::Written FinishBatch::write(const Item& item) {
  Pending mine{&item, {}};
  std::unique_lock lock(mutex_);
  queue_.push_back(&mine);
  while (!mine.done) {
    if (writing_) {
      done_cv_.wait(lock);
      continue;
    }
    // Nobody writes: this thread writes everything queued, its own item
    // included (it may also write later batches of others meanwhile).
    writing_ = true;
    std::vector<Pending*> batch;
    batch.swap(queue_);
    lock.unlock();
    write_batch(batch);
    lock.lock();
    writing_ = false;
    ++batches_;
    done_cv_.notify_all();
  }
  return mine.written;
}

std::uint64_t FinishBatch::batches() const {
  std::lock_guard lock(mutex_);
  return batches_;
}

void FinishBatch::write_batch(const std::vector<Pending*>& batch) {
  nlohmann::json rows = nlohmann::json::array();
  for (const Pending* p : batch) rows.push_back(row_of(*p->item));
  try {
    // Not retried here: the callers retry, each alone.
    const db::Result moved = pool_.exec_once(kFinishProcessedBatch, {rows.dump(), worker_id_});
    std::map<std::int64_t, bool> ours;
    for (const auto row : moved) ours[row[0].as_int()] = true;
    std::lock_guard lock(mutex_);
    for (Pending* p : batch) {
      p->written = {.committed = true, .moved = ours.contains(p->item->job_id), .in_doubt = false};
      p->done = true;
    }
  } catch (const std::exception& e) {
    const auto* db_error = dynamic_cast<const db::DbError*>(&e);
    const bool in_doubt = db_error != nullptr && db_error->sqlstate() == "08007";
    std::lock_guard lock(mutex_);
    for (Pending* p : batch) {
      p->written = {.committed = false, .moved = false, .in_doubt = in_doubt};
      p->done = true;
    }
  }
}

}  // namespace conveyor::worker
