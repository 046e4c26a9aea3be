#include "publication.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <string_view>
#include <vector>

#include "conveyor/bus/cloudevent.hpp"
#include "conveyor/bus/kafka.hpp"
#include "conveyor/config/config.hpp"
#include "conveyor/error/error.hpp"
#include "conveyor/http/client.hpp"
#include "conveyor/logging/logging.hpp"

namespace conveyor::publication {
namespace {

constexpr db::Statement kSelectProcessed{
    "publication_select_processed",
    R"(SELECT id, job_type, attempt, params::text AS params, config::text AS config,
              result::text AS result,
              to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS now
       FROM conveyor.job
       WHERE status = 'processed' AND canceled_at IS NULL
       ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)"};

// Publication attempts so far = external_error rows that left processed.
constexpr db::Statement kPublicationFailures{
    "publication_failures",
    "SELECT count(*) AS n FROM conveyor.job_status_change "
    "WHERE job_id = $1 AND from_status = 'processed' AND to_status = 'external_error'"};

constexpr db::Statement kSetDone{
    "publication_set_done",
    "UPDATE conveyor.job SET status = 'done', error_subtype = NULL, error_message = NULL "
    "WHERE id = $1 AND status = 'processed'"};

constexpr db::Statement kSetError{
    "publication_set_error",
    "UPDATE conveyor.job SET status = $2, error_subtype = $3, error_message = $4 "
    "WHERE id = $1 AND status = 'processed'"};

// external_error jobs that came from processed (other external errors
// belong to other stages), with when their back-off ends:
// last change + conveyor.retry_backoff (min(base * 2^(n-1), max)) for n
// publication failures. $1 base ms, $2 max ms.
#define CONVEYOR_PUBLICATION_DUE_SQL                                                              \
  "SELECT j.id, lc.at + conveyor.retry_backoff($1::bigint / 1000.0, f.n::int, $2::bigint / 1000.0) AS due " \
  "FROM conveyor.job j "                                                                          \
  "CROSS JOIN LATERAL (SELECT count(*) AS n FROM conveyor.job_status_change c "                   \
  "  WHERE c.job_id = j.id AND c.from_status = 'processed' AND c.to_status = 'external_error') f " \
  "CROSS JOIN LATERAL (SELECT l.from_status, l.at FROM conveyor.job_status_change l "             \
  "  WHERE l.job_id = j.id ORDER BY l.id DESC LIMIT 1) lc "                                     \
  "WHERE j.status = 'external_error' AND j.canceled_at IS NULL AND lc.from_status = 'processed' "

constexpr db::Statement kRetryDue{
    "publication_retry_due",
    "SELECT d.id FROM conveyor.job j2 JOIN (" CONVEYOR_PUBLICATION_DUE_SQL
    ") d ON d.id = j2.id WHERE d.due <= clock_timestamp() "
    "ORDER BY d.id LIMIT $3 FOR UPDATE OF j2 SKIP LOCKED"};

constexpr db::Statement kNextRetry{
    "publication_next_retry",
    "SELECT ceil(extract(epoch FROM (min(d.due) - clock_timestamp())) * 1000)::bigint AS ms "
    "FROM (" CONVEYOR_PUBLICATION_DUE_SQL ") d"};

#undef CONVEYOR_PUBLICATION_DUE_SQL

constexpr db::Statement kSetErrorChecked{
    "publication_set_error_checked",
    "UPDATE conveyor.job SET status = 'error_checked' WHERE id = $1 AND status = 'external_error'"};

constexpr db::Statement kSetProcessedAgain{
    "publication_set_processed_again",
    "UPDATE conveyor.job SET status = 'processed' WHERE id = $1 AND status = 'error_checked'"};

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

void publish_webhook(const nlohmann::json& sink, const JobRecord& job, const std::string& body,
                     const model::SystemParameters& params) {
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
  http::ClientResponse response;
  try {
    response = http::http_request("POST", url, body, headers, timeout);
  } catch (const Error& e) {
    sink_failure("webhook sink " + shown + ": " + e.what());
  }
  if (response.status < 200 || response.status > 299) {
    sink_failure("webhook sink " + shown + ": answered HTTP " + std::to_string(response.status));
  }
}

void publish_kafka(const nlohmann::json& sink, const JobRecord& job, const std::string& body,
                   const Settings& settings) {
  const std::string topic = setting(sink, "topic");
  if (topic.empty()) sink_failure("kafka sink: no topic");
  if (settings.producer == nullptr) {
    sink_failure("kafka sink " + topic + ": no broker configured (CONVEYOR_KAFKA_BROKERS is empty)");
  }
  const std::array<bus::Message, 1> messages{bus::Message{topic, std::to_string(job.id), body}};
  const auto acked = settings.producer->send_batch(messages, std::chrono::seconds(10));
  if (acked.empty() || !acked[0]) sink_failure("kafka sink " + topic + ": not acknowledged within 10 s");
}

void publish_file(const nlohmann::json& sink, const JobRecord& job, const std::string& body,
                  const Settings& settings) {
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
  if (const auto at = authority.rfind('@'); at != std::string_view::npos)
    authority.remove_prefix(at + 1);
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
  if (port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) {
        return std::isdigit(static_cast<unsigned char>(c));
      })) {
    return std::nullopt;
  }
  std::string canonical = model::canonical_host(host);
  if (canonical.empty()) return std::nullopt;
  return canonical;
}

