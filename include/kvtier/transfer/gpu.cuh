#pragma once
// The GPU copy path: load (paged host -> engine layout on the device) and backup (the reverse), the
// same function as kvtier::transfer::cpu, run by GPU threads reading and writing mapped pinned host
// memory directly (zero-copy), or by the copy engines as baselines. CUB-style layering:
//   copier::load / copier::backup (entry: host pairs, host plane tables, validation)
//   -> detail::dispatch_copy (vector width, tile shape, fast path when the layouts agree, grid)
//   -> load_tuning / backup_tuning (tuning.cuh)
//   -> detail::copy_pages_kernel.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstring>
#include <span>
#include <utility>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier/transfer/copy_engine.cuh"
#include "kvtier/transfer/detail/dispatch.cuh"
#include "kvtier/transfer/geometry.hpp"
#include "kvtier/transfer/tuning.cuh"
#include "kvtier/transfer/views.hpp"

namespace kvtier::transfer::gpu {

enum class strategy : unsigned char {
  kernel,          // GPU threads copy (zero-copy over mapped pinned memory), SM budget = options::blocks
  bulk,            // the SMs' bulk-copy engine (cp.async.bulk via shared memory, sm_90); else as kernel
  memcpy_per_run,  // one cudaMemcpyAsync per contiguous run (baseline)
  memcpy_batch,    // one cudaMemcpyBatchAsync per layer (baseline)
};

struct options {
  cudaStream_t stream = nullptr;                   // work is ordered on this stream (memcpy_batch needs a real one)
  int blocks = 0;                                  // SM budget in blocks; 0: the direction's default (load 2, backup 1)
  std::span<const cudaEvent_t> layer_events = {};  // empty, or one per layer of the range, recorded as each lands
  strategy how = strategy::kernel;
};

// Kernel entry for callers that keep pairs (and any plane table) in device memory already.
// Preconditions: views and pairs are device-accessible (device memory, or pinned host memory
// mapped into the device's address space), pairs are in range, destination pages are distinct.
template <class Tuning = load_tuning, kv_view Src, kv_view Dst>
result<void> copy_pages_device(const Src& src, const Dst& dst, std::span<const page_pair> device_pairs,
                               layer_range layers, std::size_t page_tokens, const options& o = {}) noexcept {
  result<copy_geometry> g = plan_copy(src, dst, std::span<const page_pair>{}, layers, page_tokens);
  if (!g) return g.err();
  g->pairs = device_pairs.size();
  return detail::dispatch_copy<Tuning>(src, dst, device_pairs.data(), *g, o.blocks, o.stream, o.layer_events,
                                       o.how == strategy::bulk);
}

// Owns the device-side copies of pair batches and plane tables, so callers pass host spans, as to
// the CPU path. One copier per stream or per thread; calls are ordered on options::stream and a
// copier reused on another stream waits (on the device) for its previous use.
class copier {
 public:
  copier() = default;
  copier(const copier&) = delete;
  copier& operator=(const copier&) = delete;
  copier(copier&& o) noexcept { swap(o); }
  copier& operator=(copier&& o) noexcept {
    copier(std::move(o)).swap(*this);
    return *this;
  }
  ~copier() {
    if (staging_) cudaFree(staging_);
    if (last_use_) cudaEventDestroy(last_use_);
  }
  void swap(copier& o) noexcept {
    std::swap(host_, o.host_);
    std::swap(staging_, o.staging_);
    std::swap(capacity_, o.capacity_);
    std::swap(last_use_, o.last_use_);
    std::swap(last_stream_, o.last_stream_);
    std::swap(used_, o.used_);
  }

  // load: paged host buffer (pinned, mapped) -> dst (the engine's layer-first device buffer).
  template <paged_kv_view Src, kv_view Dst>
  result<void> load(const Src& src, const Dst& dst, std::span<const page_pair> pairs,
                    layer_range layers = layer_range::all(), const options& o = {}) {
    return copy<load_tuning>(src, dst, pairs, layers, src.map.page_tokens(), o);
  }
  // backup: src (the engine's layer-first device buffer) -> paged host buffer (pinned, mapped).
  template <kv_view Src, paged_kv_view Dst>
  result<void> backup(const Src& src, const Dst& dst, std::span<const page_pair> pairs,
                      layer_range layers = layer_range::all(), const options& o = {}) {
    return copy<backup_tuning>(src, dst, pairs, layers, dst.map.page_tokens(), o);
  }

