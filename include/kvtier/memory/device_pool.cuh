#pragma once
// device_pool: page-first slots in GPU memory (one slot = one page of all layers, contiguous),
// either allocated by kvtier (cudaMalloc) or adopted from a buffer the engine owns.
// For an engine's layer-first tensors (one per layer), see device_layer_pool.cuh.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>
#include <utility>

#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"
#include "kvtier/core/page_size.hpp"
#include "kvtier/core/tier.hpp"
#include "kvtier/memory/concepts.hpp"
#include "kvtier/memory/cuda_support.cuh"
#include "kvtier/memory/pool_core.hpp"
#include "kvtier/memory/properties.hpp"
#include "kvtier/memory/slot_access.hpp"
#include "kvtier/memory/slot_geometry.hpp"

namespace kvtier::memory {

struct device_pool_options {
  int device = -1;                 // CUDA device to allocate on; -1: the current device
  std::size_t slot_alignment = 1;  // of every slot's start; 1 packs slots into an exact page_first array
};

class device_pool : public detail::pool_core<device_tier>,
                    public detail::device_slot_access<device_pool, device_tier> {
 public:
  using kvtier_pool = pool_tag;
  using memory_properties = properties_list<device_accessible>;

  // kvtier allocates capacity_slots pages with cudaMalloc (256-byte aligned) and frees them.
  // Throws config_error for a bad size or when cudaMalloc refuses.
  device_pool(kv_shape shape, page_size<> pages, std::size_t capacity_slots, device_pool_options opt = {})
      : pool_core(slot_geometry(shape, pages, opt.slot_alignment), capacity_slots) {
    detail::device_scope on(opt.device);
    device_id_ = on.device();
    void* p = nullptr;
    detail::cuda_check(cudaMalloc(&p, capacity_bytes()), "cudaMalloc");
    data_ = static_cast<std::byte*>(p);
    owns_ = true;
  }

  // Adopts `bytes` bytes of device memory the engine owns, starting at `device_base`, as a
  // page_first array; kvtier never frees it, and it must outlive the pool. The buffer must hold a
  // whole number of slots: a remainder means the shape or page size does not match the engine's.
  // Throws config_error for a null, non-device or mis-sized buffer.
  static device_pool adopt(std::byte* device_base, std::size_t bytes, kv_shape shape, page_size<> pages,
                           std::size_t slot_alignment = 1) {
    const slot_geometry g(shape, pages, slot_alignment);
    if (device_base == nullptr) throw config_error("kvtier: device_pool::adopt of a null buffer");
    if (bytes == 0 || bytes % g.slot_stride() != 0)
      throw config_error("kvtier: device_pool::adopt: " + std::to_string(bytes) + " bytes is not a whole number of " +
                         std::to_string(g.slot_stride()) + "-byte slots (shape or page size mismatch)");
    if (detail::reach_of(device_base) != detail::device_reach::device)
      throw config_error("kvtier: device_pool::adopt: the buffer is not device memory");
    int device = 0;
    detail::cuda_check(cudaGetDevice(&device), "cudaGetDevice");
    return device_pool(g, bytes / g.slot_stride(), device_base, device);
  }

  device_pool(device_pool&& o) noexcept
      : pool_core(std::move(o)),
        data_(std::exchange(o.data_, nullptr)),
        owns_(std::exchange(o.owns_, false)),
        device_id_(o.device_id_) {}
  device_pool& operator=(device_pool&& o) noexcept {
    if (this != &o) {
      release();
      pool_core::operator=(std::move(o));
      data_ = std::exchange(o.data_, nullptr);
      owns_ = std::exchange(o.owns_, false);
      device_id_ = o.device_id_;
    }
    return *this;
  }
  device_pool(const device_pool&) = delete;
  device_pool& operator=(const device_pool&) = delete;
  ~device_pool() { release(); }

  // Slot 0, a device address (not dereferenceable on the host); device_address, device_plane and
  // device_region come from detail::device_slot_access (slot_access.hpp).
  std::byte* device_data() const noexcept { return data_; }

  bool owns_memory() const noexcept { return owns_; }
  int device() const noexcept { return device_id_; }

 private:
  device_pool(const slot_geometry& g, std::size_t capacity, std::byte* adopted, int device)
      : pool_core(g, capacity), data_(adopted), owns_(false), device_id_(device) {}

  void release() noexcept {
    if (owns_ && data_ != nullptr) (void)cudaFree(data_);  // ignored at process exit
    data_ = nullptr;
    owns_ = false;
  }

  std::byte* data_ = nullptr;
  bool owns_ = false;
  int device_id_ = 0;
};

static_assert(device_accessible_pool<device_pool>);
static_assert(!host_accessible_pool<device_pool>);

}  // namespace kvtier::memory
