#pragma once
// What every copy strategy checks and computes before moving a byte: both views describe the same
// KV shape, the pages and layers exist, and which contiguous runs the copy decomposes into.
#include <concepts>
#include <cstddef>
#include <span>

#include "kvtier/core/error.hpp"
#include "kvtier/transfer/views.hpp"

namespace kvtier::transfer {

// How a (page, layer, kv) block decomposes into runs contiguous on both sides.
enum class run_shape : unsigned char {
  block,  // the whole P x (head, dim) block is one run (layer_first <-> page_first)
  head,   // one run per (token, head): head_dim elements (page_head_first on either side)
  page,   // the layouts agree and every layer moves: one run per page (the fast path)
};

struct copy_geometry {
  std::size_t page_tokens = 0;    // P: tokens per page
  std::size_t first_layer = 0;    // layers [first_layer, first_layer + layers)
  std::size_t layers = 0;
  std::size_t kv = 0;             // 2 for MHA (K, V), 1 for MLA
  std::size_t heads = 0;
  std::size_t head_bytes = 0;     // bytes of one head of one token
  std::size_t pairs = 0;
  run_shape shape = run_shape::block;

  std::size_t row_bytes() const noexcept { return heads * head_bytes; }
  std::size_t block_bytes() const noexcept { return page_tokens * row_bytes(); }
  std::size_t page_bytes() const noexcept { return layers * kv * block_bytes(); }
  std::size_t run_bytes() const noexcept {
    return shape == run_shape::block ? block_bytes() : shape == run_shape::head ? head_bytes : page_bytes();
  }
  // Bytes the copy moves (each read once, each written once).
  std::size_t bytes() const noexcept { return pairs * layers * kv * block_bytes(); }
};

namespace detail {
inline bool same_kv(const layout::kv_extents& a, const layout::kv_extents& b) noexcept {
  return a.layers() == b.layers() && a.kv() == b.kv() && a.heads() == b.heads() && a.dim() == b.dim();
}
}  // namespace detail

// Validates a copy of `pairs` pages of `page_tokens` tokens from src to dst over `layers`.
// Errors (values, never thrown): invalid_argument for different shapes or element sizes, a page
// outside either view, an empty or out-of-range layer range, or a page size that one side's paged
// mapping contradicts.
template <kv_view Src, kv_view Dst>
result<copy_geometry> plan_copy(const Src& src, const Dst& dst, std::span<const page_pair> pairs, layer_range layers,
                                std::size_t page_tokens) noexcept {
  const auto& se = src.map.extents();
  const auto& de = dst.map.extents();
  if (!detail::same_kv(se, de) || src.element_bytes != dst.element_bytes || src.element_bytes == 0 || page_tokens == 0)
    return make_error(errc::invalid_argument);
  if constexpr (detail::has_page_tokens<typename Src::mapping_type>)
    if (src.map.page_tokens() != page_tokens) return make_error(errc::invalid_argument);
  if constexpr (detail::has_page_tokens<typename Dst::mapping_type>)
    if (dst.map.page_tokens() != page_tokens) return make_error(errc::invalid_argument);
  const layer_range r = layers.resolve(se.layers());
  if (r.count == 0) return make_error(errc::invalid_argument);
  const std::size_t src_pages = se.tokens() / page_tokens, dst_pages = de.tokens() / page_tokens;
  for (const page_pair& p : pairs)
    if (p.src >= src_pages || p.dst >= dst_pages) return make_error(errc::invalid_argument);
  copy_geometry g;
  g.page_tokens = page_tokens;
  g.first_layer = r.first;
  g.layers = r.count;
  g.kv = se.kv();
  g.heads = se.heads();
  g.head_bytes = se.dim() * src.element_bytes;
  g.pairs = pairs.size();
  g.shape = detail::page_block_contiguous(src, page_tokens) && detail::page_block_contiguous(dst, page_tokens)
                ? run_shape::block
                : run_shape::head;
  // Fast path: the same paged layout on both sides and every layer: each page is one run.
  if constexpr (std::same_as<Src, Dst> && detail::has_page_tokens<typename Src::mapping_type>)
    if (r.first == 0 && r.count == se.layers()) g.shape = run_shape::page;
  return g;
}

// Calls fn(dst_ptr, src_ptr, bytes) for every contiguous run of the copy, layer-major (all runs of
// layer l before any of layer l + 1), so a per-layer event after layer l's runs is meaningful.
template <kv_view Src, kv_view Dst, class Fn>
void for_each_run(const Src& src, const Dst& dst, std::span<const page_pair> pairs, const copy_geometry& g, Fn&& fn) {
  const std::size_t P = g.page_tokens;
  if (g.shape == run_shape::page) {
    for (const page_pair& p : pairs)
      fn(dst.page_row(0, 0, p.dst, P, 0, 0), static_cast<const std::byte*>(src.page_row(0, 0, p.src, P, 0, 0)),
         g.page_bytes());
    return;
  }
  for (std::size_t l = g.first_layer; l < g.first_layer + g.layers; ++l)
    for (const page_pair& p : pairs)
      for (std::size_t k = 0; k < g.kv; ++k) {
        if (g.shape == run_shape::block) {
          fn(dst.page_row(l, k, p.dst, P, 0, 0), static_cast<const std::byte*>(src.page_row(l, k, p.src, P, 0, 0)),
             g.block_bytes());
        } else {
          for (std::size_t h = 0; h < g.heads; ++h)
            for (std::size_t t = 0; t < P; ++t)
              fn(dst.page_row(l, k, p.dst, P, t, h), static_cast<const std::byte*>(src.page_row(l, k, p.src, P, t, h)),
                 g.head_bytes);
        }
      }
}

}  // namespace kvtier::transfer
