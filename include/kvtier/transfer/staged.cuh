#pragma once
// The staged copy path: the copy engines move large contiguous runs (whole pages, or layer groups of
// pages: page_first keeps each layer group of a page contiguous) between pinned host memory and a
// bounded device staging ring, on the ring's own copy stream; a relayout kernel moves them between
// the ring and the engine's layout on the caller's stream. Chunks of a slot each are pipelined:
//   load:   copy stream  [H2D chunk 0][H2D chunk 1][H2D chunk 2] ...
//           caller       ............[relayout 0].[relayout 1] ...   (events per layer group)
//   backup: caller       [relayout 0][relayout 1] ...
//           copy stream  ............[D2H chunk 0][D2H chunk 1] ...
// Each slot has a `ready` event (filled) and a `free` event (drained), so the ring is reused without
// a host wait. Adjacent host runs (consecutive host pages moved whole) merge into one copy.
// Supported: a page_first host view (padded pages too) and runs that are whole (page, layer, kv)
// blocks on both sides (run_shape block or page); the planner sends everything else to the kernel.
#include <cuda_runtime.h>

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier/layout/page_first.hpp"
#include "kvtier/transfer/detail/dispatch.cuh"
#include "kvtier/transfer/detail/relayout_kernel.cuh"
#include "kvtier/transfer/detail/rope_kernel.cuh"
#include "kvtier/transfer/geometry.hpp"
#include "kvtier/transfer/tuning.cuh"
#include "kvtier/transfer/views.hpp"

namespace kvtier::transfer {

// Size of a copier's staging ring (device memory it owns: slots * slot_bytes).
struct staging_config {
  int slots = staged_tuning::slots;
  std::size_t slot_bytes = staged_tuning::slot_bytes;
};

// Whether the staged path can move a copy whose host side is HostView with geometry g.
template <kv_view HostView>
constexpr bool staged_supports(const copy_geometry& g, const staging_config& c) noexcept {
  return std::same_as<typename HostView::mapping_type, layout::page_first::mapping> && g.shape != run_shape::head &&
         g.kv * g.block_bytes() <= c.slot_bytes;
}

namespace detail {

// The staging ring: slots in one device allocation, the copy stream, a side stream (the kernel's
// share of a mixed copy), per-slot events and reusable run lists. Created on first use.
class staging_ring {
 public:
  staging_ring() = default;
  explicit staging_ring(staging_config c) : cfg_(c) {}
  staging_ring(const staging_ring&) = delete;
  staging_ring& operator=(const staging_ring&) = delete;
  ~staging_ring() { release(); }
  void swap(staging_ring& o) noexcept {
    std::swap(cfg_, o.cfg_);
    std::swap(mem_, o.mem_);
    std::swap(copy_, o.copy_);
    std::swap(side_, o.side_);
    std::swap(ready_, o.ready_);
    std::swap(free_, o.free_);
    std::swap(fork_, o.fork_);
    std::swap(join_, o.join_);
    std::swap(side_join_, o.side_join_);
    std::swap(next_, o.next_);
    std::swap(sms_, o.sms_);
  }

  const staging_config& config() const noexcept { return cfg_; }
  result<void> ensure() {
    if (mem_) return {};
    if (cfg_.slots < 2 || cfg_.slot_bytes < 4096 || cfg_.slot_bytes % 256 != 0) return make_error(errc::invalid_argument);
    auto fail = [&](cudaError_t e) -> result<void> {
      release();
      return make_error(errc::capacity_exhausted, static_cast<int>(e));
    };
    int dev = 0;
    if (cudaError_t e = cudaGetDevice(&dev); e != cudaSuccess) return fail(e);
    if (cudaError_t e = cudaDeviceGetAttribute(&sms_, cudaDevAttrMultiProcessorCount, dev); e != cudaSuccess)
      return fail(e);
    if (cudaError_t e = cudaMalloc(&mem_, cfg_.slot_bytes * cfg_.slots); e != cudaSuccess) return fail(e);
    if (cudaError_t e = cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking); e != cudaSuccess) return fail(e);
    if (cudaError_t e = cudaStreamCreateWithFlags(&side_, cudaStreamNonBlocking); e != cudaSuccess) return fail(e);
    ready_.assign(cfg_.slots, nullptr);
    free_.assign(cfg_.slots, nullptr);
    for (auto* v : {&ready_, &free_})
      for (cudaEvent_t& ev : *v)
        if (cudaError_t e = cudaEventCreateWithFlags(&ev, cudaEventDisableTiming); e != cudaSuccess) return fail(e);
    for (cudaEvent_t* ev : {&fork_, &join_, &side_join_})
      if (cudaError_t e = cudaEventCreateWithFlags(ev, cudaEventDisableTiming); e != cudaSuccess) return fail(e);
    return {};
  }
  std::byte* slot(int s) const noexcept { return mem_ + cfg_.slot_bytes * static_cast<std::size_t>(s); }
  int take_slot() noexcept {
    const int s = next_;
    next_ = (next_ + 1) % cfg_.slots;
    return s;
  }
  int sms() const noexcept { return sms_; }
  cudaStream_t copy_stream() const noexcept { return copy_; }
  cudaStream_t side_stream() const noexcept { return side_; }
  cudaEvent_t ready(int s) const noexcept { return ready_[s]; }
  cudaEvent_t freed(int s) const noexcept { return free_[s]; }
  cudaEvent_t fork_event() const noexcept { return fork_; }
  cudaEvent_t join_event() const noexcept { return join_; }
  cudaEvent_t side_join_event() const noexcept { return side_join_; }

