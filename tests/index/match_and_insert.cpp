// match_and_insert against match() followed by insert(): two indexes fed the same random requests,
// one through the two calls, one through the fused walk, must answer alike (match result, insert
// counts, path) and end in the same state: the same pages, residencies and locks, and the same
// eviction order (every victim of a full collect_victims pass per tier, after every request), so
// the policy's state (lru ticks, lfu counts, priorities, look-ahead hints) was touched alike.
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include <random>
#include <vector>

#include "kvtier/index.hpp"

using namespace kvtier;

namespace {

template <class Index>
void same_victims(Index& a, Index& b, const char* when) {
  for (tier_id t : {tier_id::device, tier_id::host}) {
    std::vector<page_id> va, vb;
    a.collect_victims(t, a.pages() + 1, va);
    b.collect_victims(t, b.pages() + 1, vb);
    BOOST_TEST_REQUIRE((va == vb), when << ": victims of tier " << int(t));
  }
  BOOST_TEST_REQUIRE(a.pages() == b.pages());
  BOOST_TEST_REQUIRE(a.nodes() == b.nodes());
  BOOST_TEST_REQUIRE(a.clock() == b.clock());
}

template <class Index>
void run(std::uint64_t seed) {
  constexpr std::size_t ps = 4;
  Index two{page_size<ps>{}}, one{page_size<ps>{}};
  std::mt19937_64 rng(seed);
  auto pick = [&](std::size_t bound) { return std::size_t(rng() % bound); };
  std::vector<std::vector<token_id>> prompts{{}};
  std::vector<std::vector<page_id>> leases;  // held by both indexes alike (same ids)
  match_result ma, mb;
  std::vector<page_id> pa, pb;
  for (int step = 0; step < 400; ++step) {
    // A prompt sharing a prefix with an earlier one, tokens from a tiny vocabulary.
    auto base = prompts[pick(prompts.size())];
    base.resize(base.empty() ? 0 : pick(base.size() + 1));
    for (std::size_t k = pick(6 * ps); k > 0; --k) base.push_back(token_id{std::int32_t(pick(2))});
    prompts.push_back(base);
    const namespace_id ns{1 + pick(2)};
    const match_options mo{.lock = pick(4) == 0, .touch = pick(4) != 0, .priority = std::uint8_t(pick(3))};
    const insert_options io{.lock = pick(4) == 0, .priority = std::uint8_t(pick(3))};
    page_residency r;
    r.tiers.bits = std::uint8_t(pick(8));
    if (pick(4) == 0) r.in_flight.bits = std::uint8_t(pick(8) & r.tiers.bits);
    if constexpr (look_ahead_policy<typename Index::policy_type>) {
      if (pick(3) == 0) {
        two.expect(ns, base);
        one.expect(ns, base);
      }
    }
    two.match(ns, base, ma, mo);
    const insert_result ra = two.insert(ns, base, r, io, &pa);
    const insert_result rb = pick(2) == 0 ? one.match_and_insert(ns, base, mb, r, mo, io, &pb)
                                          : one.match_and_insert(ns, base, mb, [&](std::size_t) { return r; }, mo,
                                                                 io, &pb);
    BOOST_TEST_REQUIRE((ma.pages == mb.pages));
    BOOST_TEST_REQUIRE((ma.sources == mb.sources));
    BOOST_TEST_REQUIRE((ma.device_pages == mb.device_pages && ma.host_pages == mb.host_pages &&
                        ma.storage_pages == mb.storage_pages && ma.locked == mb.locked));
    BOOST_TEST_REQUIRE((ra.pages == rb.pages && ra.existing == rb.existing && ra.inserted == rb.inserted));
    BOOST_TEST_REQUIRE((pa == pb));
    for (page_id p : pa) {
      BOOST_TEST_REQUIRE((two.info(p)->residency == one.info(p)->residency));
      BOOST_TEST_REQUIRE(two.info(p)->locks == one.info(p)->locks);
    }
    if (ma.locked) leases.push_back(ma.pages);
    if (io.lock) leases.push_back(pa);
    same_victims(two, one, "after a request");
    if (!leases.empty() && pick(2) == 0) {
      const std::size_t k = pick(leases.size());
      BOOST_TEST_REQUIRE(two.unlock(leases[k]).has_value());
      BOOST_TEST_REQUIRE(one.unlock(leases[k]).has_value());
      leases.erase(leases.begin() + std::ptrdiff_t(k));
    }
    if (pick(3) == 0) {  // evict a few device copies from both, refusing some alike
      const std::size_t n = 1 + pick(8);
      std::vector<page_id> ta, tb;
      auto take = [&](std::vector<page_id>& into) {
        // The pages taken are compared, not every offer: a refused node may be offered again
        // in the same pass when the heap holds two entries of it with the same key (match and
        // insert both pushed it), and the fused walk pushes it once.
        return [&into, parity = seed % 2](const victim& v) {
          const bool take = (v.page.value() + parity) % 5 != 0;
          if (take) into.push_back(v.page);
          return take;
        };
      };
      two.evict(tier_id::device, n, take(ta));
      one.evict(tier_id::device, n, take(tb));
      BOOST_TEST_REQUIRE((ta == tb));
      same_victims(two, one, "after eviction");
    }
  }
}

using indexes = boost::mpl::list<radix_index<lru, 4>, radix_index<lfu_aging, 4>, radix_index<priority_lru, 4>,
                                 radix_index<look_ahead<lru>, 4>>;

}  // namespace

BOOST_AUTO_TEST_CASE_TEMPLATE(fused_walk_ends_as_match_then_insert, Index, indexes) {
  for (std::uint64_t seed = 1; seed <= 10; ++seed) run<Index>(seed);
}
