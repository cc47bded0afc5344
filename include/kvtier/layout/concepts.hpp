#pragma once
// The layout concepts: a kv layout mapping is an mdspan-style layout mapping over the logical
// index (layer, kv, token, head, dim) that opts in explicitly (`using kvtier_layout = layout_tag;`).
// A paged mapping also keeps every page (page_tokens() consecutive tokens, all layers) contiguous.
#include <concepts>
#include <cstddef>

#include "kvtier/layout/extents.hpp"

namespace kvtier::layout {

// The opt-in tag: a mapping models kv_layout_mapping only if it says `using kvtier_layout = layout_tag;`.
struct layout_tag {};

// clang-format off
template <class M>
concept opts_into_layout =
  requires { typename M::kvtier_layout; } &&
  std::same_as<typename M::kvtier_layout, layout_tag>;

template <class M>
concept has_layout_properties =
  requires(const M& m) {
    { M::is_always_unique() } -> std::same_as<bool>;
    { M::is_always_exhaustive() } -> std::same_as<bool>;
    { M::is_always_strided() } -> std::same_as<bool>;
    { m.is_unique() } -> std::same_as<bool>;
    { m.is_exhaustive() } -> std::same_as<bool>;
    { m.is_strided() } -> std::same_as<bool>;
  };

template <class M>
concept maps_kv_index =
  requires(const M& m, std::size_t i, std::size_t off) {
    { m.extents() } -> std::same_as<const kv_extents&>;
    { m(i, i, i, i, i) } -> std::same_as<std::size_t>;
    { m.required_span_size() } -> std::same_as<std::size_t>;
    { m.index_of(off) } -> std::same_as<kv_index>;
    { m.token_stride_in_page() } -> std::same_as<std::size_t>;
    { M::heads_contiguous } -> std::convertible_to<bool>;
  };

// A layout mapping kvtier's copies and tiers accept.
template <class M>
concept kv_layout_mapping =
  opts_into_layout<M> &&
  std::copyable<M> &&
  std::equality_comparable<M> &&
  has_layout_properties<M> &&
  maps_kv_index<M>;

// A kv layout whose pages are contiguous blocks: what the host, disk and remote tiers hold.
template <class M>
concept paged_kv_layout_mapping =
  kv_layout_mapping<M> &&
  requires(const M& m) {
    { m.page_tokens() } -> std::same_as<std::size_t>;
    { m.pages() } -> std::same_as<std::size_t>;
    { m.page_span() } -> std::same_as<std::size_t>;
  };

// A layout policy (mdspan's LayoutPolicy): its nested mapping is a kv layout mapping whose
// layout_type names the policy back (so a mapping, whose injected class name is `mapping`, is not one).
template <class L>
concept kv_layout =
  requires { typename L::mapping; typename L::mapping::layout_type; } &&
  std::same_as<typename L::mapping::layout_type, L> &&
  kv_layout_mapping<typename L::mapping>;
// clang-format on

}  // namespace kvtier::layout
