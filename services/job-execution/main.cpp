// conveyor-execution: wiring only; the logic is in execution_lib (src/execution.hpp).
#include "execution.hpp"

#include "conveyor/runtime/runtime.hpp"

int main(int argc, char** argv) {
  return conveyor::runtime::run(argc, argv, conveyor::execution::spec(), conveyor::execution::setup,
                                conveyor::execution::loop);
}
