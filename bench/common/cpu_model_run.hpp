#pragma once
// A model on the engine's CPU backend (fp32) over a pool of its own with an identity block table
// (page i of the sequence = slot i): what the quality benches (codecs, truncation, blending) drive
// position by position. Not the serving path — the engine (examples/engine) runs requests through
// kvtier's cache; these benches need direct control of the pool.
#include <cstddef>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "kvtier/core/kv_shape.hpp"
#include "kvtier/core/strong_id.hpp"
#include "kvtier/transfer/views.hpp"
#include "kvtier_engine/cpu/cpu_backend.hpp"
#include "kvtier_engine/sampler.hpp"
#include "kvtier_engine/weights.hpp"

namespace kvtier_bench {

class cpu_model_run {
 public:
  static constexpr std::size_t page_tokens = 16;

  cpu_model_run(const kvtier_engine::model_weights& w, std::size_t slots) : cfg_(w.config()), slots_(slots) {
    const kvtier::kv_shape s = cfg_.kv_shape(kvtier::dtype::fp32);
    mem_.assign(s.bytes_per_token() / sizeof(float) * slots * page_tokens, 0.f);
    view_ = kvtier::transfer::layer_first_view(reinterpret_cast<std::byte*>(mem_.data()), s, slots * page_tokens);
    backend_ = std::make_unique<kvtier_engine::cpu_backend>(cfg_, w, kvtier_engine::kv_pool{view_, page_tokens, slots},
                                                            kvtier_engine::backend_options{});
    for (std::size_t i = 0; i < slots; ++i) table_.push_back(kvtier::device_slot{static_cast<kvtier::device_slot::rep_type>(i)});
  }

  const kvtier_engine::model_config& config() const noexcept { return cfg_; }
  std::size_t slots() const noexcept { return slots_; }
  const kvtier::transfer::layer_first_buffer& pool() const noexcept { return view_; }
  std::span<const kvtier::device_slot> block_table() const noexcept { return table_; }
  kvtier::kv_shape shape() const { return cfg_.kv_shape(kvtier::dtype::fp32); }
  kvtier_engine::cpu_backend& backend() noexcept { return *backend_; }

  // Tokens [start, start + n) with [0, start) already in the pool; the last token's logits.
  std::vector<float> prefill(std::span<const kvtier::token_id> tokens, std::size_t start) {
    std::vector<float> logits(cfg_.vocab);
    auto r = backend_->prefill(kvtier_engine::prefill_chunk{tokens, start, table_}, logits, {});
    if (!r) throw std::runtime_error("prefill failed: " + r.err().message());
    return logits;
  }
  // Rows at arbitrary positions of this sequence, attending over the pool; logits of every row.
  std::vector<float> rows(std::span<const kvtier::token_id> tokens, std::span<const std::size_t> positions) {
    std::vector<kvtier_engine::decode_entry> batch;
    for (std::size_t i = 0; i < tokens.size(); ++i) batch.push_back({tokens[i], positions[i], table_});
    std::vector<float> logits(cfg_.vocab * batch.size());
    auto r = backend_->decode(batch, logits);
    if (!r) throw std::runtime_error("rows failed: " + r.err().message());
    return logits;
  }
  std::vector<float> step(kvtier::token_id t, std::size_t pos) {
    const std::size_t p[] = {pos};
    return rows(std::span<const kvtier::token_id>(&t, 1), p);
  }
  // A greedy continuation of n tokens after logits for position pos - 1.
  std::vector<kvtier::token_id> greedy(std::vector<float> logits, std::size_t pos, std::size_t n) {
    std::vector<kvtier::token_id> out;
    for (std::size_t i = 0; i < n; ++i) {
      out.push_back(kvtier::token_id{int(kvtier_engine::sampler::argmax(logits))});
      if (i + 1 < n) logits = step(out.back(), pos + i);
    }
    return out;
  }

 private:
  kvtier_engine::model_config cfg_;
  std::size_t slots_;
  std::vector<float> mem_;
  kvtier::transfer::layer_first_buffer view_;
  std::unique_ptr<kvtier_engine::cpu_backend> backend_;
  std::vector<kvtier::device_slot> table_;
};

}  // namespace kvtier_bench
