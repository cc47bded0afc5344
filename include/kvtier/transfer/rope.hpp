#pragma once
// Positional-encoding decoupling (CachedAttention): K moves between positions by a rotation.
//
// K in a KV cache carries RoPE at the position it was computed at. kvtier records that position with
// the page (a page of a cached prefix sits at its depth × page_tokens; a reused chunk at the offset
// it was computed at) and, when a page is loaded to serve at another position, rotates K by the
// difference while it moves the page: R(p_dst − p_src) · R(p_src) · k = R(p_dst) · k. A page loaded at
// the position it was stored at (delta 0) is copied bit for bit; pages stored "pre-rotation" are the
// case p_src = 0. V carries no position and is copied as is.
//
// rope_spec names the rotation (convention, theta, rotated dims); its fingerprint joins the KV
// shape's, so a page stored under one rotation is never served under another.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <vector>

#include "kvtier/codec/kv_page.hpp"
#include "kvtier/core/config.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"
#include "kvtier/transfer/views.hpp"

namespace kvtier::transfer {

enum class rope_convention : std::uint8_t {
  adjacent_pairs,  // (0,1), (2,3), ... of each head: llama2.c, Meta's original Llama
  rotate_half,     // (i, i + d/2): Hugging Face Llama, Qwen
};

struct rope_spec {
  rope_convention convention = rope_convention::rotate_half;
  float theta = 10000.f;
  std::size_t head_dim = 0;     // elements per head
  std::size_t rotary_dims = 0;  // leading dims rotated (0: all of head_dim)

  constexpr std::size_t rotated() const noexcept { return rotary_dims ? rotary_dims : head_dim; }
  void check() const {
    if (head_dim == 0 || rotated() % 2 != 0 || rotated() > head_dim || !(theta > 0))
      throw config_error("kvtier: rope_spec needs head_dim > 0, an even rotary_dims <= head_dim and theta > 0");
  }
  // Frequencies per pair, as the engines compute them: 1 / theta^(2j / rotated).
  std::vector<float> inv_freq() const {
    std::vector<float> f(rotated() / 2);
    for (std::size_t j = 0; j < f.size(); ++j) f[j] = 1.0f / std::pow(theta, float(2 * j) / float(rotated()));
    return f;
  }
  // Joins the KV shape's fingerprint where pages carry RoPE'd K.
  std::uint64_t fingerprint() const noexcept {
    std::uint32_t t;
    std::memcpy(&t, &theta, 4);
    std::uint64_t h = 0x9e3779b97f4a7c15ull ^ (std::uint64_t(convention) << 56) ^ (std::uint64_t(t) << 16) ^ rotated();
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 29);
  }
};

// How a page keeps K: a property of the cache's pages (cache config's k_layout), never mixed.
enum class k_storage : std::uint8_t {
  rotated,       // RoPE applied at the position the page was computed at: a move rotates every row by one delta
  pre_rotation,  // K before RoPE: row t of a page is rotated to (the page's target first position + t) on load
};

// RoPE on load for one batch of page pairs: K of pairs[i] rotated by positions[i] (rotated storage:
// the delta, target − stored; pre_rotation: the target position of the page's first token, + t per
// row). A K row whose angle position is 0 is copied bit for bit; V is always copied.
struct rope_on_load {
  rope_spec rope;
  k_storage storage = k_storage::rotated;
  std::span<const long> positions;
};

// How a cache's pages keep K (the cache config's k_layout): the page property "K stored
// pre-rotation" and the rotation that applies. Its fingerprint enters every page key, so a page
// stored one way (or under one rotation) is never served another way. No rope: pages never move.
struct k_layout {
  k_storage storage = k_storage::rotated;
  std::optional<rope_spec> rope;

  std::uint64_t fingerprint() const noexcept {
    const std::uint64_t s = storage == k_storage::pre_rotation ? 0x6a09e667f3bcc909ull : 0;
    return rope ? rope->fingerprint() ^ s : s;
  }
  // Throws config_error: pre-rotation storage without a rotation, a rotation that does not fit.
  void check(const kv_shape& shape) const {
    if (storage == k_storage::pre_rotation && !rope) throw config_error("kvtier: pre-rotation K needs a rope_spec");
    if (!rope) return;
    rope->check();
    if (rope->head_dim != shape.head_dim() || shape.kv_planes() < 2)
      throw config_error("kvtier: the rope_spec's head_dim is not the KV shape's (or the shape keeps no K)");
  }
  // check(), and K kept rotated (what a cache whose engines write RoPE'd K can hold).
  void check_rotated(const kv_shape& shape) const {
    check(shape);
    if (storage != k_storage::rotated) throw config_error("kvtier: this cache keeps K rotated, not pre-rotation");
  }
  friend bool operator==(const k_layout& a, const k_layout& b) noexcept { return a.fingerprint() == b.fingerprint(); }
};

