#pragma once
// The GPU copy strategy of hierarchical_cache: kvtier's copy kernels (transfer::gpu::copier) move
// pages between mapped pinned host memory and the engine's layer-first device KV on a CUDA stream,
// one event per layer. Events are sequence numbers on a gpu_stream, as on the CPU path, so the
// cache's code is the same for both; cuda_event(seq) hands the CUDA event to engines that prefer
// cudaStreamWaitEvent on their compute stream to a host-side wait. The GPU composition of the
// cache (gpu_cache_builder) is kvtier/cache.cuh.
#include <cuda_runtime.h>

#include <cstdint>
#include <deque>
#include <span>
#include <utility>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier/transfer/copy_strategy.hpp"
#include "kvtier/transfer/gpu.cuh"
#include "kvtier/transfer/rope.hpp"
#include "kvtier/transfer/views.hpp"

namespace kvtier::transfer {

// A CUDA stream with in-order sequence-numbered events and the copier that stages page lists for
// the kernels. One thread uses a gpu_stream at a time.
class gpu_stream {
 public:
  using event = std::uint64_t;

  gpu_stream() {
    if (cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking) != cudaSuccess)
      throw config_error("kvtier: gpu_stream: cudaStreamCreate failed");
  }
  gpu_stream(const gpu_stream&) = delete;
  gpu_stream& operator=(const gpu_stream&) = delete;
  ~gpu_stream() {
    (void)cudaStreamSynchronize(stream_);
    for (auto& [seq, e] : recorded_) (void)cudaEventDestroy(e);
    for (cudaEvent_t e : spare_) (void)cudaEventDestroy(e);
    (void)cudaStreamDestroy(stream_);
  }

  cudaStream_t get() const noexcept { return stream_; }
  gpu::copier& copier() noexcept { return copier_; }

  // n fresh events, in the order the stream will record them; their sequence numbers follow.
  result<std::span<cudaEvent_t>> take_events(std::size_t n, event& first) {
    batch_.clear();
    for (std::size_t i = 0; i < n; ++i) {
      cudaEvent_t e;
      if (!spare_.empty()) {
        e = spare_.back();
        spare_.pop_back();
      } else if (cudaEventCreateWithFlags(&e, cudaEventDisableTiming) != cudaSuccess) {
        for (cudaEvent_t b : batch_) spare_.push_back(b);
        return make_error(errc::capacity_exhausted);
      }
      batch_.push_back(e);
    }
    first = next_ + 1;
    for (cudaEvent_t e : batch_) recorded_.push_back({++next_, e});
    return std::span<cudaEvent_t>(batch_);
  }
  bool query(event e) const noexcept {
    retire();
    return e <= completed_;
  }
  void synchronize(event e) const {
    for (auto& [seq, ev] : recorded_)
      if (seq == e) {
        (void)cudaEventSynchronize(ev);
        break;
      }
    retire();
    if (e > completed_ && e <= next_) {  // not found: older than every recorded event
      (void)cudaStreamSynchronize(stream_);
      retire();
    }
  }
  // The CUDA event of sequence number e while it is pending (null once it passed).
  cudaEvent_t cuda_event(event e) const noexcept {
    for (auto& [seq, ev] : recorded_)
      if (seq == e) return ev;
    return nullptr;
  }

 private:
  // Events complete in stream order: pop the finished ones off the front.
  void retire() const noexcept {
    while (!recorded_.empty() && cudaEventQuery(recorded_.front().second) == cudaSuccess) {
      completed_ = recorded_.front().first;
      spare_.push_back(recorded_.front().second);
      recorded_.pop_front();
    }
    if (recorded_.empty()) completed_ = next_;
  }

  cudaStream_t stream_ = nullptr;
  gpu::copier copier_;
  mutable std::deque<std::pair<event, cudaEvent_t>> recorded_;
  mutable std::vector<cudaEvent_t> spare_;
  std::vector<cudaEvent_t> batch_;
  event next_ = 0;
  mutable event completed_ = 0;
};

// Copies with transfer::gpu (kernels over mapped pinned memory, a small SM budget).
struct gpu_copy {
  using kvtier_copy_strategy = copy_strategy_tag;
  using stream_type = gpu_stream;
  using event_type = gpu_stream::event;
  static constexpr bool needs_device_memory = true;

  template <paged_kv_view Host, kv_view Device>
  static result<void> load(stream_type& s, const Host& host, const Device& device,
                           std::span<const page_pair> pairs, std::span<event_type> layer_events) {
    event_type first = 0;
    const auto events = s.take_events(layer_events.size(), first);
    if (!events) return events.err();
    gpu::options o;
    o.stream = s.get();
    o.layer_events = *events;
    if (const result<void> r = s.copier().load(host, device, pairs, layer_range::all(), o); !r) return r;
    for (std::size_t i = 0; i < layer_events.size(); ++i) layer_events[i] = first + i;
    return {};
  }
  // load with RoPE on load: the copy kernel rotates K on the way (rope_kernel.cuh); rl's spans are
  // staged for the device before the call returns.
  template <paged_kv_view Host, kv_view Device>
  static result<void> load_rotated(stream_type& s, const Host& host, const Device& device, std::span<const page_pair> pairs,
                                   const rope_on_load& rl, dtype t, std::span<event_type> layer_events) {
    event_type first = 0;
    const auto events = s.take_events(layer_events.size(), first);
    if (!events) return events.err();
    gpu::options o;
    o.stream = s.get();
    o.layer_events = *events;
    o.rope = &rl;
    o.element = t;
    if (const result<void> r = s.copier().load(host, device, pairs, layer_range::all(), o); !r) return r;
    for (std::size_t i = 0; i < layer_events.size(); ++i) layer_events[i] = first + i;
    return {};
  }
  template <kv_view Device, paged_kv_view Host>
  static result<event_type> backup(stream_type& s, const Device& device, const Host& host,
                                   std::span<const page_pair> pairs) {
    event_type first = 0;
    const auto events = s.take_events(1, first);
    if (!events) return events.err();
    gpu::options o;
    o.stream = s.get();
    if (const result<void> r = s.copier().backup(device, host, pairs, layer_range::all(), o); !r) return r.err();
    if (cudaEventRecord((*events)[0], s.get()) != cudaSuccess) return make_error(errc::io_error);
    return first;
  }
  static bool query(const stream_type& s, event_type e) noexcept { return s.query(e); }
  static void synchronize(const stream_type& s, event_type e) { s.synchronize(e); }
};

static_assert(copy_strategy<gpu_copy>);

}  // namespace kvtier::transfer
