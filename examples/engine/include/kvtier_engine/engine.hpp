#pragma once
// engine: a compute backend in front of kvtier's hierarchical cache. generate() runs one request
// through kvtier's lifecycle:
//   lookup (the cached prefix, locked) → prefetch (slow tier → host) → load (host → device, layer by
//   layer) → allocate (device slots for the rest) → prefill of the uncached suffix in chunks that
//   start on page boundaries, waiting for each cached layer just before it is read → the first token
//   (TTFT) → commit (whole pages enter the index) → decode steps, committing each page as it fills →
//   free the partial page → release.
// The KV lives in the cache's device pool only; the block table is lease.device_slots() followed by
// the slots allocate() gave. With caching off the same code runs without lookup or commit (slots
// are allocated and freed), which is what the exactness tests compare against.
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <type_traits>
#include <string>
#include <utility>
#include <vector>

#include "kvtier/cache.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/core/strong_id.hpp"
#include "kvtier/core/tier.hpp"
#include "kvtier_engine/backend.hpp"
#include "kvtier_engine/model_config.hpp"
#include "kvtier_engine/sampler.hpp"
#include "kvtier_engine/tokenizer.hpp"
#include "kvtier_engine/weights.hpp"

namespace kvtier_engine {

struct generate_options {
  std::size_t max_new_tokens = 64;  // tokens sampled, the first one included
  sampling sample{};
  bool caching = true;              // false: no lookup, no commit (the baseline the tests compare with)
  bool stop_at_bos = true;          // stop when BOS is sampled, as run.c does
  // A prefix on a slow tier: wait until every read has landed, reads a faster tier missed and a
  // slower one retried included, then look up again (load() itself waits only for the first reads,
  // as the cache's prefetch policy allows, and computes what has not arrived).
  bool settle_slow_reads = false;
};

// What one generate() call did.
struct turn_result {
  std::vector<kvtier::token_id> tokens;                  // the generated tokens
  std::size_t prompt_tokens = 0;
  std::size_t reused_tokens = 0;                         // prompt tokens whose KV came from kvtier
  std::size_t computed_tokens = 0;                       // prompt tokens prefilled
  std::array<std::uint64_t, kvtier::tier_count> hit_tokens{};  // found at lookup, by fastest tier
  double ttft_s = 0;                                     // request start → first token sampled
  double decode_s = 0;                                   // the decode steps after it
};

template <compute_backend Backend, class Cache>
class engine {
 public:
  using backend_type = Backend;
  using cache_type = Cache;
  static constexpr std::size_t page_tokens = Cache::page_size_type::static_tokens;

  // The cache's configuration for a model: its KV shape at the backend's precision, the capacities,
  // and a model key from the model's name and seed so pages of different models never match.
  static typename Cache::config cache_config(const model_weights& w, precision p, std::size_t device_pages,
                                             std::size_t host_pages) {
    typename Cache::config c{w.config().kv_shape(kv_dtype(p)), typename Cache::page_size_type{}};
    c.device_pages = device_pages;
    c.host_pages = host_pages;
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (const char ch : w.config().name + "/" + std::to_string(w.seed().value_or(0))) h = (h ^ std::uint8_t(ch)) * 0x100000001b3ull;
    c.model = h;
    return c;
  }

  // `chunk_tokens`: prefill chunk length, a multiple of the page size. Throws config_error.
  template <class... Slow>
  engine(const model_weights& w, typename Cache::config cfg, backend_options opt, std::size_t chunk_tokens,
         std::unique_ptr<Slow>... slow)
      : cfg_(w.config()),
        cache_(cfg, std::move(slow)...),
        backend_(cfg_, w, kv_pool{cache_.device_view(), page_tokens, cfg.device_pages}, opt),
        chunk_(chunk_tokens),
        logits_(cfg_.vocab) {
    if (chunk_ == 0 || chunk_ % page_tokens != 0)
      throw kvtier::config_error("kvtier_engine: the prefill chunk must be a whole number of pages");
  }

  Cache& cache() noexcept { return cache_; }
  const Cache& cache() const noexcept { return cache_; }
  Backend& backend() noexcept { return backend_; }
  const model_config& config() const noexcept { return cfg_; }

