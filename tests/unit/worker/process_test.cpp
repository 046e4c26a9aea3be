// run_process (services/worker/src/process.cpp): how a job's program is
// started and watched. Real processes; no database.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "process.hpp"

namespace {

namespace fs = std::filesystem;
using conveyor::worker::ProcessOptions;
using conveyor::worker::ProcessOutcome;
using conveyor::worker::run_process;
using conveyor::worker::StopReason;
using namespace std::chrono_literals;

struct Run {
  ProcessOutcome outcome;
  std::vector<std::string> out;
  std::vector<std::string> err;
};

ProcessOptions options_for(std::vector<std::string> argv) {
  ProcessOptions o;
  o.argv = std::move(argv);
  o.env = {{"PATH", "/usr/local/bin:/usr/bin:/bin"}};
  o.cwd = fs::temp_directory_path();
  o.kill_grace = 200ms;
  return o;
}

Run run(const ProcessOptions& o) {
  Run r;
  std::atomic<StopReason> stop{StopReason::none};
  r.outcome = run_process(o, stop, [&](std::string_view stream, std::string_view line) {
    (stream == "stdout" ? r.out : r.err).emplace_back(line);
  });
  return r;
}

TEST(RunProcess, AProgramNotOnThePathExits127WithASpawnError) {
  const auto r = run(options_for({"conveyor-no-such-program"}));
  EXPECT_EQ(r.outcome.exit_code, 127);
  ASSERT_TRUE(r.outcome.spawn_error.has_value());
  EXPECT_EQ(*r.outcome.spawn_error, "cannot execute 'conveyor-no-such-program': No such file or directory");
}

// A file that passes every check the parent can make (a regular, executable
// file) but that the kernel refuses to execute: only the child learns why,
// and it must still come back as a spawn error, not as a program that
// exited 127 by itself.
TEST(RunProcess, AnExecFailureOnlyTheChildSeesIsASpawnErrorWith127) {
  const fs::path bad = fs::temp_directory_path() / ("conveyor-not-a-program-" + std::to_string(::getpid()));
  std::ofstream(bad) << "\x7f"
                     << "garbage, no #! line and no ELF header\n";
  fs::permissions(bad, fs::perms::owner_all);
  const auto r = run(options_for({bad.string()}));
  fs::remove(bad);
  EXPECT_EQ(r.outcome.exit_code, 127);
  ASSERT_TRUE(r.outcome.spawn_error.has_value()) << "the exec failure was not reported as such";
  EXPECT_EQ(*r.outcome.spawn_error, "cannot execute '" + bad.string() + "': Exec format error");
}

TEST(RunProcess, ACwdThatCannotBeEnteredIsASpawnErrorWith127) {
  auto o = options_for({"true"});
  o.cwd = "/conveyor-no-such-dir";
  const auto r = run(o);
  EXPECT_EQ(r.outcome.exit_code, 127);
  ASSERT_TRUE(r.outcome.spawn_error.has_value());
  EXPECT_NE(r.outcome.spawn_error->find("(chdir): No such file or directory"), std::string::npos)
      << *r.outcome.spawn_error;
}

TEST(RunProcess, TheProgramGetsExactlyItsEnvironment) {
  auto o = options_for({"env"});
  o.env = {{"PATH", "/usr/bin:/bin"}, {"ONLY", "this"}};
  const auto r = run(o);
  EXPECT_EQ(r.outcome.exit_code, 0);
  EXPECT_EQ(r.out, (std::vector<std::string>{"ONLY=this", "PATH=/usr/bin:/bin"}));
}

TEST(RunProcess, TheProgramRunsInItsCwdWithStdioOnly) {
  // ls's own descriptors: 0 (/dev/null), 1 and 2 (the pipes) and the
  // directory it reads; nothing of the test process's.
  auto o = options_for({"sh", "-c", "pwd; ls /proc/self/fd; readlink /proc/self/fd/0"});
  o.cwd = "/";
  const auto r = run(o);
  EXPECT_EQ(r.outcome.exit_code, 0);
  EXPECT_EQ(r.out, (std::vector<std::string>{"/", "0", "1", "2", "3", "/dev/null"}));
}

TEST(RunProcess, TheProgramLeadsItsOwnProcessGroup) {
  // Fields 1 and 5 of /proc/<pid>/stat: pid and process group.
  const auto r = run(options_for({"sh", "-c", "cut -d' ' -f1,5 /proc/$$/stat"}));
  ASSERT_EQ(r.out.size(), 1u);
  const auto pid = std::to_string(r.outcome.pid);
  EXPECT_EQ(r.out[0], pid + " " + pid);
}

// Whatever the worker ignores or blocks, the program starts with default
// dispositions and an empty signal mask (a job must die of SIGTERM).
TEST(RunProcess, TheProgramStartsWithDefaultSignalsAndAnEmptyMask) {
  ::signal(SIGUSR1, SIG_IGN);
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR2);
  ::pthread_sigmask(SIG_BLOCK, &block, nullptr);
  const auto r = run(options_for({"grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"}));
  ::pthread_sigmask(SIG_UNBLOCK, &block, nullptr);
  ::signal(SIGUSR1, SIG_DFL);
  EXPECT_EQ(r.out, (std::vector<std::string>{"SigBlk:\t0000000000000000", "SigIgn:\t0000000000000000"}));
}

