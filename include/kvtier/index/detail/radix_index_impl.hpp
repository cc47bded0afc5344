#pragma once
// Out-of-line members of radix_index (included by kvtier/index/radix_index.hpp only): nodes,
// per-page accounting, trimming, locks, residency edits, lazy page keys, memory. The prefix walk
// is in radix_walk.hpp, the victim cursor in victim_cursor.hpp.
#include "kvtier/index/radix_index.hpp"

namespace kvtier {

template <eviction_policy Policy, std::size_t PageSize>
std::uint32_t radix_index<Policy, PageSize>::root_of(namespace_id ns, bool create) {
  if (auto it = roots_.find(ns.value()); it != roots_.end()) return it->second;
  if (!create) return none;
  const std::uint32_t r = alloc_node();
  nodes_[r].ns = ns;
  nodes_[r].begin = std::uint32_t(lists_.size());
  roots_.emplace(ns.value(), r);
  return r;
}

template <eviction_policy Policy, std::size_t PageSize>
std::uint32_t radix_index<Policy, PageSize>::alloc_node() {
  std::uint32_t n;
  if (!free_nodes_.empty()) {
    n = free_nodes_.back();
    free_nodes_.pop_back();
    nodes_[n] = node{};
  } else {
    if (nodes_.size() >= page_limit) throw std::length_error("kvtier: radix_index node count above 2^32-2");
    n = std::uint32_t(nodes_.size());
    nodes_.push_back(node{});
  }
  nodes_[n].alive = true;
  ++live_nodes_;
  return n;
}

// Moves page p to residency `next`, keeping the per-node and per-parent tier counts right.
template <eviction_policy Policy, std::size_t PageSize>
void radix_index<Policy, PageSize>::account(std::uint32_t p, const page_residency& next) {
  const std::uint8_t was = store_.state(p).tiers();
  store_.set_residency(p, next);
  const std::uint8_t is = next.tiers.bits;
  if (was == is) return;
  node& n = nodes_[store_.owner(p)];
  const bool first = page_at(n, 0) == p;
  bool lost = false;
  const unsigned changed = unsigned(was ^ is);
  for (std::size_t t = 0; t < tier_count; ++t) {
    if (((changed >> t) & 1u) == 0) continue;
    const bool has = ((unsigned(is) >> t) & 1u) != 0;
    if (has) {
      ++n.held[t];
      ++tier_pages_[t];
      n.tier_end[t] = none;  // the page's position is not known here
    } else {
      --n.held[t];
      --tier_pages_[t];
      lost = true;
    }
    if (first && n.parent != none) {
      auto& c = nodes_[n.parent].children_holding[t];
      has ? ++c : --c;
    }
  }
  // The parent's last page may have become a leaf of a tier.
  if (first && lost && n.parent != none) consider(n.parent);
}

// Removes pages with no copy from the tail of leaf n, then n itself if empty, then upwards.
template <eviction_policy Policy, std::size_t PageSize>
void radix_index<Policy, PageSize>::trim(std::uint32_t n) {
  while (n != none && nodes_[n].parent != none) {
    node& x = nodes_[n];
    if (x.children > 0 || x.count == 0) return;
    std::uint64_t edge = 0;
    while (x.count > 0) {
      const std::uint32_t p = page_at(x, x.count - 1);
      const detail::page_state s = store_.state(p);
      if (!s.unused()) break;
      if (x.count == 1) edge = edge_of(x.parent, store_.tokens(p));
      store_.free(p);
      --x.count;
      if (std::size_t(x.begin) + x.count + 1 == lists_.size()) lists_.pop_back();
      else ++list_garbage_;
    }
    if (x.count > 0) return;
    const std::uint32_t parent = x.parent;
    children_.erase(edge, n);
    --nodes_[parent].children;
    x.alive = false;
    free_nodes_.push_back(n);
    --live_nodes_;
    n = parent;
  }
}

// In place (no second arena, so no fresh memory to fault in): the runs slide down in arena order.
template <eviction_policy Policy, std::size_t PageSize>
void radix_index<Policy, PageSize>::compact_lists() {
  deferred_.clear();
  for (std::uint32_t i = 0; i < nodes_.size(); ++i) {
    if (!nodes_[i].alive) continue;
    if (nodes_[i].count > 0) deferred_.push_back(i);
    else nodes_[i].begin = 0;  // a namespace root: holds no pages
  }
  std::sort(deferred_.begin(), deferred_.end(), [&](std::uint32_t a, std::uint32_t b) { return nodes_[a].begin < nodes_[b].begin; });
  std::uint32_t to = 0;
  for (const std::uint32_t i : deferred_) {
    node& x = nodes_[i];
    if (x.begin != to) std::memmove(lists_.data() + to, lists_.data() + x.begin, x.count * sizeof(std::uint32_t));
    x.begin = to;
    to += x.count;
  }
  deferred_.clear();
  lists_.resize(to);
  if (lists_.capacity() > std::size_t(to) + to / 2 + 4096) lists_.shrink_to(to + to / 4);  // the tree shrank
  list_garbage_ = 0;
}

// After eviction: storage the tree no longer needs goes back (page arrays above the highest live
// page, the page arena's garbage, spare node slots at the end).
template <eviction_policy Policy, std::size_t PageSize>
void radix_index<Policy, PageSize>::give_back_memory() {
  store_.trim();
  if (list_garbage_ > 256 && list_garbage_ * 2 > lists_.size()) compact_lists();
  else if (lists_.capacity() > lists_.size() + lists_.size() / 2 + 4096) lists_.shrink_to(lists_.size() + lists_.size() / 4);
  if (nodes_.size() > 1024 && live_nodes_ * 2 < nodes_.size()) {
    std::size_t keep = nodes_.size();
    while (keep > 0 && !nodes_[keep - 1].alive) --keep;
    if (keep * 4 < nodes_.size() * 3) {
      nodes_.resize(keep);
      nodes_.shrink_to_fit();
      std::erase_if(free_nodes_, [&](std::uint32_t n) { return n >= keep; });
      free_nodes_.shrink_to_fit();
    }
  }
}

// ---------------------------------------------------------------------------- locks
template <eviction_policy Policy, std::size_t PageSize>
result<void> radix_index<Policy, PageSize>::lock(std::span<const page_id> pages) {
  for (page_id p : pages)
    if (!valid(p)) return make_error(errc::invalid_argument);
  for (page_id p : pages) store_.add_lock(p.value());
  return {};
}

template <eviction_policy Policy, std::size_t PageSize>
result<void> radix_index<Policy, PageSize>::unlock(std::span<const page_id> pages) {
  // Decrement while validating (a page listed twice needs two locks); undo on a bad handle.
  for (std::size_t k = 0; k < pages.size(); ++k) {
    const page_id p = pages[k];
    if (!valid(p) || store_.state(p.value()).locks() == 0) {
      for (std::size_t u = 0; u < k; ++u) store_.add_lock(pages[u].value());
      return make_error(errc::invalid_argument);
    }
    store_.remove_lock(p.value());
  }
  std::uint32_t last = none;
  for (auto it = pages.rbegin(); it != pages.rend(); ++it) {
    const std::uint32_t p = it->value();
    if (!contains(*it) || store_.state(p).locks() != 0) continue;
    const std::uint32_t n = store_.owner(p);
    if (store_.state(p).tiers() == 0) {
      trim(n);
      continue;
    }
    if (n != last) consider(n);
    last = n;
  }
  return {};
}

// ------------------------------------------------------------------------ residency
template <eviction_policy Policy, std::size_t PageSize>
result<page_info> radix_index<Policy, PageSize>::info(page_id page) const {
  if (!valid(page)) return make_error(errc::invalid_argument);
  const std::uint32_t p = page.value();
  return page_info{key_of(p), nodes_[store_.owner(p)].ns, store_.residency(p), store_.locks(p)};
}

template <eviction_policy Policy, std::size_t PageSize>
result<page_residency> radix_index<Policy, PageSize>::residency(page_id page) const {
  if (!valid(page)) return make_error(errc::invalid_argument);
  return store_.residency(page.value());
}

template <eviction_policy Policy, std::size_t PageSize>
result<void> radix_index<Policy, PageSize>::set_residency(page_id page, page_residency next) {
  if (!valid(page)) return make_error(errc::invalid_argument);
  const std::uint32_t p = page.value();
  account(p, next);
  const std::uint32_t n = store_.owner(p);
  if (store_.state(p).tiers() == 0) trim(n);  // frees nodes only: n's slot is not reused here
  if (nodes_[n].alive) consider(n);
  return {};
}

template <eviction_policy Policy, std::size_t PageSize>
result<void> radix_index<Policy, PageSize>::add_tier(page_id page, tier_id tier, bool in_flight) {
  if (!valid(page)) return make_error(errc::invalid_argument);
  page_residency r = store_.residency(page.value());
  r.tiers.add(tier);
  in_flight ? r.in_flight.add(tier) : r.in_flight.remove(tier);
  return set_residency(page, r);
}

template <eviction_policy Policy, std::size_t PageSize>
result<void> radix_index<Policy, PageSize>::set_in_flight(page_id page, tier_id tier, bool in_flight) {
  if (!valid(page)) return make_error(errc::invalid_argument);
  page_residency r = store_.residency(page.value());
  if (!r.tiers.has(tier)) return make_error(errc::not_found);
  in_flight ? r.in_flight.add(tier) : r.in_flight.remove(tier);
  return set_residency(page, r);
}

template <eviction_policy Policy, std::size_t PageSize>
result<void> radix_index<Policy, PageSize>::set_device_slot(page_id page, device_slot slot) {
  if (!valid(page)) return make_error(errc::invalid_argument);
  if (!tier_set{store_.state(page.value()).tiers()}.has(tier_id::device)) return make_error(errc::not_found);
  store_.device(page.value()) = slot;
  return {};
}

template <eviction_policy Policy, std::size_t PageSize>
result<void> radix_index<Policy, PageSize>::set_host_slot(page_id page, host_slot slot) {
  if (!valid(page)) return make_error(errc::invalid_argument);
  if (!tier_set{store_.state(page.value()).tiers()}.has(tier_id::host)) return make_error(errc::not_found);
  store_.host(page.value()) = slot;
  return {};
}

template <eviction_policy Policy, std::size_t PageSize>
result<void> radix_index<Policy, PageSize>::remove_tier(page_id page, tier_id tier) {
  if (!valid(page)) return make_error(errc::invalid_argument);
  page_residency r = store_.residency(page.value());
  if (!r.tiers.has(tier)) return make_error(errc::not_found);
  r.tiers.remove(tier);
  return set_residency(page, r);
}

// ------------------------------------------------------------------------- page keys
// key(page) = XXH3-128(ns, model, key(parent page), tokens), computed when first asked for: walk
// up to the nearest page whose key is known (or the namespace root), then hash down, remembering
// every key on the way. Keys depend on the prefix's tokens only, so splits never change them.
template <eviction_policy Policy, std::size_t PageSize>
page_key radix_index<Policy, PageSize>::key_of(std::uint32_t p) const {
  if (const page_key k = store_.known_key(p); k != page_key{}) return k;
  std::uint32_t n = store_.owner(p);
  std::uint32_t j = 0;
  while (page_at(nodes_[n], j) != p) ++j;
  chain_scratch_.clear();
  page_key parent = root_page_key;
  for (;;) {
    const std::uint32_t q = page_at(nodes_[n], j);
    if (const page_key k = store_.known_key(q); k != page_key{}) {
      parent = k;
      break;
    }
    chain_scratch_.push_back(q);
    if (j > 0) {
      --j;
      continue;
    }
    n = nodes_[n].parent;
    if (nodes_[n].parent == none) break;  // a namespace root holds no pages
    j = nodes_[n].count - 1;
  }
  const namespace_id ns = nodes_[store_.owner(p)].ns;
  for (auto q = chain_scratch_.rbegin(); q != chain_scratch_.rend(); ++q) {
    parent = chain_page_key(ns, options_.model, parent, std::span(store_.tokens(*q), pages_.tokens()));
    store_.remember_key(*q, parent);
  }
  return parent;
}

template <eviction_policy Policy, std::size_t PageSize>
std::size_t radix_index<Policy, PageSize>::memory_bytes() const noexcept {
  std::size_t b = store_.memory_bytes() + nodes_.memory_bytes() + free_nodes_.capacity() * 4 +
                  lists_.memory_bytes() + children_.memory_bytes() + deferred_.capacity() * 4 +
                  undo_.capacity() * sizeof(undo_entry) + path_scratch_.capacity() * sizeof(page_id) +
                  chain_scratch_.capacity() * 4;
  for (const auto& h : heaps_) b += h.capacity() * sizeof(heap_entry);
  b += roots_.size() * (sizeof(std::uint64_t) + sizeof(std::uint32_t) + 2 * sizeof(void*)) +
       roots_.bucket_count() * sizeof(void*);
  return b;
}

}  // namespace kvtier

#include "kvtier/index/detail/radix_walk.hpp"
#include "kvtier/index/detail/victim_cursor.hpp"
