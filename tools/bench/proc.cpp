// /proc readings for conveyor-bench.
#include "proc.hpp"

#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
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

namespace {

// The block device's name of `dev` ("vda", "loop0"), from its uevent; ""
// when there is none (tmpfs, overlay).
std::string device_name(dev_t dev) {
  std::ifstream in("/sys/dev/block/" + std::to_string(major(dev)) + ":" + std::to_string(minor(dev)) + "/uevent");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("DEVNAME=", 0) == 0) return line.substr(8);
  }
  return "";
}

// Whether jbd2 keeps a journal for `device` (its entries are "vda-8").
bool journaled(const std::string& device) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/fs/jbd2", ec)) {
    if (e.path().filename().string().rfind(device + "-", 0) == 0) return true;
  }
  return false;
}

}  // namespace

std::string volume_of(const std::filesystem::path& dir) {
  struct statfs fs {};
  struct stat st {};
  if (::statfs(dir.c_str(), &fs) != 0 || ::stat(dir.c_str(), &st) != 0) return "unknown";
  switch (static_cast<unsigned long>(fs.f_type)) {
    case 0x01021994UL:
      return "tmpfs";
    case 0x58465342UL:
      return "xfs";
    case 0x9123683EUL:
      return "btrfs";
    case 0x794C7630UL:
      return "overlay";
    case 0xEF53UL: {
      const std::string device = device_name(st.st_dev);
      if (device.empty()) return "ext4";
      return "ext4 (" + device + (journaled(device) ? ", journaled)" : ", no journal)");
    }
    default: {
      std::ostringstream hex;
      hex << "file system type 0x" << std::hex << static_cast<unsigned long>(fs.f_type);
      return hex.str();
    }
  }
}

}  // namespace conveyor::bench
