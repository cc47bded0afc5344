#include <boost/test/unit_test.hpp>

#include <vector>

#include "kvtier/testing/reference_kv.hpp"

using namespace kvtier;
using namespace kvtier::testing;

namespace {
std::vector<token_id> tokens(std::initializer_list<int> v) {
  std::vector<token_id> out;
  for (int t : v) out.push_back(token_id{t});
  return out;
}
}  // namespace

BOOST_AUTO_TEST_CASE(rows_depend_on_the_whole_prefix_and_the_namespace) {
  const reference_kv gen(kv_shape::mha(2, 2, 20, dtype::fp16));  // 80-byte rows: a partial last word
  const auto a = tokens({1, 2, 3, 4}), b = tokens({1, 2, 9, 4}), c = tokens({1, 2, 3, 4, 5});
  const auto ha = gen.prefix_hashes(0, a), hb = gen.prefix_hashes(0, b), hc = gen.prefix_hashes(0, c);
  const auto other_ns = gen.prefix_hashes(1, a);
  BOOST_TEST(ha[1] == hb[1]);  // shared prefix, same hash
  BOOST_TEST(ha[2] != hb[2]);
  BOOST_TEST(ha[3] != hb[3]);  // same token, different prefix
  for (std::size_t i = 0; i < a.size(); ++i) BOOST_TEST(ha[i] == hc[i]);
  for (std::size_t i = 0; i < a.size(); ++i) BOOST_TEST(ha[i] != other_ns[i]);

  std::vector<std::byte> r1(gen.shape().row_bytes()), r2(r1.size());
  gen.fill_row(ha[3], 1, 0, 3, r1);
  gen.fill_row(ha[3], 1, 0, 3, r2);
  BOOST_TEST(r1 == r2);
  BOOST_TEST(gen.check_row(ha[3], 1, 0, 3, r1));
  gen.fill_row(ha[3], 1, 1, 3, r2);  // V differs from K
  BOOST_TEST(!(r1 == r2));
  BOOST_TEST(!gen.check_row(ha[3], 1, 0, 3, r2));
  gen.fill_row(ha[3], 0, 0, 3, r2);  // another layer differs
  BOOST_TEST(!(r1 == r2));
  r2 = r1;
  r2.back() ^= std::byte{1};  // a single flipped bit in the tail is caught
  BOOST_TEST(!gen.check_row(ha[3], 1, 0, 3, r2));
}

BOOST_AUTO_TEST_CASE(check_row_matches_fill_row_for_long_rows) {
  const reference_kv gen(shapes::llama3_8b(), 42);  // 2 KiB rows: several check chunks
  const auto t = tokens({7, 8, 9});
  const auto h = gen.prefix_hashes(3, t);
  std::vector<std::byte> row(gen.shape().row_bytes());
  gen.fill_row(h[2], 31, 1, 2, row);
  BOOST_TEST(gen.check_row(h[2], 31, 1, 2, row));
  row[1500] ^= std::byte{0x80};
  BOOST_TEST(!gen.check_row(h[2], 31, 1, 2, row));
  const reference_kv other_seed(shapes::llama3_8b(), 43);
  BOOST_TEST(other_seed.prefix_hashes(3, t)[0] != h[0]);
  BOOST_CHECK_THROW(gen.prefix_hashes(0, t, std::span<std::uint64_t>{}), config_error);
}
