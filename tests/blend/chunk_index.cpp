// blend::chunk_set / store_chunk: chunks computed on their own enter the cache keyed by their tokens;
// a prompt made of new text and known chunks finds them at their page-aligned offsets, and the KV
// placed at the new positions (K rotated by the offset) equals the chunk computed on its own at those
// positions. Served through the cache's lifecycle: locked while held, from a slow tier with its
// checksum (a corrupted page cuts the hit there), not across namespaces or RoPE specs.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "kvtier/blend/chunk_index.hpp"
#include "kvtier/cache.hpp"
#include "kvtier/storage/memory_tier.hpp"

using namespace kvtier;

namespace {

const kv_shape shape = kv_shape::mha(2, 2, 8, dtype::fp32);
constexpr std::size_t P = 4;
const transfer::rope_spec rope{transfer::rope_convention::rotate_half, 10000.f, 8, 0};

std::vector<token_id> tokens(std::size_t n, int seed) {
  std::vector<token_id> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = token_id{std::int32_t(seed * 1000 + i)};
  return t;
}

// A model whose K/V of a token depend on the token alone, K carrying RoPE at its position: what a
// chunk computed on its own at any offset gives (the case placement must reproduce).
float value(std::size_t layer, std::size_t kv, token_id t, std::size_t e) {
  std::uint64_t h = (std::uint64_t(std::uint32_t(t.value())) << 20) ^ (layer << 12) ^ (kv << 10) ^ e;
  h ^= h >> 31;
  h *= 0x9e3779b97f4a7c15ull;
  h ^= h >> 29;
  return float(h % 20001) / 10000.f - 1.f;
}
// Row (layer, kv) of token t at position pos: (head, dim).
std::vector<float> row_at(std::size_t layer, std::size_t kv, token_id t, std::size_t pos) {
  const std::size_t n = shape.heads() * shape.head_dim();
  std::vector<float> r(n);
  for (std::size_t e = 0; e < n; ++e) r[e] = value(layer, kv, t, e);
  if (kv == 0) {
    const auto inv = rope.inv_freq();
    transfer::rotate_row<dtype::fp32>(reinterpret_cast<std::byte*>(r.data()), shape.heads(), rope, inv, long(pos));
  }
  return r;
}

template <class Cache>
void write_page(Cache& c, device_slot s, std::span<const token_id> t, std::size_t first_pos) {
  for (std::size_t l = 0; l < shape.layers(); ++l)
    for (std::size_t k = 0; k < 2; ++k)
      for (std::size_t i = 0; i < P; ++i) {
        const auto r = row_at(l, k, t[i], first_pos + i);
        std::memcpy(c.device_view().page_row(l, k, s.value(), P, i, 0), r.data(), r.size() * sizeof(float));
      }
}

// The engine's side of storing a chunk: computed on its own at positions 0.., whole pages.
template <class Cache>
void store(Cache& c, namespace_id ns, std::span<const token_id> chunk, const transfer::rope_spec& r = rope) {
  std::vector<device_slot> slots(chunk.size() / P);
  BOOST_TEST_REQUIRE(c.allocate(slots).has_value());
  for (std::size_t p = 0; p < slots.size(); ++p) write_page(c, slots[p], chunk.subspan(p * P, P), p * P);
  BOOST_TEST_REQUIRE(blend::store_chunk(c, ns, r, chunk, slots).has_value());
}

// Largest |placed - reference| over positions [first, first + n) of the prompt, and whether V is bit-exact.
template <class Cache>
std::pair<double, bool> compare(Cache& c, std::span<const device_slot> table, std::span<const token_id> prompt, std::size_t first,
                                std::size_t n) {
  double worst = 0;
  bool v_exact = true;
  for (std::size_t pos = first; pos < first + n; ++pos)
    for (std::size_t l = 0; l < shape.layers(); ++l)
      for (std::size_t k = 0; k < 2; ++k) {
        const auto want = row_at(l, k, prompt[pos], pos);
        const float* got = reinterpret_cast<const float*>(c.device_view().page_row(l, k, table[pos / P].value(), P, pos % P, 0));
        for (std::size_t e = 0; e < want.size(); ++e) {
          worst = std::max(worst, double(std::fabs(got[e] - want[e])));
          if (k == 1 && got[e] != want[e]) v_exact = false;
        }
      }
  return {worst, v_exact};
}

using plain_cache = cache_builder<page_size<P>>::cache_type;

}  // namespace

