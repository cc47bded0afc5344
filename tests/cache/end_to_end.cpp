// End to end, CPU: thousands of multi-turn chat requests through device → host → slow tiers with
// small capacities, every cached page read back through lookup/prefetch/load and compared byte for
// byte with reference_kv. Zero mismatches, and every tier must have served pages.
#include <boost/test/unit_test.hpp>
#include <boost/mpl/list.hpp>

#include <cstdio>

#include "kvtier/cache.hpp"
#include "kvtier/testing/e2e_setup.hpp"
#include "kvtier/testing/simulated_engine.hpp"
#ifdef KVTIER_TEST_FILE_TIER
#  include "kvtier/storage/file_tier.hpp"
#endif
#ifdef KVTIER_REDIS_SERVER
#  include "kvtier/storage/redis_tier.hpp"
#endif
#include "kvtier/testing/redis_server.hpp"
#include "kvtier/testing/temp_dir.hpp"

using namespace kvtier;
using namespace kvtier::testing;

namespace {

template <class Cache>
typename Cache::config small_config(std::size_t device_pages = 160, std::size_t host_pages = 320) {
  typename Cache::config c{small_shape, {}, device_pages, host_pages};
  return c;
}

memory_tier_config memory_config(std::size_t pages) {
  return {small_shape, small_shape.bytes_per_page(P), pages, /*complete_on_poll=*/true};
}

// Runs workload w through cache on the CPU, every page checked against reference_kv(small_shape,
// gen_seed), then drains the cache's background work.
template <class Cache>
simulated_engine_report run_and_drain(Cache& cache, const chat_workload_config& w, std::uint64_t gen_seed) {
  chat_workload work(w);
  const reference_kv gen(small_shape, gen_seed);
  transfer::cpu_stream stream;
  const auto r = run_chat_workload(cache, work, gen, stream);
  cache.drain();
  return r;
}

template <class Cache>
void report(const char* what, const Cache& c, const simulated_engine_report& r) {
  const cache_stats& s = c.stats();
  BOOST_TEST_MESSAGE(what << ": " << r.requests << " requests, " << r.pages_checked << " pages checked, "
                          << r.rows_mismatched << " rows wrong; hits device " << s.hit_ratio(tier_id::device)
                          << " host " << s.hit_ratio(tier_id::host) << " disk " << s.hit_ratio(tier_id::disk)
                          << " remote " << s.hit_ratio(tier_id::remote) << "; served " << s.served_ratio()
                          << "; loaded " << s.pages_loaded << " backed up " << s.pages_backed_up << " fetched "
                          << s.pages_fetched[2] + s.pages_fetched[3] << " written " << s.pages_written[2] + s.pages_written[3]);
}

}  // namespace

BOOST_AUTO_TEST_CASE(thousands_of_requests_through_device_host_and_a_slow_tier) {
  using cache_type = cache_builder<page_size<P>, device_memory<>, host_memory<>, slow_tiers<slow_tier<memory_tier>>>::cache_type;
  cache_type cache(small_config<cache_type>(), std::make_unique<memory_tier<>>(memory_config(100000)));
  const auto r = run_and_drain(cache, workload(500), 11);
  report("memory tier", cache, r);
  BOOST_TEST(r.requests >= 2000u);
  BOOST_TEST(r.rows_mismatched == 0u);
  BOOST_TEST(r.errors == 0u);
  BOOST_TEST(r.device_full == 0u);
  const cache_stats& s = cache.stats();
  BOOST_TEST(s.hit_tokens[0] > 0u);  // device
  BOOST_TEST(s.pages_loaded > 0u);   // host → device
  BOOST_TEST(s.pages_fetched[2] > 0u);  // slow → host
  BOOST_TEST(s.pages_written[2] > 0u);
  BOOST_TEST(r.pages_checked > 10000u);
  BOOST_TEST(s.served_tokens > 0u);
}

// Policy combinations: every one must serve exactly the right bytes.
struct wt_timeout { using w = write_policies<write_through, write_back>; using p = prefetch_timeout; };
struct selective_best_effort { using w = write_policies<selective_write_through, selective_write_through>; using p = prefetch_best_effort; };
struct wb_wait { using w = write_policies<write_back, write_through>; using p = prefetch_wait; };
using policy_sets = boost::mpl::list<wt_timeout, selective_best_effort, wb_wait>;

BOOST_AUTO_TEST_CASE_TEMPLATE(every_policy_serves_exact_bytes, S, policy_sets) {
  using cache_type = cache_builder<page_size<P>, device_memory<>, host_memory<>, slow_tiers<slow_tier<memory_tier>>,
                                   auto_choice, typename S::w, typename S::p>::cache_type;
  auto cfg = small_config<cache_type>(96, 160);
  cache_type cache(cfg, std::make_unique<memory_tier<>>(memory_config(100000)));
  const auto r = run_and_drain(cache, workload(150, 3), 5);
  report("policies", cache, r);
  BOOST_TEST(r.rows_mismatched == 0u);
  BOOST_TEST(r.errors == 0u);
  BOOST_TEST(r.pages_checked > 1000u);
}

BOOST_AUTO_TEST_CASE(no_slow_tier_drops_below_host) {
  using cache_type = cache_builder<page_size<P>>::cache_type;
  cache_type cache(small_config<cache_type>(96, 128));
  const auto r = run_and_drain(cache, workload(150, 9), 2);
  BOOST_TEST(r.rows_mismatched == 0u);
  BOOST_TEST(r.errors == 0u);
  BOOST_TEST(cache.stats().evicted[1] > 0u);  // host evictions happened, with nowhere below to go
  BOOST_TEST(cache.stats().pages_loaded > 0u);
}

#ifdef KVTIER_TEST_FILE_TIER
BOOST_AUTO_TEST_CASE(file_tier_and_redis) {
  testing::temp_dir dir;
  file_tier_config fc{dir.path, small_shape, small_shape.bytes_per_page(P), 20000, 1024, 32, true, true};
#  ifdef KVTIER_REDIS_SERVER
  testing::redis_server server;
  redis_tier_config rc{small_shape, small_shape.bytes_per_page(P)};
  rc.port = server.port();
  using cache_type = cache_builder<page_size<P>, device_memory<>, host_memory<>,
                                   slow_tiers<slow_tier<file_tier>, slow_tier<redis_tier>>>::cache_type;
  cache_type cache(small_config<cache_type>(), std::make_unique<file_tier<>>(fc), std::make_unique<redis_tier<>>(rc));
#  else
  using cache_type = cache_builder<page_size<P>, device_memory<>, host_memory<>, slow_tiers<slow_tier<file_tier>>>::cache_type;
  cache_type cache(small_config<cache_type>(), std::make_unique<file_tier<>>(fc));
#  endif
  const auto r = run_and_drain(cache, workload(500, 13), 17);
  report("file+redis", cache, r);
  BOOST_TEST(r.requests >= 2000u);
  BOOST_TEST(r.rows_mismatched == 0u);
  BOOST_TEST(r.errors == 0u);
  BOOST_TEST(cache.stats().pages_fetched[2] > 0u);
  BOOST_TEST(cache.stats().pages_written[2] > 0u);
#  ifdef KVTIER_REDIS_SERVER
  BOOST_TEST(cache.stats().pages_written[3] > 0u);
#  endif
}
#endif