  // One request: `prompt` in namespace `ns` (non-empty), then up to max_new_tokens sampled tokens.
  // Errors: invalid_argument (empty prompt, longer than seq_len), capacity_exhausted (no device
  // slots), or what the backend reports.
  kvtier::result<turn_result> generate(kvtier::namespace_id ns, std::span<const kvtier::token_id> prompt,
                                       const generate_options& o) {
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    const std::size_t N = prompt.size(), P = page_tokens;
    if (N == 0 || N + o.max_new_tokens > cfg_.seq_len + 1) return kvtier::make_error(kvtier::errc::invalid_argument);
    turn_result r;
    r.prompt_tokens = N;

    // ---- the cached prefix (one token is always computed: its logits start the reply)
    std::size_t cached_pages = 0;
    if (o.caching) {
      const auto before = cache_.stats().hit_tokens;
      if (auto e = cache_.lookup(ns, prompt.first(N - 1), lease_); !e) return e.err();
      for (std::size_t t = 0; t < kvtier::tier_count; ++t) r.hit_tokens[t] = cache_.stats().hit_tokens[t] - before[t];
      if (cache_.prefetch(lease_) > 0 && o.settle_slow_reads) {
        cache_.drain();
        (void)cache_.release(lease_);
        if (auto e = cache_.lookup(ns, prompt.first(N - 1), lease_); !e) return e.err();
        cache_.prefetch(lease_);
      }
      if (auto e = cache_.load(lease_, stream_); !e) {
        (void)cache_.release(lease_);
        return e.err();
      }
      cached_pages = lease_.cached_pages();
    }
    const std::size_t start = cached_pages * P;
    r.reused_tokens = start;
    r.computed_tokens = N - start;

    // ---- the block table: the cached prefix's slots, then fresh ones up to the prompt's last page
    table_.assign(lease_.device_slots().begin(), lease_.device_slots().begin() + std::ptrdiff_t(cached_pages));
    fresh_.assign((N + P - 1) / P - cached_pages, kvtier::device_slot{});
    if (auto e = cache_.allocate(fresh_); !e) {
      finish(o.caching, cached_pages);
      return e.err();
    }
    table_.insert(table_.end(), fresh_.begin(), fresh_.end());

    // ---- prefill [start, N) in page-aligned chunks; layer l of the cached prefix is waited for
    //      just before the backend reads it (kvtier loads it meanwhile)
    bool load_failed = false;
    const layer_hook wait = o.caching && cached_pages > 0 ? layer_hook([&](std::size_t l) { load_failed |= !wait_layer(l); })
                                                          : layer_hook{};
    for (std::size_t s = start; s < N; s += chunk_) {
      const std::size_t n = std::min(chunk_, N - s);
      const prefill_chunk c{prompt.subspan(s, n), s, std::span(table_).first((s + n + P - 1) / P)};
      if (auto e = backend_.prefill(c, logits_, s == start ? wait : layer_hook{}); !e || load_failed) {
        finish(o.caching, o.caching ? lease_.cached_pages() : 0);
        return e ? kvtier::make_error(kvtier::errc::io_error) : e.err();  // a failed load: the prefix is not there
      }
    }
    sampler smp(o.sample);
    kvtier::token_id tok = smp.next(logits_);
    r.tokens.push_back(tok);
    const auto t1 = clock::now();
    r.ttft_s = std::chrono::duration<double>(t1 - t0).count();

    // ---- the prompt's whole pages enter the index (after the first token is out: bookkeeping)
    std::size_t committed = cached_pages;
    seq_.assign(prompt.begin(), prompt.end());
    if (o.caching) {
      const std::size_t full = N / P;
      if (auto e = cache_.commit(lease_, seq_, std::span(table_).subspan(cached_pages, full - cached_pages)); !e) {
        finish(true, cached_pages);
        return e.err();
      }
      committed = full;
    }

    // ---- decode: each step writes its token's KV at position seq.size(); full pages are committed
    while (r.tokens.size() < o.max_new_tokens && !(o.stop_at_bos && tok == bos_token)) {
      const std::size_t pos = seq_.size();
      seq_.push_back(tok);
      if (pos % P == 0) {
        kvtier::device_slot s[1];
        if (auto e = cache_.allocate(s); !e) {
          finish(o.caching, committed);
          return e.err();
        }
        table_.push_back(s[0]);
      }
      const decode_entry d{tok, pos, table_};
      if (auto e = backend_.decode(std::span(&d, 1), logits_); !e) {
        finish(o.caching, committed);
        return e.err();
      }
      if (o.caching && (pos + 1) % P == 0) {
        if (auto e = cache_.commit(lease_, seq_, std::span(table_).subspan(committed, 1)); !e) {
          finish(true, committed);
          return e.err();
        }
        ++committed;
      }
      tok = smp.next(logits_);
      r.tokens.push_back(tok);
      cache_.poll();
    }
    r.decode_s = std::chrono::duration<double>(clock::now() - t1).count();
    finish(o.caching, committed);
    return r;
  }

 private:
  // Frees the slots past the committed pages (they never entered the index), releases the lease.
  void finish(bool caching, std::size_t committed) {
    if (table_.size() > committed) (void)cache_.free(std::span(table_).subspan(committed));
    table_.clear();
    if (caching) (void)cache_.release(lease_);  // nothing to do about a failure here: the lease is gone either way
    cache_.poll();
  }
  // Waits for layer l of the lease's loaded prefix; false when the cache reports its copy failed.
  bool wait_layer(std::size_t l) {
    if constexpr (std::is_void_v<decltype(cache_.wait_layer(lease_, l))>) {
      cache_.wait_layer(lease_, l);
      return true;
    } else {
      return cache_.wait_layer(lease_, l).has_value();
    }
  }

  model_config cfg_;
  Cache cache_;
  Backend backend_;
  std::size_t chunk_;
  typename Cache::stream_type stream_;
  typename Cache::lease_type lease_;
  std::vector<float> logits_;
  std::vector<kvtier::device_slot> table_, fresh_;
  std::vector<kvtier::token_id> seq_;
};

}  // namespace kvtier_engine
