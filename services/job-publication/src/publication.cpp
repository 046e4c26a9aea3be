#include "publication.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "conveyor/bus/cloudevent.hpp"
#include "conveyor/bus/kafka.hpp"
#include "conveyor/config/config.hpp"
#include "conveyor/error/error.hpp"
#include "conveyor/http/client.hpp"
#include "conveyor/logging/logging.hpp"
#include "conveyor/logging/thread_name.hpp"
#include "conveyor/model/job_config.hpp"

namespace conveyor::publication {
namespace {

// The events that wake publication: a job to deliver, a failed delivery
// (whose back-off begins).
constexpr const char* kProcessedEvent = "io.conveyor.job.processed";
constexpr const char* kExternalErrorEvent = "io.conveyor.job.external_error";

// Claims a batch of processed jobs ($1 at most, oldest first) for $2 ms for
// instance $3 (conveyor.claim_publishable, migrations 20261226000000 and
// 20270102000000): other replicas skip them while they are delivered
// outside any transaction; a claim never recorded (this process died) ends
// and the job is delivered again. A job whose config names no sink
// (conveyor.job_delivers_nothing) is moved to done by the same statement
// and comes back done, its other columns not read. `failures`: the failed
// deliveries of the job's current publication run
// (conveyor.publication_failures, migration 20270103000000; $4: this
// service's actor).
constexpr db::Statement kClaimProcessed{"publication_claim_processed",
                                        R"(SELECT j.id, j.status = 'done' AS done, j.job_type, j.attempt,
              CASE WHEN j.status <> 'done' THEN j.params::text END AS params,
              CASE WHEN j.status <> 'done' THEN j.config::text END AS config,
              CASE WHEN j.status <> 'done' THEN j.result::text END AS result,
              to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS now,
              CASE WHEN j.status <> 'done' THEN conveyor.publication_failures(j.id, $4) END AS failures
       FROM conveyor.claim_publishable($1, $2, $3) j)"};

// The outcomes of a batch's deliveries in one statement: per job (arrays in
// step) its attempt, new status (done, external_error, internal_error) and
// the error subtype and message ('' for done). Only a job still processed in
// the same attempt moves: one moved meanwhile (canceled, recovered) is left
// alone.
constexpr db::Statement kRecordOutcomes{
    "publication_record_outcomes",
    "UPDATE conveyor.job j SET status = v.to_status, error_subtype = nullif(v.subtype, ''),"
    " error_message = nullif(v.message, ''), publication_claimed_until = NULL "
    "FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[])"
    " AS v(id, attempt, to_status, subtype, message) "
    "WHERE j.id = v.id AND j.attempt = v.attempt AND j.status = 'processed'"};

// external_error jobs that came from processed (other external errors
// belong to other stages), with when their back-off ends:
// last change + conveyor.retry_backoff (min(base * 2^(n-1), max)) for n
// failed deliveries of the current publication run. $1 base ms, $2 max ms,
// $3 this service's actor (conveyor.publication_failures).
#define CONVEYOR_PUBLICATION_DUE_SQL                                                  \
  "SELECT j.id, lc.at + conveyor.retry_backoff($1::bigint / 1000.0, "                 \
  "  conveyor.publication_failures(j.id, $3)::int, $2::bigint / 1000.0) AS due "      \
  "FROM conveyor.job j "                                                              \
  "CROSS JOIN LATERAL (SELECT l.from_status, l.at FROM conveyor.job_status_change l " \
  "  WHERE l.job_id = j.id ORDER BY l.id DESC LIMIT 1) lc "                           \
  "WHERE j.status = 'external_error' AND j.canceled_at IS NULL AND lc.from_status = 'processed' "

constexpr db::Statement kRetryDue{"publication_retry_due",
                                  "SELECT d.id FROM conveyor.job j2 JOIN (" CONVEYOR_PUBLICATION_DUE_SQL
                                  ") d ON d.id = j2.id WHERE d.due <= clock_timestamp() "
                                  "ORDER BY d.id LIMIT $4 FOR UPDATE OF j2 SKIP LOCKED"};

constexpr db::Statement kNextRetry{
    "publication_next_retry",
    "SELECT ceil(extract(epoch FROM (min(d.due) - clock_timestamp())) * 1000)::bigint AS ms "
    "FROM (" CONVEYOR_PUBLICATION_DUE_SQL ") d"};

#undef CONVEYOR_PUBLICATION_DUE_SQL

// What an earlier run of this instance ($1) claimed and never recorded (it
// was killed mid-delivery) is free again at its start, not at the claim's end.
constexpr db::Statement kReleaseOwnClaims{
    "publication_release_own_claims",
    "UPDATE conveyor.job SET publication_claimed_until = NULL "
    "WHERE publication_claimed_by = $1 AND publication_claimed_until IS NOT NULL"};

// Claims of instance $2 on jobs $1 that were not delivered (the pass ran
// out of time): free for the next pass at once.
constexpr db::Statement kReleaseClaims{
    "publication_release_claims",
    "UPDATE conveyor.job SET publication_claimed_until = NULL "
    "WHERE id = ANY($1::bigint[]) AND publication_claimed_by = $2 AND status = 'processed'"};

// external_error -> error_checked -> processed for a batch (two statements,
// the status machine's two steps).
constexpr db::Statement kSetErrorChecked{
    "publication_set_error_checked",
    "UPDATE conveyor.job SET status = 'error_checked' WHERE id = ANY($1::bigint[]) AND status = 'external_error' "
    "RETURNING id"};

constexpr db::Statement kSetProcessedAgain{
    "publication_set_processed_again",
    "UPDATE conveyor.job SET status = 'processed' WHERE id = ANY($1::bigint[]) AND status = 'error_checked'"};

std::shared_ptr<spdlog::logger> log() { return logging::get("publication"); }

db::TxOptions tx_options() {
  db::TxOptions o;
  o.actor = kServiceName;
  return o;
}

std::string setting(const nlohmann::json& sink, const char* key) {
  const auto it = sink.find(key);
  if (it == sink.end() || !it->is_string()) return "";
  return it->get<std::string>();
}

[[noreturn]] void sink_failure(const std::string& what) { throw Error(errc::unavailable, what); }

// `timeout`, cut to end by `deadline` (the claim's end, less a margin): a
// delivery must not outlast its claim, or another replica would deliver the
// job again. None left: the sink is not tried (a failure, retried later).
std::chrono::milliseconds within(std::chrono::milliseconds timeout, Clock::time_point deadline,
                                 const std::string& sink) {
  if (deadline == Clock::time_point::max()) return timeout;
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  if (left.count() <= 0) sink_failure(sink + ": not tried, the claim on the job is ending");
  return std::min(timeout, left);
}

void publish_webhook(const nlohmann::json& sink, const JobRecord& job, const std::string& body,
                     const model::SystemParameters& params, http::KeepAliveClient* client, Clock::time_point deadline) {
  std::string url = setting(sink, "url");
  std::string source = "settings.url";
  if (url.empty()) {
    url = params.publication_endpoint_url;
    source = "publication_endpoint_url";
  }
  if (url.empty()) sink_failure("webhook sink: no webhook url (neither settings.url nor publication_endpoint_url)");
  if (const auto refused = sink_refusal(url, params)) {
    log()->warn("job {}: webhook sink ({}): {}", job.id, source, *refused);
    sink_failure("webhook sink (" + source + "): " + *refused);
  }
  const std::string shown = logging::redact_url(url);

  std::map<std::string, std::string> headers{{"Content-Type", "application/cloudevents+json"}};
  const std::string secret_env = setting(sink, "secret_env");
  if (!secret_env.empty()) {
    // Asked to sign but cannot: do not send an unsigned request instead.
    const auto secret = config::secret_from_environment(secret_env);
    if (!secret) {
      sink_failure("webhook sink " + shown + ": secret variable '" + secret_env +
                   "' is not set (only CONVEYOR_* names are read)");
    }
    headers["X-Conveyor-Signature"] = "sha256=" + hmac_sha256_hex(*secret, body);
  }
  std::chrono::milliseconds timeout{5000};
  if (const auto it = sink.find("timeout_ms"); it != sink.end() && it->is_number_integer() && it->get<int>() > 0) {
    timeout = std::chrono::milliseconds(it->get<int>());
  }
  timeout = within(timeout, deadline, "webhook sink " + shown);
  http::ClientResponse response;
  try {
    response = client != nullptr ? client->request("POST", url, body, headers, timeout)
                                 : http::http_request("POST", url, body, headers, timeout);
  } catch (const Error& e) {
    sink_failure("webhook sink " + shown + ": " + e.what());
  }
  if (response.status < 200 || response.status > 299) {
    sink_failure("webhook sink " + shown + ": answered HTTP " + std::to_string(response.status));
  }
}

void publish_kafka(const nlohmann::json& sink, const JobRecord& job, const std::string& body, const Settings& settings,
                   Clock::time_point deadline) {
  const std::string topic = setting(sink, "topic");
  if (topic.empty()) sink_failure("kafka sink: no topic");
  if (settings.producer == nullptr) {
    sink_failure("kafka sink " + topic + ": no broker configured (CONVEYOR_KAFKA_BROKERS is empty)");
  }
  const std::array<bus::Message, 1> messages{
      bus::Message{topic, std::to_string(job.id), body, {{bus::kContentTypeHeader, bus::kStructuredContentType}}}};
  const auto acked =
      settings.producer->send_batch(messages, within(std::chrono::seconds(10), deadline, "kafka sink " + topic));
  if (acked.empty() || !acked[0]) sink_failure("kafka sink " + topic + ": not acknowledged within 10 s");
}

void publish_file(const nlohmann::json& sink, const JobRecord& job, const std::string& body, const Settings& settings) {
  const std::string dir_setting = setting(sink, "dir");
  if (dir_setting.empty()) sink_failure("file sink: no dir");
  std::filesystem::path dir(dir_setting);
  if (dir.is_relative()) dir = settings.data_dir / dir;
  const auto target = dir / ("job-" + std::to_string(job.id) + ".json");
  // Readers of the catalog never see a half-written manifest.
  const auto tmp = dir / (".job-" + std::to_string(job.id) + ".json.tmp-" + std::to_string(::getpid()));
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) sink_failure("file sink " + dir.string() + ": cannot create the folder: " + ec.message());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << body << '\n';
    out.flush();
    if (!out) sink_failure("file sink " + dir.string() + ": cannot write " + tmp.string());
  }
  std::filesystem::rename(tmp, target, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    sink_failure("file sink " + dir.string() + ": cannot rename to " + target.string());
  }
}

}  // namespace

