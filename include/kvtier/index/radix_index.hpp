#pragma once
// The prefix index: a page-granular radix tree over token ids that knows, for every cached page,
// which tiers hold it and where, whether a copy is in flight, and who is using it.
//  - Only whole pages are indexed; an edge (a node) holds a run of pages; a partial match splits
//    a node; children are found through one flat hash table keyed by a cheap hash of (parent,
//    first page's tokens), confirmed by comparing tokens.
//  - Per page: tiers, in-flight tiers, device slot, host slot, a lock count, and the 128-bit
//    chained key (also the slow-tier key), computed when first asked for (info(), a write below
//    the host), never on the match/insert path. Per node: the eviction policy's state.
//  - Eviction is per tier and leaves first: a page leaves tier T only when the page after it (in
//    its node, or the first page of any child) has no copy in T; locked and in-flight pages stay.
//    A page with no copy left anywhere leaves the tree once it is an unlocked leaf.
//  - Namespaces never share pages: every namespace has its own root and its id enters every key.
// Single-threaded: the caller serialises access (the cache owns the index on its scheduler thread).
#include <algorithm>
#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "kvtier/core/error.hpp"
#include "kvtier/core/page_key.hpp"
#include "kvtier/core/page_size.hpp"
#include "kvtier/core/strong_id.hpp"
#include "kvtier/core/tier.hpp"
#include "kvtier/index/detail/child_table.hpp"
#include "kvtier/index/detail/mapped_array.hpp"
#include "kvtier/index/detail/page_store.hpp"
#include "kvtier/index/page_keys.hpp"
#include "kvtier/index/residency.hpp"
#include "kvtier/policy/eviction/concept.hpp"
#include "kvtier/policy/eviction/lru.hpp"

namespace kvtier {

template <eviction_policy Policy = lru, std::size_t PageSize = dynamic_extent>
class radix_index {
 public:
  using policy_type = Policy;
  using page_size_type = kvtier::page_size<PageSize>;

  explicit radix_index(page_size_type pages, index_options options = {}, Policy policy = {})
      : pages_(pages), options_(options), policy_(std::move(policy)), store_(pages) {
    if (options_.reserve_pages > page_limit) throw config_error("kvtier: radix_index reserve above 2^32-2 pages");
    store_.reserve(options_.reserve_pages);
    lists_.reserve(options_.reserve_pages);
  }
  radix_index() requires(PageSize != dynamic_extent) : radix_index(page_size_type{}) {}

  radix_index(const radix_index&) = delete;
  radix_index& operator=(const radix_index&) = delete;
  radix_index(radix_index&&) noexcept = default;
  radix_index& operator=(radix_index&&) noexcept = default;

  page_size_type page_size() const noexcept { return pages_; }
  std::uint64_t model() const noexcept { return options_.model; }
  const Policy& policy() const noexcept { return policy_; }
  Policy& policy() noexcept { return policy_; }

  // ------------------------------------------------------------------ lookup
  // The longest cached prefix of `tokens` in namespace `ns` (whole pages, each ready in some
  // tier), into `out` (cleared first). O(tokens); no allocation once `out` has grown.
  void match(namespace_id ns, std::span<const token_id> tokens, match_result& out, match_options options = {});
  match_result match(namespace_id ns, std::span<const token_id> tokens, match_options options = {}) {
    match_result r;
    match(ns, tokens, r, options);
    return r;
  }

  // ------------------------------------------------------------------ insert
  // Makes every whole page of `tokens` present. Pages with no copy yet (new ones, or ones whose
  // copies were all dropped) receive residency(i), i = the page's index in the prompt; pages
  // with a copy keep theirs. `path`, when given, receives every page's handle, root first.
  template <class ResidencyOf>
    requires std::is_invocable_r_v<page_residency, ResidencyOf&, std::size_t>
  insert_result insert(namespace_id ns, std::span<const token_id> tokens, ResidencyOf&& residency,
                       insert_options options = {}, std::vector<page_id>* path = nullptr) {
    return insert_walk<false>(ns, tokens, residency, options, path, nullptr, {});
  }
  insert_result insert(namespace_id ns, std::span<const token_id> tokens, page_residency residency,
                       insert_options options = {}, std::vector<page_id>* path = nullptr) {
    return insert(ns, tokens, detail::same_residency{residency}, options, path);
  }
  // match(ns, tokens, out, match_options) then insert(ns, tokens, residency, insert_options) in
  // one walk: `out` is what match would have answered before the insert, the return what insert
  // would have; policy state and locks end as after the two calls. Hit pages are compared once.
  template <class ResidencyOf>
    requires std::is_invocable_r_v<page_residency, ResidencyOf&, std::size_t>
  insert_result match_and_insert(namespace_id ns, std::span<const token_id> tokens, match_result& out,
                                 ResidencyOf&& residency, match_options match = {}, insert_options options = {},
                                 std::vector<page_id>* path = nullptr) {
    return insert_walk<true>(ns, tokens, residency, options, path, &out, match);
  }
  insert_result match_and_insert(namespace_id ns, std::span<const token_id> tokens, match_result& out,
                                 page_residency residency, match_options match = {}, insert_options options = {},
                                 std::vector<page_id>* path = nullptr) {
    detail::same_residency same{residency};
    return insert_walk<true>(ns, tokens, same, options, path, &out, match);
  }

