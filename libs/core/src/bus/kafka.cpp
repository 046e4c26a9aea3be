// Kafka producer and consumer on librdkafka's C API. librdkafka stays in this
// file: no public header includes it.
#include "conveyor/bus/kafka.hpp"

#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <mutex>

#include <nlohmann/json.hpp>
#include <utility>

#include "conveyor/error/error.hpp"
#include "conveyor/logging/logging.hpp"

namespace conveyor::bus {
namespace {

using Clock = std::chrono::steady_clock;

std::shared_ptr<spdlog::logger> logger() { return logging::get("bus"); }

// Owns a rd_kafka_conf_t until rd_kafka_new() takes it.
struct ConfDeleter {
  void operator()(rd_kafka_conf_t* conf) const noexcept { rd_kafka_conf_destroy(conf); }
};
using ConfPtr = std::unique_ptr<rd_kafka_conf_t, ConfDeleter>;

void set(rd_kafka_conf_t* conf, const std::string& name, const std::string& value) {
  char errstr[512];
  if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
    throw Error(errc::invalid_config, "kafka: " + name + ": " + errstr);
  }
}

// librdkafka logs from its own threads; spdlog loggers are thread-safe.
void log_cb(const rd_kafka_t* /*rk*/, int level, const char* facility, const char* message) {
  // syslog levels: 0-3 error, 4 warning, 5-6 notice/info, 7 debug.
  auto spd_level = level <= 3   ? spdlog::level::err
                   : level == 4 ? spdlog::level::warn
                   : level <= 6 ? spdlog::level::info
                                : spdlog::level::debug;
  logger()->log(spd_level, "librdkafka {}: {}", facility, message);
}

// Called from rd_kafka_poll()/rd_kafka_consumer_poll() on our thread. Most
// errors are transient (a broker restarting): librdkafka retries by itself.
void error_cb(rd_kafka_t* rk, int err, const char* reason, void* /*opaque*/) {
  auto code = static_cast<rd_kafka_resp_err_t>(err);
  if (code == RD_KAFKA_RESP_ERR__FATAL) {
    char fatal[512];
    rd_kafka_fatal_error(rk, fatal, sizeof fatal);
    logger()->error("kafka: fatal error: {}", fatal);
    return;
  }
  // A failed connection is already logged by librdkafka itself (FAIL).
  if (code == RD_KAFKA_RESP_ERR__TRANSPORT) return;
  logger()->warn("kafka: {}: {}", rd_kafka_err2name(code), reason);
}

ConfPtr base_conf(const std::string& brokers, const std::string& client_id) {
  if (brokers.empty()) {
    throw Error(errc::invalid_config, "kafka: bootstrap.servers: no brokers given");
  }
  ConfPtr conf(rd_kafka_conf_new());
  set(conf.get(), "bootstrap.servers", brokers);
  set(conf.get(), "client.id", client_id);
  // A broker that comes back is found within a second (librdkafka's default
  // backs off up to 10 s between attempts, which is the whole recovery time
  // after a short broker outage).
  set(conf.get(), "reconnect.backoff.max.ms", "1000");
  rd_kafka_conf_set_log_cb(conf.get(), log_cb);
  rd_kafka_conf_set_error_cb(conf.get(), error_cb);
  return conf;
}

rd_kafka_t* new_handle(rd_kafka_type_t type, ConfPtr conf) {
  char errstr[512];
  rd_kafka_t* rk = rd_kafka_new(type, conf.get(), errstr, sizeof errstr);
  if (rk == nullptr) throw Error(errc::invalid_config, std::string("kafka: ") + errstr);
  conf.release();  // rd_kafka_new() owns it now
  return rk;
}

int to_ms(std::chrono::milliseconds d) {
  return static_cast<int>(std::clamp<std::int64_t>(d.count(), 0, 24 * 3600 * 1000));
}

// The record headers of a consumed message (a value-less header reads as "").
Headers headers_of(rd_kafka_message_t* msg) {
  Headers out;
  rd_kafka_headers_t* headers = nullptr;  // owned by msg
  if (rd_kafka_message_headers(msg, &headers) != RD_KAFKA_RESP_ERR_NO_ERROR) return out;
  const char* name = nullptr;
  const void* value = nullptr;
  std::size_t size = 0;
  for (std::size_t i = 0; rd_kafka_header_get_all(headers, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
       ++i) {
    out.emplace_back(name, value != nullptr ? std::string(static_cast<const char*>(value), size) : "");
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------- producer

struct Producer::Impl {
  ProducerOptions options;
  std::mutex mutex;  // serialises send_batch(); delivery reports run inside it
  rd_kafka_t* rk = nullptr;

  // Delivery reports carry a sequence number as their opaque. Messages of
  // the current batch have sequence numbers in [batch_first, batch_first +
  // results.size()); a late report for an earlier batch that timed out is
  // ignored (that batch already answered false for it).
  std::uint64_t next_seq = 1;
  std::uint64_t batch_first = 0;
  std::vector<bool> results;
  std::size_t outstanding = 0;

  static void dr_msg_cb(rd_kafka_t* /*rk*/, const rd_kafka_message_t* msg, void* opaque) {
    auto* self = static_cast<Impl*>(opaque);
    auto seq = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(msg->_private));
    bool ok = msg->err == RD_KAFKA_RESP_ERR_NO_ERROR;
    // Purged by send_batch at its timeout: reported there, once per batch.
    if (!ok && msg->err != RD_KAFKA_RESP_ERR__PURGE_QUEUE) {
      logger()->warn("kafka: delivery to {} failed: {}", rd_kafka_topic_name(msg->rkt), rd_kafka_err2str(msg->err));
    }
    if (seq < self->batch_first || seq >= self->batch_first + self->results.size()) return;
    self->results[seq - self->batch_first] = ok;
    --self->outstanding;
  }

  void create() {
    ConfPtr conf = base_conf(options.brokers, options.client_id);
    set(conf.get(), "enable.idempotence", "true");
    set(conf.get(), "acks", "all");
    set(conf.get(), "linger.ms", std::to_string(options.linger_ms));
    set(conf.get(), "message.timeout.ms", std::to_string(options.message_timeout.count()));
    for (const auto& [name, value] : options.extra) set(conf.get(), name, value);
    rd_kafka_conf_set_opaque(conf.get(), this);
    rd_kafka_conf_set_dr_msg_cb(conf.get(), dr_msg_cb);
    rk = new_handle(RD_KAFKA_PRODUCER, std::move(conf));
  }

  // An idempotent producer that hit a fatal error (e.g. fenced sequence
  // numbers) refuses every further message: start a fresh one.
  void recreate_if_fatal() {
    char errstr[512];
    if (rd_kafka_fatal_error(rk, errstr, sizeof errstr) == RD_KAFKA_RESP_ERR_NO_ERROR) return;
    logger()->error("kafka: producer fatal error, creating a new producer: {}", errstr);
    rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(rk, 0);
    rd_kafka_destroy(rk);
    rk = nullptr;
    create();
  }

  // At a batch's timeout (a broker down): its messages not yet sent leave
  // librdkafka's queue. The caller has them as unsent and sends them again
  // (the relay: the same outbox rows, next pass); kept, each retry during an
  // outage would add one more copy, held in memory and delivered when the
  // broker is back. Messages already in flight may still be delivered: at
  // least once, as ever.
  void drop_queued(std::size_t unanswered) {
    const rd_kafka_resp_err_t err = rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE);
    rd_kafka_poll(rk, 0);  // the purged messages' reports
    logger()->warn("kafka: {} message(s) not acknowledged in time, dropped from the send queue ({}), {} in flight",
                   unanswered,
                   err == RD_KAFKA_RESP_ERR_NO_ERROR ? "the caller has them as unsent" : rd_kafka_err2str(err),
                   rd_kafka_outq_len(rk));
  }

  // Enqueues one message; on a full local queue, serves delivery reports
  // until there is room or the deadline passes.
  rd_kafka_resp_err_t produce(const Message& m, std::uint64_t seq, Clock::time_point deadline) {
    for (;;) {
      // librdkafka owns the headers once the message is enqueued, not before.
      rd_kafka_headers_t* headers = nullptr;
      if (!m.headers.empty()) {
        headers = rd_kafka_headers_new(m.headers.size());
        for (const auto& [name, value] : m.headers) {
          rd_kafka_header_add(headers, name.data(), static_cast<ssize_t>(name.size()), value.data(),
                              static_cast<ssize_t>(value.size()));
        }
      }
      rd_kafka_resp_err_t err = rd_kafka_producev(
          rk, RD_KAFKA_V_TOPIC(m.topic.c_str()), RD_KAFKA_V_KEY(m.key.empty() ? nullptr : m.key.data(), m.key.size()),
          RD_KAFKA_V_VALUE(const_cast<char*>(m.value.data()), m.value.size()), RD_KAFKA_V_HEADERS(headers),
          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
          RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(static_cast<std::uintptr_t>(seq))), RD_KAFKA_V_END);
      if (err != RD_KAFKA_RESP_ERR_NO_ERROR && headers != nullptr) rd_kafka_headers_destroy(headers);
      if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || Clock::now() >= deadline) return err;
      rd_kafka_poll(rk, 10);
    }
  }
};

