// Unit test of detail::slot_directory: free slots lowest first, LRU eviction that skips pinned
// slots, a newer copy replacing an older one, retirement of a slot read from, restart recovery.
#include <boost/test/unit_test.hpp>

#include <vector>

#include "kvtier/storage/detail/slot_directory.hpp"

using namespace kvtier;
using namespace kvtier::detail;

namespace {
page_address addr(std::uint64_t i) { return {namespace_id{1}, page_key{i, i * 7}}; }

std::uint32_t write(slot_directory& d, std::uint64_t page, std::uint64_t& evictions, std::uint64_t seq = 0) {
  const auto s = d.take(evictions);
  BOOST_REQUIRE(s.has_value());
  d.begin_write(*s, addr(page), seq);
  d.publish(*s);
  return *s;
}
}  // namespace

BOOST_AUTO_TEST_CASE(free_slots_go_lowest_first_then_lru_evicts) {
  slot_directory d(4);
  d.recover([](auto) {}, {});  // an empty directory: every slot free
  std::uint64_t evictions = 0;
  for (std::uint64_t p = 0; p < 4; ++p) BOOST_TEST(write(d, p, evictions) == p);
  BOOST_TEST(d.pages() == 4u);
  const std::uint32_t s0 = *d.find(addr(0));
  const std::uint64_t use = d.pin(s0);  // a read of page 0, served: page 0 is the most recently used
  d.unpin(s0);
  d.touch(s0, use);  // page 1 goes first now
  BOOST_TEST(write(d, 10, evictions) == 1u);
  BOOST_TEST(evictions == 1u);
  BOOST_TEST(!d.find(addr(1)));
  BOOST_TEST(*d.find(addr(10)) == 1u);
}

// io_uring completes the writes (and reads) of one batch in any order. Recency is the order the
// requests were made in: a batch put as 0..5 ages as 0..5 whatever order its I/O finished in
// (CI once saw page 7 evicted before page 5 when the LRU followed completion order).
BOOST_AUTO_TEST_CASE(recency_follows_request_order_not_completion_order) {
  slot_directory d(6);
  d.recover([](auto) {}, {});
  std::uint64_t evictions = 0;
  std::vector<std::uint32_t> slot(6);
  for (std::uint64_t p = 0; p < 6; ++p) {  // requested in order 0..5
    slot[p] = *d.take(evictions);
    d.begin_write(slot[p], addr(p), p + 1);
  }
  for (std::uint64_t p : {5, 2, 0, 4, 1, 3}) d.publish(slot[p]);  // completed out of order
  // Reads of pages 1 then 0 requested; page 0's read completes first.
  const std::uint64_t use1 = d.pin(slot[1]);
  const std::uint64_t use0 = d.pin(slot[0]);
  d.unpin(slot[0]);
  d.touch(slot[0], use0);
  d.unpin(slot[1]);
  d.touch(slot[1], use1);
  // LRU order now, oldest first: 2, 3, 4, 5, 1, 0.
  for (std::uint64_t p : {2, 3, 4, 5, 1, 0}) {
    const auto s = d.take(evictions);
    BOOST_REQUIRE(s.has_value());
    BOOST_TEST(*s == slot[p], "evicted slot " << *s << ", expected page " << p << "'s");
  }
  BOOST_TEST(evictions == 6u);
}

BOOST_AUTO_TEST_CASE(a_stale_touch_never_makes_a_page_older) {
  slot_directory d(2);
  d.recover([](auto) {}, {});
  std::uint64_t evictions = 0;
  const auto a = write(d, 0, evictions);
  const std::uint64_t early = d.pin(a);  // a read requested before page 1 was written
  const auto b = write(d, 1, evictions);
  const std::uint64_t late = d.pin(a);
  d.unpin(a);
  d.touch(a, late);
  d.unpin(a);
  d.touch(a, early);  // completes last, but was requested first: a stays the newest
  BOOST_TEST(*d.take(evictions) == b);
}

