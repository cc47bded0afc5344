#pragma once
// Value types of the prefix index: where a page lives, what a match returns, what eviction hands
// back. Pages are named by page_id handles, valid while the page is in the index (a locked page
// always is); an unlocked handle may be reused once its page leaves the index.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvtier/core/page_key.hpp"
#include "kvtier/core/strong_id.hpp"
#include "kvtier/core/tier.hpp"
#include "kvtier/policy/eviction/concept.hpp"

namespace kvtier {

// Where one page lives. in_flight is the subset of tiers whose copy is still being loaded or
// written: such a copy is not served, and a page with anything in flight is never evicted.
// A page's slow-tier copies (disk, remote) are found by its page key.
struct page_residency {
  tier_set tiers{};
  tier_set in_flight{};
  device_slot device{};
  host_slot host{};

  constexpr bool ready(tier_id t) const noexcept { return tiers.has(t) && !in_flight.has(t); }
  friend constexpr bool operator==(const page_residency&, const page_residency&) = default;
};

// Residency helpers for the common cases.
constexpr page_residency on_device(device_slot s) noexcept {
  return page_residency{tier_set{}.add(tier_id::device), {}, s, {}};
}
constexpr page_residency on_host(host_slot s) noexcept {
  return page_residency{tier_set{}.add(tier_id::host), {}, {}, s};
}

// A snapshot of one page.
struct page_info {
  page_key key{};            // also the page's key in slow tiers
  namespace_id ns{};
  page_residency residency{};
  std::uint32_t locks = 0;
};

// Where a matched page is served from: the fastest tier with a ready copy.
enum class page_source : std::uint8_t { device, host, storage };

// The longest cached prefix of a prompt, whole pages only. Pages are root first; a page is part of
// the prefix when some tier holds a ready copy. Reuse one object across calls: no allocation once
// its vectors have grown.
struct match_result {
  std::vector<page_id> pages;          // handles, one per matched page
  std::vector<page_source> sources;    // where each page is served from
  std::size_t device_pages = 0;        // pages ready on the device
  std::size_t host_pages = 0;          // pages ready on host but not on the device
  std::size_t storage_pages = 0;       // pages ready only on disk or remote
  bool locked = false;                 // the pages were locked by this match (unlock them later)

  std::size_t size() const noexcept { return pages.size(); }
  bool empty() const noexcept { return pages.empty(); }
  void clear() noexcept {
    pages.clear();
    sources.clear();
    device_pages = host_pages = storage_pages = 0;
    locked = false;
  }
};

struct match_options {
  bool lock = false;      // lock the matched pages (unlock(result.pages) when done)
  bool touch = true;      // count the match as an access for the eviction policy
  std::uint8_t priority = 0;  // the request's retention priority (priority_lru)
};

struct insert_options {
  bool lock = false;      // lock every whole page of the prompt (needs a path vector to unlock)
  std::uint8_t priority = 0;
};

struct insert_result {
  std::size_t pages = 0;     // whole pages of the prompt, all in the index afterwards
  std::size_t existing = 0;  // pages that already had a copy somewhere (kept as they were)
  std::size_t inserted = 0;  // pages that received the given residency
};

// A page eviction offers: the caller frees `tier`'s copy (its slot) when it accepts. The page key,
// when the caller needs it, is info(page)->key (computed then, not on every eviction).
struct victim {
  page_id page{};
  tier_id tier = tier_id::device;
  page_residency residency{};  // before the drop
};

// Configuration of a prefix index.
struct index_options {
  std::uint64_t model = 0;           // enters every page key: two models never share keys
  std::size_t reserve_pages = 0;     // pre-size the page arrays (no growth up to this many pages)
};

}  // namespace kvtier
