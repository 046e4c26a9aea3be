#include "conveyor/logging/thread_name.hpp"

#include <pthread.h>

#include <string>

namespace conveyor::logging {

void name_this_thread(std::string_view name) {
  constexpr std::size_t kMax = 15;  // TASK_COMM_LEN - 1
  const std::string kept(name.substr(0, kMax));
  (void)::pthread_setname_np(::pthread_self(), kept.c_str());
}

}  // namespace conveyor::logging
