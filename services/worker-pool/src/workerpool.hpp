#pragma once
// PLACEHOLDER — to be written.
#include "conveyor/runtime/runtime.hpp"

namespace conveyor::workerpool {
runtime::ServiceSpec spec();
void setup(runtime::Context& ctx);
void loop(runtime::Context& ctx);
}  // namespace conveyor::workerpool
