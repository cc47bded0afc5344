#pragma once
// radix_index's prefix walk and the three operations built on it: match, insert (with split and
// append) and the look-ahead hint walk (included by kvtier/index/radix_index.hpp only).
#include "kvtier/index/radix_index.hpp"

namespace kvtier {

// One node boundary costs one edge-hash probe; inside a node each page is one 64-byte compare.
template <eviction_policy Policy, std::size_t PageSize>
template <class OnPage, class OnNode>
auto radix_index<Policy, PageSize>::walk(std::uint32_t root, std::span<const token_id> tokens, OnPage&& on_page,
                                         OnNode&& on_node) -> walk_end {
  const std::size_t n = pages_.full_pages(tokens.size());
  // No page is added or moved during a walk (append_pages runs after it, splits reuse ranges), so
  // the arena's and the tokens' addresses stay in registers whatever on_page stores.
  const std::uint32_t* const lists = lists_.data();
  const token_id* const stored = store_.tokens(0);
  std::uint32_t at = root;
  std::size_t i = 0;
  while (i < n) {
    const std::uint32_t c = find_child(at, query_page(tokens, i));
    if (c == none) break;
    const std::uint32_t count = nodes_[c].count;
    const std::uint32_t begin = nodes_[c].begin;
    const std::uint32_t last = std::uint32_t(std::min<std::size_t>(count, n - i));  // >= 1
    const std::uint32_t* const ids = lists + begin;
    std::uint32_t j = 0;
    bool go = on_page(ids[0], i);  // the first page's tokens were confirmed by find_child
    if (go) {
      const token_id* q = query_page(tokens, i);
      for (j = 1, ++i; j < last; ++j, ++i) {
        q += pages_.tokens();
        const std::uint32_t p = ids[j];
        if (!same_tokens(stored + std::size_t(p) * pages_.tokens(), q)) break;
        if (!on_page(p, i)) {
          go = false;
          break;
        }
      }
    }
    const std::uint32_t stands_for = on_node(c, j, i);
    if (!go || j < count) return {stands_for, c, i};
    at = c;
  }
  return {at, none, i};
}

// ---------------------------------------------------------------------------- match
template <eviction_policy Policy, std::size_t PageSize>
void radix_index<Policy, PageSize>::match(namespace_id ns, std::span<const token_id> tokens, match_result& out,
                                          match_options options) {
  const std::size_t n = pages_.full_pages(tokens.size());
  const std::uint32_t root = root_of(ns, false);
  if (root == none || n == 0) {
    out.clear();
    return;
  }
  out.device_pages = out.host_pages = out.storage_pages = 0;
  out.locked = false;
  if (options.touch) ++clock_;
  const access_info access{clock_, options.priority};
  std::array<std::size_t, 3> by_source{};
  // Written in place (no capacity test a page), then cut to the matched length; not cleared
  // first, so only the entries beyond the last answer's length are value-initialised.
  out.pages.resize(n);
  out.sources.resize(n);
  page_id* const pages = out.pages.data();
  page_source* const sources = out.sources.data();
  const detail::page_record* const records = store_.records();  // no page is added during a match
  const walk_end end = walk(
      root, tokens,
      [&](std::uint32_t p, std::size_t i) {
        const std::uint8_t src = source_table[records[p].state.ready() & ((1u << tier_count) - 1)];
        if (src == no_source) return false;
        pages[i] = page_id{p};
        sources[i] = page_source(src);
        ++by_source[src];
        return true;
      },
      [&](std::uint32_t c, std::uint32_t j, std::size_t) {
        if (options.touch && j > 0) {
          policy_.on_access(nodes_[c].state, access);
          consider(c);
        }
        return c;
      });
  out.pages.resize(end.pages);
  out.sources.resize(end.pages);
  out.device_pages = by_source[std::size_t(page_source::device)];
  out.host_pages = by_source[std::size_t(page_source::host)];
  out.storage_pages = by_source[std::size_t(page_source::storage)];
  if (options.lock && !out.pages.empty()) {
    for (page_id p : out.pages) store_.add_lock(p.value());
    out.locked = true;
  }
}

// --------------------------------------------------------------------------- insert
// Pages first..n-1 of the prompt under `parent`, in a new leaf (or at the end of `parent` when it
// is a leaf whose run ends the arena). Per-node counts are added once for the whole run.
template <eviction_policy Policy, std::size_t PageSize>
template <class ResidencyOf>
std::uint32_t radix_index<Policy, PageSize>::append_pages(std::uint32_t parent, namespace_id ns,
                                                          std::span<const token_id> tokens, std::size_t first,
                                                          std::size_t n, const access_info& access,
                                                          ResidencyOf& residency, insert_result& r, bool keep_path) {
  const node& pn = nodes_[parent];
  const bool extend = pn.parent != none && pn.children == 0 && pn.count > 0 &&
                      std::size_t(pn.begin) + pn.count == lists_.size();
  std::uint32_t leaf = parent;
  if (!extend) {
    leaf = alloc_node();
    node& ln = nodes_[leaf];
    ln.parent = parent;
    ln.begin = std::uint32_t(lists_.size());
    ln.ns = ns;
    policy_.on_insert(ln.state, access);
    ++nodes_[parent].children;
    children_.insert(edge_of(parent, query_page(tokens, first)), leaf);
  }
  // Ids first (a run from the free bitmap, straight into the node's arena range), then the pages.
  std::uint32_t* const ids = lists_.extend(n - first);
  store_.take_ids(n - first, ids);
  std::array<std::uint32_t, 1u << tier_count> by_tiers{};  // pages per tier set
  std::uint8_t first_tiers = 0;
  if constexpr (std::same_as<std::remove_cvref_t<ResidencyOf>, detail::same_residency>) {
    const page_residency r = residency(first);
    store_.init_run(ids, n - first, leaf, r, query_page(tokens, first));
    first_tiers = store_.state(ids[0]).tiers();
    by_tiers[first_tiers] += std::uint32_t(n - first);
  } else {
    for (std::size_t i = first; i < n; ++i) {
      const std::uint32_t p = ids[i - first];
      const page_residency r = residency(i);
      store_.init(p, leaf, r, query_page(tokens, i));
      const std::uint8_t tiers = store_.state(p).tiers();
      if (i == first) first_tiers = tiers;
      ++by_tiers[tiers];
    }
  }
  if (keep_path)
    for (std::size_t k = 0; k < n - first; ++k) path_scratch_.push_back(page_id{ids[k]});
  r.inserted += (n - first) - by_tiers[0];
  std::array<std::uint32_t, tier_count> gained{};
  for (std::size_t set = 1; set < by_tiers.size(); ++set)
    for (std::size_t t = 0; t < tier_count; ++t) gained[t] += (set >> t) & 1u ? by_tiers[set] : 0;
  node& ln = nodes_[leaf];
  ln.count += std::uint32_t(n - first);
  for (std::size_t t = 0; t < tier_count; ++t) {
    if (gained[t] == 0) continue;
    ln.held[t] += gained[t];
    tier_pages_[t] += gained[t];
    ln.tier_end[t] = none;
    if (!extend && (first_tiers >> t) & 1u) ++nodes_[parent].children_holding[t];
  }
  if (extend) policy_.on_access(ln.state, access);
  consider(leaf);
  return leaf;
}

// insert, and match_and_insert (Match): one walk. While Match, the walk also does what match()
// would have done before the insert: it writes the ready prefix into *out, and a node the match
// would have entered is touched with the match's access (before a split, so the tail keeps it,
// as after the two calls) and then with the insert's.
template <eviction_policy Policy, std::size_t PageSize>
template <bool Match, class ResidencyOf>
insert_result radix_index<Policy, PageSize>::insert_walk(namespace_id ns, std::span<const token_id> tokens,
                                                         ResidencyOf& residency, insert_options options,
                                                         std::vector<page_id>* path, match_result* out,
                                                         match_options match) {
  insert_result r;
  const std::size_t n = pages_.full_pages(tokens.size());
  r.pages = n;
  if constexpr (Match) {  // as match(): not cleared when it will be written (see there)
    out->device_pages = out->host_pages = out->storage_pages = 0;
    out->locked = false;
  }
  if (n == 0) {
    if constexpr (Match) out->clear();
    if (path) path->clear();
    return r;
  }
  std::uint32_t root = root_of(ns, false);
  // The match part: as match(), nothing (and no clock tick) when the namespace has no root yet.
  bool matching = Match && root != none;
  if constexpr (Match)
    if (!matching) out->clear();
  const bool match_touch = matching && match.touch;
  if (match_touch) ++clock_;
  const access_info match_access{clock_, match.priority};
  if (root == none) root = root_of(ns, true);
  if (list_garbage_ > 256 && list_garbage_ * 2 > lists_.size()) compact_lists();
  const bool keep_path = options.lock || path;
  path_scratch_.clear();
  const access_info access{++clock_, options.priority};
  std::size_t matched = matching ? n : 0;  // the first prompt page the match would not take
  std::array<std::size_t, 3> by_source{};
  page_id* pages = nullptr;
  page_source* sources = nullptr;
  if constexpr (Match) {
    if (matching) {  // written in place, then cut to the matched length
      out->pages.resize(n);
      out->sources.resize(n);
    }
    pages = out->pages.data();
    sources = out->sources.data();
  }
  const detail::page_record* const records = store_.records();  // no page is added during the walk
  // (`auto keep`, not a template lambda: nvcc 13's host pass rejects a template lambda in an
  // out-of-class member template.)
  const auto on_page = [&](auto keep) {
    return [&](std::uint32_t p, std::size_t i) {
      if constexpr (decltype(keep)::value) path_scratch_.push_back(page_id{p});
      if constexpr (Match) {
        if (matching) {
          const std::uint8_t src = source_table[records[p].state.ready() & ((1u << tier_count) - 1)];
          if (src != no_source) {  // ready, so it has a copy: existing (counted at the end)
            pages[i] = page_id{p};
            sources[i] = page_source(src);
            ++by_source[src];
            return true;
          }
          matching = false;
          matched = i;
        }
      }
      if (records[p].state.tiers() == 0) {  // a page whose copies were all dropped: refilled
        account(p, residency(i));
        r.inserted += store_.state(p).tiers() != 0;
      } else {
        ++r.existing;
      }
      return true;
    };
  };
  const auto on_node = [&](std::uint32_t c, std::uint32_t j, std::size_t i) {
    bool match_touched = false;
    if constexpr (Match) {  // the match walked pages [i - j, min(i, matched)) of c
      match_touched = match_touch && std::min(i, matched) > i - j;
      if (match_touched) policy_.on_access(nodes_[c].state, match_access);
    }
    // Diverging inside c: its head becomes a node of its own (the parent of what follows), and
    // only the head counts as accessed by the insert.
    const std::uint32_t at = (i < n && j < nodes_[c].count) ? split(c, j) : c;
    if (match_touched && at != c) consider(c);
    policy_.on_access(nodes_[at].state, access);
    consider(at);
    return at;
  };
  const walk_end end = keep_path ? walk(root, tokens, on_page(std::true_type{}), on_node)
                                 : walk(root, tokens, on_page(std::false_type{}), on_node);
  if constexpr (Match) {
    if (matching) matched = end.pages;
    r.existing += matched;
    out->pages.resize(matched);
    out->sources.resize(matched);
    out->device_pages = by_source[std::size_t(page_source::device)];
    out->host_pages = by_source[std::size_t(page_source::host)];
    out->storage_pages = by_source[std::size_t(page_source::storage)];
  }
  std::uint32_t last = end.at;
  if (end.pages < n) last = append_pages(end.at, ns, tokens, end.pages, n, access, residency, r, keep_path);
  // Pages given no copy at the end of a new branch do not stay.
  trim(last);
  if constexpr (Match) {
    if (match.lock && !out->pages.empty()) {
      for (page_id p : out->pages) store_.add_lock(p.value());
      out->locked = true;
    }
  }
  if (options.lock)
    for (page_id p : path_scratch_)
      if (contains(p)) store_.add_lock(p.value());
  if (path) {
    path->clear();
    for (page_id p : path_scratch_)
      if (contains(p)) path->push_back(p);
  }
  return r;
}

// Splits c after its first j pages: a new node h takes them and becomes c's parent.
template <eviction_policy Policy, std::size_t PageSize>
std::uint32_t radix_index<Policy, PageSize>::split(std::uint32_t c, std::uint32_t j) {
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
  std::array<std::uint32_t, 1u << tier_count> by_tiers{};  // head pages per tier set
  const std::uint32_t* const ids = lists_.data() + hn.begin;
  for (std::uint32_t k = 0; k < j; ++k) {
    const std::uint32_t p = ids[k];
    store_.owner(p) = h;
    ++by_tiers[store_.state(p).tiers() & ((1u << tier_count) - 1)];
  }
  for (std::size_t set = 1; set < by_tiers.size(); ++set)
    for (std::size_t t = 0; t < tier_count; ++t) {
      const std::uint32_t moved = (set >> t) & 1u ? by_tiers[set] : 0;
      hn.held[t] += moved;
      cn.held[t] -= moved;
    }
  const std::uint8_t head_of_c = store_.state(page_at(cn, 0)).tiers();
  for (std::size_t t = 0; t < tier_count; ++t) hn.children_holding[t] = (head_of_c >> t) & 1u;
  children_.replace(edge_of(hn.parent, store_.tokens(page_at(hn, 0))), c, h);
  children_.insert(edge_of(h, store_.tokens(page_at(cn, 0))), c);
  consider(h);  // its last page may be a leaf of a tier that c's first page is not in
  return h;
}

// ----------------------------------------------------------------------- look-ahead
template <eviction_policy Policy, std::size_t PageSize>
void radix_index<Policy, PageSize>::walk_expect(namespace_id ns, std::span<const token_id> tokens, int delta) {
  const std::uint32_t root = root_of(ns, false);
  if (root == none) return;
  (void)walk(
      root, tokens, [](std::uint32_t, std::size_t) { return true; },
      [&](std::uint32_t c, std::uint32_t, std::size_t) {
        if constexpr (look_ahead_policy<Policy>) policy_.on_expect(nodes_[c].state, delta);
        consider(c);
        return c;
      });
}

}  // namespace kvtier