std::optional<std::string> sink_refusal(const std::string& url,
                                        const model::SystemParameters& params) {
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
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(body.data()), body.size(), digest.data(), &length) == nullptr) {
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
                     const model::SystemParameters& params, const Settings& settings) {
  const std::string kind = setting(sink, "kind");
  if (kind == "webhook")
    publish_webhook(sink, job, body, params);
  else if (kind == "kafka") publish_kafka(sink, job, body, settings);
  else if (kind == "file") publish_file(sink, job, body, settings);
  else sink_failure("unknown sink kind '" + kind + "'");
}

int publish_batch(db::Pool& pool, const model::SystemParameters& params, const Settings& settings,
                  Delivered* delivered) {
  // Publishing happens inside the transaction so the row locks keep other
  // replicas off these jobs. What every sink took is remembered in
  // `delivered` until the move to done is committed, so a retried
  // transaction (or the next pass after the database is back) does not
  // publish it again (see the header).
  std::vector<std::pair<std::int64_t, int>> done_now;
  const int n = pool.transact(
      [&](db::Tx& tx) {
        int moved = 0;
        done_now.clear();
        for (const auto row : tx.exec(kSelectProcessed, {settings.batch_size})) {
          JobRecord job;
          job.id = row["id"].as_int();
          job.job_type = row["job_type"].as_string();
          job.attempt = static_cast<int>(row["attempt"].as_int());
          job.params = nlohmann::json::parse(row["params"].view());
          job.result = row["result"].is_null() ? nlohmann::json() : nlohmann::json::parse(row["result"].view());
          job.time = row["now"].as_string();
          const auto config =
              row["config"].is_null() ? nlohmann::json::object() : nlohmann::json::parse(row["config"].view());
          const std::pair<std::int64_t, int> key{job.id, job.attempt};
          if (delivered != nullptr && delivered->contains(key)) {
            moved += static_cast<int>(tx.exec(kSetDone, {job.id}).affected_rows());
            done_now.push_back(key);
            continue;
          }
          const std::string body = event_json(job);

          std::vector<std::string> failures;
          if (const auto sinks = config.find("sinks"); sinks != config.end() && sinks->is_array()) {
            for (const auto& sink : *sinks) {
              try {
                publish_to_sink(sink, job, body, params, settings);
              } catch (const Error& e) {
                failures.emplace_back(e.what());
              } catch (const std::exception& e) {
                // Filesystem and JSON errors of one sink fail that sink, not the batch.
                failures.emplace_back(std::string(setting(sink, "kind")) + " sink: " + e.what());
              }
            }
          }
          if (failures.empty()) {
            if (delivered != nullptr) delivered->insert(key);
            moved += static_cast<int>(tx.exec(kSetDone, {job.id}).affected_rows());
            done_now.push_back(key);
            continue;
          }
          std::string message;
          for (const auto& f : failures) message += (message.empty() ? "" : "; ") + f;
          const auto previous = tx.exec(kPublicationFailures, {job.id})[0]["n"].as_int();
          const auto attempt_no = previous + 1;
          if (attempt_no >= params.publication_max_attempts) {
            message = "publication failed " + std::to_string(attempt_no) + " times (publication_max_attempts " +
                      std::to_string(params.publication_max_attempts) + "): " + message;
            log()->warn("job {}: processed -> internal_error: {}", job.id, message);
            tx.exec(kSetError, {job.id, "internal_error", "publication_failed", message});
          } else {
            log()->warn("job {}: processed -> external_error (attempt {}): {}", job.id, attempt_no, message);
            tx.exec(kSetError, {job.id, "external_error", "sink_failed", message});
          }
          ++moved;
        }
        return moved;
      },
      tx_options());
  if (delivered != nullptr) {
    for (const auto& key : done_now) delivered->erase(key);
    // Entries whose job another replica or an operator moved meanwhile are
    // never erased above; forget them before they add up.
    if (delivered->size() > 100000) delivered->clear();
  }
  return n;
}

