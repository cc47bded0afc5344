#pragma once
// model_weights: a Llama model's weights as host fp32 tensors in llama2.c's order, from a llama2.c
// checkpoint (legacy format, version 0: see models/stories260K/README.md) or synthetic from a seed.
// Synthetic weights may stay unmaterialised (seed only): a GPU backend then generates them on the
// device with synthetic_value(), the same numbers the CPU would hold.
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier_engine/model_config.hpp"
#include "kvtier_engine/synthetic.hpp"

namespace kvtier_engine {

// Rows and columns of one layer's slice of a tensor (or the whole tensor for model-wide ones).
struct tensor_dims {
  std::size_t rows = 0, cols = 0;
  std::size_t size() const noexcept { return rows * cols; }
};
inline tensor_dims dims_of(const model_config& m, tensor_kind k) noexcept {
  switch (k) {
    case tensor_kind::token_embedding: return {m.vocab, m.dim};
    case tensor_kind::attn_norm: return {1, m.dim};
    case tensor_kind::wq: return {m.q_dim(), m.dim};
    case tensor_kind::wk: return {m.kv_dim(), m.dim};
    case tensor_kind::wv: return {m.kv_dim(), m.dim};
    case tensor_kind::wo: return {m.dim, m.q_dim()};
    case tensor_kind::ffn_norm: return {1, m.dim};
    case tensor_kind::w1: return {m.hidden_dim, m.dim};
    case tensor_kind::w2: return {m.dim, m.hidden_dim};
    case tensor_kind::w3: return {m.hidden_dim, m.dim};
    case tensor_kind::final_norm: return {1, m.dim};
    case tensor_kind::classifier: return {m.tied_classifier ? 0 : m.vocab, m.dim};
  }
  return {};
}
inline bool per_layer(tensor_kind k) noexcept {
  return k != tensor_kind::token_embedding && k != tensor_kind::final_norm && k != tensor_kind::classifier;
}

class model_weights {
 public:
  model_weights() = default;

  // Synthetic weights at `m`'s shape from `seed`; materialize=false keeps only the seed.
  static model_weights synthetic(const model_config& m, std::uint64_t seed, bool materialize = true) {
    m.validate();
    model_weights w;
    w.config_ = m;
    w.seed_ = seed;
    if (materialize) w.materialize();
    return w;
  }

  // A llama2.c checkpoint (legacy version 0). RoPE convention adjacent_pairs, theta 10000, eps 1e-5,
  // as run.c computes. Throws config_error for a missing, short or inconsistent file.
  static model_weights load_llama2c(const std::string& path, std::string name = "llama2c") {
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (!f) throw kvtier::config_error("kvtier_engine: cannot open checkpoint " + path);
    std::int32_t h[7];
    if (std::fread(h, sizeof h, 1, f.get()) != 1) throw kvtier::config_error("kvtier_engine: short checkpoint header in " + path);
    for (std::int32_t v : h)
      if (v == 0 || v < -(1 << 24) || v > (1 << 24)) throw kvtier::config_error("kvtier_engine: implausible checkpoint header in " + path);
    model_config m;
    m.name = std::move(name);
    m.dim = std::size_t(h[0]);
    m.hidden_dim = std::size_t(h[1]);
    m.layers = std::size_t(h[2]);
    m.heads = std::size_t(h[3]);
    m.kv_heads = std::size_t(h[4]);
    m.tied_classifier = h[5] > 0;
    m.vocab = std::size_t(h[5] > 0 ? h[5] : -h[5]);
    m.seq_len = std::size_t(h[6]);
    if (h[0] < 0 || h[1] < 0 || h[2] < 0 || h[3] < 0 || h[4] < 0 || h[6] < 0 || m.dim % m.heads != 0)
      throw kvtier::config_error("kvtier_engine: inconsistent checkpoint header in " + path);
    m.head_size = m.dim / m.heads;
    m.rope = rope_style::adjacent_pairs;
    m.rope_theta = 10000.0f;
    m.norm_eps = 1e-5f;
    m.validate();
    model_weights w;
    w.config_ = m;
    for (std::size_t k = 0; k < tensor_kinds; ++k) {
      const auto kind = tensor_kind(k);
      if (kind == tensor_kind::classifier) {
        // Untied: the classifier follows the two RoPE tables (seq_len x head_size / 2 each).
        if (m.tied_classifier) break;
        if (std::fseek(f.get(), long(m.seq_len * m.head_size * sizeof(float)), SEEK_CUR) != 0)
          throw kvtier::config_error("kvtier_engine: short checkpoint " + path);
      }
      auto& t = w.tensors_[k];
      t.resize(w.tensor_size(kind));
      if (!t.empty() && std::fread(t.data(), sizeof(float), t.size(), f.get()) != t.size())
        throw kvtier::config_error("kvtier_engine: short checkpoint " + path);
    }
    return w;
  }

  const model_config& config() const noexcept { return config_; }
  // The seed of synthetic weights (nullopt for a checkpoint).
  std::optional<std::uint64_t> seed() const noexcept { return seed_; }
  bool materialized() const noexcept { return !tensors_[0].empty(); }

  // Fills every tensor from the seed (no-op when already there or loaded from a file).
  void materialize() {
    if (materialized() || !seed_) return;
    for (std::size_t k = 0; k < tensor_kinds; ++k) {
      const auto kind = tensor_kind(k);
      const tensor_dims d = dims_of(config_, kind);
      const float scale = synthetic_scale(kind, d.cols);
      auto& t = tensors_[k];
      t.resize(tensor_size(kind));
      const std::size_t slices = per_layer(kind) ? config_.layers : 1;
      for (std::size_t l = 0; l < slices; ++l) {
        float* out = t.data() + l * d.size();
        for (std::size_t i = 0; i < d.size(); ++i) out[i] = synthetic_value(*seed_, kind, std::uint32_t(l), i, scale);
      }
    }
  }

  // For converters (e.g. a Hugging Face checkpoint's rotate-half layout): the tensors in place, and
  // the RoPE convention they are meant for.
  std::span<float> mutable_tensor(tensor_kind kind) noexcept { return tensors_[std::size_t(kind)]; }
  void set_rope(rope_style r, float theta) {
    config_.rope = r;
    config_.rope_theta = theta;
    config_.validate();
  }

  // Every layer's slice of `kind` back to back; `layer(kind, l)` is one (rows, cols) row-major matrix.
  std::span<const float> tensor(tensor_kind kind) const noexcept { return tensors_[std::size_t(kind)]; }
  std::span<const float> layer(tensor_kind kind, std::size_t l) const noexcept {
    const std::size_t n = dims_of(config_, kind).size();
    return tensor(kind).subspan(per_layer(kind) ? l * n : 0, n);
  }
  // The classifier (vocab, dim): the token embedding when tied.
  std::span<const float> classifier() const noexcept {
    return config_.tied_classifier ? tensor(tensor_kind::token_embedding) : tensor(tensor_kind::classifier);
  }

 private:
  std::size_t tensor_size(tensor_kind kind) const noexcept {
    return dims_of(config_, kind).size() * (per_layer(kind) ? config_.layers : 1);
  }

  model_config config_;
  std::optional<std::uint64_t> seed_;
  std::array<std::vector<float>, tensor_kinds> tensors_;
};

}  // namespace kvtier_engine
