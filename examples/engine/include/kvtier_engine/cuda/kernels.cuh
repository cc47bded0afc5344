#pragma once
// The CUDA backend's small kernels: token embedding, RMSNorm, RoPE fused with the write of K and V
// into kvtier's paged pool, SwiGLU, and sampling (greedy; temperature + top-p with a given coin).
// Residual adds are fused into the output projections (cuBLAS with beta = 1 on the fp32 residual).
// Storage type T is bf16 or fp32; arithmetic is fp32 everywhere.
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <cstdint>
#include <type_traits>

#include "kvtier_engine/cuda/common.cuh"
#include "kvtier_engine/cuda/paged_kv.cuh"
#include "kvtier_engine/model_config.hpp"

namespace kvtier_engine::cuda {

namespace detail {

template <class T>
__global__ void embedding_kernel(const std::int32_t* tokens, const T* table, float* x, int dim) {
  // table (vocab, dim) → x (row, dim)
  const std::size_t row = blockIdx.x;
  const T* src = table + std::size_t(tokens[row]) * dim;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) x[row * dim + i] = to_float(src[i]);
}

template <class T, int Threads>
__global__ void __launch_bounds__(Threads) rmsnorm_kernel(const float* x, const float* w, T* out, int dim, float eps) {
  // x (row, dim) fp32 → out (row, dim) = w * x / sqrt(mean(x^2) + eps)
  using reduce = cub::BlockReduce<float, Threads>;
  __shared__ typename reduce::TempStorage tmp;
  __shared__ float scale;
  const float* xr = x + std::size_t(blockIdx.x) * dim;
  float ss = 0.f;
  for (int i = threadIdx.x; i < dim; i += Threads) ss += xr[i] * xr[i];
  ss = reduce(tmp).Sum(ss);
  if (threadIdx.x == 0) scale = 1.0f / sqrtf(ss / float(dim) + eps);
  __syncthreads();
  T* o = out + std::size_t(blockIdx.x) * dim;
  for (int i = threadIdx.x; i < dim; i += Threads) o[i] = from_float<T>(w[i] * (xr[i] * scale));
}

// Rotates one (a, b) pair of head element indices by pos * theta^(-2j/D).
__device__ inline void rope_pair(int j, int head_dim, int pos, float theta, float& a, float& b) {
  const float freq = 1.0f / powf(theta, float(2 * j) / float(head_dim));
  const float angle = float(pos) * freq;
  const float c = cosf(angle), s = sinf(angle);
  const float a2 = a * c - b * s, b2 = a * s + b * c;
  a = a2;
  b = b2;
}

template <class T>
__global__ void rope_store_kernel(const T* qkv, T* q_out, paged_kv_layer<T> kv, const std::int32_t* positions,
                                  const std::int32_t* row_seq, int q_heads, float theta, rope_style style) {
  // qkv (row, q_heads + 2 kv_heads, D) → q_out (row, q_heads, D) rotated; K rotated and V into the pool.
  const int row = blockIdx.x, D = kv.head_dim, H = kv.kv_heads, half = D / 2;
  const int pos = positions[row], seq = row_seq != nullptr ? row_seq[row] : 0;
  const T* src = qkv + std::size_t(row) * (q_heads + 2 * H) * D;
  const int pairs = (q_heads + H) * half;
  for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
    const int head = p / half, j = p % half;
    const int ia = style == rope_style::adjacent_pairs ? 2 * j : j;
    const int ib = style == rope_style::adjacent_pairs ? 2 * j + 1 : j + half;
    float a = to_float(src[head * D + ia]), b = to_float(src[head * D + ib]);
    rope_pair(j, D, pos, theta, a, b);
    T* dst = head < q_heads ? q_out + (std::size_t(row) * q_heads + head) * D : kv.k_row(seq, pos, head - q_heads);
    dst[ia] = from_float<T>(a);
    dst[ib] = from_float<T>(b);
  }
  for (int i = threadIdx.x; i < H * D; i += blockDim.x)
    kv.v_row(seq, pos, i / D)[i % D] = src[(q_heads + H) * D + i];
}

