#pragma once
// Synthetic weights as a pure function of (seed, tensor, element): any backend can generate the same
// values where its weights live (the CPU fills host vectors; a GPU backend may fill device memory
// with a kernel calling synthetic_value), so a 16 GB llama3-8b never crosses the host. Host and nvcc
// safe.
#include <cstddef>
#include <cmath>
#include <cstdint>

#include "kvtier/core/config.hpp"

namespace kvtier_engine {

// The tensors of a Llama block, in llama2.c's file order; per-layer tensors are indexed by layer.
enum class tensor_kind : std::uint8_t {
  token_embedding,  // (vocab, dim)
  attn_norm,        // (layer, dim)
  wq,               // (layer, q_dim, dim)
  wk,               // (layer, kv_dim, dim)
  wv,               // (layer, kv_dim, dim)
  wo,               // (layer, dim, q_dim)
  ffn_norm,         // (layer, dim)
  w1,               // (layer, hidden, dim)   gate
  w2,               // (layer, dim, hidden)   down
  w3,               // (layer, hidden, dim)   up
  final_norm,       // (dim)
  classifier,       // (vocab, dim), absent when tied to the token embedding
};
inline constexpr std::size_t tensor_kinds = 12;

namespace detail {
KVTIER_HOST_DEVICE constexpr std::uint64_t mix64(std::uint64_t z) noexcept {  // splitmix64's finaliser
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
}  // namespace detail

// The scale of tensor `kind` whose rows have `fan_in` columns: sqrt(3 / fan_in) for matrices (unit
// variance per output for unit inputs), 1 for the token embedding, 1/8 for the RMSNorm weights'
// spread around 1. Computed once per tensor on the host and passed to synthetic_value.
inline float synthetic_scale(tensor_kind kind, std::size_t fan_in) noexcept {
  switch (kind) {
    case tensor_kind::attn_norm:
    case tensor_kind::ffn_norm:
    case tensor_kind::final_norm:
      return 0.125f;
    case tensor_kind::token_embedding:
      return 1.0f;
    default:
      return std::sqrt(3.0f / float(fan_in));
  }
}

// Element `index` of tensor `kind` of layer `layer` (0 for whole-model tensors): u * scale, plus 1
// for RMSNorm weights, where u is uniform in [-1, 1) from a hash of (seed, kind, layer, index).
KVTIER_HOST_DEVICE inline float synthetic_value(std::uint64_t seed, tensor_kind kind, std::uint32_t layer,
                                                std::uint64_t index, float scale) noexcept {
  const std::uint64_t h = detail::mix64(seed ^ detail::mix64((std::uint64_t(kind) << 56) ^ (std::uint64_t(layer) << 40) ^
                                                             0x9e3779b97f4a7c15ull) ^ (index * 0xd1b54a32d192ed03ull));
  const float u = float(std::int64_t(h >> 40) - (std::int64_t(1) << 23)) * (1.0f / float(1 << 23));  // [-1, 1)
  const bool norm = kind == tensor_kind::attn_norm || kind == tensor_kind::ffn_norm || kind == tensor_kind::final_norm;
  return norm ? 1.0f + u * scale : u * scale;
}

}  // namespace kvtier_engine