Producer::Producer(const ProducerOptions& options) : impl_(std::make_unique<Impl>()) {
  impl_->options = options;
  impl_->create();
}

Producer::~Producer() {
  if (impl_->rk == nullptr) return;
  std::lock_guard lock(impl_->mutex);
  if (rd_kafka_flush(impl_->rk, 5000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    logger()->warn("kafka: producer closed with {} message(s) undelivered", rd_kafka_outq_len(impl_->rk));
  }
  rd_kafka_destroy(impl_->rk);
}

std::vector<bool> Producer::send_batch(std::span<const Message> messages, std::chrono::milliseconds timeout) {
  std::lock_guard lock(impl_->mutex);
  Impl& p = *impl_;
  const auto deadline = Clock::now() + timeout;
  p.recreate_if_fatal();

  p.batch_first = p.next_seq;
  p.next_seq += messages.size();
  p.results.assign(messages.size(), false);
  p.outstanding = 0;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    rd_kafka_resp_err_t err = p.produce(messages[i], p.batch_first + i, deadline);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      ++p.outstanding;
    } else {
      logger()->warn("kafka: cannot enqueue message for {}: {}", messages[i].topic, rd_kafka_err2str(err));
    }
  }
  while (p.outstanding > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) break;
    rd_kafka_poll(p.rk, std::min(to_ms(left), 100));
  }
  if (p.outstanding > 0) p.drop_queued(p.outstanding);
  // Later reports for this batch's messages still in flight are ignored.
  std::vector<bool> results = std::move(p.results);
  p.results.clear();
  p.outstanding = 0;
  return results;
}

