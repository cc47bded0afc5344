#pragma once
// CacheBlend's selection (Yao et al., EuroSys '25): reused chunks' KV was computed without the
// chunks before them, so it deviates from what a full prefill would give; the deviation shows on an
// early layer. Given the engine's freshly computed KV of one layer and the KV that was loaded for
// the same positions, pick the tokens whose KV deviates most (squared L2 over K and/or V, all
// heads); the engine recomputes only those on the later layers. Gradual filtering (the paper's
// §4.3) calls the selection again on the next layers over the tokens still recomputed.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
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

// Which planes the deviation is measured on (CacheBlend's vLLM code used V, LMCache's blender K).
enum class kv_part : std::uint8_t { both, k, v };

namespace detail {
inline bool fits(const sequence_kv& s, std::size_t layer, std::size_t last_position, dtype t) noexcept {
  const auto& e = s.pool.map.extents();
  return s.page_tokens != 0 && layer < e.layers() && s.block_table.size() * s.page_tokens > last_position &&
         size_of(t) == s.pool.element_bytes;
}
}  // namespace detail

// Squared L2 deviation, per listed position, between layer `fresh_layer` of `fresh` and layer
// `loaded_layer` of `loaded` (the two may have different layer counts: a one-layer snapshot of the
// loaded KV, say). Heads and dims must agree. invalid_argument for a position past a block table, a
// layer out of range, mismatched rows or a dtype that is not the pools'.
inline result<std::vector<double>> deviation_at(const sequence_kv& fresh, std::size_t fresh_layer, const sequence_kv& loaded,
                                                std::size_t loaded_layer, std::span<const std::size_t> positions, dtype t,
                                                kv_part part = kv_part::both) {
  const auto& fe = fresh.pool.map.extents();
  const auto& le = loaded.pool.map.extents();
  std::size_t last = 0;
  for (std::size_t p : positions) last = std::max(last, p);
  if (fe.heads() != le.heads() || fe.dim() != le.dim() || fe.kv() != le.kv() ||
      (positions.size() && (!detail::fits(fresh, fresh_layer, last, t) || !detail::fits(loaded, loaded_layer, last, t))) ||
      (part != kv_part::both && fe.kv() < 2))
    return make_error(errc::invalid_argument);
  const std::size_t Pf = fresh.page_tokens, Pl = loaded.page_tokens, row = fe.heads() * fe.dim();
  const std::size_t k0 = part == kv_part::v ? 1 : 0, k1 = part == kv_part::k ? 1 : fe.kv();
  std::vector<double> d(positions.size(), 0.0);
  kvtier::detail::with_dtype(t, [&](auto tc) {
    constexpr dtype T = decltype(tc)::value;
    for (std::size_t i = 0; i < positions.size(); ++i) {
      const std::size_t pos = positions[i];
      for (std::size_t k = k0; k < k1; ++k) {
        const std::byte* a = fresh.pool.page_row(fresh_layer, k, std::size_t(fresh.block_table[pos / Pf].value()), Pf, pos % Pf, 0);
        const std::byte* b = loaded.pool.page_row(loaded_layer, k, std::size_t(loaded.block_table[pos / Pl].value()), Pl, pos % Pl, 0);
        double s = 0;
        for (std::size_t j = 0; j < row; ++j) {
          const double x = double(kvtier::detail::load_typed<T>(a, j)) - double(kvtier::detail::load_typed<T>(b, j));
          s += x * x;
        }
        d[i] += s;
      }
    }
  });
  return d;
}

// Squared L2 deviation (K and V) of positions [first, last) between `fresh` and `loaded` on `layer`.
inline result<std::vector<double>> deviation(const sequence_kv& fresh, const sequence_kv& loaded, std::size_t layer,
                                             std::size_t first, std::size_t last, dtype t) {
  if (first > last || fresh.page_tokens == 0 || fresh.page_tokens != loaded.page_tokens ||
      fresh.block_table.size() * fresh.page_tokens < last || loaded.block_table.size() * loaded.page_tokens < last)
    return make_error(errc::invalid_argument);
  if (first == last) {
    if (!detail::fits(fresh, layer, 0, t) || !detail::fits(loaded, layer, 0, t)) return make_error(errc::invalid_argument);
    return std::vector<double>{};
  }
  std::vector<std::size_t> pos(last - first);
  for (std::size_t i = 0; i < pos.size(); ++i) pos[i] = first + i;
  return deviation_at(fresh, layer, loaded, layer, pos, t);
}

