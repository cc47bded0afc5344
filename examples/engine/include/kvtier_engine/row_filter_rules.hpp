#pragma once
// The host-side rules of partial prefill's row filter (cuda_backend::prefill_rows and the CUDA
// CacheBlend driver), kept apart from the CUDA code so that they are tested on any machine:
//  - which kept rows a filter may leave (a subsequence of the active rows that keeps the last), and
//    where each kept row sits among the active ones (the gather's source index);
//  - CacheBlend's row lists for a prompt [prefix: 0, start) [placed: start, placed) [new: placed, n),
//    rows being the positions [start, n) in order.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace kvtier_engine::detail {

// Whether `kept` (ascending) is a subsequence of `active` (ascending) that keeps active's last
// element; if so, from[i] is the index in `active` of kept[i] (from holds kept.size() entries).
inline bool kept_sources(std::span<const std::size_t> active, std::span<const std::size_t> kept, std::int32_t* from) {
  if (kept.empty() || active.empty() || kept.back() != active.back()) return false;
  std::size_t j = 0;
  for (std::size_t i = 0; i < kept.size(); ++i, ++j) {
    while (j < active.size() && active[j] < kept[i]) ++j;
    if (j == active.size() || active[j] != kept[i]) return false;
    from[i] = std::int32_t(j);
  }
  return true;
}

// The rows going on after the selection: the kept placed positions (ascending, inside [start,
// placed)) and every new-text row, as row indices (position − start).
inline std::vector<std::size_t> blend_rows_after_selection(std::span<const std::size_t> kept_positions, std::size_t start,
                                                           std::size_t placed, std::size_t n) {
  std::vector<std::size_t> rows;
  rows.reserve(kept_positions.size() + (n - placed));
  for (std::size_t p : kept_positions) rows.push_back(p - start);
  for (std::size_t p = placed; p < n; ++p) rows.push_back(p - start);
  return rows;
}

// The last layer: placed rows stop once their K/V is written; only the new text (rows from
// placed − start on) goes through attention and the FFN.
inline void keep_new_text_only(std::vector<std::size_t>& active, std::size_t start, std::size_t placed) {
  active.erase(active.begin(), std::lower_bound(active.begin(), active.end(), placed - start));
}

}  // namespace kvtier_engine::detail
