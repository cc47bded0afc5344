#pragma once
// Shared pieces of the CUDA backend: error checks that throw, an owning device buffer, and the
// element-type helpers every kernel uses (bf16 or fp32 storage, fp32 arithmetic).
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace kvtier_engine::cuda {

// A CUDA failure inside the engine is a run-time fault of the device, not a configuration error:
// it is thrown as std::runtime_error naming the call.
inline void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  (void)cudaGetLastError();
  throw std::runtime_error(std::string("kvtier_engine: ") + what + ": " + cudaGetErrorName(e) + ": " +
                           cudaGetErrorString(e));
}
inline void check(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  throw std::runtime_error(std::string("kvtier_engine: ") + what + ": cuBLAS status " + std::to_string(int(s)));
}
// After a launch: a bad configuration shows here, a fault in the kernel at the next sync.
inline void check_launch(const char* what) { check(cudaGetLastError(), what); }

// Owning device array of n elements of T (uninitialised).
template <class T>
class device_buffer {
 public:
  device_buffer() = default;
  explicit device_buffer(std::size_t n) : n_(n) {
    if (n > 0) check(cudaMalloc(&p_, n * sizeof(T)), "cudaMalloc");
  }
  device_buffer(device_buffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  device_buffer& operator=(device_buffer&& o) noexcept {
    if (this != &o) {
      reset();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  ~device_buffer() { reset(); }

  T* data() const noexcept { return p_; }
  std::size_t size() const noexcept { return n_; }
  void upload(const T* host, std::size_t n, std::size_t offset = 0) {
    check(cudaMemcpy(p_ + offset, host, n * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  }
  void upload(const std::vector<T>& host) { upload(host.data(), host.size()); }
  std::vector<T> download() const {
    std::vector<T> h(n_);
    if (n_ > 0) check(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
    return h;
  }

 private:
  void reset() noexcept {
    if (p_ != nullptr) (void)cudaFree(p_);
    p_ = nullptr;
    n_ = 0;
  }
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

// Storage element types of the backend: bf16 (the fast mode) or fp32 (the exact mode).
template <class T>
struct element;
template <>
struct element<float> {
  static constexpr cudaDataType_t cuda_type = CUDA_R_32F;
  __host__ __device__ static float to_float(float v) { return v; }
  __host__ __device__ static float from_float(float v) { return v; }
};
template <>
struct element<__nv_bfloat16> {
  static constexpr cudaDataType_t cuda_type = CUDA_R_16BF;
  __host__ __device__ static float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
  __host__ __device__ static __nv_bfloat16 from_float(float v) { return __float2bfloat16_rn(v); }
};
template <class T>
__host__ __device__ inline float to_float(T v) { return element<T>::to_float(v); }
template <class T>
__host__ __device__ inline T from_float(float v) { return element<T>::from_float(v); }

// Host conversions for uploads and references.
template <class T>
std::vector<T> convert_from_float(const float* src, std::size_t n) {
  std::vector<T> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = from_float<T>(src[i]);
  return out;
}

inline unsigned grid_for(std::size_t n, unsigned block) { return unsigned((n + block - 1) / block); }

}  // namespace kvtier_engine::cuda
