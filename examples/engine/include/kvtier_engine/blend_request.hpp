#pragma once
// kvtier-engine serving prompts made of known chunks and new text (retrieval-augmented generation)
// with CacheBlend, on the CPU backend, through kvtier's chunk index:
//  - store_chunk(e, ns, chunk): the chunk computed on its own (positions 0..) into slots of the
//    engine's cache, its whole pages committed under the chunk namespace (kvtier::blend::store_chunk);
//  - blend_generate(e, ns, prompt, plan, o): chunks found anywhere in the prompt (blend::chunk_set),
//    loaded and placed into the request's own slots with K rotated to their offsets, a partial prefill
//    (blend_prefill: a chunk at the prompt's start is its true prefix, the others are blended), then
//    decode over those slots. Nothing of the request enters the index: blended KV is not the prompt's
//    exact KV, so its slots are freed at the end.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <span>
#include <vector>

#include "kvtier/blend/chunk_index.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/transfer/rope.hpp"
#include "kvtier_engine/cpu/blend_prefill.hpp"
#include "kvtier_engine/cpu/cpu_backend.hpp"
#include "kvtier_engine/engine.hpp"
#include "kvtier_engine/sampler.hpp"
#include "kvtier_engine/tokenizer.hpp"

namespace kvtier_engine {

// The model's RoPE as kvtier names it (the chunk namespace is per rotation).
inline kvtier::transfer::rope_spec rope_of(const model_config& c) {
  return {c.rope == rope_style::adjacent_pairs ? kvtier::transfer::rope_convention::adjacent_pairs
                                               : kvtier::transfer::rope_convention::rotate_half,
          c.rope_theta, c.head_size, 0};
}

// Computes `chunk` on its own and puts its whole pages into the chunk index of `ns` (a chunk shorter
// than a page stores nothing). Errors: the cache's or the backend's.
template <class Cache>
kvtier::result<void> store_chunk(engine<cpu_backend, Cache>& e, kvtier::namespace_id ns, std::span<const kvtier::token_id> chunk) {
  constexpr std::size_t P = engine<cpu_backend, Cache>::page_tokens;
  const std::size_t pages = chunk.size() / P;
  if (pages == 0) return {};
  std::vector<kvtier::device_slot> slots(pages);
  if (auto r = e.cache().allocate(slots); !r) return r;
  std::vector<float> logits(e.config().vocab);
  if (auto r = e.backend().prefill(prefill_chunk{chunk.first(pages * P), 0, slots}, logits, {}); !r) {
    (void)e.cache().free(slots);
    return r;
  }
  return kvtier::blend::store_chunk(e.cache(), ns, rope_of(e.config()), chunk.first(pages * P), slots);
}

struct blend_turn {
  std::vector<kvtier::token_id> tokens;  // the generated tokens
  std::size_t prompt_tokens = 0;
  std::size_t chunks = 0;                // chunks found and placed
  std::size_t prefix_tokens = 0;         // of them, a chunk at the prompt's start (exact, not recomputed)
  std::size_t blended_tokens = 0;        // placed tokens blended (the other chunks)
  blend_report report;                   // rows recomputed per layer
  double ttft_s = 0;
};

// One request over the chunk index of `ns`. Errors: invalid_argument (empty prompt, past seq_len, a
// bad plan), capacity_exhausted (no device slots), the cache's and the backend's.
template <class Cache>
kvtier::result<blend_turn> blend_generate(engine<cpu_backend, Cache>& e, kvtier::namespace_id ns, std::span<const kvtier::token_id> prompt,
                                          const blend_plan& plan, const generate_options& o) {
  using clock = std::chrono::steady_clock;
  constexpr std::size_t P = engine<cpu_backend, Cache>::page_tokens;
  const auto t0 = clock::now();
  const model_config& cfg = e.config();
  const std::size_t N = prompt.size();
  if (N == 0 || N + o.max_new_tokens > cfg.seq_len + 1) return kvtier::make_error(kvtier::errc::invalid_argument);
  Cache& cache = e.cache();
  kvtier::blend::chunk_set<Cache> set(cache, ns, rope_of(cfg));
  typename Cache::stream_type stream;
  std::vector<kvtier::device_slot> table((N + P - 1) / P);
  const auto fail = [&](kvtier::error err) -> kvtier::result<blend_turn> {
    (void)cache.free(table);
    (void)set.release();
    return err;
  };
  // The last token is always computed: its logits start the reply.
  if (auto r = set.lookup(prompt.first(N - 1)); !r) return (void)set.release(), r.err();
  set.prefetch();
  if (auto r = set.load(stream); !r) return (void)set.release(), r.err();
  if (auto r = cache.allocate(table); !r) return (void)set.release(), r.err();
  if (auto r = set.place(table); !r) return fail(r.err());
  blend_turn t;
  t.prompt_tokens = N;
  std::vector<reused_range> ranges;
  std::size_t start = 0;
  for (const auto& h : set.hits()) {
    if (h.pages == 0) continue;
    ++t.chunks;
    if (h.offset == 0) start = t.prefix_tokens = h.pages * P;
    else ranges.push_back({h.offset, h.offset + h.pages * P}), t.blended_tokens += h.pages * P;
  }
  std::vector<float> logits(cfg.vocab);
  auto rep = blend_prefill(e.backend(), cache.device_view(), P, prompt, start, table, ranges, plan, logits);
  if (!rep) return fail(rep.err());
  t.report = std::move(*rep);
  (void)set.release();  // the chunks' pages are copied: unlock them now
  sampler smp(o.sample);
  kvtier::token_id tok = smp.next(logits);
  t.tokens.push_back(tok);
  t.ttft_s = std::chrono::duration<double>(clock::now() - t0).count();
  for (std::size_t pos = N; t.tokens.size() < o.max_new_tokens && !(o.stop_at_bos && tok == bos_token); ++pos) {
    if (pos % P == 0) {
      kvtier::device_slot s[1];
      if (auto r = cache.allocate(s); !r) return fail(r.err());
      table.push_back(s[0]);
    }
    const decode_entry d{tok, pos, table};
    if (auto r = e.backend().decode(std::span(&d, 1), logits); !r) return fail(r.err());
    tok = smp.next(logits);
    t.tokens.push_back(tok);
  }
  (void)cache.free(table);
  cache.poll();
  return t;
}

}  // namespace kvtier_engine
