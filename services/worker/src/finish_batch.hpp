#pragma once
// Group commit of a worker's successful outcomes. Threads (the worker's
// executor) that finish a job while another is writing queue up, and the
// next writer records all of them in one statement and one commit (its
// trigger fires once per batch), instead of one transaction per job. Only the common case, processed, goes this way;
// failures, cancels and requeues keep their own statements.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "conveyor/db/db.hpp"
#include "conveyor/db/group_commit.hpp"
#include "worker.hpp"

namespace conveyor::worker {

class FinishBatch {
 public:
  struct Item {
    std::int64_t job_id = 0;
    int attempt = 0;
    std::string result;  // the job's result JSON
    AttemptCost cost;
  };
  struct Written {
    bool committed = false;  // false: the batch failed; write the item alone
    bool moved = false;      // committed and the job was still ours: now `status`
    bool in_doubt = false;   // the failed commit may have gone through
    std::string status;      // processed, or done (conveyor.status_after_success)
  };

  FinishBatch(db::Pool& pool, std::int64_t worker_id);

  // Blocks until the item's batch committed or failed. Never retries: a
  // failed batch is retried by each caller alone, with its own back-off.
  Written write(const Item& item) { return group_.write(item); }

  std::uint64_t batches() const { return group_.batches(); }

 private:
  void write_batch(const std::vector<const Item*>& batch, std::vector<Written>& written);

  db::Pool& pool_;
  const std::int64_t worker_id_;
  db::GroupCommit<Item, Written> group_;
};

}  // namespace conveyor::worker
