// Reuse is exact: a conversation whose history comes back from kvtier — from the device, host
// memory, the file tier and Redis in turn, only partly, or after pages were evicted — generates
// token for token what the same engine generates with caching off (greedy). stories260K.
#include <boost/test/unit_test.hpp>

#include <memory>
#include <string>
#include <vector>

#include "engine/stories260k_model.hpp"
#include "kvtier/cache.hpp"
#include "kvtier/testing/redis_server.hpp"
#include "kvtier/testing/temp_dir.hpp"
#include "kvtier_engine/conversation.hpp"
#include "kvtier_engine/cpu/cpu_backend.hpp"
#include "kvtier_engine/engine.hpp"
#include "kvtier_engine/model_files.hpp"
#ifdef KVTIER_TEST_FILE_TIER
#  include "kvtier/storage/file_tier.hpp"
#endif
#ifdef KVTIER_REDIS_SERVER
#  include "kvtier/storage/redis_tier.hpp"
#endif

using namespace kvtier_engine;
using kvtier::namespace_id;
using kvtier::token_id;
using kvtier_test::engine::stories;

namespace {

constexpr std::size_t P = 16;

const stories& model() {
  static const stories s;
  return s;
}

const std::vector<std::string> user = {
    "Once upon a time, there was a little dog named Max.",
    " Max wanted to find his red ball.",
    " Then Max met a big cat.",
    " The cat said, \"Let's play together!\"",
    " At night, Max was very tired.",
};

// One turn with caching, one without; returns the cached run's result after checking both agree.
template <class Engine>
turn_result exact_turn(Engine& e, conversation& c, std::span<const token_id> prompt, served_from& from, std::size_t reply = 24) {
  generate_options g;
  g.max_new_tokens = reply;
  g.settle_slow_reads = true;
  const std::vector<token_id> p(prompt.begin(), prompt.end());
  const auto on = generate_traced(e, c.ns, p, g, from);
  BOOST_TEST_REQUIRE(on.has_value());
  g.caching = false;
  const auto off = e.generate(c.ns, p, g);
  BOOST_TEST_REQUIRE(off.has_value());
  BOOST_TEST(on->tokens == off->tokens, "reply with reuse differs from the recomputed one (" << on->reused_tokens << " tokens reused)");
  BOOST_TEST(on->reused_tokens + on->computed_tokens == p.size());
  BOOST_TEST(on->reused_tokens % P == 0u);
  BOOST_TEST(e.cache().audit());
  return *on;
}

template <class Cache, class... Slow>
using engine_for = engine<cpu_backend, Cache>;

}  // namespace

// Turn 1 computes; before each later turn other traffic pushes the history one tier down.
BOOST_AUTO_TEST_CASE(history_from_each_tier_in_turn) {
  const stories& m = model();
  const std::size_t device_pages = 48, host_pages = 96, disk_pages = 192;
  const auto shape = m.w.config().kv_shape(kvtier::dtype::fp32);
#if defined(KVTIER_TEST_FILE_TIER) && defined(KVTIER_REDIS_SERVER)
  kvtier::testing::temp_dir dir;
  kvtier::testing::redis_server server;
  kvtier::file_tier_config fc{dir.path, shape, shape.bytes_per_page(P), disk_pages, 64, 32, true, false};
  kvtier::redis_tier_config rc{shape, shape.bytes_per_page(P)};
  rc.port = server.port();
  using cache_type = kvtier::cache_builder<kvtier::page_size<P>, kvtier::device_memory<>, kvtier::host_memory<>,
                                           kvtier::slow_tiers<kvtier::slow_tier<kvtier::file_tier>, kvtier::slow_tier<kvtier::redis_tier>>,
                                           kvtier::auto_choice, kvtier::write_policies<>, kvtier::prefetch_wait>::cache_type;
  using E = engine<cpu_backend, cache_type>;
  E e(m.w, E::cache_config(m.w, precision::fp32, device_pages, host_pages), {}, 64, std::make_unique<kvtier::file_tier<>>(fc),
      std::make_unique<kvtier::redis_tier<>>(rc));
  const int tiers = 5;
#elif defined(KVTIER_TEST_FILE_TIER)
  kvtier::testing::temp_dir dir;
  kvtier::file_tier_config fc{dir.path, shape, shape.bytes_per_page(P), disk_pages, 64, 32, true, false};
  using cache_type = kvtier::cache_builder<kvtier::page_size<P>, kvtier::device_memory<>, kvtier::host_memory<>,
                                           kvtier::slow_tiers<kvtier::slow_tier<kvtier::file_tier>>, kvtier::auto_choice,
                                           kvtier::write_policies<>, kvtier::prefetch_wait>::cache_type;
  using E = engine<cpu_backend, cache_type>;
  E e(m.w, E::cache_config(m.w, precision::fp32, device_pages, host_pages), {}, 64, std::make_unique<kvtier::file_tier<>>(fc));
  const int tiers = 4;
  BOOST_TEST_MESSAGE("no redis-server or hiredis: the Redis turn is not run");
#else
  using cache_type = kvtier::cache_builder<kvtier::page_size<P>>::cache_type;
  using E = engine<cpu_backend, cache_type>;
  E e(m.w, E::cache_config(m.w, precision::fp32, device_pages, host_pages), {}, 64);
  const int tiers = 3;
  BOOST_TEST_MESSAGE("no liburing: the file tier and Redis turns are not run");
#endif
  conversation c{namespace_id{1}, {}};
  std::size_t kv_ready = 0;  // history tokens whose KV the last turn computed (and committed, by whole pages)
  for (int k = 0; k < tiers; ++k) {
    const std::size_t push = k <= 1 ? 0 : k == 2 ? device_pages + 8 : k == 3 ? device_pages + host_pages + 8
                                                                     : device_pages + host_pages + disk_pages + 16;
    if (push) BOOST_TEST_REQUIRE(other_traffic(e, namespace_id{2}, push, 496, 100 + k).has_value());
    const auto prompt = c.ask(m.tok.encode(user[std::size_t(k)], false, false));
    served_from from;
    const turn_result r = exact_turn(e, c, prompt, from);
    BOOST_TEST_CONTEXT("turn " << k + 1 << ": " << r.reused_tokens << " of " << r.prompt_tokens << " tokens reused; device "
                               << from.device << ", host " << from.host << ", file " << from.disk << ", redis " << from.remote) {
      if (k == 0) BOOST_TEST(r.reused_tokens == 0u);
      else BOOST_TEST(r.reused_tokens == kv_ready / P * P);  // the whole history, to its last whole page
      if (k == 1) BOOST_TEST(from.device == r.reused_tokens);
      if (k == 2) BOOST_TEST(from.host == r.reused_tokens);
      if (k == 3) BOOST_TEST(from.disk == r.reused_tokens);
      if (k == 4) {
        BOOST_TEST(from.remote > 0u);  // the file tier had evicted (part of) the history: Redis served it
        BOOST_TEST(from.remote + from.disk == r.reused_tokens);
      }
    }
    c.answer(r.tokens);
    kv_ready = c.history.size() - (r.tokens.back() == bos_token ? 0 : 1);  // the last sampled token was not fed
  }
}