std::optional<std::string> webhook_host(const std::string& url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos || scheme_end == 0) return std::nullopt;
  std::string scheme = url.substr(0, scheme_end);
  std::transform(scheme.begin(), scheme.end(), scheme.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (scheme != "http" && scheme != "https") return std::nullopt;
  const auto authority_begin = scheme_end + 3;
  auto authority_end = url.find_first_of("/?#", authority_begin);
  if (authority_end == std::string::npos) authority_end = url.size();
  std::string_view authority(url);
  authority = authority.substr(authority_begin, authority_end - authority_begin);
  if (const auto at = authority.rfind('@'); at != std::string_view::npos) authority.remove_prefix(at + 1);
  std::string_view host;
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = authority.substr(1, close - 1);
    const auto rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return std::nullopt;
      port = rest.substr(1);
      if (port.empty()) return std::nullopt;
    }
    const bool v6_chars = !host.empty() && std::all_of(host.begin(), host.end(), [](char c) {
      return c == ':' || c == '.' || std::isxdigit(static_cast<unsigned char>(c));
    });
    if (!v6_chars) return std::nullopt;
  } else {
    const auto colon = authority.find(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
      if (port.empty()) return std::nullopt;
    }
    // What getaddrinfo would take for the name the client connects to: no
    // NUL (it would cut the name), no percent-encoding, no backslash, no space.
    const bool name_chars = !host.empty() && std::all_of(host.begin(), host.end(), [](char c) {
      return c == '.' || c == '-' || c == '_' || std::isalnum(static_cast<unsigned char>(c));
    });
    if (!name_chars) return std::nullopt;
  }
  if (port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
    return std::nullopt;
  }
  std::string canonical = model::canonical_host(host);
  if (canonical.empty()) return std::nullopt;
  return canonical;
}

