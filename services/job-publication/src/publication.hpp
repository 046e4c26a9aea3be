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
// Delivery is at-least-once: jobs are published while their rows are locked
// (FOR UPDATE SKIP LOCKED, so replicas never publish the same job at the same
// time). A database failure between delivery and commit does not publish
// again: the loop remembers what every sink took (Delivered) and the next
// pass only records `done`. A crash of this process in that window, or a
// retry after one sink of several failed, does publish again. Sinks must
// tolerate a rare duplicate; the event id (job, attempt) is stable across
// such repeats to help them. Functions are safe to call from any thread;
// a Delivered belongs to one of them.
#include <chrono>
#include <set>
#include <utility>
#include <filesystem>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "conveyor/db/db.hpp"
#include "conveyor/model/system_parameters.hpp"
#include "conveyor/runtime/runtime.hpp"

namespace conveyor::bus {
class Producer;
}

namespace conveyor::publication {

inline constexpr const char* kServiceName = "conveyor-publication";

struct Settings {
  std::filesystem::path data_dir;  // CONVEYOR_DATA_DIR: base of relative file-sink dirs
  int batch_size = 20;             // jobs per transaction (rows stay locked while publishing)
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
std::optional<std::string> sink_refusal(const std::string& url,
                                        const model::SystemParameters& params);

// Publishes `body` to one sink; throws Error naming the sink and the problem.
// A webhook refused by sink_allowed_hosts is a sink failure like any other
// (retried with back-off until publication_max_attempts), so an operator
// who corrects the list in time lets it through.
void publish_to_sink(const nlohmann::json& sink, const JobRecord& job, const std::string& body,
                     const model::SystemParameters& params, const Settings& settings);

// Jobs (id, attempt) whose every sink took their event but whose move to
// `done` is not committed yet; kept across failed transactions by the loop.
// Not thread-safe: owned by the thread that publishes.
using Delivered = std::set<std::pair<std::int64_t, int>>;

// processed -> done | external_error | internal_error for up to batch_size
// jobs. Returns the number of jobs moved. With `delivered`, a job found
// there is moved to done without publishing it again.
int publish_batch(db::Pool& pool, const model::SystemParameters& params, const Settings& settings,
                  Delivered* delivered = nullptr);

// external_error (from processed) whose back-off passed -> error_checked ->
// processed. Returns the number of jobs moved.
int retry_batch(db::Pool& pool, const Settings& settings);

// Time until the next external_error job becomes due, if any.
std::optional<std::chrono::milliseconds> next_retry(db::Pool& pool, const Settings& settings);

runtime::ServiceSpec spec();
void setup(runtime::Context& ctx);
void loop(runtime::Context& ctx);

}  // namespace conveyor::publication
