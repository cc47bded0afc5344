#include <boost/test/unit_test.hpp>

#include <numeric>
#include <vector>

#include "kvtier/index.hpp"

using namespace kvtier;

namespace {

std::vector<token_id> seq(int first, std::size_t n) {
  std::vector<token_id> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = token_id{first + int(i)};
  return v;
}
std::vector<token_id> cat(std::vector<token_id> a, const std::vector<token_id>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}
const namespace_id ns1{1}, ns2{2};
const auto accept_all = [](const victim&) { return true; };

}  // namespace

BOOST_AUTO_TEST_CASE(only_whole_pages_are_indexed) {
  radix_index<lru, 4> idx;
  const auto t = seq(0, 10);  // 2 whole pages and 2 tokens
  const auto r = idx.insert(ns1, t, on_device(device_slot{7}));
  BOOST_TEST(r.pages == 2u);
  BOOST_TEST(r.inserted == 2u);
  BOOST_TEST(idx.pages() == 2u);
  const auto m = idx.match(ns1, t);
  BOOST_TEST(m.size() == 2u);
  BOOST_TEST(m.device_pages == 2u);
  BOOST_TEST(idx.match(ns1, seq(0, 3)).empty());  // less than a page never matches
  BOOST_TEST(idx.match(ns1, seq(0, 7)).size() == 1u);
}

BOOST_AUTO_TEST_CASE(partial_match_splits_and_shares_the_prefix) {
  radix_index<lru> idx(page_size(4));
  const auto common = seq(0, 8);
  const auto a = cat(common, seq(100, 8));
  const auto b = cat(common, seq(200, 12));
  BOOST_TEST(idx.insert(ns1, a, on_device(device_slot{1})).inserted == 4u);
  BOOST_TEST(idx.nodes() == 2u);  // root + one edge of 4 pages
  const auto rb = idx.insert(ns1, b, on_device(device_slot{2}));
  BOOST_TEST(rb.existing == 2u);
  BOOST_TEST(rb.inserted == 3u);
  BOOST_TEST(idx.nodes() == 4u);  // root, shared head, two tails
  BOOST_TEST(idx.pages() == 7u);
  BOOST_TEST(idx.match(ns1, a).size() == 4u);
  BOOST_TEST(idx.match(ns1, b).size() == 5u);
  // Diverging in the middle of a page: only the whole pages before it match.
  auto c = a;
  c[9] = token_id{-1};
  BOOST_TEST(idx.match(ns1, c).size() == 2u);
  // Handles of the shared pages are the same for both prompts.
  const auto ma = idx.match(ns1, a), mb = idx.match(ns1, b);
  BOOST_TEST((ma.pages[0] == mb.pages[0] && ma.pages[1] == mb.pages[1]));
  BOOST_TEST((ma.pages[2] != mb.pages[2]));
}

BOOST_AUTO_TEST_CASE(namespaces_never_share_pages) {
  radix_index<lru, 2> idx;
  const auto t = seq(5, 8);
  (void)idx.insert(ns1, t, on_device(device_slot{1}));
  BOOST_TEST(idx.match(ns2, t).empty());
  (void)idx.insert(ns2, t, on_host(host_slot{3}));
  const auto m1 = idx.match(ns1, t), m2 = idx.match(ns2, t);
  BOOST_TEST(m1.device_pages == 4u);
  BOOST_TEST(m2.host_pages == 4u);
  for (std::size_t i = 0; i < 4; ++i) {
    BOOST_TEST((m1.pages[i] != m2.pages[i]));
    BOOST_TEST((idx.info(m1.pages[i])->key != idx.info(m2.pages[i])->key));
    BOOST_TEST((idx.info(m2.pages[i])->ns == ns2));
  }
}

BOOST_AUTO_TEST_CASE(page_keys_are_chained_xxh3_128) {
  radix_index<lru, 4> idx(page_size<4>{}, index_options{.model = 42});
  const auto t = seq(0, 12);
  std::vector<page_id> path;
  (void)idx.insert(ns1, t, on_device(device_slot{0}), {}, &path);
  BOOST_TEST_REQUIRE(path.size() == 3u);
  page_key parent = root_page_key;
  for (std::size_t i = 0; i < 3; ++i) {
    const page_key k = chain_page_key(ns1, 42, parent, std::span(t).subspan(i * 4, 4));
    BOOST_TEST((idx.info(path[i])->key == k));
    parent = k;
  }
  // The model and the namespace both enter the key.
  const auto page0 = std::span(t).first(4);
  BOOST_TEST((chain_page_key(ns1, 42, root_page_key, page0) != chain_page_key(ns1, 43, root_page_key, page0)));
  BOOST_TEST((chain_page_key(ns1, 42, root_page_key, page0) != chain_page_key(ns2, 42, root_page_key, page0)));
  // Large pages hash the same bytes through the per-thread buffer.
  const auto big = seq(0, 1000);
  BOOST_TEST((chain_page_key(ns1, 1, root_page_key, big) == chain_page_key(ns1, 1, root_page_key, big)));
  BOOST_TEST((chain_page_key(ns1, 1, root_page_key, big) != chain_page_key(ns1, 1, root_page_key, std::span(big).first(999))));
}