std::optional<std::string> sink_refusal(const std::string& url, const model::SystemParameters& params) {
  if (!params.sink_allowed_hosts || params.sink_allowed_hosts->empty()) return std::nullopt;
  const auto host = webhook_host(url);
  if (!host) {
    return std::string(
        "delivery refused: the URL's host cannot be read (an http or https URL with a plain "
        "host name or [IPv6 address] and a numeric port), and sink_allowed_hosts is set");
  }
  if (params.sink_host_allowed(*host)) return std::nullopt;
  return "delivery to host '" + *host + "' refused: it is not in sink_allowed_hosts";
}

std::string hmac_sha256_hex(const std::string& key, const std::string& body) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(body.data()),
           body.size(), digest.data(), &length) == nullptr) {
    throw Error(errc::internal, "HMAC-SHA256 failed");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(length * 2);
  for (unsigned int i = 0; i < length; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 0x0f]);
  }
  return hex;
}

std::chrono::milliseconds backoff(const Settings& settings, int failures) {
  const int exponent = std::clamp(failures - 1, 0, 30);
  const auto ms = settings.backoff_base.count() * (std::int64_t{1} << exponent);
  return std::chrono::milliseconds(std::min<std::int64_t>(ms, settings.backoff_max.count()));
}

std::string event_json(const JobRecord& job) {
  bus::CloudEvent event;
  // Stable for one run of the job, so a sink can drop an at-least-once repeat.
  event.id = "job-" + std::to_string(job.id) + "-attempt-" + std::to_string(job.attempt) + "-published";
  event.source = "/conveyor/publication";
  event.type = "io.conveyor.job.published";
  event.subject = std::to_string(job.id);
  event.time = job.time;
  event.data = {{"schema_version", bus::kEventSchemaVersion},
                {"job_id", job.id},
                {"job_type", job.job_type},
                {"result", job.result},
                {"params", job.params},
                {"attempt", job.attempt}};
  return bus::encode(event);
}

