#pragma once
// A memory_tier behind a fault switch that a test flips at any time, from any thread: the slow
// tier of the cache's fault tests and of the lifecycle fuzzer.
//  - healthy: batches complete as memory_tier completes them;
//  - failing: every request of every batch fails (io_error) and nothing is stored (down, full);
//  - stalled: batches are accepted and then held; they complete (as memory_tier did) only once
//    the switch leaves `stalled` (a stopped Redis that resumes).
#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include "kvtier/codec/identity.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/storage/batch.hpp"
#include "kvtier/storage/concepts.hpp"
#include "kvtier/storage/memory_tier.hpp"
#include "kvtier/storage/request.hpp"

namespace kvtier::testing {

enum class tier_fault : int { healthy, failing, stalled };

struct fault_switch {
  std::atomic<tier_fault> mode{tier_fault::healthy};
  std::atomic<std::size_t> batches{0};  // batches handed to the tier
  void set(tier_fault f) noexcept { mode.store(f, std::memory_order_release); }
  tier_fault get() const noexcept { return mode.load(std::memory_order_acquire); }
};

template <class Codec = identity_codec>
class faulty_tier {
 public:
  using kvtier_storage_backend = storage_backend_tag;

  faulty_tier(memory_tier_config c, std::shared_ptr<fault_switch> f) : inner_(c), fault_(std::move(f)) {}

  result<void> put(std::span<const page_write> w, storage_batch& b) noexcept {
    return run(b, w.size(), [&](storage_batch& i) { return inner_.put(w, i); });
  }
  result<void> get(std::span<const page_read> r, storage_batch& b) noexcept {
    return run(b, r.size(), [&](storage_batch& i) { return inner_.get(r, i); });
  }
  result<void> contains(std::span<const page_address> a, storage_batch& b) noexcept { return inner_.contains(a, b); }
  result<void> erase(std::span<const page_address> a, storage_batch& b) noexcept { return inner_.erase(a, b); }
  std::size_t poll() noexcept {
    if (fault_->get() == tier_fault::stalled) return 0;
    std::size_t n = 0;
    for (held& h : held_) {
      for (std::size_t i = 0; i < h.status.size(); ++i) h.batch->complete(i, h.status[i]);
      n += h.status.size();
    }
    held_.clear();
    return n;
  }
  result<void> wait(storage_batch& b, std::chrono::milliseconds t) noexcept {
    const auto until = std::chrono::steady_clock::now() + t;
    while (!b.done() && std::chrono::steady_clock::now() < until) {
      poll();
      if (!b.done()) std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return b.done() ? result<void>{} : make_error(errc::timeout);
  }
  kv_shape shape() const noexcept { return inner_.shape(); }
  std::size_t page_bytes() const noexcept { return inner_.page_bytes(); }
  storage_usage usage() const noexcept { return inner_.usage(); }
  storage_stats stats() const noexcept { return inner_.stats(); }
  memory_tier<Codec>& inner() noexcept { return inner_; }

 private:
  struct held {
    storage_batch* batch;
    std::vector<error> status;
  };
  template <class F>
  result<void> run(storage_batch& b, std::size_t n, F&& f) noexcept {
    fault_->batches.fetch_add(1, std::memory_order_relaxed);
    const tier_fault mode = fault_->get();
    if (mode == tier_fault::failing) {
      if (!b.begin(n)) return make_error(errc::busy);
      for (std::size_t i = 0; i < n; ++i) b.complete(i, make_error(errc::io_error));
      return {};
    }
    storage_batch inner;
    if (auto r = f(inner); !r) return r;
    if (mode == tier_fault::healthy) {
      if (!b.begin(inner.size())) return make_error(errc::busy);
      for (std::size_t i = 0; i < inner.size(); ++i) b.complete(i, inner.status()[i]);
      return {};
    }
    if (!b.begin(inner.size())) return make_error(errc::busy);
    try {
      held_.push_back({&b, std::vector<error>(inner.status().begin(), inner.status().end())});
    } catch (...) {
      for (std::size_t i = 0; i < inner.size(); ++i) b.complete(i, make_error(errc::io_error));
    }
    return {};
  }

  memory_tier<Codec> inner_;
  std::shared_ptr<fault_switch> fault_;
  std::vector<held> held_;
};
static_assert(storage_backend<faulty_tier<>>);

}  // namespace kvtier::testing
