#pragma once
// Out-of-line members of radix_index (included by kvtier/index/radix_index.hpp only).
#include "kvtier/index/radix_index.hpp"

namespace kvtier {

#define KVTIER_RADIX template <eviction_policy Policy, std::size_t PageSize>
#define KVTIER_RADIX_T radix_index<Policy, PageSize>

KVTIER_RADIX void KVTIER_RADIX_T::reserve(std::size_t n) {
  if (lists_.size() == lists_.capacity()) lists_.reserve(lists_.size() + n - owner_.size());
  tokens_.reserve(n * pages_.tokens());
  keys_.reserve(n);
  residency_.reserve(n);
  locks_.reserve(n);
  owner_.reserve(n);
}

KVTIER_RADIX std::uint32_t KVTIER_RADIX_T::root_of(namespace_id ns, bool create) {
  if (auto it = roots_.find(ns.value()); it != roots_.end()) return it->second;
  if (!create) return none;
  const std::uint32_t r = alloc_node();
  nodes_[r].ns = ns;
  nodes_[r].begin = std::uint32_t(lists_.size());
  roots_.emplace(ns.value(), r);
  return r;
}

KVTIER_RADIX std::uint32_t KVTIER_RADIX_T::alloc_node() {
  std::uint32_t n;
  if (!free_nodes_.empty()) {
    n = free_nodes_.back();
    free_nodes_.pop_back();
    nodes_[n] = node{};
  } else {
    if (nodes_.size() >= page_limit) throw std::length_error("kvtier: radix_index node count above 2^32-2");
    n = std::uint32_t(nodes_.size());
    nodes_.emplace_back();
  }
  nodes_[n].alive = true;
  ++live_nodes_;
  return n;
}

KVTIER_RADIX std::uint32_t KVTIER_RADIX_T::alloc_page() {
  std::uint32_t p;
  if (!free_pages_.empty()) {
    p = free_pages_.back();
    free_pages_.pop_back();
  } else {
    if (owner_.size() >= page_limit) throw std::length_error("kvtier: radix_index page count above 2^32-2");
    p = std::uint32_t(owner_.size());
    if (owner_.size() == owner_.capacity()) reserve(owner_.size() + owner_.size() / 4 + 64);  // 25% slack, not 100%
    tokens_.resize(tokens_.size() + pages_.tokens());
    keys_.emplace_back();
    residency_.emplace_back();
    locks_.push_back(0);
    owner_.push_back(none);
  }
  ++live_pages_;
  return p;
}

KVTIER_RADIX void KVTIER_RADIX_T::free_page(std::uint32_t p) {
  owner_[p] = none;
  residency_[p] = page_residency{};
  locks_[p] = 0;
  free_pages_.push_back(p);
  --live_pages_;
}

// Moves page p to `next` residency, keeping the per-node and per-parent tier counts right.
KVTIER_RADIX void KVTIER_RADIX_T::account(std::uint32_t p, const page_residency& next) {
  const page_residency prev = residency_[p];
  residency_[p] = next;
  if (prev.tiers == next.tiers) return;
  node& n = nodes_[owner_[p]];
  const bool first = page_at(n, 0) == p;
  bool lost = false;
  for (std::size_t t = 0; t < tier_count; ++t) {
    const bool was = prev.tiers.has(tier_id(t)), is = next.tiers.has(tier_id(t));
    if (was == is) continue;
    if (is) {
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
      is ? ++c : --c;
    }
  }
  // The parent's last page may have become a leaf of a tier.
  if (first && lost && n.parent != none) consider(n.parent);
}

KVTIER_RADIX void KVTIER_RADIX_T::push_heap_entry(tier_id t, std::uint32_t n) {
  auto& heap = heaps_[std::size_t(t)];
  if (heap.size() > 2 * live_nodes_ + 1024) {
    // Too many stale entries: rebuild from the live nodes.
    heap.clear();
    for (std::uint32_t i = 0; i < nodes_.size(); ++i)
      if (nodes_[i].alive && nodes_[i].held[std::size_t(t)] > 0) heap.push_back({policy_.key(nodes_[i].state), i});
    std::make_heap(heap.begin(), heap.end(), std::greater<>{});
    return;
  }
  heap.push_back({policy_.key(nodes_[n].state), n});
  std::push_heap(heap.begin(), heap.end(), std::greater<>{});
}

// Offers node n to the eviction heaps of the tiers it holds pages in.
KVTIER_RADIX void KVTIER_RADIX_T::consider(std::uint32_t n) {
  for (std::size_t t = 0; t < tier_count; ++t)
    if (nodes_[n].held[t] > 0) push_heap_entry(tier_id(t), n);
}

// Removes pages with no copy from the tail of leaf n, then n itself if empty, then upwards.
KVTIER_RADIX void KVTIER_RADIX_T::trim(std::uint32_t n) {
  while (n != none && nodes_[n].parent != none) {
    node& x = nodes_[n];
    if (x.children > 0 || x.count == 0) return;
    const page_key first_key = keys_[page_at(x, 0)];
    while (x.count > 0) {
      const std::uint32_t p = page_at(x, x.count - 1);
      if (!residency_[p].tiers.empty() || locks_[p] != 0) break;
      free_page(p);
      --x.count;
      if (std::size_t(x.begin) + x.count + 1 == lists_.size()) lists_.pop_back();
      else ++list_garbage_;
    }
    if (x.count > 0) return;
    const std::uint32_t parent = x.parent;
    children_.erase(first_key, n);
    --nodes_[parent].children;
    x.alive = false;
    free_nodes_.push_back(n);
    --live_nodes_;
    n = parent;
  }
}

KVTIER_RADIX void KVTIER_RADIX_T::compact_lists() {
  std::vector<std::uint32_t> next;
  next.reserve(lists_.size() - list_garbage_ + lists_.size() / 4);
  for (node& x : nodes_) {
    if (!x.alive) continue;
    const std::uint32_t begin = std::uint32_t(next.size());
    next.insert(next.end(), lists_.begin() + x.begin, lists_.begin() + x.begin + x.count);
    x.begin = begin;
  }
  lists_.swap(next);
  list_garbage_ = 0;
}

// Splits c after its first j pages: a new node h takes them and becomes c's parent.
KVTIER_RADIX std::uint32_t KVTIER_RADIX_T::split(std::uint32_t c, std::uint32_t j) {
  const std::uint32_t h = alloc_node();
  node& hn = nodes_[h];
  node& cn = nodes_[c];
  hn.parent = cn.parent;
  hn.begin = cn.begin;
  hn.count = j;
  hn.children = 1;
  hn.ns = cn.ns;
  hn.state = cn.state;
  cn.begin += j;
  cn.count -= j;
  cn.parent = h;
  for (auto& e : cn.tier_end) e = e == none ? none : (e > j ? e - j : 0);
  for (std::uint32_t k = 0; k < j; ++k) {
    const std::uint32_t p = page_at(hn, k);
    owner_[p] = h;
    for (std::size_t t = 0; t < tier_count; ++t)
      if (residency_[p].tiers.has(tier_id(t))) {
        ++hn.held[t];
        --cn.held[t];
      }
  }
  const page_residency& head_of_c = residency_[page_at(cn, 0)];
  for (std::size_t t = 0; t < tier_count; ++t) hn.children_holding[t] = head_of_c.tiers.has(tier_id(t)) ? 1 : 0;
  children_.replace(keys_[page_at(hn, 0)], c, h);
  children_.insert(keys_[page_at(cn, 0)], c);
  consider(h);  // its last page may be a leaf of a tier that c's first page is not in
  return h;
}

// ---------------------------------------------------------------------------- match
KVTIER_RADIX void KVTIER_RADIX_T::match(namespace_id ns, std::span<const token_id> tokens, match_result& out,
                                        match_options options) {
  out.clear();
  const std::size_t n = pages_.full_pages(tokens.size());
  const std::uint32_t root = root_of(ns, false);
  if (root == none || n == 0) return;
  if (options.touch) ++clock_;
  const access_info access{clock_, options.priority};
  std::uint32_t at = root;
  page_key parent_key = root_page_key;
  std::size_t i = 0;
  while (i < n) {
    const auto q = query_page(tokens, i);
    const std::uint32_t c = find_child(at, key_for(ns, parent_key, q), q);
    if (c == none) break;
    const node& cn = nodes_[c];
    std::uint32_t j = 0;
    bool stop = false;
    for (; j < cn.count && i < n; ++j, ++i) {
      const std::uint32_t p = page_at(cn, j);
      if (j > 0 && !same_tokens(p, query_page(tokens, i))) break;
      const auto src = source_of(residency_[p]);
      if (!src) {
        stop = true;
        break;
      }
      out.pages.push_back(page_id{p});
      out.sources.push_back(*src);
      switch (*src) {
        case page_source::device: ++out.device_pages; break;
        case page_source::host: ++out.host_pages; break;
        case page_source::storage: ++out.storage_pages; break;
      }
    }
    if (options.touch && j > 0) {
      policy_.on_access(nodes_[c].state, access);
      consider(c);
    }
    if (stop || j < nodes_[c].count) break;
    at = c;
    parent_key = keys_[page_at(nodes_[c], nodes_[c].count - 1)];
  }
  if (options.lock && !out.pages.empty()) {
    for (page_id p : out.pages) ++locks_[p.value()];
    out.locked = true;
  }
}

// --------------------------------------------------------------------------- insert
KVTIER_RADIX template <class ResidencyOf>
void KVTIER_RADIX_T::append_pages(std::uint32_t parent, namespace_id ns, page_key first_key,
                                  std::span<const token_id> tokens, std::size_t first, std::size_t n,
                                  const access_info& access, ResidencyOf& residency, insert_result& r) {
  std::uint32_t leaf;
  node& pn = nodes_[parent];
  const bool extend = pn.parent != none && pn.children == 0 && pn.count > 0 &&
                      std::size_t(pn.begin) + pn.count == lists_.size();
  if (extend) {
    leaf = parent;  // a leaf whose run ends the arena grows in place
  } else {
    leaf = alloc_node();
    node& ln = nodes_[leaf];
    ln.parent = parent;
    ln.begin = std::uint32_t(lists_.size());
    ln.ns = ns;
    policy_.on_insert(ln.state, access);
    ++nodes_[parent].children;
    children_.insert(first_key, leaf);
  }
  page_key key = first_key;
  for (std::size_t i = first; i < n; ++i) {
    const auto q = query_page(tokens, i);
    if (i != first) key = key_for(ns, key, q);
    const std::uint32_t p = alloc_page();
    std::memcpy(tokens_.data() + std::size_t(p) * pages_.tokens(), q.data(), q.size_bytes());
    keys_[p] = key;
    locks_[p] = 0;
    owner_[p] = leaf;
    lists_.push_back(p);
    ++nodes_[leaf].count;
    const page_residency next = normalized(residency(i));
    if (!next.tiers.empty()) ++r.inserted;
    account(p, next);
    path_scratch_.push_back(page_id{p});
  }
  if (extend) policy_.on_access(nodes_[leaf].state, access);
  consider(leaf);
}

KVTIER_RADIX template <class ResidencyOf>
  requires std::is_invocable_r_v<page_residency, ResidencyOf&, std::size_t>
insert_result KVTIER_RADIX_T::insert(namespace_id ns, std::span<const token_id> tokens, ResidencyOf&& residency,
                                     insert_options options, std::vector<page_id>* path) {
  insert_result r;
  const std::size_t n = pages_.full_pages(tokens.size());
  r.pages = n;
  if (n == 0) {
    if (path) path->clear();
    return r;
  }
  if (list_garbage_ > 4096 && list_garbage_ * 2 > lists_.size()) compact_lists();
  path_scratch_.clear();
  const access_info access{++clock_, options.priority};
  std::uint32_t at = root_of(ns, true);
  page_key parent_key = root_page_key;
  std::size_t i = 0;
  while (i < n) {
    const auto q = query_page(tokens, i);
    const page_key key = key_for(ns, parent_key, q);
    const std::uint32_t c = find_child(at, key, q);
    if (c == none) {
      append_pages(at, ns, key, tokens, i, n, access, residency, r);
      at = owner_[path_scratch_.back().value()];
      i = n;
      break;
    }
    std::uint32_t j = 0;
    for (; j < nodes_[c].count && i < n; ++j, ++i) {
      const std::uint32_t p = page_at(nodes_[c], j);
      if (j > 0 && !same_tokens(p, query_page(tokens, i))) break;
      if (residency_[p].tiers.empty()) {
        const page_residency next = normalized(residency(i));
        if (!next.tiers.empty()) ++r.inserted;
        account(p, next);
      } else {
        ++r.existing;
      }
      path_scratch_.push_back(page_id{p});
    }
    // Diverging inside c: its head becomes a node of its own (the parent of what follows), and
    // only the head counts as accessed.
    at = (i < n && j < nodes_[c].count) ? split(c, j) : c;
    policy_.on_access(nodes_[at].state, access);
    consider(at);
    if (i == n) break;
    parent_key = keys_[page_at(nodes_[at], nodes_[at].count - 1)];
  }
  // Pages given no copy at the end of a new branch do not stay.
  trim(at);
  if (options.lock)
    for (page_id p : path_scratch_)
      if (contains(p)) ++locks_[p.value()];
  if (path) {
    path->clear();
    for (page_id p : path_scratch_)
      if (contains(p)) path->push_back(p);
  }
  return r;
}

// ---------------------------------------------------------------------------- locks
KVTIER_RADIX result<void> KVTIER_RADIX_T::lock(std::span<const page_id> pages) {
  for (page_id p : pages)
    if (!valid(p)) return make_error(errc::invalid_argument);
  for (page_id p : pages) ++locks_[p.value()];
  return {};
}

KVTIER_RADIX result<void> KVTIER_RADIX_T::unlock(std::span<const page_id> pages) {
  // Decrement while validating (a page listed twice needs two locks); undo on a bad handle.
  for (std::size_t k = 0; k < pages.size(); ++k) {
    const page_id p = pages[k];
    if (!valid(p) || locks_[p.value()] == 0) {
      for (std::size_t u = 0; u < k; ++u) ++locks_[pages[u].value()];
      return make_error(errc::invalid_argument);
    }
    --locks_[p.value()];
  }
  std::uint32_t last = none;
  for (auto it = pages.rbegin(); it != pages.rend(); ++it) {
    const std::uint32_t p = it->value();
    if (!contains(*it) || locks_[p] != 0) continue;
    const std::uint32_t n = owner_[p];
    if (residency_[p].tiers.empty()) {
      trim(n);
      continue;
    }
    if (n != last) consider(n);
    last = n;
  }
  return {};
}

// ------------------------------------------------------------------------ residency
KVTIER_RADIX result<page_info> KVTIER_RADIX_T::info(page_id page) const {
  if (!valid(page)) return make_error(errc::invalid_argument);
  const std::uint32_t p = page.value();
  return page_info{keys_[p], nodes_[owner_[p]].ns, residency_[p], locks_[p]};
}

KVTIER_RADIX result<void> KVTIER_RADIX_T::set_residency(page_id page, page_residency next) {
  if (!valid(page)) return make_error(errc::invalid_argument);
  const std::uint32_t p = page.value();
  account(p, normalized(next));
  const std::uint32_t n = owner_[p];
  if (residency_[p].tiers.empty()) trim(n);  // frees nodes only: n's slot is not reused here
  if (nodes_[n].alive) consider(n);
  return {};
}

KVTIER_RADIX result<void> KVTIER_RADIX_T::add_tier(page_id page, tier_id tier, bool in_flight) {
  if (!valid(page)) return make_error(errc::invalid_argument);
  page_residency r = residency_[page.value()];
  r.tiers.add(tier);
  in_flight ? r.in_flight.add(tier) : r.in_flight.remove(tier);
  return set_residency(page, r);
}

KVTIER_RADIX result<void> KVTIER_RADIX_T::set_in_flight(page_id page, tier_id tier, bool in_flight) {
  if (!valid(page)) return make_error(errc::invalid_argument);
  page_residency r = residency_[page.value()];
  if (!r.tiers.has(tier)) return make_error(errc::not_found);
  in_flight ? r.in_flight.add(tier) : r.in_flight.remove(tier);
  return set_residency(page, r);
}

KVTIER_RADIX result<void> KVTIER_RADIX_T::set_device_slot(page_id page, device_slot slot) {
  if (!valid(page)) return make_error(errc::invalid_argument);
  page_residency r = residency_[page.value()];
  if (!r.tiers.has(tier_id::device)) return make_error(errc::not_found);
  residency_[page.value()].device = slot;
  return {};
}

KVTIER_RADIX result<void> KVTIER_RADIX_T::set_host_slot(page_id page, host_slot slot) {
  if (!valid(page)) return make_error(errc::invalid_argument);
  if (!residency_[page.value()].tiers.has(tier_id::host)) return make_error(errc::not_found);
  residency_[page.value()].host = slot;
  return {};
}

KVTIER_RADIX result<void> KVTIER_RADIX_T::remove_tier(page_id page, tier_id tier) {
  if (!valid(page)) return make_error(errc::invalid_argument);
  page_residency r = residency_[page.value()];
  if (!r.tiers.has(tier)) return make_error(errc::not_found);
  r.tiers.remove(tier);
  return set_residency(page, r);
}

// ------------------------------------------------------------------------- eviction
// Walks node n from its tail, dropping (or, with a null callback result, offering) tier t's
// evictable copies. Returns the copies dropped; refused is set when the callback kept one.
KVTIER_RADIX template <class OnVictim>
std::size_t KVTIER_RADIX_T::evict_node(std::uint32_t n, tier_id t, std::size_t budget, OnVictim& on_victim,
                                       bool& refused) {
  const std::size_t ti = std::size_t(t);
  std::size_t dropped = 0;
  std::uint32_t j = std::min(nodes_[n].count, nodes_[n].tier_end[ti]);
  nodes_[n].tier_end[ti] = nodes_[n].count;  // trivially true; a gain of t during the pass resets it
  std::uint32_t top = none;  // the highest position that still holds t after this pass
  while (dropped < budget && nodes_[n].alive) {
    j = std::min(j, nodes_[n].count);  // trimming may have shortened the node
    if (j == 0) break;
    --j;
    const node& x = nodes_[n];
    const std::uint32_t p = page_at(x, j);
    const page_residency r = residency_[p];
    if (!r.tiers.has(t)) continue;
    const bool below = j + 1 < x.count ? residency_[page_at(x, j + 1)].tiers.has(t) : x.children_holding[ti] > 0;
    if (below || locks_[p] != 0 || !r.in_flight.empty()) {
      if (top == none) top = j;
      continue;
    }
    if (!on_victim(victim{page_id{p}, keys_[p], t, r})) {
      refused = true;
      if (top == none) top = j;
      break;
    }
    policy_.on_evict(nodes_[n].state);
    page_residency next = residency_[p];  // the callback may have changed it (say, a backup in flight)
    next.tiers.remove(t);
    account(p, normalized(next));
    ++dropped;
    if (next.tiers.empty()) trim(n);
  }
  // Nothing from j up to the old end holds t now, except `top` and what lies below it.
  if (nodes_[n].alive && nodes_[n].tier_end[ti] != none)
    nodes_[n].tier_end[ti] = top != none ? top + 1 : std::min(j, nodes_[n].count);
  return dropped;
}

KVTIER_RADIX template <class OnVictim>
  requires std::is_invocable_r_v<bool, OnVictim&, const victim&>
std::size_t KVTIER_RADIX_T::evict(tier_id tier, std::size_t max_pages, OnVictim&& on_victim) {
  const std::size_t ti = std::size_t(tier);
  std::size_t dropped = 0;
  deferred_.clear();
  while (dropped < max_pages && !heaps_[ti].empty()) {
    auto& heap = heaps_[ti];
    std::pop_heap(heap.begin(), heap.end(), std::greater<>{});
    const heap_entry e = heap.back();
    heap.pop_back();
    const node& x = nodes_[e.node];
    if (!x.alive || x.held[ti] == 0 || policy_.key(x.state) != e.key) continue;  // stale
    bool refused = false;
    dropped += evict_node(e.node, tier, max_pages - dropped, on_victim, refused);
    if (nodes_[e.node].alive && nodes_[e.node].held[ti] > 0 && (refused || dropped == max_pages))
      deferred_.push_back(e.node);
  }
  for (std::uint32_t n : deferred_)
    if (nodes_[n].alive) push_heap_entry(tier, n);
  return dropped;
}

KVTIER_RADIX std::size_t KVTIER_RADIX_T::collect_victims(tier_id tier, std::size_t max_pages,
                                                         std::vector<page_id>& out) {
  const std::size_t ti = std::size_t(tier);
  std::size_t found = 0;
  deferred_.clear();
  while (found < max_pages && !heaps_[ti].empty()) {
    auto& heap = heaps_[ti];
    std::pop_heap(heap.begin(), heap.end(), std::greater<>{});
    const heap_entry e = heap.back();
    heap.pop_back();
    const node& x = nodes_[e.node];
    if (!x.alive || x.held[ti] == 0 || policy_.key(x.state) != e.key) continue;
    deferred_.push_back(e.node);
    // As evict_node, with collected pages treated as already dropped.
    bool next_collected = false;
    for (std::uint32_t j = std::min(x.count, x.tier_end[ti]); j > 0 && found < max_pages;) {
      --j;
      const std::uint32_t p = page_at(x, j);
      const page_residency& r = residency_[p];
      const bool below = j + 1 < x.count ? residency_[page_at(x, j + 1)].tiers.has(tier) && !next_collected
                                         : x.children_holding[ti] > 0;
      next_collected = false;
      if (!r.tiers.has(tier) || below || locks_[p] != 0 || !r.in_flight.empty()) continue;
      out.push_back(page_id{p});
      next_collected = true;
      ++found;
    }
  }
  for (std::uint32_t n : deferred_) push_heap_entry(tier, n);
  return found;
}

// ----------------------------------------------------------------------- look-ahead
KVTIER_RADIX void KVTIER_RADIX_T::walk_expect(namespace_id ns, std::span<const token_id> tokens, int delta) {
  const std::size_t n = pages_.full_pages(tokens.size());
  std::uint32_t at = root_of(ns, false);
  if (at == none) return;
  page_key parent_key = root_page_key;
  std::size_t i = 0;
  while (i < n) {
    const auto q = query_page(tokens, i);
    const std::uint32_t c = find_child(at, key_for(ns, parent_key, q), q);
    if (c == none) return;
    std::uint32_t j = 0;
    for (; j < nodes_[c].count && i < n; ++j, ++i)
      if (j > 0 && !same_tokens(page_at(nodes_[c], j), query_page(tokens, i))) break;
    if constexpr (look_ahead_policy<Policy>) policy_.on_expect(nodes_[c].state, delta);
    consider(c);
    if (j < nodes_[c].count) return;
    at = c;
    parent_key = keys_[page_at(nodes_[c], nodes_[c].count - 1)];
  }
}

KVTIER_RADIX std::size_t KVTIER_RADIX_T::memory_bytes() const noexcept {
  std::size_t b = keys_.capacity() * sizeof(page_key) + residency_.capacity() * sizeof(page_residency) +
                  locks_.capacity() * 4 + owner_.capacity() * 4 + free_pages_.capacity() * 4 +
                  nodes_.capacity() * sizeof(node) + free_nodes_.capacity() * 4 + lists_.capacity() * 4 +
                  children_.memory_bytes() + deferred_.capacity() * 4 + path_scratch_.capacity() * sizeof(page_id);
  for (const auto& h : heaps_) b += h.capacity() * sizeof(heap_entry);
  b += roots_.size() * (sizeof(std::uint64_t) + sizeof(std::uint32_t) + 2 * sizeof(void*)) +
       roots_.bucket_count() * sizeof(void*);
  return b;
}

#undef KVTIER_RADIX
#undef KVTIER_RADIX_T

}  // namespace kvtier
