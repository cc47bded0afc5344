#pragma once
// The staged path's device-side half: moves (page, layer, kv) blocks between a slot of the staging
// ring and the engine's view, both in device memory (HBM, ~80x faster than PCIe). A slot holds one
// chunk: a run of pairs, one layer group each, packed tile after tile in (pair, layer, kv) order,
// which is the page_first order of that layer group, so the copy engines fill (or drain) a slot with
// whole pages or layer groups of pages. Tiles are cut into slices of 32 x VectorsPerLane vectors,
// decoded warp-uniformly, each lane loading all its vectors before storing any (as copy_kernel).
#include <cstddef>
#include <cstdint>

#include "kvtier/transfer/detail/fast_divmod.hpp"
#include "kvtier/transfer/views.hpp"

namespace kvtier::transfer::detail {

template <class View>
struct relayout_params {
  View view;                   // the device side (layer first), device-readable plane table
  std::byte* slot;             // (pair, layer in group, kv, token, head, dim) tiles, packed
  const page_pair* pairs;      // device pairs of the whole batch
  std::uint32_t first_pair;    // the chunk's first pair
  std::uint32_t first_layer;   // the layer group's first layer
  std::uint32_t page_tokens;   // P
  std::uint32_t tile_vecs;     // vectors of one (page, layer, kv) block
  std::uint32_t units;         // tiles x slices
  fast_divmod slices;          // slices per tile
  fast_divmod kv;              // kv planes
  fast_divmod layers;          // layers in the group
};

// ToView: slot -> view (load; the view's page is pair.dst); else view -> slot (backup; pair.src).
template <int Threads, int VectorsPerLane, bool ToView, class Vec, class View>
__global__ void __launch_bounds__(Threads) relayout_kernel(const __grid_constant__ relayout_params<View> p) {
  constexpr std::uint32_t slice_vecs = 32u * VectorsPerLane;
  const std::uint32_t lane = threadIdx.x & 31u;
  const std::uint32_t warps = (gridDim.x * Threads) >> 5;
  for (std::uint32_t u = (blockIdx.x * Threads + threadIdx.x) >> 5; u < p.units; u += warps) {
    std::uint32_t tile, rest, pair_rel, l_rel;
    const std::uint32_t slice = p.slices.divmod(u, tile);
    const std::uint32_t k = p.kv.divmod(tile, rest);
    l_rel = p.layers.divmod(rest, pair_rel);
    const page_pair pg = p.pairs[p.first_pair + pair_rel];
    Vec* staged = reinterpret_cast<Vec*>(p.slot) + std::size_t{tile} * p.tile_vecs;
    Vec* viewed = reinterpret_cast<Vec*>(
        p.view.page_row(p.first_layer + l_rel, k, ToView ? pg.dst : pg.src, p.page_tokens, 0, 0));
    const Vec* s = ToView ? staged : viewed;
    Vec* d = ToView ? viewed : staged;
    const std::uint32_t first = slice * slice_vecs + lane;
    Vec r[VectorsPerLane];
#pragma unroll
    for (int j = 0; j < VectorsPerLane; ++j)
      if (first + 32u * j < p.tile_vecs) r[j] = s[first + 32u * j];
#pragma unroll
    for (int j = 0; j < VectorsPerLane; ++j)
      if (first + 32u * j < p.tile_vecs) d[first + 32u * j] = r[j];
  }
}

}  // namespace kvtier::transfer::detail
