// slot_allocator: random alloc/free sequences against a reference set, exhaustion as a value,
// batches all or nothing, foreign and double frees rejected without changing anything.
#include <boost/test/unit_test.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/data/monomorphic.hpp>

#include <algorithm>
#include <random>
#include <set>
#include <vector>

#include "kvtier/memory/slot_allocator.hpp"

using namespace kvtier;
using memory::slot_allocator;
namespace bdata = boost::unit_test::data;

namespace {
using alloc_t = slot_allocator<host_tier>;

// The allocator's view must equal the reference set of handed-out ids, slot by slot.
void check_against(const alloc_t& a, const std::set<std::uint32_t>& ref) {
  BOOST_TEST(a.used() == ref.size());
  BOOST_TEST(a.available() == a.capacity() - ref.size());
  for (std::uint32_t i = 0; i < a.capacity(); ++i)
    BOOST_TEST(a.is_allocated(host_slot{i}) == (ref.count(i) == 1), "slot " << i);
}
}  // namespace

static_assert(std::is_same_v<alloc_t::slot_type, host_slot>);
static_assert(!std::is_invocable_v<decltype(&alloc_t::is_allocated), const alloc_t&, device_slot>);

BOOST_AUTO_TEST_CASE(hands_out_every_slot_once_then_reports_exhaustion) {
  alloc_t a(5);
  std::set<std::uint32_t> seen;
  for (int i = 0; i < 5; ++i) {
    auto s = a.allocate();
    BOOST_REQUIRE(s.has_value());
    BOOST_TEST(s->value() == std::uint32_t(i));  // 0, 1, 2, … first
    seen.insert(s->value());
  }
  BOOST_TEST(seen.size() == 5u);
  auto full = a.allocate();
  BOOST_TEST(!full.has_value());
  BOOST_TEST((full.code() == errc::capacity_exhausted));
  BOOST_TEST(a.stats().failed_allocations == 1u);
  BOOST_TEST(a.used() == 5u);
  BOOST_TEST(a.available() == 0u);
}

BOOST_AUTO_TEST_CASE(freed_slot_is_reused_first) {
  alloc_t a(4);
  for (int i = 0; i < 4; ++i) (void)a.allocate();
  BOOST_TEST(a.free(host_slot{2}).has_value());
  auto s = a.allocate();
  BOOST_REQUIRE(s.has_value());
  BOOST_TEST(s->value() == 2u);
}

BOOST_AUTO_TEST_CASE(batch_is_all_or_nothing) {
  alloc_t a(10);
  std::vector<host_slot> six(6), five(5);
  BOOST_REQUIRE(a.allocate(std::span(six)).has_value());
  BOOST_TEST(a.used() == 6u);
  const auto before = a.stats();
  auto r = a.allocate(std::span(five));  // only 4 left
  BOOST_TEST((r.code() == errc::capacity_exhausted));
  BOOST_TEST(a.used() == 6u);            // nothing taken
  BOOST_TEST(a.stats().allocated == before.allocated);
  BOOST_TEST(a.stats().failed_allocations == before.failed_allocations + 1);
  std::vector<host_slot> four(4);
  BOOST_REQUIRE(a.allocate(std::span(four)).has_value());
  BOOST_TEST(a.available() == 0u);
  std::set<std::uint32_t> all;
  for (auto s : six) all.insert(s.value());
  for (auto s : four) all.insert(s.value());
  BOOST_TEST(all.size() == 10u);  // distinct ids
  std::vector<host_slot> none;
  BOOST_TEST(a.allocate(std::span(none)).has_value());  // an empty batch always succeeds
}

BOOST_AUTO_TEST_CASE(foreign_and_double_frees_are_rejected_without_effect) {
  alloc_t a(3);
  auto s = a.allocate();
  BOOST_REQUIRE(s.has_value());
  BOOST_TEST((a.free(host_slot{3}).code() == errc::invalid_argument));    // out of range
  BOOST_TEST((a.free(host_slot{}).code() == errc::invalid_argument));     // the invalid id
  BOOST_TEST((a.free(host_slot{1}).code() == errc::invalid_argument));    // never allocated
  BOOST_TEST(a.free(*s).has_value());
  BOOST_TEST((a.free(*s).code() == errc::invalid_argument));              // double free
  BOOST_TEST(a.stats().rejected_frees == 4u);
  BOOST_TEST(a.used() == 0u);
  BOOST_TEST(a.available() == 3u);
  BOOST_TEST(!a.contains(host_slot{3}));
  BOOST_TEST(a.contains(host_slot{2}));
}

