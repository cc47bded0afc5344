#pragma once
// The shape of one model's KV cache and the byte arithmetic every tier and kernel relies on.
// Logical index order everywhere in kvtier: (layer, kv, token, head, dim); kv has extent 1 for MLA.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "kvtier/core/config.hpp"
#include "kvtier/core/error.hpp"

namespace kvtier {

enum class dtype : std::uint8_t { bf16, fp16, fp8_e4m3, fp8_e5m2, fp32 };

KVTIER_HOST_DEVICE constexpr std::size_t size_of(dtype t) noexcept {
  switch (t) {
    case dtype::bf16: case dtype::fp16: return 2;
    case dtype::fp8_e4m3: case dtype::fp8_e5m2: return 1;
    case dtype::fp32: return 4;
  }
  return 0;
}

constexpr std::string_view to_string(dtype t) noexcept {
  switch (t) {
    case dtype::bf16: return "bf16";
    case dtype::fp16: return "fp16";
    case dtype::fp8_e4m3: return "fp8_e4m3";
    case dtype::fp8_e5m2: return "fp8_e5m2";
    case dtype::fp32: return "fp32";
  }
  return "?";
}

// Multi-head (and grouped-query) attention keeps K and V; MLA keeps one latent vector per token.
enum class attention : std::uint8_t { mha, mla };

namespace detail {
// Multiplies and throws config_error on overflow: shapes come from configuration.
constexpr std::size_t checked_mul(std::size_t a, std::size_t b, const char* what) {
  std::size_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) throw config_error(std::string("kvtier: overflow computing ") + what);
  return r;
}
}  // namespace detail

class kv_shape {
 public:
  // Grouped-query or multi-head attention: K and V, kv_heads heads of head_dim elements each.
  static constexpr kv_shape mha(std::size_t layers, std::size_t kv_heads, std::size_t head_dim, dtype t) {
    return kv_shape(attention::mha, layers, kv_heads, head_dim, t);
  }
  // Multi-head latent attention: one latent vector of latent_dim elements per token and layer.
  static constexpr kv_shape mla(std::size_t layers, std::size_t latent_dim, dtype t) {
    return kv_shape(attention::mla, layers, 1, latent_dim, t);
  }

  KVTIER_HOST_DEVICE constexpr attention kind() const noexcept { return kind_; }
  KVTIER_HOST_DEVICE constexpr dtype element_type() const noexcept { return dtype_; }
  KVTIER_HOST_DEVICE constexpr std::size_t layers() const noexcept { return layers_; }
  KVTIER_HOST_DEVICE constexpr std::size_t kv_planes() const noexcept { return kind_ == attention::mha ? 2 : 1; }
  KVTIER_HOST_DEVICE constexpr std::size_t heads() const noexcept { return heads_; }
  KVTIER_HOST_DEVICE constexpr std::size_t head_dim() const noexcept { return head_dim_; }
  KVTIER_HOST_DEVICE constexpr std::size_t element_bytes() const noexcept { return size_of(dtype_); }

  // Bytes of one (layer, kv, token) row: all heads of one token's K (or V, or latent).
  KVTIER_HOST_DEVICE constexpr std::size_t row_bytes() const noexcept { return heads_ * head_dim_ * size_of(dtype_); }
  KVTIER_HOST_DEVICE constexpr std::size_t bytes_per_token_per_layer() const noexcept { return kv_planes() * row_bytes(); }
  KVTIER_HOST_DEVICE constexpr std::size_t bytes_per_token() const noexcept { return layers_ * bytes_per_token_per_layer(); }
  // Bytes of one page of `page_tokens` tokens, one layer or all layers. Throws on overflow.
  constexpr std::size_t bytes_per_page_per_layer(std::size_t page_tokens) const {
    return detail::checked_mul(page_tokens, bytes_per_token_per_layer(), "bytes per page per layer");
  }
  constexpr std::size_t bytes_per_page(std::size_t page_tokens) const {
    return detail::checked_mul(page_tokens, bytes_per_token(), "bytes per page");
  }

  // A 64-bit fingerprint of everything that changes the bytes: a page written under one shape is
  // never read back under another.
  constexpr std::uint64_t fingerprint() const noexcept {
    std::uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a over the fields
    for (std::uint64_t v : {std::uint64_t(kind_), std::uint64_t(dtype_), std::uint64_t(layers_),
                            std::uint64_t(heads_), std::uint64_t(head_dim_)}) {
      for (int i = 0; i < 8; ++i) {
        h ^= (v >> (8 * i)) & 0xff;
        h *= 0x100000001b3ull;
      }
    }
    return h;
  }

  friend constexpr bool operator==(const kv_shape&, const kv_shape&) = default;

 private:
  constexpr kv_shape(attention k, std::size_t layers, std::size_t heads, std::size_t head_dim, dtype t)
      : kind_(k), dtype_(t), layers_(layers), heads_(heads), head_dim_(head_dim) {
    if (layers == 0 || heads == 0 || head_dim == 0) throw config_error("kvtier: kv_shape with a zero extent");
    if (size_of(t) == 0) throw config_error("kvtier: kv_shape with an unknown dtype");
    if (layers > limit || heads > limit || head_dim > limit)
      throw config_error("kvtier: kv_shape extent above 65535");
    // Bytes per token must fit comfortably; larger shapes would overflow page arithmetic.
    detail::checked_mul(detail::checked_mul(detail::checked_mul(layers, kv_planes() * heads, "bytes per token"),
                                            head_dim, "bytes per token"),
                        size_of(t), "bytes per token");
  }
  static constexpr std::size_t limit = 65535;

  attention kind_;
  dtype dtype_;
  std::size_t layers_;
  std::size_t heads_;
  std::size_t head_dim_;
};

// Shapes used across tests, examples and benches.
namespace shapes {
inline constexpr kv_shape llama3_8b() { return kv_shape::mha(32, 8, 128, dtype::bf16); }
inline constexpr kv_shape deepseek_v3_mla() { return kv_shape::mla(61, 576, dtype::bf16); }
}  // namespace shapes

}  // namespace kvtier
