#pragma once
// What /proc says about the processes conveyor-bench measures: CPU time
// (utime + stime, all threads) and peak resident memory (VmHWM). Linux only.
#include <filesystem>
#include <map>
#include <string>

namespace conveyor::bench {

// One reading of every process on the machine, so that the CPU of a process
// tree is taken at a single moment.
class ProcSnapshot {
 public:
  ProcSnapshot();  // reads /proc/[pid]/stat of every process
  // CPU milliseconds the process itself has used (all its threads).
  double own_ms(int pid) const;
  // CPU milliseconds of the process and all its descendants: its own, its
  // reaped children's (cutime + cstime) and, recursively, its live
  // children's. The difference of two snapshots is what the tree used in
  // between, children that exited meanwhile included.
  double tree_ms(int pid) const;

 private:
  struct Stat {
    int ppid = 0;
    double own_ms = 0;
    double reaped_children_ms = 0;
  };
  std::map<int, Stat> stats_;
  std::multimap<int, int> children_;  // ppid -> pid
};

// VmHWM of the process in MiB; 0 when it cannot be read.
double peak_rss_mib(int pid);

// The file system `dir` is on, for the report: "tmpfs", "xfs", "ext4 (vda,
// journaled)", "ext4 (vda, no journal)" (the journal from /proc/fs/jbd2,
// the device from /sys/dev/block), or "unknown" when it cannot be read. On
// ext4 without a journal a new inode skips every inode freed in the last
// minute, so a run's files cost more right after another run's clean-up.
std::string volume_of(const std::filesystem::path& dir);

}  // namespace conveyor::bench
