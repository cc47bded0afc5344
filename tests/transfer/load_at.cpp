// The cache's load with per-page target positions (load_at, CPU path: cpu_copy::load_rotated): a
// truncated conversation keeps its first pages where they are, drops the next ones and serves the
// rest earlier; moved pages arrive with K rotated to their new positions (equal to RoPE computed
// there within fp32 rounding), V and unmoved pages bit for bit, in slots private to the lease: the
// index keeps the unmoved copies, so the next lease of the same prompt gets the original bytes.
// The page property (k_layout) enters the page keys; misuse is an error value or a config_error.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kvtier/cache.hpp"
#include "kvtier/cache/positioned_load.hpp"

using namespace kvtier;

namespace {

constexpr std::size_t P = 4, pages = 8, D = 16, H = 2, L = 2;
const kv_shape shape = kv_shape::mha(L, H, D, dtype::fp32);
using cache_type = cache_builder<page_size<P>>::cache_type;  // CPU: cpu_copy, write-through to host
const transfer::rope_spec rope{transfer::rope_convention::rotate_half, 10000.f, D, 0};

std::vector<token_id> tokens(std::size_t n) {
  std::vector<token_id> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = token_id{std::int32_t(7000 + i)};
  return t;
}
// The engines' RoPE at pos (as the CPU backend computes it).
void engine_rope(float* x, std::size_t pos) {
  const auto inv = rope.inv_freq();
  for (std::size_t h = 0; h < H; ++h)
    for (std::size_t j = 0; j < D / 2; ++j) {
      const float a = float(pos) * inv[j], c = std::cos(a), s = std::sin(a);
      float* v = x + h * D;
      const float v0 = v[j], v1 = v[j + D / 2];
      v[j] = v0 * c - v1 * s;
      v[j + D / 2] = v0 * s + v1 * c;
    }
}
cache_type::config config(transfer::k_layout k) {
  cache_type::config c{shape, {}, 24, 24};
  c.k_layout = k;
  return c;
}
float* row(const cache_type& c, std::size_t l, std::size_t kv, device_slot s, std::size_t t) {
  return reinterpret_cast<float*>(c.device_view().row(l, kv, s.value() * P + t, 0));
}

}  // namespace