BOOST_AUTO_TEST_CASE(chunks_are_found_anywhere_and_placed_exactly) {
  plain_cache c(plain_cache::config{shape, {}, 64, 64});
  const namespace_id ns{7};
  const auto a = tokens(12, 1), b = tokens(10, 2), text = tokens(4, 3), question = tokens(3, 4);
  store(c, ns, a);
  store(c, ns, std::span<const token_id>(b));  // 2 whole pages; its last 2 tokens are not cached
  // Prompt: [new text (page 0)][A (pages 1-3)][B (pages 4-5, then 2 tokens)][question]
  std::vector<token_id> prompt(text);
  prompt.insert(prompt.end(), a.begin(), a.end());
  prompt.insert(prompt.end(), b.begin(), b.end());
  prompt.insert(prompt.end(), question.begin(), question.end());
  blend::chunk_set<plain_cache> set(c, ns, rope);
  BOOST_TEST_REQUIRE(set.lookup(prompt).has_value());
  BOOST_TEST_REQUIRE(set.hits().size() == 2u);
  BOOST_TEST(set.hits()[0].offset == 4u);
  BOOST_TEST(set.hits()[0].pages == 3u);
  BOOST_TEST(set.hits()[1].offset == 16u);
  BOOST_TEST(set.hits()[1].pages == 2u);
  BOOST_TEST(set.reused_tokens() == 20u);
  BOOST_TEST((set.lookup(prompt).code() == errc::invalid_argument));  // hits held
  transfer::cpu_stream s;
  BOOST_TEST_REQUIRE(set.load(s).has_value());
  std::vector<device_slot> table((prompt.size() + P - 1) / P);
  BOOST_TEST_REQUIRE(c.allocate(table).has_value());
  BOOST_TEST_REQUIRE(set.place(table).has_value());
  // Placed K equals K computed at the new positions up to fp32 rounding of two rotations; V is copied.
  const auto [worst_a, va] = compare(c, table, prompt, 4, 12);
  const auto [worst_b, vb] = compare(c, table, prompt, 16, 8);
  BOOST_TEST_MESSAGE("largest K difference: chunk A " << worst_a << ", chunk B " << worst_b);
  BOOST_TEST(worst_a <= 2e-6);
  BOOST_TEST(worst_b <= 2e-6);
  BOOST_TEST(va);
  BOOST_TEST(vb);
  // The chunks' own pages are untouched (K still at positions 0..): another request places them again.
  for (std::size_t p = 0; p < 3; ++p) {
    const auto want = row_at(1, 0, a[p * P + 1], p * P + 1);
    const float* got = reinterpret_cast<const float*>(c.device_view().page_row(1, 0, set.lease(0).device_slots()[p].value(), P, 1, 0));
    BOOST_TEST(std::memcmp(got, want.data(), want.size() * sizeof(float)) == 0);
  }
  BOOST_TEST(set.release().has_value());
  BOOST_TEST(set.hits().empty());
  BOOST_TEST(c.free(table).has_value());

  // A chunk that is the prompt's start is placed bit for bit (offset 0); a bad block table is an error.
  std::vector<token_id> p2(a);
  p2.insert(p2.end(), question.begin(), question.end());
  BOOST_TEST_REQUIRE(set.lookup(p2).has_value());
  BOOST_TEST_REQUIRE(set.hits().size() == 1u);
  BOOST_TEST_REQUIRE(set.load(s).has_value());
  std::vector<device_slot> t2(4);
  BOOST_TEST_REQUIRE(c.allocate(t2).has_value());
  BOOST_TEST((set.place(std::span<const device_slot>(t2).first(2)).code() == errc::invalid_argument));
  BOOST_TEST_REQUIRE(set.place(t2).has_value());
  BOOST_TEST(compare(c, t2, p2, 0, 12).first == 0.0);
  BOOST_TEST(set.release().has_value());
  BOOST_TEST(c.free(t2).has_value());
}

