// The outbox relay (see relay.hpp for the contract).
#include "conveyor/bus/relay.hpp"

#include <optional>
#include <utility>

#include "conveyor/bus/cloudevent.hpp"
#include "conveyor/bus/topics.hpp"
#include "conveyor/db/db.hpp"
#include "conveyor/logging/logging.hpp"

namespace conveyor::bus {

namespace {

constexpr db::Statement kBackendPid{"relay_backend_pid", "SELECT pg_backend_pid()"};
// One statement per round, run alone (one round trip): marks sent the rows
// the broker acked in the round before ($2), and reads the next batch of
// unsent rows ($1 at most). The read sees the outbox as it was before the
// mark, so the rows just marked are left out by id.
constexpr db::Statement kMarkAndRead{
    "relay_mark_and_read",
    "WITH marked AS (UPDATE conveyor.outbox SET sent_at = clock_timestamp() "
    "                WHERE id = ANY($2::bigint[]) AND sent_at IS NULL RETURNING id) "
    "SELECT id, topic, key, type, coalesce(subject, ''), payload::text, "
    "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), pg_backend_pid(), "
    "coalesce(source, '') "
    "FROM conveyor.outbox WHERE sent_at IS NULL AND id <> ALL($2::bigint[]) ORDER BY id LIMIT $1"};
// Keeps the outbox small (DESIGN §8): sent rows older than the retention go, in batches.
constexpr db::Statement kPurge{
    "relay_purge",
    "DELETE FROM conveyor.outbox WHERE id IN ("
    " SELECT id FROM conveyor.outbox WHERE sent_at IS NOT NULL AND sent_at < now() - make_interval("
    "  hours => (SELECT outbox_retention_hours FROM conveyor.system_parameters WHERE id)) LIMIT 5000)"};

struct OutboxRow {
  std::int64_t id;
  Message msg;
};

// The Kafka record of one kMarkAndRead row: a CloudEvent on the topic of its
// type (topics.hpp), keyed as the row says (a job's id).
Message message_of(const db::Row& row, const RelayOptions& options) {
  CloudEvent ev;
  ev.id = row[0].as_string();
  // Who made the change (the outbox row's application_name, migration
  // 20261218010100), not this relay; older rows have none.
  ev.source = row[8].as_string().empty() ? options.source : row[8].as_string();
  ev.type = row[3].as_string();
  ev.subject = row[4].as_string();
  ev.time = row[6].as_string();
  ev.data = nlohmann::json::parse(row[5].view());
  return {topic_for(options.topic_prefix, row[1].view(), ev.type),
          row[2].as_string(),
          encode(ev),
          {{kContentTypeHeader, kStructuredContentType}}};
}

}  // namespace

// Used by the relay's thread, or by run_once() outside it, never both at once.
struct Relay::Impl {
  Impl(const RelayOptions& o, RelayStats& s) : options(o), stats(s), session(o.database_url, "conveyor-relay") {}
  const RelayOptions& options;
  RelayStats& stats;
  db::Session session;
  std::unique_ptr<Producer> producer;
  bool leader = false;
  bool listening = false;
  // Acked by the broker, not yet marked sent: the next round's statement
  // marks them (at least once: if this relay dies first, they go again).
  std::vector<std::int64_t> unmarked;
  std::int64_t backend_pid = 0;  // the session that holds the lock
  std::chrono::steady_clock::time_point last_purge{};

  // Takes the lock if free, then LISTENs and makes the producer once.
  // Returns whether this relay is the leader.
  bool lead() {
    if (!leader) {
      if (!session.try_advisory_lock(options.lock_key)) return false;
      leader = true;
      backend_pid = session.exec_alone(kBackendPid)[0][0].as_int();
      stats.leader = true;
      logging::get("relay")->info("relay is the leader (backend {})", backend_pid);
    }
    if (!listening && !options.woken_by_owner) {
      session.listen(kOutboxChannel);
      listening = true;
    }
    if (!producer) {
      ProducerOptions po;
      po.brokers = options.brokers;
      po.client_id = "conveyor-relay";
      producer = std::make_unique<Producer>(po);
    }
    return true;
  }

  // Marks `acked` sent and reads the next batch of unsent rows, at most
  // `limit`; nullopt when the session was replaced under us (the lock went
  // with the old one). A statement that fails leaves `acked` unsent: they
  // are sent again (at least once).
  std::optional<std::vector<OutboxRow>> mark_and_read(const std::vector<std::int64_t>& acked, std::size_t limit) {
    std::vector<OutboxRow> rows;
    for (auto row : session.exec_alone(kMarkAndRead, {static_cast<std::int64_t>(limit), acked})) {
      if (row[7].as_int() != backend_pid) return std::nullopt;
      rows.push_back({row[0].as_int(), message_of(row, options)});
    }
    return rows;
  }