void publish_to_sink(const nlohmann::json& sink, const JobRecord& job, const std::string& body,
                     const model::SystemParameters& params, const Settings& settings, http::KeepAliveClient* client,
                     Clock::time_point deadline) {
  const std::string kind = setting(sink, "kind");
  if (kind == "webhook") publish_webhook(sink, job, body, params, client, deadline);
  else if (kind == "kafka") publish_kafka(sink, job, body, settings, deadline);
  else if (kind == "file") publish_file(sink, job, body, settings);
  else sink_failure("unknown sink kind '" + kind + "'");
}

namespace {

// A claimed job, read from its row on the pass's thread (db rows stay there).
struct Claimed {
  JobRecord job;
  std::string body;  // the CloudEvent JSON
  std::optional<model::JobConfig> config;
  std::string config_error;  // why config (or the event) is absent
  std::int64_t failures = 0;
};

Claimed read_claimed(const db::Row& row) {
  Claimed c;
  c.job.id = row["id"].as_int();
  c.job.job_type = row["job_type"].as_string();
  c.job.attempt = static_cast<int>(row["attempt"].as_int());
  c.job.time = row["now"].as_string();
  c.failures = row["failures"].as_int();
  try {
    c.job.params = nlohmann::json::parse(row["params"].view());
    c.job.result = row["result"].is_null() ? nlohmann::json() : nlohmann::json::parse(row["result"].view());
    c.body = event_json(c.job);
  } catch (const std::exception& e) {
    // A job whose event cannot be made fails, not the batch.
    c.config_error = std::string("job params or result: ") + e.what();
    return c;
  }
  try {
    c.config = row["config"].is_null() ? model::JobConfig{}
                                       : model::parse_job_config(nlohmann::json::parse(row["config"].view()));
  } catch (const std::exception& e) {
    // A config no sink can be read from: that job fails, not the batch.
    c.config_error = std::string("job config: ") + e.what();
  }
  return c;
}

// One claimed job delivered to every sink: done, or the error its failures
// make (external_error, or internal_error at publication_max_attempts).
Outcome deliver(const Claimed& c, const model::SystemParameters& params, const Settings& settings,
                http::KeepAliveClient* client, Clock::time_point deadline) {
  const JobRecord& job = c.job;
  std::vector<std::string> failures;
  if (!c.config) failures.push_back(c.config_error);
  else {
    for (const auto& sink : c.config->sinks) {
      try {
        publish_to_sink(sink, job, c.body, params, settings, client, deadline);
      } catch (const Error& e) {
        failures.emplace_back(e.what());
      } catch (const std::exception& e) {
        // Filesystem and JSON errors of one sink fail that sink, not the batch.
        failures.emplace_back(std::string(setting(sink, "kind")) + " sink: " + e.what());
      }
    }
  }
  if (failures.empty()) return {job.id, job.attempt, "done", "", ""};
  std::string message;
  for (const auto& f : failures) message += (message.empty() ? "" : "; ") + f;
  const auto attempt_no = c.failures + 1;
  if (attempt_no >= params.publication_max_attempts) {
    message = "publication failed " + std::to_string(attempt_no) + " times (publication_max_attempts " +
              std::to_string(params.publication_max_attempts) + "): " + message;
    log()->warn("job {}: processed -> internal_error: {}", job.id, message);
    return {job.id, job.attempt, "internal_error", "publication_failed", message};
  }
  log()->warn("job {}: processed -> external_error (attempt {}): {}", job.id, attempt_no, message);
  return {job.id, job.attempt, "external_error", "sink_failed", message};
}

// When the deliveries of a claim taken at `claimed_at` must start by (half
// the claim) and end by (nine tenths of it: the claim itself is stamped by
// the database a little later).
struct ClaimTimes {
  Clock::time_point last_start;
  Clock::time_point deadline;
  ClaimTimes(Clock::time_point claimed_at, std::chrono::milliseconds claim)
      : last_start(claimed_at + claim / 2), deadline(claimed_at + claim * 9 / 10) {}
};

// Delivers `claimed` on up to delivery_concurrency lanes at once, each with
// its own webhook client; the outcomes come back in `claimed`'s order. No
// delivery starts after times.last_start, and none waits past
// times.deadline (slow sinks must not outlast the claim, or another replica
// would deliver the same jobs): the jobs not started have an outcome with an
// empty status. A lane that cannot be started leaves its share to the others.
std::vector<Outcome> deliver_all(const std::vector<Claimed>& claimed, const model::SystemParameters& params,
                                 const Settings& settings, PublishState& state, const ClaimTimes& times) {
  const std::size_t lanes =
      std::min(claimed.size(), static_cast<std::size_t>(std::max(1, settings.delivery_concurrency)));
  while (state.clients.size() < lanes) state.clients.push_back(std::make_unique<http::KeepAliveClient>());
  std::vector<Outcome> outcomes(claimed.size());
  std::atomic<std::size_t> next{0};
  const auto lane = [&](std::size_t k) {
    for (std::size_t i = next++; i < claimed.size(); i = next++) {
      if (Clock::now() > times.last_start) {
        outcomes[i] = {claimed[i].job.id, claimed[i].job.attempt, "", "", ""};
        continue;
      }
      try {
        outcomes[i] = deliver(claimed[i], params, settings, state.clients[k].get(), times.deadline);
      } catch (const std::exception& e) {
        // Not a sink's failure (memory): the job is tried again.
        outcomes[i] = {claimed[i].job.id, claimed[i].job.attempt, "external_error", "sink_failed",
                       std::string("delivery failed: ") + e.what()};
      }
    }
  };
  std::vector<std::jthread> threads;
  for (std::size_t k = 1; k < lanes; ++k) {
    try {
      threads.emplace_back(
          [&lane](std::size_t lane_k) {
            logging::name_this_thread("deliver-" + std::to_string(lane_k));
            lane(lane_k);
          },
          k);
    } catch (const std::system_error& e) {
      log()->warn("publication: {} of {} delivery lanes started: {}", k, lanes, e.what());
      break;
    }
  }
  lane(0);
  threads.clear();  // joins
  return outcomes;
}

// Writes `outcomes` in one statement and forgets them once committed.
// Returns the jobs moved.
int record(db::Pool& pool, std::vector<Outcome>& outcomes) {
  if (outcomes.empty()) return 0;
  std::vector<std::int64_t> ids, attempts;
  std::vector<std::string> statuses, subtypes, messages;
  for (const Outcome& o : outcomes) {
    ids.push_back(o.id);
    attempts.push_back(o.attempt);
    statuses.push_back(o.status);
    subtypes.push_back(o.subtype);
    messages.push_back(o.message);
  }
  // One statement, its own transaction; a failure keeps the outcomes for the
  // next pass (the statement changes only jobs still processed and claimed).
  const auto moved = pool.exec_once(kRecordOutcomes, {ids, attempts, statuses, subtypes, messages}).affected_rows();
  outcomes.clear();
  return static_cast<int>(moved);
}

}  // namespace

