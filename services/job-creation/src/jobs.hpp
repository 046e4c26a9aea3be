#pragma once
// The job operations behind the REST API: submit, list, get, cancel, retry.
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

struct CancelResult {
  model::Job job;
  // false when the job is running: canceled_at is set and its worker stops it.
  bool completed = true;
};
// Sets canceled_at and moves a job that is not running to canceled.
// A done job: Error(conflict). An already canceled job: returned unchanged.
CancelResult cancel_job(db::Tx& tx, model::JobId id);

// Restarts a failed, internal_error, external_error or canceled job (else
// Error(conflict) naming the status). Error statuses go through
// error_checked to processed when the current run reached processed (it
// failed in publication), else to initialized with attempt 0.
model::Job retry_job(db::Tx& tx, model::JobId id);

}  // namespace conveyor::creation
