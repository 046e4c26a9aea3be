#pragma once
// Creating and finding jobs: submit, list, get. One copy, used by the REST
// API (conveyor-creation) and the operator CLI (`conveyor job submit|ls|
// inspect`, which works while the services are down). Cancel and retry are
// in job_control.hpp.
//
// Each runs in the caller's transaction (submit_job_at_once: in a statement
// of its own); the status triggers write history and outbox rows.
// Thread-safe: stateless functions, and JobTypeCache locks.
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "conveyor/db/db.hpp"
#include "conveyor/db/group_commit.hpp"
#include "conveyor/model/ids.hpp"
#include "conveyor/model/job.hpp"
#include "conveyor/model/job_type.hpp"
#include "conveyor/model/schedule.hpp"
#include "conveyor/model/status.hpp"
#include "conveyor/model/system_parameters.hpp"

namespace conveyor::model {

inline constexpr std::size_t kMaxIdempotencyKey = 200;

struct SubmitRequest {
  std::string job_type;
  nlohmann::json params = nlohmann::json::object();
  std::optional<int> priority;  // nullopt: the type's priority
  std::vector<std::int64_t> depends_on;
  std::optional<std::string> not_before;  // RFC 3339
  std::optional<std::string> idempotency_key;
  // In a batch: the earlier items of the same batch this job depends on, by
  // index; their ids join depends_on once they are inserted.
  std::vector<std::size_t> after;
};

struct SubmitResult {
  Job job;
  bool created = false;  // false: an earlier submission with the same idempotency key
};

// Validates the request against the job type, job_types_list and the
// existing jobs (UnprocessableError naming the field), then inserts the job
// or returns the one with the same (job_type, idempotency_key). Does not
// look at accepting_new_jobs: the caller decides what a pause means for it.
SubmitResult submit_job(db::Tx& tx, const SystemParameters& parameters, const SubmitRequest& request);

// The job types submit_job_at_once has read, each with its row's version;
// shared, so a submission copies none. Thread-safe.
class JobTypeCache {
 public:
  using Entry = std::shared_ptr<const VersionedJobType>;
  Entry find(const std::string& name) const;  // nullptr: not kept
  void keep(const std::string& name, Entry type);
  void forget(const std::string& name);

 private:
  mutable std::mutex mutex_;
  std::map<std::string, Entry> types_;
};

// submit_job in one round trip, for the REST API's POST /v1/jobs: one
// statement, in an implicit transaction of its own, sets `actor` (the
// request's, as TxOptions::actor would), checks that the job type's row is
// still the version in `cache` and inserts the job. The type is read (and
// kept in `cache`) only when `cache` does not have it.
//
// nullopt when it cannot answer alone, and the caller runs submit_job in a
// transaction, which gives the answer and its error: the type is unknown,
// disabled, not in job_types_list, changed since it was read (and then
// forgotten) or refuses the params, a job of depends_on does not exist,
// PostgreSQL refuses the input (a not_before that is no date), the
// idempotency key exists, or the request is a batch's (`after`). A keyed request is
// retried like Pool::exec_idempotent (a repeat finds its key and returns
// nullopt); an unkeyed one like Pool::exec_once: a connection lost during
// the statement throws SQLSTATE 08007 (outcome unknown), as a lost COMMIT
// does in submit_job's transaction.
std::optional<SubmitResult> submit_job_at_once(db::Pool& pool, const SystemParameters& parameters,
                                               const SubmitRequest& request, const std::string& actor,
                                               JobTypeCache& cache);

// A request submit_job_at_once can insert: its job's row, checked against
// its type as `cache` holds it (with the version of the type's row).
struct PreparedSubmit {
  nlohmann::json row;
  bool keyed = false;  // it has an idempotency key
};
// The checks of submit_job_at_once, before anything is written; nullopt
// when it cannot answer alone.
std::optional<PreparedSubmit> prepare_at_once(db::Pool& pool, const SystemParameters& parameters,
                                              const SubmitRequest& request, JobTypeCache& cache);
// The insert of submit_job_at_once for a group of prepared requests of one
// actor: one statement, one commit, one result per request in its order,
// each as submit_job_at_once answers it. Retried like Pool::exec_idempotent
// only when every request has a key.
std::vector<std::optional<SubmitResult>> insert_at_once(db::Pool& pool, const std::vector<const PreparedSubmit*>& group,
                                                        const std::string& actor, JobTypeCache& cache);

// submit_job_at_once for the POST /v1/jobs of many threads at once (group
// commit, db::GroupCommit): while as many groups are being written as the
// pool has connections, a request waits, then goes in the next group: one
// statement per actor in it, keyed requests apart from the others. Alone,
// it is written at once. Each answer is submit_job_at_once's for its
// request. Thread-safe.
class SubmitGroup {
 public:
  explicit SubmitGroup(db::Pool& pool);
  std::optional<SubmitResult> submit(const SystemParameters& parameters, const SubmitRequest& request,
                                     const std::string& actor);
  std::uint64_t groups() const { return group_.batches(); }

