// RoPE on load: delta 0 is a bit-exact copy; a pre-rotation K loaded at position p equals RoPE
// computed at p (the engines' formula) bit for bit; moving a rotated page by delta agrees with RoPE
// computed at the new position within the element type's rounding; V is never touched.
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstring>
#include <ostream>
#include <random>
#include <vector>

#include "kvtier/transfer.hpp"
#include "kvtier/transfer/rope.hpp"

using namespace kvtier;
using namespace kvtier::transfer;

namespace {

constexpr std::size_t P = 16;

}  // namespace

namespace kvtier::transfer {
std::ostream& operator<<(std::ostream& os, rope_convention c) {
  return os << (c == rope_convention::adjacent_pairs ? "adjacent_pairs" : "rotate_half");
}
}  // namespace kvtier::transfer

namespace {

// The engines' RoPE at position pos (kvtier_engine's CPU backend, llama2.c's run.c).
void engine_rope(float* x, std::size_t heads, const rope_spec& r, std::size_t pos) {
  const auto inv = r.inv_freq();
  const std::size_t rot = r.rotated();
  for (std::size_t h = 0; h < heads; ++h)
    for (std::size_t j = 0; j < rot / 2; ++j) {
      const float a = float(pos) * inv[j];
      const float fr = std::cos(a), fi = std::sin(a);
      const std::size_t i0 = r.convention == rope_convention::adjacent_pairs ? 2 * j : j;
      const std::size_t i1 = r.convention == rope_convention::adjacent_pairs ? 2 * j + 1 : j + rot / 2;
      float* v = x + h * r.head_dim;
      const float v0 = v[i0], v1 = v[i1];
      v[i0] = v0 * fr - v1 * fi;
      v[i1] = v0 * fi + v1 * fr;
    }
}

struct pools {
  kv_shape s;
  std::vector<std::byte> host, dev;
  kv_buffer<layout::page_first::mapping> src;
  layer_first_buffer dst;
  pools(kv_shape shape, std::size_t pages) : s(shape), host(shape.bytes_per_page(P) * pages), dev(shape.bytes_per_page(P) * pages) {
    src = paged_view(host.data(), s, pages, page_size<>(P));
    dst = layer_first_view(dev.data(), s, pages * P);
  }
  // Every fp32 element of the host pages drawn from N(0, 1).
  void fill_normal(std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> n01;
    for (std::size_t i = 0; i < host.size() / 4; ++i) {
      const float v = n01(rng);
      std::memcpy(host.data() + 4 * i, &v, 4);
    }
  }
};

}  // namespace

BOOST_DATA_TEST_CASE(delta_zero_is_a_copy_and_v_is_untouched,
                     boost::unit_test::data::make({rope_convention::adjacent_pairs, rope_convention::rotate_half}), conv) {
  pools p(kv_shape::mha(3, 2, 16, dtype::bf16), 4);
  std::mt19937_64 rng(1);
  for (auto& b : p.host) b = std::byte(rng() & 0x7f);  // finite bf16 patterns
  const rope_spec r{conv, 10000.f, 16, 0};
  const page_pair pairs[] = {{0, 3}, {1, 0}, {2, 2}};
  const long zero[] = {0, 0, 0};
  BOOST_REQUIRE(cpu::load_rotated(p.src, p.dst, pairs, zero, r, dtype::bf16).has_value());
  std::vector<std::byte> ref(p.dev.size());
  auto ref_view = layer_first_view(ref.data(), p.s, 4 * P);
  BOOST_REQUIRE(cpu::load(p.src, ref_view, pairs).has_value());
  for (const auto& pr : pairs)
    for (std::size_t l = 0; l < 3; ++l)
      for (std::size_t k = 0; k < 2; ++k)
        BOOST_TEST(std::memcmp(p.dst.page_row(l, k, pr.dst, P, 0, 0), ref_view.page_row(l, k, pr.dst, P, 0, 0), P * 32 * 2) == 0);
  // A non-zero delta rotates K only.
  const long moved[] = {5, -7, 100};
  BOOST_REQUIRE(cpu::load_rotated(p.src, p.dst, pairs, moved, r, dtype::bf16).has_value());
  for (const auto& pr : pairs)
    for (std::size_t l = 0; l < 3; ++l) {
      BOOST_TEST(std::memcmp(p.dst.page_row(l, 1, pr.dst, P, 0, 0), ref_view.page_row(l, 1, pr.dst, P, 0, 0), P * 32 * 2) == 0);
      BOOST_TEST(std::memcmp(p.dst.page_row(l, 0, pr.dst, P, 0, 0), ref_view.page_row(l, 0, pr.dst, P, 0, 0), P * 32 * 2) != 0);
    }
}

