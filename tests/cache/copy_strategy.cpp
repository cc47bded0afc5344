// The copy_strategy concept (kvtier/transfer/copy_strategy.hpp) both ways: the library's models
// satisfy it, a type that misses the opt-in or any one required call does not, and
// hierarchical_cache itself refuses parts whose copy strategy or pools do not fit.
#include <boost/test/unit_test.hpp>

#include <span>

#include "kvtier/cache.hpp"

using namespace kvtier;
using transfer::copy_strategy;
using transfer::copy_strategy_tag;
using transfer::page_pair;

namespace {

struct fake_stream {};
// The opt-in and the types every variant shares; each required call is a part of its own, so that
// a variant below can leave out exactly one.
struct copy_types {
  using kvtier_copy_strategy = copy_strategy_tag;
  using stream_type = fake_stream;
  using event_type = int;
  static constexpr bool needs_device_memory = false;
};
struct loads {
  template <class H, class D>
  static result<void> load(fake_stream&, const H&, const D&, std::span<const page_pair>, std::span<int>) { return {}; }
};
struct backs_up {
  template <class D, class H>
  static result<int> backup(fake_stream&, const D&, const H&, std::span<const page_pair>) { return 0; }
};
struct queries {
  static bool query(const fake_stream&, int) noexcept { return true; }
};
struct synchronizes {
  static void synchronize(const fake_stream&, int) {}
};
// Every call, with the opt-in: a model. Each variant below breaks exactly one clause.
struct full_copy : copy_types, loads, backs_up, queries, synchronizes {};
struct unannounced_copy : full_copy {  // every call, no opt-in
  using kvtier_copy_strategy = void;
};
struct copy_without_events : full_copy {  // no event type
  using event_type = void;
};
struct copy_without_load : copy_types, backs_up, queries, synchronizes {};
struct copy_with_void_load : full_copy {  // load must return result<void>
  template <class H, class D>
  static void load(stream_type&, const H&, const D&, std::span<const page_pair>, std::span<event_type>) {}
};
struct copy_without_backup : copy_types, loads, queries, synchronizes {};
struct copy_with_throwing_query : full_copy {  // query must be noexcept (poll never throws)
  static bool query(const stream_type&, event_type) { return true; }
};
struct copy_without_synchronize : copy_types, loads, backs_up, queries {};
// Opted in from outside, through the enable variable.
struct outside_copy : full_copy {
  using kvtier_copy_strategy = void;
};
// A strategy of kernels: it needs device memory and a host pool mapped into the GPU.
struct kernel_copy : full_copy {
  static constexpr bool needs_device_memory = true;
};

}  // namespace

template <>
inline constexpr bool kvtier::transfer::enable_copy_strategy<outside_copy> = true;

// ---- the concept
static_assert(copy_strategy<transfer::cpu_copy>);
static_assert(copy_strategy<full_copy>);
static_assert(copy_strategy<outside_copy>);
static_assert(!copy_strategy<unannounced_copy>);
static_assert(!copy_strategy<copy_without_events>);
static_assert(!copy_strategy<copy_without_load>);
static_assert(!copy_strategy<copy_with_void_load>);
static_assert(!copy_strategy<copy_without_backup>);
static_assert(!copy_strategy<copy_with_throwing_query>);
static_assert(!copy_strategy<copy_without_synchronize>);
static_assert(!copy_strategy<int>);
// Checked against the views the cache uses: page_head_first host pages work as well.
static_assert(transfer::copy_strategy_for<transfer::cpu_copy, detail::host_view_t<layout::page_head_first>,
                                          transfer::layer_first_buffer>);

// ---- hierarchical_cache itself is constrained (not only cache_builder)
template <class T>
concept complete = requires { sizeof(T); };
template <class Copy, class DevicePool = host_backed_device_pool, class HostPool = memory::host_pool>
using cache_with = hierarchical_cache<cache_parts<page_size<4>, DevicePool, HostPool, layout::page_first, Copy,
                                                  write_through, write_back, prefetch_timeout, lru>>;
static_assert(complete<cache_with<transfer::cpu_copy>>);
static_assert(complete<cache_with<full_copy>>);
static_assert(!complete<cache_with<unannounced_copy>>);
static_assert(!complete<cache_with<copy_without_backup>>);
// Kernels cannot reach host memory standing in for the device, nor an unmapped host pool.
static_assert(!complete<cache_with<kernel_copy>>);
// A host pool as the device pool's place is refused by its slot type in the builder; here, a
// pool that is not a pool at all is refused by the cache.
static_assert(!complete<cache_with<transfer::cpu_copy, int>>);

BOOST_AUTO_TEST_CASE(the_library_models_are_usable_strategies) {
  // The CPU model runs: a stream's events pass in order.
  transfer::cpu_stream s;
  const auto e = s.enqueue([] {});
  transfer::cpu_copy::synchronize(s, e);
  BOOST_TEST(transfer::cpu_copy::query(s, e));
}
