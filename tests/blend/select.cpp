// blend::select_deviating against a hand-built deviation: the chosen tokens are exactly the ones
// whose KV was perturbed most, ascending, the count is ceil(ratio × tokens), block tables are
// followed (slots out of order), and bad arguments are errors.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kvtier/blend/select.hpp"

using namespace kvtier;

namespace {
constexpr std::size_t P = 4;
struct pool {
  kv_shape s = kv_shape::mha(3, 2, 8, dtype::bf16);
  std::vector<std::byte> mem;
  transfer::layer_first_buffer view;
  explicit pool(std::size_t slots) : mem(s.bytes_per_token() * slots * P) { view = transfer::layer_first_view(mem.data(), s, slots * P); }
};
}  // namespace

BOOST_AUTO_TEST_CASE(picks_the_most_deviating_tokens_through_block_tables) {
  pool fresh(6), loaded(6);
  std::mt19937_64 rng(3);
  std::normal_distribution<float> n01;
  for (std::size_t i = 0; i < fresh.mem.size() / 2; ++i) detail::store_typed<dtype::bf16>(fresh.mem.data(), i, n01(rng));
  // The same sequence (16 tokens = 4 pages) in other slots of the loaded pool, perturbed at known tokens on layer 1.
  const std::vector<device_slot> ft{device_slot{0}, device_slot{1}, device_slot{2}, device_slot{3}};
  const std::vector<device_slot> lt{device_slot{5}, device_slot{2}, device_slot{4}, device_slot{0}};
  for (std::size_t pos = 0; pos < 16; ++pos)
    for (std::size_t l = 0; l < 3; ++l)
      for (std::size_t k = 0; k < 2; ++k)
        std::memcpy(loaded.view.page_row(l, k, std::size_t(lt[pos / P].value()), P, pos % P, 0),
                    fresh.view.page_row(l, k, std::size_t(ft[pos / P].value()), P, pos % P, 0), 2 * 2 * 8);
  const std::size_t perturbed[] = {13, 2, 7};  // by decreasing amount
  float amount = 3.f;
  for (std::size_t pos : perturbed) {
    std::byte* row = loaded.view.page_row(1, 1, std::size_t(lt[pos / P].value()), P, pos % P, 0);
    detail::store_typed<dtype::bf16>(row, 3, detail::load_typed<dtype::bf16>(row, 3) + amount);
    amount -= 1.f;
  }
  const blend::sequence_kv f{fresh.view, ft, P}, ld{loaded.view, lt, P};
  auto two = blend::select_deviating(f, ld, 1, 0, 16, 2.0 / 16, dtype::bf16);
  BOOST_REQUIRE(two.has_value());
  BOOST_TEST((*two == std::vector<std::size_t>{2, 13}));
  auto three = blend::select_deviating(f, ld, 1, 0, 16, 0.15, dtype::bf16);  // ceil(2.4) = 3
  BOOST_REQUIRE(three.has_value());
  BOOST_TEST((*three == std::vector<std::size_t>{2, 7, 13}));
  auto none = blend::select_deviating(f, ld, 0, 0, 16, 0.5, dtype::bf16);  // layer 0 is identical: ties → earliest
  BOOST_REQUIRE(none.has_value());
  BOOST_TEST((*none == std::vector<std::size_t>{0, 1, 2, 3, 4, 5, 6, 7}));
  auto d = blend::deviation(f, ld, 1, 0, 16, dtype::bf16);
  BOOST_REQUIRE(d.has_value());
  BOOST_TEST((*d)[13] > (*d)[2]);
  BOOST_TEST((*d)[0] == 0.0);
}

BOOST_AUTO_TEST_CASE(bad_arguments_are_errors) {
  pool a(2), b(2);
  const std::vector<device_slot> t{device_slot{0}, device_slot{1}};
  const blend::sequence_kv f{a.view, t, P}, l{b.view, t, P};
  BOOST_TEST((blend::select_deviating(f, l, 3, 0, 8, 0.1, dtype::bf16).code() == errc::invalid_argument));   // layer
  BOOST_TEST((blend::select_deviating(f, l, 0, 0, 9, 0.1, dtype::bf16).code() == errc::invalid_argument));   // past the table
  BOOST_TEST((blend::select_deviating(f, l, 0, 0, 8, 1.5, dtype::bf16).code() == errc::invalid_argument));   // ratio
  BOOST_TEST((blend::select_deviating(f, l, 0, 0, 8, 0.1, dtype::fp32).code() == errc::invalid_argument));   // type
}

