#pragma once
// cpu_backend: the fp32 reference backend, the oracle of the engine's tests. llama2.c's forward
// pass (RMSNorm, RoPE in either convention, grouped-query attention, SwiGLU, tied or separate
// classifier), batched over rows that each carry their own token, position and block table, so a
// prefill chunk and a decode batch are the same computation. K and V live in kvtier's device pool
// (the host stand-in): row of position p = pool row block_table[p / P] * P + p % P.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <string_view>
#include <thread>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier_engine/backend.hpp"
#include "kvtier_engine/cpu/kernels.hpp"
#include "kvtier_engine/cpu/thread_pool.hpp"
#include "kvtier_engine/model_config.hpp"
#include "kvtier_engine/sampler.hpp"
#include "kvtier_engine/weights.hpp"

namespace kvtier_engine {

class cpu_backend {
 public:
  using kvtier_engine_backend = backend_tag;

  // `weights` must outlive the backend when materialised; unmaterialised synthetic weights are
  // expanded into a copy the backend owns. Throws config_error for bf16 (this backend is fp32) or a
  // pool of another shape.
  cpu_backend(const model_config& m, const model_weights& weights, const kv_pool& pool, backend_options opt = {})
      : cfg_(m), opt_(opt), kv_(pool), workers_(threads_for(m, opt)) {
    cfg_.validate();
    if (opt.mode != precision::fp32) throw kvtier::config_error("kvtier_engine: the CPU backend computes in fp32 only");
    detail::check_pool(cfg_, kv_, opt.mode);
    if (weights.materialized()) {
      w_ = &weights;
    } else {
      owned_ = std::make_unique<model_weights>(weights);
      owned_->materialize();
      w_ = owned_.get();
    }
    if (w_->config().dim != cfg_.dim || w_->config().layers != cfg_.layers || w_->config().vocab != cfg_.vocab ||
        w_->config().hidden_dim != cfg_.hidden_dim || w_->config().kv_heads != cfg_.kv_heads)
      throw kvtier::config_error("kvtier_engine: weights of another shape");
    // RoPE frequencies per pair, as run.c computes them: 1 / theta^(2j / head_size).
    inv_freq_.resize(cfg_.head_size / 2);
    for (std::size_t j = 0; j < inv_freq_.size(); ++j)
      inv_freq_[j] = 1.0f / std::pow(cfg_.rope_theta, float(2 * j) / float(cfg_.head_size));
  }

  const model_config& config() const noexcept { return cfg_; }
  precision mode() const noexcept { return opt_.mode; }
  std::string_view name() const noexcept { return "cpu-fp32"; }
  std::size_t threads() const noexcept { return workers_.size(); }

  kvtier::result<void> prefill(const prefill_chunk& c, std::span<float> logits, const layer_hook& before_layer = {}) {
    const std::size_t n = c.tokens.size();
    if (n == 0 || logits.size() < cfg_.vocab) return kvtier::make_error(kvtier::errc::invalid_argument);
    rows_.resize(n);
    for (std::size_t i = 0; i < n; ++i) rows_[i] = {c.tokens[i], c.start + i, c.block_table};
    return forward(rows_, logits, /*last_only=*/true, before_layer);
  }

  // Several sequences' chunks (backend.hpp's prefill_batch): every chunk is checked first, then each
  // runs as prefill() alone, in order, so K/V and logits are those of separate prefill() calls bit
  // for bit (a CPU reads its weights per row anyway: one pass per chunk costs nothing extra here).
  kvtier::result<void> prefill_batch(std::span<const prefill_chunk> chunks, std::span<float> logits,
                                     const layer_hook& before_layer = {}) {
    if (chunks.empty() || logits.size() < chunks.size() * cfg_.vocab) return kvtier::make_error(kvtier::errc::invalid_argument);
    for (const prefill_chunk& c : chunks) {
      if (c.tokens.empty()) return kvtier::make_error(kvtier::errc::invalid_argument);
      for (std::size_t i = 0; i < c.tokens.size(); ++i)
        if (!valid(decode_entry{c.tokens[i], c.start + i, c.block_table})) return kvtier::make_error(kvtier::errc::invalid_argument);
    }
    for (std::size_t i = 0; i < chunks.size(); ++i)
      if (auto e = prefill(chunks[i], logits.subspan(i * cfg_.vocab, cfg_.vocab), before_layer); !e) return e;
    return {};
  }

