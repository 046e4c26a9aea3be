#pragma once
// conveyor-publication (DESIGN §1): processed -> done after publishing the
// job's result to every sink in job.config.sinks:
//   webhook  HTTP POST of the CloudEvent JSON, signed with
//            X-Conveyor-Signature: sha256=<hex HMAC-SHA256 of the body>
//   kafka    the CloudEvent JSON on settings.topic (as is, no prefix)
//   file     <dir>/job-<id>.json, written atomically (tmp + rename)
// Webhooks reach only the hosts of system parameter sink_allowed_hosts
// (when set), checked before each delivery.
// A sink failure -> external_error (subtype sink_failed, message naming the
// sink); this service moves external_error jobs whose back-off passed back
// through error_checked -> processed; the publication_max_attempts-th failure
// -> internal_error (publication_failed).
//
// Delivery is at-least-once and holds no row lock: a pass claims a batch of
// processed jobs (FOR UPDATE SKIP LOCKED, then publication_claimed_until for
// CONVEYOR_PUBLICATION_CLAIM_MS, so replicas skip them), commits, delivers
// on CONVEYOR_PUBLICATION_CONCURRENCY lanes at once (webhooks on kept-alive
// connections, one client per lane), then records every outcome in one
// statement conditional on the job still being processed in that attempt.
// A database failure after delivery does not publish again: the outcomes
// are kept and recorded by the next pass. A crash of this process in that
// window (the claim then ends), or a retry after one sink of several failed,
// does publish again. Sinks must tolerate a rare duplicate; the event id
// (job, attempt) is stable across such repeats to help them. Functions are
// safe to call from any thread with their own arguments.
#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "conveyor/db/db.hpp"
#include "conveyor/http/client.hpp"
#include "conveyor/model/system_parameters.hpp"
#include "conveyor/runtime/runtime.hpp"
#include "conveyor/runtime/stage_loop.hpp"

namespace conveyor::bus {
class Producer;
}

namespace conveyor::publication {

inline constexpr const char* kServiceName = "conveyor-publication";

using Clock = std::chrono::steady_clock;

struct Settings {
  std::filesystem::path data_dir;                // CONVEYOR_DATA_DIR: base of relative file-sink dirs
  int batch_size = 100;                          // jobs claimed per pass
  int delivery_concurrency = 8;                  // jobs of a pass delivered at once (each on its own connection)
  std::chrono::milliseconds claim{300000};       // CONVEYOR_PUBLICATION_CLAIM_MS
  std::string instance;                          // the claimer's instance id
  std::chrono::milliseconds backoff_base{1000};  // CONVEYOR_PUBLICATION_BACKOFF_BASE_MS
  std::chrono::milliseconds backoff_max{60000};  // CONVEYOR_PUBLICATION_BACKOFF_MAX_MS
  bus::Producer* producer = nullptr;             // kafka sinks; null: they fail
};

// Hex HMAC-SHA256 of `body` with `key` (the webhook signature).
std::string hmac_sha256_hex(const std::string& key, const std::string& body);

// Back-off before publication attempt n+1 after n failures:
// min(base * 2^(n-1), max).
std::chrono::milliseconds backoff(const Settings& settings, int failures);

// The published CloudEvent JSON (type io.conveyor.job.published).
struct JobRecord {
  std::int64_t id = 0;
  std::string job_type;
  int attempt = 0;
  nlohmann::json params;
  nlohmann::json result;
  std::string time;  // RFC 3339
};
std::string event_json(const JobRecord& job);

// The host a webhook request to `url` reaches, read the way
// http::http_request reads the URL (the authority ends at the first '/',
// '?' or '#' after "://"; userinfo ends at its last '@'): lower-case,
// without port or one trailing dot, an IPv6 address without brackets.
// nullopt when the URL is not http(s) or its authority is not host[:port]
// or [IPv6][:port] with a plain host name (letters, digits, '.', '-', '_').
std::optional<std::string> webhook_host(const std::string& url);

// Why params.sink_allowed_hosts refuses a delivery to `url` (naming the
// host, never the URL, whose path or userinfo may hold a secret); nullopt
// when the delivery may go. An empty or unset list allows every URL.
std::optional<std::string> sink_refusal(const std::string& url, const model::SystemParameters& params);

// Publishes `body` to one sink; throws Error naming the sink and the problem.
// Webhooks go on `client`'s kept-alive connections (null: one per request).
// A webhook's or Kafka sink's wait is cut to end by `deadline` (its claim's
// end); with none left the sink fails without being tried.
// A webhook refused by sink_allowed_hosts is a sink failure like any other
// (retried with back-off until publication_max_attempts), so an operator
// who corrects the list in time lets it through.
void publish_to_sink(const nlohmann::json& sink, const JobRecord& job, const std::string& body,
                     const model::SystemParameters& params, const Settings& settings,
                     http::KeepAliveClient* client = nullptr, Clock::time_point deadline = Clock::time_point::max());

// What delivering one claimed job came to: done, or external_error /
// internal_error with the subtype and message.
struct Outcome {
  std::int64_t id = 0;
  int attempt = 0;
  std::string status;
  std::string subtype;
  std::string message;
};

// What the publish step keeps from one pass to the next (its thread only).
struct PublishState {
  // Outcomes a failed pass delivered but did not record.
  std::vector<Outcome> unrecorded;
  // A claim statement failed: it may have committed (the connection went
  // during it), and its jobs would wait CONVEYOR_PUBLICATION_CLAIM_MS.
  bool claim_in_doubt = false;
  // One webhook client per delivery lane (made on first use): a lane's
  // connections are kept alive from pass to pass.
  std::vector<std::unique_ptr<http::KeepAliveClient>> clients;
};

// One publication pass: records `state.unrecorded`; after a claim in doubt,
// frees this instance's claims (between passes it delivers nothing, so any
// claim of its own is such a one); claims up to batch_size processed jobs,
// delivers them outside any transaction, up to delivery_concurrency at once
// (one slow sink holds one lane, not the pass), and records the outcomes in
// one statement. What cannot be recorded stays in `state.unrecorded` (then this
// throws). Returns the jobs moved.
int publish_batch(db::Pool& pool, const model::SystemParameters& params, const Settings& settings, PublishState& state);

// external_error (from processed) whose back-off passed, claimed as `due`
// (kRetryDue) -> error_checked -> processed. Returns the jobs moved.
int retry_claimed(db::Tx& tx, const db::Result& due);

// The service's StageLoop: the retry step, then the publish step.
runtime::StageLoop stage_loop(runtime::Context& ctx);

// Time until the next external_error job becomes due, if any.
std::optional<std::chrono::milliseconds> next_retry(db::Pool& pool, const Settings& settings);

runtime::ServiceSpec spec();
void setup(runtime::Context& ctx);
void loop(runtime::Context& ctx);

}  // namespace conveyor::publication
