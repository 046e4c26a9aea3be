// db::GroupCommit, the group commit of the worker's finishes and of
// POST /v1/jobs: threads that write while another writes go in one batch.
// Real threads; each wait has a deadline.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
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
  std::vector<std::thread> threads;
  threads.emplace_back([&] { outcomes[0] = group.write(0); });
  // The first batch is being written (and waits at the gate) ...
  ASSERT_TRUE(conveyor::testing::wait_until(
      [&] {
        std::lock_guard lock(w.mutex);
        return w.batches.size() == 1;
      },
      10s));
  for (int i = 1; i < 6; ++i) threads.emplace_back([&, i] { outcomes[i] = group.write(i); });
  // ... while the others queue.
  ASSERT_TRUE(conveyor::testing::wait_until([&] { return group.waiting() == 5; }, 10s)) << group.waiting();
  w.open_gate();
  for (auto& t : threads) t.join();
  EXPECT_EQ(outcomes, (std::vector<int>{0, 10, 20, 30, 40, 50}));
  ASSERT_EQ(w.batches.size(), 2u);
  EXPECT_EQ(w.batches[0], std::vector<int>{0});
  EXPECT_EQ(w.batches[1].size(), 5u) << "the five that waited: one batch";
  EXPECT_EQ(group.batches(), 2u);
}

TEST(GroupCommit, UpToMaxWritersBatchesAreWrittenAtOnce) {
  Writer w;
  GroupCommit<int, int> group([&](const auto& b, auto& o) { w.write(b, o); }, 2);
  auto written = [&](std::size_t n) {
    return conveyor::testing::wait_until(
        [&] {
          std::lock_guard lock(w.mutex);
          return w.batches.size() == n;
        },
        10s);
  };
  std::vector<std::thread> threads;
  std::vector<int> outcomes(4, 0);
  threads.emplace_back([&] { outcomes[0] = group.write(0); });
  ASSERT_TRUE(written(1));
  threads.emplace_back([&] { outcomes[1] = group.write(1); });
  ASSERT_TRUE(written(2)) << "a second writer while the first waits";
  threads.emplace_back([&] { outcomes[2] = group.write(2); });
  threads.emplace_back([&] { outcomes[3] = group.write(3); });
  ASSERT_TRUE(conveyor::testing::wait_until([&] { return group.waiting() == 2; }, 10s)) << "a third waits";
  w.open_gate();
  for (auto& t : threads) t.join();
  EXPECT_EQ(outcomes, (std::vector<int>{0, 10, 20, 30}));
  ASSERT_EQ(w.batches.size(), 3u);
  EXPECT_EQ(w.batches[2].size(), 2u);
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