// ---------------------------------------------------------------- consumer

struct Consumer::Impl {
  rd_kafka_t* rk = nullptr;
  std::size_t max_message_bytes = 0;
  std::atomic<bool> broker_up{true};  // until librdkafka says otherwise

  // librdkafka's statistics JSON (trusted: it is our own library's output):
  // up when a broker with a node id (a real member, not the bootstrap
  // address) is in state UP; before any is known, the bootstrap's state.
  static int stats_cb(rd_kafka_t* /*rk*/, char* json, size_t len, void* opaque) {
    auto* self = static_cast<Impl*>(opaque);
    const nlohmann::json stats = nlohmann::json::parse(json, json + len, nullptr, false);
    const auto brokers = stats.is_object() ? stats.find("brokers") : stats.end();
    if (brokers == stats.end() || !brokers->is_object()) return 0;
    bool member_known = false, member_up = false, bootstrap_up = false;
    for (const auto& [name, b] : brokers->items()) {
      if (!b.is_object()) continue;
      const bool up = b.value("state", "") == "UP";
      if (b.value("nodeid", -1) >= 0) {
        member_known = true;
        member_up = member_up || up;
      } else if (name.find("/internal") == std::string::npos) {
        bootstrap_up = bootstrap_up || up;
      }
    }
    self->broker_up = member_known ? member_up : bootstrap_up;
    return 0;  // librdkafka frees the JSON
  }

