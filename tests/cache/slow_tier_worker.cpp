// The I/O thread that drives one slow tier: batches submitted from the caller's thread complete
// on the worker, statuses come back through drain(), payloads land intact. Run under TSan too.
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <cstring>
#include <vector>

#include "kvtier/cache/detail/slow_tier_worker.hpp"
#include "kvtier/storage/memory_tier.hpp"

using namespace kvtier;
using namespace std::chrono_literals;

namespace {
constexpr std::size_t page_bytes = 256;

page_address addr(std::uint64_t i) { return page_address{namespace_id{1}, page_key{i, ~i}}; }

std::vector<std::byte> payload(std::uint64_t i) {
  std::vector<std::byte> p(page_bytes);
  for (std::size_t b = 0; b < p.size(); ++b) p[b] = std::byte((i * 131 + b) & 0xff);
  return p;
}

std::vector<detail::slow_completion> drain_all(detail::slow_tier_worker<memory_tier<>>& w, std::size_t tickets) {
  std::vector<detail::slow_completion> out;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (out.size() < tickets && std::chrono::steady_clock::now() < deadline) {
    w.drain(out);
    std::this_thread::sleep_for(100us);
  }
  return out;
}
}  // namespace

BOOST_AUTO_TEST_CASE(puts_then_gets_round_trip_on_the_io_thread) {
  memory_tier<> tier({shapes::llama3_8b(), page_bytes, 1000, /*complete_on_poll=*/true});
  constexpr std::size_t pages = 200, per_batch = 8;
  std::vector<std::vector<std::byte>> src(pages), dst(pages, std::vector<std::byte>(page_bytes));
  for (std::size_t i = 0; i < pages; ++i) src[i] = payload(i);
  {
    detail::slow_tier_worker<memory_tier<>> worker(tier);
    std::size_t tickets = 0;
    for (std::size_t b = 0; b < pages; b += per_batch) {
      std::vector<page_write> ws;
      for (std::size_t i = b; i < b + per_batch; ++i) ws.push_back({addr(i), i, src[i]});
      (void)worker.submit_put(std::move(ws));
      ++tickets;
    }
    auto done = drain_all(worker, tickets);
    BOOST_TEST_REQUIRE(done.size() == tickets);
    for (auto& c : done) {
      BOOST_TEST((c.op == detail::slow_op::put));
      for (auto& e : c.status) BOOST_TEST((e.code == errc::ok));
    }
    // Gets, one expecting the wrong token fingerprint (a miss, never data).
    std::vector<page_read> rs;
    for (std::size_t i = 0; i < pages; ++i) rs.push_back({addr(i), i == 7 ? 999 : i, dst[i]});
    const auto t = worker.submit_get(std::move(rs));
    BOOST_TEST(worker.wait_for(t, std::chrono::steady_clock::now() + 10s));
    std::vector<detail::slow_completion> got;
    worker.drain(got);
    BOOST_TEST_REQUIRE(got.size() == 1u);
    BOOST_TEST(got[0].ticket == t);
    BOOST_TEST_REQUIRE(got[0].status.size() == pages);
    for (std::size_t i = 0; i < pages; ++i) {
      if (i == 7) {
        BOOST_TEST((got[0].status[i].code == errc::corrupted));
      } else {
        BOOST_TEST((got[0].status[i].code == errc::ok));
        BOOST_TEST(std::memcmp(dst[i].data(), src[i].data(), page_bytes) == 0);
      }
    }
    BOOST_TEST(worker.outstanding() == 0u);
  }
  BOOST_TEST(tier.stats().puts == pages);
}

BOOST_AUTO_TEST_CASE(failures_come_back_as_values) {
  memory_tier<> tier({shapes::llama3_8b(), page_bytes, 10, true});
  tier.fail_next(2, make_error(errc::connection_lost));
  auto p = payload(1);
  detail::slow_tier_worker<memory_tier<>> worker(tier);
  const auto t = worker.submit_put({{addr(1), 1, p}, {addr(2), 2, p}, {addr(3), 3, p}});
  BOOST_TEST(worker.wait_for(t, std::chrono::steady_clock::now() + 10s));
  std::vector<detail::slow_completion> c;
  worker.drain(c);
  BOOST_TEST_REQUIRE(c.size() == 1u);
  BOOST_TEST((c[0].status[0].code == errc::connection_lost));
  BOOST_TEST((c[0].status[1].code == errc::connection_lost));
  BOOST_TEST((c[0].status[2].code == errc::ok));
  // A payload of the wrong size is refused per request, not by throwing.
  std::vector<std::byte> small(8);
  const auto t2 = worker.submit_put({{addr(4), 4, small}});
  BOOST_TEST(worker.wait_for(t2, std::chrono::steady_clock::now() + 10s));
  c.clear();
  worker.drain(c);
  BOOST_TEST_REQUIRE(c.size() == 1u);
  BOOST_TEST((c[0].status[0].code == errc::invalid_argument));
}

BOOST_AUTO_TEST_CASE(destruction_finishes_batches_in_flight) {
  memory_tier<> tier({shapes::llama3_8b(), page_bytes, 1000, true});
  std::vector<std::vector<std::byte>> src(64);
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = payload(i);
  {
    detail::slow_tier_worker<memory_tier<>> worker(tier);
    for (std::size_t i = 0; i < src.size(); ++i) (void)worker.submit_put({{addr(i), i, src[i]}});
  }  // joins after every batch completed
  BOOST_TEST(tier.stats().puts == src.size());
}

BOOST_AUTO_TEST_CASE(contains_probes_are_taken_by_ticket_and_leave_other_batches_to_drain) {
  memory_tier<> tier({shapes::llama3_8b(), page_bytes, 100, true});
  auto p = payload(5);
  detail::slow_tier_worker<memory_tier<>> worker(tier);
  const auto put = worker.submit_put({{addr(1), 1, p}, {addr(2), 2, p}});
  BOOST_TEST(worker.wait_for(put, std::chrono::steady_clock::now() + 10s));
  const auto probe = worker.submit_contains({addr(1), addr(3), addr(2)});
  BOOST_TEST(worker.wait_for(probe, std::chrono::steady_clock::now() + 10s));
  detail::slow_completion c;
  BOOST_TEST(worker.take(probe, c));
  BOOST_TEST(c.ticket == probe);
  BOOST_TEST((c.op == detail::slow_op::contains));
  BOOST_TEST_REQUIRE(c.status.size() == 3u);
  BOOST_TEST((c.status[0].code == errc::ok));
  BOOST_TEST((c.status[1].code == errc::not_found));
  BOOST_TEST((c.status[2].code == errc::ok));
  std::vector<detail::slow_completion> rest;  // the put's completion is still there for drain()
  worker.drain(rest);
  BOOST_TEST_REQUIRE(rest.size() == 1u);
  BOOST_TEST(rest[0].ticket == put);
  // A ticket already drained is finished: take() says so and leaves `out` as it was.
  detail::slow_completion untouched;
  BOOST_TEST(worker.take(put, untouched));
  BOOST_TEST(untouched.status.empty());
}
