#pragma once
// The resolved parts of a hierarchical cache (what cache_builder produces), and how the cache
// makes and sees its pools.
#include <cstddef>
#include <tuple>

#include "kvtier/core/kv_shape.hpp"
#include "kvtier/core/page_size.hpp"

namespace kvtier {

// Slow tiers are backend types, fastest first.
template <class PageSize, class DevicePool, class HostPool, class HostLayout, class Copy, class WriteToHost,
          class WriteToSlow, class Prefetch, class Eviction, class... SlowTiers>
struct cache_parts {
  using page_size_type = PageSize;
  using device_pool_type = DevicePool;
  using host_pool_type = HostPool;
  using host_layout_type = HostLayout;
  using copy_type = Copy;
  using write_to_host_type = WriteToHost;
  using write_to_slow_type = WriteToSlow;
  using prefetch_type = Prefetch;
  using eviction_type = Eviction;
  using slow_tier_types = std::tuple<SlowTiers...>;
};

namespace detail {
// How the cache makes its pools: pools that take (shape, page size, pages) by default.
template <class Pool>
struct pool_factory {
  static Pool make(const kv_shape& s, page_size<> p, std::size_t pages) { return Pool(s, p, pages); }
};
// The device pool's memory as the engine's layer-first buffer.
// (A class template, so that kvtier/cache/gpu_builder.cuh can specialise it for the device pools.)
template <class Pool>
struct device_access {
  static auto view(const Pool& p) -> decltype(p.kv_view()) { return p.kv_view(); }
};
template <class Pool>
auto device_kv_view(const Pool& p) -> decltype(device_access<Pool>::view(p)) {
  return device_access<Pool>::view(p);
}
}  // namespace detail

}  // namespace kvtier
