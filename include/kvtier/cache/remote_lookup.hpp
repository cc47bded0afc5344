#pragma once
// remote_lookup: a lookup that asks the shared slow tier for the pages past the cache's own index,
// so that engines sharing a slow tier (one Redis, a Redis Cluster) reuse the KV another engine wrote.
// Page keys are chained hashes of (namespace, model, parent key, page tokens) and agree across
// processes; on a lookup whose cached prefix stops short of the prompt's whole pages, the cache
// computes the keys of the next pages (at most max_pages), asks the slowest slow tier which it holds
// (one batched `contains`: one round trip, waited for up to `timeout` on the scheduler thread),
// and adopts the leading run it holds into its index as resident on that tier. They are then
// prefetched and loaded like any slow-tier page, and every read is checked (header, checksums,
// KV shape, namespace, key, tokens): a foreign, damaged or vanished page is a miss, never wrong KV.
// Off by default. Cost: at most `timeout` per lookup that misses past the index; a tier that does
// not answer in time is a miss, and while its late probe is out, later lookups skip the probe.
#include <chrono>
#include <cstddef>

#include "kvtier/core/error.hpp"

namespace kvtier {

struct remote_lookup {
  std::size_t max_pages = 0;              // pages probed past the cached prefix per lookup; 0: off
  std::chrono::milliseconds timeout{50};  // the longest a lookup waits for the answer

  constexpr bool enabled() const noexcept { return max_pages > 0; }
};

namespace detail {
// config_error for a remote lookup that cannot run: no slow tier to ask, or no time to wait.
inline void check_remote_lookup(const remote_lookup& r, std::size_t slow_tiers) {
  if (!r.enabled()) return;
  if (slow_tiers == 0) throw config_error("kvtier: remote_lookup needs a slow tier to ask (the cache has none)");
  if (r.timeout.count() <= 0) throw config_error("kvtier: remote_lookup timeout must be positive");
}
}  // namespace detail

}  // namespace kvtier
