#pragma once
// The outbox relay: publishes conveyor.outbox rows to Kafka, each on the
// topic of its type (topic_for in topics.hpp: a job event on
// "<prefix>.job.<name>"), and counts them sent only after the broker acked
// them. It writes no outbox row: it keeps its place in conveyor.outbox_relay
// as snapshots (migration 20261225000000), and conveyor.outbox_unsent() says
// what is unsent. Leader-elected with a session advisory lock, so any number of relays may run and one publishes; woken
// by pg_notify('conveyor_outbox') (kOutboxChannel), with a poll interval as a fallback. Owns one thread; start()/stop()
// from the owner's thread.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "conveyor/bus/kafka.hpp"

namespace conveyor::bus {

// Notified by the status and parameter triggers with their outbox rows, but
// for a change no service waits on (conveyor.job_status.notified: started,
// and done while no configured job waits on the job), whose row the next
// notified change or the poll sends.
inline constexpr const char* kOutboxChannel = "conveyor_outbox";

struct RelayOptions {
  std::string database_url;
  std::string brokers;
  std::string topic_prefix = "conveyor";
  // CloudEvent source of outbox rows that do not name the program that
  // wrote them (rows from before migration 20261218010100).
  std::string source = "conveyor";
  std::size_t batch_size = 500;
  std::chrono::milliseconds poll_interval{1000};  // fallback when no notify arrives
  std::chrono::milliseconds send_timeout{10000};
  std::int64_t lock_key = 0x436f6e7665796f72;  // "Conveyor"
  // The relay LISTENs on nothing: its owner hears kOutboxChannel on a
  // LISTEN connection it has anyway (runtime's listener) while leader()
  // holds, says so with set_heard(true), and calls notify(). PostgreSQL 15
  // signals every listening backend of the database on every notifying
  // commit, whatever the channel, so each listening connection fewer saves
  // a wake-up in PostgreSQL per notifying commit (five per job). An owner
  // that listens to nothing else keeps no connection for the relay: while
  // unheard, the leader looks every unheard_poll_interval instead.
  bool woken_by_owner = false;
  std::chrono::milliseconds unheard_poll_interval{100};
};

struct RelayStats {
  std::atomic<std::uint64_t> published{0};
  std::atomic<std::uint64_t> failed{0};
  std::atomic<std::uint64_t> batches{0};
  std::atomic<std::uint64_t> passes{0};  // the thread's, each counted once it ended
  std::atomic<bool> leader{false};
};

class Relay {
 public:
  explicit Relay(RelayOptions options);
  ~Relay();  // stops
  void start();
  void stop();
  // One pass outside the thread: if leadership can be taken, publishes every
  // unsent row in batches and saves its place; returns the number
  // published. For tests and tools.
  std::size_t run_once();
  // With woken_by_owner: outbox rows were notified; the thread runs a pass.
  void notify();
  // With woken_by_owner: whether the owner hears kOutboxChannel now (false
  // until it says so). While it does not, the leader polls every
  // unheard_poll_interval.
  void set_heard(bool heard) noexcept { heard_ = heard; }
  // Whether this relay holds the lock (and so wants kOutboxChannel heard).
  bool leader() const noexcept { return stats_.leader.load(); }
  const RelayStats& stats() const noexcept { return stats_; }

 private:
  void loop();
  // Waits up to `slice` for notify() (woken_by_owner); true if it came.
  bool wait_for_owner(std::chrono::milliseconds slice);
  // A pass: run_once, or, without `settle`, leaving the place the last
  // batch reached to be saved by the next pass's first statement (the
  // thread's passes: one statement per wake-up instead of two). stop()
  // saves it.
  std::size_t run(bool settle);
  struct Impl;
  RelayOptions options_;
  RelayStats stats_;
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> heard_{false};
  std::mutex notify_mu_;
  std::condition_variable notify_cv_;
  bool notified_ = false;  // guarded by notify_mu_
  std::thread thread_;
};

}  // namespace conveyor::bus
