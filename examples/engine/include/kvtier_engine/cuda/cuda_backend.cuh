#pragma once
// cuda_backend: the compute_backend of backend.hpp on one CUDA GPU. bf16 mode: bf16 weights,
// activations and KV, fp32 accumulation and an fp32 residual stream; fp32 mode: everything fp32
// (cuBLAS without TF32), the exact mode for stories260K. The KV lives in kvtier's device pool and
// is addressed through the block tables the engine passes; nothing is copied to a private cache.
// Per layer: RMSNorm → QKV GEMM → RoPE + K/V store into the pool → attention (flash_prefill for
// bf16 head_dim 128 prefill, paged_attention otherwise) → O GEMM (+= residual) → RMSNorm → gate|up
// GEMM → SwiGLU → down GEMM (+= residual). prefill_rows runs rows at any positions (partial prefill);
// prefill_batch runs several sequences' chunks as one forward over all their rows (bf16 flash).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <vector>

#include "kvtier_engine/backend.hpp"
#include "kvtier_engine/cuda/common.cuh"
#include "kvtier_engine/cuda/flash_prefill.cuh"
#include "kvtier_engine/cuda/invariant_gemm.cuh"
#include "kvtier_engine/cuda/kernels.cuh"
#include "kvtier_engine/cuda/linear.cuh"
#include "kvtier_engine/cuda/paged_attention.cuh"
#include "kvtier_engine/cuda/row_filter.cuh"