int publish_batch(db::Pool& pool, const model::SystemParameters& params, const Settings& settings,
                  PublishState& state) {
  std::vector<Outcome>& unrecorded = state.unrecorded;
  // What a failed pass delivered but could not record is recorded first,
  // without delivering it again (its claim still keeps others off it).
  int moved = record(pool, unrecorded);
  if (state.claim_in_doubt) {
    // Nothing of this instance is delivered or unrecorded now: a claim of
    // its own is the one in doubt (e2e_chaos: PostgreSQL stopped during the
    // claim, the job then waited the whole claim, 5 min).
    pool.exec_once(kReleaseOwnClaims, {settings.instance});
    state.claim_in_doubt = false;
  }
  state.claim_in_doubt = true;  // until the claim's rows are in hand
  const ClaimTimes times(Clock::now(), settings.claim);
  const db::Result claimed =
      pool.exec_once(kClaimProcessed, {settings.batch_size, static_cast<std::int64_t>(settings.claim.count()),
                                       settings.instance, std::string(kServiceName)});
  state.claim_in_doubt = false;
  // Delivered outside any transaction: no row lock is held while a sink
  // answers. The jobs that deliver nothing are done already.
  std::vector<Claimed> jobs;
  for (const auto row : claimed) {
    if (row["done"].as_bool()) ++moved;
    else jobs.push_back(read_claimed(row));
  }
  if (jobs.empty()) return moved;
  std::sort(jobs.begin(), jobs.end(), [](const Claimed& a, const Claimed& b) { return a.job.id < b.job.id; });
  std::vector<std::int64_t> not_started;
  for (Outcome& o : deliver_all(jobs, params, settings, state, times)) {
    if (o.status.empty()) not_started.push_back(o.id);
    else unrecorded.push_back(std::move(o));
  }
  if (!not_started.empty()) {
    log()->warn(
        "publication: {} claimed job(s) not delivered within half the claim ({} ms); released for the next pass",
        not_started.size(), settings.claim.count());
    state.claim_in_doubt = true;  // if this fails, the next pass frees every claim of its own
    pool.exec_once(kReleaseClaims, {not_started, settings.instance});
    state.claim_in_doubt = false;
  }
  moved += record(pool, unrecorded);
  return moved;
}

