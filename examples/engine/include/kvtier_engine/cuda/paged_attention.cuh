#pragma once
// Paged attention for any head size and either storage type: the decode kernel (one query row per
// sequence, batched) and the general prefill path (fp32 mode, head sizes other than 128).
// Split-KV (flash-decoding): a block takes one (row, kv head, key split) and all the query heads
// of that kv head's group. Decode reads every key once and does little arithmetic per byte, so the
// kernel is built to keep many loads in flight: a key's head vector is read by a group of `lk`
// lanes, 16 bytes a lane (bf16 head_dim 128: 16 lanes, two keys per warp slot), and each warp
// takes tiles of kU slots (8 keys for bf16 head_dim 128), the next tile's loads issued before the
// current one is computed. Each lane group keeps its own online softmax over the keys it saw; the
// groups merge by shuffles, the four warps in shared memory, the splits in a second kernel by their
// log-sum-exp. Every merge runs in a fixed order, so a row's result depends only on its own query,
// keys and split boundaries, never on the other rows of the batch.
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <type_traits>

#include "kvtier_engine/cuda/common.cuh"
#include "kvtier_engine/cuda/paged_kv.cuh"

namespace kvtier_engine::cuda {

template <class T>
struct attention_rows {
  const T* q = nullptr;                   // (row, q_heads, head_dim), RoPE applied
  T* out = nullptr;                       // (row, q_heads, head_dim)
  int rows = 0;
  int q_heads = 0;
  const std::int32_t* row_seq = nullptr;  // row → sequence (block-table row); null: all rows sequence 0
  const std::int32_t* row_keys = nullptr; // row → keys it sees; null: causal prefill, causal_start + row + 1
  int causal_start = 0;                   // position of row 0 when row_keys is null
  int max_keys = 0;                       // the most keys any row sees
  float scale = 1.0f;                     // softmax scale, 1/sqrt(head_dim) for Llama
  // flash_prefill only: row → position (ascending) of rows anywhere in sequence 0, each attending to
  // keys [0, row_pos[row]]; max_keys = the last row's position + 1. Null: positions causal_start + row.
  const std::int32_t* row_pos = nullptr;
};

namespace detail {

inline constexpr int pa_warps = 4;
inline constexpr int pa_max_group = 8;  // query heads per kv head
inline constexpr int pa_slots = 4;      // key slots a warp loads per tile (lane groups × pa_slots keys)

// 2^x on the special-function unit, denormals flushed (2^-inf = 0 for masked scores).
__device__ __forceinline__ float pa_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// DL consecutive elements of T from p into f (zeros past `valid`); Vec: one or two 16-byte loads.
template <class T, int DL, bool Vec>
struct lane_chunk {
  static_assert(!Vec || std::is_same_v<T, float> || std::is_same_v<T, __nv_bfloat16>, "16-byte chunks of fp32 or bf16");
  static constexpr int words = Vec ? int(DL * sizeof(T) / 16) : 0;
  uint4 raw[Vec ? words : 1];
  T scalar[Vec ? 1 : DL];
  __device__ void load(const T* p, int valid) {
    if constexpr (Vec) {
      const uint4* src = reinterpret_cast<const uint4*>(p);
#pragma unroll
      for (int w = 0; w < words; ++w) raw[w] = valid > 0 ? __ldg(src + w) : make_uint4(0, 0, 0, 0);
    } else {
#pragma unroll
      for (int i = 0; i < DL; ++i) scalar[i] = i < valid ? p[i] : from_float<T>(0.f);
    }
  }
  __device__ float at(int i) const {  // i a constant after unrolling: a register, no local memory
    if constexpr (Vec) {
      constexpr int per_word = int(16 / sizeof(T));
      const uint4& r = raw[i / per_word];
      const int c = i % per_word;
      if constexpr (sizeof(T) == 4) {
        return __uint_as_float(c == 0 ? r.x : c == 1 ? r.y : c == 2 ? r.z : r.w);
      } else {
        const unsigned w = (c / 2) == 0 ? r.x : (c / 2) == 1 ? r.y : (c / 2) == 2 ? r.z : r.w;
        return __uint_as_float(c % 2 == 0 ? w << 16 : w & 0xffff0000u);  // bf16 → fp32: the high half
      }
    } else {
      return to_float(scalar[i]);
    }
  }
};

// Grid (row, kv head, split). lk lanes per key (a power of two, lk * DL >= head_dim), 32 / lk keys a
// warp slot; MG >= the group size G.
template <class T, int DL, int MG, bool Vec>
__global__ void __launch_bounds__(pa_warps * 32)
    paged_attention_kernel(attention_rows<T> a, paged_kv_layer<T> kv, int split_keys, int lk, float* part_o,
                           float* part_lse) {
  constexpr int W = pa_warps, U = pa_slots;
  const int row = blockIdx.x, h = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
  const int D = kv.head_dim, G = a.q_heads / kv.kv_heads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int sub = lane % lk, slot = lane / lk, per_slot = 32 / lk;  // lane's part of a key; its key within the slot
  const int d0 = sub * DL, valid = min(DL, D - d0);                  // this lane's dims [d0, d0 + valid)
  const int seq = a.row_seq != nullptr ? a.row_seq[row] : 0;
  const int keys = a.row_keys != nullptr ? a.row_keys[row] : a.causal_start + row + 1;
  const int k_begin = split * split_keys, k_end = min(keys, k_begin + split_keys);
  const float scale_log2 = a.scale * 1.4426950408889634f;

  float q[MG][DL], acc[MG][DL], m[MG], l[MG];
#pragma unroll
  for (int g = 0; g < MG; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.f;
#pragma unroll
    for (int i = 0; i < DL; ++i) {
      acc[g][i] = 0.f;
      q[g][i] = (g < G && i < valid) ? to_float(a.q[(std::size_t(row) * a.q_heads + h * G + g) * D + d0 + i]) * scale_log2 : 0.f;
    }
  }
  // Tile i of warp w: keys [k_begin + (i W + w) tile, + tile), slot u's key at u * per_slot + slot.
  const int tile = U * per_slot;
  lane_chunk<T, DL, Vec> kc[U], vc[U], kn[U], vn[U];
  auto load_tile = [&](int t0, lane_chunk<T, DL, Vec>(&k)[U], lane_chunk<T, DL, Vec>(&v)[U]) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int t = t0 + u * per_slot + slot;
      const bool in = t < k_end && valid > 0;
      const int tt = in ? t : k_begin;  // an address inside the split; its values are ignored
      k[u].load(kv.k_row(seq, tt, h) + d0, in ? valid : 0);
      v[u].load(kv.v_row(seq, tt, h) + d0, in ? valid : 0);
    }
  };
  int t0 = k_begin + warp * tile;
  if (t0 < k_end) load_tile(t0, kc, vc);
  for (; t0 < k_end; t0 += W * tile) {
    const int tn = t0 + W * tile;
    if (tn < k_end) load_tile(tn, kn, vn);  // in flight while this tile is computed
    float s[MG][U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float k[DL];
#pragma unroll
      for (int i = 0; i < DL; ++i) k[i] = kc[u].at(i);
#pragma unroll
      for (int g = 0; g < MG; ++g) {
        float x = 0.f;
#pragma unroll
        for (int i = 0; i < DL; ++i) x += q[g][i] * k[i];
        s[g][u] = x;
      }
    }
    for (int o = lk / 2; o > 0; o /= 2)  // sum over the key's lanes (xor stays inside the lane group)
#pragma unroll
      for (int g = 0; g < MG; ++g)
#pragma unroll
        for (int u = 0; u < U; ++u) s[g][u] += __shfl_xor_sync(0xffffffffu, s[g][u], o);
    // Online softmax per group: rescale by the new maximum (skipped once it settles), s becomes the weights p.
    bool in_tile[U];
#pragma unroll
    for (int u = 0; u < U; ++u) in_tile[u] = t0 + u * per_slot + slot < k_end;
#pragma unroll
    for (int g = 0; g < MG; ++g) {
      if (g >= G) break;
      float mt = -INFINITY;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (!in_tile[u]) s[g][u] = -INFINITY;
        mt = fmaxf(mt, s[g][u]);
      }
      if (mt == -INFINITY) {  // none of this lane group's keys in the tile
#pragma unroll
        for (int u = 0; u < U; ++u) s[g][u] = 0.f;
        continue;
      }
      if (mt > m[g]) {
        const float corr = pa_exp2(m[g] - mt);
        m[g] = mt;
        l[g] *= corr;
#pragma unroll
        for (int i = 0; i < DL; ++i) acc[g][i] *= corr;
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        s[g][u] = pa_exp2(s[g][u] - m[g]);
        l[g] += s[g][u];
      }
    }
    // O += P V: each value converted once for every group.
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float v[DL];
#pragma unroll
      for (int i = 0; i < DL; ++i) v[i] = vc[u].at(i);
#pragma unroll
      for (int g = 0; g < MG; ++g) {
        if (g >= G) break;
#pragma unroll
        for (int i = 0; i < DL; ++i) acc[g][i] += s[g][u] * v[i];
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) kc[u] = kn[u], vc[u] = vn[u];
  }
  // Merge the lane groups of the warp (butterfly over the slot bits: every lane ends with the warp's state).
  for (int o = lk; o < 32; o *= 2)