  // ------------------------------------------------------------------- locks
  // Locked pages are never evicted nor removed from the tree. Counts nest.
  result<void> lock(std::span<const page_id> pages);
  // Fails with invalid_argument (and changes nothing) if any page is unknown or not locked.
  result<void> unlock(std::span<const page_id> pages);

  // --------------------------------------------------------------- residency
  // All fail with invalid_argument for an unknown handle.
  // info() computes the page key on first use (memoized); residency() never hashes.
  result<page_info> info(page_id page) const;
  result<page_residency> residency(page_id page) const;
  result<void> set_residency(page_id page, page_residency residency);      // replace all of it
  result<void> add_tier(page_id page, tier_id tier, bool in_flight = false);  // in_flight: loading
  result<void> set_in_flight(page_id page, tier_id tier, bool in_flight);  // tier must be held
  result<void> set_device_slot(page_id page, device_slot slot);
  result<void> set_host_slot(page_id page, host_slot slot);
  // Drops `tier`'s copy (not_found if none), even if locked or in flight: an explicit decision
  // (a failed load, a corrupted copy). Its slot is cleared.
  result<void> remove_tier(page_id page, tier_id tier);
  // Gives `page` a copy at `where` (a device_slot or host_slot; a slow tier's tier_id, no slot),
  // in flight (being loaded or written) or ready: the one residency edit of a copy being placed.
  template <class Where>
    requires(std::same_as<Where, device_slot> || std::same_as<Where, host_slot> || std::same_as<Where, tier_id>)
  result<void> place_copy(page_id page, Where where, bool in_flight) {
    const result<page_residency> i = residency(page);
    if (!i) return i.err();
    page_residency r = *i;
    tier_id t = tier_id::device;
    if constexpr (std::same_as<Where, device_slot>) r.device = where;
    else if constexpr (std::same_as<Where, host_slot>) t = tier_id::host, r.host = where;
    else t = where;
    r.tiers.add(t);
    if (in_flight) r.in_flight.add(t);
    else r.in_flight.remove(t);
    return set_residency(page, r);
  }
  std::span<const token_id> tokens_of(page_id page) const noexcept {
    return {store_.tokens(page.value()), pages_.tokens()};
  }
  bool contains(page_id page) const noexcept {
    return store_.live(page.value());
  }

  // ---------------------------------------------------------------- eviction
  // Offers up to `max_pages` victims of `tier`, policy order, leaves first, skipping locked and
  // in-flight pages. on_victim(const victim&) -> bool: true drops the copy (the caller frees the
  // slot), false keeps it (for example: back it up first and mark it in flight) and moves on to
  // another node. Returns the number of copies dropped. on_victim must not insert or match.
  template <class OnVictim>
    requires std::is_invocable_r_v<bool, OnVictim&, const victim&>
  std::size_t evict(tier_id tier, std::size_t max_pages, OnVictim&& on_victim);
  // The next up to `max_pages` victims of `tier`, in the order evict() would take them, without
  // dropping anything (appended to `out`). Dropping them in that order keeps leaves first.
  std::size_t collect_victims(tier_id tier, std::size_t max_pages, std::vector<page_id>& out);

  // --------------------------------------------------------------- look-ahead
  // The scheduler's hook: the cached prefix of a queued prompt is protected (evicted after every
  // unprotected node) until unexpect() with the same prompt. Counts saturate; a hint, not a lock.
  void expect(namespace_id ns, std::span<const token_id> tokens) requires look_ahead_policy<Policy> {
    walk_expect(ns, tokens, +1);
  }
  void unexpect(namespace_id ns, std::span<const token_id> tokens) requires look_ahead_policy<Policy> {
    walk_expect(ns, tokens, -1);
  }

