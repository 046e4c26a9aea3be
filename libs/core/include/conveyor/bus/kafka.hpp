#pragma once
// Kafka producer and consumer. librdkafka stays behind this header.
//
// Producer: idempotent (enable.idempotence=true, acks=all), thread-safe,
// owned by the service runtime. Consumer: one group member; offsets are
// committed only when the caller says the work is committed (commit()), never
// automatically; not thread-safe, owned by the thread that polls it.
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace conveyor::bus {

// Record headers, in order (Kafka allows a name more than once).
using Headers = std::vector<std::pair<std::string, std::string>>;

struct Message {
  std::string topic;
  std::string key;
  std::string value;
  Headers headers{};
};

struct ReceivedMessage {
  std::string topic;
  std::int32_t partition = 0;
  std::int64_t offset = 0;
  std::string key;
  Headers headers;         // as the record carries them
  std::string value;       // empty when oversized
  std::size_t size = 0;    // of the value as the broker sent it
  bool oversized = false;  // larger than ConsumerOptions::max_message_bytes: not copied
};

struct ProducerOptions {
  std::string brokers;  // bootstrap list host:port[,host:port]
  std::string client_id = "conveyor";
  int linger_ms = 1;  // each event is on the critical path: keep small
  std::chrono::milliseconds message_timeout{30000};
  std::map<std::string, std::string> extra;  // further librdkafka properties
};

class Producer {
 public:
  explicit Producer(const ProducerOptions& options);  // throws Error(invalid_config)
  ~Producer();                                        // flushes for up to 5 s
  Producer(const Producer&) = delete;
  Producer& operator=(const Producer&) = delete;

  // Sends every message and waits until each has a delivery report or the
  // timeout passes. Returns one flag per message: true when the broker acked
  // it (acks=all). Order within a partition is preserved (idempotence).
  std::vector<bool> send_batch(std::span<const Message> messages, std::chrono::milliseconds timeout);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct ConsumerOptions {
  std::string brokers;
  std::string group_id;
  std::vector<std::string> topics;
  std::string client_id = "conveyor";
  std::string auto_offset_reset = "earliest";
  // A larger message is returned with `oversized` set and its value not
  // copied, so the caller can count and skip it (and commit past it).
  std::size_t max_message_bytes = 1024 * 1024;
  std::map<std::string, std::string> extra;
};

class Consumer {
 public:
  explicit Consumer(const ConsumerOptions& options);  // throws Error(invalid_config)
  ~Consumer();                                        // leaves the group without committing anything more
  Consumer(const Consumer&) = delete;
  Consumer& operator=(const Consumer&) = delete;

  // Returns up to `max` messages, waiting at most `timeout` for the first.
  std::vector<ReceivedMessage> poll(std::size_t max, std::chrono::milliseconds timeout);
  // Synchronously commits the offsets of every message returned by poll() so
  // far. Call only after the work those messages caused is committed.
  void commit();
  // Whether the broker is reachable as librdkafka sees it: its statistics
  // (every second, served by poll()) say some broker connection is UP, and
  // no "all brokers down" error came since. Thread-safe.
  bool broker_up() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace conveyor::bus