// Where a lease's pages are served (load_at): the position of page i's first token, or `skip`
// (page i is not needed: not loaded). A cache that keeps K rotated moves page i by
// first[i] − i × page_tokens, the position it was computed at.
struct page_positions {
  static constexpr long skip = -1;
  std::span<const long> first;
};

namespace detail {
// The two elements of pair j of a head.
KVTIER_HOST_DEVICE constexpr std::size_t rope_first(rope_convention c, std::size_t j, std::size_t rotated) noexcept {
  return c == rope_convention::adjacent_pairs ? 2 * j : j;
}
KVTIER_HOST_DEVICE constexpr std::size_t rope_second(rope_convention c, std::size_t j, std::size_t rotated) noexcept {
  return c == rope_convention::adjacent_pairs ? 2 * j + 1 : j + rotated / 2;
}
}  // namespace detail

// Rotates one K row (heads × head_dim elements of type T) in place by `delta` positions.
template <dtype T>
void rotate_row(std::byte* row, std::size_t heads, const rope_spec& r, std::span<const float> inv_freq, long delta) noexcept {
  if (delta == 0) return;
  const std::size_t rot = r.rotated();
  for (std::size_t j = 0; j < rot / 2; ++j) {
    const float a = float(delta) * inv_freq[j];
    const float c = std::cos(a), s = std::sin(a);
    const std::size_t i0 = detail::rope_first(r.convention, j, rot), i1 = detail::rope_second(r.convention, j, rot);
    for (std::size_t h = 0; h < heads; ++h) {
      const std::size_t e0 = h * r.head_dim + i0, e1 = h * r.head_dim + i1;
      const float v0 = kvtier::detail::load_typed<T>(row, e0), v1 = kvtier::detail::load_typed<T>(row, e1);
      kvtier::detail::store_typed<T>(row, e0, v0 * c - v1 * s);
      kvtier::detail::store_typed<T>(row, e1, v0 * s + v1 * c);
    }
  }
}

namespace cpu {

// load with RoPE on load: page pairs[i].src of `src` to pairs[i].dst of `dst` (as transfer::cpu::load),
// layers `layers`, K rotated on the way as `rl` says (V copied). A K row at position 0 is copied bit for bit.
// Errors: invalid_argument for mismatched spans, a spec that does not fit the shape, or a bad page.
template <paged_kv_view Src, kv_view Dst>
result<void> load_rotated(const Src& src, const Dst& dst, std::span<const page_pair> pairs, const rope_on_load& rl,
                          dtype t, layer_range layers = layer_range::all()) noexcept {
  const auto& e = src.map.extents();
  const std::size_t P = src.map.page_tokens();
  const rope_spec& r = rl.rope;
  const std::span<const long> deltas = rl.positions;
  const layer_range lr = layers.resolve(e.layers());
  const std::size_t l_end = lr.first + lr.count;
  if (lr.count == 0 || deltas.size() != pairs.size() || r.head_dim != e.dim() || r.rotated() % 2 != 0 || r.rotated() > r.head_dim ||
      !(r.theta > 0) || size_of(t) != src.element_bytes || size_of(t) != dst.element_bytes || e.kv() < 2)
    return make_error(errc::invalid_argument);
  if (src.map.required_span_size() < P) return make_error(errc::invalid_argument);
  std::vector<float> inv;
  try {
    inv = r.inv_freq();
  } catch (...) {
    return make_error(errc::capacity_exhausted);
  }
  const std::size_t row_bytes = e.heads() * e.dim() * src.element_bytes;
  const std::size_t src_pages = src.map.extents().tokens() / P, dst_tokens = dst.map.extents().tokens();
  for (std::size_t i = 0; i < pairs.size(); ++i) {
    if (pairs[i].src >= src_pages || (std::size_t(pairs[i].dst) + 1) * P > dst_tokens) return make_error(errc::invalid_argument);
    for (std::size_t l = lr.first; l < l_end; ++l)
      for (std::size_t k = 0; k < e.kv(); ++k)
        for (std::size_t ti = 0; ti < P; ++ti) {
          const std::byte* s = src.page_row(l, k, pairs[i].src, P, ti, 0);
          std::byte* d = dst.page_row(l, k, pairs[i].dst, P, ti, 0);
          std::memcpy(d, s, row_bytes);  // (head, dim) of one token: contiguous on both sides
          const long pos = deltas[i] + (rl.storage == k_storage::pre_rotation ? long(ti) : 0);
          if (k == 0)
            kvtier::detail::with_dtype(t, [&](auto tc) { rotate_row<decltype(tc)::value>(d, e.heads(), r, inv, pos); });
        }
  }
  return {};
}
// The same with every row of page i moved by deltas[i] (K stored rotated).
template <paged_kv_view Src, kv_view Dst>
result<void> load_rotated(const Src& src, const Dst& dst, std::span<const page_pair> pairs, std::span<const long> deltas,
                          const rope_spec& r, dtype t) noexcept {
  return load_rotated(src, dst, pairs, rope_on_load{r, k_storage::rotated, deltas}, t);
}

}  // namespace cpu
}  // namespace kvtier::transfer
