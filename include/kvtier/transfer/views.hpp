#pragma once
// Plain views the copies take: a base pointer (or a plane table) + a layout mapping + the element
// size, and batches of (source page, destination page) pairs. Pools and engines build these over
// memory they own; the copies never allocate or free KV memory.
#include <cstddef>
#include <cstdint>
#include <concepts>
#include <span>

#include "kvtier/core/config.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"
#include "kvtier/layout.hpp"

namespace kvtier::transfer {

// One page to move: page `src` of the source to page `dst` of the destination. A page is
// page_tokens consecutive tokens: tokens [dst * P, dst * P + P) of a layer-first buffer.
struct page_pair {
  std::uint32_t src = 0;
  std::uint32_t dst = 0;
  friend constexpr bool operator==(page_pair, page_pair) = default;
};

// Layers [first, first + count) of a copy; all() is every layer.
struct layer_range {
  std::size_t first = 0;
  std::size_t count = 0;
  static constexpr layer_range all() noexcept { return {0, ~std::size_t{0}}; }
  static constexpr layer_range one(std::size_t layer) noexcept { return {layer, 1}; }
  // Resolves all() against a layer count; count 0 after resolution means an invalid range.
  constexpr layer_range resolve(std::size_t layers) const noexcept {
    if (count == ~std::size_t{0}) return first < layers ? layer_range{first, layers - first} : layer_range{first, 0};
    if (first >= layers || count > layers - first) return {first, 0};
    return *this;
  }
};

// A KV buffer addressed through one base pointer and a layout mapping (page_first, page_head_first,
// or layer_first in one allocation). (layer, kv, token, head, dim) -> data + map(...) * element_bytes.
template <layout::kv_layout_mapping Mapping>
struct kv_buffer {
  using mapping_type = Mapping;
  std::byte* data = nullptr;  // (layer, kv, token, head, dim), physical order as Mapping lays it out
  Mapping map{};
  std::size_t element_bytes = 0;

  // Start of the (head, dim) run of one token: map(l, k, t, h, 0).
  KVTIER_HOST_DEVICE std::byte* row(std::size_t l, std::size_t k, std::size_t t, std::size_t h) const noexcept {
    return data + map(l, k, t, h, 0) * element_bytes;
  }
  // row() of token ti of page `page` (pages of page_tokens tokens), without dividing the token.
  KVTIER_HOST_DEVICE std::byte* page_row(std::size_t l, std::size_t k, std::size_t page, std::size_t page_tokens,
                                         std::size_t ti, std::size_t h) const noexcept {
    if constexpr (requires { map.at_page(l, k, page, ti, h, 0); })
      return data + map.at_page(l, k, page, ti, h, 0) * element_bytes;
    else
      return data + map(l, k, page * page_tokens + ti, h, 0) * element_bytes;
  }
  // Bytes between consecutive tokens of one page (same layer, kv, head).
  KVTIER_HOST_DEVICE std::size_t token_stride_bytes() const noexcept { return map.token_stride_in_page() * element_bytes; }
  std::size_t bytes() const noexcept { return map.required_span_size() * element_bytes; }
};

// The (layer, kv) planes of a layer-first buffer, wherever the engine put them:
//  - one allocation: base + layer * layer_stride + kv * kv_stride;
//  - one tensor per layer (kv, token, head, dim): ptrs[layer] + kv * kv_stride;
//  - one tensor per layer and kv (SGLang's k_buffer / v_buffer): ptrs[layer * kv + k].
// `ptrs` must be readable where the copy runs (host for the CPU path, device for kernels).
struct plane_table {
  std::byte* base = nullptr;         // (layer, kv, token, head, dim) when ptrs is null
  std::byte* const* ptrs = nullptr;  // (layer) -> (kv, token, head, dim), or (layer, kv) -> (token, head, dim)
  std::size_t ptrs_per_layer = 0;  // 0: no table (base is used); 1: per layer; kv planes: per (layer, kv)
  std::size_t layer_stride = 0;    // bytes between layers when ptrs is null
  std::size_t kv_stride = 0;       // bytes between the K and V planes inside one layer (ptrs_per_layer <= 1)

  KVTIER_HOST_DEVICE std::byte* plane(std::size_t l, std::size_t k) const noexcept {
    if (ptrs_per_layer > 1) return ptrs[l * ptrs_per_layer + k];
    std::byte* layer = ptrs_per_layer == 1 ? ptrs[l] : base + l * layer_stride;
    return layer + k * kv_stride;
  }
};

// A layer-first buffer (layer, kv, token, head, dim) split over a plane table.
struct layer_first_buffer {
  using mapping_type = layout::layer_first::mapping;
  plane_table planes{};  // (layer, kv) -> plane (token, head, dim)
  mapping_type map{};
  std::size_t element_bytes = 0;

