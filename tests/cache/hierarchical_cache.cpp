// The request lifecycle and the policies of hierarchical_cache, one behaviour per test case, on a
// tiny shape so that every page can be checked.
#include <boost/test/unit_test.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "kvtier/cache.hpp"
#include "kvtier/testing/faulty_tier.hpp"
#include "kvtier/testing/simulated_engine.hpp"

using namespace kvtier;
using namespace kvtier::testing;
using namespace std::chrono_literals;

namespace {

const kv_shape shape = kv_shape::mha(2, 1, 8, dtype::fp32);  // 32-byte rows
constexpr std::size_t P = 4;

std::vector<token_id> tokens(std::size_t n, int seed = 1) {
  std::vector<token_id> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = token_id{std::int32_t(seed * 100000 + i)};
  return t;
}

// A memory_tier whose batches complete `delay` after submission: a slow disk or a far Redis.
class delayed_tier {
 public:
  using kvtier_storage_backend = storage_backend_tag;
  delayed_tier(memory_tier_config c, std::chrono::milliseconds delay) : inner_(c), delay_(delay) {}

  result<void> put(std::span<const page_write> w, storage_batch& b) noexcept { return hold(b, [&](storage_batch& i) { return inner_.put(w, i); }); }
  result<void> get(std::span<const page_read> r, storage_batch& b) noexcept { return hold(b, [&](storage_batch& i) { return inner_.get(r, i); }); }
  result<void> contains(std::span<const page_address> a, storage_batch& b) noexcept { return inner_.contains(a, b); }
  result<void> erase(std::span<const page_address> a, storage_batch& b) noexcept { return inner_.erase(a, b); }
  std::size_t poll() noexcept {
    std::size_t n = 0;
    const auto now = std::chrono::steady_clock::now();
    std::erase_if(held_, [&](held& h) {
      if (now < h.due) return false;
      for (std::size_t i = 0; i < h.status.size(); ++i) h.batch->complete(i, h.status[i]);
      n += h.status.size();
      return true;
    });
    return n;
  }
  result<void> wait(storage_batch& b, std::chrono::milliseconds t) noexcept {
    const auto until = std::chrono::steady_clock::now() + t;
    while (!b.done() && std::chrono::steady_clock::now() < until) {
      poll();
      if (!b.done()) std::this_thread::sleep_for(200us);
    }
    return b.done() ? result<void>{} : make_error(errc::timeout);
  }
  kv_shape shape() const noexcept { return inner_.shape(); }
  storage_usage usage() const noexcept { return inner_.usage(); }
  storage_stats stats() const noexcept { return inner_.stats(); }

 private:
  struct held {
    storage_batch* batch;
    std::vector<error> status;
    std::chrono::steady_clock::time_point due;
  };
  template <class F>
  result<void> hold(storage_batch& b, F&& f) noexcept {
    storage_batch inner;
    if (auto r = f(inner); !r) return r;
    if (!b.begin(inner.size())) return make_error(errc::busy);
    held_.push_back({&b, std::vector<error>(inner.status().begin(), inner.status().end()), std::chrono::steady_clock::now() + delay_});
    return {};
  }
  memory_tier<> inner_;
  std::chrono::milliseconds delay_;
  std::vector<held> held_;
};
template <class C>
struct delayed_template : delayed_tier {
  using delayed_tier::delayed_tier;
};
static_assert(storage_backend<delayed_tier>);

template <class Cache>
typename Cache::config config(std::size_t device_pages, std::size_t host_pages) {
  return typename Cache::config{shape, {}, device_pages, host_pages};
}

// Computes the KV of tokens [cached, n) into fresh slots and commits: what an engine does.
template <class Cache>
void prefill_and_commit(Cache& c, typename Cache::lease_type& l, std::span<const token_id> t, const reference_kv& gen,
                        std::uint64_t ns) {
  const auto hashes = gen.prefix_hashes(ns, t);
  const std::size_t whole = t.size() / P, cached = l.cached_pages();
  std::vector<device_slot> slots(whole - cached);
  BOOST_TEST_REQUIRE(c.allocate(slots).has_value());
  for (std::size_t i = cached; i < whole; ++i)
    host_device_access::write_rows(c, slots[i - cached], 0, P, gen, hashes, i * P);
  BOOST_TEST_REQUIRE(c.commit(l, t, slots).has_value());
}

// Four other 32-token prompts of namespace 1, each computed, committed and drained in turn: enough
// traffic to push an earlier prefix out of device and host (small caches) into the slow tier.
template <class Cache>
void push_down_with_other_traffic(Cache& c, typename Cache::lease_type& l, const reference_kv& gen) {
  for (int k = 2; k < 6; ++k) {
    const auto other = tokens(32, k);
    BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, other, l).has_value());
    prefill_and_commit(c, l, other, gen, 1);
    BOOST_TEST(c.release(l).has_value());
    c.drain();
  }
}

