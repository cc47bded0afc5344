#pragma once
// cache_builder: picks and checks the parts of a hierarchical cache at compile time, the way
// CUTLASS's collective builders do: every argument is a small tag or a policy type, auto_choice
// lets kvtier pick, each choice is checked against its concept with a message that says what to
// change, and the result is one type:
//
//   using cache_type = kvtier::cache_builder<kvtier::page_size<16>>::cache_type;  // CPU, no slow tier
//   using cache_type = kvtier::cache_builder<kvtier::page_size<16>, kvtier::device_memory<>,
//       kvtier::host_memory<>, kvtier::slow_tiers<kvtier::slow_tier<kvtier::file_tier>>>::cache_type;
#include <concepts>
#include <type_traits>

#include "kvtier/cache/composition.hpp"
#include "kvtier/cache/hierarchical_cache.hpp"
#include "kvtier/cache/host_backed_device_pool.hpp"
#include "kvtier/codec/concepts.hpp"
#include "kvtier/core/page_size.hpp"
#include "kvtier/core/tier.hpp"
#include "kvtier/layout/concepts.hpp"
#include "kvtier/layout/layer_first.hpp"
#include "kvtier/layout/page_first.hpp"
#include "kvtier/memory/concepts.hpp"
#include "kvtier/memory/host_pool.hpp"
#include "kvtier/policy/eviction/concept.hpp"
#include "kvtier/policy/eviction/lru.hpp"
#include "kvtier/policy/prefetch.hpp"
#include "kvtier/policy/write.hpp"
#include "kvtier/storage/concepts.hpp"
#include "kvtier/transfer/copy_strategy.hpp"
#include "kvtier/transfer/cpu_copy.hpp"

namespace kvtier {

namespace detail {

template <class T>
inline constexpr bool is_page_size = false;
template <std::size_t N>
inline constexpr bool is_page_size<page_size<N>> = true;

template <class T, class Default>
using or_default = std::conditional_t<std::same_as<T, auto_choice>, Default, T>;

// The copy strategy auto_choice picks for a device pool: cpu_copy, unless kvtier/cache/gpu_builder.cuh
// (included by kvtier/cache.cuh) says otherwise for pools GPU kernels reach.
template <class DevicePool>
struct default_copy {
  using type = transfer::cpu_copy;
};

template <class T>
inline constexpr bool is_device_memory = false;
template <class L, class P>
inline constexpr bool is_device_memory<device_memory<L, P>> = true;
template <class T>
inline constexpr bool is_host_memory = false;
template <class L, class P>
inline constexpr bool is_host_memory<host_memory<L, P>> = true;
template <class T>
inline constexpr bool is_slow_tiers = false;
template <class... T>
inline constexpr bool is_slow_tiers<slow_tiers<T...>> = true;
template <class T>
inline constexpr bool is_write_policies = false;
template <class A, class B>
inline constexpr bool is_write_policies<write_policies<A, B>> = true;

template <class T>
inline constexpr bool is_slow_tier = false;
template <template <class> class B, class C>
inline constexpr bool is_slow_tier<slow_tier<B, C>> = true;

template <class T>
struct slow_tier_check {
  static_assert(is_slow_tier<T>, "kvtier::cache_builder: each slow tier is kvtier::slow_tier<Backend, Codec>, e.g. slow_tier<file_tier>");
  static constexpr bool value = false;
};
template <template <class> class B, class C>
struct slow_tier_check<slow_tier<B, C>> {
  static_assert(page_codec<C>, "kvtier::cache_builder: a slow tier's codec must model kvtier::page_codec "
                               "(declare `using kvtier_codec = codec_tag;` and encode/decode/max_encoded_bytes)");
  static_assert(storage_backend<B<C>>, "kvtier::cache_builder: a slow tier's backend must model kvtier::storage_backend "
                                       "(declare `using kvtier_storage_backend = storage_backend_tag;`, put/get/contains/erase, poll/wait)");
  static constexpr bool value = page_codec<C> && storage_backend<B<C>>;
};

template <class Device, class Host, class Copy>
struct pool_checks {
  static constexpr bool device_is_pool = memory::pool<Device>;
  static_assert(device_is_pool, "kvtier::cache_builder: the device pool must model kvtier::memory::pool");
  static constexpr bool host_is_pool = memory::host_accessible_pool<Host>;
  static_assert(host_is_pool, "kvtier::cache_builder: the host pool must model kvtier::memory::host_accessible_pool "
                              "(slow tiers read and write its pages from the CPU)");
  static constexpr bool device_tier_ok = std::same_as<typename Device::tier_type, device_tier>;
  static_assert(device_tier_ok, "kvtier::cache_builder: the device pool must hand out device_slot ids (tier_type = device_tier)");
  static constexpr bool host_tier_ok = std::same_as<typename Host::tier_type, host_tier>;
  static_assert(host_tier_ok, "kvtier::cache_builder: the host pool must hand out host_slot ids (tier_type = host_tier)");
  static constexpr bool copy_reaches_device =
      Copy::needs_device_memory ? memory::device_accessible_pool<Device> : memory::has_property<Device, memory::host_accessible>;
  static_assert(copy_reaches_device, "kvtier::cache_builder: the copy strategy cannot reach the device pool's memory: "
                                     "cpu_copy needs host memory standing in for the device (host_backed_device_pool); "
                                     "a device pool needs gpu_copy (include kvtier/cache.cuh)");
  static constexpr bool copy_reaches_host = !Copy::needs_device_memory || memory::mapped_host_pool<Host>;
  static_assert(copy_reaches_host, "kvtier::cache_builder: a copy strategy of GPU kernels reads host pages through the GPU's "
                                   "address space: the host pool must model kvtier::memory::mapped_host_pool (pinned_host_pool)");
  static constexpr bool value =
      device_is_pool && host_is_pool && device_tier_ok && host_tier_ok && copy_reaches_device && copy_reaches_host;
};

}  // namespace detail

template <class PageSize,
          class Device = device_memory<>,
          class Host = host_memory<>,
          class Slow = slow_tiers<>,
          class Copy = auto_choice,
          class Writes = write_policies<>,
          class Prefetch = auto_choice,
          class Eviction = auto_choice>
struct cache_builder {
  static_assert(detail::is_page_size<PageSize>, "kvtier::cache_builder: the first argument is the page size, e.g. kvtier::page_size<16>");
  static_assert(detail::is_device_memory<Device>, "kvtier::cache_builder: the second argument is kvtier::device_memory<Layout, Pool>");
  static_assert(detail::is_host_memory<Host>, "kvtier::cache_builder: the third argument is kvtier::host_memory<Layout, Pool>");
  static_assert(detail::is_slow_tiers<Slow>, "kvtier::cache_builder: the fourth argument is kvtier::slow_tiers<slow_tier<...>...>");
  static_assert(detail::is_write_policies<Writes>, "kvtier::cache_builder: the sixth argument is kvtier::write_policies<DeviceToHost, HostToSlow>");

