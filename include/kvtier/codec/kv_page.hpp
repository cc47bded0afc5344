#pragma once
// What a KV codec knows of the page it encodes: the model's KV shape and the page's token count.
// A page in a slow tier is page_first: (layer, kv, token_in_page, head, dim), contiguous.
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kvtier/core/config.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"

namespace kvtier {

struct kv_page_geometry {
  kv_shape shape;
  std::size_t page_tokens = 0;

  // Rows are (layer, kv, token) triples; each row holds heads × dim elements.
  constexpr std::size_t rows() const noexcept { return shape.layers() * shape.kv_planes() * page_tokens; }
  constexpr std::size_t row_elements() const noexcept { return shape.heads() * shape.head_dim(); }
  constexpr std::size_t elements() const noexcept { return rows() * row_elements(); }
  constexpr std::size_t page_bytes() const noexcept { return elements() * shape.element_bytes(); }
  // Validates at configuration time: codecs hold geometry for their whole life.
  constexpr void check() const {
    if (page_tokens == 0) throw config_error("kvtier: codec geometry with 0 tokens per page");
    const dtype t = shape.element_type();
    if (t != dtype::bf16 && t != dtype::fp16 && t != dtype::fp32)
      throw config_error("kvtier: KV codecs encode bf16, fp16 or fp32 pages");
  }
};

// The codec a slow tier of `page_bytes`-byte pages of shape `s` uses when it is given none: a codec
// built from its page geometry (int8, fp8) is built for those pages; any other is default-built.
template <class C>
C default_tier_codec(const kv_shape& s, std::size_t page_bytes) {
  if constexpr (std::is_constructible_v<C, kv_page_geometry>) {
    const std::size_t per_token = s.bytes_per_token();
    if (page_bytes == 0 || page_bytes % per_token != 0)
      throw config_error("kvtier: a KV codec needs a tier whose page_bytes is a whole number of tokens of its shape");
    return C(kv_page_geometry{s, page_bytes / per_token});
  } else {
    return C{};
  }
}
// Checks a codec given to a slow tier: configured (a cachegen codec has its profile) and built for
// the tier's pages. Throws config_error; returns the codec.
template <class C>
C checked_tier_codec(C c, const kv_shape& s, std::size_t page_bytes) {
  if constexpr (requires { c.configured(); })
    if (!c.configured())
      throw config_error("kvtier: a slow tier's codec is not configured: build it with its page geometry (and profile) "
                         "and pass it to the tier's constructor");
  if constexpr (requires { c.geometry(); })
    if (!(c.geometry().shape == s) || c.geometry().page_bytes() != page_bytes)
      throw config_error("kvtier: a slow tier's codec was built for pages of another shape or size than the tier's");
  return c;
}

namespace detail {

KVTIER_HOST_DEVICE inline float bf16_bits_to_float(std::uint16_t b) noexcept {
  const std::uint32_t u = std::uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// Round to nearest even; NaN stays NaN.
KVTIER_HOST_DEVICE inline std::uint16_t float_to_bf16_bits(float f) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return std::uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return std::uint16_t(u >> 16);
}
KVTIER_HOST_DEVICE inline float fp16_bits_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do { ++e; man <<= 1; } while ((man & 0x400u) == 0);
      u = sign | (std::uint32_t(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (man << 13);
  } else {
    u = sign | ((exp + 112) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
KVTIER_HOST_DEVICE inline std::uint16_t float_to_fp16_bits(float f) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  const std::uint16_t sign = std::uint16_t((u >> 16) & 0x8000u);
  const std::uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return std::uint16_t(sign | 0x7e00u);           // NaN
  if (a >= 0x477ff000u) return std::uint16_t(sign | 0x7c00u);          // overflow → inf
  if (a < 0x38800000u) {                                              // subnormal or zero
    if (a < 0x33000000u) return sign;
    const std::uint32_t man = (a & 0x7fffffu) | 0x800000u;
    const int shift = 113 - int(a >> 23) + 13;
    std::uint32_t r = man >> shift;
    const std::uint32_t rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return std::uint16_t(sign | r);
  }
  std::uint32_t r = a - 0x38000000u;  // rebias 127 → 15
  r += 0xfffu + ((r >> 13) & 1u);
  return std::uint16_t(sign | (r >> 13));
}

// Element i of a page of type t, as float.
inline float load_element(const std::byte* p, dtype t, std::size_t i) noexcept {
  switch (t) {
    case dtype::bf16: { std::uint16_t b; std::memcpy(&b, p + 2 * i, 2); return bf16_bits_to_float(b); }
    case dtype::fp16: { std::uint16_t b; std::memcpy(&b, p + 2 * i, 2); return fp16_bits_to_float(b); }
    case dtype::fp32: { float f; std::memcpy(&f, p + 4 * i, 4); return f; }
    default: return 0.f;
  }
}
inline void store_element(std::byte* p, dtype t, std::size_t i, float v) noexcept {
  switch (t) {
    case dtype::bf16: { const std::uint16_t b = float_to_bf16_bits(v); std::memcpy(p + 2 * i, &b, 2); return; }
    case dtype::fp16: { const std::uint16_t b = float_to_fp16_bits(v); std::memcpy(p + 2 * i, &b, 2); return; }
    case dtype::fp32: std::memcpy(p + 4 * i, &v, 4); return;
    default: return;
  }
}

// A tag of everything that changes the encoded layout: a page is never decoded under another.
inline std::uint64_t geometry_tag(const kv_page_geometry& g, std::uint32_t codec_id) noexcept {
  return g.shape.fingerprint() ^ (std::uint64_t(g.page_tokens) << 40) ^ (std::uint64_t(codec_id) << 20);
}

// Calls f(std::integral_constant<dtype, T>{}) for the page's element type, so inner loops are
// compiled once per type instead of switching per element.
template <dtype T>
inline float load_typed(const std::byte* p, std::size_t i) noexcept {
  if constexpr (T == dtype::bf16) { std::uint16_t b; std::memcpy(&b, p + 2 * i, 2); return bf16_bits_to_float(b); }
  else if constexpr (T == dtype::fp16) { std::uint16_t b; std::memcpy(&b, p + 2 * i, 2); return fp16_bits_to_float(b); }
  else { float f; std::memcpy(&f, p + 4 * i, 4); return f; }
}
template <dtype T>
inline void store_typed(std::byte* p, std::size_t i, float v) noexcept {
  if constexpr (T == dtype::bf16) { const std::uint16_t b = float_to_bf16_bits(v); std::memcpy(p + 2 * i, &b, 2); }
  else if constexpr (T == dtype::fp16) { const std::uint16_t b = float_to_fp16_bits(v); std::memcpy(p + 2 * i, &b, 2); }
  else std::memcpy(p + 4 * i, &v, 4);
}
// v rounded to element type T, as it reads back once stored.
template <dtype T>
KVTIER_HOST_DEVICE inline float round_to(float v) noexcept {
  if constexpr (T == dtype::bf16) return bf16_bits_to_float(float_to_bf16_bits(v));
  else if constexpr (T == dtype::fp16) return fp16_bits_to_float(float_to_fp16_bits(v));
  else return v;
}
template <class F>
inline decltype(auto) with_dtype(dtype t, F&& f) {
  switch (t) {
    case dtype::fp16: return f(std::integral_constant<dtype, dtype::fp16>{});
    case dtype::fp32: return f(std::integral_constant<dtype, dtype::fp32>{});
    default: return f(std::integral_constant<dtype, dtype::bf16>{});
  }
}

// Little-endian scalar I/O into encoded byte streams.
template <class T>
inline void put_le(std::byte*& out, T v) noexcept {
  std::memcpy(out, &v, sizeof(T));
  out += sizeof(T);
}
template <class T>
inline T get_le(const std::byte*& in) noexcept {
  T v;
  std::memcpy(&v, in, sizeof(T));
  in += sizeof(T);
  return v;
}

}  // namespace detail
}  // namespace kvtier
