#pragma once
// Dispatch: picks the widest vector every address allows, the tile shape (the fast path when both
// layouts agree and every layer moves), the grid from the SM budget, and one launch for the whole
// copy or one per layer when the caller wants a CUDA event per layer.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>

#include "kvtier/core/error.hpp"
#include "kvtier/transfer/detail/bulk_copy_kernel.cuh"
#include "kvtier/transfer/detail/copy_kernel.cuh"
#include "kvtier/transfer/geometry.hpp"
#include "kvtier/transfer/views.hpp"

namespace kvtier::transfer::detail {

inline error cuda_error(cudaError_t e) noexcept { return make_error(errc::io_error, static_cast<int>(e)); }

// Largest power of two <= 16 dividing x (x == 0 counts as 16).
constexpr std::size_t pow2_alignment(std::size_t x) noexcept {
  std::size_t a = 16;
  while (a > 1 && x % a != 0) a /= 2;
  return a;
}

// Alignment every base pointer of a view guarantees. Plane tables given as pointer arrays are
// required to be 16-byte aligned (cudaMalloc gives 256); a single base is checked.
template <class View>
std::size_t view_alignment(const View& v) noexcept {
  if constexpr (std::same_as<View, layer_first_buffer>) {
    if (v.planes.ptrs_per_layer > 0) return pow2_alignment(v.planes.kv_stride);
    return std::min({pow2_alignment(reinterpret_cast<std::uintptr_t>(v.planes.base)),
                     pow2_alignment(v.planes.layer_stride), pow2_alignment(v.planes.kv_stride)});
  } else {
    std::size_t a = pow2_alignment(reinterpret_cast<std::uintptr_t>(v.data));
    if constexpr (requires { v.map.page_stride(); })  // padded pages move every page's start
      a = std::min(a, pow2_alignment(v.map.page_stride() * v.element_bytes));
    return a;
  }
}

// Bytes between the K and V blocks of one (page, layer) when that distance is the same for every
// page and layer; 0 when it is not (a plane table with one pointer per (layer, kv)).
template <class View>
std::size_t kv_stride_bytes(const View& v, std::size_t page_tokens) noexcept {
  if constexpr (std::same_as<View, layer_first_buffer>) {
    return v.planes.ptrs_per_layer > 1 ? 0 : v.planes.kv_stride;
  } else {
    return static_cast<std::size_t>(v.page_row(0, 1, 0, page_tokens, 0, 0) - v.page_row(0, 0, 0, page_tokens, 0, 0));
  }
}

template <class Tuning, class Vec, class Src, class Dst>
cudaError_t launch(const copy_params<Src, Dst>& p, int blocks, cudaStream_t stream) {
  constexpr std::uint32_t warps_per_block = Tuning::threads / 32;
  const std::uint32_t needed = (p.units + warps_per_block - 1) / warps_per_block;
  const int grid = static_cast<int>(std::max<std::uint32_t>(1, std::min<std::uint32_t>(blocks, needed)));
  copy_pages_kernel<Tuning::threads, Tuning::vectors_per_lane, Vec><<<grid, Tuning::threads, 0, stream>>>(p);
  return cudaGetLastError();
}

// Launches the bulk-copy kernel over the tiles of p (contiguous, 16-byte aligned tiles only).
template <class Tuning, class Src, class Dst>
cudaError_t launch_bulk(const copy_params<Src, Dst>& p, std::size_t tiles, std::size_t tile_bytes, int blocks,
                        cudaStream_t stream) {
  constexpr int warps = Tuning::bulk_warps, stages = Tuning::bulk_stages, stage_bytes = Tuning::bulk_stage_bytes;
  constexpr std::size_t smem = std::size_t{warps} * stages * (stage_bytes + sizeof(std::uint64_t));
  static_assert(stage_bytes % 16 == 0 && smem <= 227 * 1024, "bulk tuning exceeds shared memory");
  auto kernel = bulk_copy_kernel<warps, stages, stage_bytes, Src, Dst>;
  static const cudaError_t attr = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (attr != cudaSuccess) return attr;
  bulk_params b{};
  b.tile_bytes = static_cast<std::uint32_t>(tile_bytes);
  b.tiles = static_cast<std::uint32_t>(tiles);
  std::size_t fills;
  if (tile_bytes <= static_cast<std::size_t>(stage_bytes)) {
    b.tiles_per_fill = static_cast<std::uint32_t>(stage_bytes / tile_bytes);
    fills = (tiles + b.tiles_per_fill - 1) / b.tiles_per_fill;
  } else {
    const std::size_t chunks = (tile_bytes + stage_bytes - 1) / stage_bytes;
    b.chunks_per_tile = fast_divmod(static_cast<std::uint32_t>(chunks));
    b.chunk_bytes = stage_bytes;
    fills = tiles * chunks;
  }
  b.fills = static_cast<std::uint32_t>(fills);
  const std::size_t needed = (fills + warps - 1) / warps;
  const int grid = static_cast<int>(std::max<std::size_t>(1, std::min<std::size_t>(blocks, needed)));
  kernel<<<grid, warps * 32, smem, stream>>>(p, b);
  return cudaGetLastError();
}

inline bool device_has_bulk_copy() noexcept {
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) return false;
  return major >= 9;
}