BOOST_AUTO_TEST_CASE(tier_breakdown_and_in_flight) {
  radix_index<lru, 1> idx;
  const auto t = seq(0, 6);
  std::vector<page_id> path;
  // pages 0-1 on device, 2-3 host only, 4 disk only, 5 remote only
  (void)idx.insert(ns1, t, [](std::size_t i) {
    page_residency r;
    if (i < 2) r = on_device(device_slot{std::uint32_t(i)});
    else if (i < 4) r = on_host(host_slot{std::uint32_t(i)});
    else r.tiers.add(i == 4 ? tier_id::disk : tier_id::remote);
    if (i == 2) r.tiers.add(tier_id::disk);
    return r;
  }, {}, &path);
  auto m = idx.match(ns1, t);
  BOOST_TEST(m.size() == 6u);
  BOOST_TEST(m.device_pages == 2u);
  BOOST_TEST(m.host_pages == 2u);
  BOOST_TEST(m.storage_pages == 2u);
  BOOST_TEST((m.sources[2] == page_source::host));
  BOOST_TEST((m.sources[5] == page_source::storage));
  BOOST_TEST(idx.info(path[0])->residency.device.value() == 0u);
  BOOST_TEST(idx.info(path[3])->residency.host.value() == 3u);

  // A copy being loaded is not served; the slower ready copy is.
  BOOST_TEST(idx.add_tier(path[2], tier_id::device, true).has_value());
  m = idx.match(ns1, t);
  BOOST_TEST((m.sources[2] == page_source::host));
  BOOST_TEST(idx.set_device_slot(path[2], device_slot{9}).has_value());
  BOOST_TEST(idx.set_in_flight(path[2], tier_id::device, false).has_value());
  m = idx.match(ns1, t);
  BOOST_TEST((m.sources[2] == page_source::device));
  BOOST_TEST(idx.info(path[2])->residency.device.value() == 9u);
  // A page whose only copy is in flight ends the prefix.
  BOOST_TEST(idx.set_in_flight(path[4], tier_id::disk, true).has_value());
  BOOST_TEST(idx.match(ns1, t).size() == 4u);
  BOOST_TEST((idx.set_in_flight(path[4], tier_id::host, true).code() == errc::not_found));
  BOOST_TEST((idx.set_host_slot(path[0], host_slot{1}).code() == errc::not_found));
  BOOST_TEST((idx.remove_tier(path[0], tier_id::remote).code() == errc::not_found));
}

BOOST_AUTO_TEST_CASE(eviction_is_leaves_first_and_keeps_lower_tiers) {
  radix_index<lru, 2> idx;
  const auto t = seq(0, 8);
  std::vector<page_id> path;
  (void)idx.insert(ns1, t, [](std::size_t i) {
    auto r = on_device(device_slot{std::uint32_t(i)});
    r.tiers.add(tier_id::host);
    r.host = host_slot{std::uint32_t(i)};
    return r;
  }, {}, &path);
  std::vector<page_id> order;
  BOOST_TEST(idx.evict(tier_id::device, 2, [&](const victim& v) {
    BOOST_TEST((v.tier == tier_id::device));
    BOOST_TEST(v.residency.device.valid());
    order.push_back(v.page);
    return true;
  }) == 2u);
  BOOST_TEST_REQUIRE(order.size() == 2u);
  BOOST_TEST((order[0] == path[3] && order[1] == path[2]));  // deepest first
  BOOST_TEST(idx.pages() == 4u);                             // still on host
  const auto m = idx.match(ns1, t);
  BOOST_TEST(m.device_pages == 2u);
  BOOST_TEST(m.host_pages == 2u);
  BOOST_TEST(!idx.info(path[3])->residency.device.valid());
  // Dropping the host copies of pages that are nowhere else removes them from the tree.
  BOOST_TEST(idx.evict(tier_id::host, 2, accept_all) == 2u);
  BOOST_TEST(idx.pages() == 2u);
  BOOST_TEST(!idx.contains(path[3]));
  BOOST_TEST(idx.pages_in(tier_id::device) == 2u);
  BOOST_TEST(idx.pages_in(tier_id::host) == 2u);
}