  static void error_cb(rd_kafka_t* rk, int err, const char* reason, void* opaque) {
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) static_cast<Impl*>(opaque)->broker_up = false;
    bus::error_cb(rk, err, reason, opaque);
  }
  // Next offset (last returned + 1) per partition, not yet committed.
  std::map<std::pair<std::string, std::int32_t>, std::int64_t> pending;
};

Consumer::Consumer(const ConsumerOptions& options) : impl_(std::make_unique<Impl>()) {
  if (options.group_id.empty()) throw Error(errc::invalid_config, "kafka: group.id: empty");
  if (options.topics.empty()) throw Error(errc::invalid_config, "kafka: no topics to subscribe");
  ConfPtr conf = base_conf(options.brokers, options.client_id);
  set(conf.get(), "group.id", options.group_id);
  // Offsets move only when the caller's work is committed (commit()).
  set(conf.get(), "enable.auto.commit", "false");
  set(conf.get(), "enable.auto.offset.store", "false");
  set(conf.get(), "auto.offset.reset", options.auto_offset_reset);
  // Events are on the critical path: do not let the broker hold fetches.
  set(conf.get(), "fetch.wait.max.ms", "10");
  set(conf.get(), "session.timeout.ms", "10000");
  set(conf.get(), "heartbeat.interval.ms", "1000");
  // A consumer may start before the first event of its topic was produced
  // (one topic per job event type: some types are rare). Where the broker
  // does not create topics on first use, a topic made later is found by the
  // next metadata refresh: every 10 s, not librdkafka's 5 min.
  set(conf.get(), "allow.auto.create.topics", "true");
  set(conf.get(), "topic.metadata.refresh.interval.ms", "10000");
  // Broker state for readiness (broker_up()), within a second or two.
  set(conf.get(), "statistics.interval.ms", "1000");
  for (const auto& [name, value] : options.extra) set(conf.get(), name, value);
  impl_->max_message_bytes = options.max_message_bytes;
  rd_kafka_conf_set_opaque(conf.get(), impl_.get());
  rd_kafka_conf_set_stats_cb(conf.get(), Impl::stats_cb);
  rd_kafka_conf_set_error_cb(conf.get(), Impl::error_cb);
  impl_->rk = new_handle(RD_KAFKA_CONSUMER, std::move(conf));
  rd_kafka_poll_set_consumer(impl_->rk);

  rd_kafka_topic_partition_list_t* topics = rd_kafka_topic_partition_list_new(static_cast<int>(options.topics.size()));
  for (const auto& topic : options.topics) {
    rd_kafka_topic_partition_list_add(topics, topic.c_str(), RD_KAFKA_PARTITION_UA);
  }
  rd_kafka_resp_err_t err = rd_kafka_subscribe(impl_->rk, topics);
  rd_kafka_topic_partition_list_destroy(topics);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    rd_kafka_destroy(impl_->rk);
    throw Error(errc::invalid_config, std::string("kafka: subscribe: ") + rd_kafka_err2str(err));
  }
}

Consumer::~Consumer() {
  // Leaves the group now rather than after session.timeout.ms, so the
  // partitions move to the other members at once.
  rd_kafka_resp_err_t err = rd_kafka_consumer_close(impl_->rk);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    logger()->warn("kafka: consumer close: {}", rd_kafka_err2str(err));
  }
  rd_kafka_destroy(impl_->rk);
}

