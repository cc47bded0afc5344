#pragma once
// CacheBlend's partial prefill on the CUDA backend (the GPU counterpart of cpu/blend_prefill.hpp,
// one-shot selection by K/V deviation). A prompt of n tokens is laid out as
//   [0, start)        a true cached prefix (the first chunk: its own KV is full prefill's), never computed;
//   [start, placed)   reused chunks whose KV was placed in the pool (their own KV, RoPE moved on load);
//   [placed, n)       new text (the question), always computed.
// Layers below `select_layer`: every row of [start, n) is computed (the rows need their hidden
// states). On `select_layer`: the placed K/V of that layer is kept aside (a device snapshot, taken in
// before_layer), every row's Q/K/V is computed and written, then kvtier::blend::gpu::select_deviating
// ranks the placed tokens by the squared L2 deviation of their fresh K and V from the placed ones and
// keeps the top `keep` share (ceil, ties to the earlier position: select_deviating's choice, with the
// scratch kept between runs so that no cudaMalloc/cudaFree stalls the host); from there on only the kept rows and
// the new text are computed (cuda_backend::prefill_rows drops the others: their K/V on later layers
// stays the placed one). On the last layer the placed rows stop once their K/V is written.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include <cub/device/device_radix_sort.cuh>

#include "kvtier/blend/select.cuh"
#include "kvtier_engine/cuda/cuda_backend.cuh"
#include "kvtier_engine/row_filter_rules.hpp"

namespace kvtier_engine::cuda {

struct blend_options {
  std::size_t select_layer = 1;  // the layer whose K/V deviation is measured (layer 0's does not depend on context)
  double keep = 0.15;            // r: share of the placed tokens computed after select_layer
  kvtier::blend::kv_part part = kvtier::blend::kv_part::both;
  bool last_layer_drops = true;  // placed rows skip the last layer's attention and FFN
};

struct blend_report {
  std::size_t computed = 0;             // rows on the layers below select_layer ([start, n))
  std::size_t placed = 0;               // placed tokens ([start, placed))
  std::vector<std::size_t> kept;        // placed positions recomputed after select_layer, ascending
  double select_ms = 0;                 // wall time of the selection (deviation, top k, new rows), the GPU idle meanwhile
};

namespace detail {
// The placed K and V of one layer, pages [p0, p0 + pages) of the sequence, into the snapshot's slots
// 0.. (one block per (page, kv plane); 16-byte words when the slot allows, else bytes).
__global__ inline void snapshot_pages_kernel(const std::byte* const* planes, const kvtier::device_slot* table, std::size_t p0,
                                             std::size_t slot_bytes, std::byte* k_out, std::byte* v_out) {
  const std::size_t i = blockIdx.x, k = blockIdx.y;
  const std::byte* src = planes[k] + std::size_t(table[p0 + i].value()) * slot_bytes;
  std::byte* dst = (k == 0 ? k_out : v_out) + i * slot_bytes;
  if (slot_bytes % 16 == 0 && reinterpret_cast<std::uintptr_t>(src) % 16 == 0 && reinterpret_cast<std::uintptr_t>(dst) % 16 == 0) {
    for (std::size_t w = threadIdx.x; w < slot_bytes / 16; w += blockDim.x)
      reinterpret_cast<uint4*>(dst)[w] = reinterpret_cast<const uint4*>(src)[w];
  } else {
    for (std::size_t b = threadIdx.x; b < slot_bytes; b += blockDim.x) dst[b] = src[b];
  }
}
}  // namespace detail

// Holds the device tables and the snapshot for one backend and pool; run() as often as wanted.
class blend_prefiller {
 public:
  blend_prefiller(cuda_backend& b, const kv_pool& pool) : b_(b), pool_(pool) {
    const model_config& m = b.config();
    std::vector<std::byte*> planes(2 * m.layers);
    for (std::size_t l = 0; l < m.layers; ++l)
      for (std::size_t k = 0; k < 2; ++k) planes[2 * l + k] = pool.view.planes.plane(l, k);
    planes_ = device_buffer<std::byte*>(planes.size());
    planes_.upload(planes);
    // kvtier::blend's view of the pool: the same planes through a device-readable plane table.
    fresh_view_ = pool.view;
    fresh_view_.planes = kvtier::transfer::plane_table{nullptr, planes_.data(), 2, 0, 0};
  }