  kvtier::result<void> decode(std::span<const decode_entry> batch, std::span<float> logits) {
    if (batch.empty() || logits.size() < batch.size() * cfg_.vocab) return kvtier::make_error(kvtier::errc::invalid_argument);
    rows_.assign(batch.begin(), batch.end());
    return forward(rows_, logits, /*last_only=*/false, {});
  }
  // decode() then sampler::argmax of each entry's logits (greedy_decode_backend; on the CPU nothing
  // is saved, the server's device-side sampling path runs the same here).
  kvtier::result<void> decode_greedy(std::span<const decode_entry> batch, std::span<kvtier::token_id> next) {
    if (next.size() < batch.size()) return kvtier::make_error(kvtier::errc::invalid_argument);
    greedy_logits_.resize(batch.size() * cfg_.vocab);
    if (auto e = decode(batch, greedy_logits_); !e) return e;
    for (std::size_t b = 0; b < batch.size(); ++b)
      next[b] = kvtier::token_id{std::int32_t(sampler::argmax(std::span(greedy_logits_).subspan(b * cfg_.vocab, cfg_.vocab)))};
    return {};
  }

  // Partial prefill (CacheBlend, kvtier_engine/blend_prefill.hpp): rows of one sequence at any
  // positions, the rest of the sequence's KV already in the pool. On each layer the active rows'
  // K/V are computed and written, then `after_kv(l, active)` may drop rows from `active` (indices
  // into `rows`, ascending; the last row must stay): dropped rows skip attention and FFN from layer l
  // on and their KV on later layers stays what the pool holds. The last row's logits. With no row
  // ever dropped this is prefill() of the same rows.
  kvtier::result<void> prefill_rows(std::span<const decode_entry> rows, std::span<float> logits, const layer_hook& before_layer,
                                    const row_filter& after_kv) {
    if (rows.empty() || logits.size() < cfg_.vocab) return kvtier::make_error(kvtier::errc::invalid_argument);
    rows_.assign(rows.begin(), rows.end());
    return forward(rows_, logits, /*last_only=*/true, before_layer, after_kv);
  }
  // Inside after_kv: the active rows' queries of that layer after RoPE, (row, head, head_size).
  std::span<const float> queries(std::size_t rows) const noexcept { return {q_.data(), rows * cfg_.q_dim()}; }

 private:
  static std::size_t threads_for(const model_config& m, const backend_options& o) {
    if (o.threads) return o.threads;
    if (m.dim < 256) return 1;  // tiny models: a thread hand-off costs more than the work
    return std::max<std::size_t>(1, std::thread::hardware_concurrency());
  }

  // What forward() checks of every row: its position below seq_len, a block table covering it with
  // slots in the pool, its token in the vocabulary.
  bool valid(const decode_entry& r) const noexcept {
    const std::size_t P = kv_.page_tokens;
    if (r.position >= cfg_.seq_len || r.block_table.size() <= r.position / P) return false;
    if (r.token.value() < 0 || std::size_t(r.token.value()) >= cfg_.vocab) return false;
    for (std::size_t p = 0; p <= r.position / P; ++p)
      if (r.block_table[p].value() >= kv_.slots) return false;
    return true;
  }

  float* kv_row(std::size_t layer, std::size_t kv, const decode_entry& r) const noexcept {
    const std::size_t P = kv_.page_tokens;
    const std::size_t slot = r.block_table[r.position / P].value();
    return reinterpret_cast<float*>(kv_.view.row(layer, kv, slot * P + r.position % P, 0));
  }
  // out (T, rows) = X (T, cols) · W^T, rows split over the threads.
  void matmul(std::span<const float> W, const float* X, float* out, std::size_t T, std::size_t rows, std::size_t cols) {
    workers_.parallel_for((rows + 3) / 4, [&](std::size_t b, std::size_t e) {
      cpu::detail::matmul_rows(W.data(), X, out, T, cols, b * 4, std::min(rows, e * 4), rows);
    });
  }

  void rope(float* v, std::size_t heads, std::size_t pos) const noexcept {
    const std::size_t hs = cfg_.head_size, half = hs / 2;
    for (std::size_t h = 0; h < heads; ++h) {
      float* x = v + h * hs;
      for (std::size_t j = 0; j < half; ++j) {
        const float a = float(pos) * inv_freq_[j];
        const float fr = std::cos(a), fi = std::sin(a);
        const std::size_t i0 = cfg_.rope == rope_style::adjacent_pairs ? 2 * j : j;
        const std::size_t i1 = cfg_.rope == rope_style::adjacent_pairs ? 2 * j + 1 : j + half;
        const float v0 = x[i0], v1 = x[i1];
        x[i0] = v0 * fr - v1 * fi;
        x[i1] = v0 * fi + v1 * fr;
      }
    }
  }