// A prompt sharing only part of a cached history (diverging mid-page) reuses the whole pages in
// common and computes the rest.
BOOST_AUTO_TEST_CASE(prefix_partly_cached) {
  const stories& m = model();
  using cache_type = kvtier::cache_builder<kvtier::page_size<P>>::cache_type;
  using E = engine<cpu_backend, cache_type>;
  E e(m.w, E::cache_config(m.w, precision::fp32, 64, 64), {}, 32);
  conversation a{namespace_id{1}, {}};
  served_from from;
  const turn_result first = exact_turn(e, a, a.ask(m.tok.encode(user[0] + user[1] + user[2], false, false)), from, 40);
  a.answer(first.tokens);
  BOOST_TEST_REQUIRE(a.history.size() > 3 * P + 8);
  // The same first 3 pages and 5 tokens, then other tokens.
  conversation b{namespace_id{1}, std::vector<token_id>(a.history.begin(), a.history.begin() + 3 * P + 5)};
  const turn_result r = exact_turn(e, b, b.ask(m.tok.encode(" The sun was hot.", false, false)), from, 40);
  BOOST_TEST(r.reused_tokens == 3 * P);
  BOOST_TEST(from.device == 3 * P);
  // Another namespace sees nothing of it.
  conversation other{namespace_id{9}, std::vector<token_id>(a.history.begin(), a.history.begin() + 3 * P + 5)};
  BOOST_TEST(exact_turn(e, other, other.ask(m.tok.encode(" The sun was hot.", false, false)), from, 8).reused_tokens == 0u);
}

// Device and host too small to keep the conversation: its newest pages are evicted (dropped: no
// slow tier) between turns, so turns find only the front of their history and recompute the rest.
BOOST_AUTO_TEST_CASE(pages_evicted_mid_conversation) {
  const stories& m = model();
  using cache_type = kvtier::cache_builder<kvtier::page_size<P>>::cache_type;
  using E = engine<cpu_backend, cache_type>;
  E e(m.w, E::cache_config(m.w, precision::fp32, 24, 8), {}, 16);
  conversation c{namespace_id{1}, {}};
  std::size_t partial = 0;
  for (std::size_t k = 0; k < user.size(); ++k) {
    if (k >= 2) BOOST_TEST_REQUIRE(other_traffic(e, namespace_id{2}, 6, 96, k).has_value());  // some pressure
    served_from from;
    const auto prompt = c.ask(m.tok.encode(user[k], false, false));
    const turn_result r = exact_turn(e, c, prompt, from, 32);
    const std::size_t whole = (r.prompt_tokens - 1) / P * P;
    partial += r.reused_tokens > 0 && r.reused_tokens < whole;
    c.answer(r.tokens);
  }
  BOOST_TEST(partial > 0u, "no turn found its history only partly cached");
  BOOST_TEST(e.cache().stats().evicted[0] > 0u);
}