  // Partial prefill of tokens[start, n) as above; the last token's logits. wait_layer(l) (may be
  // empty) is called before layer l touches the pool, on the backend's stream (e.g. to wait for the
  // placement of layer l). invalid_argument for a bad layout or plan; the backend's errors as they come.
  kvtier::result<blend_report> run(std::span<const kvtier::token_id> tokens, std::size_t start, std::size_t placed,
                                   std::span<const kvtier::device_slot> block_table, const blend_options& o,
                                   std::span<float> logits, const layer_hook& wait_layer = {}) {
    using clk = std::chrono::steady_clock;
    const model_config& m = b_.config();
    const std::size_t n = tokens.size(), P = pool_.page_tokens;
    if (start > placed || placed >= n || o.select_layer >= m.layers || !(o.keep >= 0 && o.keep <= 1) ||
        block_table.size() < (n + P - 1) / P)
      return kvtier::make_error(kvtier::errc::invalid_argument);
    const kvtier::dtype t = kv_dtype(b_.mode());
    const std::size_t elem = kvtier::size_of(t), slot_bytes = P * m.kv_dim() * elem;
    // The sequence's table on the device; the snapshot's: page p of [p0, p1) → snapshot slot p − p0.
    const std::size_t pages = (n + P - 1) / P, p0 = start / P, p1 = (placed + P - 1) / P;
    std::vector<kvtier::device_slot> snap_table(p1, kvtier::device_slot(0u));
    for (std::size_t p = p0; p < p1; ++p) snap_table[p] = kvtier::device_slot(std::uint32_t(p - p0));
    if (table_.size() < pages) table_ = device_buffer<kvtier::device_slot>(pages);
    table_.upload(block_table.data(), pages);
    if (snap_table_.size() < std::max<std::size_t>(p1, 1)) snap_table_ = device_buffer<kvtier::device_slot>(std::max<std::size_t>(p1, 1));
    if (p1 > 0) snap_table_.upload(snap_table.data(), p1);
    if (snap_.size() < 2 * (p1 - p0) * slot_bytes) snap_ = device_buffer<std::byte>(2 * (p1 - p0) * slot_bytes);
    // The snapshot as a pool of the model's layers whose every layer is the one layer kept.
    kvtier::transfer::layer_first_buffer snap_view = kvtier::transfer::layer_first_view(snap_.data(), m.kv_shape(t), (p1 - p0) * P);
    snap_view.planes.layer_stride = 0;
    const kvtier::blend::sequence_kv fresh{fresh_view_, std::span<const kvtier::device_slot>(table_.data(), pages), P};
    const kvtier::blend::sequence_kv loaded{snap_view, std::span<const kvtier::device_slot>(snap_table_.data(), p1), P};

    blend_report rep;
    rep.computed = n - start;
    rep.placed = placed - start;
    std::vector<decode_entry> rows;
    rows.reserve(n - start);
    for (std::size_t p = start; p < n; ++p) rows.push_back({tokens[p], p, block_table});
    cudaStream_t s = b_.stream();
    kvtier::result<void> failed{};
    const auto before = [&](std::size_t l) {
      if (wait_layer) wait_layer(l);
      if (l != o.select_layer || rep.placed == 0) return;
      detail::snapshot_pages_kernel<<<dim3(unsigned(p1 - p0), 2), 256, 0, s>>>(planes_.data() + 2 * l, table_.data(), p0, slot_bytes,
                                                                                snap_.data(), snap_.data() + (p1 - p0) * slot_bytes);
      if (cudaGetLastError() != cudaSuccess) failed = kvtier::make_error(kvtier::errc::io_error);
    };
    const auto after = [&](std::size_t l, std::vector<std::size_t>& active) {
      if (!failed) return;
      if (l == o.select_layer && rep.placed > 0) {
        check(cudaStreamSynchronize(s), "blend: layers before the selection");  // the selection's time alone
        const auto t0 = clk::now();
        auto kept = select(fresh, loaded, l, start, placed, o, t, s);
        if (!kept) {
          failed = kept.err();
          return;
        }
        rep.kept = std::move(*kept);
        active = kvtier_engine::detail::blend_rows_after_selection(rep.kept, start, placed, n);
        rep.select_ms = std::chrono::duration<double, std::milli>(clk::now() - t0).count();
      }
      if (o.last_layer_drops && l + 1 == m.layers && placed > start)  // placed rows: K/V written, nothing more
        kvtier_engine::detail::keep_new_text_only(active, start, placed);
    };
    if (auto r = b_.prefill_rows(rows, logits, before, after); !r) return r.err();
    if (!failed) return failed.err();
    return rep;
  }