std::vector<ReceivedMessage> Consumer::poll(std::size_t max, std::chrono::milliseconds timeout) {
  std::vector<ReceivedMessage> out;
  const auto deadline = Clock::now() + timeout;
  while (out.size() < max) {
    // Wait only for the first message; then take what is already fetched.
    int wait_ms = 0;
    if (out.empty()) {
      wait_ms = to_ms(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
    }
    rd_kafka_message_t* msg = rd_kafka_consumer_poll(impl_->rk, wait_ms);
    if (msg == nullptr) break;
    if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      rd_kafka_message_destroy(msg);
      continue;
    }
    if (msg->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || msg->err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC) {
      // A subscribed topic that does not exist yet (a job event type never
      // emitted, on a broker that does not create topics on first use):
      // librdkafka says so once and subscribes when a metadata refresh finds it.
      logger()->info("kafka: {}; consumed once it exists", rd_kafka_message_errstr(msg));
      rd_kafka_message_destroy(msg);
      if (out.empty() && Clock::now() >= deadline) break;
      continue;
    }
    if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      logger()->warn("kafka: consume{}{}: {}", msg->rkt != nullptr ? " from " : "",
                     msg->rkt != nullptr ? rd_kafka_topic_name(msg->rkt) : "", rd_kafka_message_errstr(msg));
      rd_kafka_message_destroy(msg);
      if (out.empty() && Clock::now() >= deadline) break;
      continue;
    }
    ReceivedMessage m;
    m.topic = rd_kafka_topic_name(msg->rkt);
    m.partition = msg->partition;
    m.offset = msg->offset;
    if (msg->key != nullptr) m.key.assign(static_cast<const char*>(msg->key), msg->key_len);
    m.headers = headers_of(msg);
    m.size = msg->len;
    m.oversized = msg->len > impl_->max_message_bytes;
    if (msg->payload != nullptr && !m.oversized) {
      m.value.assign(static_cast<const char*>(msg->payload), msg->len);
    }
    rd_kafka_message_destroy(msg);
    auto& next = impl_->pending[{m.topic, m.partition}];
    next = std::max(next, m.offset + 1);
    out.push_back(std::move(m));
  }
  return out;
}

bool Consumer::broker_up() const noexcept { return impl_->broker_up.load(); }

void Consumer::commit() {
  if (impl_->pending.empty()) return;
  rd_kafka_topic_partition_list_t* offsets = rd_kafka_topic_partition_list_new(static_cast<int>(impl_->pending.size()));
  for (const auto& [where, next] : impl_->pending) {
    rd_kafka_topic_partition_list_add(offsets, where.first.c_str(), where.second)->offset = next;
  }
  // Whatever happens below, these messages are either committed or will be
  // delivered again (to us or to the member that now owns the partition).
  impl_->pending.clear();

  // Storing fails per partition for partitions this member no longer owns
  // (a rebalance took them): those messages are redelivered to the new owner.
  rd_kafka_offsets_store(impl_->rk, offsets);
  for (int i = 0; i < offsets->cnt; ++i) {
    const auto& tp = offsets->elems[i];
    if (tp.err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      logger()->info("kafka: not committing {}[{}]@{}: {}", tp.topic, tp.partition, tp.offset,
                     rd_kafka_err2str(tp.err));
    }
  }
  rd_kafka_topic_partition_list_destroy(offsets);

  rd_kafka_resp_err_t err = rd_kafka_commit(impl_->rk, nullptr, 0);
  // _NO_OFFSET: nothing stored was new (or nothing is assigned): nothing to do.
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
    throw Error(errc::unavailable, std::string("kafka: commit: ") + rd_kafka_err2str(err));
  }
}

}  // namespace conveyor::bus
