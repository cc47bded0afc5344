#pragma once
// Test-owned KV memory with naive addressing written independently of the library: an engine's
// layer-first buffer in its three forms (one allocation, one per layer, one per (layer, kv)) and
// host paged buffers. Used by the CPU tests (against the naive formula) and the GPU tests.
#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <span>
#include <vector>

#include "kvtier/transfer.hpp"

namespace kvtier::testing {

enum class planes_form { single, per_layer, per_plane };

inline std::vector<transfer::page_pair> random_pairs(std::size_t n, std::size_t src_pages, std::size_t dst_pages,
                                                     std::mt19937_64& rng) {
  std::vector<std::uint32_t> dst(dst_pages);
  for (std::size_t i = 0; i < dst_pages; ++i) dst[i] = static_cast<std::uint32_t>(i);
  std::shuffle(dst.begin(), dst.end(), rng);  // distinct destination pages
  std::uniform_int_distribution<std::uint32_t> s(0, static_cast<std::uint32_t>(src_pages - 1));
  std::vector<transfer::page_pair> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = {s(rng), dst[i]};
  return out;
}

inline void fill_random(std::span<std::byte> b, std::mt19937_64& rng) {
  std::size_t i = 0;
  for (; i + 8 <= b.size(); i += 8) {
    const std::uint64_t v = rng();
    std::memcpy(b.data() + i, &v, 8);
  }
  for (; i < b.size(); ++i) b[i] = static_cast<std::byte>(rng());
}
inline constexpr std::byte poison{0xA5};

// Layer-first memory (layer, kv, token, head, dim) owned by the test.
struct engine_buffer {
  kv_shape s;
  std::size_t tokens;
  planes_form form;
  std::vector<std::vector<std::byte>> allocs;
  std::vector<std::byte*> ptrs;

  engine_buffer(const kv_shape& shape, std::size_t t, planes_form f) : s(shape), tokens(t), form(f) {
    const std::size_t plane = tokens * s.row_bytes();
    const std::size_t n = f == planes_form::single ? 1 : f == planes_form::per_layer ? s.layers() : s.layers() * s.kv_planes();
    const std::size_t each = f == planes_form::single ? plane * s.kv_planes() * s.layers()
                             : f == planes_form::per_layer ? plane * s.kv_planes() : plane;
    allocs.assign(n, std::vector<std::byte>(each, poison));
    for (auto& a : allocs) ptrs.push_back(a.data());
  }
  // The library's view over this memory (ptrs stays valid while *this lives).
  transfer::layer_first_buffer view() const {
    if (form == planes_form::single) return transfer::layer_first_view(ptrs[0], s, tokens);
    return transfer::layer_first_view(std::span<std::byte* const>(ptrs), s, tokens);
  }
  // Naive address of element (l, k, t, h, 0).
  std::byte* at(std::size_t l, std::size_t k, std::size_t t, std::size_t h) {
    const std::size_t row = s.row_bytes(), in_plane = t * row + h * s.head_dim() * s.element_bytes();
    switch (form) {
      case planes_form::single: return allocs[0].data() + (l * s.kv_planes() + k) * tokens * row + in_plane;
      case planes_form::per_layer: return allocs[l].data() + k * tokens * row + in_plane;
      case planes_form::per_plane: return allocs[l * s.kv_planes() + k].data() + in_plane;
    }
    return nullptr;
  }
};

// Paged host memory in Layout (page_first or page_head_first), naive addressing.
template <class Layout>
struct paged_buffer {
  kv_shape s;
  std::size_t pages, P;
  std::vector<std::byte> mem;

  paged_buffer(const kv_shape& shape, std::size_t n, std::size_t p)
      : s(shape), pages(n), P(p), mem(n * shape.bytes_per_page(p), poison) {}
  auto view() { return transfer::paged_view<Layout>(mem.data(), s, pages, page_size<>(P)); }
  std::byte* at(std::size_t l, std::size_t k, std::size_t t, std::size_t h) {
    const std::size_t page = t / P, ti = t % P, L = s.layers(), K = s.kv_planes(), H = s.heads();
    std::size_t e;
    if constexpr (std::same_as<Layout, layout::page_first>)
      e = ((((page * L + l) * K + k) * P + ti) * H + h) * s.head_dim();
    else
      e = ((((page * H + h) * L + l) * K + k) * P + ti) * s.head_dim();
    return mem.data() + e * s.element_bytes();
  }
};

// Applies the copy element by element through the naive addresses: the expected result.
template <class Src, class Dst>
void naive_copy(Src& src, Dst& dst, std::span<const transfer::page_pair> pairs, std::size_t first_layer,
                std::size_t layers, std::size_t P) {
  const kv_shape& s = src.s;
  const std::size_t head_bytes = s.head_dim() * s.element_bytes();
  for (const auto& p : pairs)
    for (std::size_t l = first_layer; l < first_layer + layers; ++l)
      for (std::size_t k = 0; k < s.kv_planes(); ++k)
        for (std::size_t t = 0; t < P; ++t)
          for (std::size_t h = 0; h < s.heads(); ++h)
            for (std::size_t b = 0; b < head_bytes; ++b)
              dst.at(l, k, p.dst * P + t, h)[b] = src.at(l, k, p.src * P + t, h)[b];
}

}  // namespace kvtier::testing