namespace kvtier_engine::cuda {

struct cuda_options {
  int max_chunk_rows = 4096;  // rows one prefill pass holds; longer chunks run in page-aligned pieces
  int max_batch = 64;         // decode sequences per step
  int max_splits = 16;        // split-KV blocks per (row, kv head) in paged_attention (batch_invariant off)
  // bf16: every row's result independent of the batch it runs in (decode batch size, prefill chunk
  // length and start, cached or computed prefix): GEMMs through one checked cuBLASLt algorithm per
  // shape (invariant_gemm.cuh), attention split over keys at fixed absolute positions (every
  // prefill_split_keys keys for prefill, decode_split_keys for decode) instead of by occupancy.
  // Off: cuBLAS's heuristics and occupancy-driven splits (faster at some shapes, batch-dependent).
  bool batch_invariant = true;
  int prefill_split_keys = 4096;  // a multiple of the flash kernel's 64-key tile
  int decode_split_keys = 512;
};

namespace detail {

template <class T>
class cuda_model {
 public:
  cuda_model(const model_config& m, const model_weights& w, const kv_pool& pool, cuda_options o)
      : m_(m), o_(o), stream_(make_stream()), blas_(stream_) {
    const std::size_t P = pool.page_tokens;
    if (o_.max_chunk_rows < int(P)) o_.max_chunk_rows = int(P);
    o_.max_chunk_rows -= o_.max_chunk_rows % int(P);
    max_pages_ = int((m.seq_len + P - 1) / P);
    kv_.resize(m.layers);
    for (std::size_t l = 0; l < m.layers; ++l) {
      kv_[l].k_plane = pool.view.planes.plane(l, 0);
      kv_[l].v_plane = pool.view.planes.plane(l, 1);
      kv_[l].slot_stride = P * m.kv_dim() * sizeof(T);
      kv_[l].page_tokens = int(P);
      kv_[l].kv_heads = int(m.kv_heads);
      kv_[l].head_dim = int(m.head_size);
    }
    upload_weights(w);
    invariant_ = std::is_same_v<T, __nv_bfloat16> && o_.batch_invariant;
    if (invariant_) {
      if (o_.prefill_split_keys < 64 || o_.prefill_split_keys % 64 != 0 || o_.decode_split_keys < 1)
        throw kvtier::config_error("kvtier_engine: cuda_backend: split keys must be positive (prefill: a multiple of 64)");
      plan_gemms();
    }
    const std::size_t R = std::max<std::size_t>(o_.max_chunk_rows, o_.max_batch), qkv = m.q_dim() + 2 * m.kv_dim();
    x_ = device_buffer<float>(R * m.dim);
    xb_ = device_buffer<T>(R * m.dim);
    qkv_ = device_buffer<T>(R * qkv);
    q_ = device_buffer<T>(R * m.q_dim());
    att_ = device_buffer<T>(R * m.q_dim());
    gu_ = device_buffer<T>(R * 2 * m.hidden_dim);
    hb_ = device_buffer<T>(R * m.hidden_dim);
    logits_ = device_buffer<float>(std::size_t(o_.max_batch) * m.vocab);
    sampled_ = device_buffer<std::int32_t>(std::size_t(o_.max_batch));
    tokens_ = device_buffer<std::int32_t>(R);
    positions_ = device_buffer<std::int32_t>(R);
    row_seq_ = device_buffer<std::int32_t>(R);
    row_keys_ = device_buffer<std::int32_t>(R);
    tables_ = device_buffer<std::int32_t>(std::size_t(o_.max_batch) * max_pages_);
    const int decode_splits = invariant_ ? int((m.seq_len + o_.decode_split_keys - 1) / o_.decode_split_keys) : o_.max_splits;
    workspace_ = device_buffer<float>(paged_attention_workspace(o_.max_batch, int(m.heads), int(m.head_size), decode_splits));
    host_ints_.resize(4 * R + std::size_t(o_.max_batch) * max_pages_);
    int dev = 0;
    check(cudaGetDevice(&dev), "cudaGetDevice");
    check(cudaDeviceGetAttribute(&sms_, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  }
  cuda_model(const cuda_model&) = delete;
  cuda_model& operator=(const cuda_model&) = delete;
  ~cuda_model() { (void)cudaStreamDestroy(stream_); }

  cudaStream_t stream() const noexcept { return stream_; }
  // Whether every row's result is independent of the batch (bf16 with batch_invariant and every
  // GEMM shape's algorithm passing its check; fp32 mode is not claimed).
  bool batch_invariant() const noexcept { return invariant_ && gemm_ && gemm_->invariant(); }

  kvtier::result<void> prefill(const prefill_chunk& c, std::span<float> logits, const layer_hook& before_layer) {
    const std::size_t n = c.tokens.size(), P = kv_[0].page_tokens;
    if (n == 0 || c.start + n > m_.seq_len || c.block_table.size() < (c.start + n + P - 1) / P ||
        logits.size() < m_.vocab)
      return kvtier::make_error(kvtier::errc::invalid_argument);
    std::int32_t* table = host_ints_.data();
    for (std::size_t i = 0; i < (c.start + n + P - 1) / P; ++i) table[i] = std::int32_t(c.block_table[i].value());
    tables_.upload(table, (c.start + n + P - 1) / P);
    std::size_t rows = 0;
    for (std::size_t done = 0; done < n;) {
      rows = std::min<std::size_t>(n - done, o_.max_chunk_rows);
      std::int32_t* tok = host_ints_.data();
      for (std::size_t i = 0; i < rows; ++i) {
        tok[i] = c.tokens[done + i].value();
        tok[rows + i] = std::int32_t(c.start + done + i);
      }
      check(cudaMemcpyAsync(tokens_.data(), tok, rows * sizeof(std::int32_t), cudaMemcpyHostToDevice, stream_), "H2D");
      check(cudaMemcpyAsync(positions_.data(), tok + rows, rows * sizeof(std::int32_t), cudaMemcpyHostToDevice, stream_),
            "H2D");
      forward(int(rows), int(c.start + done), nullptr, nullptr, done == 0 ? &before_layer : nullptr);
      check(cudaStreamSynchronize(stream_), "prefill");  // the host staging is reused by the next piece
      done += rows;
    }
    head(int(rows) - 1, 1, logits);  // the last row of the last piece
    return {};
  }

  // Several sequences' chunks (see cuda_backend::prefill_batch): greedy groups in order of at most
  // max_chunk_rows rows and max_batch chunks, each one forward; a group of one chunk (a chunk longer
  // than max_chunk_rows, or fp32 / no flash kernel: every chunk) is prefill() of that chunk.
  kvtier::result<void> prefill_batch(std::span<const prefill_chunk> chunks, std::span<float> logits,
                                     const layer_hook& before_layer) {
    const std::size_t P = kv_[0].page_tokens, V = m_.vocab, R = std::size_t(o_.max_chunk_rows);
    if (chunks.empty() || logits.size() < chunks.size() * V) return kvtier::make_error(kvtier::errc::invalid_argument);
    for (const prefill_chunk& c : chunks) {  // prefill()'s checks, all before anything runs
      const std::size_t n = c.tokens.size();
      if (n == 0 || c.start + n > m_.seq_len || c.block_table.size() < (c.start + n + P - 1) / P)
        return kvtier::make_error(kvtier::errc::invalid_argument);
    }
    bool varlen = false;
    if constexpr (std::is_same_v<T, __nv_bfloat16>) varlen = flash_prefill_supports(kv_[0]);
    for (std::size_t first = 0; first < chunks.size();) {
      std::size_t last = first, rows = 0;  // the group: chunks [first, last)
      while (varlen && last < chunks.size() && last - first < std::size_t(o_.max_batch) && rows + chunks[last].tokens.size() <= R)
        rows += chunks[last++].tokens.size();
      if (last - first <= 1) {
        if (auto e = prefill(chunks[first], logits.subspan(first * V, V), before_layer); !e) return e;
        ++first;
        continue;
      }
      forward_batch(chunks.subspan(first, last - first), rows, logits.subspan(first * V, (last - first) * V), before_layer);
      first = last;
    }
    return {};
  }

  // Rows of one sequence at ascending positions (see cuda_backend::prefill_rows).
  kvtier::result<void> prefill_rows(std::span<const decode_entry> rows, std::span<float> logits, const layer_hook& before_layer,
                                    const row_filter& after_kv) {
    const std::size_t n = rows.size(), P = kv_[0].page_tokens;
    if (n == 0 || n > std::size_t(o_.max_chunk_rows) || logits.size() < m_.vocab)
      return kvtier::make_error(kvtier::errc::invalid_argument);
    const std::span<const kvtier::device_slot> table = rows.back().block_table;
    const std::size_t last = rows.back().position, pages = last / P + 1;
    if (last >= m_.seq_len || table.size() < pages) return kvtier::make_error(kvtier::errc::invalid_argument);
    std::int32_t* h = host_ints_.data();  // tokens, positions, key counts, then the block table
    for (std::size_t i = 0; i < n; ++i) {
      const decode_entry& r = rows[i];
      if ((i > 0 && r.position <= rows[i - 1].position) || r.block_table.data() != table.data() || r.token.value() < 0 ||
          std::size_t(r.token.value()) >= m_.vocab)
        return kvtier::make_error(kvtier::errc::invalid_argument);
      h[i] = r.token.value();
      h[n + i] = std::int32_t(r.position);
      h[2 * n + i] = std::int32_t(r.position + 1);
    }
    for (std::size_t i = 0; i < pages; ++i) h[3 * n + i] = std::int32_t(table[i].value());
    tables_.upload(h + 3 * n, pages);
    check(cudaMemcpyAsync(tokens_.data(), h, n * sizeof(std::int32_t), cudaMemcpyHostToDevice, stream_), "H2D");
    check(cudaMemcpyAsync(positions_.data(), h + n, n * sizeof(std::int32_t), cudaMemcpyHostToDevice, stream_), "H2D");
    check(cudaMemcpyAsync(row_keys_.data(), h + 2 * n, n * sizeof(std::int32_t), cudaMemcpyHostToDevice, stream_), "H2D");
    narrow_.start(n);
    try {
      const int left = forward(int(n), int(last + 1), nullptr, row_keys_.data(), &before_layer, &after_kv);
      head(left - 1, 1, logits);
    } catch (const std::invalid_argument&) {  // a bad filter: nothing more was queued
      check(cudaStreamSynchronize(stream_), "prefill_rows");
      return kvtier::make_error(kvtier::errc::invalid_argument);
    }
    return {};
  }

  kvtier::result<void> decode(std::span<const decode_entry> batch, std::span<float> logits) {
    if (logits.size() < batch.size() * m_.vocab) return kvtier::make_error(kvtier::errc::invalid_argument);
    if (auto e = decode_forward(batch); !e) return e;
    head(0, int(batch.size()), logits);
    return {};
  }

  // decode() then greedy sampling on the device (the first index of the largest logit, as
  // sampler::argmax): only the B tokens come back, not B × vocab logits.
  kvtier::result<void> decode_greedy(std::span<const decode_entry> batch, std::span<kvtier::token_id> next) {
    const int B = int(batch.size()), D = int(m_.dim), V = int(m_.vocab);
    if (next.size() < batch.size()) return kvtier::make_error(kvtier::errc::invalid_argument);
    if (auto e = decode_forward(batch); !e) return e;
    rmsnorm(x_.data(), final_norm_.data(), xb_.data(), B, D, m_.norm_eps, stream_);
    classifier(B);
    argmax(logits_.data(), B, V, sampled_.data(), stream_);
    check(cudaMemcpyAsync(host_ints_.data(), sampled_.data(), std::size_t(B) * sizeof(std::int32_t), cudaMemcpyDeviceToHost,
                          stream_), "tokens D2H");
    check(cudaStreamSynchronize(stream_), "decode_greedy");
    for (int b = 0; b < B; ++b) next[std::size_t(b)] = kvtier::token_id{host_ints_[std::size_t(b)]};
    return {};
  }

 private:
  // A decode step's forward pass: the rows' residuals end in x_ (rows 0 .. B-1).
  kvtier::result<void> decode_forward(std::span<const decode_entry> batch) {
    const std::size_t B = batch.size(), P = kv_[0].page_tokens;
    if (B == 0 || B > std::size_t(o_.max_batch)) return kvtier::make_error(kvtier::errc::invalid_argument);
    std::int32_t* h = host_ints_.data();
    std::int32_t* table = h + 4 * B;
    int max_keys = 0;
    for (std::size_t b = 0; b < B; ++b) {
      const decode_entry& e = batch[b];
      if (e.position >= m_.seq_len || e.block_table.size() < e.position / P + 1)
        return kvtier::make_error(kvtier::errc::invalid_argument);
      h[b] = e.token.value();
      h[B + b] = std::int32_t(e.position);
      h[2 * B + b] = std::int32_t(b);
      h[3 * B + b] = std::int32_t(e.position + 1);
      max_keys = std::max(max_keys, int(e.position + 1));
      for (std::size_t i = 0; i <= e.position / P; ++i) table[b * max_pages_ + i] = std::int32_t(e.block_table[i].value());
    }
    check(cudaMemcpyAsync(tokens_.data(), h, B * sizeof(std::int32_t), cudaMemcpyHostToDevice, stream_), "H2D");
    check(cudaMemcpyAsync(positions_.data(), h + B, B * sizeof(std::int32_t), cudaMemcpyHostToDevice, stream_), "H2D");
    check(cudaMemcpyAsync(row_seq_.data(), h + 2 * B, B * sizeof(std::int32_t), cudaMemcpyHostToDevice, stream_), "H2D");
    check(cudaMemcpyAsync(row_keys_.data(), h + 3 * B, B * sizeof(std::int32_t), cudaMemcpyHostToDevice, stream_), "H2D");
    check(cudaMemcpyAsync(tables_.data(), table, B * max_pages_ * sizeof(std::int32_t), cudaMemcpyHostToDevice, stream_),
          "H2D");
    forward(int(B), max_keys, row_seq_.data(), row_keys_.data(), nullptr);
    return {};
  }

  static cudaStream_t make_stream() {
    cudaStream_t s = nullptr;
    check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
    return s;
  }

  // One forward over the rows of chunks of different sequences (at most max_chunk_rows rows and
  // max_batch chunks): tokens, positions and row → chunk uploaded once, chunk i's block table at row
  // i of tables_ (max_pages_ apart), attention through flash_prefill_varlen over query tiles cut per
  // chunk as prefill() cuts one chunk; then each chunk's last row through the head.
  void forward_batch(std::span<const prefill_chunk> chunks, std::size_t rows, std::span<float> logits,
                     const layer_hook& before_layer) {
    const std::size_t C = chunks.size(), fr = std::size_t(detail::fa_rows), P = kv_[0].page_tokens;
    std::size_t tiles = 0;
    for (const prefill_chunk& c : chunks) tiles += (c.tokens.size() + fr - 1) / fr;
    // Host staging: (tokens, positions, row → chunk) per row, 4 ints a tile, C block-table rows.
    batch_host_.assign(3 * rows + 4 * tiles + C * std::size_t(max_pages_), 0);
    std::int32_t* tok = batch_host_.data();
    std::int32_t* pos = tok + rows;
    std::int32_t* seq = pos + rows;
    std::int32_t* const tiles0 = seq + rows;
    std::int32_t* table = tiles0 + 4 * tiles;
    std::int32_t* tile = tiles0;
    int max_keys = 0;
    last_rows_.clear();
    for (std::size_t i = 0, r = 0; i < C; ++i) {
      const prefill_chunk& c = chunks[i];
      const std::size_t n = c.tokens.size();
      for (std::size_t j = 0; j < (c.start + n + P - 1) / P; ++j) table[i * max_pages_ + j] = std::int32_t(c.block_table[j].value());
      for (std::size_t q = 0; q < n; q += fr, tile += 4) {  // query tiles from the chunk's first row
        tile[0] = std::int32_t(r + q);
        tile[1] = std::int32_t(std::min(fr, n - q));
        tile[2] = std::int32_t(c.start + q);
        tile[3] = std::int32_t(i);
      }
      for (std::size_t j = 0; j < n; ++j, ++r) {
        tok[r] = c.tokens[j].value();
        pos[r] = std::int32_t(c.start + j);
        seq[r] = std::int32_t(i);
      }
      last_rows_.push_back(int(r) - 1);
      max_keys = std::max(max_keys, int(c.start + n));
    }
    if (q_tiles_.size() < 4 * tiles) q_tiles_ = device_buffer<std::int32_t>(4 * tiles);  // grows once per new size
    const auto h2d = [&](std::int32_t* dst, const std::int32_t* src, std::size_t n) {
      check(cudaMemcpyAsync(dst, src, n * sizeof(std::int32_t), cudaMemcpyHostToDevice, stream_), "H2D");
    };
    h2d(tokens_.data(), tok, rows);
    h2d(positions_.data(), pos, rows);
    h2d(row_seq_.data(), seq, rows);
    h2d(q_tiles_.data(), tiles0, 4 * tiles);
    h2d(tables_.data(), table, C * std::size_t(max_pages_));
    forward(int(rows), max_keys, row_seq_.data(), nullptr, &before_layer, nullptr, int(tiles));
    const int D = int(m_.dim);
    for (std::size_t i = 0; i < C; ++i)  // row by row: each chunk's last row, as prefill()'s head norms it
      rmsnorm(x_.data() + std::size_t(last_rows_[i]) * D, final_norm_.data(), xb_.data() + i * D, 1, D, m_.norm_eps, stream_);
    classify(int(C), logits);
  }

  // Rows of a prefill (row_seq and row_keys null: sequence 0 at positions start + row; keys_or_start =
  // start), of a decode step (row r: sequence r, keys row_keys[r]; keys_or_start = the most keys of a
  // row) or of prefill_rows (row_seq null, row_keys non-null: sequence 0 at positions_[row], keys
  // row_keys_[row]; keys_or_start = the last row's position + 1; `filter` may drop rows after each
  // layer's K/V). Returns the rows left at the end.
  int forward(int rows, int keys_or_start, const std::int32_t* row_seq, const std::int32_t* row_keys,
              const layer_hook* before_layer, const row_filter* filter = nullptr, int varlen_tiles = 0) {
    const int D = int(m_.dim), H = int(m_.hidden_dim), qd = int(m_.q_dim()), qkv = qd + 2 * int(m_.kv_dim());
    // prefill_batch (varlen_tiles > 0, staged in q_tiles_): rows of several sequences (row_seq;
    // keys_or_start = the most keys of a row), the prefill GEMMs and flash_prefill_varlen.
    const bool varlen = varlen_tiles > 0;
    const bool decode = row_seq != nullptr && !varlen, positional = !decode && row_keys != nullptr;
    phase_ = decode ? invariant_gemm::phase::decode : invariant_gemm::phase::prefill;  // the GEMMs' algorithm set
    embedding(tokens_.data(), rows, emb_.data(), x_.data(), D, stream_);
    for (std::size_t l = 0; l < m_.layers; ++l) {
      if (before_layer != nullptr && *before_layer) (*before_layer)(l);
      paged_kv_layer<T> kv = kv_[l];
      kv.block_tables = tables_.data();
      kv.table_stride = decode || varlen ? max_pages_ : 0;
      rmsnorm(x_.data(), attn_norm_.data() + l * D, xb_.data(), rows, D, m_.norm_eps, stream_);
      gemm(xb_.data(), wqkv_[l].data(), qkv_.data(), rows, D, qkv, false);
      rope_store(qkv_.data(), q_.data(), kv, positions_.data(), row_seq, rows, int(m_.heads), m_.rope_theta, m_.rope,
                 stream_);
      if (filter != nullptr && *filter)
        rows = narrow_.apply(l, rows, *filter, x_, q_, positions_, row_keys_, D, qd, stream_);
      attention_rows<T> a;
      a.q = q_.data();
      a.out = att_.data();
      a.rows = rows;
      a.q_heads = int(m_.heads);
      a.row_seq = row_seq;
      a.row_keys = positional ? row_keys_.data() : row_keys;  // after narrow: the gathered rows' counts
      a.row_pos = positional ? positions_.data() : nullptr;
      a.causal_start = decode || positional ? 0 : keys_or_start;
      a.max_keys = decode || positional ? keys_or_start : keys_or_start + rows;
      a.scale = 1.0f / std::sqrt(float(m_.head_size));
      if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        if (varlen) attend_flash(a, kv, keys_or_start, varlen_tiles);
        else if (!decode && flash_prefill_supports(kv)) attend_flash(a, kv, positional ? a.max_keys : a.causal_start + a.rows, 0);
        else attend_paged(a, kv, decode);
      } else {
        attend_paged(a, kv, decode);
      }
      gemm(att_.data(), wo_[l].data(), x_.data(), rows, qd, D, true);
      rmsnorm(x_.data(), ffn_norm_.data() + l * D, xb_.data(), rows, D, m_.norm_eps, stream_);
      gemm(xb_.data(), w13_[l].data(), gu_.data(), rows, D, 2 * H, false);
      swiglu(gu_.data(), hb_.data(), rows, H, stream_);
      gemm(hb_.data(), w2_[l].data(), x_.data(), rows, H, D, true);
    }
    return rows;
  }

  // Flash attention of one prefill chunk (varlen_tiles 0) or of a prefill_batch group (the staged
  // q_tiles_), `keys` the most keys a row sees. Batch-invariant: key splits at fixed absolute
  // positions (every prefill_split_keys keys whatever the chunk), merged in split order; a row in
  // one split only gets the same value through the merge as without it (weight exp2(0) = 1, empty
  // splits add exact zeros). Otherwise as flash_prefill_splits: fill an under-filled GPU.
  void attend_flash(const attention_rows<T>& a, const paged_kv_layer<T>& kv, int keys, int varlen_tiles) {
    const int tiles_per_split = invariant_ ? o_.prefill_split_keys / 64 : 0;
    const int q_tiles = varlen_tiles > 0 ? varlen_tiles : (a.rows + detail::fa_rows - 1) / detail::fa_rows;
    const int splits = invariant_ ? (keys + o_.prefill_split_keys - 1) / o_.prefill_split_keys
                                  : detail::flash_splits_for(a.q_heads * q_tiles, keys, sms_, o_.max_splits);
    const std::size_t need = splits > 1 ? paged_attention_workspace(a.rows, a.q_heads, kv.head_dim, splits) : 0;
    if (need > prefill_ws_.size()) prefill_ws_ = device_buffer<float>(need);  // grows once per new shape
    if (varlen_tiles > 0)
      flash_prefill_varlen(a, kv, reinterpret_cast<const detail::flash_tile*>(q_tiles_.data()), varlen_tiles, keys, stream_,
                           splits, prefill_ws_.data(), tiles_per_split);
    else
      flash_prefill(a, kv, stream_, splits, prefill_ws_.data(), tiles_per_split);
  }

  void attend_paged(const attention_rows<T>& a, const paged_kv_layer<T>& kv, bool decode) {
    if (decode && invariant_) {  // every row's keys split at multiples of decode_split_keys
      const int splits = (a.max_keys + o_.decode_split_keys - 1) / o_.decode_split_keys;
      paged_attention(a, kv, splits, workspace_.data(), stream_, o_.decode_split_keys);
      return;
    }
    const int splits = decode && a.rows <= o_.max_batch
                           ? paged_attention_splits(a.rows, kv.kv_heads, a.max_keys, sms_, o_.max_splits)
                           : 1;
    paged_attention(a, kv, splits, workspace_.data(), stream_);
  }

  // The linear layers: the checked fixed algorithm when batch-invariant, else cuBLAS's heuristics.
  template <class Out>
  void gemm(const T* x, const T* w, Out* y, int rows, int in, int out, bool accumulate) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      if (gemm_) return gemm_->run(x, w, y, rows, in, out, accumulate, phase_);
    }
    linear(blas_.get(), x, w, y, rows, in, out, accumulate);
  }

