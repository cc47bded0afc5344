#include <boost/test/unit_test.hpp>
#include <boost/test/data/test_case.hpp>

#include <limits>
#include <ostream>

#include "kvtier/core.hpp"

using namespace kvtier;
namespace bdata = boost::unit_test::data;

namespace kvtier {
std::ostream& operator<<(std::ostream& os, dtype t) { return os << to_string(t); }
}  // namespace kvtier

BOOST_AUTO_TEST_CASE(llama3_8b_sizes) {
  constexpr kv_shape s = shapes::llama3_8b();
  static_assert(s.bytes_per_token() == 128 * 1024, "Llama-3-8B: 128 KiB per token");
  BOOST_TEST(s.kv_planes() == 2u);
  BOOST_TEST(s.row_bytes() == 8u * 128 * 2);
  BOOST_TEST(s.bytes_per_token_per_layer() == 4096u);
  BOOST_TEST(s.bytes_per_page(16) == 16u * 128 * 1024);
  BOOST_TEST(s.bytes_per_page_per_layer(16) == 16u * 4096);
}

BOOST_AUTO_TEST_CASE(mla_has_one_plane) {
  const kv_shape s = kv_shape::mla(61, 576, dtype::bf16);
  BOOST_TEST(s.kv_planes() == 1u);
  BOOST_TEST(s.heads() == 1u);
  BOOST_TEST(s.bytes_per_token_per_layer() == 576u * 2);
  BOOST_TEST(s.bytes_per_token() == 61u * 576 * 2);
  BOOST_TEST((s.kind() == attention::mla));
}

BOOST_DATA_TEST_CASE(element_sizes,
                     bdata::make({dtype::bf16, dtype::fp16, dtype::fp8_e4m3, dtype::fp8_e5m2, dtype::fp32}) ^
                         bdata::make({2u, 2u, 1u, 1u, 4u}),
                     elem, nbytes) {
  const kv_shape s = kv_shape::mha(2, 4, 64, elem);
  BOOST_TEST(s.element_bytes() == nbytes);
  BOOST_TEST(s.bytes_per_token() == 2u * 2 * 4 * 64 * nbytes);
}

BOOST_AUTO_TEST_CASE(zero_extents_are_rejected) {
  BOOST_CHECK_THROW(kv_shape::mha(0, 8, 128, dtype::bf16), config_error);
  BOOST_CHECK_THROW(kv_shape::mha(32, 0, 128, dtype::bf16), config_error);
  BOOST_CHECK_THROW(kv_shape::mha(32, 8, 0, dtype::bf16), config_error);
  BOOST_CHECK_THROW(kv_shape::mla(32, 0, dtype::bf16), config_error);
  BOOST_CHECK_THROW(kv_shape::mha(32, 8, 128, static_cast<dtype>(99)), config_error);
}

BOOST_AUTO_TEST_CASE(oversized_extents_are_rejected) {
  BOOST_CHECK_THROW(kv_shape::mha(70000, 8, 128, dtype::bf16), config_error);
  const kv_shape big = kv_shape::mha(65535, 65535, 65535, dtype::fp32);  // 2^50 bytes a token: fits
  BOOST_CHECK_THROW(big.bytes_per_page(std::numeric_limits<std::size_t>::max() / 2), config_error);
}

BOOST_AUTO_TEST_CASE(fingerprint_tells_shapes_apart) {
  const auto a = kv_shape::mha(32, 8, 128, dtype::bf16);
  BOOST_TEST(a.fingerprint() == shapes::llama3_8b().fingerprint());
  BOOST_TEST(a.fingerprint() != kv_shape::mha(32, 8, 128, dtype::fp16).fingerprint());
  BOOST_TEST(a.fingerprint() != kv_shape::mha(32, 8, 64, dtype::bf16).fingerprint());
  BOOST_TEST(a.fingerprint() != kv_shape::mha(31, 8, 128, dtype::bf16).fingerprint());
  BOOST_TEST(kv_shape::mla(32, 128, dtype::bf16).fingerprint() != kv_shape::mha(32, 1, 128, dtype::bf16).fingerprint());
}
