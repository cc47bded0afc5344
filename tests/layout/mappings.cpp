// Exhaustive property tests of the layout mappings over small extents: each offset equals a naive
// index formula written independently here, the mapping is a bijection onto [0, required_span_size)
// (unique and exhaustive, as it claims), index_of inverts it, and strides hold where it is strided.
#include <boost/test/unit_test.hpp>
#include <boost/test/data/test_case.hpp>

#include <ostream>
#include <vector>

#include "kvtier/layout.hpp"

using namespace kvtier;
using namespace kvtier::layout;
namespace bdata = boost::unit_test::data;

namespace {
struct dims {
  std::size_t L, K, T, H, D, P;
  friend std::ostream& operator<<(std::ostream& os, const dims& c) {
    return os << "(L" << c.L << " K" << c.K << " T" << c.T << " H" << c.H << " D" << c.D << " P" << c.P << ")";
  }
};
// Small extents covering MHA (K = 2), MLA (K = 1, H = 1), one-token pages and one-page buffers.
const std::vector<dims> cases = {{1, 1, 1, 1, 1, 1}, {2, 2, 8, 3, 4, 4}, {3, 1, 6, 1, 5, 2}, {2, 2, 6, 2, 3, 1},
                                 {1, 2, 4, 2, 2, 4}, {4, 2, 12, 2, 3, 3}, {2, 1, 16, 1, 7, 16}};

// (layer, kv, token, head, dim) in the physical order each layout documents, row-major.
std::size_t naive_layer_first(const dims& c, std::size_t l, std::size_t k, std::size_t t, std::size_t h, std::size_t d) {
  return (((l * c.K + k) * c.T + t) * c.H + h) * c.D + d;
}
std::size_t naive_page_first(const dims& c, std::size_t l, std::size_t k, std::size_t t, std::size_t h, std::size_t d) {
  const std::size_t page = t / c.P, ti = t % c.P;  // (page, layer, kv, ti, head, dim)
  return ((((page * c.L + l) * c.K + k) * c.P + ti) * c.H + h) * c.D + d;
}
std::size_t naive_page_head_first(const dims& c, std::size_t l, std::size_t k, std::size_t t, std::size_t h,
                                  std::size_t d) {
  const std::size_t page = t / c.P, ti = t % c.P;  // (page, head, layer, kv, ti, dim)
  return ((((page * c.H + h) * c.L + l) * c.K + k) * c.P + ti) * c.D + d;
}

template <class M, class Naive>
void check_mapping(const M& m, const dims& c, Naive naive) {
  BOOST_TEST(m.required_span_size() == c.L * c.K * c.T * c.H * c.D);
  std::vector<int> hits(m.required_span_size(), 0);
  for (std::size_t l = 0; l < c.L; ++l)
    for (std::size_t k = 0; k < c.K; ++k)
      for (std::size_t t = 0; t < c.T; ++t)
        for (std::size_t h = 0; h < c.H; ++h)
          for (std::size_t d = 0; d < c.D; ++d) {
            const std::size_t off = m(l, k, t, h, d);
            BOOST_TEST_REQUIRE(off == naive(c, l, k, t, h, d));
            BOOST_TEST_REQUIRE(off < m.required_span_size());
            ++hits[off];
            BOOST_TEST_REQUIRE((m.index_of(off) == kv_index{l, k, t, h, d}));  // round trip
          }
  for (int n : hits) BOOST_TEST_REQUIRE(n == 1);  // unique and exhaustive
  BOOST_TEST(m.is_unique());
  BOOST_TEST(m.is_exhaustive());
}
}  // namespace

BOOST_DATA_TEST_CASE(layer_first_matches_naive_formula, bdata::make(cases), c) {
  const layer_first::mapping m(kv_extents(c.L, c.K, c.T, c.H, c.D));
  check_mapping(m, c, naive_layer_first);
  // Strided: each logical step moves by stride(r).
  for (std::size_t r = 0; r < 5; ++r) {
    std::size_t idx[5] = {0, 0, 0, 0, 0};
    if (m.extents().extent(r) < 2) continue;
    idx[r] = 1;
    BOOST_TEST(m(idx[0], idx[1], idx[2], idx[3], idx[4]) == m.stride(r));
  }
  BOOST_TEST(m.plane_size() == c.T * c.H * c.D);
}

BOOST_DATA_TEST_CASE(page_first_matches_naive_formula, bdata::make(cases), c) {
  const page_first::mapping m(kv_extents(c.L, c.K, c.T, c.H, c.D), page_size<>(c.P));
  check_mapping(m, c, naive_page_first);
  BOOST_TEST(m.pages() == c.T / c.P);
  BOOST_TEST(m.page_span() * m.pages() == m.required_span_size());
  for (std::size_t page = 0; page < m.pages(); ++page)  // every page one contiguous block
    BOOST_TEST(m(0, 0, page * c.P, 0, 0) == page * m.page_span());
  for (std::size_t t = 0; t < c.T; ++t)
    BOOST_TEST(m.at_page(c.L - 1, c.K - 1, t / c.P, t % c.P, c.H - 1, 0) == m(c.L - 1, c.K - 1, t, c.H - 1, 0));
}