  template <class Tuning, kv_view Src, kv_view Dst>
  result<void> copy(const Src& src, const Dst& dst, std::span<const page_pair> pairs, layer_range layers,
                    std::size_t page_tokens, const options& o) {
    const result<copy_geometry> g = plan_copy(src, dst, pairs, layers, page_tokens);
    if (!g) return g.err();
    switch (o.how) {
      case strategy::memcpy_per_run: return detail::memcpy_per_run(src, dst, pairs, *g, o.stream, o.layer_events);
      case strategy::memcpy_batch: return detail::memcpy_batch(src, dst, pairs, *g, o.stream, o.layer_events);
      case strategy::kernel: case strategy::bulk: break;
    }
    // A kernel touching pageable memory would fault and poison the context: refuse it up front.
    if (!detail::device_reachable(first_byte(src)) || !detail::device_reachable(first_byte(dst)))
      return make_error(errc::invalid_argument);
    // Stage plane tables and pairs in one upload, then point the views at the device copies.
    Src dsrc = src;
    Dst ddst = dst;
    host_.clear();
    add_table(dsrc);
    add_table(ddst);
    const std::size_t pairs_at = host_.size();
    host_.resize(pairs_at + pairs.size_bytes());
    if (!pairs.empty()) std::memcpy(host_.data() + pairs_at, pairs.data(), pairs.size_bytes());
    if (result<void> r = upload(o.stream); !r) return r;
    fix_table(dsrc);
    fix_table(ddst);
    result<void> r = detail::dispatch_copy<Tuning>(dsrc, ddst, reinterpret_cast<const page_pair*>(staging_ + pairs_at),
                                                   *g, o.blocks, o.stream, o.layer_events, o.how == strategy::bulk);
    if (cudaError_t e = cudaEventRecord(last_use_, o.stream); e != cudaSuccess && r) return detail::cuda_error(e);
    last_stream_ = o.stream;
    return r;
  }

 private:
  // The first byte of a view's memory, read on the host (plane tables are host arrays here).
  template <class View>
  static const void* first_byte(const View& v) noexcept {
    if constexpr (std::same_as<View, layer_first_buffer>)
      return v.planes.ptrs_per_layer > 0 ? static_cast<const void*>(v.planes.ptrs[0]) : v.planes.base;
    else
      return v.data;
  }
  template <class View>
  void add_table(View& v) {
    if constexpr (std::same_as<View, layer_first_buffer>) {
      if (v.planes.ptrs_per_layer == 0) return;
      const std::size_t n = v.map.extents().layers() * v.planes.ptrs_per_layer * sizeof(std::byte*);
      const std::size_t at = (host_.size() + 15) / 16 * 16;
      host_.resize(at + n);
      std::memcpy(host_.data() + at, v.planes.ptrs, n);
      v.planes.ptrs = reinterpret_cast<std::byte* const*>(at);  // an offset until fix_table
    }
  }
  template <class View>
  void fix_table(View& v) {
    if constexpr (std::same_as<View, layer_first_buffer>)
      if (v.planes.ptrs_per_layer > 0)
        v.planes.ptrs = reinterpret_cast<std::byte* const*>(staging_ + reinterpret_cast<std::uintptr_t>(v.planes.ptrs));
  }
  // Copies host_ to device memory, ordered after this copier's previous use.
  result<void> upload(cudaStream_t stream) {
    if (!last_use_)
      if (cudaError_t e = cudaEventCreateWithFlags(&last_use_, cudaEventDisableTiming); e != cudaSuccess)
        return detail::cuda_error(e);
    if (used_ && stream != last_stream_)
      if (cudaError_t e = cudaStreamWaitEvent(stream, last_use_, 0); e != cudaSuccess) return detail::cuda_error(e);
    if (host_.size() > capacity_) {
      if (staging_) {
        // The previous launches may still read the old buffer: wait for them before freeing.
        if (cudaError_t e = cudaEventSynchronize(last_use_); e != cudaSuccess) return detail::cuda_error(e);
        cudaFree(staging_);
        staging_ = nullptr;
      }
      const std::size_t cap = std::max<std::size_t>(host_.size() * 2, 4096);
      if (cudaError_t e = cudaMalloc(&staging_, cap); e != cudaSuccess) {
        capacity_ = 0;
        return make_error(errc::capacity_exhausted, static_cast<int>(e));
      }
      capacity_ = cap;
    }
    used_ = true;
    if (host_.empty()) return {};
    // From pageable memory: the call returns once the bytes are staged, so host_ may be reused.
    if (cudaError_t e = cudaMemcpyAsync(staging_, host_.data(), host_.size(), cudaMemcpyHostToDevice, stream);
        e != cudaSuccess)
      return detail::cuda_error(e);
    return {};
  }

  std::vector<std::byte> host_;
  std::byte* staging_ = nullptr;
  std::size_t capacity_ = 0;
  cudaEvent_t last_use_ = nullptr;
  cudaStream_t last_stream_ = nullptr;
  bool used_ = false;
};

}  // namespace kvtier::transfer::gpu
