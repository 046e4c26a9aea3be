#include "conveyor/runtime/runtime.hpp"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <optional>
#include <string_view>
#include <thread>
#include <vector>

#include "conveyor/auth/auth.hpp"
#include "conveyor/bus/cloudevent.hpp"
#include "conveyor/bus/kafka.hpp"
#include "conveyor/bus/relay.hpp"
#include "conveyor/bus/topics.hpp"
#include "conveyor/error/error.hpp"
#include "conveyor/http/admin.hpp"
#include "conveyor/logging/thread_name.hpp"
#include "conveyor/model/status.hpp"
#include "conveyor/runtime/check.hpp"
#include "conveyor/runtime/command_line.hpp"

namespace conveyor::runtime {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Start-up (re)claims the row: a restarted instance with a fixed
// CONVEYOR_INSTANCE_ID starts afresh. $7 is the status to write.
constexpr db::Statement kUpsertInstance{
    "runtime_upsert_instance",
    "INSERT INTO conveyor.service_instance"
    " (id, service, host, pid, version, image_tag, started_at, last_heartbeat, status)"
    " VALUES ($1, $2, $3, $4, $5, $6, now(), now(), $7)"
    " ON CONFLICT (id) DO UPDATE SET service = EXCLUDED.service, host = EXCLUDED.host,"
    " pid = EXCLUDED.pid, version = EXCLUDED.version, image_tag = EXCLUDED.image_tag,"
    " started_at = now(), last_heartbeat = now(), status = EXCLUDED.status"};
// An instance the monitor marked `down` (missed heartbeats) is back: $2 is
// `up`, or `draining` once SIGTERM came.
// $3: the broker as this instance sees it ('up', 'down'; NULL without one).
constexpr db::Statement kHeartbeat{"runtime_heartbeat",
                                   "UPDATE conveyor.service_instance SET last_heartbeat = now(), broker = $3,"
                                   " status = CASE WHEN status = 'down' THEN $2::text ELSE status END WHERE id = $1"};
// Where this instance's admin endpoints answer (host:port), for the
// monitor's Prometheus service discovery (GET /v1/sd); written once it listens.
constexpr db::Statement kSetHttpAddress{"runtime_set_http_address",
                                        "UPDATE conveyor.service_instance SET http_address = $2 WHERE id = $1"};
// NOTIFYs of the job status trigger: one per new status of a statement,
// the payload the status ("queued"). A stage wakes on the statuses it acts on.
// The status trigger notifies conveyor_job_status_<status> once per new
// notified status of a statement (conveyor.record_status_changes,
// migrations 20261219000000 and 20261228000000: not started, and done only
// while a configured job depends on the job): a service listens to the
// channels of its wake_on statuses only, so the other statuses'
// notifications never reach it.
constexpr const char* kJobStatusChannelPrefix = "conveyor_job_status_";

// The NOTIFY channel of an event type, when the database notifies it: the
// types of notified job statuses ("io.conveyor.job.queued";
// model::is_notified). The others (started, a cancel or restart request, a
// re-emit) come from Kafka only.
std::optional<std::string> notify_channel(std::string_view type) {
  if (!type.starts_with(bus::kJobEventTypePrefix)) return std::nullopt;
  const std::string_view status = type.substr(std::string_view(bus::kJobEventTypePrefix).size());
  const auto parsed = model::parse_status(status);
  if (!parsed || !model::is_notified(*parsed)) return std::nullopt;
  return kJobStatusChannelPrefix + std::string(status);
}
// Events only wake, so their offsets may lag: committed at most this often
// (and on the way out), not after every poll.
constexpr milliseconds kCommitInterval{1000};
// Reconnect back-off of the LISTEN connection after it was lost.
constexpr milliseconds kListenRetryMin{100};
constexpr milliseconds kListenRetryMax{5000};
// How long one wait for a notification may block shutdown.
constexpr milliseconds kListenSlice{250};

constexpr db::Statement kSetInstanceStatus{
    "runtime_set_instance_status",
    "UPDATE conveyor.service_instance SET status = $2, last_heartbeat = now() WHERE id = $1"};

// Designated initializers that omit members trip -Wmissing-field-initializers.
config::Key make_key(std::string name, config::Type type, std::string default_value, std::string help,
                     std::int64_t min = INT64_MIN, std::int64_t max = INT64_MAX) {
  config::Key key;
  key.name = std::move(name);
  key.type = type;
  key.default_value = std::move(default_value);
  key.help = std::move(help);
  key.min = min;
  key.max = max;
  return key;
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown-host";
  return buf;
}

// host:port others reach this instance on: CONVEYOR_HTTP_HOST when it names
// one address, else (a wildcard) the host name; an IPv6 address in brackets.
std::string http_address(const std::string& bind_host, int port) {
  std::string host = bind_host;
  if (host.empty() || host == "0.0.0.0" || host == "::" || host == "[::]") host = host_name();
  if (host.find(':') != std::string::npos && host.front() != '[') host = "[" + host + "]";
  return host + ":" + std::to_string(port);
}

// Everything one run() owns. Its members are thread-safe as Context promises;
// the threads it starts are joined by shutdown() (also called by the
// destructor, so a start-up failure cleans up too).
class Service final : public Context {
 public:
  explicit Service(ServiceSpec spec) : spec_(std::move(spec)) {}
  ~Service() override { shutdown(); }
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // ---------------------------------------------------------------- Context
  const std::string& service() const override { return spec_.name; }
  const std::string& instance_id() const override { return instance_id_; }
  const config::Config& config() const override { return config_; }
  db::Pool& db() override { return *pool_; }
  metrics::Registry& metrics() override { return registry_; }
  std::shared_ptr<spdlog::logger> log() override { return log_; }
  http::Server& http() override { return *server_; }
  bus::Producer* producer() override { return producer_.get(); }

