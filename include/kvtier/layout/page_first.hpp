#pragma once
// page_first: the layout of the host, disk and remote tiers. Physical order
// (page, layer, kv, token_in_page, head, dim): everything of one page is one contiguous block, so a
// page moves between slow tiers as one transfer; logical token t lives in page t / P at t % P.
#include <cstddef>

#include "kvtier/core/config.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/core/page_size.hpp"
#include "kvtier/layout/concepts.hpp"
#include "kvtier/layout/extents.hpp"

namespace kvtier::layout {

namespace detail {
// Checks a page size against extents; shared by the paged layouts.
constexpr std::size_t checked_page_tokens(const kv_extents& e, page_size<> p) {
  if (e.tokens() % p.tokens() != 0)
    throw config_error("kvtier: a paged layout needs a token extent that is a multiple of the page size");
  return p.tokens();
}
}  // namespace detail

struct page_first {
  class mapping {
   public:
    using kvtier_layout = layout_tag;
    using extents_type = kv_extents;
    using layout_type = page_first;
    static constexpr bool heads_contiguous = true;  // (head, dim) of one token row are contiguous

    constexpr mapping() noexcept = default;
    // Throws config_error if e.tokens() is not a multiple of the page size.
    constexpr mapping(const kv_extents& e, page_size<> p) : e_(e), p_(detail::checked_page_tokens(e, p)) {
      stride_ = page_span();
    }
    // Pages `page_stride` elements apart (>= page_span()): pools that pad slots to an alignment.
    // Throws config_error for a stride shorter than a page.
    constexpr mapping(const kv_extents& e, page_size<> p, std::size_t page_stride) : mapping(e, p) {
      if (page_stride < page_span()) throw config_error("kvtier: a page stride shorter than a page");
      stride_ = page_stride;
    }
    // Elements from one page's start to the next.
    KVTIER_HOST_DEVICE constexpr std::size_t page_stride() const noexcept { return stride_; }

    KVTIER_HOST_DEVICE constexpr const kv_extents& extents() const noexcept { return e_; }
    KVTIER_HOST_DEVICE constexpr std::size_t page_tokens() const noexcept { return p_; }
    KVTIER_HOST_DEVICE constexpr std::size_t pages() const noexcept { return e_.tokens() / p_; }
    // Elements of one page: (layer, kv, token_in_page, head, dim).
    KVTIER_HOST_DEVICE constexpr std::size_t page_span() const noexcept {
      return e_.layers() * e_.kv() * p_ * e_.row_elements();
    }
    // Elements of one (page, layer, kv) block: (token_in_page, head, dim), contiguous.
    KVTIER_HOST_DEVICE constexpr std::size_t block_span() const noexcept { return p_ * e_.row_elements(); }
    KVTIER_HOST_DEVICE constexpr std::size_t operator()(std::size_t l, std::size_t k, std::size_t t, std::size_t h,
                                                        std::size_t d) const noexcept {
      const std::size_t page = t / p_, ti = t % p_;
      return page * stride_ + (l * e_.kv() + k) * block_span() + (ti * e_.heads() + h) * e_.dim() + d;
    }
    // Offset of (layer, kv, token ti of page `page`, head, dim), without dividing the token.
    KVTIER_HOST_DEVICE constexpr std::size_t at_page(std::size_t l, std::size_t k, std::size_t page, std::size_t ti,
                                                     std::size_t h, std::size_t d) const noexcept {
      return page * stride_ + (l * e_.kv() + k) * block_span() + (ti * e_.heads() + h) * e_.dim() + d;
    }
    // The inverse of operator() for offsets it produces (padding between pages maps to no index).
    KVTIER_HOST_DEVICE constexpr kv_index index_of(std::size_t off) const noexcept {
      const std::size_t page = off / stride_;
      off %= stride_;
      kv_index i;
      i.dim = off % e_.dim(); off /= e_.dim();
      i.head = off % e_.heads(); off /= e_.heads();
      const std::size_t ti = off % p_; off /= p_;
      i.kv = off % e_.kv(); off /= e_.kv();
      i.layer = off % e_.layers(); off /= e_.layers();
      i.token = page * p_ + ti;
      return i;
    }
    KVTIER_HOST_DEVICE constexpr std::size_t token_stride_in_page() const noexcept { return e_.row_elements(); }
    KVTIER_HOST_DEVICE constexpr std::size_t required_span_size() const noexcept {
      return (pages() - 1) * stride_ + page_span();
    }

    static constexpr bool is_always_unique() noexcept { return true; }
    static constexpr bool is_always_exhaustive() noexcept { return false; }  // padded page strides
    // Not strided: the token index splits into (page, token_in_page) with different strides.
    static constexpr bool is_always_strided() noexcept { return false; }
    static constexpr bool is_unique() noexcept { return true; }
    constexpr bool is_exhaustive() const noexcept { return stride_ == page_span() || pages() == 1; }
    // Strided only in the degenerate cases where the token split costs nothing.
    constexpr bool is_strided() const noexcept { return pages() == 1 || p_ == 1 || (e_.layers() * e_.kv() == 1 && stride_ == page_span()); }

    friend constexpr bool operator==(const mapping&, const mapping&) = default;

   private:
    kv_extents e_{};
    std::size_t p_ = 1;
    std::size_t stride_ = 1;  // page stride in elements
  };
};

static_assert(kv_layout<page_first>);
static_assert(paged_kv_layout_mapping<page_first::mapping>);

}  // namespace kvtier::layout
