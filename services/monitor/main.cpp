// conveyor-monitor: wiring only; the logic is in monitor_lib (src/monitor.hpp).
#include "monitor.hpp"

#include "conveyor/runtime/runtime.hpp"

int main(int argc, char** argv) {
  return conveyor::runtime::run(argc, argv, conveyor::monitor::spec(), conveyor::monitor::setup,
                                conveyor::monitor::loop);
}