template <class Cache>
std::size_t check_lease(Cache& c, const typename Cache::lease_type& l, std::span<const token_id> t, const reference_kv& gen,
                        std::uint64_t ns) {
  const auto hashes = gen.prefix_hashes(ns, t);
  std::size_t bad = 0;
  for (std::size_t i = 0; i < l.cached_pages(); ++i)
    bad += host_device_access::check_page(c, l.device_slots()[i], gen, hashes, i * P);
  return bad;
}

using plain_cache = cache_builder<page_size<P>>::cache_type;

}  // namespace

BOOST_AUTO_TEST_CASE(lookup_commit_lookup) {
  plain_cache c(config<plain_cache>(32, 32));
  const reference_kv gen(shape);
  const auto t = tokens(30);  // 7 whole pages and 2 tokens
  plain_cache::lease_type l;
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, t, l).has_value());
  BOOST_TEST(l.cached_pages() == 0u);
  BOOST_TEST(l.tokens_to_compute() == 30u);
  BOOST_TEST((c.lookup(namespace_id{1}, t, l).code() == errc::invalid_argument));  // still active
  prefill_and_commit(c, l, t, gen, 1);
  BOOST_TEST(l.cached_pages() == 7u);
  BOOST_TEST(c.release(l).has_value());
  BOOST_TEST(!l.active());

  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, t, l).has_value());
  BOOST_TEST(l.device_pages() == 7u);
  BOOST_TEST(l.cached_pages() == 7u);
  BOOST_TEST(l.tokens_to_compute() == 2u);
  BOOST_TEST(check_lease(c, l, t, gen, 1) == 0u);
  BOOST_TEST(c.release(l).has_value());

  // Another namespace never sees these pages; a longer prompt with the same prefix does.
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{2}, t, l).has_value());
  BOOST_TEST(l.cached_pages() == 0u);
  BOOST_TEST(c.release(l).has_value());
  auto longer = t;
  longer.resize(60, token_id{5});
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, longer, l).has_value());
  BOOST_TEST(l.cached_pages() == 7u);
  BOOST_TEST(l.tokens_to_compute() == 60u - 28u);
  BOOST_TEST(c.release(l).has_value());
  BOOST_TEST(c.stats().lookups == 4u);
}

BOOST_AUTO_TEST_CASE(misuse_is_an_error_value) {
  plain_cache c(config<plain_cache>(8, 8));
  const auto t = tokens(16);
  plain_cache::lease_type l;
  transfer::cpu_stream s;
  BOOST_TEST((c.load(l, s).code() == errc::invalid_argument));  // never looked up
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, t, l).has_value());
  std::vector<device_slot> slots(3);
  BOOST_TEST_REQUIRE(c.allocate(slots).has_value());
  BOOST_TEST((c.commit(l, t, slots).code() == errc::invalid_argument));  // 4 pages, 3 slots
  std::vector<device_slot> foreign = {device_slot{7}, device_slot{6}, device_slot{5}, device_slot{4}};
  BOOST_TEST((c.commit(l, t, foreign).code() == errc::invalid_argument));  // not allocated
  BOOST_TEST(c.load(l, s).has_value());
  BOOST_TEST((c.load(l, s).code() == errc::invalid_argument));  // twice
  BOOST_TEST(c.free(slots).has_value());
  BOOST_TEST(c.release(l).has_value());
  BOOST_CHECK_THROW(plain_cache(config<plain_cache>(0, 8)), config_error);
}

BOOST_AUTO_TEST_CASE(locked_pages_are_never_evicted) {
  plain_cache c(config<plain_cache>(4, 8));
  const reference_kv gen(shape);
  const auto t = tokens(16);
  plain_cache::lease_type l;
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, t, l).has_value());
  prefill_and_commit(c, l, t, gen, 1);  // all 4 device pages, locked by l
  c.drain();                            // write-through backups land on host
  std::vector<device_slot> one(1);
  BOOST_TEST((c.allocate(one).code() == errc::capacity_exhausted));
  BOOST_TEST(c.stats().device_full == 1u);
  BOOST_TEST(c.release(l).has_value());
  BOOST_TEST_REQUIRE(c.allocate(one).has_value());  // now a victim (with a host copy) goes
  BOOST_TEST(c.stats().evicted[0] == 1u);
  BOOST_TEST(c.stats().dropped[0] == 0u);
  BOOST_TEST(c.free(one).has_value());
  // The evicted page is loaded back from host, byte for byte.
  transfer::cpu_stream s;
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, t, l).has_value());
  BOOST_TEST(l.device_pages() == 3u);
  BOOST_TEST(l.host_pages() == 1u);
  BOOST_TEST_REQUIRE(c.load(l, s).has_value());
  for (std::size_t layer = 0; layer < shape.layers(); ++layer) BOOST_TEST(c.wait_layer(l, layer).has_value());
  BOOST_TEST(c.layer_ready(l, 1));
  BOOST_TEST(l.cached_pages() == 4u);
  BOOST_TEST(check_lease(c, l, t, gen, 1) == 0u);
  BOOST_TEST(c.stats().pages_loaded == 1u);
  BOOST_TEST(c.release(l).has_value());
}