#pragma unroll
    for (int g = 0; g < MG; ++g) {
      const float mo = __shfl_xor_sync(0xffffffffu, m[g], o), lo = __shfl_xor_sync(0xffffffffu, l[g], o);
      const float M = fmaxf(m[g], mo);
      const float f = M == -INFINITY ? 0.f : exp2f(m[g] - M), fo = M == -INFINITY ? 0.f : exp2f(mo - M);
      l[g] = l[g] * f + lo * fo;
#pragma unroll
      for (int i = 0; i < DL; ++i) acc[g][i] = acc[g][i] * f + __shfl_xor_sync(0xffffffffu, acc[g][i], o) * fo;
      m[g] = M;
    }
  // Merge the warps: (warp, group) softmax state, then the weighted sum of their accumulators.
  __shared__ float sm_m[W][MG], sm_l[W][MG];
  __shared__ float sm_acc[W][MG][32 * DL];
  if (lane == 0)
    for (int g = 0; g < MG; ++g) { sm_m[warp][g] = m[g]; sm_l[warp][g] = l[g]; }
  if (slot == 0)
#pragma unroll
    for (int g = 0; g < MG; ++g)
#pragma unroll
      for (int i = 0; i < DL; ++i) sm_acc[warp][g][d0 + i] = acc[g][i];
  __syncthreads();
  for (int e = threadIdx.x; e < G * D; e += W * 32) {
    const int g = e / D, d = e % D;
    float M = -INFINITY;
    for (int w = 0; w < W; ++w) M = fmaxf(M, sm_m[w][g]);
    float L = 0.f, O = 0.f;
    if (M != -INFINITY)
      for (int w = 0; w < W; ++w) {
        const float f = exp2f(sm_m[w][g] - M);
        L += sm_l[w][g] * f;
        O += sm_acc[w][g][d] * f;
      }
    const int head = h * G + g;
    if (splits == 1) {
      a.out[(std::size_t(row) * a.q_heads + head) * D + d] = from_float<T>(L > 0.f ? O / L : 0.f);
    } else {
      const std::size_t idx = (std::size_t(split) * a.rows + row) * a.q_heads + head;
      part_o[idx * D + d] = L > 0.f ? O / L : 0.f;
      if (d == 0) part_lse[idx] = L > 0.f ? M + log2f(L) : -INFINITY;  // log2 units
    }
  }
}

