#pragma once
// The GPU copy path: load (paged host -> engine layout on the device) and backup (the reverse), the
// same function as kvtier::transfer::cpu, run by GPU threads reading and writing mapped pinned host
// memory directly (zero-copy), or by the copy engines as baselines. CUB-style layering:
//   copier::load / copier::backup (entry: host pairs, host plane tables, validation)
//   -> detail::dispatch_copy (vector width, tile shape, fast path when the layouts agree, grid)
//   -> load_tuning / backup_tuning (tuning.cuh)
//   -> detail::copy_pages_kernel.
// Or the staged path (staged.cuh: copy engines + a device staging ring + a relayout kernel), or a
// mix of both; strategy::automatic lets the planner (planner.hpp) choose per batch.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstring>
#include <span>
#include <utility>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier/memory/cuda_support.cuh"
#include "kvtier/transfer/copy_engine.cuh"
#include "kvtier/transfer/detail/dispatch.cuh"
#include "kvtier/transfer/geometry.hpp"
#include "kvtier/transfer/planner.hpp"
#include "kvtier/transfer/rope.hpp"
#include "kvtier/transfer/staged.cuh"
#include "kvtier/transfer/tuning.cuh"
#include "kvtier/transfer/views.hpp"

namespace kvtier::transfer::gpu {

enum class strategy : unsigned char {
  kernel,          // GPU threads copy (zero-copy over mapped pinned memory), SM budget = options::blocks
  bulk,            // the SMs' bulk-copy engine (cp.async.bulk via shared memory, sm_90); else as kernel
  memcpy_per_run,  // one cudaMemcpyAsync per contiguous run (baseline)
  memcpy_batch,    // one cudaMemcpyBatchAsync per layer (baseline)
  staged,          // copy engines <-> the copier's device staging ring, relayout kernel on the device
  mixed,           // part of the pairs by the kernel, the rest staged, concurrently (no per-layer events)
  automatic,       // the planner picks kernel, staged or mixed per batch (copier::stats() shows it)
};

struct options {
  cudaStream_t stream = nullptr;                   // work is ordered on this stream (memcpy_batch needs a real one)
  int blocks = 0;                                  // SM budget in blocks; 0: the direction's default (load 2, backup 1)
  std::span<const cudaEvent_t> layer_events = {};  // empty, or one per layer of the range, recorded as each lands
  strategy how = strategy::kernel;
  compute_hint compute = compute_hint::unknown;    // whether compute runs beside (for strategy::automatic)
  // RoPE on load (load only; kernel, staged or automatic): K rotated while it moves, in the same
  // kernel (rope_kernel.cuh); `element` is the KV's dtype (bf16, fp16 or fp32).
  const rope_on_load* rope = nullptr;
  dtype element = dtype::bf16;
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
  // A copier whose staged path uses a ring of c.slots slots of c.slot_bytes device memory.
  explicit copier(staging_config c) : ring_(c) {}
  copier(const copier&) = delete;
  copier& operator=(const copier&) = delete;
  copier(copier&& o) noexcept { swap(o); }
  copier& operator=(copier&& o) noexcept {
    copier(std::move(o)).swap(*this);
    return *this;
  }
  ~copier() {
    if (last_use_) (void)cudaEventSynchronize(last_use_);  // kernels and relayouts may still read staging_
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
    ring_.swap(o.ring_);
    std::swap(stats_, o.stats_);
    std::swap(planner_, o.planner_);
  }

