// Remote lookup (kvtier/cache/remote_lookup.hpp): two hierarchical caches, as two engines would,
// sharing one Redis (a redis-server the test starts) or one Redis Cluster (three masters on
// loopback). One writes a document through; the other, whose index has never seen it, finds it by
// asking the shared tier, and every page it serves is compared byte for byte with reference_kv.
// A foreign page under a key (another KV shape, another page's value) is a miss; a remote that is
// down or stalled is a miss within the probe's timeout, never a stuck lookup.
#include <boost/test/unit_test.hpp>

#include <hiredis/hiredis.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "kvtier/cache.hpp"
#include "kvtier/storage/redis_cluster_tier.hpp"
#include "kvtier/storage/redis_tier.hpp"
#include "kvtier/testing/e2e_setup.hpp"
#include "kvtier/testing/redis_cluster.hpp"
#include "kvtier/testing/redis_server.hpp"
#include "kvtier/testing/simulated_engine.hpp"
#include "kvtier/testing/splitmix64.hpp"

using namespace kvtier;
using namespace kvtier::testing;
using namespace std::chrono_literals;

namespace {

template <template <class> class Tier>
using shared_cache = cache_builder<page_size<P>, device_memory<>, host_memory<>, slow_tiers<slow_tier<Tier>>, auto_choice,
                                   write_policies<write_through, write_through>, prefetch_wait>::cache_type;
using redis_cache = shared_cache<redis_tier>;
using cluster_cache = shared_cache<redis_cluster_tier>;

constexpr std::size_t doc_pages = 10;

template <class Cache>
typename Cache::config cache_config(std::size_t probe_pages, kv_shape shape = small_shape) {
  typename Cache::config c{shape, {}, 64, 128};
  c.remote = remote_lookup{probe_pages, 300ms};
  return c;
}

redis_tier_config tier_config(int port, kv_shape shape = small_shape) {
  redis_tier_config rc{shape, shape.bytes_per_page(P)};
  rc.port = port;
  rc.prefix = "share";
  rc.io_timeout = 400ms;
  rc.reconnect_min = 10ms;
  rc.reconnect_max = 40ms;
  return rc;
}

// A document of doc_pages whole pages and a few tokens, with a short reply.
chat_request document(std::uint64_t ns = 1, std::uint64_t seed = 42) {
  chat_request r;
  r.name_space = ns;
  for (std::size_t i = 0; i < doc_pages * P + 5; ++i) r.prompt.push_back(token_id{std::int32_t(3 + splitmix64(seed + i) % 30000)});
  for (std::size_t i = 0; i < 8; ++i) r.reply.push_back(token_id{std::int32_t(3 + splitmix64(seed * 7 + i) % 30000)});
  return r;
}

// One request through the cache as an engine runs it (every cached page checked against the
// reference), then the cache's background work drained (its pages written through).
template <class Cache>
simulated_engine_report serve(Cache& c, const chat_request& r, const reference_kv& gen) {
  typename Cache::stream_type stream;
  bool given = false;
  const auto rep = run_simulated_engine(c, [&]() -> std::optional<chat_request> {
    if (given) return std::nullopt;
    given = true;
    return r;
  }, gen, stream);
  c.drain();
  return rep;
}

// The keys the document's pages have in every cache of model 0 (chained, as the index makes them).
std::vector<page_address> page_addresses(const chat_request& r) {
  std::vector<page_address> out;
  page_key key = root_page_key;
  for (std::size_t i = 0; i + P <= r.prompt.size(); i += P) {
    key = chain_page_key(namespace_id{r.name_space}, 0, key, std::span(r.prompt).subspan(i, P));
    out.push_back({namespace_id{r.name_space}, key});
  }
  return out;
}

// A lookup alone (no load): the prefix it finds and how long it took.
template <class Cache>
std::pair<std::size_t, std::chrono::milliseconds> lookup_only(Cache& c, const chat_request& r) {
  typename Cache::lease_type l;
  const auto t0 = std::chrono::steady_clock::now();
  BOOST_REQUIRE(c.lookup(namespace_id{r.name_space}, r.prompt, l));
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  const std::size_t found = l.pages().size();
  BOOST_REQUIRE(c.release(l));
  return {found, took};
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_second_cache_serves_what_the_first_wrote_byte_exact) {
  redis_server server;
  const reference_kv gen(small_shape, 9);
  const chat_request doc = document();
  redis_cache a(cache_config<redis_cache>(0), std::make_unique<redis_tier<>>(tier_config(server.port())));
  const auto wrote = serve(a, doc, gen);
  BOOST_TEST(wrote.pages_computed > 0u);
  BOOST_TEST(a.stats().pages_written[std::size_t(redis_cache::slow_tier_id(0))] == doc_pages);

  // Without remote lookup the second cache knows nothing of it.
  redis_cache blind(cache_config<redis_cache>(0), std::make_unique<redis_tier<>>(tier_config(server.port())));
  BOOST_TEST(lookup_only(blind, doc).first == 0u);

  redis_cache b(cache_config<redis_cache>(64), std::make_unique<redis_tier<>>(tier_config(server.port())));
  const auto read = serve(b, doc, gen);
  BOOST_TEST_MESSAGE("remote lookup: " << read.pages_checked << " pages served from the shared Redis, "
                                       << read.rows_mismatched << " rows wrong");
  BOOST_TEST(read.errors == 0u);
  BOOST_TEST(read.pages_checked == doc_pages);  // every whole page of the prompt reused
  BOOST_TEST(read.rows_mismatched == 0u);
  const cache_stats& s = b.stats();
  BOOST_TEST(s.remote_probes == 1u);
  BOOST_TEST(s.remote_pages_adopted == doc_pages);
  BOOST_TEST(s.pages_fetched[std::size_t(redis_cache::slow_tier_id(0))] == doc_pages);
  BOOST_TEST(s.served_tokens == doc_pages * P);

  // A second lookup of the same prompt finds it in b's own index: no probe.
  BOOST_TEST(lookup_only(b, doc).first == doc_pages);
  BOOST_TEST(b.stats().remote_probes == 1u);

  // The probe is bounded: with max_pages 4, four pages are adopted per lookup.
  redis_cache c(cache_config<redis_cache>(4), std::make_unique<redis_tier<>>(tier_config(server.port())));
  BOOST_TEST(lookup_only(c, doc).first == 4u);
  BOOST_TEST(lookup_only(c, doc).first == 8u);
  BOOST_TEST(c.stats().remote_pages_adopted == 8u);
}

BOOST_AUTO_TEST_CASE(foreign_pages_are_misses) {
  redis_server server;
  const reference_kv gen(small_shape, 9);
  const chat_request doc = document();
  redis_cache a(cache_config<redis_cache>(0), std::make_unique<redis_tier<>>(tier_config(server.port())));
  (void)serve(a, doc, gen);

  // Another KV shape with the same page size (bf16 for fp16): the keys are there, the pages are not its.
  const kv_shape other = kv_shape::mha(4, 2, 32, dtype::bf16);
  redis_cache b(cache_config<redis_cache>(64, other), std::make_unique<redis_tier<>>(tier_config(server.port(), other)));
  typename redis_cache::stream_type stream;
  typename redis_cache::lease_type l;
  BOOST_REQUIRE(b.lookup(namespace_id{1}, doc.prompt, l));
  BOOST_TEST(l.storage_pages() == doc_pages);  // adopted: the tier holds the keys
  b.prefetch(l);
  BOOST_REQUIRE(b.load(l, stream));
  BOOST_TEST(l.cached_pages() == 0u);  // every read found another shape's page: computed
  BOOST_TEST(b.slow_tier<0>().stats().foreign == doc_pages);
  BOOST_TEST(b.stats().prefetch_missed == doc_pages);
  BOOST_REQUIRE(b.release(l));

  // Page 4's key holding page 0's value: pages 0-3 are served exactly, the rest computed.
  const std::vector<page_address> where = page_addresses(doc);
  const auto& tier = a.slow_tier<0>();
  BOOST_REQUIRE(std::system(("redis-cli -p " + std::to_string(server.port()) + " COPY " + tier.key_of(where[0]) + " " +
                             tier.key_of(where[4]) + " REPLACE >/dev/null").c_str()) == 0);
  redis_cache c(cache_config<redis_cache>(64), std::make_unique<redis_tier<>>(tier_config(server.port())));
  const auto read = serve(c, doc, gen);
  BOOST_TEST(read.pages_checked == 4u);
  BOOST_TEST(read.rows_mismatched == 0u);
  BOOST_TEST(c.slow_tier<0>().stats().foreign == 1u);

  // Another namespace has other keys: nothing to adopt.
  redis_cache d(cache_config<redis_cache>(64), std::make_unique<redis_tier<>>(tier_config(server.port())));
  BOOST_TEST(lookup_only(d, document(2)).first == 0u);
  BOOST_TEST(d.stats().remote_pages_adopted == 0u);
}

BOOST_AUTO_TEST_CASE(a_remote_down_or_stalled_is_a_miss_never_stuck) {
  const reference_kv gen(small_shape, 9);
  const chat_request doc = document();
  {  // Killed: the probe fails at once (connection refused).
    redis_server server;
    redis_cache a(cache_config<redis_cache>(0), std::make_unique<redis_tier<>>(tier_config(server.port())));
    (void)serve(a, doc, gen);
    redis_cache b(cache_config<redis_cache>(64), std::make_unique<redis_tier<>>(tier_config(server.port())));
    server.stop(SIGKILL);
    const auto [found, took] = lookup_only(b, doc);
    BOOST_TEST_MESSAGE("remote killed: lookup in " << took.count() << " ms, " << found << " pages");
    BOOST_TEST(found == 0u);
    BOOST_TEST(took.count() <= 300 + 200);
    const auto r = serve(b, doc, gen);  // the engine computes it all
    BOOST_TEST(r.pages_checked == 0u);
    BOOST_TEST(r.errors == 0u);
  }
  {  // Stalled (SIGSTOP): one lookup waits the probe's timeout, the next skip the probe; back once resumed.
    redis_server server;
    redis_cache a(cache_config<redis_cache>(0), std::make_unique<redis_tier<>>(tier_config(server.port())));
    (void)serve(a, doc, gen);
    redis_cache b(cache_config<redis_cache>(64), std::make_unique<redis_tier<>>(tier_config(server.port())));
    ::kill(server.pid(), SIGSTOP);
    const auto [found, took] = lookup_only(b, doc);
    const auto [found2, took2] = lookup_only(b, doc);
    BOOST_TEST_MESSAGE("remote stalled: lookups in " << took.count() << " ms, then " << took2.count() << " ms");
    ::kill(server.pid(), SIGCONT);
    BOOST_TEST(found == 0u);
    BOOST_TEST(found2 == 0u);
    BOOST_TEST(took.count() >= 290);
    BOOST_TEST(took.count() <= 300 + 250);
    BOOST_TEST(took2.count() <= 100);  // the late probe is still out: not asked again
    BOOST_TEST(b.stats().remote_probe_timeouts == 2u);
    std::size_t found3 = 0;
    for (int i = 0; i < 40 && found3 == 0; ++i) {
      std::this_thread::sleep_for(50ms);
      found3 = lookup_only(b, doc).first;
    }
    BOOST_TEST(found3 == doc_pages);
    const auto r = serve(b, doc, gen);
    BOOST_TEST(r.pages_checked == doc_pages);
    BOOST_TEST(r.rows_mismatched == 0u);
  }
}

BOOST_AUTO_TEST_CASE(two_caches_share_a_redis_cluster) {
  redis_cluster cluster(redis_cluster::options{.masters = 3, .replicas = 0});
  auto tier = [&] {
    redis_cluster_tier_config cfg{.shape = small_shape, .page_bytes = small_shape.bytes_per_page(P), .seeds = cluster.seeds()};
    cfg.prefix = "share";
    cfg.io_timeout = 2000ms;
    return std::make_unique<redis_cluster_tier<>>(cfg);
  };
  const reference_kv gen(small_shape, 9);
  cluster_cache a(cache_config<cluster_cache>(0), tier());
  cluster_cache b(cache_config<cluster_cache>(64), tier());
  for (std::uint64_t d = 0; d < 4; ++d) {  // four documents: their pages land on every master
    const chat_request doc = document(1, 100 + d);
    (void)serve(a, doc, gen);
    const auto read = serve(b, doc, gen);
    BOOST_TEST(read.pages_checked == doc_pages);
    BOOST_TEST(read.rows_mismatched == 0u);
  }
  BOOST_TEST(b.stats().remote_pages_adopted == 4 * doc_pages);
  std::size_t masters_used = 0;
  for (const std::size_t m : cluster.masters()) {
    const reply_ptr r = cluster.command(m, {"DBSIZE"});
    masters_used += r && r->type == REDIS_REPLY_INTEGER && r->integer > 0;
  }
  BOOST_TEST(masters_used == 3u);
}

BOOST_AUTO_TEST_CASE(remote_lookup_needs_a_slow_tier_and_a_timeout) {
  using plain = cache_builder<page_size<P>>::cache_type;
  plain::config c{small_shape, {}, 8, 8};
  c.remote = remote_lookup{4, 50ms};
  BOOST_CHECK_THROW(plain{c}, config_error);
  redis_server server;
  auto cfg = cache_config<redis_cache>(4);
  cfg.remote.timeout = 0ms;
  BOOST_CHECK_THROW(redis_cache(cfg, std::make_unique<redis_tier<>>(tier_config(server.port()))), config_error);
}

// Without redis-server or redis-cli there is nothing to share: say so, exit 77 (skipped).
int main(int argc, char* argv[]) {
  if (::access(KVTIER_REDIS_SERVER, X_OK) != 0 || std::system("redis-cli --version >/dev/null 2>&1") != 0) {
    std::printf("SKIPPED: redis-server (%s) or redis-cli not found; the remote lookup tests did not run\n", KVTIER_REDIS_SERVER);
    return 77;
  }
  return boost::unit_test::unit_test_main(&init_unit_test, argc, argv);
}
