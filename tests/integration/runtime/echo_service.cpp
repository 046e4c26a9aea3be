// A minimal service on the runtime, for integration_runtime: its loop counts
// the wake-ups it takes, and two routes expose what the runtime gives it.
// With CONVEYOR_POLL_INTERVAL_MS large, every count is an event wake-up.
#include <atomic>
#include <cstdlib>
#include <mutex>

#include <nlohmann/json.hpp>

#include "conveyor/runtime/runtime.hpp"

int main(int argc, char** argv) {
  using namespace conveyor;
  std::atomic<long> wakeups{0};
  std::mutex last_mu;
  nlohmann::json last_wake;  // what ended the last wait (runtime::Wake)

  runtime::ServiceSpec spec;
  spec.name = "conveyor-echo";
  spec.schema = runtime::service_schema();
  // A status (notified and on Kafka) and a request (on Kafka only); with
  // ECHO_KAFKA_ONLY set, the request alone (a service that hears no status,
  // as the monitor).
  spec.wake_on = {"io.conveyor.job.configured", "io.conveyor.job.cancel_requested"};
  if (std::getenv("ECHO_KAFKA_ONLY") != nullptr) spec.wake_on = {"io.conveyor.job.cancel_requested"};

  auto setup = [&](runtime::Context& ctx) {
    ctx.http().route("GET", "/count", [&](const http::Request&) {
      std::lock_guard lock(last_mu);
      return http::Response::json({{"wakeups", wakeups.load()}, {"last_wake", last_wake}});
    });
    ctx.http().route("GET", "/parameters",
                     [&ctx](const http::Request&) { return http::Response::json(ctx.parameters()->to_json()); });
  };
  auto loop = [&](runtime::Context& ctx) {
    const auto poll = ctx.config().get_duration("CONVEYOR_POLL_INTERVAL_MS");
    while (ctx.wait_for_work(poll)) {
      const runtime::Wake wake = ctx.last_wake();
      {
        std::lock_guard lock(last_mu);
        last_wake = {{"anything", wake.anything}, {"types", wake.types}};
      }
      ++wakeups;
    }
  };
  return runtime::run(argc, argv, spec, setup, loop);
}