int retry_claimed(db::Tx& tx, const db::Result& due) {
  std::vector<std::int64_t> ids;
  for (const auto row : due) ids.push_back(row["id"].as_int());
  std::vector<std::int64_t> checked;
  for (const auto row : tx.exec(kSetErrorChecked, {ids})) checked.push_back(row["id"].as_int());
  if (checked.empty()) return 0;
  return static_cast<int>(tx.exec(kSetProcessedAgain, {checked}).affected_rows());
}

std::optional<std::chrono::milliseconds> next_retry(db::Pool& pool, const Settings& settings) {
  const auto r = pool.exec_idempotent(
      kNextRetry, {settings.backoff_base.count(), settings.backoff_max.count(), std::string(kServiceName)});
  if (r.empty() || r[0]["ms"].is_null()) return std::nullopt;
  return std::chrono::milliseconds(std::max<std::int64_t>(1, r[0]["ms"].as_int()));
}

runtime::ServiceSpec spec() {
  runtime::ServiceSpec s;
  s.name = kServiceName;
  s.schema = runtime::service_schema();
  s.schema.add({.name = "CONVEYOR_PUBLICATION_BATCH_SIZE",
                .type = config::Type::integer,
                .default_value = "100",
                .help = "jobs claimed per publication pass (delivered outside the transaction)",
                .min = 1,
                .max = 10000});
  s.schema.add({.name = "CONVEYOR_PUBLICATION_CONCURRENCY",
                .type = config::Type::integer,
                .default_value = "8",
                .help = "jobs of a pass delivered at once, each lane on its own kept-alive connections",
                .min = 1,
                .max = 64});
  s.schema.add({.name = "CONVEYOR_PUBLICATION_CLAIM_MS",
                .type = config::Type::duration_ms,
                .default_value = "5m",
                .help = "how long claimed jobs are kept from other replicas while they are delivered; a claim "
                        "never recorded (the process died) ends then and the jobs are delivered again",
                .min = 1000});
  s.schema.add({.name = "CONVEYOR_PUBLICATION_BACKOFF_BASE_MS",
                .type = config::Type::duration_ms,
                .default_value = "1s",
                .help = "back-off after the first sink failure; doubles per failure",
                .min = 1});
  s.schema.add({.name = "CONVEYOR_PUBLICATION_BACKOFF_MAX_MS",
                .type = config::Type::duration_ms,
                .default_value = "60s",
                .help = "longest back-off between publication attempts",
                .min = 1});
  s.wake_on = {kProcessedEvent, kExternalErrorEvent};
  return s;
}