BOOST_AUTO_TEST_CASE(write_through_backs_up_on_commit_write_back_on_eviction) {
  const reference_kv gen(shape);
  const auto t = tokens(32);  // 8 pages
  {
    plain_cache c(config<plain_cache>(16, 16));  // write_through by default
    plain_cache::lease_type l;
    BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, t, l).has_value());
    prefill_and_commit(c, l, t, gen, 1);
    BOOST_TEST(c.release(l).has_value());
    c.drain();
    BOOST_TEST(c.index().pages_in(tier_id::host) == 8u);
    BOOST_TEST(c.stats().pages_backed_up == 8u);
  }
  {
    using wb = cache_builder<page_size<P>, device_memory<>, host_memory<>, slow_tiers<>, auto_choice,
                             write_policies<write_back>>::cache_type;
    wb c(config<wb>(8, 16));
    wb::lease_type l;
    BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, t, l).has_value());
    prefill_and_commit(c, l, t, gen, 1);
    BOOST_TEST(c.release(l).has_value());
    c.drain();
    BOOST_TEST(c.index().pages_in(tier_id::host) == 0u);  // nothing copied yet
    std::vector<device_slot> s(3);
    BOOST_TEST_REQUIRE(c.allocate(s).has_value());        // 3 victims: backed up first
    BOOST_TEST(c.stats().pages_backed_up >= 3u);
    BOOST_TEST(c.stats().dropped[0] == 0u);
    BOOST_TEST(c.free(s).has_value());
    c.drain();
    transfer::cpu_stream st;
    BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, t, l).has_value());
    BOOST_TEST(l.host_pages() >= 3u);
    BOOST_TEST_REQUIRE(c.load(l, st).has_value());
    for (std::size_t layer = 0; layer < shape.layers(); ++layer) BOOST_TEST(c.wait_layer(l, layer).has_value());
    BOOST_TEST(l.cached_pages() == 8u);
    BOOST_TEST(check_lease(c, l, t, gen, 1) == 0u);
    BOOST_TEST(c.release(l).has_value());
  }
}

BOOST_AUTO_TEST_CASE(selective_write_through_waits_for_the_nth_hit_and_drops_cold_victims) {
  using sel = cache_builder<page_size<P>, device_memory<>, host_memory<>, slow_tiers<>, auto_choice,
                            write_policies<selective_write_through>>::cache_type;
  auto cfg = config<sel>(8, 16);
  cfg.write_to_host = selective_write_through{3};
  sel c(cfg);
  const reference_kv gen(shape);
  const auto t = tokens(16);
  sel::lease_type l;
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, t, l).has_value());
  prefill_and_commit(c, l, t, gen, 1);
  BOOST_TEST(c.release(l).has_value());
  for (int hit = 1; hit <= 3; ++hit) {
    BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, t, l).has_value());
    BOOST_TEST(c.release(l).has_value());
    c.poll();
    c.drain();
    BOOST_TEST(c.index().pages_in(tier_id::host) == (hit < 3 ? 0u : 4u));
  }
  // Cold pages (never hit) are dropped, not backed up, when the device needs room.
  const auto cold = tokens(16, 2);
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, cold, l).has_value());
  prefill_and_commit(c, l, cold, gen, 1);
  BOOST_TEST(c.release(l).has_value());
  std::vector<device_slot> s(8);
  BOOST_TEST_REQUIRE(c.allocate(s).has_value());
  BOOST_TEST(c.stats().dropped[0] == 4u);
  BOOST_TEST(c.stats().evicted[0] == 8u);
  BOOST_TEST(c.free(s).has_value());
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, cold, l).has_value());
  BOOST_TEST(l.pages().size() == 0u);  // gone from the hierarchy
  BOOST_TEST(c.release(l).has_value());
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, t, l).has_value());
  BOOST_TEST(l.host_pages() == 4u);  // the hot pages survived below
  BOOST_TEST(c.release(l).has_value());
}

// Pushes a prefix down to a slow tier (device and host both full of other pages), then reads it
// back under prefetch policy Prefetch.
template <class Prefetch>
struct prefetch_case {
  using cache = cache_builder<page_size<P>, device_memory<>, host_memory<>, slow_tiers<slow_tier<delayed_template>>,
                             auto_choice, write_policies<write_through, write_through>, Prefetch>::cache_type;
  const reference_kv gen{shape};
  const std::vector<token_id> t = tokens(32);  // 8 pages
  cache c;
  transfer::cpu_stream stream;
  typename cache::lease_type l;

