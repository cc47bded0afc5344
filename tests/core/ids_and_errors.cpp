#include <boost/test/unit_test.hpp>

#include <type_traits>
#include <unordered_set>

#include "kvtier/core.hpp"

using namespace kvtier;

// Ids of different kinds never convert into one another, nor from raw integers implicitly.
static_assert(!std::is_convertible_v<device_slot, host_slot>);
static_assert(!std::is_convertible_v<host_slot, device_slot>);
static_assert(!std::is_convertible_v<std::uint32_t, device_slot>);
static_assert(!std::is_convertible_v<device_slot, std::uint32_t>);
static_assert(!std::is_convertible_v<token_id, page_id>);
static_assert(std::is_constructible_v<device_slot, std::uint32_t>);
static_assert(std::is_trivially_copyable_v<token_id> && sizeof(token_id) == 4);

BOOST_AUTO_TEST_CASE(ids_compare_and_hash) {
  const device_slot a{3}, b{3}, c{4};
  BOOST_TEST((a == b));
  BOOST_TEST((a < c));
  BOOST_TEST(!device_slot{}.valid());
  BOOST_TEST(a.valid());
  std::unordered_set<device_slot> set{a, b, c};
  BOOST_TEST(set.size() == 2u);
}

BOOST_AUTO_TEST_CASE(result_holds_value_or_error) {
  result<int> ok = 5;
  BOOST_TEST(ok.has_value());
  BOOST_TEST(*ok == 5);
  BOOST_TEST((ok.code() == errc::ok));

  result<int> bad = make_error(errc::io_error, 5);
  BOOST_TEST(!bad.has_value());
  BOOST_TEST((bad.code() == errc::io_error));
  BOOST_TEST(bad.err().message() == "I/O error (errno 5)");
  BOOST_TEST(bad.value_or(-1) == -1);
  BOOST_CHECK_THROW(bad.value(), bad_result_access);

  result<void> done;
  BOOST_TEST(done.has_value());
  result<void> full = make_error(errc::capacity_exhausted);
  BOOST_TEST((full.code() == errc::capacity_exhausted));
}

BOOST_AUTO_TEST_CASE(tier_sets) {
  tier_set s;
  BOOST_TEST(s.empty());
  s.add(tier_id::host).add(tier_id::disk);
  BOOST_TEST(s.has(tier_id::host));
  BOOST_TEST(!s.has(tier_id::device));
  s.remove(tier_id::host);
  BOOST_TEST(!s.has(tier_id::host));
  BOOST_TEST(s.has(tier_id::disk));
}
