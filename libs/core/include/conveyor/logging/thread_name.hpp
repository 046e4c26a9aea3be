#pragma once
// Names for a process's threads, so that `top -H`, `ps -L`, perf and
// /proc/<pid>/task/<tid>/comm say which thread is busy ("relay", "listen",
// "http-3") rather than repeating the process's name for every thread.
#include <string_view>

namespace conveyor::logging {

// Names the calling thread. Linux keeps the first 15 bytes; a failure is
// ignored (a name is a convenience, never a reason to stop).
void name_this_thread(std::string_view name);

}  // namespace conveyor::logging