  explicit prefetch_case(Prefetch p = {})
      : c(make_config(p), std::make_unique<delayed_template<identity_codec>>(
                             memory_tier_config{shape, shape.bytes_per_page(P), 1000, false}, 30ms)) {
    BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, t, l).has_value());
    prefill_and_commit(c, l, t, gen, 1);
    BOOST_TEST(c.release(l).has_value());
    c.drain();  // backed up to host, then written to the slow tier
    push_down_with_other_traffic(c, l, gen);  // other traffic pushes it out of device and host
    BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, t, l).has_value());
    BOOST_TEST_REQUIRE(l.storage_pages() == 8u);
  }
  static typename cache::config make_config(Prefetch p) {
    auto cfg = config<cache>(8, 8);
    cfg.prefetch = p;
    return cfg;
  }
};

BOOST_AUTO_TEST_CASE(prefetch_wait_serves_everything) {
  prefetch_case<prefetch_wait> k;
  BOOST_TEST(k.c.prefetch(k.l) == 8u);
  BOOST_TEST_REQUIRE(k.c.load(k.l, k.stream).has_value());
  for (std::size_t layer = 0; layer < shape.layers(); ++layer) BOOST_TEST(k.c.wait_layer(k.l, layer).has_value());
  BOOST_TEST(k.l.cached_pages() == 8u);
  BOOST_TEST(check_lease(k.c, k.l, k.t, k.gen, 1) == 0u);
  BOOST_TEST(k.c.stats().prefetch_arrived == 8u);
  BOOST_TEST(k.c.release(k.l).has_value());
}

BOOST_AUTO_TEST_CASE(prefetch_best_effort_gives_up_when_scheduled) {
  prefetch_case<prefetch_best_effort> k;
  BOOST_TEST(k.c.prefetch(k.l) == 8u);
  const auto t0 = std::chrono::steady_clock::now();
  BOOST_TEST_REQUIRE(k.c.load(k.l, k.stream).has_value());  // does not wait the 30 ms
  BOOST_TEST((std::chrono::steady_clock::now() - t0 < 25ms));
  BOOST_TEST(k.l.cached_pages() == 0u);
  BOOST_TEST(k.l.tokens_to_compute() == 32u);
  BOOST_TEST(k.c.stats().prefetch_abandoned == 8u);
  BOOST_TEST(k.c.release(k.l).has_value());
  k.c.drain();  // the abandoned pages still land on host, for the next request
  BOOST_TEST_REQUIRE(k.c.lookup(namespace_id{1}, k.t, k.l).has_value());
  BOOST_TEST(k.l.host_pages() == 8u);
  BOOST_TEST(k.c.release(k.l).has_value());
}

BOOST_AUTO_TEST_CASE(prefetch_timeout_waits_in_proportion) {
  prefetch_case<prefetch_timeout> slow_enough(prefetch_timeout{1ms, 0ns, 1ms});  // 1 ms < 30 ms delay
  slow_enough.c.prefetch(slow_enough.l);
  BOOST_TEST_REQUIRE(slow_enough.c.load(slow_enough.l, slow_enough.stream).has_value());
  BOOST_TEST(slow_enough.l.cached_pages() == 0u);
  BOOST_TEST(slow_enough.c.release(slow_enough.l).has_value());

  prefetch_case<prefetch_timeout> patient(prefetch_timeout{1ms, 10ms, 2s});  // 81 ms for 8 pages
  patient.c.prefetch(patient.l);
  BOOST_TEST_REQUIRE(patient.c.load(patient.l, patient.stream).has_value());
  for (std::size_t layer = 0; layer < shape.layers(); ++layer) BOOST_TEST(patient.c.wait_layer(patient.l, layer).has_value());
  BOOST_TEST(patient.l.cached_pages() == 8u);
  BOOST_TEST(check_lease(patient.c, patient.l, patient.t, patient.gen, 1) == 0u);
  BOOST_TEST(patient.c.release(patient.l).has_value());
}

BOOST_AUTO_TEST_CASE(a_corrupted_slow_page_is_a_miss_never_data) {
  using cache = cache_builder<page_size<P>, device_memory<>, host_memory<>, slow_tiers<slow_tier<memory_tier>>,
                             auto_choice, write_policies<write_through, write_through>, prefetch_wait>::cache_type;
  cache c(config<cache>(8, 8), std::make_unique<memory_tier<>>(memory_tier_config{shape, shape.bytes_per_page(P), 1000, false}));
  const reference_kv gen(shape);
  const auto t = tokens(32);
  cache::lease_type l;
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, t, l).has_value());
  prefill_and_commit(c, l, t, gen, 1);
  std::vector<page_id> pages(l.pages().begin(), l.pages().end());
  BOOST_TEST(c.release(l).has_value());
  c.drain();
  push_down_with_other_traffic(c, l, gen);
  // Flip one payload bit of page 5 in the slow tier.
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, t, l).has_value());
  BOOST_TEST_REQUIRE(l.storage_pages() == 8u);
  const page_info p5 = *c.index().info(l.pages()[5]);
  BOOST_TEST_REQUIRE(const_cast<memory_tier<>&>(c.slow_tier<0>()).flip_bit({p5.ns, p5.key}, 8 * 200));
  c.prefetch(l);
  transfer::cpu_stream s;
  BOOST_TEST_REQUIRE(c.load(l, s).has_value());
  for (std::size_t layer = 0; layer < shape.layers(); ++layer) BOOST_TEST(c.wait_layer(l, layer).has_value());
  BOOST_TEST(l.cached_pages() == 5u);  // pages 0-4; page 5 was a miss, so the rest is computed
  BOOST_TEST(check_lease(c, l, t, gen, 1) == 0u);
  BOOST_TEST(c.stats().prefetch_missed == 1u);
  BOOST_TEST(c.release(l).has_value());
}

