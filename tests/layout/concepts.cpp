// Positive and negative tests of the layout concepts: the library's mappings model them, and
// look-alikes that do not opt in, or miss a requirement, do not.
#include <boost/test/unit_test.hpp>

#include "kvtier/layout.hpp"

using namespace kvtier::layout;

// Models.
static_assert(kv_layout<layer_first>);
static_assert(kv_layout<page_first>);
static_assert(kv_layout<page_head_first>);
static_assert(kv_layout_mapping<layer_first::mapping>);
static_assert(paged_kv_layout_mapping<page_first::mapping>);
static_assert(paged_kv_layout_mapping<page_head_first::mapping>);
// layer_first is a layout but not paged: it cannot be the host side of load/backup.
static_assert(!paged_kv_layout_mapping<layer_first::mapping>);

namespace {
// Everything a mapping needs except the opt-in tag: must not model the concept by accident.
struct no_opt_in : layer_first::mapping {
  using kvtier_layout = void;
};
// Opts in with the wrong tag type.
struct wrong_tag : layer_first::mapping {
  using kvtier_layout = int;
};
// Opts in but misses index_of (the inverse): not a mapping.
struct missing_inverse {
  using kvtier_layout = layout_tag;
  static constexpr bool heads_contiguous = true;
  const kv_extents& extents() const;
  std::size_t operator()(std::size_t, std::size_t, std::size_t, std::size_t, std::size_t) const;
  std::size_t required_span_size() const;
  std::size_t token_stride_in_page() const;
  static constexpr bool is_always_unique() { return true; }
  static constexpr bool is_always_exhaustive() { return true; }
  static constexpr bool is_always_strided() { return true; }
  bool is_unique() const;
  bool is_exhaustive() const;
  bool is_strided() const;
  friend bool operator==(const missing_inverse&, const missing_inverse&) = default;
};
// A layout policy whose mapping does not opt in.
struct policy_without_model {
  using mapping = no_opt_in;
};
}  // namespace

static_assert(!kv_layout_mapping<no_opt_in>);
static_assert(!kv_layout_mapping<wrong_tag>);
static_assert(!kv_layout_mapping<missing_inverse>);
static_assert(!kv_layout_mapping<int>);
static_assert(!kv_layout<policy_without_model>);
static_assert(!kv_layout<layer_first::mapping>);  // a mapping is not a policy

BOOST_AUTO_TEST_CASE(concepts_are_checked_at_compile_time) {
  // The static_asserts above are the test; this case checks one model behaves as its concept says.
  const page_first::mapping m(kv_extents(2, 2, 4, 1, 2), kvtier::page_size<>(2));
  BOOST_TEST(m.page_tokens() == 2u);
  BOOST_TEST(m.pages() == 2u);
}
