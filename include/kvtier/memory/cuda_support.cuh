#pragma once
// Small helpers the CUDA pools share: CUDA errors at construction become config_error, a scoped
// current-device switch, and a check that an adopted pointer really is device memory.
// Runtime API only, so g++ with the CUDA include path compiles it too.
#include <cuda_runtime_api.h>

#include <string>

#include "kvtier/core/error.hpp"

namespace kvtier::memory::detail {

// Throws config_error naming the call and CUDA's message; clears the (non-sticky) error first.
inline void cuda_check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  (void)cudaGetLastError();
  throw config_error(std::string("kvtier: ") + what + " failed: " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}

// Makes `device` current for the scope (-1: leave the current device), restores it after.
class device_scope {
 public:
  explicit device_scope(int device) {
    cuda_check(cudaGetDevice(&previous_), "cudaGetDevice");
    current_ = device < 0 ? previous_ : device;
    if (current_ != previous_) cuda_check(cudaSetDevice(current_), "cudaSetDevice");
  }
  device_scope(const device_scope&) = delete;
  device_scope& operator=(const device_scope&) = delete;
  ~device_scope() {
    if (current_ != previous_) (void)cudaSetDevice(previous_);
  }
  int device() const noexcept { return current_; }

 private:
  int previous_ = 0;
  int current_ = 0;
};

// True when p points into memory kernels can dereference as it is: device or managed memory.
inline bool is_device_memory(const void* p) noexcept {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

}  // namespace kvtier::memory::detail
