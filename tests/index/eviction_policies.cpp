// The eviction_policy concept (positive and negative cases) and each policy's order through the
// prefix index. Tests live here rather than in tests/policy/ because they drive radix_index.
#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

#include "kvtier/index.hpp"

using namespace kvtier;

namespace {

struct untagged {  // every member, no opt-in tag
  static constexpr std::string_view name = "untagged";
  struct node_state {
    std::uint64_t t = 0;
  };
  void on_insert(node_state&, const access_info&) noexcept {}
  void on_access(node_state&, const access_info&) noexcept {}
  std::uint64_t key(const node_state& s) const noexcept { return s.t; }
  void on_evict(const node_state&) noexcept {}
};
struct tagged : untagged {
  using kvtier_eviction_policy = eviction_policy_tag;
};
struct signed_key : tagged {  // the key must be std::uint64_t
  int key(const node_state&) const noexcept { return 0; }
};
struct heavy_state : tagged {  // per-node state must be trivially copyable
  struct node_state {
    std::string s;
  };
  void on_insert(node_state&, const access_info&) noexcept {}
  void on_access(node_state&, const access_info&) noexcept {}
  std::uint64_t key(const node_state&) const noexcept { return 0; }
  void on_evict(const node_state&) noexcept {}
};
struct throwing_access : tagged {  // hooks are noexcept
  void on_access(node_state&, const access_info&) {}
};

}  // namespace

static_assert(eviction_policy<lru>);
static_assert(eviction_policy<lfu_aging>);
static_assert(eviction_policy<priority_lru>);
static_assert(eviction_policy<look_ahead<lru>>);
static_assert(eviction_policy<look_ahead<priority_lru>>);
static_assert(eviction_policy<tagged>);
static_assert(!eviction_policy<untagged>);
static_assert(!eviction_policy<signed_key>);
static_assert(!eviction_policy<heavy_state>);
static_assert(!eviction_policy<throwing_access>);
static_assert(!eviction_policy<int>);
static_assert(look_ahead_policy<look_ahead<lfu_aging>>);
static_assert(!look_ahead_policy<lru>);
static_assert(!look_ahead_policy<tagged>);

namespace {

// Three one-page prompts, each its own leaf under the namespace root.
std::vector<token_id> prompt(int id) { return {token_id{id}, token_id{id}}; }
const namespace_id ns{9};

template <class Policy>
std::vector<int> eviction_order(radix_index<Policy, 2>& idx) {
  std::vector<int> order;
  while (idx.evict(tier_id::device, 1, [&](const victim& v) {
    order.push_back(idx.tokens_of(v.page)[0].value());
    return true;
  }) == 1) {
  }
  return order;
}

}  // namespace

BOOST_AUTO_TEST_CASE(lru_evicts_least_recently_used) {
  radix_index<lru, 2> idx;
  for (int id : {1, 2, 3}) (void)idx.insert(ns, prompt(id), on_device(device_slot{0}));
  (void)idx.match(ns, prompt(1));
  BOOST_TEST((eviction_order(idx) == std::vector<int>{2, 3, 1}));
}

BOOST_AUTO_TEST_CASE(match_without_touch_leaves_recency_alone) {
  radix_index<lru, 2> idx;
  for (int id : {1, 2, 3}) (void)idx.insert(ns, prompt(id), on_device(device_slot{0}));
  (void)idx.match(ns, prompt(1), match_options{.touch = false});
  BOOST_TEST((eviction_order(idx) == std::vector<int>{1, 2, 3}));
}

BOOST_AUTO_TEST_CASE(lfu_aging_evicts_least_frequent_then_ages) {
  radix_index<lfu_aging, 2> idx;
  for (int id : {1, 2, 3}) (void)idx.insert(ns, prompt(id), on_device(device_slot{0}));
  for (int k = 0; k < 3; ++k) (void)idx.match(ns, prompt(1));
  (void)idx.match(ns, prompt(3));
  // 2 (1 use) goes before 3 (2 uses) before 1 (4 uses).
  BOOST_TEST(idx.evict(tier_id::device, 1, [&](const victim& v) {
    BOOST_TEST(idx.tokens_of(v.page)[0].value() == 2);
    return true;
  }) == 1u);
  BOOST_TEST(idx.policy().age == 1u);  // L = the victim's priority
  // Aging: a new prompt enters at L + 1 = 2, level with node 3 used twice (recency breaks the
  // tie), where without aging it would have entered below it.
  (void)idx.insert(ns, prompt(4), on_device(device_slot{0}));
  BOOST_TEST((eviction_order(idx) == std::vector<int>{3, 4, 1}));
}

BOOST_AUTO_TEST_CASE(priority_lru_orders_by_priority_then_recency) {
  radix_index<priority_lru, 2> idx;
  (void)idx.insert(ns, prompt(1), on_device(device_slot{0}), insert_options{.priority = 2});
  (void)idx.insert(ns, prompt(2), on_device(device_slot{0}), insert_options{.priority = 0});
  (void)idx.insert(ns, prompt(3), on_device(device_slot{0}), insert_options{.priority = 1});
  (void)idx.insert(ns, prompt(4), on_device(device_slot{0}), insert_options{.priority = 0});
  BOOST_TEST((eviction_order(idx) == std::vector<int>{2, 4, 3, 1}));
}

BOOST_AUTO_TEST_CASE(look_ahead_protects_what_queued_requests_need) {
  radix_index<look_ahead<lru>, 2> idx;
  for (int id : {1, 2, 3}) (void)idx.insert(ns, prompt(id), on_device(device_slot{0}));
  idx.expect(ns, prompt(1));
  idx.expect(ns, prompt(1));
  idx.unexpect(ns, prompt(1));  // still expected once
  BOOST_TEST(idx.evict(tier_id::device, 2, [](const victim&) { return true; }) == 2u);
  BOOST_TEST(idx.match(ns, prompt(1)).size() == 1u);
  idx.unexpect(ns, prompt(1));
  idx.unexpect(ns, prompt(1));  // saturates at zero
  (void)idx.insert(ns, prompt(5), on_device(device_slot{0}));
  BOOST_TEST((eviction_order(idx) == std::vector<int>{1, 5}));
}

BOOST_AUTO_TEST_CASE(leaves_go_first_whatever_the_key) {
  // The shared head [1] ends with the lowest key (priority 0) but cannot go before its children;
  // its child [2] keeps priority 5 and still goes before it.
  radix_index<priority_lru, 2> idx;
  const std::vector<token_id> a{token_id{1}, token_id{1}, token_id{2}, token_id{2}};
  const std::vector<token_id> b{token_id{1}, token_id{1}, token_id{3}, token_id{3}};
  (void)idx.insert(ns, a, on_device(device_slot{0}), insert_options{.priority = 5});
  (void)idx.insert(ns, b, on_device(device_slot{0}), insert_options{.priority = 0});
  BOOST_TEST(idx.nodes() == 4u);  // root, [1], [2], [3]
  BOOST_TEST((eviction_order(idx) == std::vector<int>{3, 2, 1}));
}
