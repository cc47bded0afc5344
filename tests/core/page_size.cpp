#include <boost/test/unit_test.hpp>
#include <boost/test/data/test_case.hpp>

#include "kvtier/core.hpp"

using namespace kvtier;
namespace bdata = boost::unit_test::data;

static_assert(page_size<16>::is_static);
static_assert(!page_size<>::is_static);
static_assert(page_size<16>::tokens() == 16);
static_assert(page_size<16>::full_pages(47) == 2);
static_assert(page_size<16>::pages_covering(47) == 3);
static_assert(sizeof(page_size<16>) == 1, "a static page size costs no storage");

BOOST_DATA_TEST_CASE(dynamic_matches_static_math, bdata::xrange(0, 1200, 7), n) {
  const page_size<> dyn(16);
  const std::size_t t = static_cast<std::size_t>(n);
  BOOST_TEST(dyn.full_pages(t) == page_size<16>::full_pages(t));
  BOOST_TEST(dyn.pages_covering(t) == page_size<16>::pages_covering(t));
  BOOST_TEST(dyn.whole_tokens(t) == page_size<16>::whole_tokens(t));
  BOOST_TEST(dyn.whole_tokens(t) == dyn.full_pages(t) * 16);
}

BOOST_AUTO_TEST_CASE(bad_sizes_are_rejected) {
  BOOST_CHECK_THROW(page_size<>(0), config_error);
  BOOST_CHECK_THROW(page_size<16>(32), config_error);
  BOOST_CHECK_NO_THROW(page_size<16>(16));
  BOOST_CHECK_THROW(page_size<>(std::size_t{1} << 30), config_error);
}

BOOST_AUTO_TEST_CASE(static_converts_to_dynamic) {
  const page_size<> d = page_size<64>{};
  BOOST_TEST(d.tokens() == 64u);
}
