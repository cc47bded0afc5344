#pragma once
// RoPE on load, on the device: moves (page, layer, kv) blocks to the engine's layout and rotates K
// on the way, in the same pass (no second read of HBM). It replaces the copy kernel (kernel path:
// the source is mapped pinned host memory) or the relayout kernel (staged path: the source is a
// slot of the staging ring) when a load asks for RoPE. V and K rows at position 0 are copied bit for
// bit. A warp takes one token row (layer, kv, token) of one pair; its lanes take vectors of the row:
// adjacent pairs rotate inside a vector, rotate-half pairs vector e of the first half with vector
// e + rot/2 of the second (the lanes of the second half's vectors then have nothing to do).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kvtier/transfer/detail/fast_divmod.hpp"
#include "kvtier/transfer/rope.hpp"
#include "kvtier/transfer/views.hpp"

namespace kvtier::transfer::detail {

inline constexpr std::size_t max_rope_pairs = 128;  // rotated dims <= 256

// What a load with RoPE needs on the device: the rotation, the pairs' positions (device memory).
struct rope_device_args {
  rope_spec rope;
  k_storage storage = k_storage::rotated;
  const std::int32_t* positions = nullptr;  // one per pair of the batch (device-readable)
};

template <class Src, class Dst>
struct rope_params {
  Src src;                        // (layer, kv, token, head, dim) source view (kernel path; unused when staged)
  Dst dst;                        // (layer, kv, token, head, dim) the engine's view, device-writable
  const std::byte* slot;          // staged: tiles (pair, layer in group, kv, token, head, dim); null: read src
  const page_pair* pairs;         // device pairs of the whole batch
  const std::int32_t* positions;  // per pair of the batch
  std::uint32_t first_pair, first_layer, page_tokens, units;
  std::uint32_t row_vecs;         // vectors of one token row (heads x head_dim)
  std::uint32_t rot_vecs;         // vectors of one head's rotated dims
  std::uint32_t half_vecs;        // rot_vecs / 2 (rotate-half)
  std::uint32_t head_bytes, heads;
  fast_divmod tokens, kv, layers, head_vecs;
  bool rotate_half, per_token;
  float inv_freq[max_rope_pairs];
};

template <class T>
__device__ __forceinline__ float rope_to_float(T v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(v);
  else if constexpr (std::is_same_v<T, __half>) return __half2float(v);
  else return v;
}
template <class T>
__device__ __forceinline__ T rope_from_float(float v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(v);
  else if constexpr (std::is_same_v<T, __half>) return __float2half_rn(v);
  else return v;
}
// (v0, v1) rotated by angle pos * f, as transfer::rotate_row computes it (no FMA contraction).
template <class T>
__device__ __forceinline__ void rope_pair(T& a, T& b, float pos, float f) {
  float s, c;
  sincosf(pos * f, &s, &c);
  const float v0 = rope_to_float(a), v1 = rope_to_float(b);
  a = rope_from_float<T>(__fsub_rn(__fmul_rn(v0, c), __fmul_rn(v1, s)));
  b = rope_from_float<T>(__fadd_rn(__fmul_rn(v0, s), __fmul_rn(v1, c)));
}

template <int Threads, class Vec, class T, class Src, class Dst>
__global__ void __launch_bounds__(Threads) rope_copy_kernel(const __grid_constant__ rope_params<Src, Dst> p) {
  constexpr std::uint32_t ve = sizeof(Vec) / sizeof(T), in_flight = 4;
  const std::uint32_t lane = threadIdx.x & 31u;
  const std::uint32_t warps = (gridDim.x * Threads) >> 5;
  for (std::uint32_t u = (blockIdx.x * Threads + threadIdx.x) >> 5; u < p.units; u += warps) {
    // Warp-uniform decode: unit -> (pair, layer, kv, token), the slot's packing order.
    std::uint32_t rest, lp, pair_rel;
    const std::uint32_t t = p.tokens.divmod(u, rest);
    const std::uint32_t k = p.kv.divmod(rest, lp);
    const std::uint32_t l_rel = p.layers.divmod(lp, pair_rel);
    const std::uint32_t pi = p.first_pair + pair_rel, l = p.first_layer + l_rel;
    const page_pair pg = p.pairs[pi];
    const long pos = k == 0 ? long(p.positions[pi]) + (p.per_token ? long(t) : 0) : 0;
    const float fpos = float(pos);
    const std::byte* staged =
        p.slot ? p.slot + ((std::size_t{pair_rel} * p.layers.divisor() + l_rel) * p.kv.divisor() + k) *
                              std::size_t{p.page_tokens} * p.heads * p.head_bytes +
                     std::size_t{t} * p.heads * p.head_bytes
               : nullptr;
    auto src_at = [&](std::uint32_t h, std::uint32_t e) -> const Vec* {
      const std::byte* b = staged ? staged + std::size_t{h} * p.head_bytes : p.src.page_row(l, k, pg.src, p.page_tokens, t, h);
      return reinterpret_cast<const Vec*>(b) + e;
    };
    auto dst_at = [&](std::uint32_t h, std::uint32_t e) -> Vec* {
      return reinterpret_cast<Vec*>(p.dst.page_row(l, k, pg.dst, p.page_tokens, t, h)) + e;
    };
    for (std::uint32_t base = 0; base < p.row_vecs; base += 32u * in_flight) {
      Vec a[in_flight], b[in_flight];
      std::uint32_t hs[in_flight], es[in_flight];
      std::uint8_t what[in_flight];  // 0: nothing, 1: copy, 2: rotate inside a, 3: rotate a with b
#pragma unroll
      for (std::uint32_t j = 0; j < in_flight; ++j) {
        const std::uint32_t v = base + 32u * j + lane;
        what[j] = 0;
        if (v >= p.row_vecs) continue;
        const std::uint32_t e = p.head_vecs.divmod(v, hs[j]);
        es[j] = e;
        if (pos == 0 || e >= p.rot_vecs) what[j] = 1;
        else if (!p.rotate_half) what[j] = 2;
        else if (e < p.half_vecs) what[j] = 3;
        if (what[j] != 0) a[j] = *src_at(hs[j], e);
        if (what[j] == 3) b[j] = *src_at(hs[j], e + p.half_vecs);
      }
#pragma unroll
      for (std::uint32_t j = 0; j < in_flight; ++j) {
        if (what[j] == 0) continue;
        T* ea = reinterpret_cast<T*>(&a[j]);
        T* eb = reinterpret_cast<T*>(&b[j]);
        if (what[j] == 2) {
          if constexpr (ve >= 2) {
#pragma unroll
            for (std::uint32_t m = 0; m < ve / 2; ++m)
              rope_pair(ea[2 * m], ea[2 * m + 1], fpos, p.inv_freq[es[j] * (ve / 2) + m]);
          }
        } else if (what[j] == 3) {
#pragma unroll
          for (std::uint32_t m = 0; m < ve; ++m) rope_pair(ea[m], eb[m], fpos, p.inv_freq[es[j] * ve + m]);
          *dst_at(hs[j], es[j] + p.half_vecs) = b[j];
        }
        *dst_at(hs[j], es[j]) = a[j];
      }
    }
  }
}

// Widest vector (bytes, <= align) that keeps a rotation pair inside one lane's work: rotate-half
// needs vectors dividing rot/2 elements, adjacent pairs vectors of whole pairs dividing rot.
inline std::size_t rope_vector_bytes(const rope_spec& r, std::size_t element_bytes, std::size_t align) noexcept {
  for (std::size_t vb = std::min<std::size_t>(align, 16); vb >= element_bytes; vb /= 2) {
    const std::size_t ve = vb / element_bytes, rot = r.rotated();
    if ((r.head_dim * element_bytes) % vb != 0) continue;
    if (r.convention == rope_convention::rotate_half ? (rot / 2) % ve == 0 : (ve % 2 == 0 && rot % ve == 0)) return vb;
  }
  return 0;
}

// Fills everything but the views, slot, pairs and decode of units; checks the spec fits the copy.
template <class Src, class Dst>
result<void> rope_prepare(rope_params<Src, Dst>& p, const rope_device_args& a, std::size_t heads, std::size_t head_dim,
                          std::size_t element_bytes, std::size_t vec_bytes) {
  const rope_spec& r = a.rope;
  if (r.head_dim != head_dim || r.rotated() % 2 != 0 || r.rotated() > head_dim || r.rotated() / 2 > max_rope_pairs ||
      !(r.theta > 0) || a.positions == nullptr || vec_bytes == 0)
    return make_error(errc::invalid_argument);
  const std::size_t ve = vec_bytes / element_bytes;
  p.positions = a.positions;
  p.row_vecs = static_cast<std::uint32_t>(heads * head_dim / ve);
  p.rot_vecs = static_cast<std::uint32_t>(r.rotated() / ve);
  p.half_vecs = p.rot_vecs / 2;
  p.head_bytes = static_cast<std::uint32_t>(head_dim * element_bytes);
  p.heads = static_cast<std::uint32_t>(heads);
  p.head_vecs = fast_divmod(static_cast<std::uint32_t>(head_dim / ve));
  p.rotate_half = r.convention == rope_convention::rotate_half;
  p.per_token = a.storage == k_storage::pre_rotation;
  const auto inv = r.inv_freq();  // the CPU path's frequencies, bit for bit
  std::fill(std::begin(p.inv_freq), std::end(p.inv_freq), 0.f);
  std::copy(inv.begin(), inv.end(), p.inv_freq);
  return {};
}

// Launches the kernel for p (units set) with dtype t and vector width vec_bytes.
template <int Threads, class Src, class Dst>
cudaError_t launch_rope(const rope_params<Src, Dst>& p, dtype t, std::size_t vec_bytes, int blocks, cudaStream_t s) {
  const std::uint32_t needed = (p.units + Threads / 32 - 1) / (Threads / 32);
  const int grid = static_cast<int>(std::max<std::uint32_t>(1, std::min<std::uint32_t>(static_cast<std::uint32_t>(blocks), needed)));
  auto go = [&]<class Vec, class T>() {
    rope_copy_kernel<Threads, Vec, T><<<grid, Threads, 0, s>>>(p);
    return cudaGetLastError();
  };
  auto by_vec = [&]<class T>() -> cudaError_t {
    switch (vec_bytes) {
      case 16: return go.template operator()<uint4, T>();
      case 8: return go.template operator()<uint2, T>();
      case 4: return go.template operator()<std::uint32_t, T>();
      default:
        if constexpr (sizeof(T) <= 2) return go.template operator()<std::uint16_t, T>();
        else return cudaErrorInvalidValue;
    }
  };
  switch (t) {
    case dtype::bf16: return by_vec.template operator()<__nv_bfloat16>();
    case dtype::fp16: return by_vec.template operator()<__half>();
    case dtype::fp32: return vec_bytes >= 4 ? by_vec.template operator()<float>() : cudaErrorInvalidValue;
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace kvtier::transfer::detail
