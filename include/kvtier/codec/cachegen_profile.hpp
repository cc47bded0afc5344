#pragma once
// The CacheGen codec's model profile: what a model's KV looks like to the codec — per (layer, kv)
// block a relative quantization step (layer-dependent), channel classes (channels bucketed by how
// much they vary) and rANS symbol distributions per class, fitted on sample pages
// (cachegen_profile::fit) — and the symbol mapping the encoder and fitting share.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include <xxhash.h>

#include "kvtier/codec/concepts.hpp"
#include "kvtier/codec/detail/rans.hpp"
#include "kvtier/codec/kv_page.hpp"
#include "kvtier/core/error.hpp"

namespace kvtier {

struct cachegen_options {
  double target_error = 0.01;  // relative L2 error of a layer's KV (uniform-quantization estimate)
  double layer_slope = 0.0;    // step of the last layer = (1 + slope) × step of the first
  double anchor_fraction = 0.25;  // anchors are quantized this much finer than deltas
  std::size_t group_tokens = 16;  // tokens per anchor group (within a page)
  std::size_t streams_per_block = 8;  // independent rANS streams per (layer, kv) block (channel segments)
  bool lossless = false;
};

// What a model's KV looks like to the codec: steps, channel classes and symbol distributions.
class cachegen_profile {
 public:
  static constexpr std::size_t classes = 4;
  // Tables per (layer, kv): lossy anchor and delta per class, then lossless hi/lo for anchors and deltas.
  static constexpr std::size_t tables_per_block = 2 * classes + 4;

  // Fits a profile on sample pages (page_first, `g.page_tokens` tokens each).
  static std::shared_ptr<const cachegen_profile> fit(kv_page_geometry g, std::span<const std::span<const std::byte>> samples,
                                                     cachegen_options o = {}) {
    g.check();
    if (o.group_tokens == 0 || o.target_error <= 0 || o.anchor_fraction <= 0 || o.streams_per_block == 0 ||
        o.streams_per_block > g.row_elements())
      throw config_error("kvtier: cachegen options need group_tokens > 0, target_error > 0, anchor_fraction > 0 and "
                         "1 <= streams_per_block <= channels");
    if (o.lossless && g.shape.element_bytes() != 2) throw config_error("kvtier: lossless cachegen codes 16-bit KV only");
    for (auto s : samples)
      if (s.size() != g.page_bytes()) throw config_error("kvtier: cachegen sample page of the wrong size");
    auto p = std::shared_ptr<cachegen_profile>(new cachegen_profile(g.shape, o));
    p->fit_steps_and_classes(g, samples);
    p->fit_tables(g, samples);
    p->fingerprint_ = p->compute_fingerprint();
    return p;
  }

  const kv_shape& shape() const noexcept { return shape_; }
  const cachegen_options& options() const noexcept { return opt_; }
  std::uint64_t fingerprint() const noexcept { return fingerprint_; }
  // The step of a block relative to the page block's RMS: target error × sqrt(12) × layer factor.
  float relative_step(std::size_t block) const noexcept { return step_[block]; }
  const std::uint8_t& channel_class(std::size_t block, std::size_t c) const noexcept { return class_[block * channels_ + c]; }
  const detail::rans_table* tables(std::size_t block) const noexcept { return &tables_[block * tables_per_block]; }
  std::size_t channels() const noexcept { return channels_; }
  std::size_t blocks() const noexcept { return shape_.layers() * shape_.kv_planes(); }

 private:
  cachegen_profile(kv_shape s, cachegen_options o)
      : shape_(s), opt_(o), channels_(s.heads() * s.head_dim()) {}

  // Visits every element of every sample: f(block, token, channel, value).
  template <class F>
  void for_each_sample(const kv_page_geometry& g, std::span<const std::span<const std::byte>> samples, F&& f) const {
    const dtype t = shape_.element_type();
    for (auto page : samples)
      for (std::size_t b = 0; b < blocks(); ++b)
        for (std::size_t tok = 0; tok < g.page_tokens; ++tok)
          for (std::size_t c = 0; c < channels_; ++c)
            f(b, tok, c, detail::load_element(page.data(), t, (b * g.page_tokens + tok) * channels_ + c));
  }

