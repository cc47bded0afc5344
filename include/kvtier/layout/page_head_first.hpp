#pragma once
// page_head_first: physical order (page, head, layer, kv, token_in_page, dim). A page is still one
// contiguous block, and inside it each head's KV (all layers) is contiguous, so a tensor-parallel
// rank that owns heads [h0, h1) reads one contiguous sub-block of every page.
#include <cstddef>

#include "kvtier/core/config.hpp"
#include "kvtier/layout/concepts.hpp"
#include "kvtier/layout/detail/paged_mapping.hpp"
#include "kvtier/layout/extents.hpp"

namespace kvtier::layout {

struct page_head_first {
  // Extents, page size, page stride, page_span() (= heads * head_span()), required_span_size()
  // and the is_* properties come from detail::paged_mapping (shared with page_first).
  class mapping : public detail::paged_mapping<page_head_first> {
   public:
    using kvtier_layout = layout_tag;
    using extents_type = kv_extents;
    using layout_type = page_head_first;
    static constexpr bool heads_contiguous = false;  // one token's heads are head_span() apart

    constexpr mapping() noexcept = default;
    // (extents, page size[, page stride]): see detail::paged_mapping for the checks.
    using detail::paged_mapping<page_head_first>::paged_mapping;

    // Elements of one head inside a page: (layer, kv, token_in_page, dim).
    KVTIER_HOST_DEVICE constexpr std::size_t head_span() const noexcept {
      return e_.layers() * e_.kv() * p_ * e_.dim();
    }
    KVTIER_HOST_DEVICE constexpr std::size_t operator()(std::size_t l, std::size_t k, std::size_t t, std::size_t h,
                                                        std::size_t d) const noexcept {
      const std::size_t page = t / p_, ti = t % p_;
      return page * stride_ + h * head_span() + ((l * e_.kv() + k) * p_ + ti) * e_.dim() + d;
    }
    // Offset of (layer, kv, token ti of page `page`, head, dim), without dividing the token.
    KVTIER_HOST_DEVICE constexpr std::size_t at_page(std::size_t l, std::size_t k, std::size_t page, std::size_t ti,
                                                     std::size_t h, std::size_t d) const noexcept {
      return page * stride_ + h * head_span() + ((l * e_.kv() + k) * p_ + ti) * e_.dim() + d;
    }
    // The inverse of operator() for offsets it produces (padding between pages maps to no index).
    KVTIER_HOST_DEVICE constexpr kv_index index_of(std::size_t off) const noexcept {
      const std::size_t page = off / stride_;
      off %= stride_;
      kv_index i;
      i.dim = off % e_.dim(); off /= e_.dim();
      const std::size_t ti = off % p_; off /= p_;
      i.kv = off % e_.kv(); off /= e_.kv();
      i.layer = off % e_.layers(); off /= e_.layers();
      i.head = off % e_.heads(); off /= e_.heads();
      i.token = page * p_ + ti;
      return i;
    }
    KVTIER_HOST_DEVICE constexpr std::size_t token_stride_in_page() const noexcept { return e_.dim(); }

    constexpr bool is_strided() const noexcept { return pages() == 1 || p_ == 1; }

    friend constexpr bool operator==(const mapping&, const mapping&) = default;
  };
};

static_assert(kv_layout<page_head_first>);
static_assert(paged_kv_layout_mapping<page_head_first::mapping>);

}  // namespace kvtier::layout
