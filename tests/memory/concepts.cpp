// Pool concepts: positive and negative static_asserts. Nothing models a pool by accident: a type
// with every member but no opt-in is not a pool; a pool without a device property is not
// device-accessible; properties are looked up in a properties_list only.
#include <boost/test/unit_test.hpp>

#include <span>
#include <vector>

#include "kvtier/memory.hpp"

using namespace kvtier;
namespace mem = kvtier::memory;

namespace {
// Every member a pool needs, parametrised by the opt-in tag and the properties it declares.
template <class OptIn, class Properties, class Tier = host_tier>
struct fake_pool {
  using kvtier_pool = OptIn;
  using memory_properties = Properties;
  using tier_type = Tier;
  using slot_type = slot_id<Tier>;
  result<slot_type> allocate() noexcept { return make_error(errc::capacity_exhausted); }
  result<void> allocate(std::span<slot_type>) noexcept { return {}; }
  result<void> free(slot_type) noexcept { return {}; }
  result<void> free(std::span<const slot_type>) noexcept { return {}; }
  bool is_allocated(slot_type) const noexcept { return false; }
  std::size_t slot_bytes() const noexcept { return 0; }
  std::size_t capacity() const noexcept { return 0; }
  std::size_t capacity_bytes() const noexcept { return 0; }
  std::size_t used() const noexcept { return 0; }
  std::size_t available() const noexcept { return 0; }
  mem::pool_stats stats() const noexcept { return {}; }
  std::span<std::byte> host_span(slot_type) const noexcept { return {}; }
  std::byte* host_plane(slot_type, std::size_t, std::size_t) const noexcept { return nullptr; }
  std::byte* device_plane(slot_type, std::size_t, std::size_t) const noexcept { return nullptr; }
};

struct not_a_tag {};
using host_only = mem::properties_list<mem::host_accessible>;
using device_only = mem::properties_list<mem::device_accessible>;
using mapped = mem::properties_list<mem::host_accessible, mem::device_accessible, mem::page_locked>;

// Declares properties, but not through properties_list.
struct loose_properties {
  template <class>
  [[maybe_unused]] static constexpr bool contains = true;
};

// A pool whose slot ids belong to another tier than the one it names.
struct mixed_tier_pool : fake_pool<mem::pool_tag, host_only> {
  using slot_type = slot_id<device_tier>;
};

// A pool whose allocate() may throw: hot-path calls must be noexcept.
struct throwing_pool : fake_pool<mem::pool_tag, host_only> {
  result<slot_type> allocate() { return make_error(errc::capacity_exhausted); }
  using fake_pool::allocate;
};
}  // namespace

// Properties.
static_assert(mem::has_property<mem::host_pool, mem::host_accessible>);
static_assert(!mem::has_property<mem::host_pool, mem::device_accessible>);
static_assert(!mem::has_property<mem::host_pool, mem::page_locked>);
static_assert(!mem::has_property<int, mem::host_accessible>);
static_assert(!mem::has_property<fake_pool<mem::pool_tag, loose_properties>, mem::host_accessible>);
static_assert(mem::properties_list<mem::host_accessible, mem::device_accessible>::contains<mem::device_accessible>);
static_assert(!mem::properties_list<>::contains<mem::host_accessible>);

// pool: the library's host pool, and fakes that opt in properly.
static_assert(mem::pool<mem::host_pool>);
static_assert(mem::pool<fake_pool<mem::pool_tag, host_only>>);
static_assert(mem::pool<fake_pool<mem::pool_tag, device_only, device_tier>>);
// ... and not without the opt-in, with a wrong tag, without a memory space, or with mixed tiers.
static_assert(!mem::pool<int>);
static_assert(!mem::pool<std::vector<std::byte>>);
static_assert(!mem::pool<fake_pool<void, host_only>>);
static_assert(!mem::pool<fake_pool<not_a_tag, host_only>>);
static_assert(!mem::pool<fake_pool<mem::pool_tag, mem::properties_list<>>>);
static_assert(!mem::pool<fake_pool<mem::pool_tag, mem::properties_list<mem::page_locked>>>);
static_assert(!mem::pool<fake_pool<mem::pool_tag, loose_properties>>);
static_assert(!mem::pool<mixed_tier_pool>);
static_assert(!mem::pool<throwing_pool>);
static_assert(!mem::pool<mem::slot_allocator<host_tier>>);  // allocates ids, but is no pool

// Memory spaces.
static_assert(mem::host_accessible_pool<mem::host_pool>);
static_assert(!mem::device_accessible_pool<mem::host_pool>);
static_assert(!mem::mapped_host_pool<mem::host_pool>);
static_assert(mem::device_accessible_pool<fake_pool<mem::pool_tag, device_only, device_tier>>);
static_assert(!mem::host_accessible_pool<fake_pool<mem::pool_tag, device_only, device_tier>>);
static_assert(mem::mapped_host_pool<fake_pool<mem::pool_tag, mapped>>);
static_assert(!mem::mapped_host_pool<fake_pool<mem::pool_tag,
                                               mem::properties_list<mem::host_accessible, mem::device_accessible>>>);
static_assert(!mem::device_accessible_pool<int>);

// Region views carry their memory space in the type.
static_assert(std::is_same_v<decltype(std::declval<const mem::host_pool&>().host_region()),
                             mem::slot_region<mem::host_accessible>>);
static_assert(!std::is_convertible_v<mem::slot_region<mem::host_accessible>, mem::slot_region<mem::device_accessible>>);
static_assert(std::is_trivially_copyable_v<mem::slot_region<mem::device_accessible>>);

// Overload resolution picks by memory space: the way device-only routines are written.
namespace {
template <mem::device_accessible_pool P>
constexpr int where(const P&) { return 1; }
template <mem::host_accessible_pool P>
  requires(!mem::device_accessible_pool<P>)
constexpr int where(const P&) { return 2; }
}  // namespace

BOOST_AUTO_TEST_CASE(dispatch_by_memory_space) {
  mem::host_pool h(shapes::llama3_8b(), page_size<>(1), 1);
  BOOST_TEST(where(h) == 2);
  BOOST_TEST(where(fake_pool<mem::pool_tag, device_only, device_tier>{}) == 1);
  BOOST_TEST(where(fake_pool<mem::pool_tag, mapped>{}) == 1);
}