  // ---- the choices, auto resolved
  using device_layout = detail::or_default<typename Device::layout_type, layout::layer_first>;
  static_assert(std::same_as<device_layout, layout::layer_first>,
                "kvtier::cache_builder: the device tier holds the engine's KV layer first (what attention reads): "
                "use device_memory<layout::layer_first, ...> or auto_choice");
  using device_pool = detail::or_default<typename Device::pool_type, host_backed_device_pool>;
  using copy_type = detail::or_default<Copy, typename detail::default_copy<device_pool>::type>;
  static_assert(transfer::copy_strategy<copy_type>,
                "kvtier::cache_builder: the copy strategy must model kvtier::transfer::copy_strategy "
                "(transfer::cpu_copy, or transfer::gpu_copy from kvtier/cache.cuh)");
  using host_layout = detail::or_default<typename Host::layout_type, layout::page_first>;
  static_assert(layout::kv_layout<host_layout> && layout::paged_kv_layout_mapping<typename host_layout::mapping>,
                "kvtier::cache_builder: the host tier holds whole pages, each one contiguous block: "
                "use host_memory<layout::page_first, ...> or layout::page_head_first, not a layer-first layout");
  using host_pool = detail::or_default<typename Host::pool_type, memory::host_pool>;
  static_assert(detail::pool_checks<device_pool, host_pool, copy_type>::value);

  using write_to_host = detail::or_default<typename Writes::device_to_host, write_through>;
  using write_to_slow = detail::or_default<typename Writes::host_to_slow, write_back>;
  static_assert(write_policy<write_to_host>, "kvtier::cache_builder: the device-to-host write policy must model kvtier::write_policy "
                                             "(write_through, selective_write_through, write_back, or declare `using kvtier_write_policy = write_policy_tag;`)");
  static_assert(write_policy<write_to_slow>, "kvtier::cache_builder: the host-to-slow write policy must model kvtier::write_policy "
                                             "(write_through, selective_write_through, write_back, or declare `using kvtier_write_policy = write_policy_tag;`)");
  using prefetch_type = detail::or_default<Prefetch, prefetch_timeout>;
  static_assert(prefetch_policy<prefetch_type>, "kvtier::cache_builder: the prefetch policy must model kvtier::prefetch_policy "
                                                "(prefetch_best_effort, prefetch_wait, prefetch_timeout)");
  using eviction_type = detail::or_default<Eviction, lru>;
  static_assert(eviction_policy<eviction_type>, "kvtier::cache_builder: the eviction policy must model kvtier::eviction_policy "
                                                "(lru, lfu_aging, priority_lru, look_ahead<P>)");

 private:
  template <class S>
  struct slow_backends;
  template <class... T>
  struct slow_backends<slow_tiers<T...>> {
    static constexpr bool ok = (detail::slow_tier_check<T>::value && ...);
    static_assert(sizeof...(T) <= 2, "kvtier::cache_builder: at most two slow tiers (disk, then remote)");
    template <class... Resolved>
    using cache = hierarchical_cache<cache_parts<PageSize, device_pool, host_pool, host_layout, copy_type, write_to_host,
                                                 write_to_slow, prefetch_type, eviction_type, Resolved...>>;
    using type = cache<typename T::backend_type...>;
  };

 public:
  using cache_type = typename slow_backends<Slow>::type;
};

}  // namespace kvtier