template <class T>
__global__ void swiglu_kernel(const T* gate_up, T* out, int hidden) {
  // gate_up (row, 2, hidden) → out (row, hidden) = silu(gate) * up; block row blockIdx.y, two columns a thread
  const std::size_t row = blockIdx.y;
  const int c = 2 * (blockIdx.x * blockDim.x + threadIdx.x);
  if (c >= hidden) return;
  const T* g = gate_up + row * 2 * hidden;
  const T* u = g + hidden;
  T* o = out + row * hidden;
  auto silu_mul = [](float gv, float uv) { return gv / (1.0f + expf(-gv)) * uv; };
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    if (c + 1 < hidden && hidden % 2 == 0) {  // 4-byte pairs: rows start on even elements
      const float2 gv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(g + c));
      const float2 uv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(u + c));
      *reinterpret_cast<__nv_bfloat162*>(o + c) = __floats2bfloat162_rn(silu_mul(gv.x, uv.x), silu_mul(gv.y, uv.y));
      return;
    }
  }
  for (int i = c; i < min(c + 2, hidden); ++i) o[i] = from_float<T>(silu_mul(to_float(g[i]), to_float(u[i])));
}

// Partial prefill's row filter: row i of the outputs is row from[i] of the inputs; x (row, dim) fp32,
// q (row, q_dim), positions and key counts (position + 1) per row. One block per output row.
template <class T>
__global__ void gather_rows_kernel(const std::int32_t* from, const float* x, const T* q, const std::int32_t* pos, float* x_out,
                                   T* q_out, std::int32_t* pos_out, std::int32_t* keys_out, int dim, int q_dim) {
  const std::size_t i = blockIdx.x, src = std::size_t(from[i]);
  for (int c = threadIdx.x; c < dim; c += blockDim.x) x_out[i * dim + c] = x[src * dim + c];
  for (int c = threadIdx.x; c < q_dim; c += blockDim.x) q_out[i * q_dim + c] = q[src * q_dim + c];
  if (threadIdx.x == 0) {
    pos_out[i] = pos[src];
    keys_out[i] = pos[src] + 1;
  }
}

struct arg_max {
  float v;
  int i;
};
struct arg_max_op {
  __device__ arg_max operator()(const arg_max& a, const arg_max& b) const {
    return (b.v > a.v || (b.v == a.v && b.i < a.i)) ? b : a;  // first index of the maximum
  }
};

template <int Threads>
__global__ void __launch_bounds__(Threads) argmax_kernel(const float* logits, int vocab, std::int32_t* out) {
  using reduce = cub::BlockReduce<arg_max, Threads>;
  __shared__ typename reduce::TempStorage tmp;
  const float* l = logits + std::size_t(blockIdx.x) * vocab;
  arg_max best{-INFINITY, 0x7fffffff};
  for (int i = threadIdx.x; i < vocab; i += Threads) best = arg_max_op{}(best, arg_max{l[i], i});
  best = reduce(tmp).Reduce(best, arg_max_op{});
  if (threadIdx.x == 0) out[blockIdx.x] = best.i;
}

// Top-p over softmax(logits / temperature): the nucleus is every token whose probability is at
// least tau, tau the largest value whose set holds >= top_p of the mass (found by bisection on the
// float's bits); the coin in [0, 1) picks by inverse CDF over the nucleus in token order.
template <int Threads>
__global__ void __launch_bounds__(Threads) top_p_kernel(const float* logits, int vocab, float temperature,
                                                        float top_p, const float* coins, std::int32_t* out) {
  using reduce = cub::BlockReduce<float, Threads>;
  using scan = cub::BlockScan<float, Threads>;
  __shared__ union {
    typename reduce::TempStorage r;
    typename scan::TempStorage s;
  } tmp;
  __shared__ float bcast;
  const float* l = logits + std::size_t(blockIdx.x) * vocab;
  float m = -INFINITY;
  for (int i = threadIdx.x; i < vocab; i += Threads) m = fmaxf(m, l[i]);
  m = reduce(tmp.r).Reduce(m, ::cuda::maximum<>{});
  if (threadIdx.x == 0) bcast = m;
  __syncthreads();
  m = bcast;
  const float inv_t = 1.0f / temperature;
  float z = 0.f;
  for (int i = threadIdx.x; i < vocab; i += Threads) z += expf((l[i] - m) * inv_t);
  __syncthreads();
  z = reduce(tmp.r).Sum(z);
  if (threadIdx.x == 0) bcast = z;
  __syncthreads();
  const float inv_z = 1.0f / bcast;
  auto prob = [&](int i) { return expf((l[i] - m) * inv_t) * inv_z; };
  auto mass_at_least = [&](float tau) {
    float s = 0.f;
    for (int i = threadIdx.x; i < vocab; i += Threads) {
      const float p = prob(i);
      s += p >= tau ? p : 0.f;
    }
    __syncthreads();
    s = reduce(tmp.r).Sum(s);
    if (threadIdx.x == 0) bcast = s;
    __syncthreads();
    return bcast;
  };
  // Bisection on bits: lo always qualifies (mass >= top_p), hi never does.
  std::uint32_t lo = 0, hi = __float_as_uint(1.0f) + 1;
  if (top_p < 1.0f) {
    while (hi - lo > 1) {
      const std::uint32_t mid = lo + (hi - lo) / 2;
      if (mass_at_least(__uint_as_float(mid)) >= top_p) lo = mid; else hi = mid;
    }
  }
  const float tau = __uint_as_float(lo);
  const float target = coins[blockIdx.x] * mass_at_least(tau);
  // Each thread owns a contiguous run of tokens; an exclusive scan gives each run's starting mass.
  const int per = (vocab + Threads - 1) / Threads, begin = threadIdx.x * per, end = min(vocab, begin + per);
  float local = 0.f;
  int last = -1;
  for (int i = begin; i < end; ++i) {
    const float p = prob(i);
    if (p >= tau) { local += p; last = i; }
  }
  float before = 0.f;
  __syncthreads();
  scan(tmp.s).ExclusiveSum(local, before);
  __shared__ int chosen, last_in;
  if (threadIdx.x == 0) { chosen = -1; last_in = -1; }
  __syncthreads();
  if (last >= 0) atomicMax(&last_in, last);
  if (before <= target && target < before + local) {
    float c = before;
    for (int i = begin; i < end; ++i) {
      const float p = prob(i);
      if (p < tau) continue;
      c += p;
      if (target < c) { atomicMin(reinterpret_cast<unsigned*>(&chosen), unsigned(i)); break; }
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.x] = chosen >= 0 ? chosen : last_in;  // rounding: the last nucleus token
}

}  // namespace detail

