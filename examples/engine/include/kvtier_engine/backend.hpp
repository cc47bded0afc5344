#pragma once
// compute_backend: what the engine asks of a place that computes (the CPU reference, the CUDA
// backend). One interface, batched and page-addressed:
//
//  - Weights are given once, at construction (host fp32 tensors, or a synthetic seed the backend may
//    expand where its memory is: see weights.hpp / synthetic.hpp).
//  - The KV cache is NOT the backend's: it is kvtier's device pool (on the CPU, the host-memory
//    stand-in that cpu_copy serves), passed at construction as the cache's layer-first view
//    `kv_pool::view`, (layer, kv, slot * page_tokens + t, kv_head, head_size), page s of the pool =
//    rows [s * P, s * P + P). A sequence's KV is addressed through its block table: the kvtier device
//    slot of each of its pages (lease.device_slots() for the cached prefix, then slots from
//    cache.allocate()). A backend never copies KV into a private cache.
//  - prefill(chunk, logits, before_layer): computes tokens [start, start + n) of one sequence.
//    block_table covers every page up to start + n. For each layer l, before anything reads layer l
//    of the pool the backend calls before_layer(l) (the engine waits there for kvtier's layer-by-layer
//    load of the cached prefix); it writes the chunk's K (after RoPE) and V into the pool at its
//    slots, attends causally over positions [0, start) already in the pool plus the chunk, and
//    writes the last token's logits (vocab floats) to `logits`.
//  - decode(batch, logits): one step for B sequences; entry b puts its token at `position` (KV
//    written at block_table[position / P], row position % P) and attends over [0, position]; its
//    logits land in logits[b * vocab, (b + 1) * vocab).
//  - prefill_batch(chunks, logits, before_layer), optional (concept batched_prefill_backend): the
//    chunks of DIFFERENT sequences (each its own start and block_table, as prefill() takes one) in
//    one call, so that a GPU pays one pass over the weights for all of them (continuous batching's
//    varlen forward). Chunk i's last-token logits land in logits[i * vocab, (i + 1) * vocab);
//    before_layer(l) is called before any chunk's layer l of the pool is read (it may be called more
//    than once per layer when the backend runs the chunks in several passes). Every chunk is checked
//    as prefill() checks it before anything is computed: an empty span, a bad chunk or too few
//    logits are invalid_argument. Chunks whose positions share pool slots are not allowed. A chunk's
//    K/V and logits are those prefill() of that chunk alone gives (bit for bit where the backend is
//    batch-invariant: the CPU backend; the CUDA backend in bf16 batch-invariant mode).
//  - All return when the logits are in the caller's host memory and the KV is in the pool. Errors
//    (a block table too short, a position past seq_len, a device failure) are result<void> values.
//  - precision: fp32 (weights, activations and KV in fp32) or bf16 (bf16 weights and KV, fp32
//    accumulation); the pool's element type is kv_dtype(precision), checked at construction.
//
// Exactness contract (what the reuse tests rely on): the K and V a backend writes for a position
// depend only on the tokens up to it, not on how the positions were split into chunks or decode
// steps when chunks start on page boundaries, so a prefix served by kvtier and the same prefix
// recomputed give the same logits bit for bit.
//
// A type opts in with `using kvtier_engine_backend = kvtier_engine::backend_tag;`.
#include <concepts>
#include <cstddef>
#include <functional>
#include <span>
#include <string_view>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"
#include "kvtier/core/strong_id.hpp"
#include "kvtier/transfer/views.hpp"
#include "kvtier_engine/model_config.hpp"
#include "kvtier_engine/weights.hpp"