  void plan_gemms() {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      const int D = int(m_.dim), H = int(m_.hidden_dim), qd = int(m_.q_dim()), qkv = qd + 2 * int(m_.kv_dim());
      const int R = o_.max_chunk_rows, B = o_.max_batch;
      gemm_ = std::make_unique<invariant_gemm>(blas_.get(), stream_);
      using ph = invariant_gemm::phase;  // prefill: 1..R rows, timed at 32 and R; decode: 1..B rows, at 8 and B
      for (const ph p : {ph::prefill, ph::decode}) {
        const int rows = p == ph::decode ? B : std::max(R, B), small = p == ph::decode ? 8 : 32;
        gemm_->plan<T>(wqkv_[0].data(), D, qkv, rows, p, small);
        gemm_->plan<float>(wo_[0].data(), qd, D, rows, p, small);
        gemm_->plan<T>(w13_[0].data(), D, 2 * H, rows, p, small);
        gemm_->plan<float>(w2_[0].data(), H, D, rows, p, small);
        gemm_->plan<float>(cls_ != nullptr ? cls_ : emb_.data(), D, int(m_.vocab), B, p, std::min(8, B));
      }
    }
  }

  // Final norm and classifier for `count` rows from `first`; logits to the host.
  void head(int first, int count, std::span<float> logits) {
    const int D = int(m_.dim);
    rmsnorm(x_.data() + std::size_t(first) * D, final_norm_.data(), xb_.data(), count, D, m_.norm_eps, stream_);
    classify(count, logits);
  }
  // The classifier over xb_'s first `count` normed rows (the phase of the forward before it); logits to the host.
  void classify(int count, std::span<float> logits) {
    const int V = int(m_.vocab);
    classifier(count);
    check(cudaMemcpyAsync(logits.data(), logits_.data(), std::size_t(count) * V * sizeof(float), cudaMemcpyDeviceToHost,
                          stream_), "logits D2H");
    check(cudaStreamSynchronize(stream_), "forward");
  }

