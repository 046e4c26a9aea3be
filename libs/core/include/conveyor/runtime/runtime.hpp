#pragma once
// conveyor::runtime — the service main loop every Conveyor executable uses:
// config (+ --env-file), logging, a database pool, the admin HTTP server
// (/healthz /readyz /metrics /version), a heartbeat row in
// conveyor.service_instance, the outbox relay (leader-elected: every service
// runs one, one publishes), live system parameters (reloaded on the
// parameters event and on a timer), wake-ups from job events, and SIGTERM:
// stop taking work, finish what is in flight, commit, exit 0.
//
// Wake-ups come from PostgreSQL first: a service with wake_on LISTENs on
// conveyor_job_status_<status> for each status of its wake_on (the status
// trigger notifies each new status of a statement once, payload the status,
// but started, which no service waits on, and done while no configured job
// waits on the job)
// on a connection of its own, re-made with back-off when lost. A Kafka job
// event wakes it only when NOTIFY could not have: the listener is down, the
// type has no channel (cancel_requested, restart_requested, released), or the
// event is a re-emit. The poll stays as the fallback.
// Stage services run their loop as a StageLoop (stage_loop.hpp).
//
// Events only wake a service; the work itself is read from PostgreSQL (the
// truth) with conditional updates, so a lost or duplicated event changes
// nothing and offsets can be committed lazily (at most once a second).
#include <chrono>
#include <functional>
#include <memory>
#include <set>
#include <string>

#include "conveyor/config/config.hpp"
#include "conveyor/db/db.hpp"
#include "conveyor/http/server.hpp"
#include "conveyor/logging/logging.hpp"
#include "conveyor/metrics/metrics.hpp"
#include "conveyor/model/system_parameters.hpp"

namespace conveyor::bus {
class Producer;
}