  std::shared_ptr<const model::SystemParameters> parameters() const override {
    std::lock_guard lock(params_mu_);
    return params_;
  }

  // Reloads run one at a time (the event consumer and the timer both
  // reload): otherwise a read that began before a change could be stored
  // after a read that began after it, and the old values would stay.
  void reload_parameters() override {
    std::lock_guard reloading(reload_mu_);
    auto fresh = std::make_shared<const model::SystemParameters>(
        pool_->transact([](db::Tx& tx) { return model::load_system_parameters(tx); }));
    {
      std::lock_guard lock(params_mu_);
      params_ = std::move(fresh);
    }
    parameter_reloads_->inc();
  }

  bool stopping() const override { return stopping_.load(); }
  void request_stop(const std::string& reason) override {
    log_->warn("stopping: {}", reason);
    // The signal thread runs the one shutdown path, as for SIGTERM.
    if (signal_thread_.joinable()) pthread_kill(signal_thread_.native_handle(), SIGTERM);
    else begin_stop(reason);
  }

  bool wait_for_work(milliseconds timeout) override {
    std::unique_lock lock(wake_mu_);
    if (stopping_) return false;
    wake_cv_.wait_for(lock, timeout, [this] { return pending_ || stopping_.load(); });
    if (stopping_) return false;
    if (pending_) wakeups_->inc();
    // A timeout is the poll: anything may have changed.
    last_wake_ = pending_ ? std::move(pending_wake_) : Wake{};
    pending_wake_ = Wake{.anything = false, .types = {}};
    pending_ = false;
    return true;
  }

  Wake last_wake() const override {
    std::lock_guard lock(wake_mu_);
    return last_wake_;
  }

  void wake() override {
    {
      std::lock_guard lock(wake_mu_);
      pending_ = true;
      pending_wake_.anything = true;
    }
    wake_cv_.notify_all();
  }

  void wake_because(const std::string& reason) override {
    {
      std::lock_guard lock(wake_mu_);
      pending_ = true;
      pending_wake_.types.insert(reason);
    }
    wake_cv_.notify_all();
  }

  void listen_also(const std::string& channel, const std::string& type) override {
    if (listen_thread_.joinable()) throw Error(errc::internal, "listen_also after the listener started: " + channel);
    own_channels_[channel] = type;
    listening_gauge(channel).set(1);
  }

  void set_listened(const std::string& channel, bool listened) override {
    if (!own_channels_.contains(channel)) throw Error(errc::internal, "set_listened of an unknown channel: " + channel);
    std::lock_guard lock(listen_mu_);
    if (listened) {
      set_aside_.erase(channel);
    } else {
      set_aside_.insert(channel);
    }
    listening_gauge(channel).set(listened ? 1 : 0);
  }

  metrics::Gauge& listening_gauge(const std::string& channel) {
    return registry_.gauge("conveyor_listen_wanted",
                           "1 while the service wants to LISTEN on this channel of its own (listen_also)",
                           {{"channel", channel}});
  }

  // A wake-up by NOTIFY: the status channels that were notified.
  void wake_for(const std::vector<db::Notification>& notifications) {
    {
      std::lock_guard lock(wake_mu_);
      pending_ = true;
      for (const db::Notification& n : notifications) {
        if (const auto own = own_channels_.find(n.channel); own != own_channels_.end()) {
          pending_wake_.types.insert(own->second);
        } else if (n.channel.starts_with(kJobStatusChannelPrefix)) {
          pending_wake_.types.insert(std::string(bus::kJobEventTypePrefix) +
                                     n.channel.substr(std::string_view(kJobStatusChannelPrefix).size()));
        } else {
          pending_wake_.anything = true;
        }
      }
    }
    wake_cv_.notify_all();
  }

  void set_ready(bool ready, const std::string& reason) override {
    std::lock_guard lock(ready_mu_);
    not_ready_reason_ = ready ? "" : (reason.empty() ? "not ready" : reason);
  }

  // ---------------------------------------------------------------- run()
  // Returns the exit code.
  int run(const std::vector<std::filesystem::path>& env_files, const std::function<void(Context&)>& setup,
          const std::function<void(Context&)>& loop) {
    // Before any thread exists, so every thread inherits the mask and only
    // the signal thread sees SIGTERM/SIGINT. Not restored: run() ends the process.
    sigemptyset(&signals_);
    sigaddset(&signals_, SIGTERM);
    sigaddset(&signals_, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals_, nullptr);

    try {
      config_ = config::load(spec_.schema, env_files, config::process_environment());
    } catch (const Error& e) {
      std::fprintf(stderr, "%s: %s\n", spec_.name.c_str(), e.what());
      return 1;
    }

    try {
      logging::setup(logging::parse_format(config_.get_string("CONVEYOR_LOG_FORMAT")),
                     logging::parse_level(config_.get_string("CONVEYOR_LOG_LEVEL")), spec_.name);
      log_ = logging::get("service");
      for (const std::string& warning : config_.warnings()) log_->warn("config: {}", warning);
      start(setup);
    } catch (const std::exception& e) {
      // Reported, then the process exits 1: nothing is swallowed.
      const std::string message = logging::redact_url(e.what());
      if (log_) log_->error("start-up failed: {}", message);
      std::fprintf(stderr, "%s: %s\n", spec_.name.c_str(), message.c_str());
      shutdown();
      return 1;
    }

    int code = 0;
    try {
      loop(*this);
    } catch (const std::exception& e) {
      log_->error("service loop failed: {}", logging::redact_url(e.what()));
      std::fprintf(stderr, "%s: %s\n", spec_.name.c_str(), logging::redact_url(e.what()).c_str());
      code = 1;
    }
    shutdown();
    log_->info("stopped");
    return code;
  }