BOOST_AUTO_TEST_CASE(two_requests_computing_the_same_pages) {
  plain_cache c(config<plain_cache>(32, 32));
  const reference_kv gen(shape);
  const auto t = tokens(20);  // 5 pages
  plain_cache::lease_type a, b;
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, t, a).has_value());
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, t, b).has_value());  // both miss
  prefill_and_commit(c, a, t, gen, 1);
  prefill_and_commit(c, b, t, gen, 1);  // b's pages duplicate a's: b keeps its slots until release
  BOOST_TEST(c.device_pool().used() == 10u);
  std::vector<device_slot> bs(b.device_slots().begin(), b.device_slots().end());
  BOOST_TEST(check_lease(c, b, t, gen, 1) == 0u);
  BOOST_TEST(c.release(a).has_value());
  BOOST_TEST(c.release(b).has_value());
  BOOST_TEST(c.device_pool().used() == 5u);  // the duplicates went back
  for (device_slot s : bs) BOOST_TEST(!c.device_pool().is_allocated(s));
  BOOST_TEST(c.audit());
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, t, a).has_value());
  BOOST_TEST(a.cached_pages() == 5u);
  BOOST_TEST(check_lease(c, a, t, gen, 1) == 0u);
  BOOST_TEST(c.release(a).has_value());
}

BOOST_AUTO_TEST_CASE(commit_after_prefill_then_after_decode) {
  plain_cache c(config<plain_cache>(32, 32));
  const reference_kv gen(shape);
  auto t = tokens(14);  // 3 whole pages + 2 tokens
  plain_cache::lease_type l;
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, t, l).has_value());
  prefill_and_commit(c, l, t, gen, 1);
  BOOST_TEST(l.cached_pages() == 3u);
  // Decode 7 more tokens: pages 3 and 4 become whole and are committed under the same lease.
  for (int k = 0; k < 7; ++k) t.push_back(token_id{900 + k});
  prefill_and_commit(c, l, t, gen, 1);
  BOOST_TEST(l.cached_pages() == 5u);
  BOOST_TEST(l.tokens_to_compute() == 1u);
  BOOST_TEST(check_lease(c, l, t, gen, 1) == 0u);
  BOOST_TEST(c.release(l).has_value());
  std::vector<device_slot> all(30);
  BOOST_TEST_REQUIRE(c.allocate(all).has_value());  // 3 of the 5 pages evicted: the locks are gone
  BOOST_TEST(c.stats().evicted[0] == 3u);
  BOOST_TEST(c.free(all).has_value());
  c.drain();
  BOOST_TEST(c.audit());
}

BOOST_AUTO_TEST_CASE(look_ahead_protects_a_queued_prompt) {
  using la = cache_builder<page_size<P>, device_memory<>, host_memory<>, slow_tiers<>, auto_choice, write_policies<>,
                           auto_choice, look_ahead<lru>>::cache_type;
  la c(config<la>(8, 32));
  const reference_kv gen(shape);
  const auto queued = tokens(16, 1), other = tokens(16, 2);
  la::lease_type l;
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, queued, l).has_value());  // the older prefix
  prefill_and_commit(c, l, queued, gen, 1);
  BOOST_TEST(c.release(l).has_value());
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, other, l).has_value());
  prefill_and_commit(c, l, other, gen, 1);
  BOOST_TEST(c.release(l).has_value());
  c.drain();
  c.expect(namespace_id{1}, queued);  // a queued request will need it: evict the other one first
  std::vector<device_slot> s(4);
  BOOST_TEST_REQUIRE(c.allocate(s).has_value());
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, queued, l).has_value());
  BOOST_TEST(l.device_pages() == 4u);  // under plain LRU these would have gone
  BOOST_TEST(c.release(l).has_value());
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, other, l).has_value());
  BOOST_TEST(l.device_pages() == 0u);
  BOOST_TEST(l.host_pages() == 4u);
  BOOST_TEST(c.release(l).has_value());
  c.unexpect(namespace_id{1}, queued);
  BOOST_TEST(c.free(s).has_value());
}

