#pragma once
// PLACEHOLDER — to be written.
#include "conveyor/runtime/runtime.hpp"

namespace conveyor::monitor {
runtime::ServiceSpec spec();
void setup(runtime::Context& ctx);
void loop(runtime::Context& ctx);
}  // namespace conveyor::monitor