namespace kvtier_engine {

struct backend_tag {};

enum class precision : std::uint8_t { fp32, bf16 };
constexpr std::string_view to_string(precision p) noexcept { return p == precision::fp32 ? "fp32" : "bf16"; }
// The KV element type a backend at precision p reads and writes (the cache's kv_shape dtype).
constexpr kvtier::dtype kv_dtype(precision p) noexcept { return p == precision::fp32 ? kvtier::dtype::fp32 : kvtier::dtype::bf16; }

struct backend_options {
  precision mode = precision::fp32;
  std::size_t threads = 0;  // CPU worker threads (0: hardware concurrency); a GPU backend ignores it
  int device = 0;           // CUDA device ordinal; the CPU backend ignores it
};

// kvtier's device KV pool as the backend sees it.
struct kv_pool {
  kvtier::transfer::layer_first_buffer view;  // (layer, kv, slot * page_tokens + t, kv_head, head_size)
  std::size_t page_tokens = 0;                // P: tokens per page (per slot)
  std::size_t slots = 0;                      // device slots in the pool
};

// One chunk of one sequence's prefill.
struct prefill_chunk {
  std::span<const kvtier::token_id> tokens;               // tokens [start, start + n)
  std::size_t start = 0;                                  // positions [0, start) are already in the pool
  std::span<const kvtier::device_slot> block_table;       // page i -> slot, covering [0, start + n)
};

// One sequence of a decode step.
struct decode_entry {
  kvtier::token_id token{};
  std::size_t position = 0;                               // the token's position; [0, position) in the pool
  std::span<const kvtier::device_slot> block_table;       // covering [0, position]
};

// Called with a layer index before the backend reads that layer of the pool (may be empty).
using layer_hook = std::function<void(std::size_t layer)>;
// Partial prefill (prefill_rows): after layer l's K/V are written, the rows still computed (indices
// into the rows given, ascending); the callee may drop some.
using row_filter = std::function<void(std::size_t layer, std::vector<std::size_t>& active)>;

// clang-format off
template <class B>
concept compute_backend =
  std::same_as<typename B::kvtier_engine_backend, backend_tag> &&
  std::constructible_from<B, const model_config&, const model_weights&, const kv_pool&, backend_options> &&
  requires(B& b, const B& cb, const prefill_chunk& chunk, std::span<const decode_entry> batch,
           std::span<float> logits, const layer_hook& before_layer) {
    { cb.config() } -> std::same_as<const model_config&>;
    { cb.mode() } -> std::same_as<precision>;
    { cb.name() } -> std::convertible_to<std::string_view>;
    { b.prefill(chunk, logits, before_layer) } -> std::same_as<kvtier::result<void>>;
    { b.decode(batch, logits) } -> std::same_as<kvtier::result<void>>;
  };
// A backend that also computes several sequences' prefill chunks in one call (see prefill_batch
// above); a caller without it loops over prefill().
template <class B>
concept batched_prefill_backend =
  compute_backend<B> &&
  requires(B& b, std::span<const prefill_chunk> chunks, std::span<float> logits, const layer_hook& before_layer) {
    { b.prefill_batch(chunks, logits, before_layer) } -> std::same_as<kvtier::result<void>>;
  };
// Optional: decode_greedy(batch, next) runs decode() and writes each entry's greedy token (the first
// index of its largest logit, sampler::argmax's choice on the same logits) to next[b], keeping the
// logits where they were computed (a GPU copies B tokens back instead of B × vocab floats).
template <class B>
concept greedy_decode_backend =
  compute_backend<B> &&
  requires(B& b, std::span<const decode_entry> batch, std::span<kvtier::token_id> next) {
    { b.decode_greedy(batch, next) } -> std::same_as<kvtier::result<void>>;
  };
// clang-format on

namespace detail {
// Checks a pool against a model at a precision; throws config_error (used by backends' constructors).
inline void check_pool(const model_config& m, const kv_pool& pool, precision p) {
  const auto& e = pool.view.map.extents();
  if (pool.page_tokens == 0 || pool.slots == 0)
    throw kvtier::config_error("kvtier_engine: empty KV pool");
  if (e.layers() != m.layers || e.heads() != m.kv_heads || e.dim() != m.head_size || e.kv() != 2 ||
      e.tokens() != pool.slots * pool.page_tokens)
    throw kvtier::config_error("kvtier_engine: the KV pool's shape is not the model's (layers, kv heads, head size)");
  if (pool.view.element_bytes != kvtier::size_of(kv_dtype(p)))
    throw kvtier::config_error("kvtier_engine: the KV pool's element type is not the backend's precision");
}
}  // namespace detail

}  // namespace kvtier_engine