template <class T>
__global__ void combine_splits_kernel(attention_rows<T> a, int head_dim, int splits, const float* part_o,
                                      const float* part_lse) {
  const int row = blockIdx.x, head = blockIdx.y;
  float M = -INFINITY;
  for (int s = 0; s < splits; ++s) M = fmaxf(M, part_lse[(std::size_t(s) * a.rows + row) * a.q_heads + head]);
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float num = 0.f, den = 0.f;
    for (int s = 0; s < splits; ++s) {
      const std::size_t idx = (std::size_t(s) * a.rows + row) * a.q_heads + head;
      const float w = M == -INFINITY ? 0.f : exp2f(part_lse[idx] - M);
      num += w * part_o[idx * head_dim + d];
      den += w;
    }
    a.out[(std::size_t(row) * a.q_heads + head) * head_dim + d] = from_float<T>(den > 0.f ? num / den : 0.f);
  }
}

template <class T, int DL, int MG, bool Vec>
void launch_paged_attention(const attention_rows<T>& a, const paged_kv_layer<T>& kv, int splits, int split_keys, int lk,
                            float* part_o, float* part_lse, cudaStream_t s) {
  paged_attention_kernel<T, DL, MG, Vec><<<dim3(a.rows, kv.kv_heads, splits), pa_warps * 32, 0, s>>>(a, kv, split_keys, lk,
                                                                                                     part_o, part_lse);
  check_launch("paged_attention");
  if (splits > 1) {
    combine_splits_kernel<T><<<dim3(a.rows, a.q_heads), 128, 0, s>>>(a, kv.head_dim, splits, part_o, part_lse);
    check_launch("paged_attention combine");
  }
}

