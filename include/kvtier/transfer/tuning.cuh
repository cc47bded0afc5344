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
};

struct backup_tuning {
  // Threads per block, as for load.
  static constexpr int threads = 1024;
  // Loads in flight per lane: device-memory reads, stores to host are posted.
  static constexpr int vectors_per_lane = 8;
  // SM budget (blocks) when the caller names none: one block, leaving the rest to the engine.
  static constexpr int default_blocks = 1;
};

}  // namespace kvtier::transfer