int retry_batch(db::Pool& pool, const Settings& settings) {
  return pool.transact(
      [&](db::Tx& tx) {
        int moved = 0;
        const auto due = tx.exec(kRetryDue, {settings.backoff_base.count(), settings.backoff_max.count(),
                                             settings.batch_size});
        for (const auto row : due) {
          const std::int64_t id = row["id"].as_int();
          if (tx.exec(kSetErrorChecked, {id}).affected_rows() == 1 &&
              tx.exec(kSetProcessedAgain, {id}).affected_rows() == 1) {
            ++moved;
          }
        }
        return moved;
      },
      tx_options());
}

std::optional<std::chrono::milliseconds> next_retry(db::Pool& pool, const Settings& settings) {
  return pool.transact(
      [&](db::Tx& tx) -> std::optional<std::chrono::milliseconds> {
        const auto r = tx.exec(kNextRetry, {settings.backoff_base.count(), settings.backoff_max.count()});
        if (r.empty() || r[0]["ms"].is_null()) return std::nullopt;
        return std::chrono::milliseconds(std::max<std::int64_t>(1, r[0]["ms"].as_int()));
      },
      tx_options());
}

runtime::ServiceSpec spec() {
  runtime::ServiceSpec s;
  s.name = kServiceName;
  s.schema = runtime::service_schema();
  s.schema.add({.name = "CONVEYOR_PUBLICATION_BATCH_SIZE",
                .type = config::Type::integer,
                .default_value = "20",
                .help = "jobs per publication transaction (their rows stay locked while publishing)",
                .min = 1,
                .max = 10000});
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
  s.wake_on = {"io.conveyor.job.processed", "io.conveyor.job.external_error"};
  return s;
}

void setup(runtime::Context& ctx) {
  ctx.log()->info("publication: data dir {}, kafka sinks {}", ctx.config().get_string("CONVEYOR_DATA_DIR"),
                  ctx.producer() != nullptr ? "enabled" : "disabled (no broker)");
}

void loop(runtime::Context& ctx) {
  Settings settings;
  settings.data_dir = std::filesystem::absolute(ctx.config().get_string("CONVEYOR_DATA_DIR"));
  settings.batch_size = static_cast<int>(ctx.config().get_int("CONVEYOR_PUBLICATION_BATCH_SIZE"));
  settings.backoff_base = ctx.config().get_duration("CONVEYOR_PUBLICATION_BACKOFF_BASE_MS");
  settings.backoff_max = ctx.config().get_duration("CONVEYOR_PUBLICATION_BACKOFF_MAX_MS");
  settings.producer = ctx.producer();
  const auto poll = ctx.config().get_duration("CONVEYOR_POLL_INTERVAL_MS");
  auto& moved_total = ctx.metrics().counter("conveyor_publication_jobs_total",
                                            "jobs moved out of processed or external_error by publication");
  auto timeout = poll;
  Delivered delivered;  // survives a failed pass: see publish_batch
  do {
    timeout = poll;
    try {
      int n = 0;
      do {
        n = retry_batch(ctx.db(), settings);
        n += publish_batch(ctx.db(), *ctx.parameters(), settings, &delivered);
        moved_total.inc(n);
      } while (n > 0 && !ctx.stopping());
      // Back-offs end without any event: wake for the next one.
      if (const auto next = next_retry(ctx.db(), settings)) timeout = std::min(poll, *next);
    } catch (const Error& e) {
      // The database may be briefly away; the next wake-up or poll retries.
      ctx.log()->error("publication pass failed: {}", e.what());
    }
  } while (ctx.wait_for_work(timeout));
}

}  // namespace conveyor::publication
