// PLACEHOLDER — to be written.
#include "workerpool.hpp"

namespace conveyor::workerpool {
runtime::ServiceSpec spec() { return {.name = "conveyor-workerpool", .schema = runtime::service_schema(), .wake_on = {}, .consumer_group = "", .default_http_port = 0}; }
void setup(runtime::Context&) {}
void loop(runtime::Context& ctx) { while (ctx.wait_for_work(std::chrono::seconds(1))) {} }
}  // namespace conveyor::workerpool