// ------------------------------------------------------------------------- launchers
template <class T>
void embedding(const std::int32_t* tokens, int rows, const T* table, float* x, int dim, cudaStream_t s) {
  if (rows == 0) return;
  detail::embedding_kernel<T><<<rows, 256, 0, s>>>(tokens, table, x, dim);
  check_launch("embedding");
}
template <class T>
void rmsnorm(const float* x, const float* w, T* out, int rows, int dim, float eps, cudaStream_t s) {
  if (rows == 0) return;
  detail::rmsnorm_kernel<T, 256><<<rows, 256, 0, s>>>(x, w, out, dim, eps);
  check_launch("rmsnorm");
}
template <class T>
void rope_store(const T* qkv, T* q_out, const paged_kv_layer<T>& kv, const std::int32_t* positions,
                const std::int32_t* row_seq, int rows, int q_heads, float theta, rope_style style, cudaStream_t s) {
  if (rows == 0) return;
  detail::rope_store_kernel<T><<<rows, 256, 0, s>>>(qkv, q_out, kv, positions, row_seq, q_heads, theta, style);
  check_launch("rope_store");
}
template <class T>
void swiglu(const T* gate_up, T* out, int rows, int hidden, cudaStream_t s) {
  if (rows == 0 || hidden == 0) return;
  const dim3 grid(grid_for((hidden + 1) / 2, 256), rows);
  detail::swiglu_kernel<T><<<grid, 256, 0, s>>>(gate_up, out, hidden);
  check_launch("swiglu");
}
template <class T>
void gather_rows(const std::int32_t* from, int rows, const float* x, const T* q, const std::int32_t* pos, float* x_out, T* q_out,
                 std::int32_t* pos_out, std::int32_t* keys_out, int dim, int q_dim, cudaStream_t s) {
  if (rows == 0) return;
  detail::gather_rows_kernel<T><<<rows, 256, 0, s>>>(from, x, q, pos, x_out, q_out, pos_out, keys_out, dim, q_dim);
  check_launch("gather_rows");
}
inline void argmax(const float* logits, int rows, int vocab, std::int32_t* out, cudaStream_t s) {
  if (rows == 0) return;
  detail::argmax_kernel<1024><<<rows, 1024, 0, s>>>(logits, vocab, out);
  check_launch("argmax");
}
inline void sample_top_p(const float* logits, int rows, int vocab, float temperature, float top_p, const float* coins,
                         std::int32_t* out, cudaStream_t s) {
  if (rows == 0) return;
  detail::top_p_kernel<1024><<<rows, 1024, 0, s>>>(logits, vocab, temperature, top_p, coins, out);
  check_launch("sample_top_p");
}

}  // namespace kvtier_engine::cuda
