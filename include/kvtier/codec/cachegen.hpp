#pragma once
// A CacheGen-style KV codec (Liu et al., SIGCOMM '24): KV of neighbouring tokens is close, so each
// group of G tokens keeps an anchor token and codes the others as deltas from it; the quantized
// symbols are entropy-coded (rANS) with distributions fitted per model on sample KV and stored in
// the model's codec profile, per (layer, kv) and per channel class (channels bucketed by how much
// they vary). Deeper layers may take coarser steps (`layer_slope`). A lossless mode codes the exact
// 16-bit patterns the same way; it is bit-exact and exists for tests and for tiers that must not lose.
//
// Encoded page: u64 tag (geometry, profile fingerprint, mode) | a directory: per (layer, kv) block
// a f32 step (the profile's relative step × the block's RMS), then per stream (the block's channels
// split into `streams_per_block` segments) u32 offset, u32 stream bytes, u32 escapes | the streams,
// each followed by its escapes (i32). Streams are independent, so a decoder may run one per
// (page, block, segment) — the GPU decoder does. A page that does not compress is stored raw.
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

namespace detail {

// A page's directory: per (layer, kv) block a f32 step, then per stream (channel segment) its
// byte offset in the page, its stream bytes and its escape count (u32 each).
struct cachegen_stream_entry {
  std::uint32_t offset = 0, stream_bytes = 0, escapes = 0;
};
constexpr std::size_t cachegen_block_dir_bytes(std::size_t streams) noexcept { return 4 + 12 * streams; }

// Decodes channels [c0, c1) of one block (tokens × channels elements, page_first order) from its
// stream and escapes (which follow the stream). The CUDA decoder mirrors this function; false on
// any inconsistency (the page is then a miss).
inline bool cachegen_decode_segment(const cachegen_profile& p, std::size_t block, const std::byte* stream,
                                    const cachegen_stream_entry& e, float step, std::size_t c0, std::size_t c1,
                                    std::size_t tokens, dtype t, std::byte* out, std::vector<float>& anchor) noexcept {
  const std::size_t C = p.channels(), G = p.options().group_tokens;
  const rans_table* tb = p.tables(block);
  const std::byte* q = stream;
  const std::byte* const end = stream + e.stream_bytes;
  const std::byte* const escapes = end;
  if (e.stream_bytes < 8) return false;
  std::uint32_t x[2] = {0, 0};
  for (int k = 0; k < 2; ++k)
    for (int b = 0; b < 4; ++b) x[k] |= std::uint32_t(std::to_integer<std::uint8_t>(q[4 * k + b])) << (8 * b);
  q += 8;
  std::size_t n = 0;
  const auto next = [&](const rans_table& tab) -> int {
    std::uint32_t& st = x[n++ & 1];
    const std::uint32_t slot = st & (rans_total - 1);
    const std::uint8_t s = tab.symbol_of[slot];
    st = tab.freq[s] * (st >> rans_prob_bits) + slot - tab.cum[s];
    while (st < rans_low) {
      if (q == end) return -1;
      st = (st << 8) | std::to_integer<std::uint8_t>(*q++);
    }
    return s;
  };
  constexpr std::size_t lossless_base = 2 * cachegen_profile::classes;
  if (p.options().lossless) {
    for (std::size_t tok = 0; tok < tokens; ++tok) {
      const bool is_anchor = tok % G == 0;
      const rans_table& hi = tb[lossless_base + (is_anchor ? 0 : 2)];
      const rans_table& lo = tb[lossless_base + (is_anchor ? 1 : 3)];
      for (std::size_t c = c0; c < c1; ++c) {
        const int h = next(hi), l = next(lo);
        if (h < 0 || l < 0) return false;
        const std::uint16_t z = std::uint16_t((h << 8) | l);
        std::uint16_t v;
        if (is_anchor) {
          v = z;
          anchor[c] = float(z);  // 16-bit patterns are exact in a float
        } else {
          const std::uint16_t d = std::uint16_t((z >> 1) ^ std::uint16_t(-std::int16_t(z & 1)));
          v = std::uint16_t(std::uint16_t(anchor[c]) + d);
        }
        std::memcpy(out + 2 * (tok * C + c), &v, 2);
      }
    }
  } else {
    const float astep = cachegen_anchor_step(step, p.options().anchor_fraction);
    std::uint32_t used = 0;
    bool ok = true;
    with_dtype(t, [&](auto tc) {
      constexpr dtype T = decltype(tc)::value;
      const std::uint8_t* cls = &p.channel_class(block, 0);
      for (std::size_t tok = 0; tok < tokens && ok; ++tok) {
        const bool is_anchor = tok % G == 0;
        const rans_table* set = tb + (is_anchor ? 0 : cachegen_profile::classes);
        for (std::size_t c = c0; c < c1; ++c) {
          const int s = next(set[cls[c]]);
          if (s < 0) { ok = false; return; }
          std::int32_t v;
          if (s == cachegen_escape) {
            if (used == e.escapes) { ok = false; return; }
            const std::byte* ep = escapes + 4 * used++;
            v = get_le<std::int32_t>(ep);
          } else {
            v = unzigzag(std::uint32_t(s));
          }
          if (is_anchor) {
            const float xa = float(v) * astep;
            store_typed<T>(out, tok * C + c, xa);
            anchor[c] = round_to<T>(xa);
          } else {
            store_typed<T>(out, tok * C + c, anchor[c] + float(v) * step);
          }
        }
      }
    });
    if (!ok || used != e.escapes) return false;
  }
  return q == end && x[0] == rans_low && x[1] == rans_low;
}

}  // namespace detail

