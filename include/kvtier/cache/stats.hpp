#pragma once
// What a hierarchical cache counts: hits per tier, bytes moved each way, prefill tokens saved,
// evictions and backups. Plain counters, read with cache.stats() on the scheduler thread.
#include <array>
#include <cstddef>
#include <cstdint>

#include "kvtier/core/tier.hpp"

namespace kvtier {

struct cache_stats {
  // ---- requests
  std::uint64_t lookups = 0;
  std::uint64_t prompt_tokens = 0;         // tokens of every prompt looked up
  std::uint64_t cacheable_tokens = 0;      // whole-page tokens of those prompts
  // Tokens of looked-up prompts found in each tier (the fastest tier holding the page counts).
  std::array<std::uint64_t, tier_count> hit_tokens{};
  std::uint64_t served_tokens = 0;         // tokens the engine did not prefill (after load/prefetch)
  std::uint64_t computed_tokens = 0;       // tokens left to prefill

  // ---- data movement, in pages and bytes (index: the tier the bytes moved out of / into)
  std::uint64_t pages_loaded = 0, bytes_loaded = 0;       // host → device
  std::uint64_t pages_backed_up = 0, bytes_backed_up = 0; // device → host
  std::array<std::uint64_t, tier_count> pages_written{}, bytes_written{};  // host → slow tier
  std::array<std::uint64_t, tier_count> pages_fetched{}, bytes_fetched{};  // slow tier → host

  // ---- eviction and failures
  std::array<std::uint64_t, tier_count> evicted{};        // pages leaving a tier
  std::array<std::uint64_t, tier_count> dropped{};        // of those, pages with no copy below
  std::uint64_t prefetch_requested = 0, prefetch_arrived = 0, prefetch_missed = 0, prefetch_abandoned = 0;
  std::uint64_t prefetch_retried = 0;      // reads a faster slow tier missed, asked of the next one
  std::uint64_t write_failures = 0;        // slow-tier puts that failed (a written-back page is then lost: a future miss)
  std::uint64_t write_back_skipped = 0;    // host victims dropped unwritten: the slow tiers held a host pool's worth of writes
  std::uint64_t device_full = 0;           // allocations refused: every device page locked or in flight
  std::uint64_t host_full = 0;

  // ---- remote lookup (remote_lookup): the shared slow tier asked for pages past the index
  std::uint64_t remote_probes = 0;          // probes sent (one batched contains each)
  std::uint64_t remote_probe_timeouts = 0;  // of those, unanswered in time, or skipped while one was late
  std::uint64_t remote_pages_adopted = 0;   // pages the tier held, entered into the index

  // Fraction of prompt tokens found in tier t, and overall.
  double hit_ratio(tier_id t) const noexcept {
    return prompt_tokens ? double(hit_tokens[std::size_t(t)]) / double(prompt_tokens) : 0.0;
  }
  double served_ratio() const noexcept { return prompt_tokens ? double(served_tokens) / double(prompt_tokens) : 0.0; }
};

}  // namespace kvtier