  // Batches and bytes per path, and the last path taken.
  const copy_stats& stats() const noexcept { return stats_; }
  // The planner's thresholds (strategy::automatic).
  planner_tuning& planner() noexcept { return planner_; }
  const staging_config& staging() const noexcept { return ring_.config(); }

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
    constexpr bool is_load = std::same_as<Tuning, load_tuning>;
    if (o.rope && (!is_load || o.rope->positions.size() != pairs.size() || o.how == strategy::memcpy_per_run ||
                   o.how == strategy::memcpy_batch))
      return make_error(errc::invalid_argument);
    switch (o.how) {
      case strategy::memcpy_per_run: return detail::memcpy_per_run(src, dst, pairs, *g, o.stream, o.layer_events);
      case strategy::memcpy_batch: return detail::memcpy_batch(src, dst, pairs, *g, o.stream, o.layer_events);
      default: break;
    }
    constexpr bool load_dir = std::same_as<Tuning, load_tuning>, backup_dir = std::same_as<Tuning, backup_tuning>;
    bool host_ok = true, staged_ok = false;  // kernels reach the host side; the staged path can run
    if constexpr (load_dir || backup_dir) {
      using host_view = std::conditional_t<load_dir, Src, Dst>;
      if constexpr (load_dir) host_ok = memory::detail::device_reachable(first_byte(src));
      else host_ok = memory::detail::device_reachable(first_byte(dst));
      staged_ok = staged_supports<host_view>(*g, ring_.config());
    }
    const void* dev_side = load_dir ? first_byte(dst) : first_byte(src);
    const bool dev_ok = load_dir || backup_dir ? memory::detail::device_reachable(dev_side)
                                               : memory::detail::device_reachable(first_byte(src)) &&
                                                     memory::detail::device_reachable(first_byte(dst));
    copy_path path = o.how == strategy::staged ? copy_path::staged
                     : o.how == strategy::mixed ? copy_path::mixed
                                                 : copy_path::kernel;
    if (o.how == strategy::automatic) {
      batch_facts f;
      f.bytes = g->bytes();
      f.per_layer = !o.layer_events.empty();
      f.staged_possible = staged_ok;
      f.compute = o.compute;
      f.backup = backup_dir;
      if constexpr (load_dir) f.dma_run = staged_ok ? mean_run(src, pairs, *g, f.per_layer, true) : 0;
      if constexpr (backup_dir) f.dma_run = staged_ok ? mean_run(dst, pairs, *g, f.per_layer, false) : 0;
      path = plan(f, planner_);
      if (path == copy_path::mixed && (!host_ok || f.per_layer)) path = copy_path::staged;
    }
    if (o.rope && path == copy_path::mixed) path = copy_path::staged;  // one rotating kernel per path
    if (path != copy_path::kernel && !staged_ok) return make_error(errc::unsupported);
    // A kernel touching pageable memory would fault and poison the context: refuse it up front.
    if (!dev_ok || (path != copy_path::staged && !host_ok)) return make_error(errc::invalid_argument);
    // Stage plane tables and pairs in one upload, then point the views at the device copies.
    Src dsrc = src;
    Dst ddst = dst;
    host_.clear();
    add_table(dsrc);
    add_table(ddst);
    const std::size_t pairs_at = host_.size();
    host_.resize(pairs_at + pairs.size_bytes());
    if (!pairs.empty()) std::memcpy(host_.data() + pairs_at, pairs.data(), pairs.size_bytes());
    const std::size_t positions_at = (host_.size() + 3) / 4 * 4;  // the RoPE positions, int32 per pair
    if (o.rope) {
      host_.resize(positions_at + 4 * pairs.size());
      for (std::size_t i = 0; i < pairs.size(); ++i) {
        const long v = o.rope->positions[i];
        if (v < INT32_MIN || v > INT32_MAX) return make_error(errc::invalid_argument);
        const std::int32_t p32 = static_cast<std::int32_t>(v);
        std::memcpy(host_.data() + positions_at + 4 * i, &p32, 4);
      }
    }
    if (result<void> r = upload(o.stream); !r) return r;
    fix_table(dsrc);
    fix_table(ddst);
    const auto* dpairs = reinterpret_cast<const page_pair*>(staging_ + pairs_at);
    detail::rope_device_args rope_args;
    if (o.rope) {
      rope_args = {o.rope->rope, o.rope->storage, reinterpret_cast<const std::int32_t*>(staging_ + positions_at)};
    }
    // The planner's kernel with compute idle may take more SMs than the direction's gentle default.
    const int blocks = o.blocks == 0 && o.how == strategy::automatic && o.compute == compute_hint::idle
                           ? planner_.idle_kernel_blocks
                           : o.blocks;
    result<void> r = path == copy_path::kernel
                         ? (o.rope ? rope_kernel<Tuning>(dsrc, ddst, dpairs, rope_args, *g, blocks, o)
                                   : detail::dispatch_copy<Tuning>(dsrc, ddst, dpairs, *g, blocks, o.stream,
                                                                   o.layer_events, o.how == strategy::bulk))
                         : staged_or_mixed<load_dir>(src, dst, dsrc, ddst, pairs, dpairs, *g, o, path,
                                                     o.rope ? &rope_args : nullptr);
    if (r) stats_.count(path, g->bytes(), o.how == strategy::automatic);
    if (cudaError_t e = cudaEventRecord(last_use_, o.stream); e != cudaSuccess && r) return detail::cuda_error(e);
    last_stream_ = o.stream;
    return r;
  }