  // logits_ (row, vocab) = xb_'s first `count` rows · classifier^T, on the device.
  void classifier(int count) {
    gemm(xb_.data(), cls_ != nullptr ? cls_ : emb_.data(), logits_.data(), count, int(m_.dim), int(m_.vocab), false);
  }

  // One (rows, cols) matrix of `kind` for layer l into dst: from the host tensors or the seed.
  template <class U>
  void fill(U* dst, const model_weights& w, tensor_kind kind, std::size_t l) {
    const tensor_dims d = dims_of(m_, kind);
    if (w.materialized()) {
      const std::span<const float> src = w.layer(kind, l);
      const std::vector<U> conv = convert_from_float<U>(src.data(), src.size());
      check(cudaMemcpy(dst, conv.data(), conv.size() * sizeof(U), cudaMemcpyHostToDevice), "weights H2D");
    } else {
      synthetic_fill(dst, d.size(), *w.seed(), kind, std::uint32_t(per_layer(kind) ? l : 0),
                     synthetic_scale(kind, d.cols), stream_);
    }
  }

  void upload_weights(const model_weights& w) {
    if (!w.materialized() && !w.seed()) throw kvtier::config_error("kvtier_engine: cuda_backend: weights are empty");
    const std::size_t D = m_.dim, H = m_.hidden_dim, L = m_.layers;
    emb_ = device_buffer<T>(m_.vocab * D);
    fill(emb_.data(), w, tensor_kind::token_embedding, 0);
    if (!m_.tied_classifier) {
      cls_buf_ = device_buffer<T>(m_.vocab * D);
      fill(cls_buf_.data(), w, tensor_kind::classifier, 0);
      cls_ = cls_buf_.data();
    }
    attn_norm_ = device_buffer<float>(L * D);
    ffn_norm_ = device_buffer<float>(L * D);
    final_norm_ = device_buffer<float>(D);
    fill(final_norm_.data(), w, tensor_kind::final_norm, 0);
    for (std::size_t l = 0; l < L; ++l) {
      fill(attn_norm_.data() + l * D, w, tensor_kind::attn_norm, l);
      fill(ffn_norm_.data() + l * D, w, tensor_kind::ffn_norm, l);
      wqkv_.emplace_back((m_.q_dim() + 2 * m_.kv_dim()) * D);
      fill(wqkv_[l].data(), w, tensor_kind::wq, l);
      fill(wqkv_[l].data() + m_.q_dim() * D, w, tensor_kind::wk, l);
      fill(wqkv_[l].data() + (m_.q_dim() + m_.kv_dim()) * D, w, tensor_kind::wv, l);
      wo_.emplace_back(D * m_.q_dim());
      fill(wo_[l].data(), w, tensor_kind::wo, l);
      w13_.emplace_back(2 * H * D);
      fill(w13_[l].data(), w, tensor_kind::w1, l);
      fill(w13_[l].data() + H * D, w, tensor_kind::w3, l);
      w2_.emplace_back(D * H);
      fill(w2_[l].data(), w, tensor_kind::w2, l);
    }
    check(cudaStreamSynchronize(stream_), "weights");
  }

