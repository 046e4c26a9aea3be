#include "conveyor/model/submission.hpp"

#include <algorithm>
#include <map>
#include <string>
#include <utility>

#include "conveyor/error/error.hpp"
#include "conveyor/model/job_type.hpp"

namespace conveyor::model {
namespace {

constexpr db::Statement kExistingJobs{"model_existing_jobs",
                                      "SELECT id FROM conveyor.job WHERE id = ANY($1::bigint[])"};

// Checked on its own so that a value PostgreSQL refuses (2026-13-45) is
// reported against not_before rather than as a failed insert.
constexpr db::Statement kCheckTimestamp{"model_check_timestamp", "SELECT $1::timestamptz IS NOT NULL"};

// Every submission, of one job or of a batch: one statement. Rows go in in
// the order of `n`, so their ids (the column's default) ascend with it.
// Only keyed jobs are in the unique index (job_type_idempotency_key_key,
// partial since migration 20261219000000): a job without a key never
// conflicts, and a keyed one that does is not returned.
constexpr db::Statement kInsertJobs{
    "model_insert_jobs",
    "INSERT INTO conveyor.job (job_type, params, priority, max_attempts, depends_on, not_before, "
    "idempotency_key) "
    "SELECT r.job_type, r.params, r.priority, r.max_attempts, coalesce(r.depends_on, '{}'), r.not_before, "
    "r.idempotency_key "
    "FROM jsonb_to_recordset($1::jsonb) AS r(n int, job_type text, params jsonb, priority int, max_attempts int, "
    "depends_on bigint[], not_before timestamptz, idempotency_key text) "
    "ORDER BY r.n "
    "ON CONFLICT (job_type, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING "
    // The jobs as inserted, BEFORE triggers included: no read back.
    "RETURNING " CONVEYOR_JOB_COLUMNS};

// Jobs at once (submit_job_at_once, SubmitGroup): one statement of its own
// for a group of requests with one actor. The actor is set first (a CTE the
// insert's rows are joined with, so it runs before the rows' defaults,
// submitted_by among them, and the status trigger read it). A request's job
// is inserted only while its job type's row is the version its caller read
// (`type_version`), the system parameters it was checked against are the
// row's version (`parameters_version`: a pause, or a change of
// job_types_list, is in effect the moment it commits, not when the event
// reaches the service) and every job it depends on exists; rows go in in the
// order of `n`, so their ids (the column's default) ascend with it.
//
// Rows of two kinds: one per request, in the order of `n` (`request_n`,
// whether its type's row is that version and whether the jobs it depends
// on exist; the job's columns NULL), then one per job inserted, by id
// (`request_n` NULL). insert_at_once tells whose job is whose (a FULL JOIN
// ON false: the two lists side by side, in one result).
constexpr db::Statement kInsertJobsAtOnce{
    "model_insert_jobs_at_once",
    "WITH actor AS (SELECT set_config('conveyor.actor', $2, true)), "
    "r AS (SELECT r.n, r.job_type, r.params, r.priority, r.max_attempts, coalesce(r.depends_on, '{}') AS depends_on, "
    "             r.not_before, r.idempotency_key, t.name IS NOT NULL AS type_current, "
    "             r.parameters_version IS NOT DISTINCT FROM "
    "               (SELECT p.xmin::text FROM conveyor.system_parameters p WHERE p.id) AS parameters_current, "
    // Every job of depends_on exists (submit_job's check_dependencies).
    "             NOT EXISTS (SELECT 1 FROM unnest(r.depends_on) AS d(id) "
    "                         WHERE NOT EXISTS (SELECT 1 FROM conveyor.job j WHERE j.id = d.id)) AS depends_on_exist "
    "      FROM jsonb_to_recordset($1::jsonb) AS r(n int, job_type text, type_version text, "
    "           parameters_version text, params jsonb, "
    "           priority int, max_attempts int, depends_on bigint[], not_before timestamptz, idempotency_key text) "
    "      LEFT JOIN conveyor.job_type t ON t.name = r.job_type AND t.xmin::text = r.type_version), "
    "inserted AS ("
    " INSERT INTO conveyor.job (job_type, params, priority, max_attempts, depends_on, not_before, idempotency_key) "
    " SELECT r.job_type, r.params, r.priority, r.max_attempts, r.depends_on, r.not_before, r.idempotency_key "
    " FROM r CROSS JOIN actor WHERE r.type_current AND r.parameters_current AND r.depends_on_exist ORDER BY r.n "
    " ON CONFLICT (job_type, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING "
    " RETURNING " CONVEYOR_JOB_COLUMNS
    ") "
    "SELECT r.n AS request_n, r.type_current, r.parameters_current, r.depends_on_exist, i.* "
    "FROM r FULL JOIN inserted i ON false ORDER BY r.n, i.id"};

constexpr db::Statement kJobByIdempotencyKey{
    "model_job_by_idempotency_key", "SELECT id FROM conveyor.job WHERE job_type = $1 AND idempotency_key = $2"};

constexpr db::Statement kCountJobs{
    "model_count_jobs",
    "SELECT count(*) FROM conveyor.job "
    "WHERE ($1::text[] IS NULL OR status = ANY($1::text[])) AND ($2::text IS NULL OR job_type = $2::text)"};

constexpr db::Statement kListJobIds{
    "model_list_job_ids",
    "SELECT id FROM conveyor.job "
    "WHERE ($1::text[] IS NULL OR status = ANY($1::text[])) AND ($2::text IS NULL OR job_type = $2::text) "
    "ORDER BY id DESC LIMIT $3 OFFSET $4"};

std::string job_name(JobId id) { return "job " + std::to_string(id.value()); }

Job must_load(db::Tx& tx, JobId id) {
  auto job = load_job(tx, id);
  if (!job) throw Error(errc::not_found, job_name(id) + " does not exist");
  return std::move(*job);
}

}  // namespace

namespace {

// That a request may name `type` (nullptr: no such type): it exists, is
// enabled and is in job_types_list.
void check_type(const JobType* type, const SystemParameters& parameters, const std::string& name) {
  if (!type || !type->enabled) {
    throw UnprocessableError("job_type", "job_type: unknown job type '" + name + "'" + (type ? " (disabled)" : ""));
  }
  if (!parameters.handles(name)) {
    throw UnprocessableError("job_type",
                             "job_type: job type '" + name + "' is not in system_parameters.job_types_list");
  }
}

// That the request's params match its type's schema.
void check_params(const JobType& type, const SubmitRequest& request) {
  const auto problems = validate_params(type.params_schema, request.params);
  if (problems.empty()) return;
  std::string detail = "params do not match the schema of job type '" + request.job_type + "': ";
  for (std::size_t i = 0; i < problems.size(); ++i) detail += (i ? "; " : "") + problems[i];
  throw UnprocessableError("params", detail, problems);
}

// The row of the job `request` makes, number `n` of its statement; its
// depends_on is added when the ids of the jobs of `after` are known.
nlohmann::json job_row(std::size_t n, const SubmitRequest& request, const JobType& type) {
  return {{"n", n},
          {"job_type", request.job_type},
          {"params", request.params},
          {"priority", request.priority.value_or(type.priority)},
          {"max_attempts", std::max(1, type.max_attempts)},
          {"not_before", request.not_before ? nlohmann::json(*request.not_before) : nlohmann::json()},
          {"idempotency_key", request.idempotency_key ? nlohmann::json(*request.idempotency_key) : nlohmann::json()}};
}

// The job type a request names, checked (check_type, check_params). `types`
// keeps the types a batch has looked up.
const JobType& checked_type(db::Tx& tx, const SystemParameters& parameters, const SubmitRequest& request,
                            std::map<std::string, JobType>& types) {
  auto known = types.find(request.job_type);
  if (known == types.end()) {
    const auto type = load_job_type(tx, request.job_type);
    check_type(type ? &*type : nullptr, parameters, request.job_type);
    known = types.emplace(request.job_type, *type).first;
  }
  check_params(known->second, request);
  return known->second;
}

void check_not_before(db::Tx& tx, const SubmitRequest& request) {
  if (!request.not_before) return;
  try {
    tx.exec(kCheckTimestamp, {*request.not_before});
  } catch (const db::DbError& e) {
    if (e.code() != errc::bad_input) throw;
    throw FieldError("not_before", "not_before: '" + *request.not_before + "' is not a valid date-time: " + e.what());
  }
}

// The error `e` of the request at `index` of a batch, naming the item.
[[noreturn]] void rethrow_for_item(std::size_t index, const FieldError& e) {
  rethrow_within("jobs[" + std::to_string(index) + "].", e);
}

// Every depends_on of the requests names an existing job: one query for all.
void check_dependencies(db::Tx& tx, const std::vector<SubmitRequest>& requests, bool batch) {
  std::vector<std::int64_t> ids;
  for (const auto& r : requests) ids.insert(ids.end(), r.depends_on.begin(), r.depends_on.end());
  if (ids.empty()) return;
  std::vector<std::int64_t> found;
  for (const db::Row r : tx.exec(kExistingJobs, {ids})) found.push_back(r[0].as_int());
  for (std::size_t i = 0; i < requests.size(); ++i) {
    std::string missing;
    for (const auto id : requests[i].depends_on) {
      if (std::find(found.begin(), found.end(), id) == found.end()) {
        missing += (missing.empty() ? "" : ", ") + std::to_string(id);
      }
    }
    if (missing.empty()) continue;
    const UnprocessableError e("depends_on", "depends_on: no such job(s): " + missing);
    if (batch) rethrow_for_item(i, e);
    throw e;
  }
}

// Two requests of a batch with the same job type and idempotency key would
// be one job: refused, naming both.
void check_distinct_keys(const std::vector<SubmitRequest>& requests) {
  std::map<std::pair<std::string, std::string>, std::size_t> seen;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    if (!requests[i].idempotency_key) continue;
    const auto [it, fresh] = seen.try_emplace({requests[i].job_type, *requests[i].idempotency_key}, i);
    if (fresh) continue;
    rethrow_for_item(
        i, UnprocessableError("idempotency_key", "idempotency_key: the same as jobs[" + std::to_string(it->second) +
                                                     "]'s (job type '" + requests[i].job_type + "')"));
  }
}

// The job an earlier submission created with this request's key.
Job job_with_key(db::Tx& tx, const SubmitRequest& request) {
  // ON CONFLICT waited for the other insert to commit, and this statement's
  // fresh snapshot sees its row.
  const auto existing = tx.exec(kJobByIdempotencyKey, {request.job_type, request.idempotency_key});
  if (existing.empty()) {
    throw Error(errc::conflict, "a job with the same Idempotency-Key was being created; try again");
  }
  return must_load(tx, JobId(existing[0][0].as_int()));
}

// Runs `check(index, request)` on each request; in a batch, a problem
// names its item.
template <typename Check>
void check_each(const std::vector<SubmitRequest>& requests, bool batch, Check check) {
  for (std::size_t i = 0; i < requests.size(); ++i) {
    try {
      check(i, requests[i]);
    } catch (const FieldError& e) {
      if (batch) rethrow_for_item(i, e);
      throw;
    }
  }
}

// `after` names earlier items of a batch only.
void check_after(std::size_t index, const SubmitRequest& request, bool batch) {
  if (!batch && !request.after.empty()) throw FieldError("after", "after: only for jobs of a batch");
  for (std::size_t j = 0; j < request.after.size(); ++j) {
    if (request.after[j] >= index) {
      throw FieldError("after[" + std::to_string(j) + "]",
                       "after[" + std::to_string(j) + "]: " + std::to_string(request.after[j]) +
                           " is not an earlier job of this batch (" +
                           (index == 0 ? std::string("the first has none") : "0 to " + std::to_string(index - 1)) +
                           ")");
    }
  }
}

// Inserts `rows` (the requests at `items`, in their order) in one statement
// and puts each one's result at its index of `results`. The rows go in in
// their order, so the ids ascend with it; a keyed request may be missing
// (its key exists: that job is its result).
void insert_rows(db::Tx& tx, const std::vector<SubmitRequest>& requests, const std::vector<std::size_t>& items,
                 const nlohmann::json& rows, std::vector<std::optional<SubmitResult>>& results) {
  std::vector<Job> inserted;
  for (const db::Row r : tx.exec(kInsertJobs, {rows.dump()})) inserted.push_back(job_from_row(r));
  std::sort(inserted.begin(), inserted.end(), [](const Job& a, const Job& b) { return a.id < b.id; });
  std::size_t next = 0;
  for (const auto i : items) {
    const auto& request = requests[i];
    const bool same = next < inserted.size() && inserted[next].job_type == request.job_type &&
                      inserted[next].idempotency_key == request.idempotency_key;
    if (same) {
      results[i] = SubmitResult{std::move(inserted[next++]), true};
    } else if (request.idempotency_key) {
      results[i] = SubmitResult{job_with_key(tx, request), false};
    } else {
      throw Error(errc::internal,
                  "a submitted job was not inserted in its request's order (" + std::to_string(i) + ")");
    }
  }
}

// Validates every request and inserts them. The checks run in phases (in a
// batch: keys, then each item's type, params and after, then every
// depends_on, then each not_before), so the problem answered is the first of
// the first phase that finds one; for one job, the order of its fields'
// checks is that of the API's documentation. Items go in by level of
// `after`, one statement a level, so an item's ids of `after` are known.
std::vector<SubmitResult> submit_all(db::Tx& tx, const SystemParameters& parameters,
                                     const std::vector<SubmitRequest>& requests, bool batch) {
  if (batch) check_distinct_keys(requests);
  std::map<std::string, JobType> types;
  std::vector<nlohmann::json> rows(requests.size());
  std::vector<std::size_t> level(requests.size(), 0);
  check_each(requests, batch, [&](std::size_t i, const SubmitRequest& request) {
    const JobType& type = checked_type(tx, parameters, request, types);
    check_after(i, request, batch);
    for (const auto k : request.after) level[i] = std::max(level[i], level[k] + 1);
    rows[i] = job_row(i, request, type);
  });
  check_dependencies(tx, requests, batch);
  check_each(requests, batch, [&](std::size_t, const SubmitRequest& request) { check_not_before(tx, request); });

  std::vector<std::optional<SubmitResult>> results(requests.size());
  const std::size_t levels = requests.empty() ? 0 : *std::max_element(level.begin(), level.end()) + 1;
  for (std::size_t l = 0; l < levels; ++l) {
    std::vector<std::size_t> items;
    nlohmann::json batch_rows = nlohmann::json::array();
    for (std::size_t i = 0; i < requests.size(); ++i) {
      if (level[i] != l) continue;
      std::vector<std::int64_t> depends_on = requests[i].depends_on;
      for (const auto k : requests[i].after) {
        const auto id = results[k]->job.id.value();
        if (std::find(depends_on.begin(), depends_on.end(), id) == depends_on.end()) depends_on.push_back(id);
      }
      rows[i]["depends_on"] = depends_on;
      items.push_back(i);
      batch_rows.push_back(std::move(rows[i]));
    }
    insert_rows(tx, requests, items, batch_rows, results);
  }
  std::vector<SubmitResult> out;
  out.reserve(results.size());
  for (auto& r : results) out.push_back(std::move(*r));
  return out;
}

}  // namespace

