#pragma once
// The linear layers through cuBLAS: y (rows, out) = x (rows, in) · W^T, W stored (out, in) row-major
// as llama2.c and Hugging Face store it; fp32 accumulation. With accumulate, y += x · W^T: the
// residual add of the output projections rides in the GEMM (beta = 1) on the fp32 residual stream.
// Weights for synthetic models are generated on the device from the seed (synthetic_value), so a
// 16 GB llama3-8b never crosses the host.
#include <cublas_v2.h>

#include <cstdint>

#include "kvtier_engine/cuda/common.cuh"
#include "kvtier_engine/synthetic.hpp"

namespace kvtier_engine::cuda {

class cublas_handle {
 public:
  explicit cublas_handle(cudaStream_t s) {
    check(cublasCreate(&h_), "cublasCreate");
    check(cublasSetStream(h_, s), "cublasSetStream");
  }
  cublas_handle(const cublas_handle&) = delete;
  cublas_handle& operator=(const cublas_handle&) = delete;
  ~cublas_handle() { (void)cublasDestroy(h_); }
  cublasHandle_t get() const noexcept { return h_; }

 private:
  cublasHandle_t h_ = nullptr;
};

// y (rows, out) of type Out = x (rows, in) · w (out, in)^T (+ y when accumulate).
template <class T, class Out>
void linear(cublasHandle_t h, const T* x, const T* w, Out* y, int rows, int in, int out, bool accumulate) {
  if (rows == 0) return;
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  // Column-major view: y^T (out, rows) = W^T^T ... i.e. op(W) = T on the (in, out) column-major W.
  const cublasComputeType_t compute = std::is_same_v<T, float> ? CUBLAS_COMPUTE_32F_PEDANTIC : CUBLAS_COMPUTE_32F;
  check(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &alpha, w, element<T>::cuda_type, in, x,
                     element<T>::cuda_type, in, &beta, y, element<Out>::cuda_type, out, compute, CUBLAS_GEMM_DEFAULT),
        "cublasGemmEx");
}

namespace detail {
template <class T>
__global__ void synthetic_fill_kernel(T* dst, std::size_t n, std::uint64_t seed, tensor_kind kind, std::uint32_t layer,
                                      float scale) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x)
    dst[i] = from_float<T>(synthetic_value(seed, kind, layer, i, scale));
}
}  // namespace detail

// dst[0, n) = element i of synthetic tensor (kind, layer), as weights.hpp's materialize() computes it.
template <class T>
void synthetic_fill(T* dst, std::size_t n, std::uint64_t seed, tensor_kind kind, std::uint32_t layer, float scale,
                    cudaStream_t s) {
  if (n == 0) return;
  detail::synthetic_fill_kernel<T><<<unsigned(std::min<std::size_t>((n + 255) / 256, 132 * 32)), 256, 0, s>>>(
      dst, n, seed, kind, layer, scale);
  check_launch("synthetic_fill");
}

}  // namespace kvtier_engine::cuda