  // Sends `rows`; returns the ids the broker acked.
  std::vector<std::int64_t> send(const std::vector<OutboxRow>& rows) {
    std::vector<Message> msgs;
    msgs.reserve(rows.size());
    for (const auto& r : rows) msgs.push_back(r.msg);
    const auto acked = producer->send_batch(msgs, options.send_timeout);
    std::vector<std::int64_t> sent;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      if (acked[i]) sent.push_back(rows[i].id);
    }
    stats.published += sent.size();
    stats.batches += 1;
    if (sent.size() < rows.size()) {
      stats.failed += rows.size() - sent.size();
      logging::get("relay")->warn("relay: broker did not ack {} of {} events; they stay in the outbox and are retried",
                                  rows.size() - sent.size(), rows.size());
    }
    return sent;
  }

  void purge_if_due() {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_purge <= std::chrono::minutes(1)) return;
    last_purge = now;
    session.exec_alone(kPurge);
  }

  // Marks the acked rows sent now, reading nothing.
  void settle() {
    if (unmarked.empty() || !leader) return;
    if (mark_and_read(unmarked, 0)) unmarked.clear();
  }

  // Leadership ends with the session: the next pass starts afresh, and the
  // rows acked but not marked are sent again by the next leader.
  void give_up() {
    unmarked.clear();
    leader = listening = false;
    stats.leader = false;
    session.reset();
  }
};

Relay::Relay(RelayOptions options) : options_(std::move(options)), impl_(std::make_unique<Impl>(options_, stats_)) {}

Relay::~Relay() { stop(); }

void Relay::start() {
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] { loop(); });
}

void Relay::stop() {
  {
    std::lock_guard lock(notify_mu_);
    stopping_ = true;
  }
  notify_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (impl_->leader) {
    try {
      impl_->settle();  // before the lock goes: the next leader must not send them again
    } catch (const Error& e) {
      logging::get("relay")->warn("marking the last acked events sent failed: {}", e.what());
    }
    try {
      impl_->session.advisory_unlock(options_.lock_key);
    } catch (const Error& e) {
      logging::get("relay")->warn("releasing the relay lock failed: {}", e.what());
    }
    impl_->leader = false;
    stats_.leader = false;
  }
}

std::size_t Relay::run_once() { return run(true); }

void Relay::notify() {
  {
    std::lock_guard lock(notify_mu_);
    notified_ = true;
  }
  notify_cv_.notify_all();
}

bool Relay::wait_for_owner(std::chrono::milliseconds slice) {
  std::unique_lock lock(notify_mu_);
  notify_cv_.wait_for(lock, slice, [this] { return notified_ || stopping_.load(); });
  return std::exchange(notified_, false) && !stopping_;
}

std::size_t Relay::run(bool settle) {
  auto& im = *impl_;
  try {
    if (!im.lead()) return 0;
    std::size_t published = 0;
    // Each round marks the previous round's acked rows and reads the next:
    // one statement per batch. A batch smaller than the limit took all
    // there was: unless asked to settle, its acked rows wait for the next
    // run's statement (the next wake-up, at the latest the poll) instead of
    // a statement of their own that would find nothing more.
    for (;;) {
      const std::optional<std::vector<OutboxRow>> rows = im.mark_and_read(im.unmarked, options_.batch_size);
      if (!rows) {
        logging::get("relay")->warn("relay lost its database session; giving up leadership");
        im.give_up();
        return published;
      }
      im.unmarked.clear();
      if (rows->empty()) break;
      im.unmarked = im.send(*rows);
      published += im.unmarked.size();
      if (im.unmarked.size() < rows->size()) {
        im.settle();  // the broker is in trouble: keep what it acked, retry the rest later
        break;
      }
      if (rows->size() < options_.batch_size && !settle) break;
    }
    im.purge_if_due();
    return published;
  } catch (const db::DbError& e) {
    logging::get("relay")->warn("relay: database: {}; will reconnect", e.what());
    im.give_up();
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
        run(false);
        next_poll = std::chrono::steady_clock::now() + options_.poll_interval;
      }
      const bool woken_by_owner = options_.woken_by_owner && impl_->leader;
      if (impl_->listening || woken_by_owner) {
        if (woken_by_owner ? wait_for_owner(slice) : impl_->session.wait_for_notification(slice)) {
          run(false);
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
      impl_->give_up();
      next_poll = std::chrono::steady_clock::now() + options_.poll_interval;
    }
  }
}

}  // namespace conveyor::bus