SubmitResult submit_job(db::Tx& tx, const SystemParameters& parameters, const SubmitRequest& request) {
  return std::move(submit_all(tx, parameters, {request}, false).front());
}

JobTypeCache::Entry JobTypeCache::find(const std::string& name) const {
  const std::lock_guard lock(mutex_);
  const auto it = types_.find(name);
  return it == types_.end() ? nullptr : it->second;
}

void JobTypeCache::keep(const std::string& name, Entry type) {
  const std::lock_guard lock(mutex_);
  types_.insert_or_assign(name, std::move(type));
}

void JobTypeCache::forget(const std::string& name) {
  const std::lock_guard lock(mutex_);
  types_.erase(name);
}

std::optional<PreparedSubmit> prepare_at_once(db::Pool& pool, const SystemParameters& parameters,
                                              const SubmitRequest& request, JobTypeCache& cache) {
  if (!request.after.empty()) return std::nullopt;  // only in a batch
  auto type = cache.find(request.job_type);
  if (!type) {
    std::optional<VersionedJobType> read;
    try {
      read = read_versioned_job_type(pool, request.job_type);
    } catch (const Error& e) {
      if (e.code() != errc::bad_input) throw;
      return std::nullopt;  // a row edited into something invalid: submit_job reports it
    }
    if (!read) return std::nullopt;
    type = std::make_shared<const VersionedJobType>(std::move(*read));
    cache.keep(request.job_type, type);
  }
  try {
    check_type(&type->type, parameters, request.job_type);
    check_params(type->type, request);
  } catch (const UnprocessableError&) {
    // Perhaps only by the type as it was: submit_job reads it again.
    cache.forget(request.job_type);
    return std::nullopt;
  }
  PreparedSubmit prepared;
  prepared.row = job_row(0, request, type->type);
  prepared.row["depends_on"] = request.depends_on;
  prepared.row["type_version"] = type->version;
  prepared.row["parameters_version"] = parameters.version;
  prepared.keyed = request.idempotency_key.has_value();
  return prepared;
}

