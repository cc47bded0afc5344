#pragma once
// The GPU composition of hierarchical_cache: device_layer_pool (the engine's layer-first KV in
// device memory), pinned_host_pool (page first, mapped) and transfer::gpu_copy, in one line:
//
//   #include <kvtier/cache.cuh>
//   using cache_type = kvtier::gpu_cache_builder<kvtier::page_size<16>>::cache_type;
#include "kvtier/cache/builder.hpp"
#include "kvtier/memory/device_layer_pool.cuh"
#include "kvtier/memory/pinned_host_pool.cuh"
#include "kvtier/transfer/gpu_copy.cuh"
#include "kvtier/transfer/views.hpp"

namespace kvtier {

namespace detail {
// The device pool's memory as the engine's layer-first buffer: one plane per (layer, kv), page s
// at tokens [s·P, s·P + P) (kvtier-allocated pools pack slots, so the plane slot stride is a page).
template <>
struct device_access<memory::device_layer_pool> {
  static transfer::layer_first_buffer view(const memory::device_layer_pool& p) {
    if (p.plane_slot_stride() != p.plane_bytes())
      throw config_error("kvtier: hierarchical_cache needs a device_layer_pool with packed slots");
    return transfer::layer_first_view(p.plane_table(), p.shape(), p.capacity() * p.page_tokens());
  }
};
// Pools GPU kernels reach get the GPU copy when the copy strategy is auto_choice.
template <class DevicePool>
  requires memory::device_accessible_pool<DevicePool>
struct default_copy<DevicePool> {
  using type = transfer::gpu_copy;
};
}  // namespace detail

// device_layer_pool (layer first), pinned host pool (page first, mapped), gpu_copy; the other
// arguments as for cache_builder.
template <class PageSize, class Slow = slow_tiers<>, class Writes = write_policies<>, class Prefetch = auto_choice,
          class Eviction = auto_choice>
using gpu_cache_builder = cache_builder<PageSize, device_memory<layout::layer_first, memory::device_layer_pool>,
                                        host_memory<layout::page_first, memory::pinned_host_pool>, Slow,
                                        transfer::gpu_copy, Writes, Prefetch, Eviction>;

}  // namespace kvtier