// ---------------------------------------------------------------------------------------------
// Misuse and slow-tier faults (issue 9): each is an error value, checked in every build, or a
// clear abort; never wrong KV, never a stopped engine.

BOOST_AUTO_TEST_CASE(commit_rejects_repeated_slots) {
  plain_cache c(config<plain_cache>(8, 8));
  const reference_kv gen(shape);
  const auto t = tokens(12);  // 3 pages
  plain_cache::lease_type l;
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, t, l).has_value());
  std::vector<device_slot> s(3);
  BOOST_TEST_REQUIRE(c.allocate(s).has_value());
  const std::vector<device_slot> repeated{s[0], s[1], s[0]};
  BOOST_TEST((c.commit(l, t, repeated).code() == errc::invalid_argument));
  BOOST_TEST(c.index().pages() == 0u);  // nothing entered the index
  BOOST_TEST(c.audit());
  // The engine's slots are still its own: a correct commit goes through and serves right KV.
  const auto hashes = gen.prefix_hashes(1, t);
  for (std::size_t i = 0; i < 3; ++i) host_device_access::write_rows(c, s[i], 0, P, gen, hashes, i * P);
  BOOST_TEST_REQUIRE(c.commit(l, t, s).has_value());
  BOOST_TEST(c.release(l).has_value());
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, t, l).has_value());
  BOOST_TEST(l.cached_pages() == 3u);
  BOOST_TEST(check_lease(c, l, t, gen, 1) == 0u);
  BOOST_TEST(c.release(l).has_value());
}

// The misuse cases start from prompt a (`Tokens` tokens of namespace 1) computed and committed under
// lease l, still held, in a cache of `Pages` device and host pages; they end by finding a intact.
template <std::size_t Pages, std::size_t Tokens>
struct committed_prompt {
  committed_prompt() {
    BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, a, l).has_value());
    prefill_and_commit(c, l, a, gen, 1);
  }
  // a is cached whole (`pages` pages) with its KV, and the cache is consistent.
  void check_a_intact(std::size_t pages) {
    BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, a, l).has_value());
    BOOST_TEST(l.cached_pages() == pages);
    BOOST_TEST(check_lease(c, l, a, gen, 1) == 0u);
    BOOST_TEST(c.release(l).has_value());
    BOOST_TEST(c.audit());
  }
  plain_cache c{config<plain_cache>(Pages, Pages)};
  const reference_kv gen{shape};
  const std::vector<token_id> a = tokens(Tokens, 1);
  plain_cache::lease_type l;
};
using four_pages_in_16 = committed_prompt<16, 16>;
using four_pages_in_8 = committed_prompt<8, 16>;
using two_pages_in_16 = committed_prompt<16, 8>;

BOOST_FIXTURE_TEST_CASE(commit_rejects_slots_of_another_lease, four_pages_in_16) {
  const auto b = tokens(16, 2);
  plain_cache::lease_type lb;
  const std::vector<device_slot> theirs(l.device_slots().begin(), l.device_slots().end());
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, b, lb).has_value());
  BOOST_TEST((c.commit(lb, b, theirs).code() == errc::invalid_argument));
  // Slots never handed out by allocate() are refused too.
  std::vector<device_slot> mine(4);
  BOOST_TEST_REQUIRE(c.allocate(mine).has_value());
  std::vector<device_slot> stranger = mine;
  stranger[3] = device_slot{15};  // not allocated
  if (std::find(mine.begin(), mine.end(), stranger[3]) == mine.end())
    BOOST_TEST((c.commit(lb, b, stranger).code() == errc::invalid_argument));
  BOOST_TEST(c.free(mine).has_value());
  BOOST_TEST(c.release(lb).has_value());
  BOOST_TEST(check_lease(c, l, a, gen, 1) == 0u);  // a's pages keep their KV
  BOOST_TEST(c.release(l).has_value());
  check_a_intact(4);
}

BOOST_FIXTURE_TEST_CASE(free_rejects_indexed_slots, four_pages_in_8) {
  const auto b = tokens(16, 2);
  const std::vector<device_slot> held(l.device_slots().begin(), l.device_slots().end());
  BOOST_TEST((c.free(held).code() == errc::invalid_argument));  // the lease holds them, the index maps them
  BOOST_TEST(c.release(l).has_value());
  BOOST_TEST((c.free(held).code() == errc::invalid_argument));  // the index still maps them
  BOOST_TEST((c.free(std::vector<device_slot>{device_slot{7}}).code() == errc::invalid_argument));  // never handed out
  // Other traffic reuses whatever is free; a's pages keep their KV.
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, b, l).has_value());
  prefill_and_commit(c, l, b, gen, 1);
  BOOST_TEST(c.release(l).has_value());
  check_a_intact(4);
}

