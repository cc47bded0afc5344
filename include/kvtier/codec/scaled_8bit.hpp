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
#include <cstring>
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
    return std::uint8_t(std::int8_t(std::lrint(std::clamp(v, -127.f, 127.f))));  // nearest, ties to even
  }
  static float decode(std::uint8_t c) noexcept { return float(std::int8_t(c)); }
  KVTIER_HOST_DEVICE static float decode_dev(std::uint8_t c) noexcept { return float(std::int8_t(c)); }
};

// fp8 e4m3 ("fn": bias 7, no infinities, 0x7f/0xff are NaN, largest finite 448).
struct fp8_e4m3_format {
  static constexpr std::uint32_t id = 3;
  static constexpr float max_code = 448.f;
  KVTIER_HOST_DEVICE static constexpr float value_of(std::uint8_t c) noexcept {
    const int e = (c >> 3) & 0xf, m = c & 7;
    const float mag = e == 0 ? float(m) / 8.f / 64.f  // subnormal: m/8 · 2^-6
                             : (1.f + float(m) / 8.f) * float(e >= 7 ? (1u << (e - 7)) : 1.f / float(1u << (7 - e)));
    return (c & 0x80) ? -mag : mag;
  }
  // Nearest representable value, ties to the even code (bit arithmetic on the float; saturates at 448).
  static std::uint8_t encode(float v) noexcept {
    std::uint32_t u;
    std::memcpy(&u, &v, 4);
    const std::uint8_t sign = std::uint8_t((u >> 24) & 0x80);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u) return std::uint8_t(sign | 0x7e);  // NaN saturates like overflow
    if (u >= 0x43e00000u) return std::uint8_t(sign | 0x7e);  // ≥ 448
    const int e = int(u >> 23) - 127;  // unbiased exponent
    if (e < -6) {  // subnormal e4m3: multiples of 2^-9
      float a;
      std::memcpy(&a, &u, 4);
      const float q = std::nearbyint(a * 512.f);  // round half to even
      return std::uint8_t(sign | std::uint8_t(q));  // q = 8 rolls over into the smallest normal
    }
    // normal: keep 3 mantissa bits, round to nearest even on the 20 dropped bits
    std::uint32_t r = u + 0x7ffffu + ((u >> 20) & 1u);
    const int er = int(r >> 23) - 127;
    if (er > 8 || (er == 8 && ((r >> 20) & 7u) > 6)) return std::uint8_t(sign | 0x7e);
    return std::uint8_t(sign | std::uint8_t(((er + 7) << 3) | ((r >> 20) & 7u)));
  }
  KVTIER_HOST_DEVICE static float decode_dev(std::uint8_t c) noexcept { return value_of(c); }
  static float decode(std::uint8_t c) noexcept {
    static const std::array<float, 256> table = [] {
      std::array<float, 256> t{};
      for (int i = 0; i < 256; ++i) t[std::size_t(i)] = value_of(std::uint8_t(i));
      return t;
    }();
    return table[c];
  }
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
  bool configured() const noexcept { return configured_; }

  std::size_t max_encoded_bytes(std::size_t n) const noexcept {
    if (!configured_ || n != g_.page_bytes()) return 8 + n;  // never smaller than what decode checks
    return 8 + vectors() * (4 + g_.shape.head_dim());
  }

  result<std::size_t> encode(std::span<const std::byte> in, std::span<std::byte> out) const noexcept {
    if (!configured_ || in.size() != g_.page_bytes()) return make_error(errc::invalid_argument);
    const std::size_t need = max_encoded_bytes(in.size());
    if (out.size() < need) return make_error(errc::invalid_argument);
    const std::size_t dim = g_.shape.head_dim();
    std::byte* o = out.data();
    detail::put_le<std::uint64_t>(o, detail::geometry_tag(g_, id));
    detail::with_dtype(g_.shape.element_type(), [&](auto t) {
      constexpr dtype T = decltype(t)::value;
      for (std::size_t v = 0; v < vectors(); ++v) {
        const std::byte* src = in.data() + v * dim * size_of(T);
        float amax = 0.f;
        for (std::size_t d = 0; d < dim; ++d) amax = std::max(amax, std::fabs(detail::load_typed<T>(src, d)));
        const float scale = amax > 0.f && std::isfinite(amax) ? amax / Format::max_code : 1.f;
        const float inv = 1.f / scale;
        detail::put_le<float>(o, scale);
        for (std::size_t d = 0; d < dim; ++d) o[d] = std::byte(Format::encode(detail::load_typed<T>(src, d) * inv));
        o += dim;
      }
    });
    return std::size_t(o - out.data());
  }

  result<std::size_t> decode(std::span<const std::byte> in, std::span<std::byte> out) const noexcept {
    if (!configured_ || out.size() != g_.page_bytes()) return make_error(errc::invalid_argument);
    if (in.size() != max_encoded_bytes(out.size())) return make_error(errc::corrupted);
    const std::byte* p = in.data();
    if (detail::get_le<std::uint64_t>(p) != detail::geometry_tag(g_, id)) return make_error(errc::corrupted);
    const std::size_t dim = g_.shape.head_dim();
    return detail::with_dtype(g_.shape.element_type(), [&](auto t) -> result<std::size_t> {
      constexpr dtype T = decltype(t)::value;
      for (std::size_t v = 0; v < vectors(); ++v) {
        const float scale = detail::get_le<float>(p);
        if (!std::isfinite(scale)) return make_error(errc::corrupted);
        std::byte* dst = out.data() + v * dim * size_of(T);
        for (std::size_t d = 0; d < dim; ++d) detail::store_typed<T>(dst, d, Format::decode(std::uint8_t(p[d])) * scale);
        p += dim;
      }
      return out.size();
    });
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
