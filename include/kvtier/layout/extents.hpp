#pragma once
// The extents of a KV buffer in kvtier's one logical index order (layer, kv, token, head, dim).
// Every layout maps this same logical index; layouts differ only in the physical order.
#include <cstddef>

#include "kvtier/core/config.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"

namespace kvtier::layout {

// One logical index: (layer, kv, token, head, dim).
struct kv_index {
  std::size_t layer = 0;
  std::size_t kv = 0;
  std::size_t token = 0;
  std::size_t head = 0;
  std::size_t dim = 0;
  friend constexpr bool operator==(const kv_index&, const kv_index&) = default;
};

// Rank-5 dynamic extents (layer, kv, token, head, dim), mdspan-style: rank() and extent(r).
class kv_extents {
 public:
  using index_type = std::size_t;
  using rank_type = std::size_t;
  static constexpr rank_type rank() noexcept { return 5; }
  static constexpr rank_type rank_dynamic() noexcept { return 5; }
  static constexpr rank_type layer_rank = 0, kv_rank = 1, token_rank = 2, head_rank = 3, dim_rank = 4;

  constexpr kv_extents() noexcept = default;
  // Throws config_error on a zero extent or an element count that overflows.
  constexpr kv_extents(std::size_t layers, std::size_t kv, std::size_t tokens, std::size_t heads, std::size_t dim)
      : e_{layers, kv, tokens, heads, dim} {
    for (auto x : e_)
      if (x == 0) throw config_error("kvtier: kv_extents with a zero extent");
    detail::checked_mul(detail::checked_mul(detail::checked_mul(layers, kv, "kv extents"),
                                            detail::checked_mul(tokens, heads, "kv extents"), "kv extents"),
                        dim, "kv extents");
  }
  // The extents of `tokens` tokens of a model's KV cache: (layers, kv_planes, tokens, heads, head_dim).
  static constexpr kv_extents of(const kv_shape& s, std::size_t tokens) {
    return kv_extents(s.layers(), s.kv_planes(), tokens, s.heads(), s.head_dim());
  }

  KVTIER_HOST_DEVICE constexpr std::size_t extent(rank_type r) const noexcept { return e_[r]; }
  KVTIER_HOST_DEVICE constexpr std::size_t layers() const noexcept { return e_[0]; }
  KVTIER_HOST_DEVICE constexpr std::size_t kv() const noexcept { return e_[1]; }
  KVTIER_HOST_DEVICE constexpr std::size_t tokens() const noexcept { return e_[2]; }
  KVTIER_HOST_DEVICE constexpr std::size_t heads() const noexcept { return e_[3]; }
  KVTIER_HOST_DEVICE constexpr std::size_t dim() const noexcept { return e_[4]; }
  // Elements of one (layer, kv, token) row: all heads of one token.
  KVTIER_HOST_DEVICE constexpr std::size_t row_elements() const noexcept { return e_[3] * e_[4]; }
  KVTIER_HOST_DEVICE constexpr std::size_t size() const noexcept { return e_[0] * e_[1] * e_[2] * e_[3] * e_[4]; }
  KVTIER_HOST_DEVICE constexpr bool contains(const kv_index& i) const noexcept {
    return i.layer < e_[0] && i.kv < e_[1] && i.token < e_[2] && i.head < e_[3] && i.dim < e_[4];
  }

  friend constexpr bool operator==(const kv_extents&, const kv_extents&) = default;

 private:
  std::size_t e_[5] = {1, 1, 1, 1, 1};
};

}  // namespace kvtier::layout
