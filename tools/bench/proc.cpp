// /proc readings for conveyor-bench.
#include "proc.hpp"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace conveyor::bench {
namespace {

double ms_per_tick() { return 1000.0 / static_cast<double>(::sysconf(_SC_CLK_TCK)); }

}  // namespace

ProcSnapshot::ProcSnapshot() {
  const double tick_ms = ms_per_tick();
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "stat");
    std::string line;
    if (!std::getline(in, line)) continue;  // the process is gone
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    const auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    std::vector<std::string> f;  // f[0] is field 3 (state) of proc(5)
    for (std::string w; rest >> w && f.size() < 15;) f.push_back(w);
    if (f.size() < 15) continue;
    Stat s;
    s.ppid = std::atoi(f[1].c_str());
    s.own_ms = (std::atof(f[11].c_str()) + std::atof(f[12].c_str())) * tick_ms;              // utime, stime
    s.reaped_children_ms = (std::atof(f[13].c_str()) + std::atof(f[14].c_str())) * tick_ms;  // cutime, cstime
    const int pid = std::atoi(name.c_str());
    stats_[pid] = s;
    children_.emplace(s.ppid, pid);
  }
}

double ProcSnapshot::own_ms(int pid) const {
  auto it = stats_.find(pid);
  return it == stats_.end() ? 0 : it->second.own_ms;
}

double ProcSnapshot::tree_ms(int pid) const {
  auto it = stats_.find(pid);
  if (it == stats_.end()) return 0;
  double total = it->second.own_ms + it->second.reaped_children_ms;
  auto [first, last] = children_.equal_range(pid);
  for (auto c = first; c != last; ++c) total += tree_ms(c->second);
  return total;
}

double peak_rss_mib(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atof(line.c_str() + 6) / 1024.0;  // kB
  }
  return 0;
}

}  // namespace conveyor::bench
