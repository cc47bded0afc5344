#include <boost/test/unit_test.hpp>

#include "kvtier/policy/prefetch.hpp"

using namespace kvtier;
using namespace std::chrono_literals;

static_assert(prefetch_policy<prefetch_best_effort>);
static_assert(prefetch_policy<prefetch_wait>);
static_assert(prefetch_policy<prefetch_timeout>);

struct untagged {  // the right member, no opt-in
  static constexpr std::string_view name = "u";
  std::chrono::nanoseconds wait_budget(std::size_t) const noexcept { return {}; }
};
struct returns_ms {  // tagged, but answers in another unit
  using kvtier_prefetch_policy = prefetch_policy_tag;
  static constexpr std::string_view name = "ms";
  std::chrono::milliseconds wait_budget(std::size_t) const noexcept { return {}; }
};
static_assert(!prefetch_policy<untagged>);
static_assert(!prefetch_policy<returns_ms>);
static_assert(!prefetch_policy<double>);

BOOST_AUTO_TEST_CASE(best_effort_never_waits) {
  constexpr prefetch_best_effort p;
  BOOST_TEST(p.wait_budget(0).count() == 0);
  BOOST_TEST(p.wait_budget(100000).count() == 0);
}

BOOST_AUTO_TEST_CASE(wait_waits_for_everything) {
  constexpr prefetch_wait p;
  BOOST_TEST((p.wait_budget(1) == wait_forever));
}

BOOST_AUTO_TEST_CASE(timeout_grows_with_pages_outstanding_up_to_the_cap) {
  constexpr prefetch_timeout p{100us, 10us, 1ms};
  static_assert(p.wait_budget(0) == 100us);
  BOOST_TEST((p.wait_budget(1) == 110us));
  BOOST_TEST((p.wait_budget(50) == 600us));
  BOOST_TEST((p.wait_budget(90) == 1ms));
  BOOST_TEST((p.wait_budget(91) == 1ms));
  BOOST_TEST((p.wait_budget(~std::size_t{0}) == 1ms));  // saturates instead of overflowing
  for (std::size_t n = 0; n < 200; ++n) BOOST_TEST((p.wait_budget(n) <= p.wait_budget(n + 1)));
  BOOST_CHECK_THROW((prefetch_timeout{2ms, 1us, 1ms}), config_error);
  BOOST_CHECK_THROW((prefetch_timeout{-1us, 1us, 1ms}), config_error);
}
