#pragma once
// A fixed set of threads that run the blocking parts of the worker's jobs
// (preparing an attempt's files, recording its outcome), in the order
// posted. Owned by the Worker; post() is thread-safe. The destructor runs
// what was posted, then joins the threads.
#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "conveyor/logging/thread_name.hpp"

namespace conveyor::worker {

class Executor {
 public:
  // `name`: the threads' names, "<name>-<n>" (logging::name_this_thread).
  Executor(int threads, const std::string& name) {
    for (int i = 0; i < std::max(1, threads); ++i) {
      threads_.emplace_back([this, thread = name + "-" + std::to_string(i)] {
        logging::name_this_thread(thread);
        main();
      });
    }
  }
  ~Executor() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // `task` must not throw.
  void post(std::function<void()> task) {
    {
      std::lock_guard lock(mutex_);
      tasks_.push_back(std::move(task));
    }
    cv_.notify_one();
  }

 private:
  void main() {
    std::unique_lock lock(mutex_);
    while (true) {
      cv_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
      if (tasks_.empty()) return;  // stopping, and nothing left to run
      auto task = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      task();
      lock.lock();
    }
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace conveyor::worker
