// The KV codecs: int8 and fp8 with per-vector scales, and the CacheGen-style codec (lossless and
// lossy), on KV-like pages — channels of very different scales, tokens correlated along the sequence.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <vector>

#include "kvtier/codec.hpp"
#include "kvtier/testing/kv_like_pages.hpp"

using namespace kvtier;
using kvtier::testing::kv_like_page;

namespace {


std::vector<std::byte> random_bits_page(const kv_page_geometry& g, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::byte> page(g.page_bytes());
  for (auto& b : page) b = std::byte(rng() & 0xff);
  return page;
}

// Relative L2 error of `got` against `want`, per (layer): the worst layer.
double worst_layer_error(const kv_page_geometry& g, std::span<const std::byte> want, std::span<const std::byte> got) {
  const std::size_t per_layer = g.elements() / g.shape.layers();
  double worst = 0;
  for (std::size_t l = 0; l < g.shape.layers(); ++l) {
    double num = 0, den = 0;
    for (std::size_t i = l * per_layer; i < (l + 1) * per_layer; ++i) {
      const double a = detail::load_element(want.data(), g.shape.element_type(), i);
      const double b = detail::load_element(got.data(), g.shape.element_type(), i);
      num += (a - b) * (a - b);
      den += a * a;
    }
    worst = std::max(worst, std::sqrt(num / den));
  }
  return worst;
}

template <class Codec>
std::pair<std::size_t, std::vector<std::byte>> round_trip(const Codec& c, std::span<const std::byte> page) {
  std::vector<std::byte> enc(c.max_encoded_bytes(page.size())), back(page.size(), std::byte{0xcd});
  auto n = c.encode(page, enc);
  BOOST_REQUIRE(n.has_value());
  BOOST_REQUIRE(*n <= enc.size());
  auto m = c.decode(std::span<const std::byte>(enc).first(*n), back);
  BOOST_REQUIRE(m.has_value());
  return {*n, back};
}

const kv_page_geometry small{kv_shape::mha(4, 2, 64, dtype::bf16), 16};

}  // namespace

BOOST_AUTO_TEST_CASE(bf16_and_fp16_conversions_round_trip) {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const float f = detail::bf16_bits_to_float(std::uint16_t(b));
    if (std::isnan(f)) continue;
    BOOST_REQUIRE_EQUAL(detail::float_to_bf16_bits(f), b);
    const float h = detail::fp16_bits_to_float(std::uint16_t(b));
    if (std::isnan(h)) continue;
    BOOST_REQUIRE_EQUAL(detail::float_to_fp16_bits(h), b);
  }
}

BOOST_AUTO_TEST_CASE(int8_error_is_within_half_a_step) {
  const int8_codec c(small);
  const auto page = kv_like_page(small, 1);
  auto [n, back] = round_trip(c, page);
  BOOST_TEST(n == 8 + small.rows() * small.shape.heads() * (4 + 64));
  const std::size_t dim = 64;
  for (std::size_t v = 0; v < small.rows() * small.shape.heads(); ++v) {
    float amax = 0;
    for (std::size_t d = 0; d < dim; ++d) amax = std::max(amax, std::fabs(detail::load_element(page.data(), dtype::bf16, v * dim + d)));
    for (std::size_t d = 0; d < dim; ++d) {
      const float a = detail::load_element(page.data(), dtype::bf16, v * dim + d);
      const float b = detail::load_element(back.data(), dtype::bf16, v * dim + d);
      // half an int8 step, plus bf16's rounding of the result (2^-8 relative)
      BOOST_REQUIRE_LE(std::fabs(a - b), amax / 127.f / 2.f + std::fabs(a) / 128.f + 1e-6f);
    }
  }
}

BOOST_AUTO_TEST_CASE(fp8_codes_every_value_to_its_nearest) {
  using f = detail::fp8_e4m3_format;
  BOOST_TEST(f::decode(0x7e) == 448.f);  // largest finite e4m3fn
  BOOST_TEST(f::decode(0x01) == 1.f / 512.f);
  for (int c = 0; c < 127; ++c) BOOST_TEST(f::encode(f::decode(std::uint8_t(c))) == c);
  const fp8_codec codec(small);
  const auto page = kv_like_page(small, 2);
  auto [n, back] = round_trip(codec, page);
  BOOST_TEST(worst_layer_error(small, page, back) < 0.05);  // 3 mantissa bits: ≤ 2^-4 relative per value
}

BOOST_AUTO_TEST_CASE(scaled_codecs_refuse_what_is_not_theirs) {
  const int8_codec c(small), other(kv_page_geometry{kv_shape::mha(4, 2, 64, dtype::bf16), 8});
  const auto page = kv_like_page(small, 3);
  std::vector<std::byte> enc(c.max_encoded_bytes(page.size())), back(page.size());
  BOOST_REQUIRE(c.encode(page, enc).has_value());
  std::vector<std::byte> half(page.size() / 2);
  BOOST_TEST((other.decode(std::span<const std::byte>(enc).first(other.max_encoded_bytes(half.size())), half).code() == errc::corrupted));
  BOOST_TEST((c.decode(std::span<const std::byte>(enc).first(enc.size() - 1), back).code() == errc::corrupted));
  BOOST_TEST((int8_codec{}.encode(page, enc).code() == errc::invalid_argument));  // unconfigured
  BOOST_TEST((c.encode(std::span<const std::byte>(page).first(10), enc).code() == errc::invalid_argument));
  BOOST_CHECK_THROW(int8_codec(kv_page_geometry{kv_shape::mha(1, 1, 8, dtype::fp8_e4m3), 4}), config_error);
}