// Attention mass each of `positions` receives from a few query rows on `layer`: for query row i (at
// position query_positions[i], `heads` query heads of K's head size sharing K heads in groups, after
// RoPE, row-major (row, head, dim)), softmax(q·k / sqrt(dim)) over positions [0, query_positions[i]]
// of the sequence, summed over rows and heads. A token the question attends to little matters little
// however much its KV deviates; score = mass × sqrt(deviation) is the first-order error it leaves in
// the question's attention output.
inline result<std::vector<double>> attention_mass(const sequence_kv& kv, std::size_t layer, std::span<const float> queries,
                                                  std::span<const std::size_t> query_positions, std::size_t heads,
                                                  std::span<const std::size_t> positions, dtype t) {
  const auto& e = kv.pool.map.extents();
  const std::size_t hs = e.dim(), kvh = e.heads();
  std::size_t last = 0;
  for (std::size_t p : query_positions) last = std::max(last, p);
  if (heads == 0 || heads % kvh != 0 || queries.size() != query_positions.size() * heads * hs ||
      (query_positions.size() && !detail::fits(kv, layer, last, t)))
    return make_error(errc::invalid_argument);
  for (std::size_t p : positions)
    if (p > last) return make_error(errc::invalid_argument);
  const std::size_t G = heads / kvh, P = kv.page_tokens;
  std::vector<double> mass(last + 1, 0.0), s;
  kvtier::detail::with_dtype(t, [&](auto tc) {
    constexpr dtype T = decltype(tc)::value;
    for (std::size_t i = 0; i < query_positions.size(); ++i) {
      const std::size_t n = query_positions[i] + 1;
      for (std::size_t h = 0; h < heads; ++h) {
        const float* q = queries.data() + (i * heads + h) * hs;
        s.assign(n, 0.0);
        double mx = -1e300;
        for (std::size_t p = 0; p < n; ++p) {
          const std::byte* k = kv.pool.page_row(layer, 0, std::size_t(kv.block_table[p / P].value()), P, p % P, h / G);
          double d = 0;
          for (std::size_t j = 0; j < hs; ++j) d += double(q[j]) * double(kvtier::detail::load_typed<T>(k, j));
          s[p] = d / std::sqrt(double(hs));
          mx = std::max(mx, s[p]);
        }
        double z = 0;
        for (auto& v : s) z += (v = std::exp(v - mx));
        for (std::size_t p = 0; p < n; ++p) mass[p] += s[p] / z;
      }
    }
  });
  std::vector<double> out(positions.size());
  for (std::size_t i = 0; i < positions.size(); ++i) out[i] = mass[positions[i]];
  return out;
}

// The indices of the `k` largest values of d, ascending; ties go to the earlier index (a
// deterministic choice, the GPU kernel's too). k is clamped to d.size().
inline std::vector<std::size_t> top_k(std::span<const double> d, std::size_t k) {
  std::vector<std::size_t> idx(d.size());
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  k = std::min(k, idx.size());
  std::partial_sort(idx.begin(), idx.begin() + std::ptrdiff_t(k), idx.end(),
                    [&](std::size_t a, std::size_t b) { return d[a] != d[b] ? d[a] > d[b] : a < b; });
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

// How many of n tokens a share r keeps: ceil(r × n), less a relative 1e-9 first so that 0.07 × 100
// (7.000000000000001 in doubles) keeps 7, not 8.
inline std::size_t kept_count(double ratio, std::size_t n) noexcept {
  const double x = ratio * double(n);
  return std::min(n, std::size_t(std::ceil(x - 1e-9 * std::max(1.0, x))));
}

// The ceil(ratio × (last − first)) positions of [first, last) that deviate most, ascending; ties go
// to the earlier position.
inline result<std::vector<std::size_t>> select_deviating(const sequence_kv& fresh, const sequence_kv& loaded, std::size_t layer,
                                                         std::size_t first, std::size_t last, double ratio, dtype t) {
  if (!(ratio >= 0 && ratio <= 1)) return make_error(errc::invalid_argument);
  auto d = deviation(fresh, loaded, layer, first, last, t);
  if (!d) return d.err();
  std::vector<std::size_t> idx = top_k(*d, kept_count(ratio, d->size()));
  for (auto& i : idx) i += first;
  return idx;
}

}  // namespace kvtier::blend
