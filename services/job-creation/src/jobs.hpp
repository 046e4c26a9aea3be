#pragma once
// The job operations behind the REST API: submit, list, get (cancel and
// retry: model::cancel_job / model::retry_job in libs/core).
// Each runs in the caller's transaction and moves statuses only with
// conditional UPDATEs on a row it has locked (FOR UPDATE), so it cannot race
// a stage service; the status triggers write history and outbox rows.
// Thread-safe: stateless functions.
#include <cstdint>
#include <vector>

#include "conveyor/db/db.hpp"
#include "conveyor/model/job.hpp"
#include "conveyor/model/system_parameters.hpp"
#include "requests.hpp"

namespace conveyor::creation {

struct SubmitResult {
  model::Job job;
  bool created = false;  // false: an earlier submission with the same Idempotency-Key
};

// Validates the request against the job type, job_types_list and the
// existing jobs (UnprocessableError), then inserts the job or returns the one
// with the same (job_type, idempotency_key).
SubmitResult submit_job(db::Tx& tx, const model::SystemParameters& parameters,
                        const SubmitRequest& request);

struct JobPage {
  std::vector<model::Job> items;
  std::int64_t total = 0;
};
JobPage list_jobs(db::Tx& tx, const ListQuery& query);

// Throws Error(not_found) naming the job.
model::Job get_job(db::Tx& tx, model::JobId id);

// Cancel and retry live in libs/core (conveyor/model/job_control.hpp),
// shared with the reconciler in conveyor-monitor.

}  // namespace conveyor::creation