BOOST_AUTO_TEST_CASE(locks_and_in_flight_block_eviction) {
  radix_index<lru, 1> idx;
  const auto t = seq(0, 4);
  (void)idx.insert(ns1, t, on_device(device_slot{0}));
  auto m = idx.match(ns1, std::span(t).first(3), match_options{.lock = true});
  BOOST_TEST(m.locked);
  BOOST_TEST(idx.evict(tier_id::device, 10, accept_all) == 1u);  // only the unlocked leaf
  BOOST_TEST(idx.pages() == 3u);
  BOOST_TEST(idx.lock(m.pages).has_value());  // nested
  BOOST_TEST(idx.unlock(m.pages).has_value());
  BOOST_TEST(idx.evict(tier_id::device, 10, accept_all) == 0u);
  BOOST_TEST(idx.unlock(m.pages).has_value());
  BOOST_TEST((idx.unlock(m.pages).code() == errc::invalid_argument));  // not locked any more
  BOOST_TEST(idx.set_in_flight(m.pages[2], tier_id::device, true).has_value());
  BOOST_TEST(idx.evict(tier_id::device, 10, accept_all) == 0u);  // the leaf is in flight
  BOOST_TEST(idx.set_in_flight(m.pages[2], tier_id::device, false).has_value());
  BOOST_TEST(idx.evict(tier_id::device, 10, accept_all) == 3u);
  BOOST_TEST(idx.pages() == 0u);
  BOOST_TEST(idx.nodes() == 1u);  // the namespace root
  BOOST_TEST((idx.lock(m.pages).code() == errc::invalid_argument));
}

BOOST_AUTO_TEST_CASE(refused_victims_stay_and_collect_does_not_drop) {
  radix_index<lru, 1> idx;
  const auto t = seq(0, 4);
  std::vector<page_id> path;
  (void)idx.insert(ns1, t, on_device(device_slot{0}), {}, &path);
  std::vector<page_id> peek;
  BOOST_TEST(idx.collect_victims(tier_id::device, 3, peek) == 3u);
  BOOST_TEST((peek == std::vector<page_id>{path[3], path[2], path[1]}));
  BOOST_TEST(idx.pages() == 4u);
  // Write-back: keep the victim, start its backup (host copy in flight); it is skipped meanwhile.
  BOOST_TEST(idx.evict(tier_id::device, 1, [&](const victim& v) {
    BOOST_TEST(idx.add_tier(v.page, tier_id::host, true).has_value());
    return false;
  }) == 0u);
  BOOST_TEST(idx.evict(tier_id::device, 1, accept_all) == 0u);
  BOOST_TEST(idx.set_host_slot(path[3], host_slot{5}).has_value());
  BOOST_TEST(idx.set_in_flight(path[3], tier_id::host, false).has_value());
  BOOST_TEST(idx.evict(tier_id::device, 1, accept_all) == 1u);
  BOOST_TEST(idx.match(ns1, t).host_pages == 1u);
}

BOOST_AUTO_TEST_CASE(remove_tier_and_reinsert_fill_holes) {
  radix_index<lru, 1> idx;
  const auto t = seq(0, 4);
  std::vector<page_id> path;
  (void)idx.insert(ns1, t, on_device(device_slot{0}), {}, &path);
  BOOST_TEST(idx.remove_tier(path[1], tier_id::device).has_value());  // a hole: kept in the tree
  BOOST_TEST(idx.match(ns1, t).size() == 1u);
  BOOST_TEST(idx.contains(path[1]));
  const auto r = idx.insert(ns1, t, on_host(host_slot{4}));
  BOOST_TEST(r.existing == 3u);
  BOOST_TEST(r.inserted == 1u);
  BOOST_TEST(idx.match(ns1, t).size() == 4u);
  BOOST_TEST(idx.match(ns1, t).host_pages == 1u);
}

BOOST_AUTO_TEST_CASE(bookkeeping_stays_under_64_bytes_a_page) {
  radix_index<lru, 16> idx;
  std::vector<token_id> t(16 * 1024);
  std::iota(reinterpret_cast<std::int32_t*>(t.data()), reinterpret_cast<std::int32_t*>(t.data()) + t.size(), 0);
  for (int r = 0; r < 64; ++r) {  // 64 prompts sharing 256 pages, each with 768 of its own
    for (std::size_t i = 4096; i < t.size(); ++i) t[i] = token_id{r * 1'000'000 + int(i)};
    (void)idx.insert(ns1, t, on_device(device_slot{0}));
  }
  const double per_page = double(idx.memory_bytes()) / double(idx.pages());
  BOOST_TEST_MESSAGE("bytes per cached page: " << per_page << " over " << idx.pages() << " pages");
  BOOST_TEST(idx.pages() == 256u + 64u * 768u);
  BOOST_TEST(per_page <= 64.0);
}

