// conveyor-workerpool: wiring only; the logic is in workerpool_lib (src/workerpool.hpp).
#include "workerpool.hpp"

#include "conveyor/runtime/runtime.hpp"

int main(int argc, char** argv) {
  return conveyor::runtime::run(argc, argv, conveyor::workerpool::spec(), conveyor::workerpool::setup,
                                conveyor::workerpool::loop);
}
