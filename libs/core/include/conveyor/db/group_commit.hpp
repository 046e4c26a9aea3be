#pragma once
// Group commit: threads that come to write while others write queue up,
// and the next writer writes every queued item at once (one statement, one
// commit, one trigger call), instead of one transaction each. Nobody waits
// for a batch to fill: a thread that finds fewer than `max_writers` batches
// being written writes at once, so an item alone is written as soon as it
// would be without the group, and under load a batch is whatever queued
// during the writes before it.
//
// The write function gets the batch and fills one outcome per item. When it
// throws, every caller of that batch gets the exception. Thread-safe.
#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <utility>
#include <vector>

namespace conveyor::db {

template <typename Item, typename Outcome>
class GroupCommit {
 public:
  using Write = std::function<void(const std::vector<const Item*>& batch, std::vector<Outcome>& outcomes)>;

  // At most `max_writers` batches are written at once (each on a
  // connection of its own, when the write function takes one).
  explicit GroupCommit(Write write, int max_writers = 1)
      : write_(std::move(write)), max_writers_(std::max(1, max_writers)) {}

  // Blocks until the batch that holds `item` was written; its outcome, or
  // the write's exception rethrown. A waiting caller is woken once its
  // batch is done, or when it is first in the queue and a writer's place
  // has come free: not by every batch written while it waits.
  Outcome write(const Item& item) {
    Pending mine;
    mine.item = &item;
    std::unique_lock lock(mutex_);
    queue_.push_back(&mine);
    while (!mine.done) {
      if (mine.taken || writing_ >= max_writers_) {
        mine.cv.wait(lock);
        ++wakeups_;
        continue;
      }
      // Fewer than max_writers write: this thread writes everything queued,
      // its own item included.
      ++writing_;
      std::vector<Pending*> batch;
      batch.swap(queue_);
      for (Pending* p : batch) p->taken = true;
      lock.unlock();
      write_batch(batch);
      lock.lock();
      --writing_;
      ++batches_;
      // Under the lock: a caller that sees `done` returns, and its Pending
      // (on its stack) is gone.
      for (Pending* p : batch) {
        p->done = true;
        if (p != &mine) p->cv.notify_one();
      }
      // A writer's place is free: the first caller still queued writes next
      // (it takes the whole queue).
      if (!queue_.empty()) queue_.front()->cv.notify_one();
    }
    if (mine.error) std::rethrow_exception(mine.error);
    return std::move(mine.outcome);
  }

  // Batches written so far.
  std::uint64_t batches() const {
    std::lock_guard lock(mutex_);
    return batches_;
  }

  // How many times a waiting caller was woken: about once per caller that
  // waited, however many batches were written meanwhile.
  std::uint64_t wakeups() const {
    std::lock_guard lock(mutex_);
    return wakeups_;
  }

  // Items queued for the next batch.
  std::size_t waiting() const {
    std::lock_guard lock(mutex_);
    return queue_.size();
  }

 private:
  struct Pending {
    const Item* item = nullptr;
    Outcome outcome{};
    std::exception_ptr error;
    bool taken = false;  // in a batch being written
    bool done = false;
    std::condition_variable cv;  // its caller's alone
  };

  // Outside the lock: only this thread touches the batch's outcomes until
  // they are marked done. Throws nothing: whatever fails is every caller's
  // of the batch, and the batch is always marked done.
  void write_batch(const std::vector<Pending*>& batch) noexcept {
    try {
      std::vector<const Item*> items;
      items.reserve(batch.size());
      for (const Pending* p : batch) items.push_back(p->item);
      std::vector<Outcome> outcomes(batch.size());
      write_(items, outcomes);
      for (std::size_t i = 0; i < batch.size(); ++i) batch[i]->outcome = std::move(outcomes[i]);
    } catch (...) {
      const std::exception_ptr error = std::current_exception();
      for (Pending* p : batch) p->error = error;
    }
  }

  const Write write_;
  mutable std::mutex mutex_;
  std::vector<Pending*> queue_;
  const int max_writers_;
  int writing_ = 0;  // batches being written
  std::uint64_t batches_ = 0;
  std::uint64_t wakeups_ = 0;
};

}  // namespace conveyor::db
