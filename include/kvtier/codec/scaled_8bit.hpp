#pragma once
// The simple lossy baselines: 8 bits per element with one fp32 scale per (layer, kv, token, head)
// vector — int8 (symmetric, absmax / 127) and fp8 e4m3 (absmax / 448). A page of bf16 KV shrinks
// to (dim + 4) / (2 · dim) of its size: 1.94× smaller at dim 128.
//
// Encoded page: u64 geometry tag | per vector: f32 scale, dim codes.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>

#include "kvtier/codec/concepts.hpp"
#include "kvtier/codec/kv_page.hpp"
#include "kvtier/core/error.hpp"

namespace kvtier {

namespace detail {

struct int8_format {
  static constexpr std::uint32_t id = 2;
  static constexpr float max_code = 127.f;
  static std::uint8_t encode(float v) noexcept {
    const float r = std::nearbyint(std::clamp(v, -127.f, 127.f));
    return std::uint8_t(std::int8_t(r));
  }
  static float decode(std::uint8_t c) noexcept { return float(std::int8_t(c)); }
};

// fp8 e4m3 ("fn": bias 7, no infinities, 0x7f/0xff are NaN, largest finite 448).
struct fp8_e4m3_format {
  static constexpr std::uint32_t id = 3;
  static constexpr float max_code = 448.f;
  static constexpr float value_of(std::uint8_t c) noexcept {
    const int e = (c >> 3) & 0xf, m = c & 7;
    const float mag = e == 0 ? float(m) / 8.f / 64.f  // subnormal: m/8 · 2^-6
                             : (1.f + float(m) / 8.f) * float(e >= 7 ? (1u << (e - 7)) : 1.f / float(1u << (7 - e)));
    return (c & 0x80) ? -mag : mag;
  }
  static const std::array<float, 127>& positives() noexcept {
    static const std::array<float, 127> t = [] {
      std::array<float, 127> a{};
      for (int c = 0; c < 127; ++c) a[std::size_t(c)] = value_of(std::uint8_t(c));
      return a;
    }();
    return t;
  }
  // Nearest representable value, ties to the even code.
  static std::uint8_t encode(float v) noexcept {
    const std::uint8_t sign = v < 0 ? 0x80 : 0;
    const float a = std::min(std::fabs(v), max_code);
    const auto& t = positives();
    const auto it = std::lower_bound(t.begin(), t.end(), a);
    std::size_t c = std::size_t(it - t.begin());
    if (c == t.size()) c = t.size() - 1;
    if (c > 0) {
      const float up = t[c] - a, down = a - t[c - 1];
      if (down < up || (down == up && ((c - 1) & 1) == 0)) --c;
    }
    return std::uint8_t(sign | c);
  }
  static float decode(std::uint8_t c) noexcept { return value_of(c); }
};

}  // namespace detail

template <class Format>
class scaled_8bit_codec {
 public:
  using kvtier_codec = codec_tag;
  static constexpr std::uint32_t id = Format::id;

  // A default-constructed codec has no geometry and refuses every page (invalid_argument).
  scaled_8bit_codec() noexcept = default;
  explicit scaled_8bit_codec(kv_page_geometry g) : g_(g), configured_(true) { g_.check(); }

  const kv_page_geometry& geometry() const noexcept { return g_; }

  std::size_t max_encoded_bytes(std::size_t n) const noexcept {
    if (!configured_ || n != g_.page_bytes()) return 8 + n;  // never smaller than what decode checks
    return 8 + vectors() * (4 + g_.shape.head_dim());
  }

  result<std::size_t> encode(std::span<const std::byte> in, std::span<std::byte> out) const noexcept {
    if (!configured_ || in.size() != g_.page_bytes()) return make_error(errc::invalid_argument);
    const std::size_t need = max_encoded_bytes(in.size());
    if (out.size() < need) return make_error(errc::invalid_argument);
    const dtype t = g_.shape.element_type();
    const std::size_t dim = g_.shape.head_dim();
    std::byte* o = out.data();
    detail::put_le<std::uint64_t>(o, detail::geometry_tag(g_, id));
    for (std::size_t v = 0; v < vectors(); ++v) {
      float amax = 0.f;
      for (std::size_t d = 0; d < dim; ++d) amax = std::max(amax, std::fabs(detail::load_element(in.data(), t, v * dim + d)));
      const float scale = amax > 0.f && std::isfinite(amax) ? amax / Format::max_code : 1.f;
      const float inv = 1.f / scale;
      detail::put_le<float>(o, scale);
      for (std::size_t d = 0; d < dim; ++d)
        *o++ = std::byte(Format::encode(detail::load_element(in.data(), t, v * dim + d) * inv));
    }
    return std::size_t(o - out.data());
  }

  result<std::size_t> decode(std::span<const std::byte> in, std::span<std::byte> out) const noexcept {
    if (!configured_ || out.size() != g_.page_bytes()) return make_error(errc::invalid_argument);
    if (in.size() != max_encoded_bytes(out.size())) return make_error(errc::corrupted);
    const std::byte* p = in.data();
    if (detail::get_le<std::uint64_t>(p) != detail::geometry_tag(g_, id)) return make_error(errc::corrupted);
    const dtype t = g_.shape.element_type();
    const std::size_t dim = g_.shape.head_dim();
    for (std::size_t v = 0; v < vectors(); ++v) {
      const float scale = detail::get_le<float>(p);
      if (!std::isfinite(scale)) return make_error(errc::corrupted);
      for (std::size_t d = 0; d < dim; ++d)
        detail::store_element(out.data(), t, v * dim + d, Format::decode(std::uint8_t(*p++)) * scale);
    }
    return out.size();
  }

 private:
  std::size_t vectors() const noexcept { return g_.rows() * g_.shape.heads(); }

  kv_page_geometry g_{kv_shape::mha(1, 1, 1, dtype::bf16), 1};
  bool configured_ = false;
};

using int8_codec = scaled_8bit_codec<detail::int8_format>;
using fp8_codec = scaled_8bit_codec<detail::fp8_e4m3_format>;

static_assert(page_codec<int8_codec>);
static_assert(page_codec<fp8_codec>);

}  // namespace kvtier
