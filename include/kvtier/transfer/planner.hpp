#pragma once
// The per-batch choice between the GPU copy paths: the SM kernel (threads read or write mapped host
// memory), the staged path (copy engines move large runs between pinned host memory and a device
// staging ring, a relayout kernel moves them to or from the engine's layout), or a mix of both
// (pages split between them, run concurrently). Host-only: no CUDA header, so it is testable anywhere.
//
// Why each input matters (H200, PCIe Gen5 x16; docs/gpu.md has the measurements):
//  - compute running: the kernel's blocks hold SMs for the whole copy and slow a concurrent GEMM by
//    ~6-27%; the staged path's relayout kernels are short and its bytes cross PCIe on the copy
//    engines, so beside compute it is the gentle path;
//  - run length: a copy engine pays a fixed cost per run (descriptor, a few microseconds), so runs
//    under ~64 KiB (1-token pages moved layer by layer) cross PCIe far below the link rate, while the
//    kernel reaches ~92% at any run length;
//  - batch size: a small batch is over before a staging pipeline fills; the kernel starts at once;
//  - layer by layer: an engine waiting per layer needs one event per layer (group), which cuts the
//    staged runs into per-layer-group pieces (shorter runs).
#include <array>
#include <cstddef>
#include <cstdint>

namespace kvtier::transfer {

// Whether compute runs beside the copy. `unknown` is planned as `busy`: in a serving engine a copy
// almost always overlaps a forward pass.
enum class compute_hint : unsigned char { unknown, idle, busy };

// The path a batch took.
enum class copy_path : unsigned char { kernel, staged, mixed };
inline constexpr std::size_t copy_path_count = 3;

inline constexpr const char* name(copy_path p) noexcept {
  return p == copy_path::kernel ? "kernel" : p == copy_path::staged ? "staged" : "mixed";
}

// What the planner knows about one batch.
struct batch_facts {
  std::size_t bytes = 0;        // bytes the batch moves
  std::size_t dma_run = 0;      // bytes of one copy-engine run on the staged path (after merging)
  bool per_layer = false;       // the caller wants an event per layer
  bool backup = false;          // device -> host (the copy engines pay more per short D2H run)
  bool staged_possible = true;  // the staged path supports these views (page_first host, block runs)
  compute_hint compute = compute_hint::unknown;
};

// Thresholds of the planner, one commented field each (defaults from the H200 run of docs/gpu.md).
struct planner_tuning {
  // Batches below this many bytes take the kernel: the staging pipeline would not fill.
  std::size_t small_batch_bytes = std::size_t{4} << 20;
  // Compute idle: copy-engine runs below this take the kernel, per-run cost dominates the copy
  // engines (1-token pages layer by layer, 16 KiB runs: staged load 48% of the link, kernel 89-91%).
  std::size_t min_dma_run = std::size_t{64} << 10;
  // Compute busy: the same floor, lower. Beside a GEMM, 16 KiB runs still give the staged path
  // the kernel's rate at a fifth of its harm (load 45% with the GEMM slowed 1.9%; kernel 48%, 9.9%).
  std::size_t min_dma_run_busy = std::size_t{16} << 10;
  // Compute idle, backup of whole pages: runs below this go partly through the kernel (mixed;
  // scattered 1-token pages: mixed 93%, staged 85%). Loads stay staged (97-99% at every run length).
  std::size_t backup_mixed_below_run = std::size_t{256} << 10;
  // Compute idle, backup layer by layer: runs below this take the kernel (64-256 KiB runs: staged
  // 87-93%, kernel 94%).
  std::size_t backup_layered_kernel_below_run = std::size_t{512} << 10;
  // SM budget of the kernel when the planner picks it with compute idle and the caller named none
  // (1-token backup layer by layer: 1 block 61%, 4 blocks 94%).
  int idle_kernel_blocks = 4;
};

inline copy_path plan(const batch_facts& f, const planner_tuning& t = {}) noexcept {
  if (!f.staged_possible || f.bytes < t.small_batch_bytes) return copy_path::kernel;
  if (f.compute != compute_hint::idle) return f.dma_run < t.min_dma_run_busy ? copy_path::kernel : copy_path::staged;
  if (f.dma_run < t.min_dma_run) return copy_path::kernel;
  if (!f.backup) return copy_path::staged;
  if (f.per_layer) return f.dma_run < t.backup_layered_kernel_below_run ? copy_path::kernel : copy_path::staged;
  return f.dma_run < t.backup_mixed_below_run ? copy_path::mixed : copy_path::staged;
}

// Per-path counters of a copier: how many batches and bytes each path took, and the last choice.
struct copy_stats {
  std::array<std::uint64_t, copy_path_count> batches{};
  std::array<std::uint64_t, copy_path_count> bytes{};
  std::uint64_t planned = 0;  // batches whose path the planner chose (the rest were forced)
  copy_path last = copy_path::kernel;

  void count(copy_path p, std::size_t n, bool by_planner) noexcept {
    batches[static_cast<std::size_t>(p)] += 1;
    bytes[static_cast<std::size_t>(p)] += n;
    planned += by_planner ? 1 : 0;
    last = p;
  }
  std::uint64_t of(copy_path p) const noexcept { return batches[static_cast<std::size_t>(p)]; }
};

}  // namespace kvtier::transfer
