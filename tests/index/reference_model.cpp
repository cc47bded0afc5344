// The prefix index against a plain map from (namespace, page-prefix) to residency, over random
// operation sequences: insert, match (with and without locks), unlock, evict (with refusals),
// remove_tier, in-flight flips, add_tier, look-ahead hints; three namespaces; page sizes 1, 16, 64.
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include <cstdlib>

#include "index/reference_model.hpp"

using namespace kvtier;

namespace {

template <class Index>
void run(Index& idx, std::uint64_t seed, int steps) {
  testing::random_choices choices(seed);
  testing::model_driver<Index> driver(idx, choices);
  const char* last = "start";
  try {
    for (int i = 0; i < steps; ++i) last = driver.step();
    driver.finish();
  } catch (const testing::model_mismatch& e) {
    BOOST_FAIL(e.what() << " (seed " << seed << ", after " << last << ")");
  }
  BOOST_TEST_MESSAGE("seed " << seed << ": " << idx.pages() << " pages, " << idx.nodes() << " nodes");
}

// KVTIER_INDEX_SEEDS=N runs N seeds per configuration (10 in CI).
std::uint64_t seeds() {
  const char* env = std::getenv("KVTIER_INDEX_SEEDS");
  return env ? std::strtoull(env, nullptr, 10) : 10;
}

using indexes = boost::mpl::list<radix_index<lru, 1>, radix_index<lru, 16>, radix_index<lru, 64>,
                                 radix_index<lfu_aging, 16>, radix_index<priority_lru, 1>,
                                 radix_index<look_ahead<lru>, 16>, radix_index<look_ahead<lfu_aging>, 64>>;

}  // namespace

BOOST_AUTO_TEST_CASE_TEMPLATE(random_operations_agree_with_the_model, Index, indexes) {
  for (std::uint64_t seed = 1; seed <= seeds(); ++seed) {
    Index idx(typename Index::page_size_type{}, index_options{.model = seed});
    run(idx, seed * 7919, 1500);
  }
}

BOOST_AUTO_TEST_CASE(dynamic_page_size_agrees_with_the_model) {
  for (std::size_t ps : {1u, 16u, 64u})
    for (std::uint64_t seed = 1; seed <= seeds(); ++seed) {
      radix_index<lru> idx{page_size<>(ps)};
      run(idx, 1000 * seed + ps, 1500);
    }
}