namespace {

// Which job of kInsertJobsAtOnce's answer is whose request's. A keyed
// request's by its key: the first request of the group with a key inserts
// it, the unique index refuses the others, which submit_job then answers.
// Jobs without a key never conflict: every such request that passed the
// checks has one, and their ids ascend with the requests' order.
std::vector<std::optional<SubmitResult>> whose_jobs(const db::Result& answer,
                                                    const std::vector<const PreparedSubmit*>& group,
                                                    JobTypeCache& cache) {
  std::vector<std::optional<SubmitResult>> results(group.size());
  std::vector<bool> passed(group.size(), false);
  std::map<std::pair<std::string, std::string>, Job> keyed;
  std::vector<Job> unkeyed;  // by id
  for (const auto row : answer) {
    if (row["request_n"].is_null()) {
      Job job = job_from_row(row);
      if (job.idempotency_key) {
        keyed.emplace(std::make_pair(job.job_type, *job.idempotency_key), std::move(job));
      } else {
        unkeyed.push_back(std::move(job));
      }
      continue;
    }
    const auto i = static_cast<std::size_t>(row["request_n"].as_int());
    // Parameters not current: submit_job, in a transaction that reads them.
    passed[i] =
        row["type_current"].as_bool() && row["parameters_current"].as_bool() && row["depends_on_exist"].as_bool();
    // The type's row changed since it was read: read again next time.
    if (!row["type_current"].as_bool()) cache.forget(group[i]->row.at("job_type").get<std::string>());
  }
  std::size_t next_unkeyed = 0;
  for (std::size_t i = 0; i < group.size(); ++i) {
    if (!passed[i]) continue;
    const nlohmann::json& key = group[i]->row.at("idempotency_key");
    if (key.is_string()) {
      const auto it = keyed.find({group[i]->row.at("job_type").get<std::string>(), key.get<std::string>()});
      if (it == keyed.end()) continue;  // the key exists: submit_job answers
      results[i] = SubmitResult{std::move(it->second), true};
      keyed.erase(it);
    } else {
      if (next_unkeyed == unkeyed.size()) {
        throw Error(errc::internal, "submissions at once: fewer jobs inserted than requests without a key");
      }
      results[i] = SubmitResult{std::move(unkeyed[next_unkeyed++]), true};
    }
  }
  return results;
}

}  // namespace

