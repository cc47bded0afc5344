// Tier page counts after residency edits, built at -O2 (see CMakeLists.txt): GCC 12.2 at -O2
// (the asan/tsan presets' RelWithDebInfo) miscompiled the per-tier counting loop of a residency edit
// — giving pages host copies counted them as device pages (16 device, 0 host for 8 pages) — until
// the loop was rewritten over the changed bits. Release (-O3) was not affected.
#include <boost/test/unit_test.hpp>

#include <vector>

#include "kvtier/index/radix_index.hpp"
#include "kvtier/policy/eviction/look_ahead.hpp"
#include "kvtier/policy/eviction/lru.hpp"

using namespace kvtier;

BOOST_AUTO_TEST_CASE(host_copies_are_counted_as_host_pages) {
  radix_index<look_ahead<lru>> idx(page_size<>(16));
  std::vector<token_id> t(16 * 8);
  for (std::size_t i = 0; i < t.size(); ++i) t[i] = token_id{int(i * 7 + 1)};
  std::vector<page_id> path;
  idx.insert(namespace_id{1}, t, [](std::size_t i) { return on_device(device_slot{std::uint32_t(i)}); }, {}, &path);
  BOOST_REQUIRE_EQUAL(path.size(), 8u);
  BOOST_TEST(idx.pages_in(tier_id::device) == 8u);
  for (std::size_t i = 0; i < path.size(); ++i) BOOST_REQUIRE(idx.place_copy(path[i], host_slot{std::uint32_t(i)}, false).has_value());
  BOOST_TEST(idx.pages_in(tier_id::device) == 8u);
  BOOST_TEST(idx.pages_in(tier_id::host) == 8u);
  for (std::size_t i = 0; i < path.size(); ++i) BOOST_REQUIRE(idx.place_copy(path[i], tier_id::disk, true).has_value());
  BOOST_TEST(idx.pages_in(tier_id::disk) == 8u);
  BOOST_TEST(idx.pages_in(tier_id::host) == 8u);
}