BOOST_AUTO_TEST_CASE(truncated_pages_are_served_moved_and_the_index_keeps_the_originals) {
  cache_type c(config({transfer::k_storage::rotated, rope}));
  const auto t = tokens(pages * P);
  // raw[l][pos]: K before RoPE; the engine writes RoPE(raw, pos) as K and raw + 1 as V.
  std::mt19937_64 rng(5);
  std::normal_distribution<float> n01;
  std::vector<std::vector<std::vector<float>>> raw(L, std::vector<std::vector<float>>(pages * P, std::vector<float>(H * D)));
  for (auto& layer : raw)
    for (auto& r : layer)
      for (float& v : r) v = n01(rng);
  cache_type::lease_type l;
  BOOST_REQUIRE(c.lookup(namespace_id{1}, t, l).has_value());
  std::vector<device_slot> slots(pages);
  BOOST_REQUIRE(c.allocate(slots).has_value());
  for (std::size_t p = 0; p < pages * P; ++p)
    for (std::size_t layer = 0; layer < L; ++layer) {
      std::vector<float> k = raw[layer][p];
      engine_rope(k.data(), p);
      std::memcpy(row(c, layer, 0, slots[p / P], p % P), k.data(), H * D * 4);
      for (std::size_t i = 0; i < H * D; ++i) row(c, layer, 1, slots[p / P], p % P)[i] = raw[layer][p][i] + 1;
    }
  BOOST_REQUIRE(c.commit(l, t, slots).has_value());
  BOOST_REQUIRE(c.release(l).has_value());
  c.drain();  // write-through: every page has a host copy now
  BOOST_REQUIRE(c.index().pages_in(tier_id::host) == pages);

  // Truncation: pages 0-1 stay, 2-3 are dropped, 4-7 serve positions 8.. (moved by -8).
  const long first[pages] = {0, 4, transfer::page_positions::skip, transfer::page_positions::skip, 8, 12, 16, 20};
  transfer::cpu_stream st;
  BOOST_REQUIRE(c.lookup(namespace_id{1}, t, l).has_value());
  BOOST_REQUIRE(load_at(c, l, st, transfer::page_positions{first}).has_value());
  for (std::size_t layer = 0; layer < L; ++layer) BOOST_REQUIRE(c.wait_layer(l, layer).has_value());
  BOOST_TEST(l.cached_pages() == pages);
  const auto served = l.device_slots();
  BOOST_TEST((served[0] == slots[0]));  // unmoved pages in place
  BOOST_TEST((served[1] == slots[1]));
  std::size_t v_differ = 0, unmoved_differ = 0;
  double worst = 0;
  for (std::size_t i : {0u, 1u, 4u, 5u, 6u, 7u})
    for (std::size_t layer = 0; layer < L; ++layer)
      for (std::size_t ti = 0; ti < P; ++ti) {
        const std::size_t old_pos = i * P + ti, new_pos = std::size_t(first[i]) + ti;
        for (std::size_t e = 0; e < H * D; ++e) v_differ += row(c, layer, 1, served[i], ti)[e] != raw[layer][old_pos][e] + 1;
        std::vector<float> want = raw[layer][old_pos];
        engine_rope(want.data(), new_pos);
        if (i < 2) unmoved_differ += std::memcmp(want.data(), row(c, layer, 0, served[i], ti), H * D * 4) != 0;
        for (std::size_t e = 0; e < H * D; ++e) worst = std::max(worst, double(std::fabs(row(c, layer, 0, served[i], ti)[e] - want[e])));
      }
  BOOST_TEST_MESSAGE("moved K vs RoPE at the new position: worst abs error " << worst);
  BOOST_TEST(v_differ == 0u);
  BOOST_TEST(unmoved_differ == 0u);  // bit for bit where the position is the same
  BOOST_TEST(worst < 1e-5);
  for (std::size_t i = 4; i < pages; ++i) BOOST_TEST((served[i] != slots[i]));  // moved: private slots
  BOOST_REQUIRE(c.release(l).has_value());
  c.drain();
  BOOST_TEST(c.audit());

  // The next lease of the same prompt gets the pages as computed (the index never saw the moves).
  BOOST_REQUIRE(c.lookup(namespace_id{1}, t, l).has_value());
  BOOST_REQUIRE(c.load(l, st).has_value());
  for (std::size_t layer = 0; layer < L; ++layer) BOOST_REQUIRE(c.wait_layer(l, layer).has_value());
  std::size_t original_differ = 0;
  for (std::size_t i = 0; i < pages; ++i)
    for (std::size_t ti = 0; ti < P; ++ti) {
      std::vector<float> want = raw[0][i * P + ti];
      engine_rope(want.data(), i * P + ti);
      original_differ += std::memcmp(want.data(), row(c, 0, 0, l.device_slots()[i], ti), H * D * 4) != 0;
    }
  BOOST_TEST(original_differ == 0u);
  BOOST_REQUIRE(c.release(l).has_value());
}

BOOST_AUTO_TEST_CASE(misuse_and_the_k_layout_property) {
  const auto t = tokens(pages * P);
  const long short_list[2] = {0, 4};
  const long moved[pages] = {0, 4, 100, 104, 108, 112, 116, 120};
  transfer::cpu_stream st;
  {
    cache_type c(config({}));  // no rope: pages never move
    cache_type::lease_type l;
    BOOST_REQUIRE(c.lookup(namespace_id{1}, t, l).has_value());
    std::vector<device_slot> slots(pages);
    BOOST_REQUIRE(c.allocate(slots).has_value());
    BOOST_REQUIRE(c.commit(l, t, slots).has_value());
    BOOST_REQUIRE(c.release(l).has_value());
    BOOST_REQUIRE(c.lookup(namespace_id{1}, t, l).has_value());
    BOOST_TEST((load_at(c, l, st, transfer::page_positions{short_list}).code() == errc::invalid_argument));
    BOOST_TEST((load_at(c, l, st, transfer::page_positions{moved}).code() == errc::invalid_argument));
    BOOST_REQUIRE(c.release(l).has_value());
  }
  // The layout enters the page keys: the same prompt under another rotation is another page.
  cache_type a(config({})), b(config({transfer::k_storage::rotated, rope}));
  BOOST_TEST(a.index().model() != b.index().model());
  BOOST_TEST(transfer::k_layout{} .fingerprint() == 0u);  // caches without a rotation keep their keys
  // The cache keeps K as engines write it (rotated); a rotation must fit the shape.
  BOOST_CHECK_THROW(cache_type(config({transfer::k_storage::pre_rotation, rope})), config_error);
  BOOST_CHECK_THROW(cache_type(config({transfer::k_storage::pre_rotation, std::nullopt})), config_error);
  BOOST_CHECK_THROW(cache_type(config({transfer::k_storage::rotated, transfer::rope_spec{rope.convention, 1e4f, 2 * D, 0}})),
                    config_error);
}
