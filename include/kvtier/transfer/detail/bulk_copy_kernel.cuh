#pragma once
// The Hopper bulk-copy kernel: the copy engine inside each SM (cp.async.bulk, sm_90) moves contiguous
// runs global -> shared memory -> global, so the bytes in flight live in shared memory, not in
// registers, and one thread per pipeline issues a whole stage with a handful of instructions.
// Each warp's lane 0 runs one pipeline of `Stages` shared-memory stages; a stage ("fill") packs
// whole tiles (or one chunk of a large tile) up to StageBytes. Only for tiles contiguous on both
// sides with 16-byte aligned addresses and sizes (run_shape block or page); dispatch checks that.
#include <cstddef>
#include <cstdint>

#include "kvtier/transfer/detail/copy_kernel.cuh"

namespace kvtier::transfer::detail {

struct bulk_params {
  std::uint32_t fills;            // stages' worth of work in this launch
  std::uint32_t tile_bytes;       // bytes of one tile (contiguous on both sides)
  std::uint32_t tiles_per_fill;   // >= 1 when tiles are small; 0 when a tile spans several fills
  fast_divmod chunks_per_tile;    // fills per tile when tiles_per_fill == 0
  std::uint32_t chunk_bytes;      // bytes of a full chunk when tiles span fills
  std::uint32_t tiles;            // tiles in this launch
};

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ std::uint32_t smem_addr(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void bulk_load(std::uint32_t dst, const void* src, std::uint32_t bytes, std::uint32_t bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(dst),
               "l"(src), "r"(bytes), "r"(bar)
               : "memory");
}
__device__ __forceinline__ void bulk_store(void* dst, std::uint32_t src, std::uint32_t bytes) {
  asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;" ::"l"(dst), "r"(src), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void expect_tx(std::uint32_t bar, std::uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void wait_parity(std::uint32_t bar, std::uint32_t parity) {
  asm volatile(
      "{\n .reg .pred p;\n"
      "WAIT_%=:\n mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n @!p bra WAIT_%=;\n}" ::"r"(bar),
      "r"(parity)
      : "memory");
}
#endif

template <int Warps, int Stages, int StageBytes, class Src, class Dst>
__global__ void __launch_bounds__(Warps * 32, 1)
    bulk_copy_kernel(const __grid_constant__ copy_params<Src, Dst> p, const bulk_params b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(128) std::byte smem[];
  const std::uint32_t warp = threadIdx.x >> 5;
  if ((threadIdx.x & 31u) != 0) return;  // one issuing thread per pipeline
  std::byte* stage0 = smem + std::size_t{warp} * Stages * StageBytes;
  auto* bars = reinterpret_cast<std::uint64_t*>(smem + std::size_t{Warps} * Stages * StageBytes) + warp * Stages;
  for (int s = 0; s < Stages; ++s)
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_addr(bars + s)) : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");

  // Tile t -> source and destination addresses (same decode as the vector kernel).
  auto tile_ptrs = [&](std::uint32_t t, const std::byte*& s, std::byte*& d) {
    std::uint32_t rest, lp, layer_rel;
    const std::uint32_t h = p.heads.divmod(t, rest);
    const std::uint32_t k = p.kv.divmod(rest, lp);
    const std::uint32_t pair = p.pairs_div.divmod(lp, layer_rel);
    const page_pair pg = p.pairs[pair];
    const std::uint32_t l = p.first_layer + layer_rel;
    s = p.src.page_row(l, k, pg.src, p.page_tokens, 0, h);  // (token, head, dim) of src's page, plane (l, k)
    d = p.dst.page_row(l, k, pg.dst, p.page_tokens, 0, h);  // (token, head, dim) of dst's page, plane (l, k)
  };
  // Visits the runs of fill f: fn(src, dst, offset in stage, bytes).
  auto for_each_piece = [&](std::uint32_t f, auto&& fn) {
    if (b.tiles_per_fill > 0) {
      const std::uint32_t first = f * b.tiles_per_fill;
      const std::uint32_t last = min(first + b.tiles_per_fill, b.tiles);
      for (std::uint32_t t = first; t < last; ++t) {
        const std::byte* s;
        std::byte* d;
        tile_ptrs(t, s, d);
        fn(s, d, (t - first) * b.tile_bytes, b.tile_bytes);
      }
    } else {
      std::uint32_t t;
      const std::uint32_t c = b.chunks_per_tile.divmod(f, t);
      const std::byte* s;
      std::byte* d;
      tile_ptrs(t, s, d);
      const std::uint32_t off = c * b.chunk_bytes;
      fn(s + off, d + off, 0u, min(b.chunk_bytes, b.tile_bytes - off));
    }
  };
  auto fill_bytes = [&](std::uint32_t f) {
    std::uint32_t n = 0;
    for_each_piece(f, [&](const std::byte*, std::byte*, std::uint32_t, std::uint32_t bytes) { n += bytes; });
    return n;
  };
  auto issue_load = [&](std::uint32_t f, int s) {
    const std::uint32_t bar = smem_addr(bars + s);
    expect_tx(bar, fill_bytes(f));
    const std::uint32_t base = smem_addr(stage0 + std::size_t{static_cast<unsigned>(s)} * StageBytes);
    for_each_piece(f, [&](const std::byte* src, std::byte*, std::uint32_t off, std::uint32_t bytes) {
      bulk_load(base + off, src, bytes, bar);
    });
  };

  const std::uint32_t pipelines = gridDim.x * Warps;
  const std::uint32_t me = blockIdx.x * Warps + warp;
  // This pipeline's fills: me, me + pipelines, ... ; i counts them.
  const std::uint32_t mine = me < b.fills ? (b.fills - me + pipelines - 1) / pipelines : 0;
  for (std::uint32_t i = 0; i < mine && i < static_cast<std::uint32_t>(Stages); ++i)
    issue_load(me + i * pipelines, static_cast<int>(i));
  for (std::uint32_t i = 0; i < mine; ++i) {
    const int s = static_cast<int>(i % Stages);
    wait_parity(smem_addr(bars + s), (i / Stages) & 1u);
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    const std::uint32_t base = smem_addr(stage0 + std::size_t{static_cast<unsigned>(s)} * StageBytes);
    for_each_piece(me + i * pipelines, [&](const std::byte*, std::byte* dst, std::uint32_t off, std::uint32_t bytes) {
      bulk_store(dst, base + off, bytes);
    });
    asm volatile("cp.async.bulk.commit_group;" ::: "memory");
    // Refill the previous stage once its stores have read shared memory (this fill's may still run).
    if (i >= 1 && i - 1 + Stages < mine) {
      asm volatile("cp.async.bulk.wait_group.read 1;" ::: "memory");
      issue_load(me + (i - 1 + Stages) * pipelines, static_cast<int>((i - 1) % Stages));
    }
  }
  asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
#else
  __trap();  // dispatch launches this kernel only on compute capability 9.0 and later
#endif
}

}  // namespace kvtier::transfer::detail