BOOST_DATA_TEST_CASE(pre_rotation_k_loaded_at_p_equals_rope_at_p,
                     boost::unit_test::data::make({rope_convention::adjacent_pairs, rope_convention::rotate_half}) *
                         boost::unit_test::data::make({0, 64}),
                     conv, rotary) {
  const kv_shape s = kv_shape::mha(2, 4, 128, dtype::fp32);
  pools p(s, 3);
  p.fill_normal(2);
  const rope_spec r{conv, 500000.f, 128, std::size_t(rotary)};
  // Page 1 of a sequence holds positions [16, 32): load page i of the pool to serve at page i + 7.
  const page_pair pairs[] = {{0, 0}, {1, 1}, {2, 2}};
  const long delta[] = {7 * long(P), 7 * long(P) + 16, 7 * long(P) + 32};
  BOOST_REQUIRE(cpu::load_rotated(p.src, p.dst, pairs, delta, r, dtype::fp32).has_value());
  std::size_t differ = 0;
  for (std::size_t i = 0; i < 3; ++i)
    for (std::size_t l = 0; l < 2; ++l)
      for (std::size_t t = 0; t < P; ++t) {
        std::vector<float> want(4 * 128);
        std::memcpy(want.data(), p.src.page_row(l, 0, i, P, t, 0), want.size() * 4);
        engine_rope(want.data(), 4, r, std::size_t(delta[i]));
        // Each row of page i rotated by delta[i]: the engine's RoPE at position delta[i] (K stored
        // pre-rotation: every row at position 0).
        differ += std::memcmp(want.data(), p.dst.page_row(l, 0, i, P, t, 0), want.size() * 4) != 0;
      }
  BOOST_TEST(differ == 0u);
}

BOOST_AUTO_TEST_CASE(moving_a_rotated_page_agrees_with_rope_at_the_new_position) {
  const kv_shape s = kv_shape::mha(1, 2, 64, dtype::fp32);
  pools p(s, 1);
  const rope_spec r{rope_convention::rotate_half, 10000.f, 64, 0};
  std::mt19937_64 rng(3);
  std::normal_distribution<float> n01;
  std::vector<float> raw(P * 2 * 64);
  for (auto& v : raw) v = n01(rng);
  // K as an engine wrote it at positions [300, 316): rotated there.
  for (std::size_t t = 0; t < P; ++t) {
    std::vector<float> row(raw.begin() + std::ptrdiff_t(t * 128), raw.begin() + std::ptrdiff_t(t * 128 + 128));
    engine_rope(row.data(), 2, r, 300 + t);
    std::memcpy(p.src.page_row(0, 0, 0, P, t, 0), row.data(), 128 * 4);
  }
  const page_pair pair[] = {{0, 0}};
  const long delta[] = {-300 + 12};  // the conversation lost 288 tokens before this page
  BOOST_REQUIRE(cpu::load_rotated(p.src, p.dst, pair, delta, r, dtype::fp32).has_value());
  double worst = 0;
  for (std::size_t t = 0; t < P; ++t) {
    std::vector<float> want(raw.begin() + std::ptrdiff_t(t * 128), raw.begin() + std::ptrdiff_t(t * 128 + 128));
    engine_rope(want.data(), 2, r, 12 + t);
    const float* got = reinterpret_cast<const float*>(p.dst.page_row(0, 0, 0, P, t, 0));
    for (std::size_t i = 0; i < 128; ++i) worst = std::max(worst, double(std::fabs(got[i] - want[i])));
  }
  BOOST_TEST_MESSAGE("worst abs error after moving 288 positions: " << worst);
  BOOST_TEST(worst < 1e-4);  // fp32 angle rounding at positions ~300
}