  model_config m_;
  cuda_options o_;
  cudaStream_t stream_;
  cublas_handle blas_;
  int max_pages_ = 0;
  int sms_ = 132;
  bool invariant_ = false;
  std::unique_ptr<invariant_gemm> gemm_;
  invariant_gemm::phase phase_ = invariant_gemm::phase::prefill;
  std::vector<paged_kv_layer<T>> kv_;
  device_buffer<T> emb_, cls_buf_;
  T* cls_ = nullptr;
  device_buffer<float> attn_norm_, ffn_norm_, final_norm_;
  std::vector<device_buffer<T>> wqkv_, wo_, w13_, w2_;  // per layer: (q|k|v, dim), (dim, q), (gate|up, dim), (dim, hidden)
  device_buffer<float> x_, logits_, workspace_, prefill_ws_;          // x: (row, dim) residual stream
  device_buffer<T> xb_, qkv_, q_, att_, gu_, hb_;
  device_buffer<std::int32_t> tokens_, positions_, row_seq_, row_keys_, tables_, sampled_;
  std::vector<std::int32_t> host_ints_;
  // prefill_batch: its host staging, the query tiles (4 ints each: flash_tile), each chunk's last row
  device_buffer<std::int32_t> q_tiles_;
  std::vector<std::int32_t> batch_host_;
  std::vector<int> last_rows_;
  row_narrower<T> narrow_;  // prefill_rows: the rows still computed
};

}  // namespace detail

