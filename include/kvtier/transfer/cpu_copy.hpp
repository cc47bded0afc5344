#pragma once
// The CPU copy strategy: host memory stands in for the device (cache/host_backed_device_pool.hpp),
// kvtier's CPU copy path (transfer::cpu) moves the pages, and a copy thread plays the role of a
// CUDA stream, so loads and backups run asynchronously and complete layer by layer exactly as they do on a GPU.
// Events are sequence numbers on that stream; a layer is ready once its event has passed.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <utility>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier/transfer/copy_strategy.hpp"
#include "kvtier/transfer/cpu.hpp"
#include "kvtier/transfer/rope.hpp"
#include "kvtier/transfer/views.hpp"

namespace kvtier::transfer {

// An in-order queue of copy tasks run by one kvtier copy thread: the CPU's stand-in for a stream.
class cpu_stream {
 public:
  using event = std::uint64_t;  // the sequence number of the task that completes it

  cpu_stream() : thread_([this] { run(); }) {}
  cpu_stream(const cpu_stream&) = delete;
  cpu_stream& operator=(const cpu_stream&) = delete;
  ~cpu_stream() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }

  // Enqueues a task; returns the event that passes when it (and everything before it) is done.
  event enqueue(std::function<void()> task) {
    event e;
    {
      std::lock_guard lock(mutex_);
      e = ++submitted_;
      tasks_.push_back(std::move(task));
    }
    wake_.notify_one();
    return e;
  }
  // An event that passes once everything enqueued so far is done.
  event record() const {
    std::lock_guard lock(mutex_);
    return submitted_;
  }
  bool query(event e) const noexcept { return completed_.load(std::memory_order_acquire) >= e; }
  void synchronize(event e) const {
    if (query(e)) return;
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return completed_.load(std::memory_order_acquire) >= e; });
  }
  bool wait_until(event e, std::chrono::steady_clock::time_point deadline) const {
    if (query(e)) return true;
    std::unique_lock lock(mutex_);
    return done_.wait_until(lock, deadline, [&] { return completed_.load(std::memory_order_acquire) >= e; });
  }

 private:
  void run() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || !tasks_.empty(); });
        if (tasks_.empty()) return;  // stopping, and everything enqueued has run
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
      {
        std::lock_guard lock(mutex_);
        completed_.fetch_add(1, std::memory_order_release);
      }
      done_.notify_all();
    }
  }

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  mutable std::condition_variable done_;
  std::deque<std::function<void()>> tasks_;
  event submitted_ = 0;
  std::atomic<event> completed_{0};
  bool stopping_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

// Copies with transfer::cpu on a cpu_stream. Views and page lists are copied into the task, so the
// caller's spans may die right after the call; the memory they point to must stay put until the
// returned event passes (the cache keeps those slots locked or in flight until then).
struct cpu_copy {
  using kvtier_copy_strategy = copy_strategy_tag;
  using stream_type = cpu_stream;
  using event_type = cpu_stream::event;
  static constexpr bool needs_device_memory = false;  // both sides must be host-accessible

  // host page-first → device layer-first, layer by layer: layer_events[l] passes when layer l of
  // every page has landed. The error plan_copy finds is returned before anything is queued.
  template <paged_kv_view Host, kv_view Device>
  static result<void> load(stream_type& s, const Host& host, const Device& device, std::span<const page_pair> pairs,
                           std::span<event_type> layer_events) {
    if (auto g = plan_copy(host, device, pairs, layer_range::all(), host.map.page_tokens()); !g) return g.err();
    if (layer_events.size() != host.map.extents().layers()) return make_error(errc::invalid_argument);
    auto shared = std::make_shared<const std::vector<page_pair>>(pairs.begin(), pairs.end());
    for (std::size_t layer = 0; layer < layer_events.size(); ++layer)
      layer_events[layer] = s.enqueue([host, device, shared, layer] {
        [[maybe_unused]] const result<void> r = cpu::load(host, device, *shared, layer_range::one(layer));
      });
    return {};
  }
  // load with RoPE on load (K rotated as `rl` says; its spans are copied, so they may die after
  // the call), layer by layer as load().
  template <paged_kv_view Host, kv_view Device>
  static result<void> load_rotated(stream_type& s, const Host& host, const Device& device, std::span<const page_pair> pairs,
                                   const rope_on_load& rl, dtype t, std::span<event_type> layer_events) {
    if (auto g = plan_copy(host, device, pairs, layer_range::all(), host.map.page_tokens()); !g) return g.err();
    if (layer_events.size() != host.map.extents().layers() || rl.positions.size() != pairs.size())
      return make_error(errc::invalid_argument);
    struct batch {
      std::vector<page_pair> pairs;
      std::vector<long> positions;
    };
    auto b = std::make_shared<const batch>(batch{{pairs.begin(), pairs.end()}, {rl.positions.begin(), rl.positions.end()}});
    const rope_spec r = rl.rope;
    const k_storage ks = rl.storage;
    for (std::size_t layer = 0; layer < layer_events.size(); ++layer)
      layer_events[layer] = s.enqueue([host, device, b, r, ks, t, layer] {
        [[maybe_unused]] const result<void> e =
            cpu::load_rotated(host, device, b->pairs, rope_on_load{r, ks, b->positions}, t, layer_range::one(layer));
      });
    return {};
  }
  // device layer-first → host page-first, all layers.
  template <kv_view Device, paged_kv_view Host>
  static result<event_type> backup(stream_type& s, const Device& device, const Host& host,
                                   std::span<const page_pair> pairs) {
    if (auto g = plan_copy(device, host, pairs, layer_range::all(), host.map.page_tokens()); !g) return g.err();
    return s.enqueue([host, device, p = std::vector<page_pair>(pairs.begin(), pairs.end())] {
      [[maybe_unused]] const result<void> r = cpu::backup(device, host, p, layer_range::all());
    });
  }
  static bool query(const stream_type& s, event_type e) noexcept { return s.query(e); }
  static void synchronize(const stream_type& s, event_type e) { s.synchronize(e); }
};

static_assert(copy_strategy<cpu_copy>);

}  // namespace kvtier::transfer