 private:
  struct Item {
    const PreparedSubmit* prepared;
    const std::string* actor;
  };
  struct Outcome {
    std::optional<SubmitResult> result;
    std::exception_ptr error;  // its statement's
  };
  void write(const std::vector<const Item*>& batch, std::vector<Outcome>& outcomes);

  db::Pool& pool_;
  JobTypeCache cache_;
  db::GroupCommit<Item, Outcome> group_;
};

// A batch (POST /v1/jobs/batch): every request is checked as submit_job
// checks one, and a problem names its item ("jobs[3].params: ..."); two
// requests with the same job type and idempotency key are refused. Then all
// are inserted in the caller's transaction, all or none: one statement, or
// one per level of `after` (a chain of three: three). The results are in the
// requests' order.
inline constexpr std::size_t kMaxBatchJobs = 1000;
std::vector<SubmitResult> submit_jobs(db::Tx& tx, const SystemParameters& parameters,
                                      const std::vector<SubmitRequest>& requests);

// Filters of a job listing; newest first.
struct JobQuery {
  std::vector<JobStatus> statuses;  // any of them; empty: every status
  std::optional<std::string> job_type;
  std::int64_t page = 1;  // from 1
  std::int64_t size = 50;
};
inline constexpr std::int64_t kDefaultPageSize = 50;
inline constexpr std::int64_t kMaxPageSize = 500;

struct JobPage {
  std::vector<Job> items;
  std::int64_t total = 0;  // matching jobs, all pages
};
JobPage list_jobs(db::Tx& tx, const JobQuery& query);

// Throws Error(not_found) naming the job.
Job get_job(db::Tx& tx, JobId id);

// The run of a scheduled job type for `slot`: idempotency key
// "schedule:<slot as 2026-12-01T10:00:00Z>", so the scheduler (any replica,
// any restart) and `conveyor schedule backfill` never create a slot twice;
// params {} plus "scheduled_for": <slot> when the type's params_schema
// declares that property (a string).
SubmitRequest scheduled_request(const JobType& type, TimePoint slot);

// One run for the slots [range.first, range.last] of a scheduled job type
// (catch-up policy or backfill `collapse`): idempotency key
// "backfill:<first>..<last>", so the same range is never collapsed twice;
// params {} plus, each when the type's params_schema declares it,
// "scheduled_from": <first>, "scheduled_to": <last>, "slot_count": <count>
// and "scheduled_for": <last> (a type that expects one slot gets the newest).
SubmitRequest collapsed_request(const JobType& type, const SlotRange& range);

// The downstream job of trigger number `index` of a done upstream job:
// type trigger["job_type"], depends_on [upstream] (so its outputs are the
// inputs), idempotency key "trigger:<upstream id>:<index>", params
// trigger["params"] where a string value "{name}" is the upstream's param
// `name` (any JSON value; missing: Error(bad_input) naming it) and "{job_id}"
// the upstream's id.
SubmitRequest triggered_request(const Job& upstream, const nlohmann::json& trigger, std::size_t index);

}  // namespace conveyor::model
