// conveyor-configuration: wiring only; the logic is in configuration_lib (src/configuration.hpp).
#include "configuration.hpp"

#include "conveyor/runtime/runtime.hpp"

int main(int argc, char** argv) {
  return conveyor::runtime::run(argc, argv, conveyor::configuration::spec(), conveyor::configuration::setup,
                                conveyor::configuration::loop);
}