BOOST_AUTO_TEST_CASE(bad_arguments_are_errors) {
  pools p(kv_shape::mha(1, 1, 8, dtype::bf16), 2);
  const page_pair pairs[] = {{0, 1}};
  const long d1[] = {1}, d2[] = {1, 2};
  BOOST_TEST((cpu::load_rotated(p.src, p.dst, pairs, d2, rope_spec{rope_convention::rotate_half, 1e4f, 8, 0}, dtype::bf16).code() == errc::invalid_argument));
  BOOST_TEST((cpu::load_rotated(p.src, p.dst, pairs, d1, rope_spec{rope_convention::rotate_half, 1e4f, 16, 0}, dtype::bf16).code() == errc::invalid_argument));
  BOOST_TEST((cpu::load_rotated(p.src, p.dst, pairs, d1, rope_spec{rope_convention::rotate_half, 1e4f, 8, 0}, dtype::fp32).code() == errc::invalid_argument));
  const page_pair out_of_range[] = {{5, 0}};
  BOOST_TEST((cpu::load_rotated(p.src, p.dst, out_of_range, d1, rope_spec{rope_convention::rotate_half, 1e4f, 8, 0}, dtype::bf16).code() == errc::invalid_argument));
  BOOST_CHECK_THROW((rope_spec{rope_convention::rotate_half, 1e4f, 8, 3}.check()), config_error);
}

BOOST_DATA_TEST_CASE(pre_rotation_storage_rotates_each_row_to_its_own_position,
                     boost::unit_test::data::make({rope_convention::adjacent_pairs, rope_convention::rotate_half}), conv) {
  const kv_shape s = kv_shape::mha(2, 2, 64, dtype::fp32);
  pools p(s, 3);
  p.fill_normal(4);
  const rope_spec r{conv, 10000.f, 64, 0};
  const page_pair pairs[] = {{0, 2}, {2, 0}};
  const long first[] = {0, 1024};  // the first page serves positions [0, 16), the second [1024, 1040)
  // Layer 1 only: layer 0 of the destination keeps its poison.
  std::fill(p.dev.begin(), p.dev.end(), std::byte{0x7f});
  BOOST_REQUIRE(cpu::load_rotated(p.src, p.dst, pairs, rope_on_load{r, k_storage::pre_rotation, first}, dtype::fp32,
                                  layer_range::one(1))
                    .has_value());
  std::size_t differ = 0, untouched = 0;
  for (std::size_t i = 0; i < 2; ++i)
    for (std::size_t t = 0; t < P; ++t) {
      std::vector<float> want(2 * 64);
      std::memcpy(want.data(), p.src.page_row(1, 0, pairs[i].src, P, t, 0), want.size() * 4);
      engine_rope(want.data(), 2, r, std::size_t(first[i]) + t);
      differ += std::memcmp(want.data(), p.dst.page_row(1, 0, pairs[i].dst, P, t, 0), want.size() * 4) != 0;
      differ += std::memcmp(p.src.page_row(1, 1, pairs[i].src, P, t, 0), p.dst.page_row(1, 1, pairs[i].dst, P, t, 0), 2 * 64 * 4) != 0;
      untouched += *p.dst.page_row(0, 0, pairs[i].dst, P, t, 0) == std::byte{0x7f};
    }
  BOOST_TEST(differ == 0u);        // K at (first + t) bit for bit as the engine computes it; V copied
  BOOST_TEST(untouched == 2 * P);  // other layers not written
  const long bad[] = {0};
  BOOST_TEST((cpu::load_rotated(p.src, p.dst, pairs, rope_on_load{r, k_storage::pre_rotation, bad}, dtype::fp32).code() ==
              errc::invalid_argument));
}
