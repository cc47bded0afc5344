#pragma once
// Tuning of the copy kernels: one struct per direction, one commented field each (CUB's policy style).
// The bytes in flight per block are threads * vectors_per_lane * 16: reads of mapped host memory
// cross PCIe (~1-2 us under load), so a block must keep far more than the bandwidth-latency product
// (55 GB/s x 2 us = 110 KB) outstanding over the blocks of the SM budget.
#include <cstddef>

namespace kvtier::transfer {

struct load_tuning {
  // Threads per block: a whole SM's worth of warps, so a small SM budget still has many loads out.
  static constexpr int threads = 1024;
  // Vectors (16 bytes when aligned) each lane loads into registers before its first store.
  static constexpr int vectors_per_lane = 8;
  // SM budget (blocks) when the caller names none: the issue's target is 2 blocks for load.
  static constexpr int default_blocks = 2;
  // Bulk-copy kernel (strategy::bulk): issuing warps (pipelines) per block.
  static constexpr int bulk_warps = 4;
  // Bulk-copy kernel: shared-memory stages per pipeline; stages - 1 are in flight while one drains.
  static constexpr int bulk_stages = 4;
  // Bulk-copy kernel: bytes per stage; warps * stages * this must fit in 227 KiB of shared memory.
  static constexpr int bulk_stage_bytes = 12 * 1024;
};

struct backup_tuning {
  // Threads per block, as for load.
  static constexpr int threads = 1024;
  // Loads in flight per lane: device-memory reads, stores to host are posted.
  static constexpr int vectors_per_lane = 8;
  // SM budget (blocks) when the caller names none: one block, leaving the rest to the engine.
  static constexpr int default_blocks = 1;
  // Bulk-copy kernel (strategy::bulk), as for load.
  static constexpr int bulk_warps = 4;
  static constexpr int bulk_stages = 4;
  static constexpr int bulk_stage_bytes = 12 * 1024;
};

// The staged path (staged.cuh): copy engines between pinned host memory and a device staging ring,
// a relayout kernel between the ring and the engine's layout.
struct staged_tuning {
  // Slots of the staging ring: beside compute a relayout waits for free SMs (a persistent GEMM
  // kernel frees them only when it ends, ~1.5 ms for 8192^3 bf16), and the copy engine keeps
  // filling meanwhile (55 GB/s x 1.5 ms = 83 MiB), so 4 slots of 32 MiB (docs/gpu.md: 3 slots with
  // a 16-block relayout kept 60% of the link beside a GEMM; 4 slots, whole-GPU relayout: 95%).
  static constexpr int slots = 4;
  // Bytes of one slot (a chunk of the pipeline): large enough that each chunk's copies run at the
  // link rate (a probe reached 98% of the contiguous copy with 64 MiB), small enough that filling
  // and draining the pipeline (one chunk's relayout) stays under 1% of a 1 GiB copy.
  static constexpr std::size_t slot_bytes = std::size_t{32} << 20;
  // Relayout kernel: threads per block, vectors in flight per lane, blocks per SM. Beside a
  // persistent GEMM a relayout delays the GEMM by about its own duration whatever its SM count
  // (the GEMM's CTAs on the SMs it holds start late), so it takes the whole GPU, briefly (a 32 MiB
  // slot in ~20 us at HBM speed, by estimate). With 16 blocks the GEMM slowed 10%; now 0.4-1.6%.
  static constexpr int relayout_threads = 256;
  static constexpr int relayout_vectors_per_lane = 4;
  static constexpr int relayout_blocks_per_sm = 4;
  // With per-layer events: a layer group is the fewest layers whose blocks of one page reach this
  // many bytes (longer copy-engine runs), at most max_group_layers (the engine's overlap).
  static constexpr std::size_t min_group_run = std::size_t{256} << 10;
  static constexpr std::size_t max_group_layers = 4;
  // The mixed path: the share of the pairs (in 1/64) the SM kernel moves beside the copy engines.
  static constexpr std::size_t mixed_kernel_share_64 = 24;
};

}  // namespace kvtier::transfer