  kvtier::result<void> forward(std::vector<decode_entry>& rows, std::span<float> logits, bool last_only,
                               const layer_hook& before_layer, const row_filter& after_kv = {}) {
    std::size_t T = rows.size();
    const std::size_t d = cfg_.dim, qd = cfg_.q_dim(), kvd = cfg_.kv_dim(), hd = cfg_.hidden_dim;
    for (const auto& r : rows)
      if (!valid(r)) return kvtier::make_error(kvtier::errc::invalid_argument);
    x_.resize(T * d), xb_.resize(T * std::max(d, qd)), q_.resize(T * qd), k_.resize(T * kvd), v_.resize(T * kvd);
    h1_.resize(T * hd), h3_.resize(T * hd), xo_.resize(T * d);
    const auto emb = w_->tensor(tensor_kind::token_embedding);
    for (std::size_t t = 0; t < T; ++t) std::copy_n(emb.data() + std::size_t(rows[t].token.value()) * d, d, x_.data() + t * d);
    std::vector<std::size_t> active, kept;
    if (after_kv) {
      active.resize(T);
      for (std::size_t t = 0; t < T; ++t) active[t] = t;
    }

    for (std::size_t l = 0, T0 = T; l < cfg_.layers; ++l) {
      const float* an = w_->layer(tensor_kind::attn_norm, l).data();
      for (std::size_t t = 0; t < T; ++t) cpu::detail::rmsnorm(xb_.data() + t * d, x_.data() + t * d, an, d, cfg_.norm_eps);
      matmul(w_->layer(tensor_kind::wq, l), xb_.data(), q_.data(), T, qd, d);
      matmul(w_->layer(tensor_kind::wk, l), xb_.data(), k_.data(), T, kvd, d);
      matmul(w_->layer(tensor_kind::wv, l), xb_.data(), v_.data(), T, kvd, d);
      if (before_layer) before_layer(l);  // the cached prefix's layer l is in the pool from here on
      for (std::size_t t = 0; t < T; ++t) {
        rope(q_.data() + t * qd, cfg_.heads, rows[t].position);
        rope(k_.data() + t * kvd, cfg_.kv_heads, rows[t].position);
        std::copy_n(k_.data() + t * kvd, kvd, kv_row(l, 0, rows[t]));
        std::copy_n(v_.data() + t * kvd, kvd, kv_row(l, 1, rows[t]));
      }
      if (after_kv) {  // rows may leave: compact rows, x_ and q_ to the ones that stay
        kept = active;
        after_kv(l, kept);
        std::size_t j = 0;
        for (std::size_t i = 0; i < kept.size(); ++i) {
          while (j < active.size() && active[j] != kept[i]) ++j;
          if (j == active.size()) return kvtier::make_error(kvtier::errc::invalid_argument);  // not an active row, or not ascending
          if (j != i) {
            rows[i] = rows[j];
            std::copy_n(x_.data() + j * d, d, x_.data() + i * d);
            std::copy_n(q_.data() + j * qd, qd, q_.data() + i * qd);
          }
          ++j;
        }
        if (kept.empty() || kept.back() != T0 - 1) return kvtier::make_error(kvtier::errc::invalid_argument);  // the last row stays
        active.swap(kept);
        T = active.size();
        rows.resize(T);
      }
      attention(rows, l);  // q_ -> xb_ (T, q_dim)
      matmul(w_->layer(tensor_kind::wo, l), xb_.data(), xo_.data(), T, d, qd);
      for (std::size_t i = 0; i < T * d; ++i) x_[i] += xo_[i];

      const float* fn = w_->layer(tensor_kind::ffn_norm, l).data();
      for (std::size_t t = 0; t < T; ++t) cpu::detail::rmsnorm(xb_.data() + t * d, x_.data() + t * d, fn, d, cfg_.norm_eps);
      matmul(w_->layer(tensor_kind::w1, l), xb_.data(), h1_.data(), T, hd, d);
      matmul(w_->layer(tensor_kind::w3, l), xb_.data(), h3_.data(), T, hd, d);
      for (std::size_t i = 0; i < T * hd; ++i) {
        float val = h1_[i];
        val *= 1.0f / (1.0f + std::exp(-val));  // SiLU
        h1_[i] = val * h3_[i];
      }
      matmul(w_->layer(tensor_kind::w2, l), h1_.data(), xo_.data(), T, d, hd);
      for (std::size_t i = 0; i < T * d; ++i) x_[i] += xo_[i];
    }

    const float* fin = w_->tensor(tensor_kind::final_norm).data();
    const std::size_t first = last_only ? T - 1 : 0;
    for (std::size_t t = first; t < T; ++t) cpu::detail::rmsnorm(xb_.data() + t * d, x_.data() + t * d, fin, d, cfg_.norm_eps);
    matmul(w_->classifier(), xb_.data() + first * d, logits.data(), T - first, cfg_.vocab, d);
    return {};
  }