  // --------------------------------------------------------------- statistics
  std::size_t pages() const noexcept { return store_.live(); }               // pages in the tree
  std::size_t pages_in(tier_id t) const noexcept { return tier_pages_[std::size_t(t)]; }
  std::size_t nodes() const noexcept { return live_nodes_; }
  std::uint64_t clock() const noexcept { return clock_; }
  // Bytes the index holds for bookkeeping, excluding the tokens themselves (4 B a token).
  std::size_t memory_bytes() const noexcept;
  std::size_t token_bytes() const noexcept { return store_.token_bytes(); }

 private:
  static constexpr std::uint32_t none = UINT32_MAX;
  static constexpr std::size_t page_limit = std::size_t(UINT32_MAX) - 1;
  static_assert(tier_count == 4, "node::tier_end lists one initializer per tier");
  using node_state = typename Policy::node_state;

  struct node {
    std::uint32_t parent = none;
    std::uint32_t begin = 0;     // first entry in lists_
    std::uint32_t count = 0;     // pages on this edge
    std::uint32_t children = 0;
    std::array<std::uint32_t, tier_count> held{};              // pages of this node in each tier
    std::array<std::uint32_t, tier_count> children_holding{};  // children whose first page is in each tier
    // Per tier, no page at this position or later holds the tier (none: unknown). Lets eviction
    // skip a tail whose copies in that tier are gone (device copies dropped, host copies kept).
    std::array<std::uint32_t, tier_count> tier_end{none, none, none, none};
    namespace_id ns{};
    node_state state{};
    bool alive = false;
  };
  struct heap_entry {
    std::uint64_t key;
    std::uint32_t node;
    friend bool operator>(const heap_entry& a, const heap_entry& b) noexcept {
      return a.key != b.key ? a.key > b.key : a.node > b.node;
    }
  };
  // Where a prefix walk stopped: `at` is the node standing for the matched pages (after a split,
  // the new head); `inside` the node the walk stopped in (none at a node boundary); `pages` the
  // prompt pages walked.
  struct walk_end {
    std::uint32_t at;
    std::uint32_t inside;
    std::size_t pages;
  };
  struct undo_entry {  // a copy collect_victims marked as gone, to be given back
    std::uint32_t page;
    std::uint32_t node;
  };

  const token_id* query_page(std::span<const token_id> tokens, std::size_t i) const noexcept {
    return tokens.data() + i * pages_.tokens();
  }
  bool same_tokens(std::uint32_t p, const token_id* q) const noexcept { return same_tokens(store_.tokens(p), q); }
  bool same_tokens(const token_id* stored, const token_id* q) const noexcept {
    if constexpr (PageSize != dynamic_extent && PageSize % 4 == 0 && PageSize <= 128) {
#if defined(__SSE2__)
      // A static page: 16-byte lanes compared and and-ed, one mask test, one branch. A stored page
      // is 16-byte aligned (whole lanes from the start of a mapping), so its loads fold into the
      // compares.
      const auto* a = reinterpret_cast<const __m128i*>(stored);
      const auto* b = reinterpret_cast<const __m128i*>(q);
      __m128i eq = _mm_cmpeq_epi32(_mm_load_si128(a), _mm_loadu_si128(b));
      for (std::size_t k = 1; k < PageSize * sizeof(token_id) / 16; ++k)
        eq = _mm_and_si128(eq, _mm_cmpeq_epi32(_mm_load_si128(a + k), _mm_loadu_si128(b + k)));
      return _mm_movemask_epi8(eq) == 0xFFFF;
#else
      // A static page: 16-byte lanes xor-ed and or-ed, no call, one branch.
      using lane = std::uint64_t __attribute__((vector_size(16)));
      const auto* a = reinterpret_cast<const unsigned char*>(stored);
      const auto* b = reinterpret_cast<const unsigned char*>(q);
      lane diff{0, 0};
      for (std::size_t k = 0; k < PageSize * sizeof(token_id); k += 16) {
        lane x, y;
        std::memcpy(&x, a + k, 16);
        std::memcpy(&y, b + k, 16);
        diff |= x ^ y;
      }
      return (diff[0] | diff[1]) == 0;
#endif
    } else {
      return std::memcmp(stored, q, pages_.tokens() * sizeof(token_id)) == 0;
    }
  }
  std::uint32_t page_at(const node& n, std::size_t j) const noexcept { return lists_[n.begin + j]; }
  std::uint64_t edge_of(std::uint32_t parent, const token_id* first_page) const noexcept {
    return detail::edge_hash(parent, first_page, pages_.tokens());
  }
  std::uint32_t find_child(std::uint32_t parent, const token_id* q) const {
    return children_.find(edge_of(parent, q), [&](std::uint32_t c) {
      return nodes_[c].parent == parent && same_tokens(page_at(nodes_[c], 0), q);
    });
  }
  // The fastest ready tier of a page by its ready-tier bits (device, then host, then storage);
  // no_source: nothing ready. One load instead of a chain of tests.
  static constexpr std::uint8_t no_source = 3;
  static constexpr std::array<std::uint8_t, 1u << tier_count> source_table = [] {
    std::array<std::uint8_t, 1u << tier_count> t{};
    for (unsigned r = 0; r < t.size(); ++r)
      t[r] = r & (1u << unsigned(tier_id::device))  ? std::uint8_t(page_source::device)
             : r & (1u << unsigned(tier_id::host)) ? std::uint8_t(page_source::host)
             : r != 0                               ? std::uint8_t(page_source::storage)
                                                    : no_source;
    return t;
  }();