std::vector<std::optional<SubmitResult>> insert_at_once(db::Pool& pool, const std::vector<const PreparedSubmit*>& group,
                                                        const std::string& actor, JobTypeCache& cache) {
  std::vector<std::optional<SubmitResult>> results(group.size());
  if (group.empty()) return results;
  nlohmann::json rows = nlohmann::json::array();
  bool keyed = true;
  for (std::size_t i = 0; i < group.size(); ++i) {
    nlohmann::json row = group[i]->row;
    row["n"] = i;
    rows.push_back(std::move(row));
    keyed = keyed && group[i]->keyed;
  }
  // Without an actor of its own, the request is the pool's doing, as in
  // transact.
  const std::vector<db::Param> params{rows.dump(), actor.empty() ? pool.options().actor : actor};
  db::Result answer;
  try {
    // Retried only when every job has a key: a repeat finds the keys.
    answer = keyed ? pool.exec_idempotent(kInsertJobsAtOnce, params) : pool.exec_once(kInsertJobsAtOnce, params);
  } catch (const db::DbError& e) {
    // Input PostgreSQL refuses (a not_before that is no date, a value out
    // of a column's range): nothing was committed, and submit_job names it.
    if (e.code() != errc::bad_input) throw;
    return results;
  }
  return whose_jobs(answer, group, cache);
}