// The codec: constructed with the page geometry and a fitted profile for the same KV shape.
class cachegen_codec {
 public:
  using kvtier_codec = codec_tag;
  static constexpr std::uint32_t id = 4;

  cachegen_codec() noexcept = default;  // unconfigured: refuses every page
  cachegen_codec(kv_page_geometry g, std::shared_ptr<const cachegen_profile> p) : g_(g), p_(std::move(p)) {
    g_.check();
    if (!p_) throw config_error("kvtier: cachegen_codec needs a profile");
    if (!(p_->shape() == g_.shape)) throw config_error("kvtier: cachegen profile fitted for another KV shape");
  }

  const cachegen_profile* profile() const noexcept { return p_.get(); }
  bool configured() const noexcept { return p_ != nullptr; }
  const kv_page_geometry& geometry() const noexcept { return g_; }
  // The first 8 bytes of this codec's compressed and raw pages (decoders check them).
  std::uint64_t page_tag() const noexcept { return tag(); }
  std::uint64_t raw_page_tag() const noexcept { return tag() ^ raw_mode; }

  // Never more than the page plus its framing: a page that does not compress is stored raw.
  std::size_t max_encoded_bytes(std::size_t n) const noexcept {
    return 8 + n + (p_ ? dir_bytes() : 0);
  }

  result<std::size_t> encode(std::span<const std::byte> in, std::span<std::byte> out) const noexcept {
    if (!p_ || in.size() != g_.page_bytes()) return make_error(errc::invalid_argument);
    if (out.size() < max_encoded_bytes(in.size())) return make_error(errc::invalid_argument);
    out = out.first(max_encoded_bytes(in.size()));
    try {
      if (const std::size_t n = encode_compressed(in, out)) return n;
    } catch (...) {  // allocation failure: fall back to the raw page, never throw
    }
    std::byte* o = out.data();
    detail::put_le<std::uint64_t>(o, tag() ^ raw_mode);
    std::memcpy(o, in.data(), in.size());
    return 8 + in.size();
  }