BOOST_DATA_TEST_CASE(page_head_first_matches_naive_formula, bdata::make(cases), c) {
  const page_head_first::mapping m(kv_extents(c.L, c.K, c.T, c.H, c.D), page_size<>(c.P));
  check_mapping(m, c, naive_page_head_first);
  BOOST_TEST(m.page_span() * m.pages() == m.required_span_size());
  // A tensor-parallel rank's heads [h0, h1) of a page are one contiguous run.
  for (std::size_t h = 0; h < c.H; ++h) BOOST_TEST(m(0, 0, c.P, h, 0) == m.page_span() + h * m.head_span());
  for (std::size_t t = 0; t < c.T; ++t)
    BOOST_TEST(m.at_page(c.L - 1, 0, t / c.P, t % c.P, 0, c.D - 1) == m(c.L - 1, 0, t, 0, c.D - 1));
}

BOOST_AUTO_TEST_CASE(strided_claims_are_honest) {
  static_assert(layer_first::mapping::is_always_strided());
  static_assert(!page_first::mapping::is_always_strided());
  static_assert(!page_head_first::mapping::is_always_strided());
  // Two pages of two layers: the token dimension jumps at the page boundary, so not strided.
  const kv_extents e(2, 2, 8, 2, 4);
  const page_first::mapping pf(e, page_size<>(4));
  BOOST_TEST(!pf.is_strided());
  BOOST_TEST(pf(0, 0, 4, 0, 0) - pf(0, 0, 3, 0, 0) != pf(0, 0, 1, 0, 0) - pf(0, 0, 0, 0, 0));
  BOOST_TEST(page_first::mapping(e, page_size<>(8)).is_strided());  // one page
}

BOOST_AUTO_TEST_CASE(bad_extents_are_configuration_errors) {
  BOOST_CHECK_THROW(kv_extents(0, 2, 8, 2, 4), config_error);
  BOOST_CHECK_THROW(page_first::mapping(kv_extents(2, 2, 10, 2, 4), page_size<>(4)), config_error);
  BOOST_CHECK_THROW(page_head_first::mapping(kv_extents(2, 2, 10, 2, 4), page_size<>(3)), config_error);
  BOOST_CHECK_THROW(kv_extents(std::size_t{1} << 40, 2, std::size_t{1} << 30, 1, 1), config_error);
  const kv_extents llama = kv_extents::of(shapes::llama3_8b(), 8192);
  BOOST_TEST(llama.size() * 2 == std::size_t{1} << 30);  // 8192 tokens of Llama-3-8B: 1 GiB
  BOOST_TEST(kv_extents::of(shapes::deepseek_v3_mla(), 16).kv() == 1u);
}

// Pools may pad slots to an alignment: pages page_stride elements apart. Offsets stay unique, pages
// start on the stride, the padding holds no index, and the mapping says it is not exhaustive.
BOOST_DATA_TEST_CASE(padded_page_strides, bdata::make(cases), c) {
  const kv_extents e(c.L, c.K, c.T, c.H, c.D);
  const std::size_t span = c.L * c.K * c.P * c.H * c.D, stride = span + 5;
  const page_first::mapping pf(e, page_size<>(c.P), stride);
  const page_head_first::mapping ph(e, page_size<>(c.P), stride);
  const std::size_t pages = c.T / c.P;
  BOOST_TEST(pf.required_span_size() == (pages - 1) * stride + span);
  BOOST_TEST(pf.is_exhaustive() == (pages == 1));
  std::vector<int> hits_f(pf.required_span_size(), 0), hits_h(ph.required_span_size(), 0);
  for (std::size_t l = 0; l < c.L; ++l)
    for (std::size_t k = 0; k < c.K; ++k)
      for (std::size_t t = 0; t < c.T; ++t)
        for (std::size_t h = 0; h < c.H; ++h)
          for (std::size_t d = 0; d < c.D; ++d) {
            const std::size_t page = t / c.P;
            const dims packed = c;
            const std::size_t of = pf(l, k, t, h, d), oh = ph(l, k, t, h, d);
            BOOST_TEST_REQUIRE(of == naive_page_first(packed, l, k, t, h, d) + page * (stride - span));
            BOOST_TEST_REQUIRE(oh == naive_page_head_first(packed, l, k, t, h, d) + page * (stride - span));
            BOOST_TEST_REQUIRE((pf.index_of(of) == kv_index{l, k, t, h, d}));
            BOOST_TEST_REQUIRE((ph.index_of(oh) == kv_index{l, k, t, h, d}));
            ++hits_f[of];
            ++hits_h[oh];
          }
  for (std::size_t o = 0; o < hits_f.size(); ++o) {
    BOOST_TEST_REQUIRE(hits_f[o] == (o % stride < span ? 1 : 0));
    BOOST_TEST_REQUIRE(hits_h[o] == (o % stride < span ? 1 : 0));
  }
  BOOST_CHECK_THROW(page_first::mapping(e, page_size<>(c.P), span - 1), config_error);
}