 private:
  void start(const std::function<void(Context&)>& setup) {
    // The signal thread first: a SIGTERM during start-up stays pending
    // (blocked) until it runs, and then makes the loop return at once.
    signal_thread_ = std::thread([this] {
      logging::name_this_thread("signals");
      signal_loop();
    });
    register_metrics();
    open_database();
    write_instance("up", true);
    start_http(setup);
    if (!brokers_.empty()) {
      bus::RelayOptions relay_options;
      relay_options.database_url = config_.get_string("CONVEYOR_DATABASE_URL");
      relay_options.brokers = brokers_;
      relay_options.topic_prefix = config_.get_string("CONVEYOR_TOPIC_PREFIX");
      relay_options.source = spec_.name;
      relay_options.poll_interval = config_.get_duration("CONVEYOR_RELAY_POLL_INTERVAL_MS");
      // The listener below hears the relay's channel while it leads and
      // listens to anything else; otherwise the leader polls.
      relay_options.woken_by_owner = true;
      relay_options.unheard_poll_interval = config_.get_duration("CONVEYOR_RELAY_UNHEARD_POLL_INTERVAL_MS");
      relay_ = std::make_unique<bus::Relay>(std::move(relay_options));
      relay_->start();
      start_consumers();
    }
    // The millisecond path: a NOTIFY of a watched status wakes the loop
    // without Kafka (which then only confirms, or stands in while the
    // database connection is re-made).
    if (!listen_channels().empty()) {
      listen_thread_ = std::thread([this] {
        logging::name_this_thread("listen");
        listen_loop();
      });
    }
    timer_thread_ = std::thread([this] {
      logging::name_this_thread("timer");
      timer_loop();
    });
    up_->set(1);
  }

  void register_metrics() {
    up_ = &registry_.gauge("conveyor_up", "1 while the service runs");
    wakeups_ = &registry_.counter("conveyor_service_wakeups_total",
                                  "wake-ups taken by the service loop (events, parameter changes)");
    notify_wakeups_ =
        &registry_.counter("conveyor_notify_wakeups_total", "wake-ups from PostgreSQL NOTIFY of a watched job status");
    listen_reconnects_ = &registry_.counter("conveyor_listen_reconnects_total",
                                            "times the LISTEN connection was opened again after a loss");
    listening_gauge_ = &registry_.gauge(
        "conveyor_listening",
        "1 while the NOTIFY listener is connected and LISTENs to every channel the service wants (its loop was "
        "woken for what it may have missed before); 0 while it wants none or reconnects (Kafka and the poll wake it)");
    events_consumed_ = &registry_.counter("conveyor_events_consumed_total", "Kafka events read by the runtime");
    bad_events_ = &registry_.counter("conveyor_events_invalid_total", "Kafka events that were not valid CloudEvents");
    parameter_reloads_ = &registry_.counter("conveyor_parameter_reloads_total", "reads of conveyor.system_parameters");
  }

  // The pool, the instance id, the producer and the first read of the
  // system parameters, which says when the database was never migrated.
  void open_database() {
    db::PoolOptions pool_options;
    pool_options.url = config_.get_string("CONVEYOR_DATABASE_URL");
    pool_options.size = static_cast<std::size_t>(config_.get_int("CONVEYOR_DB_POOL_SIZE"));
    pool_options.application_name = spec_.name;
    pool_options.actor = spec_.name;
    pool_ = std::make_unique<db::Pool>(std::move(pool_options));

    const std::string configured_id = config_.get_string("CONVEYOR_INSTANCE_ID");
    instance_id_ = configured_id.empty()
                       ? spec_.name + "-" + host_name() + "-" + std::to_string(static_cast<long>(getpid()))
                       : configured_id;

    brokers_ = config_.get_string("CONVEYOR_KAFKA_BROKERS");
    if (!brokers_.empty()) {
      bus::ProducerOptions producer_options;
      producer_options.brokers = brokers_;
      producer_options.client_id = instance_id_;
      producer_ = std::make_unique<bus::Producer>(producer_options);
    }

    try {
      reload_parameters();
    } catch (const db::DbError& e) {
      if (db::not_migrated(e)) throw not_migrated_error(e);
      throw;
    } catch (const Error& e) {
      if (e.code() == errc::not_found) throw not_migrated_error(e);
      throw;
    }
  }

  static Error not_migrated_error(const std::exception& e) {
    return Error(errc::unavailable, "database not migrated: run `conveyor db migrate` (" + std::string(e.what()) + ")");
  }

