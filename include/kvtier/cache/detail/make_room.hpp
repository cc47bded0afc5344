#pragma once
// The eviction cascade, once for every tier that has a pool (device, host): frees slots of `tier`
// until `n` are available. The next victims are looked at first without dropping anything; those
// with no copy below are copied down (by policy), and then victims are dropped in the index's
// order (leaves first). Locked and in-flight pages are never offered. A victim whose copy down
// did not happen (the tier below is full or failing) is dropped all the same, a future miss:
// a page is never pinned by trouble below it, so the cache never refuses work while a page of
// `tier` is evictable.
#include <algorithm>
#include <cstddef>
#include <span>
#include <vector>

#include "kvtier/core/strong_id.hpp"
#include "kvtier/core/tier.hpp"
#include "kvtier/index/residency.hpp"

namespace kvtier::detail {

// A copy in a tier below `t` (ready or being written) keeps the page in the hierarchy.
constexpr bool has_copy_below(const page_residency& r, tier_id t) noexcept {
  for (unsigned u = unsigned(t) + 1; u < tier_count; ++u)
    if (r.tiers.has(tier_id(u))) return true;
  return false;
}
// A copy in any tier but `t`: dropping t's copy loses nothing.
constexpr bool has_other_copy(const page_residency& r, tier_id t) noexcept {
  return (r.tiers.bits & ~(1u << unsigned(t))) != 0;
}

// What make_room needs of a tier:
//   available() -> size_t               free slots now
//   copy_down(span<const page_id>)       start copies of victims with no copy below (may wait for
//                                        memory copies; never for slow-tier I/O)
//   release(const victim&)               frees the victim's slot (its index entry is dropped)
//   settle() -> bool                     lets copies in flight that hold slots land; false if none
// drop_all: the policy drops victims without a copy below instead of copying them down.
template <class Tier>
concept room_ops = requires(Tier& t, std::span<const page_id> victims, const victim& v) {
  { t.available() } -> std::convertible_to<std::size_t>;
  t.copy_down(victims);
  t.release(v);
  { t.settle() } -> std::convertible_to<bool>;
};

template <class Index, room_ops Tier>
bool make_room(Index& index, tier_id tier, std::size_t n, bool drop_all, Tier& ops, std::vector<page_id>& victims) {
  for (int round = 0; round < 8 && ops.available() < n; ++round) {
    const std::size_t need = n - ops.available();
    if (!drop_all) {
      victims.clear();
      index.collect_victims(tier, need, victims);
      std::erase_if(victims, [&](page_id p) { return has_copy_below(index.info(p)->residency, tier); });
      if (!victims.empty()) ops.copy_down(std::span<const page_id>(victims));
      if (ops.available() >= n) break;  // copying down freed the slots (a write-back owns its bytes)
    }
    const std::size_t dropped = index.evict(tier, n - ops.available(), [&](const victim& v) {
      ops.release(v);
      return true;
    });
    if (dropped == 0 && !ops.settle()) break;  // nothing more will free up
  }
  return ops.available() >= n;
}

}  // namespace kvtier::detail