BOOST_AUTO_TEST_CASE(pinned_slots_are_not_evicted_and_retire_when_released) {
  slot_directory d(2);
  d.recover([](auto) {}, {});
  std::uint64_t evictions = 0;
  const auto a = write(d, 0, evictions);
  const auto b = write(d, 1, evictions);
  d.pin(a);
  d.pin(b);
  BOOST_TEST(!d.take(evictions).has_value());  // both read from: nothing to evict
  d.unpin(b);
  BOOST_TEST(*d.take(evictions) == b);
  // A newer copy of page 0 while slot a is still read from: a retires, and is free after the read.
  d.begin_write(b, addr(0), 5);
  d.publish(b);
  BOOST_TEST(*d.find(addr(0)) == b);
  BOOST_TEST(d[a].retired);
  BOOST_TEST(d.take(evictions).has_value());  // b is idle in the LRU: evictable
}

BOOST_AUTO_TEST_CASE(retired_slot_is_freed_by_its_last_read) {
  slot_directory d(2);
  d.recover([](auto) {}, {});
  std::uint64_t evictions = 0;
  const auto a = write(d, 0, evictions);
  d.pin(a);
  d.pin(a);
  d.release(a);
  BOOST_TEST(d[a].retired);
  d.unpin(a);
  BOOST_TEST((d[a].state == slot_state::valid));  // one read still runs
  d.unpin(a);
  BOOST_TEST((d[a].state == slot_state::free));
  const auto s1 = d.take(evictions), s2 = d.take(evictions);
  BOOST_TEST((s1 && s2));
  BOOST_TEST(evictions == 0u);  // both came from the free list
}

BOOST_AUTO_TEST_CASE(unmap_hides_a_page_and_abandon_frees_a_slot) {
  slot_directory d(3);
  d.recover([](auto) {}, {});
  std::uint64_t evictions = 0;
  const auto a = write(d, 0, evictions);
  d.unmap(a);
  BOOST_TEST(!d.find(addr(0)));
  BOOST_TEST((d[a].state == slot_state::clearing));
  BOOST_TEST(!d.maps(addr(0), a));
  d.release(a);
  BOOST_TEST((d[a].state == slot_state::free));
  const auto t = d.take(evictions);
  d.begin_write(*t, addr(5), 1);
  d.abandon(*t);  // the write failed
  BOOST_TEST(!d.find(addr(5)));
  BOOST_TEST(d.drop_free_range(0, 3) == 3u);  // every slot free again, then dropped
  BOOST_TEST(!d.take(evictions).has_value());
}

BOOST_AUTO_TEST_CASE(recovery_indexes_the_newest_copy_and_counts_the_rest) {
  const kv_shape shape = shapes::llama3_8b();
  const std::vector<std::byte> payload(64, std::byte{1});
  auto header = [&](std::uint64_t page, std::uint64_t seq) {
    return make_page_header(shape, addr(page), 0, 0, payload, 64, seq);
  };
  page_header damaged = header(3, 9);
  damaged.key_lo ^= 1;  // header checksum no longer matches
  page_header other_shape = make_page_header(kv_shape::mha(80, 8, 128, dtype::bf16), addr(4), 0, 0, payload, 64, 10);
  slot_directory d(8);
  const recovery_counts n = d.recover(
      [&](auto visit) {
        visit(0, header(1, 5));
        visit(2, header(1, 7));  // newer copy of page 1
        visit(5, header(2, 6));
        visit(6, damaged);
        visit(7, other_shape);
      },
      {shape.fingerprint(), 0, 64, 64});
  BOOST_TEST(n.recovered == 2u);
  BOOST_TEST(n.corrupted == 1u);
  BOOST_TEST(n.foreign == 1u);
  BOOST_TEST(n.max_sequence == 7u);
  BOOST_TEST(*d.find(addr(1)) == 2u);
  BOOST_TEST(*d.find(addr(2)) == 5u);
  std::uint64_t evictions = 0;
  std::vector<std::uint32_t> handed;
  while (auto s = d.take(evictions)) {
    if (evictions > 0) break;
    handed.push_back(*s);
  }
  BOOST_TEST(handed == (std::vector<std::uint32_t>{0, 1, 3, 4, 6, 7}), boost::test_tools::per_element());
  BOOST_TEST(evictions == 1u);  // then the oldest recovered page (page 2, sequence 6) goes
  BOOST_TEST(!d.find(addr(2)));
}