BOOST_AUTO_TEST_CASE(deviation_at_listed_positions_against_a_one_layer_snapshot) {
  pool fresh(4);
  std::mt19937_64 rng(5);
  std::normal_distribution<float> n01;
  for (std::size_t i = 0; i < fresh.mem.size() / 2; ++i) detail::store_typed<dtype::bf16>(fresh.mem.data(), i, n01(rng));
  // A one-layer snapshot of layer 2, one pool slot per page in reverse order, with K of position 5 and V of 9 moved.
  const kv_shape one = kv_shape::mha(1, 2, 8, dtype::bf16);
  std::vector<std::byte> mem(one.bytes_per_token() * 4 * P);
  const auto snap = transfer::layer_first_view(mem.data(), one, 4 * P);
  const std::vector<device_slot> ft{device_slot{0}, device_slot{1}, device_slot{2}, device_slot{3}};
  const std::vector<device_slot> st{device_slot{3}, device_slot{2}, device_slot{1}, device_slot{0}};
  for (std::size_t pos = 0; pos < 16; ++pos)
    for (std::size_t k = 0; k < 2; ++k)
      std::memcpy(snap.page_row(0, k, std::size_t(st[pos / P].value()), P, pos % P, 0),
                  fresh.view.page_row(2, k, pos / P, P, pos % P, 0), 2 * 2 * 8);
  const auto bump = [&](std::size_t pos, std::size_t k, float by) {
    std::byte* row = snap.page_row(0, k, std::size_t(st[pos / P].value()), P, pos % P, 0);
    detail::store_typed<dtype::bf16>(row, 0, detail::load_typed<dtype::bf16>(row, 0) + by);
  };
  bump(5, 0, 2.f);
  bump(9, 1, 1.f);
  const blend::sequence_kv f{fresh.view, ft, P}, s{snap, st, P};
  const std::vector<std::size_t> where{9, 5, 1};
  auto both = blend::deviation_at(f, 2, s, 0, where, dtype::bf16);
  auto k = blend::deviation_at(f, 2, s, 0, where, dtype::bf16, blend::kv_part::k);
  auto v = blend::deviation_at(f, 2, s, 0, where, dtype::bf16, blend::kv_part::v);
  BOOST_TEST_REQUIRE((both && k && v));
  BOOST_TEST((*both)[0] > 0.5);
  BOOST_TEST((*both)[1] > 2.0);
  BOOST_TEST((*both)[2] == 0.0);
  BOOST_TEST((*k)[0] == 0.0);  // position 9 moved in V only
  BOOST_TEST((*v)[1] == 0.0);  // position 5 in K only
  BOOST_TEST((*k)[1] == (*both)[1]);
  BOOST_TEST((*v)[0] == (*both)[0]);
  BOOST_TEST((blend::deviation_at(f, 2, s, 1, where, dtype::bf16).code() == errc::invalid_argument));  // the snapshot has one layer
  const std::vector<std::size_t> past{16};
  BOOST_TEST((blend::deviation_at(f, 2, s, 0, past, dtype::bf16).code() == errc::invalid_argument));
}

BOOST_AUTO_TEST_CASE(attention_mass_is_the_softmax_the_queries_give) {
  // fp32, 1 layer, 1 KV head of 2 dims shared by 2 query heads; 4 positions.
  const kv_shape s1 = kv_shape::mha(1, 1, 2, dtype::fp32);
  std::vector<float> mem(s1.bytes_per_token() / 4 * P, 0.f);
  const auto view = transfer::layer_first_view(reinterpret_cast<std::byte*>(mem.data()), s1, P);
  const float keys[4][2] = {{1, 0}, {0, 1}, {1, 1}, {-1, 0}};
  for (std::size_t p = 0; p < 4; ++p) std::memcpy(view.row(0, 0, p, 0), keys[p], 8);
  const std::vector<device_slot> t{device_slot{0}};
  const blend::sequence_kv kv{view, t, P};
  const std::vector<float> q{2, 0, 0, 2};  // one query row at position 3: head 0 = (2, 0), head 1 = (0, 2)
  const std::vector<std::size_t> qpos{3}, at{0, 1, 2, 3};
  auto m = blend::attention_mass(kv, 0, q, qpos, 2, at, dtype::fp32);
  BOOST_TEST_REQUIRE(m.has_value());
  const auto softmax_at = [](std::vector<double> x, std::size_t i) {
    double z = 0;
    for (double& v : x) z += (v = std::exp(v));
    return x[i] / z;
  };
  const double r = std::sqrt(2.0);
  const std::vector<double> h0{2 / r, 0, 2 / r, -2 / r}, h1{0, 2 / r, 2 / r, 0};
  for (std::size_t p = 0; p < 4; ++p) BOOST_TEST((*m)[p] == softmax_at(h0, p) + softmax_at(h1, p), boost::test_tools::tolerance(1e-9));
  const std::vector<std::size_t> later{4};
  BOOST_TEST((blend::attention_mass(kv, 0, q, qpos, 2, later, dtype::fp32).code() == errc::invalid_argument));  // after the query
  BOOST_TEST((blend::attention_mass(kv, 0, q, qpos, 3, at, dtype::fp32).code() == errc::invalid_argument));     // heads
}

BOOST_AUTO_TEST_CASE(top_k_and_kept_count) {
  const std::vector<double> d{1, 5, 5, 0, 7};
  BOOST_TEST((blend::top_k(d, 2) == std::vector<std::size_t>{1, 4}));  // tie 5/5: the earlier
  BOOST_TEST((blend::top_k(d, 9) == std::vector<std::size_t>{0, 1, 2, 3, 4}));
  BOOST_TEST(blend::top_k(d, 0).empty());
  BOOST_TEST(blend::kept_count(0.07, 100) == 7u);  // not 8: 0.07 × 100 is 7.000000000000001
  BOOST_TEST(blend::kept_count(0.15, 20) == 3u);
  BOOST_TEST(blend::kept_count(0.15, 16) == 3u);
  BOOST_TEST(blend::kept_count(1.0, 7) == 7u);
  BOOST_TEST(blend::kept_count(0.0, 7) == 0u);
}