 private:
  // The staged path, or the mixed one: the first share of the pairs by the kernel on the ring's side
  // stream, the rest staged, joined on the caller's stream (layer events then all land at the end).
  template <bool Load, class Src, class Dst>
  result<void> staged_or_mixed(const Src& src, const Dst& dst, const Src& dsrc, const Dst& ddst,
                               std::span<const page_pair> pairs, const page_pair* dpairs, const copy_geometry& g,
                               const options& o, copy_path path, const detail::rope_device_args* rope = nullptr) {
    if constexpr (!(Load ? detail::is_kv_buffer<Src> : detail::is_kv_buffer<Dst>)) {
      return make_error(errc::unsupported);
    } else {
      std::size_t k = 0;
      if (path == copy_path::mixed) k = pairs.size() * staged_tuning::mixed_kernel_share_64 / 64;
      if (k > 0) {
        if (result<void> r = ring_.ensure(); !r) return r;
        cudaStream_t side = ring_.side_stream();
        if (cudaError_t e = cudaEventRecord(ring_.fork_event(), o.stream); e != cudaSuccess) return detail::cuda_error(e);
        if (cudaError_t e = cudaStreamWaitEvent(side, ring_.fork_event(), 0); e != cudaSuccess) return detail::cuda_error(e);
        copy_geometry gk = g;
        gk.pairs = k;
        using tuning = std::conditional_t<Load, load_tuning, backup_tuning>;
        // At least 2 blocks: one SM moves at most ~60-70% of the link, and the kernel's share must
        // finish with the copy engines' (docs/gpu.md).
        if (result<void> r = detail::dispatch_copy<tuning>(dsrc, ddst, dpairs, gk, std::max(o.blocks, 2), side, {}); !r)
          return r;
        if (cudaError_t e = cudaEventRecord(ring_.side_join_event(), side); e != cudaSuccess) return detail::cuda_error(e);
      }
      copy_geometry gs = g;
      gs.pairs = pairs.size() - k;
      const std::span<const cudaEvent_t> ev = k > 0 ? std::span<const cudaEvent_t>{} : o.layer_events;
      result<void> r;
      if constexpr (Load)
        r = detail::staged_copy<true>(ring_, src, ddst, pairs.subspan(k), dpairs + k, gs, o.stream, ev, rope, o.element);
      else r = detail::staged_copy<false>(ring_, dst, dsrc, pairs.subspan(k), dpairs + k, gs, o.stream, ev);
      if (k > 0) {
        if (cudaError_t e = cudaStreamWaitEvent(o.stream, ring_.side_join_event(), 0); e != cudaSuccess && r)
          return detail::cuda_error(e);
        for (cudaEvent_t ev2 : o.layer_events)
          if (cudaError_t e = cudaEventRecord(ev2, o.stream); e != cudaSuccess && r) return detail::cuda_error(e);
      }
      return r;
    }
  }
  // The kernel path with RoPE on load: the rotating kernel reads mapped host memory directly; one
  // launch per layer when the caller wants layer events.
  template <class Tuning, class Src, class Dst>
  result<void> rope_kernel(const Src& dsrc, const Dst& ddst, const page_pair* dpairs, const detail::rope_device_args& a,
                           const copy_geometry& g, int blocks, const options& o) {
    detail::rope_params<Src, Dst> p{dsrc, ddst, nullptr, dpairs};
    const std::size_t eb = size_of(o.element), align = std::min({detail::pow2_alignment(g.head_bytes),
                                                                 detail::view_alignment(dsrc), detail::view_alignment(ddst)});
    const std::size_t vec = detail::rope_vector_bytes(a.rope, eb, align);
    if (eb != ddst.element_bytes) return make_error(errc::invalid_argument);
    if (result<void> r = detail::rope_prepare(p, a, g.heads, g.head_bytes / eb, eb, vec); !r) return r;
    const bool per_layer = !o.layer_events.empty();
    const std::size_t per_launch = per_layer ? 1 : g.layers;
    p.page_tokens = static_cast<std::uint32_t>(g.page_tokens);
    p.tokens = detail::fast_divmod(static_cast<std::uint32_t>(g.page_tokens));
    p.kv = detail::fast_divmod(static_cast<std::uint32_t>(g.kv));
    p.layers = detail::fast_divmod(static_cast<std::uint32_t>(per_launch));
    const std::size_t units = g.pairs * per_launch * g.kv * g.page_tokens;
    if (units >= (std::size_t{1} << 32)) return make_error(errc::unsupported);
    p.units = static_cast<std::uint32_t>(units);
    if (blocks <= 0) blocks = Tuning::default_blocks;
    for (std::size_t l = g.first_layer; l < g.first_layer + g.layers; l += per_launch) {
      p.first_layer = static_cast<std::uint32_t>(l);
      if (units > 0)
        if (cudaError_t e = detail::launch_rope<Tuning::threads>(p, o.element, vec, blocks, o.stream); e != cudaSuccess)
          return detail::cuda_error(e);
      if (per_layer)
        if (cudaError_t e = cudaEventRecord(o.layer_events[l - g.first_layer], o.stream); e != cudaSuccess)
          return detail::cuda_error(e);
    }
    return {};
  }
  // Mean bytes of a staged copy-engine run: layer-group runs, merged where consecutive pairs'
  // host pages are adjacent in memory and move whole.
  template <class HostView>
  std::size_t mean_run(const HostView& host, std::span<const page_pair> pairs, const copy_geometry& g, bool per_layer,
                       bool load_dir) const noexcept {
    const std::size_t seg = detail::staged_run_bytes(g, per_layer, ring_.config().slot_bytes);
    bool whole_pages = false;
    if constexpr (detail::is_kv_buffer<HostView>)
      whole_pages = seg == host.map.page_span() * host.element_bytes && host.map.page_stride() == host.map.page_span();
    if (pairs.empty() || !whole_pages) return seg;
    std::size_t runs = 1;
    for (std::size_t i = 1; i < pairs.size(); ++i) {
      const std::uint32_t a = load_dir ? pairs[i - 1].src : pairs[i - 1].dst, b = load_dir ? pairs[i].src : pairs[i].dst;
      runs += b != a + 1;
    }
    return std::min(seg * pairs.size() / runs, ring_.config().slot_bytes / seg * seg);  // a run stays in one slot
  }
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
  detail::staging_ring ring_;
  copy_stats stats_;
  planner_tuning planner_;
};

}  // namespace kvtier::transfer::gpu