BOOST_AUTO_TEST_CASE(static_and_dynamic_page_sizes_agree) {
  radix_index<lru, 8> a;
  radix_index<lru> b(page_size(8));
  static_assert(decltype(a)::page_size_type::is_static && !decltype(b)::page_size_type::is_static);
  const auto t = seq(3, 50);
  std::vector<page_id> pa, pb;
  (void)a.insert(ns1, t, on_device(device_slot{0}), {}, &pa);
  (void)b.insert(ns1, t, on_device(device_slot{0}), {}, &pb);
  BOOST_TEST(pa.size() == 6u);
  for (std::size_t i = 0; i < pa.size(); ++i) BOOST_TEST((a.info(pa[i])->key == b.info(pb[i])->key));
  BOOST_CHECK_THROW(radix_index<lru>(page_size(0)), config_error);
}

// The request lifecycle docs/index.md shows (a free list stands in for the device pool).
BOOST_AUTO_TEST_CASE(cache_lifecycle_as_documented) {
  radix_index<lru, 4> idx;
  std::vector<device_slot> free_slots;
  for (std::uint32_t s = 0; s < 8; ++s) free_slots.push_back(device_slot{s});
  const std::size_t need = 2;
  const auto prompt = seq(0, 16);
  (void)idx.insert(ns1, std::span(prompt).first(8), on_device(device_slot{100}));
  // [lifecycle]
  auto lease = idx.match(ns1, prompt, match_options{.lock = true});  // device/host/storage breakdown
  std::vector<device_slot> slots(prompt.size() / 4);
  for (std::size_t i = lease.size(); i < slots.size(); ++i) {  // compute the rest into fresh slots
    slots[i] = free_slots.back();
    free_slots.pop_back();
  }
  (void)idx.insert(ns1, prompt, [&](std::size_t i) { return on_device(slots[i]); });
  (void)idx.unlock(lease.pages);
  idx.evict(tier_id::device, need, [&](const victim& v) {
    if (!v.residency.tiers.has(tier_id::host)) {  // write-back: back it up first
      (void)idx.add_tier(v.page, tier_id::host, /*in_flight=*/true);
      return false;
    }
    free_slots.push_back(v.residency.device);
    return true;
  });
  // when a backup completes: set_host_slot(page, s); set_in_flight(page, tier_id::host, false)
  // [lifecycle]
  BOOST_TEST(lease.device_pages == 2u);
  BOOST_TEST(idx.match(ns1, prompt).size() == 4u);
  // The deepest page is now backing up; finish its backup and evict again.
  const page_id last = idx.match(ns1, prompt).pages.back();
  BOOST_TEST(idx.info(last)->residency.in_flight.has(tier_id::host));
  BOOST_TEST(idx.set_host_slot(last, host_slot{1}).has_value());
  BOOST_TEST(idx.set_in_flight(last, tier_id::host, false).has_value());
  BOOST_TEST(idx.evict(tier_id::device, 1, [&](const victim& v) {
    free_slots.push_back(v.residency.device);
    return true;
  }) == 1u);
  BOOST_TEST(free_slots.size() == 7u);
  BOOST_TEST(idx.match(ns1, prompt).host_pages == 1u);
}

// Device copies dropped one page at a time from a long node (host copies stay); a page loaded
// back to the device in the middle of the dropped tail becomes a victim again.
BOOST_AUTO_TEST_CASE(one_page_at_a_time_through_a_long_node) {
  radix_index<lru, 1> idx;
  const auto t = seq(0, 200);
  std::vector<page_id> path;
  (void)idx.insert(ns1, t, [](std::size_t i) {
    auto r = on_device(device_slot{std::uint32_t(i)});
    r.tiers.add(tier_id::host);
    return r;
  }, {}, &path);
  std::vector<page_id> order;
  const auto take = [&](const victim& v) {
    order.push_back(v.page);
    return true;
  };
  for (int k = 0; k < 150; ++k) BOOST_TEST(idx.evict(tier_id::device, 1, take) == 1u);
  BOOST_TEST(idx.pages_in(tier_id::device) == 50u);
  BOOST_TEST((order.back() == path[50]));
  BOOST_TEST(idx.add_tier(path[120], tier_id::device).has_value());  // loaded back
  BOOST_TEST(idx.evict(tier_id::device, 1, take) == 1u);
  BOOST_TEST((order.back() == path[120]));
  BOOST_TEST(idx.evict(tier_id::device, 100, take) == 50u);
  BOOST_TEST(idx.pages_in(tier_id::device) == 0u);
  BOOST_TEST(idx.pages() == 200u);  // all still on host
  BOOST_TEST(idx.match(ns1, t).host_pages == 200u);
}
