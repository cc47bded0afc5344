#pragma once
// Tuning of the copy kernels: one struct per direction, one commented field each (CUB's policy style).
// The bytes in flight per block are threads * vectors_per_lane * 16: reads of mapped host memory
// cross PCIe (~1-2 us under load), so a block must keep far more than the bandwidth-latency product
// (55 GB/s x 2 us = 110 KB) outstanding over the blocks of the SM budget.
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

}  // namespace kvtier::transfer
