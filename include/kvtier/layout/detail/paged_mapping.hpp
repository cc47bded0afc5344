#pragma once
// What the paged layouts (page_first, page_head_first) share: the extents, the page size and the
// page stride with their checks, and everything that follows from them. Both keep a page in one
// contiguous block of page_span() elements, pages page_stride() apart; only the order inside a
// page differs, and that (operator(), at_page, index_of, is_strided) stays with each layout.
#include <cstddef>

#include "kvtier/core/config.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/core/page_size.hpp"
#include "kvtier/layout/extents.hpp"

namespace kvtier::layout::detail {

// Checks a page size against extents; shared by the paged layouts.
constexpr std::size_t checked_page_tokens(const kv_extents& e, page_size<> p) {
  if (e.tokens() % p.tokens() != 0)
    throw config_error("kvtier: a paged layout needs a token extent that is a multiple of the page size");
  return p.tokens();
}

// The base of Layout::mapping for a paged Layout. Templated on the layout so that two layouts'
// mappings never compare equal through their bases.
template <class Layout>
class paged_mapping {
 public:
  constexpr paged_mapping() noexcept = default;
  // Throws config_error if e.tokens() is not a multiple of the page size.
  constexpr paged_mapping(const kv_extents& e, page_size<> p) : e_(e), p_(checked_page_tokens(e, p)) {
    stride_ = page_span();
  }
  // Pages `page_stride` elements apart (>= page_span()): pools that pad slots to an alignment.
  // Throws config_error for a stride shorter than a page.
  constexpr paged_mapping(const kv_extents& e, page_size<> p, std::size_t page_stride) : paged_mapping(e, p) {
    if (page_stride < page_span()) throw config_error("kvtier: a page stride shorter than a page");
    stride_ = page_stride;
  }
  // Elements from one page's start to the next.
  KVTIER_HOST_DEVICE constexpr std::size_t page_stride() const noexcept { return stride_; }

  KVTIER_HOST_DEVICE constexpr const kv_extents& extents() const noexcept { return e_; }
  KVTIER_HOST_DEVICE constexpr std::size_t page_tokens() const noexcept { return p_; }
  KVTIER_HOST_DEVICE constexpr std::size_t pages() const noexcept { return e_.tokens() / p_; }
  // Elements of one page: (layer, kv, token_in_page, head, dim) in the layout's order.
  KVTIER_HOST_DEVICE constexpr std::size_t page_span() const noexcept {
    return e_.layers() * e_.kv() * p_ * e_.row_elements();
  }
  KVTIER_HOST_DEVICE constexpr std::size_t required_span_size() const noexcept {
    return (pages() - 1) * stride_ + page_span();
  }

  static constexpr bool is_always_unique() noexcept { return true; }
  static constexpr bool is_always_exhaustive() noexcept { return false; }  // padded page strides
  // Not strided: the token index splits into (page, token_in_page) with different strides.
  static constexpr bool is_always_strided() noexcept { return false; }
  static constexpr bool is_unique() noexcept { return true; }
  constexpr bool is_exhaustive() const noexcept { return stride_ == page_span() || pages() == 1; }

  friend constexpr bool operator==(const paged_mapping&, const paged_mapping&) = default;

 protected:
  kv_extents e_{};
  std::size_t p_ = 1;
  std::size_t stride_ = 1;  // page stride in elements
};

}  // namespace kvtier::layout::detail