  result<std::size_t> decode(std::span<const std::byte> in, std::span<std::byte> out) const noexcept {
    if (!p_ || out.size() != g_.page_bytes()) return make_error(errc::invalid_argument);
    if (in.size() < 8) return make_error(errc::corrupted);
    try {
      const std::byte* q = in.data();
      const std::byte* const end = q + in.size();
      const std::uint64_t tg = detail::get_le<std::uint64_t>(q);
      if (tg == (tag() ^ raw_mode)) {
        if (std::size_t(end - q) != out.size()) return make_error(errc::corrupted);
        std::memcpy(out.data(), q, out.size());
        return out.size();
      }
      if (tg != tag()) return make_error(errc::corrupted);
      const std::size_t nb = p_->blocks(), S = p_->options().streams_per_block, C = p_->channels();
      if (in.size() < 8 + dir_bytes()) return make_error(errc::corrupted);
      std::vector<float> anchor(C);
      const std::size_t block_bytes = g_.page_tokens * C * g_.shape.element_bytes();
      std::size_t expect = 8 + dir_bytes();  // streams follow the directory back to back
      for (std::size_t b = 0; b < nb; ++b) {
        const std::byte* d = in.data() + 8 + b * detail::cachegen_block_dir_bytes(S);
        const float step = detail::get_le<float>(d);
        if (!(step > 0) || !std::isfinite(step)) return make_error(errc::corrupted);
        for (std::size_t sg = 0; sg < S; ++sg) {
          detail::cachegen_stream_entry e;
          e.offset = detail::get_le<std::uint32_t>(d);
          e.stream_bytes = detail::get_le<std::uint32_t>(d);
          e.escapes = detail::get_le<std::uint32_t>(d);
          const std::size_t len = std::size_t(e.stream_bytes) + 4 * std::size_t(e.escapes);
          if (e.offset != expect || len > in.size() - expect) return make_error(errc::corrupted);
          expect += len;
          if (!detail::cachegen_decode_segment(*p_, b, in.data() + e.offset, e, step, detail::segment_begin(sg, S, C),
                                               detail::segment_begin(sg + 1, S, C), g_.page_tokens,
                                               g_.shape.element_type(), out.data() + b * block_bytes, anchor))
            return make_error(errc::corrupted);
        }
      }
      if (expect != in.size()) return make_error(errc::corrupted);
      return out.size();
    } catch (...) {
      return make_error(errc::capacity_exhausted);
    }
  }

 private:
  static constexpr std::uint64_t raw_mode = 0x5241575041474531ull;  // tag bit pattern of a raw page

  // The compressed form, or 0 when it would not fit in `out` (the caller then stores the page raw).
  std::size_t encode_compressed(std::span<const std::byte> in, std::span<std::byte> out) const {
    const std::size_t nb = p_->blocks(), S = p_->options().streams_per_block, C = p_->channels();
    std::byte* o = out.data();
    std::byte* const end = out.data() + out.size();
    detail::put_le<std::uint64_t>(o, tag());
    if (std::size_t(end - o) < dir_bytes()) return 0;
    std::byte* dir = o;
    o += dir_bytes();
    detail::cachegen_block_symbols sym;
    const std::size_t per_block = g_.page_tokens * C;
    const dtype t = g_.shape.element_type();
    for (std::size_t b = 0; b < nb; ++b) {
      const float step = p_->options().lossless ? 1.f : detail::cachegen_block_step(*p_, b, in.data(), t, b * per_block, per_block);
      detail::put_le<float>(dir, step);
      const detail::rans_table* tb = p_->tables(b);
      const detail::rans_table* ptrs[cachegen_profile::tables_per_block];
      for (std::size_t k = 0; k < cachegen_profile::tables_per_block; ++k) ptrs[k] = tb + k;
      for (std::size_t sg = 0; sg < S; ++sg) {
        detail::cachegen_symbols(*p_, b, in.data(), t, b * per_block, g_.page_tokens, detail::segment_begin(sg, S, C),
                                 detail::segment_begin(sg + 1, S, C), step, sym);
        const std::size_t reserve = 4 * sym.escapes.size();
        if (std::size_t(end - o) <= reserve) return 0;
        const std::size_t n = detail::rans_encode(sym.symbols, sym.sel, ptrs, std::span<std::byte>(o, std::size_t(end - o) - reserve));
        if (n == 0) return 0;
        detail::put_le<std::uint32_t>(dir, std::uint32_t(o - out.data()));
        detail::put_le<std::uint32_t>(dir, std::uint32_t(n));
        detail::put_le<std::uint32_t>(dir, std::uint32_t(sym.escapes.size()));
        o += n;
        for (std::int32_t e : sym.escapes) detail::put_le<std::int32_t>(o, e);
      }
    }
    return std::size_t(o - out.data());
  }

  std::size_t dir_bytes() const noexcept {
    return p_->blocks() * detail::cachegen_block_dir_bytes(p_->options().streams_per_block);
  }

  std::uint64_t tag() const noexcept { return detail::geometry_tag(g_, id) ^ p_->fingerprint(); }

  kv_page_geometry g_{kv_shape::mha(1, 1, 1, dtype::bf16), 1};
  std::shared_ptr<const cachegen_profile> p_;
};

static_assert(page_codec<cachegen_codec>);

}  // namespace kvtier