std::optional<SubmitResult> submit_job_at_once(db::Pool& pool, const SystemParameters& parameters,
                                               const SubmitRequest& request, const std::string& actor,
                                               JobTypeCache& cache) {
  const auto prepared = prepare_at_once(pool, parameters, request, cache);
  if (!prepared) return std::nullopt;
  return std::move(insert_at_once(pool, {&*prepared}, actor, cache).front());
}

// As many groups at once as the pool has connections: a request writes at
// once while one is free, as it did alone, and waits for the next group only
// when every connection is writing. One group at a time was worse for few
// clients (README stop 38): the inserts, one after the other, came as a
// steady stream of small commits, and every stage after them ran more
// passes, each smaller.
SubmitGroup::SubmitGroup(db::Pool& pool)
    : pool_(pool),
      group_([this](const auto& batch, auto& outcomes) { write(batch, outcomes); },
             static_cast<int>(pool.options().size)) {}

std::optional<SubmitResult> SubmitGroup::submit(const SystemParameters& parameters, const SubmitRequest& request,
                                                const std::string& actor) {
  const auto prepared = prepare_at_once(pool_, parameters, request, cache_);
  if (!prepared) return std::nullopt;
  Outcome outcome = group_.write(Item{&*prepared, &actor});
  if (outcome.error) std::rethrow_exception(outcome.error);
  return std::move(outcome.result);
}