  // The admin routes, the guard and the service's own routes (setup), then
  // listening, and the address written for the monitor's discovery.
  void start_http(const std::function<void(Context&)>& setup) {
    http::Server::Options server_options;
    server_options.tls_cert_file = config_.get_string("CONVEYOR_TLS_CERT_FILE");
    server_options.tls_key_file = config_.get_string("CONVEYOR_TLS_KEY_FILE");
    server_ = std::make_unique<http::Server>(config_.get_string("CONVEYOR_HTTP_HOST"),
                                             http_port(config_, spec_.default_http_port), server_options);
    http::AdminOptions admin;
    admin.service = spec_.name;
    admin.version = CONVEYOR_VERSION;
    admin.db_ready = [this] { return pool_->ping(); };
    if (producer_) admin.broker_ready = [this] { return broker_ok_.load(); };
    admin.registry = &registry_;
    admin.not_ready_reason = [this] {
      std::lock_guard lock(ready_mu_);
      return not_ready_reason_;
    };
    http::add_admin_routes(*server_, std::move(admin));
    auth::GuardOptions guard;
    guard.metrics_open = !config_.get_bool("CONVEYOR_METRICS_REQUIRE_TOKEN");
    guard.cookie_name = spec_.auth_cookie;
    server_->set_guard(auth::make_guard(*pool_, std::move(guard)));

    setup(*this);

    server_->start();
    pool_->transact([&](db::Tx& tx) {
      tx.exec(kSetHttpAddress, {instance_id_, http_address(config_.get_string("CONVEYOR_HTTP_HOST"), server_->port())});
    });
    log_->info("{} {} listening on {}:{} as instance {}", spec_.name, CONVEYOR_VERSION, server_->host(),
               server_->port(), instance_id_);
  }

  // Job events go to a group shared by the replicas (one of them wakes and
  // SKIP LOCKED spreads the work anyway), read from the topics of the
  // wake_on types only (one topic per job event type, bus/topics.hpp), so
  // no service reads an event it does not act on; parameter events to a
  // group of this instance alone, because every replica must reload.
  void start_consumers() {
    const std::string prefix = config_.get_string("CONVEYOR_TOPIC_PREFIX");
    const std::string group = spec_.consumer_group.empty() ? spec_.name : spec_.consumer_group;
    parameters_topic_ = bus::topic_name(prefix, bus::kParametersTopic);

    // How long the broker may hold a fetch that finds nothing. A broker
    // answers as soon as a message arrives, but a mock one (the devbroker)
    // waits the whole time, and every consumer's empty fetches cost the
    // broker and the service a wake-up each: 100 a second at 10 ms. So 10 ms
    // only where an event is the wake-up (a type with no NOTIFY channel: a
    // cancel request); 250 ms where NOTIFY wakes first and the event is the
    // fallback; 500 ms for parameters, which no job waits on.
    bus::ConsumerOptions parameters;
    parameters.brokers = brokers_;
    parameters.group_id = group + "." + instance_id_;
    parameters.topics = {parameters_topic_};
    parameters.client_id = instance_id_;
    parameters.extra["fetch.wait.max.ms"] = "500";
    consumer_threads_.emplace_back([this, parameters] {
      logging::name_this_thread("kafka-params");
      consume(parameters);
    });

    bus::ConsumerOptions jobs;
    jobs.brokers = brokers_;
    jobs.group_id = group;
    jobs.topics = bus::job_event_topics(prefix, {spec_.wake_on.begin(), spec_.wake_on.end()});
    jobs.client_id = instance_id_;
    const bool notified = std::all_of(spec_.wake_on.begin(), spec_.wake_on.end(),
                                      [](const std::string& type) { return notify_channel(type).has_value(); });
    if (spec_.event_fetch_wait.count() > 0) {
      jobs.extra["fetch.wait.max.ms"] = std::to_string(spec_.event_fetch_wait.count());
    } else if (notified) {
      jobs.extra["fetch.wait.max.ms"] = "250";
    }
    if (!jobs.topics.empty()) {
      consumer_threads_.emplace_back([this, jobs] {
        logging::name_this_thread("kafka-jobs");
        consume(jobs);
      });
    }
  }

  struct Taken {
    bool wake_up = false;  // an event of a wake_on type
    bool reload = false;   // a parameters event
  };

  // A job event wakes the loop unless NOTIFY already did: a status change
  // committed while the listener is connected is notified on its status
  // channel within a millisecond, whenever a service waits on it (a done
  // with no configured job waiting on it is not: nobody waits), and its
  // event, 10-20 ms later, would only run a pass that finds the work done. So it wakes when the listener is
  // not connected, when its type has no channel (a cancel or restart
  // request), and when it is a re-emit (the reconciler writes outbox rows
  // without changing a status, so nothing is notified).
  bool event_wakes(const bus::CloudEvent& event) const {
    if (!listening_.load() || !notify_channel(event.type)) return true;
    const auto reemitted = event.data.is_object() ? event.data.find("reemitted") : event.data.end();
    return reemitted != event.data.end() && reemitted->is_boolean() && reemitted->get<bool>();
  }

  // What a batch of messages asks for; counts each, and skips (logs,
  // counts) those that are not valid CloudEvents.
  Taken take(const std::vector<bus::ReceivedMessage>& messages, const bus::ConsumerOptions& options) {
    Taken taken;
    for (const bus::ReceivedMessage& m : messages) {
      events_consumed_->inc();
      try {
        if (m.oversized) {
          throw Error(errc::bad_input, "message of " + std::to_string(m.size) + " bytes is larger than the limit of " +
                                           std::to_string(options.max_message_bytes));
        }
        const bus::CloudEvent event = bus::decode(m.value);
        if (m.topic == parameters_topic_) {
          taken.reload = true;
        } else if (spec_.wake_on.contains(event.type)) {
          taken.wake_up = taken.wake_up || event_wakes(event);
        }
      } catch (const std::exception& e) {
        bad_events_->inc();
        std::string what = e.what();
        if (what.size() > 300) what = what.substr(0, 300) + "...";
        logging::get("runtime")->warn("skipping an invalid event at {}[{}]@{}: {}", m.topic, m.partition, m.offset,
                                      what);
      }
    }
    return taken;
  }

