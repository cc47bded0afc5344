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

// A KV-like sequence cut into pages: consecutive pages continue each channel's AR(1) process, as
// the pages of one long prompt do.
class kv_like_sequence {
 public:
  kv_like_sequence(const kv_page_geometry& g, std::uint64_t seed, float rho = 0.9f)
      : g_(g), rng_(seed), rho_(rho), innov_(std::sqrt(1.f - rho * rho)),
        state_(g.shape.layers() * g.shape.kv_planes() * g.row_elements()) {
    for (float& x : state_) x = n01_(rng_);
  }

  std::vector<std::byte> next_page() {
    const std::size_t C = g_.row_elements(), T = g_.page_tokens, B = g_.shape.layers() * g_.shape.kv_planes();
    std::vector<std::byte> page(g_.page_bytes());
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t t = 0; t < T; ++t)
        for (std::size_t c = 0; c < C; ++c) {
          const float scale = (c % 37 == 5 ? 20.f : 1.f) * (0.5f + float((c * 7 + b) % 11) / 10.f);
          float& x = state_[b * C + c];
          x = rho_ * x + innov_ * n01_(rng_);
          kvtier::detail::store_element(page.data(), g_.shape.element_type(), (b * T + t) * C + c, scale * x);
        }
    return page;
  }

 private:
  kv_page_geometry g_;
  std::mt19937_64 rng_;
  std::normal_distribution<float> n01_{0.f, 1.f};
  float rho_, innov_;
  std::vector<float> state_;  // (layer·kv, channel): each channel's AR(1) value
};

// One page of its own sequence.
inline std::vector<std::byte> kv_like_page(const kv_page_geometry& g, std::uint64_t seed, float rho = 0.9f) {
  return kv_like_sequence(g, seed, rho).next_page();
}

}  // namespace kvtier::testing
