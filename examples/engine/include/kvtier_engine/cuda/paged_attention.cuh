#pragma once
// Paged attention for any head size and either storage type: the decode kernel (one query row per
// sequence, batched) and the general prefill path (fp32 mode, head sizes other than 128).
// Split-KV (flash-decoding): a block takes one (row, kv head, key split) and all the query heads
// of that kv head's group; four warps stride over the split's keys, each keeping an online softmax;
// the warps merge in shared memory, and the splits merge in a second kernel by their log-sum-exp.
#include <algorithm>
#include <cstdint>
#include <stdexcept>

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

template <class T, int DimsPerLane>
__global__ void __launch_bounds__(pa_warps * 32)
    paged_attention_kernel(attention_rows<T> a, paged_kv_layer<T> kv, int split_keys, float* part_o, float* part_lse) {
  constexpr int W = pa_warps, MG = pa_max_group, DL = DimsPerLane;
  const int row = blockIdx.x, h = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
  const int D = kv.head_dim, G = a.q_heads / kv.kv_heads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
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
      const int d = lane * DL + i;
      acc[g][i] = 0.f;
      q[g][i] = (g < G && d < D) ? to_float(a.q[(std::size_t(row) * a.q_heads + h * G + g) * D + d]) * scale_log2 : 0.f;
    }
  }
  for (int t = k_begin + warp; t < k_end; t += W) {
    const T* kr = kv.k_row(seq, t, h);
    const T* vr = kv.v_row(seq, t, h);
    float k[DL], v[DL];
#pragma unroll
    for (int i = 0; i < DL; ++i) {
      const int d = lane * DL + i;
      k[i] = d < D ? to_float(kr[d]) : 0.f;
      v[i] = d < D ? to_float(vr[d]) : 0.f;
    }
#pragma unroll
    for (int g = 0; g < MG; ++g) {
      if (g >= G) break;
      float s = 0.f;
#pragma unroll
      for (int i = 0; i < DL; ++i) s += q[g][i] * k[i];
#pragma unroll
      for (int o = 16; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
      const float mn = fmaxf(m[g], s), corr = exp2f(m[g] - mn), p = exp2f(s - mn);
      m[g] = mn;
      l[g] = l[g] * corr + p;
#pragma unroll
      for (int i = 0; i < DL; ++i) acc[g][i] = acc[g][i] * corr + p * v[i];
    }
  }
  // Merge the warps: (warp, group) softmax state, then the weighted sum of their accumulators.
  __shared__ float sm_m[W][MG], sm_l[W][MG];
  __shared__ float sm_acc[W][MG][32 * DL];
  if (lane == 0)
    for (int g = 0; g < MG; ++g) { sm_m[warp][g] = m[g]; sm_l[warp][g] = l[g]; }
#pragma unroll
  for (int g = 0; g < MG; ++g)
#pragma unroll
    for (int i = 0; i < DL; ++i) sm_acc[warp][g][lane * DL + i] = acc[g][i];
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

template <class T, int DL>
void launch_paged_attention(const attention_rows<T>& a, const paged_kv_layer<T>& kv, int splits, int split_keys,
                            float* part_o, float* part_lse, cudaStream_t s) {
  paged_attention_kernel<T, DL><<<dim3(a.rows, kv.kv_heads, splits), pa_warps * 32, 0, s>>>(a, kv, split_keys, part_o,
                                                                                             part_lse);
  check_launch("paged_attention");
  if (splits > 1) {
    combine_splits_kernel<T><<<dim3(a.rows, a.q_heads), 128, 0, s>>>(a, kv.head_dim, splits, part_o, part_lse);
    check_launch("paged_attention combine");
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
  if (kv.head_dim <= 32) detail::launch_paged_attention<T, 1>(a, kv, splits, split_keys, part_o, part_lse, s);
  else if (kv.head_dim <= 64) detail::launch_paged_attention<T, 2>(a, kv, splits, split_keys, part_o, part_lse, s);
  else if (kv.head_dim <= 128) detail::launch_paged_attention<T, 4>(a, kv, splits, split_keys, part_o, part_lse, s);
  else detail::launch_paged_attention<T, 8>(a, kv, splits, split_keys, part_o, part_lse, s);
}

}  // namespace kvtier_engine::cuda