namespace conveyor::runtime {

struct ServiceSpec {
  std::string name;                               // "conveyor-creation"
  config::Schema schema = config::core_schema();  // add the service's own keys
  // CloudEvent types that wake this service ("io.conveyor.job.initialized"),
  // from Kafka (its job-event consumer reads the topics of these types only)
  // and, for status events, from NOTIFY. Empty: no job-event consumer and no
  // LISTEN. Parameter changes always wake it.
  std::set<std::string> wake_on;
  // Consumer group; empty: the service name (replicas share the wake-ups).
  std::string consumer_group;
  // How long a fetch of job events may wait on an empty topic
  // (fetch.wait.max.ms). 0: 10 ms when an event of wake_on is the only
  // wake-up of its type (it has no NOTIFY channel), else 250 ms. A service
  // that finds that work by other means sets more: the devbroker answers an
  // empty fetch only when the wait ends, so 10 ms costs 100 fetches a second
  // (a real broker answers as soon as an event comes).
  std::chrono::milliseconds event_fetch_wait{0};
  int default_http_port = 0;  // used when CONVEYOR_HTTP_PORT is not set; 0: any free port
  // Every route but /healthz, /readyz, /version (and /metrics unless
  // CONVEYOR_METRICS_REQUIRE_TOKEN) needs a token (auth.hpp). A service
  // with a browser login names its cookie here; the REST API takes the
  // Authorization header only (a cookie would be sent cross-port).
  std::string auth_cookie{};
};

// What ended the last wait_for_work: the job event types whose NOTIFY woke
// it, and the reasons given to wake_because(); or anything (a poll, a Kafka
// event, a parameters change, wake(), a re-made listener, the first wait),
// after which any step may have work.
struct Wake {
  bool anything = true;
  // "io.conveyor.job.initialized", or a wake_because() reason; only when !anything
  std::set<std::string> types;
  // Whether a step woken by `step_types` (empty: by every wake-up) may have
  // work now.
  bool concerns(const std::set<std::string>& step_types) const;
};

// What a running service sees. Owned by run(); every member is thread-safe.
class Context {
 public:
  virtual ~Context() = default;
  virtual const std::string& service() const = 0;
  virtual const std::string& instance_id() const = 0;
  virtual const config::Config& config() const = 0;
  virtual db::Pool& db() = 0;
  virtual metrics::Registry& metrics() = 0;
  virtual std::shared_ptr<spdlog::logger> log() = 0;
  // Routes may be added in setup(); the server starts after it.
  virtual http::Server& http() = 0;
  // Null when CONVEYOR_KAFKA_BROKERS is empty.
  virtual bus::Producer* producer() = 0;
  // The latest snapshot of conveyor.system_parameters.
  virtual std::shared_ptr<const model::SystemParameters> parameters() const = 0;
  // Re-reads the parameters now (e.g. after this service changed them).
  virtual void reload_parameters() = 0;
  virtual bool stopping() const = 0;
  // Stops the service as SIGTERM does (drain, then exit 0), for a reason of
  // its own: a worker whose row an operator marked stopped. A context that
  // cannot stop ignores it.
  virtual void request_stop(const std::string& reason) { (void)reason; }
  // Blocks until a wake-up (event, parameters change, wake()) or `timeout`;
  // returns false once the service is stopping.
  virtual bool wait_for_work(std::chrono::milliseconds timeout) = 0;
  // What ended the last wait_for_work (for the thread that waits). A
  // context that cannot tell says anything.
  virtual Wake last_wake() const { return {}; }
  virtual void wake() = 0;
  // A wake-up for a reason of the service's own (a worker's freed slot): it
  // joins last_wake().types instead of making it anything. A context that
  // cannot tell wakes for anything.
  virtual void wake_because(const std::string& reason) {
    (void)reason;
    wake();
  }
  // Also LISTENs on `channel` (a channel of the service's own, named by the
  // database: a worker's conveyor.queued_channel), whose notifications wake
  // the loop as events of `type` do. In setup() only, before the listener
  // starts. A context that cannot listen ignores it: the poll finds the work.
  virtual void listen_also(const std::string& channel, const std::string& type) {
    (void)channel;
    (void)type;
  }
  // Whether a channel of listen_also is to be heard now (it is from
  // listen_also on). PostgreSQL 15 signals every listening backend on every
  // notifying commit, whatever the channel, so a service that has nothing
  // to hear there now sets it aside; with nothing left to hear, its
  // listener closes its connection. Any thread; takes effect within a
  // quarter second, and a channel heard again wakes the loop once for
  // what it missed.
  virtual void set_listened(const std::string& channel, bool listened) {
    (void)channel;
    (void)listened;
  }
  // Marks the instance not ready (/readyz 503) with a reason, e.g. while draining.
  virtual void set_ready(bool ready, const std::string& reason = "") = 0;
};

// Keys every service adds to the core schema:
//   CONVEYOR_POLL_INTERVAL_MS (fallback scan interval, default 1000)
//   CONVEYOR_BATCH_SIZE (rows per transaction, default 200)
//   CONVEYOR_DB_POOL_SIZE (default 4), CONVEYOR_IMAGE_TAG (default "dev")
//   CONVEYOR_SHUTDOWN_GRACE_MS (default 30000)
config::Schema service_schema();

// Runs a service until SIGTERM/SIGINT. `setup` runs once after everything is
// connected and before the admin server starts (add routes, start threads);
// `loop` runs on the main thread and must return soon after
// ctx.stopping() turns true (typically: while (ctx.wait_for_work(poll)) {...}).
// Returns the process exit code: 0 after a clean drain, 1 on a start-up
// failure (logged with the reason, e.g. the config key that is wrong).
// The command line is read first (command_line.hpp): `--check` probes the
// running instance's /readyz and returns 0 or 1 (check.hpp), `--help` and
// `--version` print and return 0, and an argument it does not know returns 2
// naming it; none of them starts anything.
int run(int argc, char** argv, ServiceSpec spec, const std::function<void(Context&)>& setup,
        const std::function<void(Context&)>& loop);

}  // namespace conveyor::runtime
