// conveyor-workerpool: wiring only; the logic is in workerpool_lib (src/workerpool.hpp).
#include <memory>

#include "conveyor/runtime/runtime.hpp"
#include "workerpool.hpp"

int main(int argc, char** argv) {
  using namespace conveyor;
  // The workers get the same --env-file files as the pool.
  const auto env_files = workerpool::env_file_args(argc, argv);
  std::unique_ptr<workerpool::WorkerPool> pool;
  return runtime::run(
      argc, argv, workerpool::spec(),
      [&](runtime::Context& ctx) { pool = std::make_unique<workerpool::WorkerPool>(ctx, env_files); },
      [&](runtime::Context&) { pool->run(); });
}
