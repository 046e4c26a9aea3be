// conveyor-worker: wiring only; the logic is in worker_lib (src/worker.hpp).
#include <chrono>
#include <memory>

#include "conveyor/runtime/runtime.hpp"
#include "worker.hpp"

int main(int argc, char** argv) {
  using namespace conveyor;
  runtime::ServiceSpec spec{.name = worker::kServiceName,
                            .schema = worker::schema(),
                            .wake_on = {worker::kQueuedEvent, worker::kCancelRequestedEvent},
                            .consumer_group = "conveyor-worker",
                            // Queued jobs come by NOTIFY, and the monitor
                            // thread checks for cancel requests every 500 ms.
                            .event_fetch_wait = std::chrono::milliseconds(250)};
  std::unique_ptr<worker::Worker> w;
  return runtime::run(
      argc, argv, std::move(spec),
      [&](runtime::Context& ctx) {
        w = std::make_unique<worker::Worker>(ctx);
        w->start();
      },
      [&](runtime::Context&) { w->loop(); });
}