  std::uint32_t root_of(namespace_id ns, bool create);
  std::uint32_t alloc_node();
  // The one prefix walk (match, insert, walk_expect): follows the prompt's whole pages down the
  // tree; on_page(page, i) -> bool (false stops the walk at that page), on_node(node, pages of it
  // walked, prompt pages walked) -> the node standing for them (insert splits there).
  template <class OnPage, class OnNode>
  walk_end walk(std::uint32_t root, std::span<const token_id> tokens, OnPage&& on_page, OnNode&& on_node);
  // insert and match_and_insert (Match: `out` receives the match before the insert).
  template <bool Match, class ResidencyOf>
  insert_result insert_walk(namespace_id ns, std::span<const token_id> tokens, ResidencyOf& residency,
                            insert_options options, std::vector<page_id>* path, match_result* out,
                            match_options match);
  template <class ResidencyOf>
  std::uint32_t append_pages(std::uint32_t parent, namespace_id ns, std::span<const token_id> tokens,
                             std::size_t first, std::size_t n, const access_info& access, ResidencyOf& residency,
                             insert_result& r, bool keep_path);
  std::uint32_t split(std::uint32_t c, std::uint32_t j);
  void account(std::uint32_t p, const page_residency& next);
  void consider(std::uint32_t n);
  [[gnu::noinline]] void trim(std::uint32_t n);
  void compact_lists();
  void give_back_memory();
  // The one victim cursor (evict, collect_victims): tier t's nodes in policy order, each from its
  // tail; take(page) -> bool is offered every page evictable now. Dry: the copies taken are only
  // marked gone, for the rest of the pass, then given back (collect_victims sees what evict drops).
  template <bool Dry, class Take>
  std::size_t drain(tier_id t, std::size_t max_pages, Take& take);
  template <bool Dry, class Take>
  std::size_t drain_node(std::uint32_t n, std::size_t ti, std::size_t budget, Take& take, bool& refused);
  template <bool Dry>
  [[gnu::always_inline]] void lose_tier(std::uint32_t n, std::uint32_t j, std::uint32_t p, std::size_t ti);
  void push_heap_entry(tier_id t, std::uint32_t n);
  void walk_expect(namespace_id ns, std::span<const token_id> tokens, int delta);
  page_key key_of(std::uint32_t p) const;
  bool valid(page_id p) const noexcept { return contains(p); }

  page_size_type pages_;
  index_options options_;
  Policy policy_;
  std::uint64_t clock_ = 0;

  detail::page_store<page_size_type> store_;  // per page: tokens, state, slots, owner node, key

  // Nodes; each holds the range [begin, begin + count) of lists_.
  detail::mapped_array<node> nodes_;
  std::vector<std::uint32_t> free_nodes_;
  detail::mapped_array<std::uint32_t> lists_;
  std::size_t list_garbage_ = 0;
  detail::child_table children_;
  std::unordered_map<std::uint64_t, std::uint32_t> roots_;

  // One lazy min-heap of candidate nodes per tier; stale entries are skipped when popped.
  std::array<std::vector<heap_entry>, tier_count> heaps_;
  bool dry_pass_ = false;  // a collect_victims pass: no heap rebuild while counts are marked
  std::vector<std::uint32_t> deferred_;
  std::vector<undo_entry> undo_;
  std::vector<page_id> path_scratch_;
  mutable std::vector<std::uint32_t> chain_scratch_;

  std::size_t live_nodes_ = 0;
  std::array<std::size_t, tier_count> tier_pages_{};
};

}  // namespace kvtier

#include "kvtier/index/detail/radix_index_impl.hpp"
