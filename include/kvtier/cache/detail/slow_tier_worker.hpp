#pragma once
// One kvtier I/O thread per slow tier. The scheduler thread hands it batches of page writes, reads
// or existence probes (submit_*) and collects finished batches (drain, or take for one batch it
// waits for itself); only this thread touches the backend, so a backend need not be thread-safe,
// and a slow disk or a lost Redis never stalls the caller.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier/storage/batch.hpp"
#include "kvtier/storage/concepts.hpp"
#include "kvtier/storage/request.hpp"

namespace kvtier::detail {

enum class slow_op : std::uint8_t { put, get, contains };

// A finished batch: one status per request, in request order.
struct slow_completion {
  std::uint64_t ticket = 0;
  slow_op op = slow_op::put;
  std::vector<error> status;
};

template <storage_backend Backend>
class slow_tier_worker {
 public:
  explicit slow_tier_worker(Backend& backend) : backend_(backend), thread_([this] { run(); }) {}
  slow_tier_worker(const slow_tier_worker&) = delete;
  slow_tier_worker& operator=(const slow_tier_worker&) = delete;
  // Finishes every batch already submitted (their buffers are still alive), then stops.
  ~slow_tier_worker() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }

  // Payload spans must stay valid (and untouched) until the ticket is drained.
  std::uint64_t submit_put(std::vector<page_write> writes) { return push(job{0, slow_op::put, std::move(writes), {}, {}}); }
  std::uint64_t submit_get(std::vector<page_read> reads) { return push(job{0, slow_op::get, {}, std::move(reads), {}}); }
  // Which of `where` the tier holds (ok: held; not_found; or the failure): the job owns the addresses.
  std::uint64_t submit_contains(std::vector<page_address> where) {
    return push(job{0, slow_op::contains, {}, {}, std::move(where)});
  }

  // Moves finished batches into out; never blocks on I/O.
  void drain(std::vector<slow_completion>& out) {
    std::lock_guard lock(mutex_);
    while (!done_.empty()) {
      out.push_back(std::move(done_.front()));
      done_.pop_front();
    }
  }
  // Blocks until the ticket's batch is finished or the deadline passes; true when finished.
  // The completion stays queued for drain().
  bool wait_for(std::uint64_t ticket, std::chrono::steady_clock::time_point deadline) {
    std::unique_lock lock(mutex_);
    return finished_.wait_until(lock, deadline, [&] { return !pending_.contains(ticket); });
  }
  // The ticket's batch once finished: removed from the completions drain() hands out and moved
  // into `out` (when drain() took it first, `out` is left as it is). False while it runs.
  bool take(std::uint64_t ticket, slow_completion& out) {
    std::lock_guard lock(mutex_);
    if (pending_.contains(ticket)) return false;
    for (auto it = done_.begin(); it != done_.end(); ++it)
      if (it->ticket == ticket) {
        out = std::move(*it);
        done_.erase(it);
        break;
      }
    return true;
  }
  // Batches submitted and not yet drained.
  std::size_t outstanding() const {
    std::lock_guard lock(mutex_);
    return pending_.size() + done_.size();
  }

 private:
  struct job {
    std::uint64_t ticket;
    slow_op op;
    std::vector<page_write> writes;
    std::vector<page_read> reads;
    std::vector<page_address> where;  // contains
  };
  struct running {
    job work;
    storage_batch batch;
  };

  std::uint64_t push(job j) {
    std::uint64_t t;
    {
      std::lock_guard lock(mutex_);
      t = j.ticket = ++next_ticket_;
      pending_.insert(t);
      queued_.push_back(std::move(j));
    }
    wake_.notify_one();
    return t;
  }
  void finish(running& r) {
    slow_completion c{r.work.ticket, r.work.op,
                      std::vector<error>(r.batch.status().begin(), r.batch.status().end())};
    std::lock_guard lock(mutex_);
    done_.push_back(std::move(c));
    pending_.erase(r.work.ticket);
  }

  void run() {
    std::list<running> flying;  // stable addresses: the backend refers to each batch until done
    for (;;) {
      std::deque<job> fresh;
      {
        std::unique_lock lock(mutex_);
        if (flying.empty())
          wake_.wait(lock, [&] { return stopping_ || !queued_.empty(); });
        fresh.swap(queued_);
        if (stopping_ && fresh.empty() && flying.empty()) return;
      }
      for (job& j : fresh) {
        auto& r = flying.emplace_back();
        r.work = std::move(j);
        const slow_op op = r.work.op;
        const result<void> s = op == slow_op::put ? backend_.put(r.work.writes, r.batch)
                             : op == slow_op::get ? backend_.get(r.work.reads, r.batch)
                                                  : backend_.contains(r.work.where, r.batch);
        if (!s) {  // refused: every request of the batch fails with the backend's reason
          const std::size_t n = op == slow_op::put ? r.work.writes.size() : op == slow_op::get ? r.work.reads.size() : r.work.where.size();
          if (r.batch.begin(n))
            for (std::size_t i = 0; i < n; ++i) r.batch.complete(i, s.err());
        }
      }
      if (flying.empty()) {
        finished_.notify_all();
        continue;
      }
      (void)backend_.poll();
      for (auto it = flying.begin(); it != flying.end();) {
        if (it->batch.done()) {
          finish(*it);
          it = flying.erase(it);
        } else {
          ++it;
        }
      }
      finished_.notify_all();
      if (!flying.empty()) {
        // Sleep in the backend until the oldest batch progresses, but wake for new work soon.
        (void)backend_.wait(flying.front().batch, std::chrono::milliseconds(1));
      }
    }
  }

  Backend& backend_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable finished_;
  std::deque<job> queued_;
  std::deque<slow_completion> done_;
  std::unordered_set<std::uint64_t> pending_;  // submitted, not finished
  std::uint64_t next_ticket_ = 0;
  bool stopping_ = false;
  std::thread thread_;  // last: starts after every member above is constructed
};

}  // namespace kvtier::detail