class cuda_backend {
 public:
  using kvtier_engine_backend = backend_tag;

  cuda_backend(const model_config& m, const model_weights& w, const kv_pool& pool, backend_options o)
      : cuda_backend(m, w, pool, o, cuda_options{}) {}
  cuda_backend(const model_config& m, const model_weights& w, const kv_pool& pool, backend_options o, cuda_options co)
      : m_(m), mode_(o.mode) {
    m.validate();
    kvtier_engine::detail::check_pool(m, pool, o.mode);
    check(cudaSetDevice(o.device), "cudaSetDevice");
    if (mode_ == precision::bf16) bf16_ = std::make_unique<detail::cuda_model<__nv_bfloat16>>(m, w, pool, co);
    else fp32_ = std::make_unique<detail::cuda_model<float>>(m, w, pool, co);
  }

  const model_config& config() const noexcept { return m_; }
  precision mode() const noexcept { return mode_; }
  std::string_view name() const noexcept { return mode_ == precision::bf16 ? "cuda-bf16" : "cuda-fp32"; }
  // The stream every kernel of this backend runs on (a layer hook may make it wait on an event).
  cudaStream_t stream() const noexcept { return bf16_ ? bf16_->stream() : fp32_->stream(); }
  // Whether each request's tokens are independent of the batch it runs in (see cuda_options).
  bool batch_invariant() const noexcept { return bf16_ && bf16_->batch_invariant(); }

