#pragma once
// A lease: what lookup() found for one request, and what the cache holds for it until release().
//  - pages():           every matched page, root first, locked (never evicted while leased);
//  - sources():         where each page is served from (device, host, storage) at lookup time;
//  - cached_pages():    the prefix the engine may use: device_slots()[0, cached_pages) hold its KV
//                       (once load()'s per-layer events have passed);
//  - tokens_to_compute(): prompt tokens after that prefix.
// A lease is move-only and belongs to the thread that calls the cache.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "kvtier/core/page_key.hpp"
#include "kvtier/core/strong_id.hpp"
#include "kvtier/index/residency.hpp"

namespace kvtier {

namespace detail {
template <class PageSize, class DevicePool, class HostPool, class HostLayout, class Copy, class WriteToHost,
          class WriteToSlow, class Prefetch, class Eviction, class... SlowTiers>
class cache_paths;
struct positioned_load;
}  // namespace detail

template <class Copy>
class cache_lease {
 public:
  using copy_type = Copy;
  using stream_type = typename Copy::stream_type;
  using event_type = typename Copy::event_type;

  cache_lease() = default;
  cache_lease(cache_lease&&) noexcept = default;
  cache_lease& operator=(cache_lease&&) noexcept = default;
  cache_lease(const cache_lease&) = delete;
  cache_lease& operator=(const cache_lease&) = delete;

  bool active() const noexcept { return active_; }
  namespace_id name_space() const noexcept { return ns_; }
  std::size_t prompt_tokens() const noexcept { return prompt_tokens_; }

  // What lookup found, by tier of the fastest ready copy.
  std::span<const page_id> pages() const noexcept { return match_.pages; }
  std::span<const page_source> sources() const noexcept { return match_.sources; }
  std::size_t device_pages() const noexcept { return match_.device_pages; }
  std::size_t host_pages() const noexcept { return match_.host_pages; }
  std::size_t storage_pages() const noexcept { return match_.storage_pages; }

  // The usable prefix: the engine's block table for it, and what is left to compute.
  std::size_t cached_pages() const noexcept { return cached_pages_; }
  std::size_t cached_tokens() const noexcept { return cached_pages_ * page_tokens_; }
  std::size_t tokens_to_compute() const noexcept { return prompt_tokens_ - cached_tokens(); }
  std::span<const device_slot> device_slots() const noexcept { return {slots_.data(), cached_pages_}; }

  // Pages prefetch() asked the slow tiers for, and how many had arrived when load() looked.
  std::size_t fetches_started() const noexcept { return fetch_started_; }

 private:
  template <class Parts>
  friend class hierarchical_cache;
  template <class, class, class, class, class, class, class, class, class, class...>
  friend class detail::cache_paths;
  friend struct detail::positioned_load;

  // Whether `tokens` start with the pages of the lease's usable prefix, page by page.
  template <class Index>
  bool starts(const Index& index, std::span<const token_id> tokens) const {
    const std::span<const page_id> held = prefix_.empty() ? std::span<const page_id>(match_.pages) : std::span<const page_id>(prefix_);
    if (held.size() < cached_pages_ || tokens.size() < cached_pages_ * page_tokens_) return false;
    for (std::size_t i = 0; i < cached_pages_; ++i) {
      const std::span<const token_id> want = index.tokens_of(held[i]);
      if (!std::equal(want.begin(), want.end(), tokens.begin() + std::ptrdiff_t(i * page_tokens_))) return false;
    }
    return true;
  }

  void reset(namespace_id ns, std::size_t prompt_tokens, std::size_t page_tokens) {
    ns_ = ns;
    prompt_tokens_ = prompt_tokens;
    page_tokens_ = page_tokens;
    cached_pages_ = 0;
    fetch_started_ = 0;
    slots_.clear();
    locked_.clear();
    private_.clear();
    layer_events_.clear();
    stream_ = nullptr;
    waits_.clear();
    fetch_tickets_.clear();
    prefix_.clear();
    prefetched_ = loaded_ = false;
    active_ = true;
  }

  namespace_id ns_{};
  std::size_t prompt_tokens_ = 0;
  std::size_t page_tokens_ = 1;
  match_result match_;                  // matched pages, locked by match()
  std::vector<page_id> locked_;         // pages committed through this lease (locked by it)
  std::vector<device_slot> private_;    // engine slots duplicating indexed pages: freed at release
  std::vector<device_slot> slots_;      // device slot per page of the usable prefix
  std::vector<page_id> prefix_;         // after a commit: the page of each prompt page (match_ before)
  const void* owner_ = nullptr;         // the cache that looked it up
  std::size_t cached_pages_ = 0;
  std::vector<event_type> layer_events_;  // one per layer, from load()
  stream_type* stream_ = nullptr;       // where load() queued this lease's copies
  std::vector<std::pair<stream_type*, event_type>> waits_;  // other leases' loads of pages used here
  std::vector<std::pair<std::size_t, std::uint64_t>> fetch_tickets_;  // (slow tier, ticket)
  std::size_t fetch_started_ = 0;
  std::uint8_t priority_ = 0;
  bool prefetched_ = false;
  bool loaded_ = false;
  bool active_ = false;
};

}  // namespace kvtier
