// The host-side rules of the CUDA backend's partial prefill (row_filter_rules.hpp), on any machine:
// which rows a filter may keep and the gather's source indices; CacheBlend's row lists after the
// selection and on the last layer.
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <vector>

#include "kvtier_engine/row_filter_rules.hpp"

using kvtier_engine::detail::blend_rows_after_selection;
using kvtier_engine::detail::keep_new_text_only;
using kvtier_engine::detail::kept_sources;

namespace {
using rows = std::vector<std::size_t>;
std::vector<std::int32_t> sources(const rows& active, const rows& kept, bool& ok) {
  std::vector<std::int32_t> from(kept.size(), -1);
  ok = kept_sources(active, kept, from.data());
  return from;
}
}  // namespace

BOOST_AUTO_TEST_CASE(kept_rows_map_to_their_index_among_the_active) {
  bool ok = false;
  // Active rows after an earlier filter (indices into the pass's rows), kept subset with the last.
  const rows active{0, 3, 4, 9, 12, 20};
  auto from = sources(active, {3, 9, 20}, ok);
  BOOST_TEST(ok);
  BOOST_TEST((from == std::vector<std::int32_t>{1, 3, 5}));
  from = sources(active, active, ok);
  BOOST_TEST(ok);
  BOOST_TEST((from == std::vector<std::int32_t>{0, 1, 2, 3, 4, 5}));
  from = sources(active, {20}, ok);
  BOOST_TEST(ok);
  BOOST_TEST((from == std::vector<std::int32_t>{5}));
}

BOOST_AUTO_TEST_CASE(a_filter_may_not_add_reorder_repeat_or_drop_the_last_row) {
  bool ok = true;
  const rows active{0, 3, 4, 9, 12, 20};
  sources(active, {3, 9}, ok);  // the last row dropped
  BOOST_TEST(!ok);
  sources(active, {3, 5, 20}, ok);  // 5 is not active
  BOOST_TEST(!ok);
  sources(active, {9, 3, 20}, ok);  // out of order
  BOOST_TEST(!ok);
  sources(active, {3, 3, 20}, ok);  // repeated
  BOOST_TEST(!ok);
  sources(active, {}, ok);
  BOOST_TEST(!ok);
  sources(active, {0, 3, 4, 9, 12, 20, 21}, ok);  // a row added after the last
  BOOST_TEST(!ok);
  sources({}, {1}, ok);
  BOOST_TEST(!ok);
}

BOOST_AUTO_TEST_CASE(blend_rows_after_the_selection_and_on_the_last_layer) {
  // Prompt: prefix [0, 32), placed [32, 160), new text [160, 176); rows are positions 32..175.
  const std::size_t start = 32, placed = 160, n = 176;
  const rows kept_positions{33, 40, 159};
  rows active = blend_rows_after_selection(kept_positions, start, placed, n);
  rows want{1, 8, 127};
  for (std::size_t r = 128; r < 144; ++r) want.push_back(r);
  BOOST_TEST(active == want, boost::test_tools::per_element());
  keep_new_text_only(active, start, placed);
  rows news;
  for (std::size_t r = 128; r < 144; ++r) news.push_back(r);
  BOOST_TEST(active == news, boost::test_tools::per_element());
  // Nothing kept: the new text alone; the last layer leaves it as it is.
  active = blend_rows_after_selection({}, start, placed, n);
  BOOST_TEST(active == news, boost::test_tools::per_element());
  keep_new_text_only(active, start, placed);
  BOOST_TEST(active == news, boost::test_tools::per_element());
  // Every row active (no selection on this pass): the last layer keeps the new text.
  rows all(n - start);
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = i;
  keep_new_text_only(all, start, placed);
  BOOST_TEST(all == news, boost::test_tools::per_element());
}