void setup(runtime::Context& ctx) {
  const auto released = ctx.db().transact(
      [&](db::Tx& tx) { return tx.exec(kReleaseOwnClaims, {ctx.instance_id()}).affected_rows(); }, tx_options());
  if (released > 0)
    ctx.log()->info("publication: {} job(s) claimed by this instance's last run are free again", released);
  ctx.log()->info("publication: data dir {}, kafka sinks {}", ctx.config().get_string("CONVEYOR_DATA_DIR"),
                  ctx.producer() != nullptr ? "enabled" : "disabled (no broker)");
}

runtime::StageLoop stage_loop(runtime::Context& ctx) {
  auto settings = std::make_shared<Settings>();
  settings->data_dir = std::filesystem::absolute(ctx.config().get_string("CONVEYOR_DATA_DIR"));
  settings->batch_size = static_cast<int>(ctx.config().get_int("CONVEYOR_PUBLICATION_BATCH_SIZE"));
  settings->claim = ctx.config().get_duration("CONVEYOR_PUBLICATION_CLAIM_MS");
  settings->backoff_base = ctx.config().get_duration("CONVEYOR_PUBLICATION_BACKOFF_BASE_MS");
  settings->backoff_max = ctx.config().get_duration("CONVEYOR_PUBLICATION_BACKOFF_MAX_MS");
  settings->delivery_concurrency = static_cast<int>(ctx.config().get_int("CONVEYOR_PUBLICATION_CONCURRENCY"));
  settings->producer = ctx.producer();
  settings->instance = ctx.instance_id();
  auto& moved = ctx.metrics().counter("conveyor_publication_jobs_total",
                                      "jobs moved out of processed or external_error by publication");
  runtime::StageStep retry;
  retry.name = "retry";
  retry.claim = [settings](db::Tx&, const runtime::Pass& pass) {
    return runtime::Claim{
        kRetryDue,
        {settings->backoff_base.count(), settings->backoff_max.count(), std::string(kServiceName), pass.batch_size}};
  };
  retry.apply = [](db::Tx& tx, const db::Result& due, const runtime::Pass&) { return retry_claimed(tx, due); };
  // Back-offs end without any event: wake for the next one.
  retry.next_due = [settings](runtime::Context& c) { return next_retry(c.db(), *settings); };
  retry.moved = &moved;
  // A job enters its back-off by becoming external_error; a processed job
  // is not the retry step's (nor is its back-off moved by one).
  retry.woken_by = {kExternalErrorEvent};
  runtime::StageStep publish;
  publish.name = "publish";
  // Delivered but not recorded yet, or a claim in doubt (a failed pass):
  // dealt with by the next one.
  auto state = std::make_shared<PublishState>();
  publish.run = [settings, state](const runtime::Pass& pass) {
    return publish_batch(pass.ctx.db(), pass.parameters, *settings, *state);
  };
  publish.moved = &moved;
  publish.woken_by = {kProcessedEvent};
  runtime::StageLoopOptions options;
  options.name = "publication";
  options.steps = {std::move(retry), std::move(publish)};
  options.batch_size = settings->batch_size;
  return runtime::StageLoop(std::move(options));
}

void loop(runtime::Context& ctx) { stage_loop(ctx).run(ctx); }

}  // namespace conveyor::publication
