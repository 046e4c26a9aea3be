// The outbox relay (see relay.hpp for the contract).
#include "conveyor/bus/relay.hpp"

#include "conveyor/bus/cloudevent.hpp"
#include "conveyor/db/db.hpp"
#include "conveyor/logging/logging.hpp"

namespace conveyor::bus {

namespace {

constexpr const char* kChannel = "conveyor_outbox";

constexpr db::Statement kBackendPid{"relay_backend_pid", "SELECT pg_backend_pid()"};
constexpr db::Statement kUnsent{
    "relay_unsent",
    "SELECT id, topic, key, type, coalesce(subject, ''), payload::text, "
    "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), pg_backend_pid(), "
    "coalesce(source, '') "
    "FROM conveyor.outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1"};
constexpr db::Statement kMarkSent{
    "relay_mark_sent",
    "UPDATE conveyor.outbox SET sent_at = clock_timestamp() WHERE id = ANY($1::bigint[]) AND sent_at IS NULL"};
// Keeps the outbox small (DESIGN §8): sent rows older than the retention go, in batches.
constexpr db::Statement kPurge{
    "relay_purge",
    "DELETE FROM conveyor.outbox WHERE id IN ("
    " SELECT id FROM conveyor.outbox WHERE sent_at IS NOT NULL AND sent_at < now() - make_interval("
    "  hours => (SELECT outbox_retention_hours FROM conveyor.system_parameters WHERE id)) LIMIT 5000)"};

db::TxOptions no_retry() {
  db::TxOptions o;
  o.max_attempts = 1;  // a broken session may have lost the lock: never retry silently
  return o;
}

}  // namespace

struct Relay::Impl {
  explicit Impl(const RelayOptions& o) : session(o.database_url, "conveyor-relay") {}
  db::Session session;
  std::unique_ptr<Producer> producer;
  bool leader = false;
  bool listening = false;
  std::int64_t backend_pid = 0;  // the session that holds the lock
  std::chrono::steady_clock::time_point last_purge{};
};

Relay::Relay(RelayOptions options) : options_(std::move(options)), impl_(std::make_unique<Impl>(options_)) {}

Relay::~Relay() { stop(); }

void Relay::start() {
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] { loop(); });
}

void Relay::stop() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
  if (impl_->leader) {
    try {
      impl_->session.advisory_unlock(options_.lock_key);
    } catch (const Error& e) {
      logging::get("relay")->warn("releasing the relay lock failed: {}", e.what());
    }
    impl_->leader = false;
    stats_.leader = false;
  }
}

std::size_t Relay::run_once() {
  auto& im = *impl_;
  auto log = logging::get("relay");
  try {
    if (!im.leader) {
      if (!im.session.try_advisory_lock(options_.lock_key)) return 0;
      im.leader = true;
      im.backend_pid = im.session.transact([](db::Tx& tx) { return tx.exec(kBackendPid)[0][0].as_int(); }, no_retry());
      stats_.leader = true;
      log->info("relay is the leader (backend {})", im.backend_pid);
    }
    if (!im.listening) {
      im.session.listen(kChannel);
      im.listening = true;
    }
    if (!im.producer) {
      ProducerOptions po;
      po.brokers = options_.brokers;
      po.client_id = "conveyor-relay";
      im.producer = std::make_unique<Producer>(po);
    }
    std::size_t published = 0;
    for (;;) {
      struct Row {
        std::int64_t id;
        Message msg;
      };
      std::vector<Row> rows;
      bool lost = false;
      im.session.transact(
          [&](db::Tx& tx) {
            auto r = tx.exec(kUnsent, {static_cast<std::int64_t>(options_.batch_size)});
            for (auto row : r) {
              if (row[7].as_int() != im.backend_pid) {
                lost = true;
                return;
              }
              CloudEvent ev;
              ev.id = row[0].as_string();
              // Who made the change (the outbox row's application_name,
              // migration 20261218010100), not this relay; older rows have none.
              ev.source = row[8].as_string().empty() ? options_.source : row[8].as_string();
              ev.type = row[3].as_string();
              ev.subject = row[4].as_string();
              ev.time = row[6].as_string();
              ev.data = nlohmann::json::parse(row[5].view());
              rows.push_back({row[0].as_int(),
                              {topic_name(options_.topic_prefix, row[1].view()),
                               row[2].as_string(),
                               encode(ev),
                               {{kContentTypeHeader, kStructuredContentType}}}});
            }
          },
          no_retry());
      if (lost) {
        // The session was replaced under us: the lock went with the old one.
        log->warn("relay lost its database session; giving up leadership");
        im.leader = im.listening = false;
        stats_.leader = false;
        im.session.reset();
        return published;
      }
      if (rows.empty()) break;
      std::vector<Message> msgs;
      msgs.reserve(rows.size());
      for (auto& r : rows) msgs.push_back(r.msg);
      auto acked = im.producer->send_batch(msgs, options_.send_timeout);
      std::vector<std::int64_t> sent;
      for (std::size_t i = 0; i < rows.size(); ++i) {
        if (acked[i]) sent.push_back(rows[i].id);
      }
      if (!sent.empty()) {
        im.session.transact([&](db::Tx& tx) { tx.exec(kMarkSent, {sent}); }, no_retry());
      }
      published += sent.size();
      stats_.published += sent.size();
      stats_.batches += 1;
      if (sent.size() < rows.size()) {
        stats_.failed += rows.size() - sent.size();
        log->warn("relay: broker did not ack {} of {} events; they stay in the outbox and are retried",
                  rows.size() - sent.size(), rows.size());
        break;
      }
      if (rows.size() < options_.batch_size) break;
    }
    auto now = std::chrono::steady_clock::now();
    if (now - im.last_purge > std::chrono::minutes(1)) {
      im.last_purge = now;
      im.session.transact([](db::Tx& tx) { tx.exec(kPurge); }, no_retry());
    }
    return published;
  } catch (const db::DbError& e) {
    log->warn("relay: database: {}; will reconnect", e.what());
    im.leader = im.listening = false;
    stats_.leader = false;
    im.session.reset();
    return 0;
  }
}

void Relay::loop() {
  auto log = logging::get("relay");
  auto slice = std::min<std::chrono::milliseconds>(options_.poll_interval, std::chrono::milliseconds(250));
  auto next_poll = std::chrono::steady_clock::now();
  while (!stopping_) {
    try {
      if (std::chrono::steady_clock::now() >= next_poll) {
        run_once();
        next_poll = std::chrono::steady_clock::now() + options_.poll_interval;
      }
      if (impl_->listening) {
        if (impl_->session.wait_for_notification(slice)) {
          run_once();
          next_poll = std::chrono::steady_clock::now() + options_.poll_interval;
        }
      } else {
        // Not the leader (or no session yet): wait for the next try, in slices so stop() is quick.
        auto until = std::min(next_poll, std::chrono::steady_clock::now() + slice);
        while (!stopping_ && std::chrono::steady_clock::now() < until) {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      }
    } catch (const Error& e) {
      log->error("relay: {}", e.what());
      impl_->leader = impl_->listening = false;
      stats_.leader = false;
      impl_->session.reset();
      next_poll = std::chrono::steady_clock::now() + options_.poll_interval;
    }
  }
}

}  // namespace conveyor::bus