TEST(RunProcess, ATimeoutKillsTheWholeGroupAndRusageIsRecorded) {
  auto o = options_for({"sh", "-c", "sleep 30 & sleep 30; wait"});
  o.timeout = 200ms;
  const auto r = run(o);
  EXPECT_TRUE(r.outcome.timed_out);
  EXPECT_EQ(r.outcome.term_signal, SIGTERM);
  EXPECT_EQ(r.outcome.usage.source, "rusage");
  EXPECT_TRUE(r.outcome.usage.cpu_user_s.has_value());
}

// A program that ignores SIGTERM gets SIGKILL once the grace is over; the
// wait sleeps until then instead of spinning on the passed timeout.
TEST(RunProcess, AProgramIgnoringSigtermIsKilledAfterTheGraceWithoutSpinning) {
  auto o = options_for({"sh", "-c", "trap '' TERM; sleep 30"});
  o.timeout = 200ms;
  o.kill_grace = 300ms;
  const auto r = run(o);
  EXPECT_TRUE(r.outcome.timed_out);
  EXPECT_EQ(r.outcome.term_signal, SIGKILL);
  EXPECT_LE(r.outcome.wakeups, 20);
}

// The program's exit wakes the wait at once (a pidfd): a program that
// closes its output and then sleeps half a second costs the stop checks
// (one per 100 ms) and the exit. The 5 ms tick this replaced cost about a
// hundred.
TEST(RunProcess, AnExitAfterThePipesClosedIsAWakeUpNotATick) {
  const auto r = run(options_for({"sh", "-c", "exec >&- 2>&-; sleep 0.5"}));
  EXPECT_EQ(r.outcome.exit_code, 0);
  EXPECT_LE(r.outcome.wakeups, 25) << "the wait polls instead of waiting for the exit";
}

// Not a check: what one `sleep 0` costs the worker (this process) and in
// all (its children too). Run with --gtest_also_run_disabled_tests.
TEST(RunProcess, DISABLED_CpuPerSpawn) {
  constexpr int kRuns = 200;
  auto cpu_ms = [](int who) {
    rusage ru{};
    ::getrusage(who, &ru);
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
  };
  const double self0 = cpu_ms(RUSAGE_SELF);
  const double children0 = cpu_ms(RUSAGE_CHILDREN);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kRuns; ++i) ASSERT_EQ(run(options_for({"sleep", "0"})).outcome.exit_code, 0);
  const double wall = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("per spawn of `sleep 0` (%d runs): worker CPU %.3f ms, child CPU %.3f ms, wall %.3f ms\n", kRuns,
              (cpu_ms(RUSAGE_SELF) - self0) / kRuns, (cpu_ms(RUSAGE_CHILDREN) - children0) / kRuns, wall / kRuns);
}

}  // namespace
