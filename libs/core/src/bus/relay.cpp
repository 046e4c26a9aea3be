// The outbox relay (see relay.hpp for the contract).
#include "conveyor/bus/relay.hpp"

#include <algorithm>
#include <optional>
#include <utility>

#include "conveyor/bus/cloudevent.hpp"
#include "conveyor/bus/topics.hpp"
#include "conveyor/db/db.hpp"
#include "conveyor/logging/logging.hpp"
#include "conveyor/logging/thread_name.hpp"

namespace conveyor::bus {

namespace {

constexpr db::Statement kBackendPid{"relay_backend_pid", "SELECT pg_backend_pid()"};
// Where the relay stands (migration 20261225000000): conveyor.outbox_relay,
// and whether that place and the outbox's rows are of this cluster's
// transaction ids (not past them, as after a restore into another cluster;
// one probe of outbox_txid_idx).
// The place, and whether the relay may publish from it: the rule is
// conveyor.outbox_relay_refusal(), which the monitor alerts on.
constexpr db::Statement kReadPlace{"relay_read_place",
                                   "SELECT sent::text, coalesce(window_end::text, ''), window_after, "
                                   "conveyor.outbox_relay_refusal() IS NULL "
                                   "FROM conveyor.outbox_relay"};
// One statement per round, run alone (one round trip): saves the relay's
// place when it moved ($5: $2-$4) and this is still the session that holds
// the lock ($6), and reads the next rows of the window ($3, or a new one:
// this statement's snapshot), $1 at most, through conveyor.outbox_unsent,
// the one rule of "unsent". Always one row: the window's snapshot, the
// session's pid and whether the place was saved, with the outbox row's
// columns NULL when there is none.
constexpr db::Statement kSaveAndRead{
    "relay_save_and_read",
    "WITH saved AS (UPDATE conveyor.outbox_relay SET sent = $2::pg_snapshot, "
    "                window_end = nullif($3::text, '')::pg_snapshot, window_after = $4::bigint "
    "                WHERE $5::boolean AND pg_backend_pid() = $6::int RETURNING 1), "
    "w AS (SELECT coalesce(nullif($3::text, '')::pg_snapshot, pg_current_snapshot()) AS s) "
    "SELECT w.s::text, pg_backend_pid(), (SELECT count(*) FROM saved), o.id, o.topic, o.key, o.type, coalesce(o.subject, ''), o.payload::text, "
    "to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), coalesce(o.source, '') "
    "FROM w LEFT JOIN LATERAL conveyor.outbox_unsent($2::pg_snapshot, nullif($3::text, '')::pg_snapshot, "
    "                                                $4::bigint, w.s, $1::bigint) o ON true "
    "ORDER BY o.id"};
// Keeps the outbox small (DESIGN §8): sent rows older than the retention
// go, in batches. Rows from before migration 20261225000000 have no txid
// and were sent.
constexpr db::Statement kPurge{"relay_purge",
                               "DELETE FROM conveyor.outbox WHERE id IN ("
                               " SELECT o.id FROM conveyor.outbox o, conveyor.outbox_relay r"
                               " WHERE o.created_at < now() - make_interval("
                               "  hours => (SELECT outbox_retention_hours FROM conveyor.system_parameters WHERE id))"
                               " AND (o.txid IS NULL OR pg_visible_in_snapshot(o.txid, r.sent)) LIMIT 5000)"};

struct OutboxRow {
  std::int64_t id;
  Message msg;
};

// Where the relay stands in the outbox (conveyor.outbox_relay's columns):
// everything `sent` sees was sent, and of the window `window_end` (empty:
// none) the rows up to `window_after`.
struct Place {
  std::string sent;
  std::string window_end;
  std::int64_t window_after = 0;
  bool operator==(const Place&) const = default;
};

// The Kafka record of one kSaveAndRead row: a CloudEvent on the topic of its
// type (topics.hpp), keyed as the row says (a job's id).
Message message_of(const db::Row& row, const RelayOptions& options) {
  CloudEvent ev;
  ev.id = row[3].as_string();
  // Who made the change (the outbox row's application_name, migration
  // 20261218010100), not this relay; older rows have none.
  ev.source = row[10].as_string().empty() ? options.source : row[10].as_string();
  ev.type = row[6].as_string();
  ev.subject = row[7].as_string();
  ev.time = row[9].as_string();
  ev.data_json = row[8].as_string();  // jsonb's text: one valid JSON value, in the database's UTF-8
  return {topic_for(options.topic_prefix, row[4].view(), ev.type),
          row[5].as_string(),
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
  // Where the relay stands in conveyor.outbox_relay, and where it stands
  // after the rows the broker acked since: the next round's statement
  // saves `place` (at least once: if this relay dies first, the rows since
  // `saved` go again).
  Place saved;
  Place place;
  std::int64_t backend_pid = 0;  // the session that holds the lock
  std::chrono::steady_clock::time_point last_purge{};
  std::chrono::steady_clock::time_point last_refusal{};

  // Takes the lock if free, reads the relay's place, then LISTENs and makes
  // the producer once. Returns whether this relay is the leader.
  bool lead() {
    if (!leader) {
      if (!session.try_advisory_lock(options.lock_key)) return false;
      backend_pid = session.exec_alone(kBackendPid)[0][0].as_int();
      if (!read_place()) {
        session.advisory_unlock(options.lock_key);  // another relay may be able to; this one tries again later
        return false;
      }
      leader = true;
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

  // Reads the place saved. False, said loudly (once a minute), when there
  // is none, or it or the outbox is past this cluster's transaction ids:
  // every new row would count as sent.
  bool read_place() {
    const auto result = session.exec_alone(kReadPlace);
    const char* why = nullptr;
    if (result.size() != 1) {
      why = "conveyor.outbox_relay has no row: the relay has no place to keep";
    } else {
      saved = place = Place{result[0][0].as_string(), result[0][1].as_string(), result[0][2].as_int()};
      if (result[0][3].as_bool()) return true;
      why =
          "the relay's place (conveyor.outbox_relay) or the outbox is past this cluster's transaction ids (a "
          "backup restored into another cluster?): every new event would count as sent. Stop the services and run "
          "SELECT conveyor.outbox_renumber() (README, backup and restore; the monitor's alert outbox_refused)";
    }
    const auto now = std::chrono::steady_clock::now();
    if (last_refusal == std::chrono::steady_clock::time_point{} || now - last_refusal > std::chrono::minutes(1)) {
      last_refusal = now;
      logging::get("relay")->error("relay: not publishing: {}", why);
    }
    return false;
  }

  // A page of the window: its rows and the window's snapshot.
  struct Page {
    std::vector<OutboxRow> rows;
    std::string window_end;
  };

  // Saves `place` and reads the next rows of its window, at most `limit`;
  // nullopt when the session was replaced under us (the lock went with the
  // old one). A statement that fails saves nothing: the rows since `saved`
  // are sent again (at least once).
  std::optional<Page> save_and_read(std::size_t limit) {
    Page page;
    const bool moved = !(place == saved);
    const auto result = session.exec_alone(kSaveAndRead, {static_cast<std::int64_t>(limit), place.sent,
                                                          place.window_end, place.window_after, moved, backend_pid});
    for (auto row : result) {
      if (row[1].as_int() != backend_pid) return std::nullopt;  // another session: the lock went with the old one
      if (moved && row[2].as_int() != 1) {
        logging::get("relay")->warn("relay: its place (conveyor.outbox_relay) could not be saved: the row is gone");
        return std::nullopt;
      }
      if (page.window_end.empty()) page.window_end = row[0].as_string();  // one snapshot, on every row
      if (!row[3].is_null()) page.rows.push_back({row[3].as_int(), message_of(row, options)});
    }
    saved = place;
    return page;
  }

  // Sends `page` (its messages are moved out), and moves `place` past what
  // the broker acked in order: past the window when the page was its last
  // (`last`) and all of it went. Returns how many rows the broker acked.
  std::size_t send(Page& page, bool last) {
    if (page.rows.empty()) {  // the window ended with the page before
      if (last && !place.window_end.empty()) place = Place{page.window_end, "", 0};
      return 0;
    }
    std::vector<Message> msgs;
    msgs.reserve(page.rows.size());
    for (auto& r : page.rows) msgs.push_back(std::move(r.msg));
    const auto acked = producer->send_batch(msgs, options.send_timeout);
    std::size_t sent = 0;
    std::size_t in_order = 0;  // acked before the first one that was not
    for (std::size_t i = 0; i < page.rows.size(); ++i) {
      if (!acked[i]) continue;
      ++sent;
      if (in_order == i) ++in_order;
    }
    if (in_order == page.rows.size() && last) {
      place = Place{page.window_end, "", 0};
    } else if (in_order > 0) {
      place = Place{place.sent, page.window_end, page.rows[in_order - 1].id};
    }
    stats.published += sent;
    stats.batches += 1;
    if (sent < page.rows.size()) {
      stats.failed += page.rows.size() - sent;
      logging::get("relay")->warn("relay: broker did not ack {} of {} events; they stay in the outbox and are retried",
                                  page.rows.size() - sent, page.rows.size());
    }
    return sent;
  }

  void purge_if_due() {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_purge <= std::chrono::minutes(1)) return;
    last_purge = now;
    session.exec_alone(kPurge);
  }

  // Saves the relay's place now, reading nothing.
  void settle() {
    if (place == saved || !leader) return;
    save_and_read(0);
  }

  // Leadership ends with the session: the next pass starts afresh from the
  // place saved, and the rows acked since are sent again by the next leader.
  void give_up() {
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
  thread_ = std::thread([this] {
    logging::name_this_thread("relay");
    loop();
  });
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
      logging::get("relay")->warn("saving the relay's place after the last acked events failed: {}", e.what());
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
    // Each round saves the place the previous round reached and reads the
    // next rows: one statement per batch. A batch smaller than the limit
    // took all there was: unless asked to settle, its place waits for the
    // next run's statement (the next wake-up, at the latest the poll)
    // instead of a statement of its own that would find nothing more.
    for (;;) {
      std::optional<Impl::Page> page = im.save_and_read(options_.batch_size);
      if (!page) {
        logging::get("relay")->warn("relay lost its database session; giving up leadership");
        im.give_up();
        return published;
      }
      const bool last = page->rows.size() < options_.batch_size;
      if (page->rows.empty() && im.place.window_end.empty()) break;
      const std::size_t sent = im.send(*page, last);
      published += sent;
      if (sent < page->rows.size()) {
        im.settle();  // the broker is in trouble: keep what it acked, retry the rest later
        break;
      }
      if (last && !settle) break;
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
  const auto slice = std::clamp<std::chrono::milliseconds>(options_.poll_interval, std::chrono::milliseconds(1),
                                                           std::chrono::milliseconds(250));
  // The next poll is due this long after the last pass, by what wakes the
  // relay now: a leader whose owner does not hear the outbox channel looks
  // often (set_heard takes effect at once).
  const auto poll_interval = [&] {
    return options_.woken_by_owner && impl_->leader && !heard_
               ? std::min(options_.unheard_poll_interval, options_.poll_interval)
               : options_.poll_interval;
  };
  auto last_pass = std::chrono::steady_clock::now() - options_.poll_interval;
  const auto pass = [&] {
    run(false);
    last_pass = std::chrono::steady_clock::now();
    ++stats_.passes;
  };
  while (!stopping_) {
    try {
      if (std::chrono::steady_clock::now() >= last_pass + poll_interval()) pass();
      const auto until_poll =
          std::chrono::ceil<std::chrono::milliseconds>(last_pass + poll_interval() - std::chrono::steady_clock::now());
      const auto wait = std::clamp<std::chrono::milliseconds>(until_poll, std::chrono::milliseconds(1), slice);
      const bool woken_by_owner = options_.woken_by_owner && impl_->leader;
      if (impl_->listening || woken_by_owner) {
        if (woken_by_owner ? wait_for_owner(wait) : impl_->session.wait_for_notification(wait)) pass();
      } else {
        // Not the leader (or no session yet): wait for the next try, in slices so stop() is quick.
        const auto until = std::chrono::steady_clock::now() + wait;
        while (!stopping_ && std::chrono::steady_clock::now() < until) {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      }
    } catch (const Error& e) {
      log->error("relay: {}", e.what());
      impl_->give_up();
      last_pass = std::chrono::steady_clock::now();
    }
  }
}

}  // namespace conveyor::bus
