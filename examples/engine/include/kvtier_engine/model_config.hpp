#pragma once
// model_config: the Llama architecture's hyper-parameters (what a llama2.c checkpoint header or a
// Hugging Face config.json says), the named shapes the engine runs, and the KV shape they give the
// cache. Host and nvcc safe: no range-v3, nothing host-only.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"

namespace kvtier_engine {

// How rotary position embedding pairs the dimensions of one head.
//  adjacent_pairs: (0,1), (2,3), ... rotated by frequency i/2 (llama2.c's run.c and its checkpoints);
//  rotate_half:    (i, i + head_size/2) rotated by frequency i (Hugging Face Llama / Qwen checkpoints).
// Both use inv_freq(j) = theta^(-2j / head_size) for pair j.
enum class rope_style : std::uint8_t { adjacent_pairs, rotate_half };

constexpr std::string_view to_string(rope_style r) noexcept {
  return r == rope_style::adjacent_pairs ? "adjacent_pairs" : "rotate_half";
}

struct model_config {
  std::string name = "custom";
  std::size_t dim = 0;         // model width (hidden size)
  std::size_t hidden_dim = 0;  // SwiGLU inner width (intermediate size)
  std::size_t layers = 0;
  std::size_t heads = 0;       // query heads
  std::size_t kv_heads = 0;    // key/value heads (grouped-query attention when < heads)
  std::size_t head_size = 0;   // dims per head (dim / heads for every Llama; kept explicit)
  std::size_t vocab = 0;
  std::size_t seq_len = 0;     // longest sequence the model (and the engine's block tables) handle
  rope_style rope = rope_style::rotate_half;
  float rope_theta = 10000.0f;
  bool tied_classifier = true;  // the classifier is the token embedding (llama2.c: vocab_size > 0)
  float norm_eps = 1e-5f;

  std::size_t q_dim() const noexcept { return heads * head_size; }
  std::size_t kv_dim() const noexcept { return kv_heads * head_size; }
  std::size_t group() const noexcept { return heads / kv_heads; }  // query heads per KV head

  // Parameters the weights hold (without the RoPE tables a llama2.c file may append).
  std::uint64_t parameters() const noexcept {
    const std::uint64_t d = dim, h = hidden_dim, L = layers;
    const std::uint64_t per_layer = 2 * d + d * q_dim() + 2 * d * kv_dim() + q_dim() * d + 3 * d * h;
    return std::uint64_t(vocab) * d * (tied_classifier ? 1 : 2) + L * per_layer + d;
  }
  // Multiply-adds of one token's forward pass without attention (linear layers + classifier).
  std::uint64_t linear_macs_per_token(bool with_classifier) const noexcept {
    const std::uint64_t d = dim, h = hidden_dim;
    const std::uint64_t per_layer = d * q_dim() + 2 * d * kv_dim() + q_dim() * d + 3 * d * h;
    return layers * per_layer + (with_classifier ? std::uint64_t(vocab) * d : 0);
  }

  // The KV shape the cache holds for this model: (layer, kv, token, kv_head, head_size).
  kvtier::kv_shape kv_shape(kvtier::dtype kv_type) const {
    return kvtier::kv_shape::mha(layers, kv_heads, head_size, kv_type);
  }

  // Throws kvtier::config_error when the fields cannot describe a Llama model.
  void validate() const {
    auto fail = [&](const char* what) { throw kvtier::config_error(std::string("kvtier_engine: model '") + name + "': " + what); };
    if (dim == 0 || hidden_dim == 0 || layers == 0 || heads == 0 || kv_heads == 0 || head_size == 0 || vocab == 0 ||
        seq_len == 0)
      fail("a zero extent");
    if (heads % kv_heads != 0) fail("heads is not a multiple of kv_heads");
    if (head_size % 2 != 0) fail("RoPE needs an even head size");
    if (!(rope_theta > 0.0f)) fail("rope_theta must be positive");
    if (!(norm_eps > 0.0f)) fail("norm_eps must be positive");
  }
};

// Named shapes. Real models' published hyper-parameters; synthetic weights fill them from a seed.
namespace shapes {
// karpathy/llama2.c tinyllamas stories260K (the checkpoint in models/stories260K/).
inline model_config stories260k() {
  return {"stories260K", 64, 172, 5, 8, 4, 8, 512, 512, rope_style::adjacent_pairs, 10000.0f, true, 1e-5f};
}
// A ~100 M-parameter Llama for CPU demos: prefill of a few hundred tokens takes seconds on two cores.
// 12 layers of width 768 (GQA 12/4), SwiGLU 2048, vocab 32,000: 100.1 M parameters, 75.5 M in the layers.
inline model_config cpu_100m() {
  return {"cpu-100m", 768, 2048, 12, 12, 4, 64, 32000, 2048, rope_style::rotate_half, 10000.0f, true, 1e-5f};
}
// Meta Llama-3-8B: 32 layers, 4096, FFN 14336, 32 query heads, 8 KV heads of 128, vocab 128,256.
inline model_config llama3_8b() {
  return {"llama3-8b", 4096, 14336, 32, 32, 8, 128, 128256, 131072, rope_style::rotate_half, 500000.0f, false, 1e-5f};
}
// Qwen2.5-14B-like: 48 layers, 5120, FFN 13824, 40 query heads, 8 KV heads of 128, vocab 152,064.
// (Qwen2.5 adds q/k/v biases; this engine's Llama block has none, hence "like".)
inline model_config qwen25_14b() {
  return {"qwen2.5-14b", 5120, 13824, 48, 40, 8, 128, 152064, 32768, rope_style::rotate_half, 1000000.0f, false, 1e-6f};
}

// A named shape by its name, or config_error listing the names.
inline model_config by_name(std::string_view n) {
  if (n == "stories260K") return stories260k();
  if (n == "cpu-100m") return cpu_100m();
  if (n == "llama3-8b") return llama3_8b();
  if (n == "qwen2.5-14b") return qwen25_14b();
  throw kvtier::config_error("kvtier_engine: unknown shape '" + std::string(n) +
                             "' (stories260K, cpu-100m, llama3-8b, qwen2.5-14b)");
}
}  // namespace shapes

}  // namespace kvtier_engine
