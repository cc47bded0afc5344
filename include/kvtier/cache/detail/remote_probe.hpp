#pragma once
// The remote lookup step of hierarchical_cache::lookup (see kvtier/cache/remote_lookup.hpp): keys
// of the pages past the matched prefix, one probe of the slowest slow tier, the leading run it holds
// adopted into the index as resident there, and the prefix matched again. Scheduler thread only.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "kvtier/cache/remote_lookup.hpp"
#include "kvtier/cache/stats.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/core/page_key.hpp"
#include "kvtier/core/strong_id.hpp"
#include "kvtier/index/page_keys.hpp"
#include "kvtier/index/residency.hpp"
#include "kvtier/storage/request.hpp"

namespace kvtier::detail {

// `m`: the lookup's match (locked, as lookup makes it), extended in place when the tier holds the
// next pages. Returns the pages adopted.
template <class Index, class SlowSet>
std::size_t remote_probe(Index& index, SlowSet& slow, const remote_lookup& opt, namespace_id ns,
                         std::span<const token_id> tokens, match_result& m, std::uint8_t priority, cache_stats& stats) {
  constexpr std::size_t t = SlowSet::count - 1;  // the slowest tier: the one engines share
  const std::size_t P = index.page_size().tokens();
  const std::size_t whole = tokens.size() / P, n = m.size();
  if (!opt.enabled() || n >= whole) return 0;
  std::vector<page_address> where(std::min(whole - n, opt.max_pages));
  page_key key = n > 0 ? index.info(m.pages[n - 1])->key : root_page_key;
  for (std::size_t i = 0; i < where.size(); ++i) {
    key = chain_page_key(ns, index.model(), key, tokens.subspan((n + i) * P, P));
    where[i] = page_address{ns, key};
  }
  ++stats.remote_probes;
  const auto held = slow.probe(t, std::move(where), std::chrono::steady_clock::now() + opt.timeout);
  if (!held) {
    ++stats.remote_probe_timeouts;
    return 0;
  }
  std::size_t found = 0;
  while (found < held->size() && (*held)[found].code == errc::ok) ++found;
  if (found == 0) return 0;
  page_residency there{};
  there.tiers.add(SlowSet::id(t));
  const insert_result r = index.insert(ns, tokens.first((n + found) * P), there, insert_options{false, priority});
  stats.remote_pages_adopted += r.inserted;
  if (r.inserted == 0) return 0;
  if (m.locked && !m.pages.empty()) (void)index.unlock(m.pages);
  index.match(ns, tokens, m, match_options{true, false, priority});
  return r.inserted;
}

}  // namespace kvtier::detail