  // Events only wake the service: the work is read from the database. So a
  // message that cannot be read (too large, too deep, not a CloudEvent) is
  // skipped, logged and counted, and its offset committed with the rest:
  // nothing is lost, and no message can stop a service or make it crash
  // again on each restart.
  void consume(const bus::ConsumerOptions& options) {
    auto rlog = logging::get("runtime");
    std::unique_ptr<bus::Consumer> consumer;
    auto next_commit = Clock::now() + kCommitInterval;
    bool uncommitted = false;
    while (!stopping_) {
      try {
        if (!consumer) consumer = std::make_unique<bus::Consumer>(options);
        const std::vector<bus::ReceivedMessage> messages = consumer->poll(256, milliseconds(200));
        note_broker(consumer->broker_up());
        const Taken taken = take(messages, options);
        if (taken.reload) {
          try {
            reload_parameters();
            // The version names what was read: an event may be older than
            // the change the operator is waiting for.
            log_->info("system parameters reloaded (event): as of {}", parameters()->updated_at);
          } catch (const std::exception& e) {
            // The timer retries; the wake-up below still happens.
            rlog->warn("reloading system parameters failed: {}", logging::redact_url(e.what()));
          }
        }
        if (taken.wake_up || taken.reload) wake();
        // Events only wake: the work is read from the database, so the
        // offsets may move as soon as the wake-up is taken, and a commit
        // lost in a crash only repeats wake-ups. So not after every poll
        // (a broker round trip each), but at most once per interval.
        uncommitted = uncommitted || !messages.empty();
        if (uncommitted && Clock::now() >= next_commit) {
          uncommitted = false;
          next_commit = Clock::now() + kCommitInterval;
          consumer->commit();
        }
      } catch (const std::exception& e) {
        note_broker(consumer ? consumer->broker_up() : false);
        rlog->warn("event consumer ({}): {}", options.group_id, e.what());
        std::unique_lock lock(exit_mu_);
        exit_cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stopping_.load(); });
      }
    }
    if (consumer && uncommitted) {
      try {
        consumer->commit();
      } catch (const std::exception& e) {
        rlog->warn("event consumer ({}): final commit: {}", options.group_id, e.what());
      }
    }
  }

  // The channels of the wake_on statuses, and the service's own (listened
  // or not). None when Kafka alone carries its wake-up types: then no
  // listener runs, and the relay (if any) polls (RelayOptions::
  // unheard_poll_interval).
  std::vector<std::string> listen_channels() const {
    std::vector<std::string> channels;
    for (const std::string& type : spec_.wake_on) {
      if (auto channel = notify_channel(type)) channels.push_back(std::move(*channel));
    }
    for (const auto& own : own_channels_) channels.push_back(own.first);
    return channels;
  }

  // What the listener should LISTEN to now: the wake_on channels, the own
  // channels not set aside (set_listened), and kOutboxChannel while this
  // process's relay leads, if anything else is heard (the relay has no
  // listening connection of its own: RelayOptions::woken_by_owner). A
  // connection for the relay alone would be one more backend that every
  // notifying commit signals; the relay polls instead.
  std::set<std::string> wanted_channels() const {
    std::set<std::string> wanted;
    for (const std::string& type : spec_.wake_on) {
      if (auto channel = notify_channel(type)) wanted.insert(std::move(*channel));
    }
    {
      std::lock_guard lock(listen_mu_);
      for (const auto& own : own_channels_) {
        if (!set_aside_.contains(own.first)) wanted.insert(own.first);
      }
    }
    if (relay_ && relay_->leader() && !wanted.empty()) wanted.insert(bus::kOutboxChannel);
    return wanted;
  }

  // LISTEN on a connection of its own, until stopping: a notification of a
  // wake_on status or an own channel wakes the loop, one of the outbox the
  // relay. PostgreSQL 15 signals every listening backend of the database on
  // every notifying commit, whatever the channel, so the connection listens
  // only to what this process wants now, and is closed while that is
  // nothing. A lost connection (terminated backend, PostgreSQL restart) is
  // re-made with back-off, and the loop is woken once after, for what
  // changed meanwhile. Waits in short slices so shutdown never waits long,
  // and a change of what is wanted takes effect within one.
  void listen_loop() {
    auto rlog = logging::get("runtime");
    db::Session session(config_.get_string("CONVEYOR_DATABASE_URL"), spec_.name + "-listen");
    std::set<std::string> listened;  // on `session`; empty: no connection
    bool lost = false;
    milliseconds retry = kListenRetryMin;
    // Until shutdown() joins it, not until stopping_: while the loop drains,
    // the relay still leads and hears its channel here.
    while (!listener_stop_) {
      try {
        const std::set<std::string> wanted = wanted_channels();
        if (wanted.empty()) {
          session.reset();
          listened.clear();
          set_listening(false);
          hear_outbox(false);
          std::unique_lock lock(exit_mu_);
          exit_cv_.wait_for(lock, kListenSlice, [this] { return listener_stop_.load(); });
          continue;
        }
        if (!session.is_open()) listened.clear();  // a re-made connection has no LISTEN
        const bool fresh = listen_to(session, listened, wanted);
        // libpqxx skips a LISTEN on a connection that broke, and swallows an
        // UNLISTEN's error: a connection lost meanwhile starts afresh.
        if (!session.is_open()) throw Error(errc::unavailable, "connection lost while changing LISTENs");
        if (fresh) {
          retry = kListenRetryMin;
          if (lost) {
            listen_reconnects_->inc();
            rlog->info("listening to {} again", join(wanted));
          }
          lost = false;
        }
        set_listening(true);
        hear_outbox(listened.contains(bus::kOutboxChannel));
        std::vector<db::Notification> notified = session.wait_for_notifications(kListenSlice);
        if (std::erase_if(notified, [](const db::Notification& n) { return n.channel == bus::kOutboxChannel; }) > 0) {
          relay_->notify();
        }
        if (!notified.empty()) {
          notify_wakeups_->inc();
          wake_for(notified);
        }
      } catch (const std::exception& e) {
        listened.clear();
        set_listening(false);
        hear_outbox(false);
        session.reset();
        if (!lost) {
          rlog->warn("LISTEN {}: {}; reconnecting (wake-ups come from Kafka and the poll meanwhile)",
                     join(wanted_channels()), logging::redact_url(e.what()));
        }
        lost = true;
        std::unique_lock lock(exit_mu_);
        exit_cv_.wait_for(lock, retry, [this] { return listener_stop_.load(); });
        retry = std::min(retry * 2, kListenRetryMax);
      }
    }
  }

  void set_listening(bool listening) {
    listening_ = listening;
    listening_gauge_->set(listening ? 1 : 0);
  }

  // Tells the relay whether this listener hears its channel (else it polls).
  void hear_outbox(bool heard) {
    if (relay_) relay_->set_heard(heard);
  }

  // LISTENs to what is wanted and not listened, UNLISTENs the rest; returns
  // whether the connection is new. What was notified before a LISTEN was
  // missed: a new connection wakes the loop for anything (if it hears more
  // than the outbox), a channel added to one wakes it for that channel, and
  // the outbox channel runs a relay pass.
  bool listen_to(db::Session& session, std::set<std::string>& listened, const std::set<std::string>& wanted) {
    const bool fresh = listened.empty();
    std::vector<db::Notification> added;
    for (const std::string& channel : wanted) {
      if (listened.contains(channel)) continue;
      session.listen(channel);
      if (channel == bus::kOutboxChannel) {
        relay_->notify();
      } else {
        added.push_back({channel, ""});
      }
    }
    for (const std::string& channel : listened) {
      if (!wanted.contains(channel)) session.unlisten(channel);
    }
    listened = wanted;
    if (fresh && !added.empty()) {
      wake();
    } else if (!added.empty()) {
      wake_for(added);
    }
    return fresh;
  }

  static std::string join(const std::set<std::string>& channels) {
    std::string out;
    for (const std::string& c : channels) out += (out.empty() ? "" : ", ") + c;
    return out;
  }

  // Heartbeats and the parameter reload timer, until shutdown() (it keeps
  // beating while the loop drains).
  void timer_loop() {
    auto rlog = logging::get("runtime");
    const milliseconds heartbeat = config_.get_duration("CONVEYOR_HEARTBEAT_INTERVAL_MS");
    auto reload_every = [this] { return std::chrono::seconds(std::max(1, parameters()->parameter_reload_interval_s)); };
    auto next_heartbeat = Clock::now() + heartbeat;
    auto next_reload = Clock::now() + reload_every();
    std::unique_lock lock(exit_mu_);
    while (!exit_) {
      exit_cv_.wait_until(lock, std::min(next_heartbeat, next_reload), [this] { return exit_ || heartbeat_now_; });
      if (exit_) break;
      if (heartbeat_now_) {
        // The broker state changed: tell the registry now, not at the next beat.
        heartbeat_now_ = false;
        next_heartbeat = Clock::now();
      }
      lock.unlock();
      const auto now = Clock::now();
      if (now >= next_heartbeat) {
        try {
          const char* state = stopping_ ? "draining" : "up";
          const db::Result r = pool_->transact([&](db::Tx& tx) {
            return tx.exec(kHeartbeat, {instance_id_, state, broker_state()});
          });
          if (r.affected_rows() == 0) write_instance(state, false);
        } catch (const Error& e) {
          rlog->warn("heartbeat failed: {}", logging::redact_url(e.what()));
        }
        next_heartbeat = now + heartbeat;
      }
      if (now >= next_reload) {
        try {
          const std::string before = parameters()->updated_at;
          reload_parameters();
          if (parameters()->updated_at != before) {
            log_->info("system parameters changed (timer): as of {}", parameters()->updated_at);
            wake();
          }
        } catch (const Error& e) {
          rlog->warn("reloading system parameters failed: {}", logging::redact_url(e.what()));
        }
        next_reload = Clock::now() + reload_every();
      }
      lock.lock();
    }
  }

  // Readiness and the registry follow the broker as librdkafka sees it; a
  // change is logged once and written to the registry at once.
  void note_broker(bool up) {
    if (broker_ok_.exchange(up) == up) return;
    if (up) {
      log_->info("broker reachable again");
    } else {
      log_->warn("broker unreachable: working on the database poll until it is back (degraded)");
    }
    {
      std::lock_guard lock(exit_mu_);
      heartbeat_now_ = true;
    }
    exit_cv_.notify_all();
  }

  std::optional<std::string> broker_state() const {
    if (brokers_.empty()) return std::nullopt;
    return std::string(broker_ok_ ? "up" : "down");
  }

  void signal_loop() {
    for (;;) {
      int sig = 0;
      if (sigwait(&signals_, &sig) != 0) continue;
      {
        std::lock_guard lock(exit_mu_);
        if (exit_) return;  // shutdown() woke us
      }
      if (stopping_) {
        if (log_) log_->warn("signal {} received again: already draining", sig);
        continue;
      }
      if (log_) log_->info("signal {} received: draining", sig);
      begin_stop("draining");
      if (pool_) {
        try {
          pool_->transact([this](db::Tx& tx) { tx.exec(kSetInstanceStatus, {instance_id_, "draining"}); });
        } catch (const Error& e) {
          if (log_) log_->warn("marking the instance draining failed: {}", logging::redact_url(e.what()));
        }
      }
      watch_grace();
    }
  }

  // The loop must return within CONVEYOR_SHUTDOWN_GRACE_MS of SIGTERM; after
  // that the orchestrator would kill us anyway, so exit and say why.
  void watch_grace() {
    const milliseconds grace = config_.get_duration("CONVEYOR_SHUTDOWN_GRACE_MS");
    std::unique_lock lock(exit_mu_);
    if (exit_cv_.wait_for(lock, grace, [this] { return loop_done_; })) return;
    if (log_) {
      log_->error("the service did not stop within {} ms of the signal: exiting", grace.count());
      log_->flush();
    }
    std::fprintf(stderr, "%s: did not stop within the shutdown grace period\n", spec_.name.c_str());
    std::_Exit(1);
  }

  void begin_stop(const std::string& reason) {
    set_ready(false, reason);
    {
      std::lock_guard lock(wake_mu_);
      stopping_ = true;
    }
    wake_cv_.notify_all();
    { std::lock_guard lock(exit_mu_); }
    exit_cv_.notify_all();
  }

  void write_instance(const std::string& status, bool log_failure) {
    try {
      pool_->transact([&](db::Tx& tx) {
        tx.exec(kUpsertInstance, {instance_id_, spec_.name, host_name(), static_cast<int>(getpid()), CONVEYOR_VERSION,
                                  config_.get_string("CONVEYOR_IMAGE_TAG"), status});
      });
      registered_ = true;
    } catch (const Error& e) {
      if (!log_failure) throw;
      throw Error(e.code(), std::string("registering the instance in conveyor.service_instance: ") + e.what());
    }
  }

  // Idempotent; called after the loop returns and on start-up failure.
  void shutdown() {
    if (shut_down_) return;
    shut_down_ = true;
    {
      std::lock_guard lock(exit_mu_);
      loop_done_ = true;  // the grace watch is over: the loop has returned
    }
    begin_stop("stopping");
    if (server_) server_->stop();
    for (std::thread& t : consumer_threads_) {
      if (t.joinable()) t.join();
    }
    {
      std::lock_guard lock(exit_mu_);
      listener_stop_ = true;
    }
    exit_cv_.notify_all();
    if (listen_thread_.joinable()) listen_thread_.join();
    if (relay_) {
      relay_->stop();
      // What this instance's last transactions wrote goes out now, not at
      // the next relay's start.
      try {
        relay_->run_once();
      } catch (const Error& e) {
        if (log_) log_->warn("final outbox flush failed: {}", logging::redact_url(e.what()));
      }
      relay_.reset();
    }
    {
      std::lock_guard lock(exit_mu_);
      exit_ = true;
    }
    exit_cv_.notify_all();
    if (timer_thread_.joinable()) timer_thread_.join();
    if (signal_thread_.joinable()) {
      pthread_kill(signal_thread_.native_handle(), SIGTERM);
      signal_thread_.join();
    }
    // Only a registered instance has a row to mark (a start-up that never
    // reached the database has none, and a second error would only repeat
    // the first).
    if (pool_ && registered_) {
      try {
        pool_->transact([this](db::Tx& tx) { tx.exec(kSetInstanceStatus, {instance_id_, "stopped"}); });
      } catch (const Error& e) {
        if (log_) log_->warn("marking the instance stopped failed: {}", logging::redact_url(e.what()));
      }
    }
    if (up_) up_->set(0);
    producer_.reset();  // flushes
  }

  ServiceSpec spec_;
  config::Config config_;
  std::string instance_id_;
  std::string brokers_;
  std::string parameters_topic_;
  metrics::Registry& registry_ = metrics::default_registry();
  std::shared_ptr<spdlog::logger> log_;
  std::unique_ptr<db::Pool> pool_;
  std::unique_ptr<bus::Producer> producer_;
  std::unique_ptr<http::Server> server_;
  std::unique_ptr<bus::Relay> relay_;

  metrics::Gauge* up_ = nullptr;
  metrics::Counter* wakeups_ = nullptr;
  metrics::Counter* events_consumed_ = nullptr;
  metrics::Counter* notify_wakeups_ = nullptr;
  std::atomic<bool> listening_{false};      // the NOTIFY listener is connected
  std::atomic<bool> listener_stop_{false};  // set by shutdown(), before it joins the listener
  // listen_also's channels and the event type each stands for: written in
  // setup(), before the listener thread starts, then only read.
  std::map<std::string, std::string> own_channels_;
  // The own channels the service does not want heard now (set_listened).
  mutable std::mutex listen_mu_;
  std::set<std::string> set_aside_;  // guarded by listen_mu_
  metrics::Counter* listen_reconnects_ = nullptr;
  metrics::Gauge* listening_gauge_ = nullptr;
  metrics::Counter* bad_events_ = nullptr;
  metrics::Counter* parameter_reloads_ = nullptr;

  mutable std::mutex params_mu_;
  std::mutex reload_mu_;
  std::shared_ptr<const model::SystemParameters> params_;

  std::atomic<bool> stopping_{false};
  std::atomic<bool> registered_{false};  // a row in conveyor.service_instance is this instance's
  mutable std::mutex wake_mu_;
  std::condition_variable wake_cv_;
  bool pending_ = true;  // the first wait returns at once: an initial scan
  Wake pending_wake_;    // what the pending wake-up is for (anything, at first)
  Wake last_wake_;

  std::mutex ready_mu_;
  std::string not_ready_reason_;
  std::atomic<bool> broker_ok_{true};

  std::mutex exit_mu_;  // guards exit_, loop_done_; exit_cv_ wakes sleeping threads
  std::condition_variable exit_cv_;
  bool exit_ = false;
  bool heartbeat_now_ = false;  // guarded by exit_mu_
  bool loop_done_ = false;
  bool shut_down_ = false;  // main thread only

  sigset_t signals_{};
  std::thread signal_thread_;
  std::thread timer_thread_;
  std::thread listen_thread_;
  std::vector<std::thread> consumer_threads_;
};

}  // namespace

