#include <boost/test/unit_test.hpp>

#include <vector>

#include "kvtier/storage.hpp"
#include "kvtier/testing/test_pages.hpp"

using namespace kvtier;
using namespace std::chrono_literals;

namespace {
constexpr std::size_t page = 8192;
memory_tier_config config(std::size_t capacity, bool on_poll = false) {
  return {shapes::llama3_8b(), page, capacity, on_poll};
}
template <class Tier>
void put_pages(Tier& t, std::uint64_t ns, std::size_t first, std::size_t n) {
  testing::page_buffer buf(n, page);
  auto w = testing::page_writes(buf, ns, first, n);
  storage_batch b;
  BOOST_REQUIRE(t.put(w, b).has_value());
  BOOST_REQUIRE(t.wait(b, 1s).has_value());
  BOOST_REQUIRE(b.all_ok());
}
template <class Tier>
testing::ledger get_pages(Tier& t, std::uint64_t ns, std::size_t first, std::size_t n, storage_batch& b) {
  testing::page_buffer buf(n, page);
  auto r = testing::page_reads(buf, ns, first, n);
  BOOST_REQUIRE(t.get(r, b).has_value());
  BOOST_REQUIRE(t.wait(b, 1s).has_value());
  testing::ledger l;
  for (std::size_t i = 0; i < n; ++i) l.check(b[i], buf[i], ns, first + i);
  return l;
}
}  // namespace

BOOST_AUTO_TEST_CASE(round_trip_contains_erase) {
  memory_tier<> t(config(16));
  put_pages(t, 1, 0, 8);
  storage_batch b;
  auto l = get_pages(t, 1, 0, 8, b);
  BOOST_TEST(l.served == 8u);
  BOOST_TEST(l.wrong == 0u);
  std::vector<page_address> a{testing::address_of(1, 0), testing::address_of(1, 99), testing::address_of(2, 0)};
  BOOST_REQUIRE(t.contains(a, b).has_value());
  BOOST_TEST((b[0].code == errc::ok));
  BOOST_TEST((b[1].code == errc::not_found));
  BOOST_TEST((b[2].code == errc::not_found));  // another namespace never shares pages
  BOOST_REQUIRE(t.erase(std::span(a).first(2), b).has_value());
  BOOST_TEST((b[0].code == errc::ok));
  BOOST_TEST((b[1].code == errc::not_found));
  BOOST_TEST(t.usage().pages == 7u);
  BOOST_TEST(t.stats().hits == 8u);
}

BOOST_AUTO_TEST_CASE(lru_eviction_keeps_recently_used) {
  memory_tier<> t(config(4));
  put_pages(t, 1, 0, 4);
  storage_batch b;
  (void)get_pages(t, 1, 0, 1, b);  // page 0 becomes the most recently used
  put_pages(t, 1, 4, 2);           // evicts pages 1 and 2
  std::vector<page_address> a;
  for (std::size_t i = 0; i < 6; ++i) a.push_back(testing::address_of(1, i));
  BOOST_REQUIRE(t.contains(a, b).has_value());
  BOOST_TEST((b[0].code == errc::ok));
  BOOST_TEST((b[1].code == errc::not_found));
  BOOST_TEST((b[2].code == errc::not_found));
  BOOST_TEST((b[3].code == errc::ok));
  BOOST_TEST(t.stats().evictions == 2u);
  BOOST_TEST(t.usage().pages == 4u);
}

BOOST_AUTO_TEST_CASE(completes_on_poll_when_asked) {
  memory_tier<> t(config(4, true));
  testing::page_buffer buf(1, page);
  testing::fill_page(buf[0], 1, 0);
  std::vector<page_write> w{{testing::address_of(1, 0), testing::tokens_of(1, 0), buf[0]}};
  storage_batch b;
  BOOST_REQUIRE(t.put(w, b).has_value());
  BOOST_TEST(!b.done());
  BOOST_TEST((t.put(w, b).code() == errc::busy));  // a batch in flight is not reused
  BOOST_TEST(t.poll() == 1u);
  BOOST_TEST(b.all_ok());
}

BOOST_AUTO_TEST_CASE(damage_and_foreign_pages_are_misses) {
  memory_tier<> t(config(64));
  put_pages(t, 1, 0, 40);
  // Single bit flips: 20 in payloads, 20 in headers.
  for (std::size_t i = 0; i < 20; ++i) BOOST_REQUIRE(t.flip_bit(testing::address_of(1, i), page_header_bytes * 8 + i * 997));
  for (std::size_t i = 20; i < 40; ++i) BOOST_REQUIRE(t.flip_bit(testing::address_of(1, i), (i * 37) % (page_header_bytes * 8)));
  storage_batch b;
  auto l = get_pages(t, 1, 0, 40, b);
  BOOST_TEST_MESSAGE("bit flips: tried " << l.tried << ", corrupted " << l.corrupted << ", wrong " << l.wrong);
  BOOST_TEST(l.corrupted == 40u);
  BOOST_TEST(l.wrong == 0u);
  BOOST_TEST(t.stats().corrupted == 40u);
  // A page of namespace 1 placed under namespace 2's address: intact, but foreign.
  put_pages(t, 1, 100, 1);
  const std::vector<std::byte> raw(t.raw(testing::address_of(1, 100)).begin(), t.raw(testing::address_of(1, 100)).end());
  BOOST_REQUIRE(t.store_raw(testing::address_of(2, 100), raw));
  testing::page_buffer out(1, page);
  std::vector<page_read> r{{testing::address_of(2, 100), testing::tokens_of(1, 100), out[0]}};
  BOOST_REQUIRE(t.get(r, b).has_value());
  BOOST_TEST((b[0].code == errc::corrupted));
  BOOST_TEST(t.stats().foreign == 1u);
  // A tier of another KV shape (same bytes per page) rejects the page.
  memory_tier<> other(memory_tier_config{kv_shape::mha(32, 8, 128, dtype::fp16), page, 4});
  BOOST_REQUIRE(other.store_raw(testing::address_of(1, 100), raw));
  r[0].where = testing::address_of(1, 100);
  BOOST_REQUIRE(other.get(r, b).has_value());
  BOOST_TEST((b[0].code == errc::corrupted));
  BOOST_TEST(other.stats().foreign == 1u);
}

BOOST_AUTO_TEST_CASE(injected_failures_are_values) {
  memory_tier<> t(config(8));
  t.fail_next(2, make_error(errc::io_error, 5));
  testing::page_buffer buf(3, page);
  auto w = testing::page_writes(buf, 1, 0, 3);
  storage_batch b;
  BOOST_REQUIRE(t.put(w, b).has_value());
  BOOST_TEST((b[0].code == errc::io_error));
  BOOST_TEST(b[0].sys_errno == 5);
  BOOST_TEST((b[1].code == errc::io_error));
  BOOST_TEST((b[2].code == errc::ok));
  // A page of the wrong size is refused, not truncated.
  std::vector<std::byte> small(page - 1);
  std::vector<page_write> bad{{testing::address_of(1, 9), 0, small}};
  BOOST_REQUIRE(t.put(bad, b).has_value());
  BOOST_TEST((b[0].code == errc::invalid_argument));
  BOOST_CHECK_THROW(memory_tier<>(config(0)), config_error);
}
