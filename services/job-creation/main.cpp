// conveyor-creation: the REST API (services/job-creation/src/creation.hpp).
#include "conveyor/runtime/runtime.hpp"
#include "creation.hpp"

int main(int argc, char** argv) {
  return conveyor::runtime::run(argc, argv, conveyor::creation::service_spec(), conveyor::creation::setup,
                                conveyor::creation::loop);
}