BOOST_FIXTURE_TEST_CASE(commit_rejects_tokens_of_another_prompt, two_pages_in_16) {
  const auto x = tokens(12, 9);
  BOOST_TEST(c.release(l).has_value());
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, a, l).has_value());
  BOOST_TEST_REQUIRE(l.cached_pages() == 2u);
  std::vector<device_slot> one(1);
  BOOST_TEST_REQUIRE(c.allocate(one).has_value());
  BOOST_TEST((c.commit(l, x, one).code() == errc::invalid_argument));  // x does not start with a
  BOOST_TEST(c.audit());
  BOOST_TEST(c.free(one).has_value());
  BOOST_TEST(c.release(l).has_value());
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, x, l).has_value());
  BOOST_TEST(l.cached_pages() == 0u);  // nothing of x was mapped to a's slots
  BOOST_TEST(c.release(l).has_value());
  BOOST_TEST(c.audit());
}

BOOST_AUTO_TEST_CASE(wait_layer_out_of_range_is_an_error) {
  plain_cache c(config<plain_cache>(8, 8));
  const reference_kv gen(shape);
  const auto t = tokens(8);
  plain_cache::lease_type l;
  BOOST_TEST((c.wait_layer(l, 0).code() == errc::invalid_argument));  // not looked up
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, t, l).has_value());
  transfer::cpu_stream s;
  BOOST_TEST_REQUIRE(c.load(l, s).has_value());
  BOOST_TEST(c.wait_layer(l, shape.layers() - 1).has_value());
  BOOST_TEST((c.wait_layer(l, shape.layers()).code() == errc::invalid_argument));
  BOOST_TEST((c.wait_layer(l, 1000).code() == errc::invalid_argument));
  BOOST_TEST(!c.layer_ready(l, 1000));
  BOOST_TEST(c.release(l).has_value());
}

BOOST_AUTO_TEST_CASE(foreign_lease_is_an_error) {
  plain_cache one(config<plain_cache>(8, 8)), other(config<plain_cache>(8, 8));
  const reference_kv gen(shape);
  const auto t = tokens(8);
  plain_cache::lease_type l;
  BOOST_TEST_REQUIRE(one.lookup(namespace_id{1}, t, l).has_value());
  prefill_and_commit(one, l, t, gen, 1);
  const page_id p = l.pages().empty() ? page_id{} : l.pages()[0];
  transfer::cpu_stream s;
  BOOST_TEST((other.release(l).code() == errc::invalid_argument));
  BOOST_TEST((other.load(l, s).code() == errc::invalid_argument));
  BOOST_TEST((other.wait_layer(l, 0).code() == errc::invalid_argument));
  BOOST_TEST((other.commit(l, t, {}).code() == errc::invalid_argument));
  BOOST_TEST(other.prefetch(l) == 0u);
  BOOST_TEST(l.active());  // still one's lease, its pages still locked there
  plain_cache::lease_type again;
  BOOST_TEST_REQUIRE(one.lookup(namespace_id{1}, t, again).has_value());
  BOOST_TEST(again.cached_pages() == 2u);
  BOOST_TEST(one.index().info(again.pages()[0])->locks == 2u);  // l's lock and again's
  (void)p;
  BOOST_TEST(one.release(again).has_value());
  BOOST_TEST(one.release(l).has_value());
  BOOST_TEST(one.index().info(again.pages()[0])->locks == 0u);
}

BOOST_AUTO_TEST_CASE(second_thread_aborts_with_a_message) {
  int err[2];
  BOOST_TEST_REQUIRE(::pipe(err) == 0);
  const pid_t child = ::fork();
  BOOST_TEST_REQUIRE(child >= 0);
  if (child == 0) {
    std::signal(SIGABRT, SIG_DFL);  // Boost.Test's handler would report it as a failure of the child
    ::dup2(err[1], 2);
    plain_cache c(config<plain_cache>(8, 8));
    const auto t = tokens(8);
    plain_cache::lease_type l;
    std::thread other([&] { (void)c.lookup(namespace_id{1}, t, l); });
    other.join();
    ::_exit(0);  // not reached: the lookup aborts
  }
  ::close(err[1]);
  std::string said;
  char buf[512];
  for (ssize_t n; (n = ::read(err[0], buf, sizeof buf)) > 0;) said.append(buf, std::size_t(n));
  ::close(err[0]);
  int status = 0;
  BOOST_TEST_REQUIRE(::waitpid(child, &status, 0) == child);
  BOOST_TEST(WIFSIGNALED(status));
  BOOST_TEST((WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT));
  BOOST_TEST(said.find("does not own the cache") != std::string::npos, said);
}

BOOST_AUTO_TEST_CASE(adopt_thread_hands_a_cache_over) {
  plain_cache c(config<plain_cache>(8, 8));
  const reference_kv gen(shape);
  const auto t = tokens(8);
  plain_cache::lease_type l;
  std::thread next([&] {
    c.adopt_thread();
    BOOST_TEST(c.lookup(namespace_id{1}, t, l).has_value());
    BOOST_TEST(c.release(l).has_value());
  });
  next.join();
  c.adopt_thread();  // and back
  BOOST_TEST(c.lookup(namespace_id{1}, t, l).has_value());
  BOOST_TEST(c.release(l).has_value());
}