  // Causal GQA over the pool: query row t (position p) attends to positions [0, p] of its sequence.
  // Work items are (row, KV head): the group of query heads sharing a KV head reads each cached K/V
  // row once, walking the block table page by page. Per (query head, position) the arithmetic is
  // run.c's: a sequential dot product divided by sqrt(head_size), softmax, weighted sum in order.
  void attention(std::span<const decode_entry> rows, std::size_t l) {
    const std::size_t T = rows.size(), qd = cfg_.q_dim(), hs = cfg_.head_size, KVH = cfg_.kv_heads, G = cfg_.group();
    const std::size_t P = kv_.page_tokens, stride = kv_.view.token_stride_bytes() / sizeof(float);
    const float scale = std::sqrt(float(hs));  // run.c divides each score by it
    workers_.parallel_for(T * KVH, [&](std::size_t b, std::size_t e) {
      std::vector<float> att;
      for (std::size_t item = b; item < e; ++item) {
        const std::size_t t = item / KVH, kvh = item % KVH;
        const decode_entry& r = rows[t];
        const std::size_t n = r.position + 1;
        att.resize(G * n);
        const float* q = q_.data() + t * qd + kvh * G * hs;  // (G, hs): the group's query heads
        for (std::size_t p0 = 0; p0 < n; p0 += P) {
          const std::size_t slot = r.block_table[p0 / P].value();
          const float* k = reinterpret_cast<const float*>(kv_.view.row(l, 0, slot * P, kvh));
          const std::size_t p1 = std::min(n, p0 + P);
          std::size_t p = p0;
          // Eight positions at a time: eight independent sequential dot products in flight.
          for (; p + 8 <= p1; p += 8, k += 8 * stride)
            for (std::size_t g = 0; g < G; ++g) {
              const float* qg = q + g * hs;
              float s[8] = {};
              for (std::size_t i = 0; i < hs; ++i)
                for (std::size_t j = 0; j < 8; ++j) s[j] += qg[i] * k[j * stride + i];
              for (std::size_t j = 0; j < 8; ++j) att[g * n + p + j] = s[j] / scale;
            }
          for (; p < p1; ++p, k += stride)
            for (std::size_t g = 0; g < G; ++g) {
              const float* qg = q + g * hs;
              float s = 0.0f;
              for (std::size_t i = 0; i < hs; ++i) s += qg[i] * k[i];
              att[g * n + p] = s / scale;
            }
        }
        for (std::size_t g = 0; g < G; ++g) cpu::detail::softmax(att.data() + g * n, n);
        float* out = xb_.data() + t * qd + kvh * G * hs;
        std::fill_n(out, G * hs, 0.0f);
        for (std::size_t p0 = 0; p0 < n; p0 += P) {
          const std::size_t slot = r.block_table[p0 / P].value();
          const float* v = reinterpret_cast<const float*>(kv_.view.row(l, 1, slot * P, kvh));
          for (std::size_t p = p0; p < std::min(n, p0 + P); ++p, v += stride)
            for (std::size_t g = 0; g < G; ++g) {
              float* og = out + g * hs;
              const float a = att[g * n + p];
              for (std::size_t i = 0; i < hs; ++i) og[i] += a * v[i];
            }
        }
      }
    });
  }

  model_config cfg_;
  backend_options opt_;
  kv_pool kv_;
  cpu::thread_pool workers_;
  const model_weights* w_ = nullptr;
  std::unique_ptr<model_weights> owned_;
  std::vector<float> inv_freq_;
  std::vector<decode_entry> rows_;
  std::vector<float> greedy_logits_;  // decode_greedy
  std::vector<float> x_, xb_, q_, k_, v_, h1_, h3_, xo_;
};

static_assert(compute_backend<cpu_backend>);
static_assert(batched_prefill_backend<cpu_backend>);
static_assert(greedy_decode_backend<cpu_backend>);

}  // namespace kvtier_engine