  void fit_steps_and_classes(const kv_page_geometry& g, std::span<const std::span<const std::byte>> samples) {
    const std::size_t nb = blocks();
    std::vector<double> dsq(nb * channels_, 0.0);
    std::vector<float> anchor(channels_);
    const std::size_t G = opt_.group_tokens;
    for_each_sample(g, samples, [&](std::size_t b, std::size_t tok, std::size_t c, float v) {
      if (tok % G == 0) anchor[c] = v;
      else dsq[b * channels_ + c] += double(v - anchor[c]) * (v - anchor[c]);
    });
    step_.resize(nb);
    const std::size_t L = shape_.layers();
    for (std::size_t b = 0; b < nb; ++b) {
      const std::size_t layer = b / shape_.kv_planes();
      const double slope = L > 1 ? opt_.layer_slope * double(layer) / double(L - 1) : 0.0;
      // Uniform quantization with step s has RMS error s / sqrt(12); the page's own RMS scales it.
      step_[b] = float(opt_.target_error * std::sqrt(12.0) * (1.0 + slope));
    }
    class_.assign(nb * channels_, 0);
    for (std::size_t b = 0; b < nb; ++b) {  // quartiles of the channels' delta energy
      std::vector<double> e(dsq.begin() + std::ptrdiff_t(b * channels_), dsq.begin() + std::ptrdiff_t((b + 1) * channels_));
      std::vector<double> sorted = e;
      std::sort(sorted.begin(), sorted.end());
      for (std::size_t c = 0; c < channels_; ++c) {
        std::size_t k = 0;
        while (k + 1 < classes && e[c] > sorted[(k + 1) * channels_ / classes - (channels_ >= classes ? 1 : 0)]) ++k;
        class_[b * channels_ + c] = std::uint8_t(k);
      }
    }
  }

  void fit_tables(const kv_page_geometry& g, std::span<const std::span<const std::byte>> samples);
  std::uint64_t compute_fingerprint() const noexcept {
    XXH3_state_t* st = XXH3_createState();
    XXH3_64bits_reset(st);
    const std::uint64_t fields[] = {shape_.fingerprint(), opt_.group_tokens, std::uint64_t(opt_.lossless)};
    XXH3_64bits_update(st, fields, sizeof fields);
    XXH3_64bits_update(st, &opt_.anchor_fraction, sizeof(double));
    XXH3_64bits_update(st, step_.data(), step_.size() * sizeof(float));
    XXH3_64bits_update(st, class_.data(), class_.size());
    for (const auto& t : tables_) XXH3_64bits_update(st, t.freq.data(), sizeof t.freq);
    const std::uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
  }

  friend class cachegen_codec;