bool Wake::concerns(const std::set<std::string>& step_types) const {
  if (anything || step_types.empty()) return true;
  return std::any_of(types.begin(), types.end(), [&](const std::string& t) { return step_types.contains(t); });
}

config::Schema service_schema() {
  using config::Type;
  config::Schema schema = config::core_schema();
  schema.add(make_key("CONVEYOR_POLL_INTERVAL_MS", Type::duration_ms, "1000",
                      "fallback scan interval when no event wakes the service", 1, 3600000));
  schema.add(make_key("CONVEYOR_RELAY_POLL_INTERVAL_MS", Type::duration_ms, "1000",
                      "how often the outbox relay looks for unsent events when no NOTIFY wakes it, and how often a "
                      "relay that does not lead tries to (so it bounds the take-over after a leader dies)",
                      10, 3600000));
  schema.add(make_key("CONVEYOR_RELAY_UNHEARD_POLL_INTERVAL_MS", Type::duration_ms, "100",
                      "how often the leading outbox relay looks for unsent events in a process that listens to no "
                      "status (monitor, worker-pool, creation without triggers): it keeps no LISTEN connection "
                      "for the relay alone, which every notifying commit would wake",
                      10, 3600000));
  schema.add(make_key("CONVEYOR_BATCH_SIZE", Type::integer, "200", "rows handled per transaction", 1, 10000));
  schema.add(make_key("CONVEYOR_DB_POOL_SIZE", Type::integer, "4", "database connections of the pool", 1, 64));
  schema.add(make_key("CONVEYOR_IMAGE_TAG", Type::string, "dev", "image tag this instance runs (reported only)"));
  schema.add(make_key("CONVEYOR_SHUTDOWN_GRACE_MS", Type::duration_ms, "30000",
                      "how long the service may drain after SIGTERM before it exits anyway", 0, 86400000));
  schema.add(make_key("CONVEYOR_METRICS_REQUIRE_TOKEN", Type::boolean, "false",
                      "whether GET /metrics needs a reader token (open by default, for scrapers)"));
  schema.add(make_key("CONVEYOR_TLS_CERT_FILE", Type::string, "",
                      "PEM certificate (chain) of the HTTP server; with CONVEYOR_TLS_KEY_FILE it serves only HTTPS"));
  schema.add(make_key("CONVEYOR_TLS_KEY_FILE", Type::string, "",
                      "PEM private key (unencrypted) of CONVEYOR_TLS_CERT_FILE; both or neither"));
  schema.add(make_key("CONVEYOR_HEARTBEAT_INTERVAL_MS", Type::duration_ms, "5000",
                      "how often conveyor.service_instance.last_heartbeat is updated", 10, 3600000));
  return schema;
}

int run(int argc, char** argv, ServiceSpec spec, const std::function<void(Context&)>& setup,
        const std::function<void(Context&)>& loop) {
  CommandLine line;
  try {
    line = parse_command_line(argc, argv);
  } catch (const Error& e) {
    // Refused before anything starts (exit 2, as for any misused command).
    std::fprintf(stderr, "%s: %s\n", spec.name.c_str(), e.what());
    return 2;
  }
  switch (line.action) {
    case CommandLine::Action::help:
      std::fputs(help_text(spec.name, spec.schema, spec.default_http_port).c_str(), stdout);
      return 0;
    case CommandLine::Action::version:
      std::printf("%s %s\n", spec.name.c_str(), CONVEYOR_VERSION);
      return 0;
    case CommandLine::Action::check:
      // The health probe: same configuration, asks the running instance, never starts one.
      return check_main(line.env_files, spec.name, spec.schema, spec.default_http_port);
    case CommandLine::Action::run:
      break;
  }
  Service service(std::move(spec));
  return service.run(line.env_files, setup, loop);
}

}  // namespace conveyor::runtime