namespace {
template <class C>
struct faulty_template : faulty_tier<C> {
  using faulty_tier<C>::faulty_tier;
};
// Device → host write-through, host → slow write-back: the defaults, over one faulty slow tier.
using faulty_cache = cache_builder<page_size<P>, device_memory<>, host_memory<>, slow_tiers<slow_tier<faulty_template>>,
                                   auto_choice, write_policies<>, prefetch_best_effort>::cache_type;
std::unique_ptr<faulty_template<identity_codec>> make_faulty(std::shared_ptr<fault_switch> f, std::size_t page_bytes) {
  return std::make_unique<faulty_template<identity_codec>>(memory_tier_config{shape, page_bytes, 1000, false}, std::move(f));
}
// Distinct 2-page prompts through the cache; returns the allocations refused.
std::size_t traffic(faulty_cache& c, const reference_kv& gen, int first, int n, std::chrono::nanoseconds* slowest = nullptr) {
  std::size_t refused = 0;
  faulty_cache::lease_type l;
  for (int k = first; k < first + n; ++k) {
    const auto t = tokens(8, k);
    const auto t0 = std::chrono::steady_clock::now();
    BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, t, l).has_value());
    std::vector<device_slot> s(2 - l.cached_pages());
    if (c.allocate(s)) {
      const auto hashes = gen.prefix_hashes(1, t);
      for (std::size_t i = 0; i < s.size(); ++i) host_device_access::write_rows(c, s[i], 0, P, gen, hashes, (l.cached_pages() + i) * P);
      BOOST_TEST(c.commit(l, t, s).has_value());
    } else {
      ++refused;
    }
    BOOST_TEST(c.release(l).has_value());
    c.poll();
    const auto took = std::chrono::steady_clock::now() - t0;
    if (slowest && took > *slowest) *slowest = took;
  }
  return refused;
}
}  // namespace

BOOST_AUTO_TEST_CASE(failing_slow_tier_never_pins_host_pages) {
  auto f = std::make_shared<fault_switch>();
  faulty_cache c(config<faulty_cache>(4, 4), make_faulty(f, shape.bytes_per_page(P)));
  const reference_kv gen(shape);
  f->set(tier_fault::failing);  // down, full or killed: every write fails
  BOOST_TEST(traffic(c, gen, 1, 60) == 0u);  // eviction goes on: no allocation is refused
  c.drain();
  BOOST_TEST(c.stats().write_failures > 0u);
  BOOST_TEST(c.stats().device_full == 0u);
  BOOST_TEST(c.audit());
  f->set(tier_fault::healthy);  // it recovers: written-back pages come back from it
  BOOST_TEST(traffic(c, gen, 100, 20) == 0u);
  c.drain();
  BOOST_TEST(c.stats().pages_written[std::size_t(tier_id::disk)] > 0u);
}

BOOST_AUTO_TEST_CASE(stalled_slow_tier_never_blocks_the_scheduler) {
  auto f = std::make_shared<fault_switch>();
  faulty_cache c(config<faulty_cache>(4, 4), make_faulty(f, shape.bytes_per_page(P)));
  const reference_kv gen(shape);
  f->set(tier_fault::stalled);  // a stopped Redis: batches are accepted and never answered
  std::chrono::nanoseconds slowest{0};
  BOOST_TEST(traffic(c, gen, 1, 60, &slowest) == 0u);
  // Write-back did reach the stalled tier (its I/O thread submits asynchronously: give a loaded
  // machine time to get there; the scheduler's calls above never waited for it).
  for (const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
       f->batches.load() == 0 && std::chrono::steady_clock::now() < until;)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  BOOST_TEST(f->batches.load() > 0u);
  BOOST_TEST(std::chrono::duration_cast<std::chrono::milliseconds>(slowest).count() < 200, "slowest request took "
             << std::chrono::duration_cast<std::chrono::milliseconds>(slowest).count() << " ms");
  BOOST_TEST(c.stats().write_back_skipped > 0u);  // the bound on bytes in flight held
  f->set(tier_fault::healthy);  // it resumes: the held writes land
  c.drain();
  BOOST_TEST(c.audit());
}

BOOST_AUTO_TEST_CASE(slow_tier_of_another_page_size_is_rejected) {
  auto f = std::make_shared<fault_switch>();
  BOOST_CHECK_THROW(faulty_cache(config<faulty_cache>(4, 4), make_faulty(f, 2 * shape.bytes_per_page(P))), config_error);
  BOOST_CHECK_NO_THROW(faulty_cache(config<faulty_cache>(4, 4), make_faulty(f, shape.bytes_per_page(P))));
}
