// blend::select_deviating against a hand-built deviation: the chosen tokens are exactly the ones
// whose KV was perturbed most, ascending, the count is ceil(ratio × tokens), block tables are
// followed (slots out of order), and bad arguments are errors.
#include <boost/test/unit_test.hpp>

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