  KVTIER_HOST_DEVICE std::byte* row(std::size_t l, std::size_t k, std::size_t t, std::size_t h) const noexcept {
    return planes.plane(l, k) + map.in_plane(t, h, 0) * element_bytes;
  }
  KVTIER_HOST_DEVICE std::byte* page_row(std::size_t l, std::size_t k, std::size_t page, std::size_t page_tokens,
                                         std::size_t ti, std::size_t h) const noexcept {
    return planes.plane(l, k) + map.in_plane(page * page_tokens + ti, h, 0) * element_bytes;
  }
  KVTIER_HOST_DEVICE std::size_t token_stride_bytes() const noexcept { return map.token_stride_in_page() * element_bytes; }
};

// One allocation of `tokens` tokens, layer first.
inline layer_first_buffer layer_first_view(std::byte* base, const kv_shape& s, std::size_t tokens) {
  const layout::layer_first::mapping m(layout::kv_extents::of(s, tokens));
  const std::size_t plane = m.plane_size() * s.element_bytes();
  return {plane_table{base, nullptr, 0, plane * s.kv_planes(), plane}, m, s.element_bytes()};
}
// One tensor per layer, each (kv, token, head, dim) (`ptrs.size() == layers`), or one tensor per
// layer and kv plane, each (token, head, dim) (`ptrs.size() == layers * kv_planes`). The pointer
// array must outlive the view. Throws config_error for any other count.
inline layer_first_buffer layer_first_view(std::span<std::byte* const> ptrs, const kv_shape& s, std::size_t tokens) {
  const layout::layer_first::mapping m(layout::kv_extents::of(s, tokens));
  const std::size_t plane = m.plane_size() * s.element_bytes();
  if (ptrs.size() == s.layers()) return {plane_table{nullptr, ptrs.data(), 1, 0, plane}, m, s.element_bytes()};
  if (ptrs.size() == s.layers() * s.kv_planes() && s.kv_planes() > 1)
    return {plane_table{nullptr, ptrs.data(), s.kv_planes(), 0, 0}, m, s.element_bytes()};
  throw config_error("kvtier: a layer-first plane table needs one pointer per layer or per (layer, kv)");
}
// A page-first (or page_head_first) buffer of `pages` pages over one allocation; pages are
// page_stride_bytes apart (0: packed). A pool that pads its slots passes its slot stride.
// Throws config_error for a stride that is shorter than a page or not a whole number of elements.
template <class Layout = layout::page_first>
kv_buffer<typename Layout::mapping> paged_view(std::byte* base, const kv_shape& s, std::size_t pages, page_size<> p,
                                               std::size_t page_stride_bytes = 0) {
  const layout::kv_extents e = layout::kv_extents::of(s, kvtier::detail::checked_mul(pages, p.tokens(), "paged view tokens"));
  if (page_stride_bytes == 0) return {base, typename Layout::mapping(e, p), s.element_bytes()};
  if (page_stride_bytes % s.element_bytes() != 0)
    throw config_error("kvtier: a page stride that is not a whole number of elements");
  return {base, typename Layout::mapping(e, p, page_stride_bytes / s.element_bytes()), s.element_bytes()};
}

namespace detail {
template <class T>
inline constexpr bool is_kv_buffer = false;
template <class M>
inline constexpr bool is_kv_buffer<kv_buffer<M>> = true;
template <class M>
concept has_page_tokens = requires(const M& m) { m.page_tokens(); };
}  // namespace detail

// A side of a copy: a view with row(l, k, t, h), a kv layout mapping and an element size.
// clang-format off
template <class B>
concept kv_view =
  (detail::is_kv_buffer<B> || std::same_as<B, layer_first_buffer>) &&
  layout::kv_layout_mapping<typename B::mapping_type>;
// A view whose mapping is paged: the host-side operand of load and backup.
template <class B>
concept paged_kv_view =
  kv_view<B> &&
  layout::paged_kv_layout_mapping<typename B::mapping_type>;
// clang-format on

namespace detail {
// Whether the P x (head, dim) block of one (page, layer, kv) is contiguous, rows in token order.
template <kv_view B>
constexpr bool page_block_contiguous(const B& b, std::size_t page_tokens) noexcept {
  using M = typename B::mapping_type;
  if constexpr (!M::heads_contiguous) {
    return false;
  } else {
    if (b.map.token_stride_in_page() != b.map.extents().row_elements()) return false;
    if constexpr (has_page_tokens<M>) return b.map.page_tokens() == page_tokens;
    return true;
  }
}
}  // namespace detail

}  // namespace kvtier::transfer