// One statement per actor among the batch's requests (the status trigger
// records one actor per statement), and the keyed requests apart from the
// others: theirs is retried on a lost connection (insert_at_once), and they
// alone may wait on a key another transaction holds. A keyed group goes in
// in the order of its keys. A statement that fails
// fails its own requests only: the others' jobs may be committed.
void SubmitGroup::write(const std::vector<const Item*>& batch, std::vector<Outcome>& outcomes) {
  std::map<std::pair<std::string, bool>, std::vector<std::size_t>> by_actor;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    by_actor[{*batch[i]->actor, batch[i]->prepared->keyed}].push_back(i);
  }
  for (auto& [actor_keyed, members] : by_actor) {
    const std::string& actor = actor_keyed.first;
    if (actor_keyed.second) {
      // Keys in one order in every group: two groups that take the same
      // keys wait on each other, never deadlock.
      const auto key_of = [&](std::size_t i) {
        const nlohmann::json& row = batch[i]->prepared->row;
        return std::make_pair(row.at("job_type").get<std::string>(), row.at("idempotency_key").get<std::string>());
      };
      std::stable_sort(members.begin(), members.end(),
                       [&](std::size_t a, std::size_t b) { return key_of(a) < key_of(b); });
    }
    std::vector<const PreparedSubmit*> group;
    group.reserve(members.size());
    for (const auto i : members) group.push_back(batch[i]->prepared);
    try {
      auto results = insert_at_once(pool_, group, actor, cache_);
      for (std::size_t k = 0; k < members.size(); ++k) outcomes[members[k]].result = std::move(results[k]);
    } catch (...) {
      for (const auto i : members) outcomes[i].error = std::current_exception();
    }
  }
}

