#pragma once
// radix_index's victim cursor, the one pass that both evict() and collect_victims() run
// (included by kvtier/index/radix_index.hpp only). collect_victims() runs it dry: each page taken
// is marked as gone for the rest of the pass (so the page before it, and the parent node, become
// leaves exactly as a real drop makes them), and every mark is undone at the end. The cache's
// look-first eviction relies on the two agreeing; they share every line that decides.
#include "kvtier/index/radix_index.hpp"

namespace kvtier {

// Page p (position j of node n) loses its copy in tier ti. Dry: counts only, remembered for undo.
template <eviction_policy Policy, std::size_t PageSize>
template <bool Dry>
inline void radix_index<Policy, PageSize>::lose_tier(std::uint32_t n, std::uint32_t j, std::uint32_t p, std::size_t ti) {
  detail::page_state& s = store_.state(p);
  s.drop(1u << ti);
  if constexpr (!Dry) {
    if (ti == std::size_t(tier_id::device)) store_.device(p) = device_slot{};
    if (ti == std::size_t(tier_id::host)) store_.host(p) = host_slot{};
  }
  node& x = nodes_[n];
  --x.held[ti];
  --tier_pages_[ti];
  const std::uint32_t parent = x.parent;
  if (j == 0 && parent != none) {  // the parent's last page may have become a leaf of the tier
    --nodes_[parent].children_holding[ti];
    consider(parent);
  }
  if constexpr (Dry) {
    undo_.push_back({p, n});
  } else if (s.unused()) {
    node& y = nodes_[n];
    if (y.children == 0 && j > 0 && j + 1 == y.count) {  // the tail of a leaf: freed here, as trim() would
      store_.free(p);
      --y.count;
      if (std::size_t(y.begin) + y.count + 1 == lists_.size()) lists_.pop_back();
      else ++list_garbage_;
      const detail::page_state t = store_.state(page_at(y, y.count - 1));
      if (t.unused()) trim(n);
    } else {
      trim(n);  // the node may go, and its parent after it
    }
  }
}

// Walks node n from its tail, offering tier ti's evictable copies. Returns the copies taken;
// refused is set when take() kept one.
template <eviction_policy Policy, std::size_t PageSize>
template <bool Dry, class Take>
std::size_t radix_index<Policy, PageSize>::drain_node(std::uint32_t n, std::size_t ti, std::size_t budget,
                                                      Take& take, bool& refused) {
  const std::uint32_t bit = 1u << ti;
  // No array grows during a pass (take() must not insert), so their addresses hold: kept in locals.
  node* const nodes = nodes_.data();
  const std::uint32_t* const lists = lists_.data();
  const detail::page_record* const rec = store_.records();
  std::size_t taken = 0;
  std::uint32_t j = std::min(nodes[n].count, nodes[n].tier_end[ti]);
  nodes[n].tier_end[ti] = nodes[n].count;  // trivially true; a gain of the tier during the pass resets it
  std::uint32_t top = none;                // the highest position that still holds the tier after this pass
  if constexpr (!Dry) {
    // The common case, a leaf's tail whose pages hold only this tier (no lock, nothing in flight):
    // each page taken leaves the tree at once, and the node's counts move once for the whole run.
    // The first page (the node's edge) and every other case go through the general loop below.
    node& x = nodes[n];
    if (x.children == 0 && j == x.count && j > 1) {
      const std::uint32_t begin = x.begin;
      std::uint32_t k = j;
      std::uint32_t lowest = none;  // the lowest id freed: the free bitmap's hint moves once
      while (taken < budget && k > 1) {
        const std::uint32_t p = lists[begin + k - 1];
        if (rec[p].state.word != bit) break;
        if (!take(p)) {
          refused = true;
          top = k - 1;
          break;
        }
        policy_.on_evict(x.state);
        store_.drop_last_copy(p);
        lowest = std::min(lowest, p);
        --k;
        ++taken;
      }
      if (const std::uint32_t gone = j - k; gone > 0) {
        store_.ids_freed(lowest);
        x.count = k;
        x.held[ti] -= gone;
        tier_pages_[ti] -= gone;
        if (std::size_t(begin) + j == lists_.size()) lists_.resize(lists_.size() - gone);
        else list_garbage_ += gone;
        j = k;
        if (!refused && rec[lists[begin + k - 1]].state.unused()) trim(n);  // a copyless page now ends the leaf
      }
      if (refused) {
        nodes_[n].tier_end[ti] = top + 1;
        return taken;
      }
    }
  }
  while (taken < budget && nodes[n].alive) {
    const node& x = nodes[n];
    j = std::min(j, x.count);  // trimming may have shortened the node
    if (j == 0) break;
    --j;
    const std::uint32_t p = lists[x.begin + j];
    const detail::page_state s = rec[p].state;
    if (!(s.word & bit)) continue;
    const bool below = j + 1 < x.count ? (rec[lists[x.begin + j + 1]].state.word & bit) != 0
                                       : x.children_holding[ti] > 0;
    if (below || (s.word >> 8) != 0) {  // another page holds it, or locked, or in flight
      if (top == none) top = j;
      continue;
    }
    if (!take(p)) {
      refused = true;
      if (top == none) top = j;
      break;
    }
    if constexpr (!Dry) policy_.on_evict(nodes_[n].state);
    lose_tier<Dry>(n, j, p, ti);
    ++taken;
  }
  // Nothing from j up to the old end holds the tier now, except `top` and what lies below it.
  if (nodes_[n].alive && nodes_[n].tier_end[ti] != none)
    nodes_[n].tier_end[ti] = top != none ? top + 1 : std::min(j, nodes_[n].count);
  return taken;
}

template <eviction_policy Policy, std::size_t PageSize>
template <bool Dry, class Take>
std::size_t radix_index<Policy, PageSize>::drain(tier_id tier, std::size_t max_pages, Take& take) {
  const std::size_t ti = std::size_t(tier);
  std::size_t taken = 0;
  deferred_.clear();
  dry_pass_ = Dry;
  while (taken < max_pages && !heaps_[ti].empty()) {
    auto& heap = heaps_[ti];
    std::pop_heap(heap.begin(), heap.end(), std::greater<>{});
    const heap_entry e = heap.back();
    heap.pop_back();
    const node& x = nodes_[e.node];
    if (!x.alive || x.held[ti] == 0 || policy_.key(x.state) != e.key) continue;  // stale
    bool refused = false;
    taken += drain_node<Dry>(e.node, ti, max_pages - taken, take, refused);
    const node& y = nodes_[e.node];
    // Dry: nothing really went, so every node looked at goes back to the heap.
    if (Dry || (y.alive && y.held[ti] > 0 && (refused || taken == max_pages))) deferred_.push_back(e.node);
  }
  if constexpr (Dry) {
    const std::uint8_t bit = std::uint8_t(1u << ti);
    for (auto u = undo_.rbegin(); u != undo_.rend(); ++u) {
      store_.state(u->page).word |= bit;
      node& x = nodes_[u->node];
      ++x.held[ti];
      ++tier_pages_[ti];
      x.tier_end[ti] = none;
      if (page_at(x, 0) == u->page && x.parent != none) ++nodes_[x.parent].children_holding[ti];
    }
    undo_.clear();
  }
  dry_pass_ = false;
  for (std::uint32_t n : deferred_)
    if (nodes_[n].alive) push_heap_entry(tier, n);
  return taken;
}

template <eviction_policy Policy, std::size_t PageSize>
template <class OnVictim>
  requires std::is_invocable_r_v<bool, OnVictim&, const victim&>
std::size_t radix_index<Policy, PageSize>::evict(tier_id tier, std::size_t max_pages, OnVictim&& on_victim) {
  auto take = [&](std::uint32_t p) { return on_victim(victim{page_id{p}, tier, store_.residency(p)}); };
  const std::size_t dropped = drain<false>(tier, max_pages, take);
  if (dropped > 0) give_back_memory();
  return dropped;
}

template <eviction_policy Policy, std::size_t PageSize>
std::size_t radix_index<Policy, PageSize>::collect_victims(tier_id tier, std::size_t max_pages,
                                                           std::vector<page_id>& out) {
  auto take = [&](std::uint32_t p) {
    out.push_back(page_id{p});
    return true;
  };
  return drain<true>(tier, max_pages, take);
}

template <eviction_policy Policy, std::size_t PageSize>
void radix_index<Policy, PageSize>::push_heap_entry(tier_id t, std::uint32_t n) {
  auto& heap = heaps_[std::size_t(t)];
  if (!dry_pass_ && heap.size() > 2 * live_nodes_ + 256) {
    // Too many stale entries: rebuild from the live nodes.
    heap.clear();
    for (std::uint32_t i = 0; i < nodes_.size(); ++i)
      if (nodes_[i].alive && nodes_[i].held[std::size_t(t)] > 0) heap.push_back({policy_.key(nodes_[i].state), i});
    std::make_heap(heap.begin(), heap.end(), std::greater<>{});
    if (heap.capacity() > 2 * heap.size() + 256) heap.shrink_to_fit();  // the tree shrank
    return;
  }
  heap.push_back({policy_.key(nodes_[n].state), n});
  std::push_heap(heap.begin(), heap.end(), std::greater<>{});
}

// Offers node n to the eviction heaps of the tiers it holds pages in.
template <eviction_policy Policy, std::size_t PageSize>
void radix_index<Policy, PageSize>::consider(std::uint32_t n) {
  for (std::size_t t = 0; t < tier_count; ++t)
    if (nodes_[n].held[t] > 0) push_heap_entry(tier_id(t), n);
}

}  // namespace kvtier