 private:
  // kvtier::blend::gpu::select_deviating's choice (deviation, stable descending radix sort, the first
  // k ascending) over buffers kept between runs. Waits for the stream.
  kvtier::result<std::vector<std::size_t>> select(const kvtier::blend::sequence_kv& fresh, const kvtier::blend::sequence_kv& loaded,
                                                  std::size_t layer, std::size_t first, std::size_t last, const blend_options& o,
                                                  kvtier::dtype t, cudaStream_t s) {
    const std::size_t cnt = last - first, k = kvtier::blend::kept_count(o.keep, cnt);
    if (cnt >= (std::size_t(1) << 31)) return kvtier::make_error(kvtier::errc::invalid_argument);
    if (dev_.size() < 2 * cnt) {
      dev_ = device_buffer<double>(2 * cnt);
      idx_ = device_buffer<std::uint32_t>(2 * cnt);
      std::size_t bytes = 0;
      check(cub::DeviceRadixSort::SortPairsDescending(nullptr, bytes, dev_.data(), dev_.data() + cnt, idx_.data(),
                                                      idx_.data() + cnt, int(cnt), 0, 64, s), "cub sort size");
      temp_ = device_buffer<std::byte>(std::max<std::size_t>(bytes, 1));
    }
    if (auto r = kvtier::blend::gpu::deviation(fresh, loaded, layer, first, last, t, dev_.data(), idx_.data(), s, o.part); !r)
      return r.err();
    std::size_t bytes = temp_.size();
    check(cub::DeviceRadixSort::SortPairsDescending(temp_.data(), bytes, dev_.data(), dev_.data() + cnt, idx_.data(),
                                                    idx_.data() + cnt, int(cnt), 0, 64, s), "cub sort");
    top_.resize(k);
    if (k > 0)
      check(cudaMemcpyAsync(top_.data(), idx_.data() + cnt, k * sizeof(std::uint32_t), cudaMemcpyDeviceToHost, s), "top k D2H");
    check(cudaStreamSynchronize(s), "selection");
    std::vector<std::size_t> out(top_.begin(), top_.end());
    std::sort(out.begin(), out.end());
    for (auto& i : out) i += first;
    return out;
  }

  cuda_backend& b_;
  kv_pool pool_;
  device_buffer<std::byte*> planes_;  // (layer, kv) → plane, device-readable
  kvtier::transfer::layer_first_buffer fresh_view_;
  device_buffer<kvtier::device_slot> table_, snap_table_;
  device_buffer<std::byte> snap_, temp_;
  device_buffer<double> dev_;          // deviations, then sorted
  device_buffer<std::uint32_t> idx_;   // positions - first, then sorted
  std::vector<std::uint32_t> top_;
};

}  // namespace kvtier_engine::cuda
