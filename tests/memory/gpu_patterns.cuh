#pragma once
// Byte patterns and kernels the memory GPU tests share: every byte of a page depends on its slot,
// layer, kv plane and position, so a wrong address shows up as a wrong byte.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace kvtier_test {

__host__ __device__ inline unsigned char pattern(std::uint32_t slot, std::size_t layer, std::size_t kv, std::size_t i) {
  return static_cast<unsigned char>((slot * 131u + layer * 31u + kv * 7u + i * 3u + 1u) & 0xffu);
}

// Writes pattern(slot, layer, kv, i) into plane (layer, kv) of `slot`, through a (layer, kv) table
// of plane starts and a per-plane slot stride: the addressing of device_layer_pool.
__global__ void fill_planes_kernel(std::byte* const* table, std::size_t stride, std::size_t plane_bytes,
                                   std::size_t planes, std::size_t kv_planes, std::uint32_t slot) {
  for (std::size_t p = blockIdx.x; p < planes; p += gridDim.x) {
    auto* dst = reinterpret_cast<unsigned char*>(table[p] + std::size_t(slot) * stride);
    for (std::size_t i = threadIdx.x; i < plane_bytes; i += blockDim.x)
      dst[i] = pattern(slot, p / kv_planes, p % kv_planes, i);
  }
}

// Adds `delta` to every byte of `slot` through a page-first region's plane(): reads and writes the
// memory from the GPU (mapped pinned host memory, or device memory).
template <class Region>
__global__ void add_to_slot_kernel(Region r, std::uint32_t slot, std::size_t layers, unsigned char delta) {
  for (std::size_t p = blockIdx.x; p < layers * r.kv_planes; p += gridDim.x) {
    auto* b = reinterpret_cast<unsigned char*>(r.plane(slot, p / r.kv_planes, p % r.kv_planes));
    for (std::size_t i = threadIdx.x; i < r.plane_bytes; i += blockDim.x) b[i] = static_cast<unsigned char>(b[i] + delta);
  }
}

// Copies `bytes` bytes from src to dst on the GPU (both device pointers).
__global__ void copy_kernel(const std::byte* src, std::byte* dst, std::size_t bytes) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < bytes; i += std::size_t(gridDim.x) * blockDim.x)
    dst[i] = src[i];
}

}  // namespace kvtier_test
