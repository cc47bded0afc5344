#pragma once
// A fixed set of worker threads for the CPU backend's parallel loops. parallel_for splits [0, n)
// into one contiguous range per thread; which thread computes an element never changes its
// arithmetic, so results do not depend on the thread count.
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kvtier_engine::cpu {

class thread_pool {
 public:
  explicit thread_pool(std::size_t threads) : count_(threads == 0 ? 1 : threads) {
    for (std::size_t i = 1; i < count_; ++i) workers_.emplace_back([this, i] { run(i); });
  }
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;
  ~thread_pool() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }

  std::size_t size() const noexcept { return count_; }

  // Calls f(begin, end) on disjoint ranges covering [0, n), in parallel; returns when all are done.
  void parallel_for(std::size_t n, const std::function<void(std::size_t, std::size_t)>& f) {
    if (count_ == 1 || n < 2) {
      if (n) f(0, n);
      return;
    }
    {
      std::lock_guard lock(mutex_);
      job_ = &f;
      n_ = n;
      pending_ = count_ - 1;
      ++generation_;
    }
    wake_.notify_all();
    const auto [b, e] = range(0, n);
    if (b < e) f(b, e);
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
  }

 private:
  std::pair<std::size_t, std::size_t> range(std::size_t i, std::size_t n) const noexcept {
    return {n * i / count_, n * (i + 1) / count_};
  }
  void run(std::size_t i) {
    std::size_t seen = 0;
    for (;;) {
      const std::function<void(std::size_t, std::size_t)>* job;
      std::size_t n;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
        job = job_;
        n = n_;
      }
      const auto [b, e] = range(i, n);
      if (b < e) (*job)(b, e);
      {
        std::lock_guard lock(mutex_);
        --pending_;
      }
      done_.notify_one();
    }
  }

  std::size_t count_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(std::size_t, std::size_t)>* job_ = nullptr;
  std::size_t n_ = 0, pending_ = 0, generation_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> workers_;  // last: they start once the members above exist
};

}  // namespace kvtier_engine::cpu
