#include "creation.hpp"

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "conveyor/auth/auth.hpp"
#include "conveyor/http/problem.hpp"
#include "conveyor/logging/logging.hpp"
#include "conveyor/model/job.hpp"
#include "conveyor/model/job_control.hpp"
#include "conveyor/model/job_type.hpp"
#include "conveyor/model/submission.hpp"
#include "conveyor/model/system_parameters.hpp"
#include "requests.hpp"
#include "scheduler.hpp"

namespace conveyor::creation {
namespace {

using http::Request;
using http::Response;

// 422 for requests that are well-formed but name things that do not fit
// (problem_from knows only errc codes, none of which means 422).
Response unprocessable(const UnprocessableError& e) {
  Response r = http::problem(errc::bad_input, 422, http::reason_phrase(422), e.what(), e.field());
  if (!e.problems().empty()) {
    auto body = nlohmann::ordered_json::parse(r.body);
    body["errors"] = e.problems();
    r.body = body.dump();
  }
  return r;
}

// Wraps a handler so that UnprocessableError becomes 422; everything else
// is left to the server's problem_from().
http::Handler with_422(http::Handler h) {
  return [h = std::move(h)](const Request& req) -> Response {
    try {
      return h(req);
    } catch (const UnprocessableError& e) {
      return unprocessable(e);
    }
  };
}

// Reads that return several queries' results see one snapshot.
db::TxOptions snapshot() {
  db::TxOptions o;
  o.isolation = db::Isolation::repeatable_read;
  return o;
}

nlohmann::json job_with_history(db::Tx& tx, const model::Job& job) {
  nlohmann::json out = job.to_json();
  out["history"] = nlohmann::json::array();
  for (const auto& c : model::load_history(tx, job.id)) out["history"].push_back(c.to_json());
  return out;
}

// What a request changes is recorded as its token's doing (api:<name>).
db::TxOptions as_requester(const Request& req) {
  db::TxOptions o;
  o.actor = auth::request_actor(req);
  return o;
}

constexpr db::Statement kSubmittedBy{"creation_submitted_by", "SELECT submitted_by FROM conveyor.job WHERE id = $1"};

// A submitter may cancel and retry only the jobs it submitted; readers
// never get here (the guard), operators may touch any job. An unknown job
// is left to the model (404).
void require_owner(db::Tx& tx, const Request& req, model::JobId id) {
  const auto who = auth::identity_of(req);
  if (!who || who->role != auth::Role::submitter) return;
  const auto rows = tx.exec(kSubmittedBy, {id.value()});
  if (rows.empty()) return;
  const std::string owner = rows[0]["submitted_by"].as_string();
  if (owner != auth::actor_of(who->name)) {
    throw Error(errc::forbidden, "token '" + who->name +
                                     "' (submitter) may cancel or retry only the jobs it "
                                     "submitted; job " +
                                     std::to_string(id.value()) + " was submitted by " +
                                     (owner.empty() ? std::string("someone else") : owner));
  }
}

// One bucket per token: `CONVEYOR_SUBMIT_RATE` submissions a second, in
// bursts of up to `CONVEYOR_SUBMIT_BURST` (0: no limit).
auth::RateLimiter& submit_limiter(runtime::Context& ctx) {
  static auth::RateLimiter limiter(static_cast<double>(ctx.config().get_int("CONVEYOR_SUBMIT_RATE")),
                                   static_cast<double>(ctx.config().get_int("CONVEYOR_SUBMIT_BURST")));
  return limiter;
}

// The token's rate: `jobs` units of it, or a 429 to return.
std::optional<Response> rate_limited(runtime::Context& ctx, const Request& req, std::size_t jobs) {
  auto& limiter = submit_limiter(ctx);
  if (limiter.rate() > 0 && static_cast<double>(jobs) > limiter.burst()) {
    throw FieldError("jobs", "jobs: " + std::to_string(jobs) +
                                 " jobs in one request, more than a token may submit at once (CONVEYOR_SUBMIT_BURST=" +
                                 std::to_string(ctx.config().get_int("CONVEYOR_SUBMIT_BURST")) + ")");
  }
  if (const std::int64_t wait = limiter.take(req.principal, static_cast<double>(jobs)); wait > 0) {
    ctx.metrics().counter("conveyor_http_rate_limited_total", "Submissions refused by the per-token rate limit.").inc();
    Response r = http::problem(429, http::reason_phrase(429),
                               "token '" + req.principal + "' submits faster than " +
                                   std::to_string(ctx.config().get_int("CONVEYOR_SUBMIT_RATE")) +
                                   " jobs a second; try again in " + std::to_string(wait) + " s");
    r.headers["Retry-After"] = std::to_string(wait);
    return r;
  }
  return std::nullopt;
}

// accepting_new_jobs: 503 when off, naming the operator's reason.
void require_accepting(const model::SystemParameters& parameters) {
  if (!parameters.accepting_new_jobs) {
    const std::string reason =
        parameters.not_accepting_reason.empty() ? "no reason given" : parameters.not_accepting_reason;
    throw Error(errc::unavailable, "not accepting new jobs: " + reason);
  }
}

// The parameters a submission's transaction is checked against: the row's
// version as this transaction reads it (model::parameters_in), refusing
// while not accepting.
const model::SystemParameters& accepting_in(db::Tx& tx, const model::SystemParameters& copy,
                                            std::optional<model::SystemParameters>& fresh) {
  const model::SystemParameters& parameters = model::parameters_in(tx, copy, fresh);
  require_accepting(parameters);
  return parameters;
}

void count_submitted(runtime::Context& ctx, const std::string& job_type) {
  ctx.metrics()
      .counter("conveyor_jobs_submitted_total", "Jobs created through the REST API, by type.", {{"job_type", job_type}})
      .inc();
}

Response submit(runtime::Context& ctx, const Request& req) {
  if (auto refused = rate_limited(ctx, req, 1)) return *refused;
  const nlohmann::json body = req.json();  // malformed: 400 via problem_from
  const SubmitRequest request = parse_submit(body, req.header("Idempotency-Key"));
  // Most submissions take one round trip (model::submit_job_at_once), with
  // the others that come meanwhile (model::SubmitGroup), checked against the
  // service's copy of the parameters, and inserted only while that copy is
  // the row's version; the rest, whatever it cannot answer alone, and every
  // request the copy would refuse, the transaction, against the row itself.
  // So a pause or an unpause is in effect the moment it commits.
  const auto parameters = ctx.parameters();
  static model::SubmitGroup group(ctx.db());
  std::optional<model::SubmitResult> at_once;
  if (parameters->accepting_new_jobs) at_once = group.submit(*parameters, request, auth::request_actor(req));
  const model::SubmitResult result =
      at_once ? std::move(*at_once)
              : ctx.db().transact(
                    [&](db::Tx& tx) {
                      std::optional<model::SystemParameters> fresh;
                      return model::submit_job(tx, accepting_in(tx, *parameters, fresh), request);
                    },
                    as_requester(req));
  if (result.created) count_submitted(ctx, request.job_type);
  Response r = Response::json(result.job.to_json(), result.created ? 201 : 200);
  r.headers["Location"] = "/v1/jobs/" + std::to_string(result.job.id.value());
  return r;
}

// POST /v1/jobs/batch: all of the jobs in one transaction, or none. 201 when
// it created any, 200 when every one existed already (idempotency keys).
Response submit_batch(runtime::Context& ctx, const Request& req) {
  if (req.header("Idempotency-Key")) {
    // Ignored, a retried batch would create every job again.
    throw FieldError("Idempotency-Key",
                     "Idempotency-Key: not taken by POST /v1/jobs/batch; give each job its own idempotency_key");
  }
  const nlohmann::json body = req.json();
  const std::vector<SubmitRequest> requests = parse_submit_batch(body);
  if (auto refused = rate_limited(ctx, req, requests.size())) return *refused;
  const auto parameters = ctx.parameters();
  const auto results = ctx.db().transact(
      [&](db::Tx& tx) {
        std::optional<model::SystemParameters> fresh;
        return model::submit_jobs(tx, accepting_in(tx, *parameters, fresh), requests);
      },
      as_requester(req));
  nlohmann::json items = nlohmann::json::array();
  std::int64_t created = 0;
  for (const auto& result : results) {
    if (result.created) {
      ++created;
      count_submitted(ctx, result.job.job_type);
    }
    items.push_back({{"created", result.created}, {"job", result.job.to_json()}});
  }
  return Response::json({{"items", items}, {"created", created}}, created > 0 ? 201 : 200);
}

Response list(runtime::Context& ctx, const Request& req) {
  const ListQuery query = parse_list_query(req.query);
  const model::JobPage page = ctx.db().transact([&](db::Tx& tx) { return model::list_jobs(tx, query); }, snapshot());
  nlohmann::json items = nlohmann::json::array();
  for (const auto& j : page.items) items.push_back(j.to_json());
  return Response::json({{"items", items}, {"page", query.page}, {"size", query.size}, {"total", page.total}});
}

Response get(runtime::Context& ctx, const Request& req) {
  const model::JobId id = parse_job_id(req.path_param("id"));
  return Response::json(
      ctx.db().transact([&](db::Tx& tx) { return job_with_history(tx, model::get_job(tx, id)); }, snapshot()));
}

Response cancel(runtime::Context& ctx, const Request& req) {
  const model::JobId id = parse_job_id(req.path_param("id"));
  const model::CancelResult r = ctx.db().transact(
      [&](db::Tx& tx) {
        require_owner(tx, req, id);
        return model::cancel_job(tx, id);
      },
      as_requester(req));
  return Response::json(r.job.to_json(), r.completed ? 200 : 202);
}

Response retry(runtime::Context& ctx, const Request& req) {
  const model::JobId id = parse_job_id(req.path_param("id"));
  return Response::json(ctx.db().transact(
      [&](db::Tx& tx) {
        require_owner(tx, req, id);
        return model::retry_job(tx, id).to_json();
      },
      as_requester(req)));
}

// Sink URLs may carry credentials (user:password@, ?password=): only an
// operator sees them whole; readers and submitters get them redacted.
bool sees_sink_secrets(const Request& req) {
  const auto who = auth::identity_of(req);
  return who && who->role == auth::Role::operator_;
}

nlohmann::json job_type_for(const Request& req, const model::JobType& t) {
  nlohmann::json j = t.to_json();
  if (sees_sink_secrets(req)) return j;
  for (auto& sink : j["sinks"]) {
    if (sink.contains("url") && sink["url"].is_string()) {
      sink["url"] = logging::redact_url(sink["url"].get<std::string>());
    }
  }
  return j;
}

Response job_types(runtime::Context& ctx, const Request& req) {
  nlohmann::json items = nlohmann::json::array();
  for (const auto& t : ctx.db().transact([](db::Tx& tx) { return model::load_job_types(tx); })) {
    items.push_back(job_type_for(req, t));
  }
  return Response::json({{"items", items}});
}

Response job_type(runtime::Context& ctx, const Request& req) {
  const std::string& name = req.path_param("name");
  const auto t = ctx.db().transact([&](db::Tx& tx) { return model::load_job_type(tx, name); });
  if (!t) throw Error(errc::not_found, "job type '" + name + "' does not exist");
  return Response::json(job_type_for(req, *t));
}

// Read from the database rather than the snapshot, so a client sees its own
// change (or an operator's SQL) at once.
nlohmann::json current_parameters(runtime::Context& ctx, const Request& req) {
  nlohmann::json j = ctx.db().transact([](db::Tx& tx) { return model::load_system_parameters(tx); }).to_json();
  if (!sees_sink_secrets(req) && j.contains("publication_endpoint_url") && j["publication_endpoint_url"].is_string()) {
    j["publication_endpoint_url"] = logging::redact_url(j["publication_endpoint_url"].get<std::string>());
  }
  return j;
}

Response patch(runtime::Context& ctx, const Request& req) {
  const nlohmann::json body = req.json();
  ctx.db().transact([&](db::Tx& tx) { model::patch_system_parameters(tx, body); }, as_requester(req));
  ctx.reload_parameters();
  return Response::json(current_parameters(ctx, req));
}

}  // namespace

runtime::ServiceSpec service_spec() {
  runtime::ServiceSpec spec;
  spec.name = kServiceName;
  spec.schema = runtime::service_schema();
  spec.default_http_port = 0;
  spec.schema.add({.name = "CONVEYOR_SUBMIT_RATE",
                   .type = config::Type::integer,
                   .default_value = "200",
                   .help = "submissions a second allowed per API token (token bucket); 0: no limit",
                   .min = 0,
                   .max = 1000000});
  spec.schema.add({.name = "CONVEYOR_SUBMIT_BURST",
                   .type = config::Type::integer,
                   .default_value = "1000",
                   .help = "submissions a token may make at once before CONVEYOR_SUBMIT_RATE applies",
                   .min = 1,
                   .max = 1000000});
  spec.schema.add({.name = "CONVEYOR_BACKFILL_BATCH_SIZE",
                   .type = config::Type::integer,
                   .default_value = "100",
                   .help = "slots of a backfill request created per pass (one batch per poll interval)",
                   .min = 1,
                   .max = 100000});
  // No job event wakes it: a done job whose type has triggers notifies
  // kTriggerPendingChannel (setup), and the 1 s poll is the fallback.
  return spec;
}

void register_routes(http::Server& server, runtime::Context& ctx) {
  auto bind = [&ctx](Response (*fn)(runtime::Context&, const Request&)) {
    return with_422([&ctx, fn](const Request& req) { return fn(ctx, req); });
  };
  server.route("POST", "/v1/jobs", bind(submit));
  server.route("POST", "/v1/jobs/batch", bind(submit_batch));
  server.route("GET", "/v1/jobs", bind(list));
  server.route("GET", "/v1/jobs/{id}", bind(get));
  server.route("POST", "/v1/jobs/{id}/cancel", bind(cancel));
  server.route("POST", "/v1/jobs/{id}/retry", bind(retry));
  server.route("GET", "/v1/job-types", bind(job_types));
  server.route("GET", "/v1/job-types/{name}", bind(job_type));
  server.route("GET", "/v1/parameters",
               [&ctx](const Request& req) { return Response::json(current_parameters(ctx, req)); });
  server.route("PATCH", "/v1/parameters", bind(patch));
}

void setup(runtime::Context& ctx) {
  register_routes(ctx.http(), ctx);
  ctx.listen_also(kTriggerPendingChannel, kTriggerPendingWake);
  // Heard only while a job type has triggers (the loop's timed passes say).
  ctx.set_listened(kTriggerPendingChannel, false);
}

namespace {

// One pass over the schedules; returns whether a schedule has more runs due
// than one batch created.
bool run_schedule_pass(runtime::Context& ctx, int batch) {
  auto log = ctx.log();
  auto& metrics = ctx.metrics();
  const auto tick = run_schedules(ctx.db(), batch);
  if (!tick) return false;  // another replica holds the scheduler lock
  for (const auto& run : tick->runs) {
    if (run.created > 0 || run.skipped > 0) {
      log->info("schedule {}: created {} run(s), skipped {} (catch-up policy or window)", run.job_type, run.created,
                run.skipped);
    }
    if (!run.error.empty()) log->error("schedule {}: {}", run.job_type, run.error);
    metrics
        .counter("conveyor_schedule_runs_total", "scheduled runs, by job type and outcome",
                 {{"job_type", run.job_type}, {"outcome", "created"}})
        .inc(run.created);
    metrics
        .counter("conveyor_schedule_runs_total", "scheduled runs, by job type and outcome",
                 {{"job_type", run.job_type}, {"outcome", "skipped"}})
        .inc(static_cast<double>(run.skipped));
  }
  return tick->more;
}

// One pass over the pending triggers; returns whether more are pending than
// one batch took.
bool run_trigger_pass(runtime::Context& ctx, int batch) {
  auto log = ctx.log();
  auto& metrics = ctx.metrics();
  metrics.counter("conveyor_creation_trigger_passes_total", "reads of the pending triggers").inc();
  const TriggerTick t = run_triggers(ctx.db(), batch);
  if (t.created > 0) log->info("triggers: created {} downstream job(s)", t.created);
  for (const auto& e : t.errors) log->error("trigger failed (kept in conveyor.trigger_pending): {}", e);
  metrics.counter("conveyor_trigger_jobs_created_total", "downstream jobs created by triggers").inc(t.created);
  metrics.counter("conveyor_trigger_failures_total", "upstream jobs whose triggers could not be created").inc(t.failed);
  return t.more;
}

// One batch of one backfill request. A request whose batch keeps failing is
// marked failed after kBackfillMaxFailures in a row (`failures` counts them,
// by request), so it cannot stop the schedules and triggers.
void run_backfill_pass(runtime::Context& ctx, int batch, std::map<std::int64_t, int>& failures) {
  auto log = ctx.log();
  auto& metrics = ctx.metrics();
  const auto b = run_backfills(ctx.db(), batch);
  if (!b) return;
  if (!b->rolled_back) {
    failures.erase(b->request_id);
    log->info("backfill {} of {}: created {} run(s), {} slot(s) already had one; {}", b->request_id, b->job_type,
              b->created, b->skipped, b->state);
    if (!b->error.empty()) log->error("backfill {} of {} failed: {}", b->request_id, b->job_type, b->error);
    metrics.counter("conveyor_backfill_runs_total", "runs created by backfill requests", {{"job_type", b->job_type}})
        .inc(b->created);
    return;
  }
  const int in_a_row = ++failures[b->request_id];
  log->error("backfill {} of {}: batch rolled back ({} of {} in a row): {}", b->request_id, b->job_type, in_a_row,
             kBackfillMaxFailures, logging::redact_url(b->error));
  metrics
      .counter("conveyor_backfill_failures_total", "backfill batches rolled back by an error",
               {{"job_type", b->job_type}})
      .inc();
  if (in_a_row < kBackfillMaxFailures) return;
  const std::string reason = "failed " + std::to_string(in_a_row) + " batches in a row: " + b->error;
  if (fail_backfill(ctx.db(), b->request_id, reason)) {
    log->error("backfill {} of {} marked failed: {}", b->request_id, b->job_type, reason);
  }
  failures.erase(b->request_id);
}

}  // namespace

// Schedules and backfills are due by time: they run once per poll interval
// (at once again while a schedule has more due runs than a batch). Triggers
// are due when a job of a type with triggers is done (its row in
// conveyor.trigger_pending notifies kTriggerPendingChannel): they run on
// every wake-up, one indexed read of conveyor.trigger_pending. A done job
// of a type without triggers wakes nothing here. The channel is heard only
// while some job type has triggers (read once per poll interval): a
// listening connection costs PostgreSQL a wake-up on every notifying
// commit, whatever the channel.
void loop(runtime::Context& ctx) {
  using Clock = std::chrono::steady_clock;
  using std::chrono::milliseconds;
  const auto poll = ctx.config().get_duration("CONVEYOR_POLL_INTERVAL_MS");
  const int batch = static_cast<int>(ctx.config().get_int("CONVEYOR_BATCH_SIZE"));
  const int backfill_batch = static_cast<int>(ctx.config().get_int("CONVEYOR_BACKFILL_BATCH_SIZE"));
  auto log = ctx.log();
  std::map<std::int64_t, int> backfill_failures;  // batches rolled back in a row, by request
  Clock::time_point timed_due = Clock::now();
  milliseconds timeout(0);
  do {
    bool schedules_more = false;
    bool triggers_more = false;
    const bool timed = Clock::now() >= timed_due;
    try {
      if (timed) {
        ctx.set_listened(kTriggerPendingChannel, any_triggers(ctx.db()));
        schedules_more = run_schedule_pass(ctx, batch);
      }
      triggers_more = run_trigger_pass(ctx, batch);
    } catch (const Error& e) {
      // The database may be briefly away: the next pass retries.
      log->error("schedules and triggers: {}", logging::redact_url(e.what()));
    }
    if (timed) {
      // Backfills in their own try: a request whose batch keeps failing must
      // not stop the schedules and triggers above.
      try {
        run_backfill_pass(ctx, backfill_batch, backfill_failures);
      } catch (const Error& e) {
        log->error("backfills: {}", logging::redact_url(e.what()));
      }
      ctx.metrics().counter("conveyor_creation_passes_total", "passes over schedules and triggers").inc();
      timed_due = schedules_more ? Clock::now() : Clock::now() + poll;
    }
    const auto until_timed = std::chrono::duration_cast<milliseconds>(timed_due - Clock::now());
    timeout = triggers_more ? milliseconds(0) : std::clamp(until_timed, milliseconds(0), poll);
  } while (ctx.wait_for_work(timeout));
}

}  // namespace conveyor::creation
