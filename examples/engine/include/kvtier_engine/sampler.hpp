#pragma once
// Sampling from logits: greedy (temperature 0: the first largest logit, as run.c's argmax), or
// temperature then top-p (nucleus) with a seeded xorshift generator, following run.c's sampler so a
// seed gives the same tokens in both programs.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "kvtier/core/strong_id.hpp"
#include "kvtier_engine/cpu/kernels.hpp"

namespace kvtier_engine {

struct sampling {
  float temperature = 0.0f;  // 0: greedy
  float top_p = 0.9f;        // 1 or more: sample the whole distribution
  std::uint64_t seed = 0;
};

class sampler {
 public:
  explicit sampler(sampling s) : s_(s), state_(s.seed ? s.seed : 0x2545F4914F6CDD1Dull) {}

  kvtier::token_id next(std::span<float> logits) {
    if (s_.temperature == 0.0f) return kvtier::token_id{std::int32_t(argmax(logits))};
    for (float& l : logits) l /= s_.temperature;
    cpu::detail::softmax(logits.data(), logits.size());
    const float coin = random_f32();
    if (s_.top_p <= 0.0f || s_.top_p >= 1.0f) return kvtier::token_id{std::int32_t(sample_mult(logits, coin))};
    return kvtier::token_id{std::int32_t(sample_topp(logits, coin))};
  }

  bool greedy() const noexcept { return s_.temperature == 0.0f; }

  static std::size_t argmax(std::span<const float> p) noexcept {
    std::size_t best = 0;
    for (std::size_t i = 1; i < p.size(); ++i)
      if (p[i] > p[best]) best = i;
    return best;
  }

 private:
  std::uint32_t random_u32() noexcept {  // xorshift64*
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    return std::uint32_t((state_ * 0x2545F4914F6CDD1Dull) >> 32);
  }
  float random_f32() noexcept { return float(random_u32() >> 8) / 16777216.0f; }

  static std::size_t sample_mult(std::span<const float> p, float coin) noexcept {
    float cdf = 0.0f;
    for (std::size_t i = 0; i < p.size(); ++i) {
      cdf += p[i];
      if (coin < cdf) return i;
    }
    return p.size() - 1;
  }
  std::size_t sample_topp(std::span<const float> p, float coin) {
    // Candidates above (1 - top_p) / (n - 1) cannot all be outside the nucleus; sort only those.
    const float cutoff = (1.0f - s_.top_p) / float(p.size() - 1);
    cand_.clear();
    for (std::size_t i = 0; i < p.size(); ++i)
      if (p[i] >= cutoff) cand_.push_back({p[i], i});
    std::sort(cand_.begin(), cand_.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    float cum = 0.0f;
    std::size_t last = cand_.size() - 1;
    for (std::size_t i = 0; i < cand_.size(); ++i) {
      cum += cand_[i].first;
      if (cum > s_.top_p) {
        last = i;
        break;
      }
    }
    const float r = coin * cum;
    float cdf = 0.0f;
    for (std::size_t i = 0; i <= last; ++i) {
      cdf += cand_[i].first;
      if (r < cdf) return cand_[i].second;
    }
    return cand_[last].second;
  }

  sampling s_;
  std::uint64_t state_;
  std::vector<std::pair<float, std::size_t>> cand_;
};

}  // namespace kvtier_engine