BOOST_AUTO_TEST_CASE(chunks_keep_to_their_namespace_and_rotation) {
  plain_cache c(plain_cache::config{shape, {}, 32, 32});
  const auto a = tokens(8, 1);
  store(c, namespace_id{1}, a);
  std::vector<token_id> prompt = tokens(4, 9);
  prompt.insert(prompt.end(), a.begin(), a.end());
  {
    blend::chunk_set<plain_cache> other_ns(c, namespace_id{2}, rope);
    BOOST_TEST_REQUIRE(other_ns.lookup(prompt).has_value());
    BOOST_TEST(other_ns.hits().empty());
    transfer::rope_spec theta = rope;
    theta.theta = 500000.f;
    blend::chunk_set<plain_cache> other_rope(c, namespace_id{1}, theta);
    BOOST_TEST_REQUIRE(other_rope.lookup(prompt).has_value());
    BOOST_TEST(other_rope.hits().empty());
  }
  // Nor as a prefix of the request's own namespace: chunk pages are not prefix pages.
  plain_cache::lease_type l;
  BOOST_TEST_REQUIRE(c.lookup(namespace_id{1}, a, l).has_value());
  BOOST_TEST(l.pages().size() == 0u);
  BOOST_TEST(c.release(l).has_value());
  // Storing the same chunk again keeps the first copy and hands the duplicates back.
  const std::size_t free_before = c.device_pool().available();
  store(c, namespace_id{1}, a);
  BOOST_TEST(c.device_pool().available() == free_before);
  BOOST_CHECK_THROW(blend::chunk_set<plain_cache>(c, namespace_id{1}, transfer::rope_spec{transfer::rope_convention::rotate_half, 1e4f, 4, 0}),
                    config_error);
}

BOOST_AUTO_TEST_CASE(held_chunks_are_locked_and_slow_tier_pages_are_checked) {
  using cache = cache_builder<page_size<P>, device_memory<>, host_memory<>, slow_tiers<slow_tier<memory_tier>>, auto_choice,
                             write_policies<write_through, write_through>, prefetch_wait>::cache_type;
  cache c(cache::config{shape, {}, 8, 8}, std::make_unique<memory_tier<>>(memory_tier_config{shape, shape.bytes_per_page(P), 1000, false}));
  const namespace_id ns{3};
  const auto a = tokens(16, 1);
  store(c, ns, a);
  c.drain();
  // Held: the 4 pages stay while other chunks fill the device and host (8 pages each).
  std::vector<token_id> prompt = tokens(4, 8);
  prompt.insert(prompt.end(), a.begin(), a.end());
  blend::chunk_set<cache> set(c, ns, rope);
  BOOST_TEST_REQUIRE(set.lookup(prompt).has_value());
  BOOST_TEST_REQUIRE(set.hits().size() == 1u);
  std::vector<device_slot> four(4);
  BOOST_TEST_REQUIRE(c.allocate(four).has_value());
  std::vector<device_slot> more(1);
  BOOST_TEST((c.allocate(more).code() == errc::capacity_exhausted));  // 4 held + 4 engine slots: nothing evictable
  BOOST_TEST(c.free(four).has_value());
  BOOST_TEST(set.release().has_value());
  // Released: other chunks push it down to the slow tier.
  for (int k = 10; k < 14; ++k) {
    store(c, ns, tokens(16, k));
    c.drain();
  }
  BOOST_TEST_REQUIRE(set.lookup(prompt).has_value());
  BOOST_TEST_REQUIRE(set.hits().size() == 1u);
  BOOST_TEST_REQUIRE(set.lease(0).storage_pages() == 4u);
  // Flip one payload bit of its third page in the slow tier: that page is a miss, never data.
  const page_info p2 = *c.index().info(set.lease(0).pages()[2]);
  BOOST_TEST_REQUIRE(const_cast<memory_tier<>&>(c.slow_tier<0>()).flip_bit({p2.ns, p2.key}, 8 * 200));
  BOOST_TEST(set.prefetch() == 4u);
  transfer::cpu_stream s;
  BOOST_TEST_REQUIRE(set.load(s).has_value());
  BOOST_TEST(set.hits()[0].pages == 2u);  // cut at the corrupted page: the rest is computed
  std::vector<device_slot> table(5);
  BOOST_TEST_REQUIRE(c.allocate(table).has_value());
  BOOST_TEST_REQUIRE(set.place(table).has_value());
  BOOST_TEST(compare(c, table, prompt, 4, 8).first <= 2e-6);
  BOOST_TEST(c.stats().prefetch_missed == 1u);
  BOOST_TEST(set.release().has_value());
  BOOST_TEST(c.free(table).has_value());
}
