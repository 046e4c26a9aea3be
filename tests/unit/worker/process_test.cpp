// run_process and the Reactor (services/worker/src/process.cpp): how a
// job's program is started and watched. Real processes; no database.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "child_signals.hpp"
#include "process.hpp"

namespace {

namespace fs = std::filesystem;
using conveyor::worker::ProcessOptions;
using conveyor::worker::ProcessOutcome;
using conveyor::worker::Reactor;
using conveyor::worker::request_stop;
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

// A signal sent to the worker's process group in the moment before a new
// child left it (the worker's own SIGTERM, a terminal's ^C) is pending in
// the child, blocked; it was the worker's and must not end the job. Without
// the reset the same child dies of it, so the test can tell.
TEST(ChildSignals, ASignalPendingFromTheWorkersGroupIsNotTheChilds) {
  auto child_status = [](bool reset) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      sigset_t term;
      sigemptyset(&term);
      sigaddset(&term, SIGTERM);
      ::sigprocmask(SIG_BLOCK, &term, nullptr);
      ::raise(SIGTERM);  // as if sent to the group it is still in: pending, blocked
      ::setpgid(0, 0);
      if (reset) {
        conveyor::worker::reset_signals_of_child();
      } else {
        ::sigprocmask(SIG_UNBLOCK, &term, nullptr);
      }
      ::_exit(0);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return status;
  };
  const int without = child_status(false);
  ASSERT_TRUE(WIFSIGNALED(without) && WTERMSIG(without) == SIGTERM) << "status " << without;
  const int with = child_status(true);
  EXPECT_TRUE(WIFEXITED(with) && WEXITSTATUS(with) == 0) << "status " << with;
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

std::size_t thread_count() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/self/task")) ++n;
  return n;
}

// Outcomes of programs started on the reactor, as they come.
class Outcomes {
 public:
  void add(ProcessOutcome o) {
    {
      std::lock_guard lock(mutex_);
      outcomes_.push_back(std::move(o));
    }
    cv_.notify_all();
  }
  // Waits up to `timeout` for `n` outcomes, calling `meanwhile` every 20 ms.
  bool wait(
      std::size_t n, std::chrono::milliseconds timeout, const std::function<void()>& meanwhile = [] {}) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::unique_lock lock(mutex_);
    while (outcomes_.size() < n && std::chrono::steady_clock::now() < deadline) {
      lock.unlock();
      meanwhile();
      lock.lock();
      cv_.wait_for(lock, 20ms, [&] { return outcomes_.size() >= n; });
    }
    return outcomes_.size() >= n;
  }
  std::vector<ProcessOutcome> all() {
    std::lock_guard lock(mutex_);
    return outcomes_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<ProcessOutcome> outcomes_;
};

// Issue 14: no thread per job. 32 programs sleeping a second at once run on
// the reactor's one thread: this process has no more threads while they
// run than before they started, and they end together (a second, not 32).
TEST(Reactor, ThirtyTwoProgramsAtOnceAddNoThread) {
  constexpr std::size_t kPrograms = 32;
  auto& reactor = Reactor::instance();
  const std::size_t before = thread_count();
  Outcomes done;
  std::atomic<StopReason> stop{StopReason::none};
  const auto t0 = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < kPrograms; ++i) {
    reactor.start(
        options_for({"sleep", "1"}), &stop, [](std::string_view, std::string_view) {},
        [&](ProcessOutcome o) { done.add(std::move(o)); });
  }
  std::size_t most = 0;
  std::size_t most_running = 0;
  ASSERT_TRUE(done.wait(kPrograms, 20s, [&] {
    most = std::max(most, thread_count());
    most_running = std::max(most_running, reactor.running());
  }));
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_LE(most, before) << "threads grew while " << kPrograms << " programs ran";
  EXPECT_GT(most_running, kPrograms / 2) << "they did not run at once";
  EXPECT_LT(took, 8s) << "they ran one after the other";
  for (const auto& o : done.all()) {
    EXPECT_EQ(o.exit_code, 0);
    EXPECT_FALSE(o.spawn_error.has_value());
  }
  EXPECT_EQ(reactor.running(), 0u);
}

// A stop request wakes the reactor at once (an eventfd, no tick): the
// program is stopped as soon as it is asked, and the wait for it is a few
// wake-ups.
TEST(Reactor, AStopRequestFromAnotherThreadStopsTheProgramAtOnce) {
  std::atomic<StopReason> stop{StopReason::none};
  std::mutex mutex;
  std::condition_variable cv;
  bool up = false;
  Outcomes done;
  auto o = options_for({"sh", "-c", "echo up; exec sleep 30"});
  o.kill_grace = 5s;
  Reactor::instance().start(
      o, &stop,
      [&](std::string_view, std::string_view line) {
        if (line != "up") return;
        {
          std::lock_guard lock(mutex);
          up = true;
        }
        cv.notify_all();
      },
      [&](ProcessOutcome outcome) { done.add(std::move(outcome)); });
  {
    std::unique_lock lock(mutex);
    ASSERT_TRUE(cv.wait_for(lock, 10s, [&] { return up; }));
  }
  const auto asked = std::chrono::steady_clock::now();
  ASSERT_TRUE(request_stop(stop, StopReason::canceled));
  EXPECT_FALSE(request_stop(stop, StopReason::shutdown)) << "a second request replaced the first";
  ASSERT_TRUE(done.wait(1, 10s));
  EXPECT_LT(std::chrono::steady_clock::now() - asked, 2s);
  const auto outcome = done.all().front();
  EXPECT_EQ(outcome.stopped, StopReason::canceled);
  EXPECT_EQ(outcome.term_signal, SIGTERM);
  EXPECT_LE(outcome.wakeups, 6);
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