std::vector<SubmitResult> submit_jobs(db::Tx& tx, const SystemParameters& parameters,
                                      const std::vector<SubmitRequest>& requests) {
  if (requests.empty()) return {};
  return submit_all(tx, parameters, requests, true);
}

JobPage list_jobs(db::Tx& tx, const JobQuery& query) {
  db::Param status = nullptr;
  if (!query.statuses.empty()) {
    std::vector<std::string> names;
    for (const JobStatus s : query.statuses) names.emplace_back(to_string(s));
    status = names;
  }
  JobPage page;
  page.total = tx.exec(kCountJobs, {status, query.job_type})[0][0].as_int();
  std::vector<std::int64_t> ids;
  for (const db::Row r : tx.exec(kListJobIds, {status, query.job_type, query.size, (query.page - 1) * query.size})) {
    ids.push_back(r[0].as_int());
  }
  page.items = load_jobs(tx, ids);
  return page;
}

Job get_job(db::Tx& tx, JobId id) { return must_load(tx, id); }

SubmitRequest scheduled_request(const JobType& type, TimePoint slot) {
  SubmitRequest r;
  r.job_type = type.name;
  r.idempotency_key = "schedule:" + format_utc(slot);
  const nlohmann::json props = type.params_schema.value("properties", nlohmann::json::object());
  if (props.is_object() && props.contains("scheduled_for")) r.params["scheduled_for"] = format_utc(slot);
  return r;
}

SubmitRequest collapsed_request(const JobType& type, const SlotRange& range) {
  SubmitRequest r;
  r.job_type = type.name;
  r.idempotency_key = "backfill:" + format_utc(range.first) + ".." + format_utc(range.last);
  const nlohmann::json props = type.params_schema.value("properties", nlohmann::json::object());
  if (!props.is_object()) return r;
  if (props.contains("scheduled_from")) r.params["scheduled_from"] = format_utc(range.first);
  if (props.contains("scheduled_to")) r.params["scheduled_to"] = format_utc(range.last);
  if (props.contains("slot_count")) r.params["slot_count"] = range.count;
  if (props.contains("scheduled_for")) r.params["scheduled_for"] = format_utc(range.last);
  return r;
}

SubmitRequest triggered_request(const Job& upstream, const nlohmann::json& trigger, std::size_t index) {
  SubmitRequest r;
  r.job_type = trigger.at("job_type").get<std::string>();
  r.depends_on = {upstream.id.value()};
  r.idempotency_key = "trigger:" + std::to_string(upstream.id.value()) + ":" + std::to_string(index);
  const nlohmann::json params = trigger.value("params", nlohmann::json::object());
  for (const auto& [key, value] : params.items()) {
    const bool placeholder = value.is_string() && value.get<std::string>().size() > 2 &&
                             value.get<std::string>().front() == '{' && value.get<std::string>().back() == '}';
    if (!placeholder) {
      r.params[key] = value;
      continue;
    }
    const std::string name = value.get<std::string>().substr(1, value.get<std::string>().size() - 2);
    if (name == "job_id") {
      r.params[key] = upstream.id.value();
    } else if (upstream.params.contains(name)) {
      r.params[key] = upstream.params[name];
    } else {
      throw FieldError("triggers[" + std::to_string(index) + "].params." + key,
                       "trigger " + std::to_string(index) + " of job type '" + upstream.job_type + "': params." + key +
                           " takes {" + name + "}, but job " + std::to_string(upstream.id.value()) + " has no param '" +
                           name + "'");
    }
  }
  return r;
}

}  // namespace conveyor::model