BOOST_AUTO_TEST_CASE(batch_free_is_all_or_nothing) {
  alloc_t a(8);
  std::vector<host_slot> got(4);
  BOOST_REQUIRE(a.allocate(std::span(got)).has_value());
  // A repeated id inside one batch is a double free: the whole batch is refused.
  const std::vector<host_slot> repeated{got[0], got[1], got[0]};
  BOOST_TEST((a.free(std::span<const host_slot>(repeated)).code() == errc::invalid_argument));
  BOOST_TEST(a.used() == 4u);
  for (auto s : got) BOOST_TEST(a.is_allocated(s));
  // A foreign id at the end: nothing before it is freed either.
  const std::vector<host_slot> foreign{got[0], got[1], host_slot{100}};
  BOOST_TEST((a.free(std::span<const host_slot>(foreign)).code() == errc::invalid_argument));
  BOOST_TEST(a.used() == 4u);
  BOOST_TEST(a.free(std::span<const host_slot>(got)).has_value());
  BOOST_TEST(a.used() == 0u);
  BOOST_TEST(a.stats().freed == 4u);
  BOOST_TEST(a.stats().rejected_frees == 2u);
}

BOOST_AUTO_TEST_CASE(bad_capacity_is_a_config_error) {
  BOOST_CHECK_THROW(alloc_t(0), config_error);
  BOOST_CHECK_THROW(alloc_t(std::size_t{1} << 32), config_error);
}

// Random mixes of single and batch allocations and frees (some deliberately wrong) against a
// std::set of handed-out ids; after every step the allocator and the set agree on every slot.
BOOST_DATA_TEST_CASE(random_sequences_match_a_reference_set,
                     bdata::make({1u, 2u, 7u, 64u, 257u}) * bdata::make({1u, 2u, 3u}), capacity, seed) {
  std::mt19937 rng(seed * 7919u + capacity);
  alloc_t a(capacity);
  std::set<std::uint32_t> ref;
  std::size_t high_water = 0, failed = 0, rejected = 0;
  for (int step = 0; step < 3000; ++step) {
    const int op = int(rng() % 6);
    if (op == 0) {
      auto s = a.allocate();
      if (ref.size() == capacity) {
        BOOST_REQUIRE((s.code() == errc::capacity_exhausted));
        ++failed;
      } else {
        BOOST_REQUIRE(s.has_value());
        BOOST_REQUIRE(s->value() < capacity);
        BOOST_REQUIRE(ref.insert(s->value()).second);  // never handed out twice
      }
    } else if (op == 1) {
      std::vector<host_slot> batch(rng() % (capacity + 2));
      auto r = a.allocate(std::span(batch));
      if (batch.size() > capacity - ref.size()) {
        BOOST_REQUIRE((r.code() == errc::capacity_exhausted));
        ++failed;
      } else {
        BOOST_REQUIRE(r.has_value());
        for (auto s : batch) BOOST_REQUIRE(ref.insert(s.value()).second);
      }
    } else if (op == 2 || op == 3) {
      // Free one id drawn from [0, capacity + 1]: held ones succeed, others are rejected.
      const std::uint32_t id = std::uint32_t(rng() % (capacity + 2));
      auto r = a.free(host_slot{id});
      if (ref.erase(id) == 1) {
        BOOST_REQUIRE(r.has_value());
      } else {
        BOOST_REQUIRE((r.code() == errc::invalid_argument));
        ++rejected;
      }
    } else {
      // Free a batch of held ids, sometimes spoiled by one bad id.
      std::vector<std::uint32_t> held(ref.begin(), ref.end());
      std::shuffle(held.begin(), held.end(), rng);
      held.resize(held.empty() ? 0 : rng() % (held.size() + 1));
      std::vector<host_slot> batch;
      for (auto h : held) batch.push_back(host_slot{h});
      const bool spoil = op == 5 && !batch.empty();
      if (spoil) batch.push_back(rng() % 2 ? batch.front() : host_slot{std::uint32_t(capacity + rng() % 3)});
      auto r = a.free(std::span<const host_slot>(batch));
      if (spoil) {
        BOOST_REQUIRE((r.code() == errc::invalid_argument));
        ++rejected;
      } else {
        BOOST_REQUIRE(r.has_value());
        for (auto h : held) ref.erase(h);
      }
    }
    high_water = std::max(high_water, ref.size());
    BOOST_REQUIRE(a.used() == ref.size());
    BOOST_REQUIRE(a.available() == capacity - ref.size());
  }
  check_against(a, ref);
  BOOST_TEST(a.high_water() == high_water);
  BOOST_TEST(a.stats().failed_allocations == failed);
  BOOST_TEST(a.stats().rejected_frees == rejected);
  BOOST_TEST(a.stats().allocated - a.stats().freed == ref.size());
}
