#include <boost/test/unit_test.hpp>
#include <boost/mpl/list.hpp>

#include "kvtier/policy/write.hpp"

using namespace kvtier;

// Models opt in; look-alikes without the tag, or with a wrong signature, do not.
static_assert(write_policy<write_through>);
static_assert(write_policy<selective_write_through>);
static_assert(write_policy<write_back>);

struct untagged_write_through {  // same members, no opt-in tag
  static constexpr std::string_view name = "x";
  constexpr bool backup_on_insert() const noexcept { return true; }
  constexpr bool backup_on_hit(std::uint32_t) const noexcept { return false; }
  constexpr on_evict victim_without_copy() const noexcept { return on_evict::backup; }
};
struct throwing_hit : untagged_write_through {  // tagged, but backup_on_hit may throw
  using kvtier_write_policy = write_policy_tag;
  bool backup_on_hit(std::uint32_t) const { return false; }
};
struct wrong_tag : untagged_write_through {
  using kvtier_write_policy = int;
};
static_assert(!write_policy<untagged_write_through>);
static_assert(!write_policy<throwing_hit>);
static_assert(!write_policy<wrong_tag>);
static_assert(!write_policy<int>);

using all_policies = boost::mpl::list<write_through, selective_write_through, write_back>;

BOOST_AUTO_TEST_CASE_TEMPLATE(policies_have_names, P, all_policies) {
  BOOST_TEST(!P::name.empty());
}

BOOST_AUTO_TEST_CASE(write_through_backs_up_on_insert) {
  constexpr write_through p;
  static_assert(p.backup_on_insert());
  BOOST_TEST(!p.backup_on_hit(1));
  BOOST_TEST(!p.backup_on_hit(1000));
  BOOST_TEST((p.victim_without_copy() == on_evict::backup));
}

BOOST_AUTO_TEST_CASE(selective_backs_up_from_the_nth_hit) {
  const selective_write_through p{3};
  BOOST_TEST(!p.backup_on_insert());
  BOOST_TEST(!p.backup_on_hit(1));
  BOOST_TEST(!p.backup_on_hit(2));
  BOOST_TEST(p.backup_on_hit(3));
  BOOST_TEST(p.backup_on_hit(4));
  BOOST_TEST((p.victim_without_copy() == on_evict::drop));
  const selective_write_through keep{1, on_evict::backup};
  BOOST_TEST(keep.backup_on_hit(1));
  BOOST_TEST((keep.victim_without_copy() == on_evict::backup));
  BOOST_CHECK_THROW(selective_write_through{0}, config_error);
}

BOOST_AUTO_TEST_CASE(write_back_backs_up_only_on_eviction) {
  constexpr write_back p;
  BOOST_TEST(!p.backup_on_insert());
  BOOST_TEST(!p.backup_on_hit(7));
  BOOST_TEST((p.victim_without_copy() == on_evict::backup));
}

// Only policies that can back up on a hit make the cache count hits.
static_assert(!write_policy_counts_hits<write_through>);
static_assert(!write_policy_counts_hits<write_back>);
static_assert(write_policy_counts_hits<selective_write_through>);
