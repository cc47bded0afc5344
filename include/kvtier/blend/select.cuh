#pragma once
// CacheBlend's selection on the GPU: blend::deviation / blend::select_deviating (select.hpp) over
// device pools and device block tables. Same arguments, same numbers, same choice: one thread per
// position sums the squared differences in double in the CPU reference's order (rounded
// multiply-adds, never contracted), and the top k is a stable descending radix sort of the
// deviations (ties go to the earlier position), its first k positions sorted ascending.
//
// `sequence_kv::block_table` must point to device memory here (the pool's planes too).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cub/device/device_radix_sort.cuh>
#include <cstdint>
#include <vector>

#include "kvtier/blend/select.hpp"
#include "kvtier/codec/kv_page.hpp"
#include "kvtier/core/error.hpp"

namespace kvtier::blend::gpu {

namespace detail {
template <dtype T>
__device__ inline float load(const std::byte* p, std::size_t i) noexcept {
  if constexpr (T == dtype::fp32) return reinterpret_cast<const float*>(p)[i];
  else if constexpr (T == dtype::bf16) return kvtier::detail::bf16_bits_to_float(reinterpret_cast<const std::uint16_t*>(p)[i]);
  else return kvtier::detail::fp16_bits_to_float(reinterpret_cast<const std::uint16_t*>(p)[i]);
}

template <dtype T>
__global__ void deviation_kernel(transfer::layer_first_buffer fresh, const device_slot* fresh_table, transfer::layer_first_buffer loaded,
                                 const device_slot* loaded_table, std::size_t layer, std::size_t P, std::size_t first, std::size_t n,
                                 std::size_t k0, std::size_t k1, std::size_t row, double* out, std::uint32_t* index) {
  const std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const std::size_t pos = first + i;
  double d = 0;
  for (std::size_t k = k0; k < k1; ++k) {
    const std::byte* a = fresh.page_row(layer, k, std::size_t(fresh_table[pos / P].value()), P, pos % P, 0);
    const std::byte* b = loaded.page_row(layer, k, std::size_t(loaded_table[pos / P].value()), P, pos % P, 0);
    double s = 0;
    for (std::size_t j = 0; j < row; ++j) {
      const double x = __dsub_rn(double(load<T>(a, j)), double(load<T>(b, j)));
      s = __dadd_rn(s, __dmul_rn(x, x));
    }
    d = __dadd_rn(d, s);
  }
  out[i] = d;
  index[i] = std::uint32_t(i);
}

inline result<void> ok(cudaError_t e) {
  if (e == cudaSuccess) return {};
  (void)cudaGetLastError();
  return make_error(errc::io_error);
}

// Device scratch for one call, freed on every path.
struct scratch {
  void* p = nullptr;
  ~scratch() {
    if (p) (void)cudaFree(p);
  }
};
}  // namespace detail

// Squared L2 deviation (K and V, or one of them) of positions [first, last) on `layer`, into `out`
// (device, last - first doubles), queued on `stream`. invalid_argument as the CPU version;
// io_error when CUDA refuses the launch.
inline result<void> deviation(const sequence_kv& fresh, const sequence_kv& loaded, std::size_t layer, std::size_t first, std::size_t last,
                              dtype t, double* out, std::uint32_t* index, cudaStream_t stream, kv_part part = kv_part::both) {
  const auto& fe = fresh.pool.map.extents();
  const auto& le = loaded.pool.map.extents();
  if (first > last || fresh.page_tokens == 0 || fresh.page_tokens != loaded.page_tokens || fe.heads() != le.heads() ||
      fe.dim() != le.dim() || fe.kv() != le.kv() || (part != kv_part::both && fe.kv() < 2) ||
      fresh.block_table.size() * fresh.page_tokens < last || loaded.block_table.size() * loaded.page_tokens < last ||
      layer >= fe.layers() || layer >= le.layers() || size_of(t) != fresh.pool.element_bytes || size_of(t) != loaded.pool.element_bytes)
    return make_error(errc::invalid_argument);
  const std::size_t n = last - first;
  if (n == 0) return {};
  const std::size_t k0 = part == kv_part::v ? 1 : 0, k1 = part == kv_part::k ? 1 : fe.kv();
  const unsigned threads = 128, blocks = unsigned((n + threads - 1) / threads);
  kvtier::detail::with_dtype(t, [&](auto tc) {
    detail::deviation_kernel<decltype(tc)::value><<<blocks, threads, 0, stream>>>(
        fresh.pool, fresh.block_table.data(), loaded.pool, loaded.block_table.data(), layer, fresh.page_tokens, first, n, k0, k1,
        fe.heads() * fe.dim(), out, index);
  });
  return detail::ok(cudaGetLastError());
}

// The ceil(ratio × (last − first)) positions of [first, last) that deviate most, ascending (the CPU
// select_deviating's choice). Waits for `stream`.
inline result<std::vector<std::size_t>> select_deviating(const sequence_kv& fresh, const sequence_kv& loaded, std::size_t layer,
                                                         std::size_t first, std::size_t last, double ratio, dtype t, cudaStream_t stream,
                                                         kv_part part = kv_part::both) {
  if (!(ratio >= 0 && ratio <= 1) || first > last || last - first >= (std::size_t(1) << 31)) return make_error(errc::invalid_argument);
  const std::size_t n = last - first, k = kept_count(ratio, n);
  if (n == 0) {
    if (auto r = deviation(fresh, loaded, layer, first, last, t, nullptr, nullptr, stream, part); !r) return r.err();
    return std::vector<std::size_t>{};
  }
  // One allocation: cub's temporary storage (256-byte aligned), then deviations and indices and their sorted copies.
  std::size_t temp = 0;
  if (auto e = detail::ok(cub::DeviceRadixSort::SortPairsDescending(nullptr, temp, (const double*)nullptr, (double*)nullptr,
                                                                    (const std::uint32_t*)nullptr, (std::uint32_t*)nullptr, int(n), 0,
                                                                    64, stream));
      !e)
    return e.err();
  temp = (temp + 255) / 256 * 256;
  detail::scratch mem;
  if (cudaMalloc(&mem.p, temp + 2 * n * (sizeof(double) + sizeof(std::uint32_t))) != cudaSuccess) {
    (void)cudaGetLastError();
    return make_error(errc::capacity_exhausted);
  }
  void* tmp = mem.p;
  auto* d = reinterpret_cast<double*>(static_cast<std::byte*>(mem.p) + temp);
  double* d_sorted = d + n;
  auto* idx = reinterpret_cast<std::uint32_t*>(d_sorted + n);
  std::uint32_t* idx_sorted = idx + n;
  if (auto r = deviation(fresh, loaded, layer, first, last, t, d, idx, stream, part); !r) return r.err();
  if (auto e = detail::ok(cub::DeviceRadixSort::SortPairsDescending(tmp, temp, d, d_sorted, idx, idx_sorted, int(n), 0, 64, stream)); !e)
    return e.err();
  std::vector<std::uint32_t> top(k);
  if (k && !detail::ok(cudaMemcpyAsync(top.data(), idx_sorted, k * sizeof(std::uint32_t), cudaMemcpyDeviceToHost, stream)))
    return make_error(errc::io_error);
  if (!detail::ok(cudaStreamSynchronize(stream))) return make_error(errc::io_error);
  std::vector<std::size_t> out(top.begin(), top.end());
  std::sort(out.begin(), out.end());
  for (auto& i : out) i += first;
  return out;
}

}  // namespace kvtier::blend::gpu
