#pragma once
// Synthetic pages that look like KV to a codec: page_first (layer, kv, token, head, dim), channels of
// very different scales (one in 37 an outlier ×20), each channel an AR(1) process along the tokens
// (correlation rho). A stand-in for codec tests and benches: its ratios say nothing of a real model.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "kvtier/codec/kv_page.hpp"

namespace kvtier::testing {

inline std::vector<std::byte> kv_like_page(const kv_page_geometry& g, std::uint64_t seed, float rho = 0.9f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n01(0.f, 1.f);
  const std::size_t C = g.row_elements(), T = g.page_tokens, B = g.shape.layers() * g.shape.kv_planes();
  std::vector<std::byte> page(g.page_bytes());
  const float innov = std::sqrt(1.f - rho * rho);
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t c = 0; c < C; ++c) {
      const float scale = (c % 37 == 5 ? 20.f : 1.f) * (0.5f + float((c * 7 + b) % 11) / 10.f);
      float x = n01(rng);
      for (std::size_t t = 0; t < T; ++t) {
        x = rho * x + innov * n01(rng);
        kvtier::detail::store_element(page.data(), g.shape.element_type(), (b * T + t) * C + c, scale * x);
      }
    }
  return page;
}

}  // namespace kvtier::testing