  kvtier::result<void> prefill(const prefill_chunk& c, std::span<float> logits, const layer_hook& before_layer) {
    try {
      return bf16_ ? bf16_->prefill(c, logits, before_layer) : fp32_->prefill(c, logits, before_layer);
    } catch (const std::runtime_error&) {
      return kvtier::make_error(kvtier::errc::io_error);
    }
  }
  // Chunks of different sequences in one call (backend.hpp's prefill_batch). bf16 with the flash
  // kernel: greedy groups (in order) of at most cuda_options::max_chunk_rows rows and max_batch
  // chunks, each ONE forward over all its rows (one pass over the weights; attention through
  // flash_prefill_varlen), before_layer called for every layer of each group; a chunk longer than
  // max_chunk_rows, or a group of one, runs as prefill(). In batch-invariant mode each chunk's K/V
  // and logits are prefill()'s of that chunk alone bit for bit (same flash tiles and splits, GEMMs of
  // the prefill phase). fp32 (or no flash kernel for the shape): prefill() per chunk.
  kvtier::result<void> prefill_batch(std::span<const prefill_chunk> chunks, std::span<float> logits, const layer_hook& before_layer) {
    try {
      return bf16_ ? bf16_->prefill_batch(chunks, logits, before_layer) : fp32_->prefill_batch(chunks, logits, before_layer);
    } catch (const std::runtime_error&) {
      return kvtier::make_error(kvtier::errc::io_error);
    }
  }
  // Partial prefill: rows of ONE sequence (every entry's block_table the same span, covering the last
  // row's position) at strictly ascending positions anywhere, through every layer. Each row writes its
  // K/V at its position and attends to keys [0, position]; the K/V at positions not among the rows is
  // whatever the pool holds (a cached prefix, placed chunks). before_layer(l) is called before layer l
  // reads or writes the pool; after_kv(l, active), once the active rows' K/V of layer l are written,
  // may drop rows (active: indices into `rows`, ascending; the last row must stay): they skip attention
  // and FFN from there on, and their K/V on later layers is what the pool holds. Writes the last row's
  // logits. At most cuda_options::max_chunk_rows rows (one pass). A row gives prefill()'s bits at its
  // position when its inputs are the same (bf16 batch-invariant mode; fp32: cuBLAS may choose another
  // algorithm for another row count). invalid_argument for bad rows or a filter that adds rows.
  kvtier::result<void> prefill_rows(std::span<const decode_entry> rows, std::span<float> logits, const layer_hook& before_layer,
                                    const row_filter& after_kv) {
    try {
      return bf16_ ? bf16_->prefill_rows(rows, logits, before_layer, after_kv)
                   : fp32_->prefill_rows(rows, logits, before_layer, after_kv);
    } catch (const std::runtime_error&) {
      return kvtier::make_error(kvtier::errc::io_error);
    }
  }
  kvtier::result<void> decode(std::span<const decode_entry> batch, std::span<float> logits) {
    try {
      return bf16_ ? bf16_->decode(batch, logits) : fp32_->decode(batch, logits);
    } catch (const std::runtime_error&) {
      return kvtier::make_error(kvtier::errc::io_error);
    }
  }
  // A decode step with greedy sampling on the device: next[b] is decode()'s logits' argmax for entry b
  // (the first index of the maximum), without copying the logits to the host.
  kvtier::result<void> decode_greedy(std::span<const decode_entry> batch, std::span<kvtier::token_id> next) {
    try {
      return bf16_ ? bf16_->decode_greedy(batch, next) : fp32_->decode_greedy(batch, next);
    } catch (const std::runtime_error&) {
      return kvtier::make_error(kvtier::errc::io_error);
    }
  }

 private:
  model_config m_;
  precision mode_;
  std::unique_ptr<detail::cuda_model<__nv_bfloat16>> bf16_;
  std::unique_ptr<detail::cuda_model<float>> fp32_;
};

static_assert(compute_backend<cuda_backend>);
static_assert(batched_prefill_backend<cuda_backend>);
static_assert(greedy_decode_backend<cuda_backend>);

}  // namespace kvtier_engine::cuda