BOOST_AUTO_TEST_CASE(rans_round_trips_skewed_and_flat_symbols) {
  std::mt19937_64 rng(7);
  std::geometric_distribution<int> geo(0.3);
  std::vector<std::uint8_t> sym(100000), sel(sym.size(), 0), back(sym.size());
  std::array<std::uint64_t, 256> counts{};
  for (auto& s : sym) ++counts[s = std::uint8_t(std::min(geo(rng), 255))];
  const auto t = detail::rans_table::from_counts(counts, false);
  const detail::rans_table* tables[] = {&t};
  std::vector<std::byte> out(detail::rans_bound(sym.size()));
  const std::size_t n = detail::rans_encode(sym, sel, tables, out);
  BOOST_REQUIRE(n > 0);
  BOOST_TEST(n < sym.size() / 2);  // entropy of geometric(0.3) ≈ 2.9 bits
  BOOST_REQUIRE(detail::rans_decode(std::span<const std::byte>(out).first(n), sel, tables, back));
  BOOST_TEST(back == sym);
  BOOST_TEST(!detail::rans_decode(std::span<const std::byte>(out).first(n - 1), sel, tables, back));
}

BOOST_AUTO_TEST_CASE(cachegen_lossless_is_bit_exact) {
  for (dtype t : {dtype::bf16, dtype::fp16}) {
    const kv_page_geometry g{kv_shape::mha(3, 2, 32, t), 16};
    std::vector<std::vector<std::byte>> samples{kv_like_page(g, 10), kv_like_page(g, 11)};
    std::vector<std::span<const std::byte>> views(samples.begin(), samples.end());
    cachegen_options o;
    o.lossless = true;
    const cachegen_codec c(g, cachegen_profile::fit(g, views, o));
    for (std::uint64_t seed : {20, 21}) {
      const auto page = kv_like_page(g, seed);
      auto [n, back] = round_trip(c, page);
      BOOST_TEST(back == page);
      BOOST_TEST(n < page.size());  // correlated tokens compress losslessly too
    }
    const auto noise = random_bits_page(g, 5);  // incompressible, NaNs included: stored raw, still exact
    auto [n, back] = round_trip(c, noise);
    BOOST_TEST(back == noise);
    BOOST_TEST(n <= c.max_encoded_bytes(noise.size()));
  }
}

BOOST_AUTO_TEST_CASE(cachegen_lossy_meets_its_error_and_beats_int8) {
  std::vector<std::vector<std::byte>> samples;
  for (std::uint64_t s = 0; s < 4; ++s) samples.push_back(kv_like_page(small, 100 + s));
  std::vector<std::span<const std::byte>> views(samples.begin(), samples.end());
  const int8_codec i8(small);
  const auto page = kv_like_page(small, 200);
  auto [n8, back8] = round_trip(i8, page);
  const double e8 = worst_layer_error(small, page, back8);
  cachegen_options o;
  o.target_error = e8;  // fit at int8's error
  const cachegen_codec cg(small, cachegen_profile::fit(small, views, o));
  auto [n, back] = round_trip(cg, page);
  const double e = worst_layer_error(small, page, back);
  BOOST_TEST_MESSAGE("int8: " << n8 << " B, error " << e8 << "; cachegen: " << n << " B, error " << e);
  BOOST_TEST(e <= e8 * 1.1);
  BOOST_TEST(n < n8);
}

BOOST_AUTO_TEST_CASE(cachegen_refuses_another_profile_and_damage) {
  std::vector<std::vector<std::byte>> a{kv_like_page(small, 1)}, b{kv_like_page(small, 2)};
  std::vector<std::span<const std::byte>> va(a.begin(), a.end()), vb(b.begin(), b.end());
  const cachegen_codec ca(small, cachegen_profile::fit(small, va)), cb(small, cachegen_profile::fit(small, vb));
  const auto page = kv_like_page(small, 3);
  std::vector<std::byte> enc(ca.max_encoded_bytes(page.size())), back(page.size());
  auto n = ca.encode(page, enc);
  BOOST_REQUIRE(n.has_value());
  const std::span<const std::byte> e(enc.data(), *n);
  BOOST_TEST((cb.decode(e, back).code() == errc::corrupted));
  BOOST_TEST((ca.decode(e.first(e.size() - 3), back).code() == errc::corrupted));
  BOOST_TEST((cachegen_codec{}.decode(e, back).code() == errc::invalid_argument));
  BOOST_CHECK_THROW(cachegen_codec(kv_page_geometry{kv_shape::mha(5, 2, 64, dtype::bf16), 16}, cachegen_profile::fit(small, va)),
                    config_error);
}