  // Copy-engine runs of one chunk, reused across chunks.
  std::vector<void*> dsts;
  std::vector<const void*> srcs;
  std::vector<std::size_t> sizes;

 private:
  void release() noexcept {
    if (copy_) (void)cudaStreamSynchronize(copy_);
    if (side_) (void)cudaStreamSynchronize(side_);
    for (auto* v : {&ready_, &free_})
      for (cudaEvent_t ev : *v)
        if (ev) (void)cudaEventSynchronize(ev), (void)cudaEventDestroy(ev);
    ready_.clear();
    free_.clear();
    for (cudaEvent_t* ev : {&fork_, &join_, &side_join_})
      if (*ev) (void)cudaEventDestroy(*ev), *ev = nullptr;
    if (copy_) (void)cudaStreamDestroy(copy_), copy_ = nullptr;
    if (side_) (void)cudaStreamDestroy(side_), side_ = nullptr;
    if (mem_) (void)cudaFree(mem_), mem_ = nullptr;
  }

  staging_config cfg_{};
  std::byte* mem_ = nullptr;
  cudaStream_t copy_ = nullptr, side_ = nullptr;
  std::vector<cudaEvent_t> ready_, free_;
  cudaEvent_t fork_ = nullptr, join_ = nullptr, side_join_ = nullptr;
  int next_ = 0;
  int sms_ = 1;
};

// Layers per group: all of them (bounded by a slot) without events; with per-layer events the fewest
// whose blocks of one page make a run of min_group_run bytes, at most max_group_layers.
inline std::size_t staged_group_layers(const copy_geometry& g, bool per_layer, std::size_t slot_bytes) noexcept {
  const std::size_t layer_bytes = g.kv * g.block_bytes();
  std::size_t n = g.layers;
  if (per_layer)
    n = std::min(staged_tuning::max_group_layers, (staged_tuning::min_group_run + layer_bytes - 1) / layer_bytes);
  return std::max<std::size_t>(1, std::min({n, g.layers, slot_bytes / layer_bytes}));
}

// Bytes of the copy engines' runs on the staged path (before merging adjacent pages): the planner's
// run length. Merging makes runs longer when consecutive host pages move whole.
inline std::size_t staged_run_bytes(const copy_geometry& g, bool per_layer, std::size_t slot_bytes) noexcept {
  return staged_group_layers(g, per_layer, slot_bytes) * g.kv * g.block_bytes();
}

// Issues the runs collected in ring.dsts/srcs/sizes on the copy stream: one copy, or one batch.
inline cudaError_t issue_runs(staging_ring& ring) {
  cudaStream_t s = ring.copy_stream();
  if (ring.dsts.empty()) return cudaSuccess;
  if (ring.dsts.size() == 1) return cudaMemcpyAsync(ring.dsts[0], ring.srcs[0], ring.sizes[0], cudaMemcpyDefault, s);
  cudaMemcpyAttributes attr{};
  attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
  std::size_t attr_index = 0;
  return cudaMemcpyBatchAsync(ring.dsts.data(), ring.srcs.data(), ring.sizes.data(), ring.dsts.size(), &attr,
                              &attr_index, 1, s);
}

template <bool Load, class Vec, class DevView>
cudaError_t launch_relayout(const relayout_params<DevView>& p, int sms, cudaStream_t stream) {
  constexpr int threads = staged_tuning::relayout_threads, vpl = staged_tuning::relayout_vectors_per_lane;
  const std::uint32_t needed = (p.units + threads / 32 - 1) / (threads / 32);
  const auto most = static_cast<std::uint32_t>(sms * staged_tuning::relayout_blocks_per_sm);
  const int grid = static_cast<int>(std::max<std::uint32_t>(1, std::min(most, needed)));
  relayout_kernel<threads, vpl, Load, Vec><<<grid, threads, 0, stream>>>(p);
  return cudaGetLastError();
}

// The staged copy of `pairs` (host pairs; dpairs: the same in device memory) between the host view
// and the device view (device-readable plane table). Load: host -> device; else device -> host.
// events: empty, or one per layer of g, recorded when that layer's group has landed. rope (load only):
// K rotated on the way by the RoPE relayout kernel instead of the plain one (rope->positions: per
// pair of dpairs; `element` is the KV's dtype).
template <bool Load, kv_view HostView, kv_view DevView>
result<void> staged_copy(staging_ring& ring, const HostView& host, const DevView& dev, std::span<const page_pair> pairs,
                         const page_pair* dpairs, const copy_geometry& g, cudaStream_t stream,
                         std::span<const cudaEvent_t> events, const rope_device_args* rope = nullptr,
                         dtype element = dtype::bf16) {
  if (!staged_supports<HostView>(g, ring.config())) return make_error(errc::unsupported);
  if (!events.empty() && events.size() != g.layers) return make_error(errc::invalid_argument);
  if (result<void> r = ring.ensure(); !r) return r;
  const std::size_t slot_bytes = ring.config().slot_bytes, block = g.block_bytes(), P = g.page_tokens;
  const std::size_t group = staged_group_layers(g, !events.empty(), slot_bytes);
  const std::size_t align = std::min(view_alignment(dev), pow2_alignment(g.row_bytes()));
  cudaStream_t cs = ring.copy_stream();
  auto ck = [](cudaError_t e) -> result<void> {
    if (e != cudaSuccess) return cuda_error(e);
    return {};
  };
  // The copy stream starts after the caller's earlier work (host pages written, device KV computed).
  if (auto r = ck(cudaEventRecord(ring.fork_event(), stream)); !r) return r;
  if (auto r = ck(cudaStreamWaitEvent(cs, ring.fork_event(), 0)); !r) return r;

  // The RoPE relayout: one warp per token row, the vector width the rotation allows.
  rope_params<DevView, DevView> rp{dev, dev, nullptr, dpairs};
  std::size_t rope_vec = 0;
  if (rope) {
    if (!Load) return make_error(errc::invalid_argument);
    rope_vec = rope_vector_bytes(rope->rope, size_of(element), align);
    if (result<void> r = rope_prepare(rp, *rope, g.heads, g.head_bytes / size_of(element), size_of(element), rope_vec); !r)
      return r;
    rp.page_tokens = static_cast<std::uint32_t>(P);
    rp.tokens = fast_divmod(static_cast<std::uint32_t>(P));
    rp.kv = fast_divmod(static_cast<std::uint32_t>(g.kv));
  }
  auto run = [&]<class Vec>() -> result<void> {
    for (std::size_t l0 = g.first_layer; l0 < g.first_layer + g.layers; l0 += group) {
      const std::size_t n = std::min(group, g.first_layer + g.layers - l0), seg = n * g.kv * block;
      const std::size_t per_chunk = slot_bytes / seg;
      relayout_params<DevView> p{dev, nullptr, dpairs};
      p.first_layer = static_cast<std::uint32_t>(l0);
      p.page_tokens = static_cast<std::uint32_t>(P);
      p.tile_vecs = static_cast<std::uint32_t>(block / sizeof(Vec));
      constexpr std::size_t slice_vecs = 32u * staged_tuning::relayout_vectors_per_lane;
      const std::size_t slices = (p.tile_vecs + slice_vecs - 1) / slice_vecs;
      p.slices = fast_divmod(static_cast<std::uint32_t>(slices));
      p.kv = fast_divmod(static_cast<std::uint32_t>(g.kv));
      p.layers = fast_divmod(static_cast<std::uint32_t>(n));
      for (std::size_t c0 = 0; c0 < pairs.size(); c0 += per_chunk) {
        const std::size_t cn = std::min(per_chunk, pairs.size() - c0);
        const int s = ring.take_slot();
        std::byte* slot = ring.slot(s);
        // The host runs of this chunk, adjacent ones merged.
        ring.dsts.clear();
        ring.srcs.clear();
        ring.sizes.clear();
        for (std::size_t i = 0; i < cn; ++i) {
          const page_pair pg = pairs[c0 + i];
          std::byte* h = host.page_row(l0, 0, Load ? pg.src : pg.dst, P, 0, 0);
          std::byte* st = slot + i * seg;
          std::byte* const hd = Load ? st : h;
          const void* const hs = Load ? static_cast<const void*>(h) : st;
          if (!ring.sizes.empty() && static_cast<const std::byte*>(ring.srcs.back()) + ring.sizes.back() == hs &&
              static_cast<std::byte*>(ring.dsts.back()) + ring.sizes.back() == hd) {
            ring.sizes.back() += seg;
            continue;
          }
          ring.dsts.push_back(hd);
          ring.srcs.push_back(hs);
          ring.sizes.push_back(seg);
        }
        p.slot = slot;
        p.first_pair = static_cast<std::uint32_t>(c0);
        const std::size_t units = cn * n * g.kv * slices;
        if (units >= (std::size_t{1} << 32)) return make_error(errc::unsupported);
        p.units = static_cast<std::uint32_t>(units);
        if constexpr (Load) {
          if (auto r = ck(cudaStreamWaitEvent(cs, ring.freed(s), 0)); !r) return r;
          if (auto r = ck(issue_runs(ring)); !r) return r;
          if (auto r = ck(cudaEventRecord(ring.ready(s), cs)); !r) return r;
          if (auto r = ck(cudaStreamWaitEvent(stream, ring.ready(s), 0)); !r) return r;
          if (rope) {
            rp.slot = slot;
            rp.first_pair = static_cast<std::uint32_t>(c0);
            rp.first_layer = static_cast<std::uint32_t>(l0);
            rp.layers = fast_divmod(static_cast<std::uint32_t>(n));
            rp.units = static_cast<std::uint32_t>(cn * n * g.kv * P);
            const int most = ring.sms() * staged_tuning::relayout_blocks_per_sm;
            if (auto r = ck(launch_rope<staged_tuning::relayout_threads>(rp, element, rope_vec, most, stream)); !r) return r;
          } else if (auto r = ck(launch_relayout<true, Vec>(p, ring.sms(), stream)); !r) {
            return r;
          }
          if (auto r = ck(cudaEventRecord(ring.freed(s), stream)); !r) return r;
        } else {
          if (auto r = ck(cudaStreamWaitEvent(stream, ring.freed(s), 0)); !r) return r;
          if (auto r = ck(launch_relayout<false, Vec>(p, ring.sms(), stream)); !r) return r;
          if (auto r = ck(cudaEventRecord(ring.ready(s), stream)); !r) return r;
          if (auto r = ck(cudaStreamWaitEvent(cs, ring.ready(s), 0)); !r) return r;
          if (auto r = ck(issue_runs(ring)); !r) return r;
          if (auto r = ck(cudaEventRecord(ring.freed(s), cs)); !r) return r;
        }
      }
      // This layer group has landed (load: relaid on the caller's stream; backup: copied out).
      for (std::size_t l = l0; l < l0 + n && !events.empty(); ++l)
        if (auto r = ck(cudaEventRecord(events[l - g.first_layer], Load ? stream : cs)); !r) return r;
    }
    if constexpr (!Load) {  // the caller's stream continues once the last bytes reached the host
      if (auto r = ck(cudaEventRecord(ring.join_event(), cs)); !r) return r;
      if (auto r = ck(cudaStreamWaitEvent(stream, ring.join_event(), 0)); !r) return r;
    }
    return {};
  };
  switch (align) {
    case 16: return run.template operator()<uint4>();
    case 8: return run.template operator()<uint2>();
    case 4: return run.template operator()<std::uint32_t>();
    case 2: return run.template operator()<std::uint16_t>();
    default: return run.template operator()<std::uint8_t>();
  }
}

}  // namespace detail
}  // namespace kvtier::transfer
