// conveyor-workerpool: wiring only; the logic is in workerpool_lib (src/workerpool.hpp).
#include <sys/prctl.h>

#include <cerrno>
#include <cstring>
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
      [&](runtime::Context& ctx) {
        // The jobs of its local workers run as its user: not dumpable, so
        // /proc/<pool>/environ (its database URL) is not theirs to read.
        if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
          ctx.log()->warn("cannot make the pool non-dumpable: {}", std::strerror(errno));
        }
        pool = std::make_unique<workerpool::WorkerPool>(ctx, env_files);
      },
      [&](runtime::Context&) { pool->run(); });
}
