#pragma once
// The CPU reference backend's fp32 kernels. Every output element is computed by one fixed sequence
// of float operations that depends only on its own inputs — never on how many tokens share the
// call, which thread runs it, or the instruction set picked at run time — so a position's K, V and
// logits are bit-identical whether it was computed in a prefill chunk of any size or a decode step.
// That is what makes "reuse is exact" testable. (The build passes -ffp-contract=off: no FMA
// contraction that one code path could apply and another not.)
//
// dot(w, x, n): 8 running lane sums s_j over elements i = j (mod 8), combined as
// ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7)), then the n mod 8 tail added in order.
#include <cmath>
#include <cstddef>
#include <cstring>

namespace kvtier_engine::cpu::detail {

typedef float v8 __attribute__((vector_size(32)));

// The v8 helpers are always inlined: matmul_rows' AVX2 clone passes v8 in ymm registers, the
// baseline-target helpers in memory, so a real call between them (at -O0) reads garbage (a Debug
// build's products came out 0).
[[gnu::always_inline]] static inline v8 load8(const float* p) noexcept {
  v8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
[[gnu::always_inline]] static inline float reduce8(v8 a) noexcept { return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])); }

[[gnu::always_inline]] static inline float dot(const float* w, const float* x, std::size_t n) noexcept {
  v8 s = {};
  const std::size_t n8 = n & ~std::size_t(7);
  for (std::size_t i = 0; i < n8; i += 8) s += load8(w + i) * load8(x + i);
  float r = reduce8(s);
  for (std::size_t i = n8; i < n; ++i) r += w[i] * x[i];
  return r;
}

// out[t * ldo + o] = dot(W[o], X[t]) for rows o in [o0, o1) and tokens t in [0, T).
// W: (rows, n) row-major; X: (T, n) row-major. Blocks of 4 rows x 2 tokens share their loads; the
// per-element operation sequence is dot()'s. Compiled for AVX2 and for the baseline, picked at load.
__attribute__((target_clones("avx2", "default"))) static void matmul_rows(const float* W, const float* X, float* out,
                                                                           std::size_t T, std::size_t n, std::size_t o0,
                                                                           std::size_t o1, std::size_t ldo) noexcept {
  const std::size_t n8 = n & ~std::size_t(7);
  constexpr std::size_t token_block = 64;  // X rows kept in cache while W's rows stream past
  for (std::size_t t0 = 0; t0 < T; t0 += token_block) {
    const std::size_t t1 = t0 + token_block < T ? t0 + token_block : T;
    std::size_t o = o0;
    for (; o + 4 <= o1; o += 4) {
      const float* w0 = W + o * n;
      const float* w1 = w0 + n;
      const float* w2 = w1 + n;
      const float* w3 = w2 + n;
      std::size_t t = t0;
      for (; t + 2 <= t1; t += 2) {
        const float* xa = X + t * n;
        const float* xb = xa + n;
        v8 a0 = {}, a1 = {}, a2 = {}, a3 = {}, b0 = {}, b1 = {}, b2 = {}, b3 = {};
        for (std::size_t i = 0; i < n8; i += 8) {
          const v8 va = load8(xa + i), vb = load8(xb + i);
          const v8 q0 = load8(w0 + i), q1 = load8(w1 + i), q2 = load8(w2 + i), q3 = load8(w3 + i);
          a0 += q0 * va; a1 += q1 * va; a2 += q2 * va; a3 += q3 * va;
          b0 += q0 * vb; b1 += q1 * vb; b2 += q2 * vb; b3 += q3 * vb;
        }
        float ra[4] = {reduce8(a0), reduce8(a1), reduce8(a2), reduce8(a3)};
        float rb[4] = {reduce8(b0), reduce8(b1), reduce8(b2), reduce8(b3)};
        const float* ws[4] = {w0, w1, w2, w3};
        for (std::size_t i = n8; i < n; ++i)
          for (int r = 0; r < 4; ++r) {
            ra[r] += ws[r][i] * xa[i];
            rb[r] += ws[r][i] * xb[i];
          }
        for (int r = 0; r < 4; ++r) {
          out[t * ldo + o + r] = ra[r];
          out[(t + 1) * ldo + o + r] = rb[r];
        }
      }
      for (; t < t1; ++t)
        for (int r = 0; r < 4; ++r) out[t * ldo + o + r] = dot(W + (o + r) * n, X + t * n, n);
    }
    for (; o < o1; ++o)
      for (std::size_t t = t0; t < t1; ++t) out[t * ldo + o] = dot(W + o * n, X + t * n, n);
  }
}

// run.c's RMSNorm: o = w * (x / sqrt(mean(x^2) + eps)), the sum of squares taken in order.
static inline void rmsnorm(float* o, const float* x, const float* w, std::size_t n, float eps) noexcept {
  float ss = 0.0f;
  for (std::size_t j = 0; j < n; ++j) ss += x[j] * x[j];
  ss /= float(n);
  ss += eps;
  ss = 1.0f / std::sqrt(ss);
  for (std::size_t j = 0; j < n; ++j) o[j] = w[j] * (ss * x[j]);
}

// In-place softmax, run.c's order: max, exp and sum in order, scale.
static inline void softmax(float* x, std::size_t n) noexcept {
  float mx = x[0];
  for (std::size_t i = 1; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
  float sum = 0.0f;
  for (std::size_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  for (std::size_t i = 0; i < n; ++i) x[i] /= sum;
}

}  // namespace kvtier_engine::cpu::detail