  kv_shape shape_;
  cachegen_options opt_;
  std::size_t channels_;
  std::uint64_t fingerprint_ = 0;
  std::vector<float> step_;                // per (layer, kv), relative to the block's RMS
  std::vector<std::uint8_t> class_;        // per (layer, kv, channel)
  std::vector<detail::rans_table> tables_;  // tables_per_block per (layer, kv)
};

namespace detail {
inline constexpr std::uint8_t cachegen_escape = 255;
// Zig-zag: 0, -1, 1, -2, ... → 0, 1, 2, 3, ...; values past the alphabet escape.
constexpr std::uint32_t zigzag(std::int32_t q) noexcept { return q >= 0 ? std::uint32_t(q) << 1 : (std::uint32_t(-(q + 1)) << 1) | 1u; }
constexpr std::int32_t unzigzag(std::uint32_t s) noexcept { return (s & 1u) ? -std::int32_t(s >> 1) - 1 : std::int32_t(s >> 1); }

// The symbols (and table selectors) of one (layer, kv) block; shared by fitting and encoding.
struct cachegen_block_symbols {
  std::vector<std::uint8_t> symbols, sel;
  std::vector<std::int32_t> escapes;
};
// Quantizes (lossy) or splits (lossless) one block of `tokens` × `channels` values.
// Anchors are quantized anchor_fraction times finer; one definition for every decoder.
KVTIER_HOST_DEVICE inline float cachegen_anchor_step(float step, double anchor_fraction) noexcept {
  return float(double(step) * anchor_fraction);
}
// The absolute step of one block of a page: the profile's relative step times the block's RMS.
inline float cachegen_block_step(const cachegen_profile& p, std::size_t block, const std::byte* page, dtype t,
                                 std::size_t first_element, std::size_t count) noexcept {
  double sq = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const double v = load_element(page, t, first_element + i);
    sq += v * v;
  }
  const double rms = count ? std::sqrt(sq / double(count)) : 0.0;
  const float s = float(p.relative_step(block) * (rms > 0 && std::isfinite(rms) ? rms : 1.0));
  return s > 0 && std::isfinite(s) ? s : 1.f;
}
// Channels [c0, c1) of one block's segment s of S.
constexpr std::size_t segment_begin(std::size_t s, std::size_t segments, std::size_t channels) noexcept {
  return s * channels / segments;
}
// The symbols (and table selectors) of channels [c0, c1) of one (layer, kv) block over `tokens`
// tokens, token-major: quantized (lossy) or the exact 16-bit patterns split in two bytes (lossless).
inline void cachegen_symbols(const cachegen_profile& p, std::size_t block, const std::byte* page, dtype t,
                             std::size_t first_element, std::size_t tokens, std::size_t c0, std::size_t c1, float step,
                             cachegen_block_symbols& out) {
  const std::size_t C = p.channels(), G = p.options().group_tokens;
  out.symbols.clear();
  out.sel.clear();
  out.escapes.clear();
  const auto push = [&](std::int32_t q, std::uint8_t sel) {
    const std::uint32_t z = zigzag(q);
    if (z < cachegen_escape) {
      out.symbols.push_back(std::uint8_t(z));
    } else {
      out.symbols.push_back(cachegen_escape);
      out.escapes.push_back(q);
    }
    out.sel.push_back(sel);
  };
  constexpr std::uint8_t lossless_base = 2 * cachegen_profile::classes;
  if (p.options().lossless) {
    std::vector<std::uint16_t> anchor(C);
    for (std::size_t tok = 0; tok < tokens; ++tok)
      for (std::size_t c = c0; c < c1; ++c) {
        std::uint16_t v;
        std::memcpy(&v, page + 2 * (first_element + tok * C + c), 2);
        const bool is_anchor = tok % G == 0;
        if (is_anchor) anchor[c] = v;
        const std::uint16_t d = is_anchor ? v : std::uint16_t(v - anchor[c]);
        const std::uint16_t z = is_anchor ? d : std::uint16_t((d << 1) ^ std::uint16_t(std::int16_t(d) >> 15));
        const std::uint8_t base = std::uint8_t(lossless_base + (is_anchor ? 0 : 2));
        out.symbols.push_back(std::uint8_t(z >> 8));
        out.sel.push_back(base);
        out.symbols.push_back(std::uint8_t(z & 0xff));
        out.sel.push_back(std::uint8_t(base + 1));
      }
    return;
  }
  const float astep = cachegen_anchor_step(step, p.options().anchor_fraction);
  const float inv = 1.f / step, ainv = 1.f / astep;
  std::vector<float> anchor(C);
  for (std::size_t tok = 0; tok < tokens; ++tok)
    for (std::size_t c = c0; c < c1; ++c) {
      const float v = load_element(page, t, first_element + tok * C + c);
      const std::uint8_t cls = p.channel_class(block, c);
      if (tok % G == 0) {
        const std::int32_t q = std::int32_t(std::lrint(std::clamp(v * ainv, -1e9f, 1e9f)));
        // Closed loop: deltas are taken from the anchor as the decoder stores it (rounded to the
        // page's type), so a decoder may read its anchors back from the output.
        anchor[c] = with_dtype(t, [&](auto tc) { return round_to<decltype(tc)::value>(float(q) * astep); });
        push(q, cls);
      } else {
        push(std::int32_t(std::lrint(std::clamp((v - anchor[c]) * inv, -1e9f, 1e9f))),
             std::uint8_t(cachegen_profile::classes + cls));
      }
    }
}
}  // namespace detail

inline void cachegen_profile::fit_tables(const kv_page_geometry& g, std::span<const std::span<const std::byte>> samples) {
  const std::size_t nb = blocks();
  std::vector<std::uint64_t> counts(nb * tables_per_block * 256, 0);
  detail::cachegen_block_symbols sym;
  for (auto page : samples)
    for (std::size_t b = 0; b < nb; ++b) {
      const std::size_t first = b * g.page_tokens * channels_;
      const float step = options().lossless ? 1.f
          : detail::cachegen_block_step(*this, b, page.data(), shape_.element_type(), first, g.page_tokens * channels_);
      detail::cachegen_symbols(*this, b, page.data(), shape_.element_type(), first, g.page_tokens, 0, channels_, step, sym);
      for (std::size_t i = 0; i < sym.symbols.size(); ++i) ++counts[(b * tables_per_block + sym.sel[i]) * 256 + sym.symbols[i]];
    }
  tables_.clear();
  tables_.reserve(nb * tables_per_block);
  for (std::size_t t = 0; t < nb * tables_per_block; ++t)
    tables_.push_back(detail::rans_table::from_counts(std::span<const std::uint64_t, 256>(&counts[t * 256], 256), true));
}

}  // namespace kvtier