// 16-byte lane chunks when the head is a whole number of them (and at most 32 of them): lk lanes a key.
// Otherwise eight scalar elements a lane, 32 lanes a key (head_dim <= 256).
template <class T, int MG>
void dispatch_paged_attention(const attention_rows<T>& a, const paged_kv_layer<T>& kv, int splits, int split_keys,
                              float* part_o, float* part_lse, cudaStream_t s) {
  constexpr int vec = int(16 / sizeof(T));
  const int D = kv.head_dim;
  if (D % vec == 0 && D / vec <= 32) {
    int lk = 1;
    while (lk < D / vec) lk *= 2;
    launch_paged_attention<T, vec, MG, true>(a, kv, splits, split_keys, lk, part_o, part_lse, s);
  } else {
    launch_paged_attention<T, 8, MG, false>(a, kv, splits, split_keys, 32, part_o, part_lse, s);
  }
}

}  // namespace detail

// Workspace floats the split-KV path needs for `rows` rows (part_o then part_lse).
inline std::size_t paged_attention_workspace(int rows, int q_heads, int head_dim, int max_splits) {
  return std::size_t(max_splits) * rows * q_heads * (head_dim + 1);
}

// Splits so that rows × kv heads × splits fills the GPU about twice, each split at least 256 keys.
inline int paged_attention_splits(int rows, int kv_heads, int max_keys, int sms, int max_splits) {
  const int blocks = rows * kv_heads;
  int splits = (2 * sms + blocks - 1) / blocks;
  splits = std::min({splits, max_splits, (max_keys + 255) / 256});
  return std::max(splits, 1);
}

// Attention of every row over its sequence's paged keys. head_dim <= 256, q_heads / kv_heads <= 8.
// workspace: paged_attention_workspace(rows, q_heads, head_dim, splits) floats, or null when splits == 1.
// split_keys > 0 fixes each split's keys in absolute positions (split z: [z split_keys, (z + 1)
// split_keys)), so a row's partition does not depend on the batch; splits must cover max_keys.
template <class T>
void paged_attention(const attention_rows<T>& a, const paged_kv_layer<T>& kv, int splits, float* workspace,
                     cudaStream_t s, int fixed_split_keys = 0) {
  if (a.rows == 0) return;
  if (kv.head_dim > 256 || a.q_heads % kv.kv_heads != 0 || a.q_heads / kv.kv_heads > detail::pa_max_group)
    throw std::invalid_argument("kvtier_engine: paged_attention supports head_dim <= 256 and groups of <= 8");
  const int split_keys = fixed_split_keys > 0 ? fixed_split_keys : splits > 1 ? (a.max_keys + splits - 1) / splits : a.max_keys;
  float* part_o = workspace;
  float* part_lse = workspace == nullptr ? nullptr : workspace + std::size_t(splits) * a.rows * a.q_heads * kv.head_dim;
  const int G = a.q_heads / kv.kv_heads;
  if (G <= 2) detail::dispatch_paged_attention<T, 2>(a, kv, splits, split_keys, part_o, part_lse, s);
  else if (G <= 4) detail::dispatch_paged_attention<T, 4>(a, kv, splits, split_keys, part_o, part_lse, s);
  else detail::dispatch_paged_attention<T, 8>(a, kv, splits, split_keys, part_o, part_lse, s);
}

}  // namespace kvtier_engine::cuda
