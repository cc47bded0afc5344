#pragma once
// CacheBlend's selection (Yao et al., EuroSys '25): reused chunks' KV was computed without the
// chunks before them, so it deviates from what a full prefill would give; the deviation shows on an
// early layer. Given the engine's freshly computed KV of one layer and the KV that was loaded for
// the same positions, pick the tokens whose KV deviates most (squared L2 over K and V, all heads);
// the engine recomputes only those on the later layers.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <vector>

#include "kvtier/codec/kv_page.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"
#include "kvtier/core/strong_id.hpp"
#include "kvtier/transfer/views.hpp"

namespace kvtier::blend {

// One sequence's KV in a layer-first pool: the pool and the sequence's block table.
struct sequence_kv {
  transfer::layer_first_buffer pool;  // (layer, kv, slot * page_tokens + t, head, dim)
  std::span<const device_slot> block_table;
  std::size_t page_tokens = 0;
};

// Squared L2 deviation of positions [first, last) between `fresh` and `loaded` on `layer`.
inline result<std::vector<double>> deviation(const sequence_kv& fresh, const sequence_kv& loaded, std::size_t layer,
                                             std::size_t first, std::size_t last, dtype t) {
  const auto& e = fresh.pool.map.extents();
  if (first > last || fresh.page_tokens == 0 || fresh.page_tokens != loaded.page_tokens || layer >= e.layers() ||
      fresh.block_table.size() * fresh.page_tokens < last || loaded.block_table.size() * loaded.page_tokens < last ||
      size_of(t) != fresh.pool.element_bytes || size_of(t) != loaded.pool.element_bytes)
    return make_error(errc::invalid_argument);
  const std::size_t P = fresh.page_tokens, row = e.heads() * e.dim();
  std::vector<double> d(last - first, 0.0);
  kvtier::detail::with_dtype(t, [&](auto tc) {
    constexpr dtype T = decltype(tc)::value;
    for (std::size_t pos = first; pos < last; ++pos)
      for (std::size_t k = 0; k < e.kv(); ++k) {
        const std::byte* a = fresh.pool.page_row(layer, k, std::size_t(fresh.block_table[pos / P].value()), P, pos % P, 0);
        const std::byte* b = loaded.pool.page_row(layer, k, std::size_t(loaded.block_table[pos / P].value()), P, pos % P, 0);
        double s = 0;
        for (std::size_t i = 0; i < row; ++i) {
          const double x = kvtier::detail::load_typed<T>(a, i) - double(kvtier::detail::load_typed<T>(b, i));
          s += x * x;
        }
        d[pos - first] += s;
      }
  });
  return d;
}

// The ceil(ratio × (last − first)) positions of [first, last) that deviate most, ascending; ties go
// to the earlier position (a deterministic choice).
inline result<std::vector<std::size_t>> select_deviating(const sequence_kv& fresh, const sequence_kv& loaded, std::size_t layer,
                                                         std::size_t first, std::size_t last, double ratio, dtype t) {
  if (!(ratio >= 0 && ratio <= 1)) return make_error(errc::invalid_argument);
  auto d = deviation(fresh, loaded, layer, first, last, t);
  if (!d) return d.err();
  std::vector<std::size_t> idx(d->size());
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  const std::size_t k = std::min(idx.size(), std::size_t(std::ceil(ratio * double(idx.size()))));
  std::partial_sort(idx.begin(), idx.begin() + std::ptrdiff_t(k), idx.end(), [&](std::size_t a, std::size_t b) {
    return (*d)[a] != (*d)[b] ? (*d)[a] > (*d)[b] : a < b;
  });
  idx.resize(k);
  for (auto& i : idx) i += first;
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace kvtier::blend