// The copy of geometry g with device-readable views and pairs. events: empty, or one per layer.
// bulk: use the bulk-copy kernel where the tiles allow it (contiguous, 16-byte aligned, sm_90+).
template <class Tuning, kv_view Src, kv_view Dst>
result<void> dispatch_copy(const Src& src, const Dst& dst, const page_pair* pairs, const copy_geometry& g, int blocks,
                           cudaStream_t stream, std::span<const cudaEvent_t> events, bool bulk = false) noexcept {
  if (!events.empty() && events.size() != g.layers) return make_error(errc::invalid_argument);
  if (blocks <= 0) blocks = Tuning::default_blocks;
  const std::size_t align = std::min({pow2_alignment(g.head_bytes), view_alignment(src), view_alignment(dst)});

  copy_params<Src, Dst> p{src, dst, pairs};
  p.page_tokens = static_cast<std::uint32_t>(g.page_tokens);
  std::size_t tile_bytes = g.run_bytes(), tiles_per_layer = g.pairs * g.kv;
  std::size_t launch_layers = g.layers;  // layers covered by one launch
  bool kv_rows = false;                  // tiles of (page, layer) with K and V as two runs
  p.rows = 1;
  p.heads = fast_divmod(1);
  p.kv = fast_divmod(static_cast<std::uint32_t>(g.kv));
  if (g.shape == run_shape::head) {
    tile_bytes = g.page_tokens * g.head_bytes;
    tiles_per_layer *= g.heads;
    p.rows = static_cast<std::uint32_t>(g.page_tokens);
    p.heads = fast_divmod(static_cast<std::uint32_t>(g.heads));
    p.src_row_stride = src.token_stride_bytes();
    p.dst_row_stride = dst.token_stride_bytes();
  } else if (g.shape == run_shape::page) {
    tiles_per_layer = g.pairs;
    launch_layers = 1;
    p.kv = fast_divmod(1);
  } else if (!bulk && g.kv > 1 && tile_bytes < std::size_t{32} * Tuning::vectors_per_lane * 16) {
    // Small blocks (1-token pages): one tile per (page, layer) holding its K and V blocks as two
    // runs, so each warp's slice is full and every lane keeps all its loads in flight.
    const std::size_t ss = kv_stride_bytes(src, g.page_tokens), ds = kv_stride_bytes(dst, g.page_tokens);
    if (ss != 0 && ds != 0 && std::min(pow2_alignment(ss), pow2_alignment(ds)) >= align) {
      tile_bytes *= g.kv;
      tiles_per_layer = g.pairs;
      p.rows = static_cast<std::uint32_t>(g.kv);
      p.kv = fast_divmod(1);
      p.src_row_stride = ss;
      p.dst_row_stride = ds;
      kv_rows = true;
    }
  }
  const bool per_layer = !events.empty() && g.shape != run_shape::page;
  if (per_layer) launch_layers = 1;
  p.pairs_div = fast_divmod(static_cast<std::uint32_t>(std::max<std::size_t>(g.pairs, 1)));

  auto run = [&]<class Vec>() -> result<void> {
    constexpr std::size_t slice_vecs = 32u * Tuning::vectors_per_lane;
    const std::size_t tile_vecs = tile_bytes / sizeof(Vec);
    const std::size_t slices = (tile_vecs + slice_vecs - 1) / slice_vecs;
    const std::size_t units = tiles_per_layer * launch_layers * slices;
    if (tile_vecs >= (std::size_t{1} << 32) || units >= (std::size_t{1} << 32) || g.pairs >= (std::size_t{1} << 32))
      return make_error(errc::unsupported);  // 32-bit index decode; split the batch
    p.tile_vecs = static_cast<std::uint32_t>(tile_vecs);
    p.units = static_cast<std::uint32_t>(units);
    p.slices = fast_divmod(static_cast<std::uint32_t>(slices));
    const std::size_t run_bytes = kv_rows ? g.block_bytes() : g.head_bytes;
    p.run_vecs = fast_divmod(static_cast<std::uint32_t>(std::max<std::size_t>(run_bytes / sizeof(Vec), 1)));
    const std::size_t launches = g.shape == run_shape::page ? 1 : g.layers / launch_layers;
    const std::size_t tiles = tiles_per_layer * launch_layers;
    const bool use_bulk = bulk && sizeof(Vec) == 16 && g.shape != run_shape::head && tile_bytes < (std::size_t{1} << 32) &&
                          device_has_bulk_copy();
    for (std::size_t i = 0; i < launches; ++i) {
      p.first_layer = g.shape == run_shape::page ? 0u : static_cast<std::uint32_t>(g.first_layer + i * launch_layers);
      if (units > 0) {
        const cudaError_t e = use_bulk ? launch_bulk<Tuning>(p, tiles, tile_bytes, blocks, stream)
                                       : launch<Tuning, Vec>(p, blocks, stream);
        if (e != cudaSuccess) return cuda_error(e);
      }
      if (per_layer)
        if (cudaError_t e = cudaEventRecord(events[i], stream); e != cudaSuccess) return cuda_error(e);
    }
    if (!per_layer)
      for (cudaEvent_t ev : events)
        if (cudaError_t e = cudaEventRecord(ev, stream); e != cudaSuccess) return cuda_error(e);
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

}  // namespace kvtier::transfer::detail
