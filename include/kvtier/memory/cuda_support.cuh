#pragma once
// Small helpers the CUDA pools share: CUDA errors at construction become config_error, a scoped
// current-device switch, and the one query of where kernels can reach a pointer.
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

// Where kernels can reach a pointer. Pools adopt only `device` memory; copies also accept
// `mapped_host` (pinned host memory mapped into the device's address space).
enum class device_reach : unsigned char {
  none,         // pageable or unknown memory: kernels cannot dereference it (without HMM/ATS)
  mapped_host,  // pinned host memory with a device address
  device,       // device or managed memory
};

inline device_reach reach_of(const void* p) noexcept {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the error the query left
    return device_reach::none;
  }
  if (a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged) return device_reach::device;
  return a.type == cudaMemoryTypeHost && a.devicePointer != nullptr ? device_reach::mapped_host : device_reach::none;
}

// Whether kernels can dereference p as it is: device, managed, or mapped pinned host memory.
inline bool device_reachable(const void* p) noexcept { return reach_of(p) != device_reach::none; }

}  // namespace kvtier::memory::detail
