#pragma once
// The page copy kernel. Work is cut into tiles (one (layer, pair, kv[, head]) block, or one whole
// page on the fast path) and each tile into slices of 32 x vectors_per_lane vectors; a warp decodes
// a slice's tile once (warp-uniform), then every lane loads vectors_per_lane vectors into registers
// before storing any, so each lane has that many 16-byte accesses in flight. The grid is the
// caller's SM budget and strides over the slices.
#include <cstddef>
#include <cstdint>

#include "kvtier/transfer/detail/fast_divmod.hpp"
#include "kvtier/transfer/geometry.hpp"
#include "kvtier/transfer/views.hpp"

namespace kvtier::transfer::detail {

template <class Src, class Dst>
struct copy_params {
  Src src;                       // (layer, kv, token, head, dim): source view, device-readable
  Dst dst;                       // (layer, kv, token, head, dim): destination view, device-writable
  const page_pair* pairs;        // device-readable pairs
  std::uint32_t first_layer;     // first layer of this launch
  std::uint32_t page_tokens;     // P
  std::uint32_t units;           // tiles x slices of this launch
  std::uint32_t tile_vecs;       // vectors in one tile
  std::uint32_t rows;            // runs per tile: 1 (contiguous tile) or P (head tiles)
  fast_divmod slices;            // tile -> slices per tile
  fast_divmod heads;             // tiles per (layer, pair, kv): heads (head tiles) or 1
  fast_divmod kv;                // kv planes (1 on the page fast path)
  fast_divmod pairs_div;         // pairs in the batch
  fast_divmod run_vecs;          // vectors per run (head tiles)
  std::size_t src_row_stride;    // bytes between the runs of a head tile, source side
  std::size_t dst_row_stride;    // bytes between the runs of a head tile, destination side
  run_shape shape;
};

// Byte offset of vector i of a tile: i vectors in on a contiguous tile (rows == 1); on a head tile
// run i / run_vecs, vector i % run_vecs of that run, with runs row_stride bytes apart. The same
// computation serves the load (source stride) and the store (destination stride).
template <class Vec>
__device__ __forceinline__ std::size_t tile_offset(std::uint32_t i, std::uint32_t rows, fast_divmod run_vecs,
                                                   std::size_t row_stride) {
  std::size_t off = std::size_t{i} * sizeof(Vec);
  if (rows > 1) {
    std::uint32_t t;
    const std::uint32_t c = run_vecs.divmod(i, t);
    off = t * row_stride + std::size_t{c} * sizeof(Vec);
  }
  return off;
}

template <int Threads, int VectorsPerLane, class Vec, class Src, class Dst>
__global__ void __launch_bounds__(Threads, 1) copy_pages_kernel(const __grid_constant__ copy_params<Src, Dst> p) {
  constexpr std::uint32_t slice_vecs = 32u * VectorsPerLane;
  const std::uint32_t lane = threadIdx.x & 31u;
  const std::uint32_t warps = (gridDim.x * Threads) >> 5;
  for (std::uint32_t u = (blockIdx.x * Threads + threadIdx.x) >> 5; u < p.units; u += warps) {
    // Warp-uniform decode: unit -> (tile, slice) -> (layer, pair, kv, head).
    std::uint32_t tile, rest, lp, layer_rel;
    const std::uint32_t slice = p.slices.divmod(u, tile);
    const std::uint32_t h = p.heads.divmod(tile, rest);
    const std::uint32_t k = p.kv.divmod(rest, lp);
    const std::uint32_t pair = p.pairs_div.divmod(lp, layer_rel);
    const page_pair pg = p.pairs[pair];
    const std::uint32_t l = p.first_layer + layer_rel;
    // The tile's first run on each side: (token 0, head h) of page pg of plane (l, k).
    const std::byte* s = p.src.page_row(l, k, pg.src, p.page_tokens, 0, h);  // (token, head, dim) of src's page
    std::byte* d = p.dst.page_row(l, k, pg.dst, p.page_tokens, 0, h);        // (token, head, dim) of dst's page
    const std::uint32_t first = slice * slice_vecs + lane;

    Vec r[VectorsPerLane];
#pragma unroll
    for (int j = 0; j < VectorsPerLane; ++j) {
      const std::uint32_t i = first + 32u * j;
      if (i < p.tile_vecs) {
        r[j] = *reinterpret_cast<const Vec*>(s + tile_offset<Vec>(i, p.rows, p.run_vecs, p.src_row_stride));
      }
    }
#pragma unroll
    for (int j = 0; j < VectorsPerLane; ++j) {
      const std::uint32_t i = first + 32u * j;
      if (i < p.tile_vecs) {
        *reinterpret_cast<Vec*>(d + tile_offset<Vec>(i, p.rows, p.run_vecs, p.dst_row_stride)) = r[j];
      }
    }
  }
}

}  // namespace kvtier::transfer::detail
