// db::GroupCommit, the group commit of the worker's finishes and of
// POST /v1/jobs: threads that write while another writes go in one batch.
// Real threads; each wait has a deadline.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "conveyor/db/group_commit.hpp"
#include "conveyor/testing/testing.hpp"

namespace {

using conveyor::db::GroupCommit;
using namespace std::chrono_literals;

// A write function whose first batch waits until the test opens a gate,
// and which records every batch's items.
struct Writer {
  std::mutex mutex;
  std::condition_variable cv;
  bool open = false;
  std::vector<std::vector<int>> batches;

  void write(const std::vector<const int*>& batch, std::vector<int>& outcomes) {
    std::unique_lock lock(mutex);
    batches.emplace_back();
    for (std::size_t i = 0; i < batch.size(); ++i) {
      batches.back().push_back(*batch[i]);
      outcomes[i] = *batch[i] * 10;
    }
    cv.wait_for(lock, 20s, [&] { return open; });
  }
  void open_gate() {
    std::lock_guard lock(mutex);
    open = true;
    cv.notify_all();
  }
};

// The test's threads: on the way out, even by a failed ASSERT, the gate
// opens and every thread is joined (a joinable thread destroyed aborts).
struct Threads {
  Writer& writer;
  std::vector<std::thread> threads;
  template <typename F>
  void run(F f) {
    threads.emplace_back(std::move(f));
  }
  ~Threads() {
    writer.open_gate();
    for (auto& t : threads) t.join();
  }
};

// Whether the writer began `n` batches, within 10 s.
bool batches_begun(Writer& w, std::size_t n) {
  return conveyor::testing::wait_until(
      [&] {
        std::lock_guard lock(w.mutex);
        return w.batches.size() == n;
      },
      10s);
}

TEST(GroupCommit, AnItemAloneIsWrittenAtOnce) {
  Writer w;
  w.open_gate();
  GroupCommit<int, int> group([&](const auto& b, auto& o) { w.write(b, o); });
  EXPECT_EQ(group.write(4), 40);
  EXPECT_EQ(group.write(5), 50);
  EXPECT_EQ(group.batches(), 2u);
  EXPECT_EQ(w.batches, (std::vector<std::vector<int>>{{4}, {5}}));
}

TEST(GroupCommit, ItemsThatComeWhileOneIsWrittenGoInTheNextBatchEachWithItsOutcome) {
  Writer w;
  GroupCommit<int, int> group([&](const auto& b, auto& o) { w.write(b, o); });
  std::vector<int> outcomes(6, 0);
  {
    Threads threads{w, {}};
    threads.run([&] { outcomes[0] = group.write(0); });
    ASSERT_TRUE(batches_begun(w, 1));  // the first batch is written (and waits at the gate) ...
    for (int i = 1; i < 6; ++i) threads.run([&, i] { outcomes[i] = group.write(i); });
    // ... while the others queue.
    ASSERT_TRUE(conveyor::testing::wait_until([&] { return group.waiting() == 5; }, 10s)) << group.waiting();
  }
  EXPECT_EQ(outcomes, (std::vector<int>{0, 10, 20, 30, 40, 50}));
  ASSERT_EQ(w.batches.size(), 2u);
  EXPECT_EQ(w.batches[0], std::vector<int>{0});
  EXPECT_EQ(w.batches[1].size(), 5u) << "the five that waited: one batch";
  EXPECT_EQ(group.batches(), 2u);
}

TEST(GroupCommit, UpToMaxWritersBatchesAreWrittenAtOnce) {
  Writer w;
  GroupCommit<int, int> group([&](const auto& b, auto& o) { w.write(b, o); }, 2);
  std::vector<int> outcomes(4, 0);
  {
    Threads threads{w, {}};
    threads.run([&] { outcomes[0] = group.write(0); });
    ASSERT_TRUE(batches_begun(w, 1));
    threads.run([&] { outcomes[1] = group.write(1); });
    ASSERT_TRUE(batches_begun(w, 2)) << "a second writer while the first waits";
    threads.run([&] { outcomes[2] = group.write(2); });
    threads.run([&] { outcomes[3] = group.write(3); });
    ASSERT_TRUE(conveyor::testing::wait_until([&] { return group.waiting() == 2; }, 10s)) << "a third waits";
  }
  EXPECT_EQ(outcomes, (std::vector<int>{0, 10, 20, 30}));
  ASSERT_EQ(w.batches.size(), 3u);
  EXPECT_EQ(w.batches[2].size(), 2u);
}

// A caller waiting in the queue is woken when its own batch is done, not
// by the batch before it: with every thread woken at each batch, the four
// callers that wait through two batches would wake twice (9 wake-ups).
TEST(GroupCommit, AWaitingCallerIsWokenForItsOwnBatchNotForEveryBatch) {
  std::mutex gates_mutex;
  std::condition_variable gates_cv;
  std::size_t gates_open = 0;  // batch n waits until n gates are open
  std::size_t begun = 0;
  GroupCommit<int, int> group([&](const auto& b, auto& o) {
    std::unique_lock lock(gates_mutex);
    const std::size_t n = ++begun;
    gates_cv.wait_for(lock, 20s, [&] { return gates_open >= n; });
    for (std::size_t i = 0; i < b.size(); ++i) o[i] = *b[i] * 10;
  });
  auto open_gate = [&] {
    std::lock_guard lock(gates_mutex);
    ++gates_open;
    gates_cv.notify_all();
  };
  auto batches_begun_now = [&](std::size_t n) {
    return conveyor::testing::wait_until(
        [&] {
          std::lock_guard lock(gates_mutex);
          return begun == n;
        },
        10s);
  };
  std::vector<int> outcomes(6, 0);
  std::vector<std::thread> threads;
  struct Join {
    std::vector<std::thread>& threads;
    std::function<void()> open_all;
    ~Join() {
      open_all();
      for (auto& t : threads) t.join();
    }
  } join{threads, [&] {
           std::lock_guard lock(gates_mutex);
           gates_open = 100;
           gates_cv.notify_all();
         }};
  threads.emplace_back([&] { outcomes[0] = group.write(0); });
  ASSERT_TRUE(batches_begun_now(1));
  for (int i = 1; i < 6; ++i) threads.emplace_back([&, i] { outcomes[i] = group.write(i); });
  ASSERT_TRUE(conveyor::testing::wait_until([&] { return group.waiting() == 5; }, 10s));
  open_gate();  // the first batch ends; the first queued caller writes the five
  ASSERT_TRUE(batches_begun_now(2));
  EXPECT_EQ(group.wakeups(), 1u) << "only the caller that writes next was woken";
  open_gate();
  for (auto& t : threads) t.join();
  threads.clear();
  EXPECT_EQ(outcomes, (std::vector<int>{0, 10, 20, 30, 40, 50}));
  EXPECT_EQ(group.batches(), 2u);
  EXPECT_EQ(group.wakeups(), 5u) << "each of the five waiting callers woke once";
}

// A batch's failure reaches the callers that waited in it, not only the
// thread that wrote it, and not the batch before.
TEST(GroupCommit, AFailedWriteReachesEveryCallerThatWaitedInItsBatch) {
  Writer w;
  std::atomic<int> calls{0};
  GroupCommit<int, int> group([&](const auto& b, auto& o) {
    if (calls++ == 1) throw std::runtime_error("the statement failed");
    w.write(b, o);
  });
  std::vector<std::string> heard(4);
  {
    Threads threads{w, {}};
    auto call = [&](int i) {
      try {
        heard[static_cast<std::size_t>(i)] = std::to_string(group.write(i));
      } catch (const std::runtime_error& e) {
        heard[static_cast<std::size_t>(i)] = e.what();
      }
    };
    threads.run([&] { call(0); });
    ASSERT_TRUE(batches_begun(w, 1));
    for (int i = 1; i < 4; ++i) threads.run([&, i] { call(i); });
    ASSERT_TRUE(conveyor::testing::wait_until([&] { return group.waiting() == 3; }, 10s));
  }
  EXPECT_EQ(heard,
            (std::vector<std::string>{"0", "the statement failed", "the statement failed", "the statement failed"}));
  EXPECT_EQ(group.write(5), 50) << "the next batch is written";
}

TEST(GroupCommit, AFailedWriteFailsEveryCallerOfItsBatchAndNoOther) {
  std::atomic<int> calls{0};
  GroupCommit<int, int> group([&](const auto& batch, auto& outcomes) {
    if (calls++ == 0) throw std::runtime_error("the statement failed");
    for (std::size_t i = 0; i < batch.size(); ++i) outcomes[i] = *batch[i];
  });
  try {
    group.write(1);
    ADD_FAILURE() << "the first batch failed: its caller must hear it";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "the statement failed");
  }
  EXPECT_EQ(group.write(2), 2) << "the next batch is written";
}

}  // namespace
