#pragma once
// blend_prefill: CacheBlend's partial prefill on the CPU backend. The prompt's reused chunks were
// placed in the pool (their own KV, moved to their offsets with RoPE on load); positions before
// `start` are a true cached prefix (exact, never recomputed). Layers up to `select_layer` compute
// every row's K/V (layer 0's KV does not depend on context; the rows need their hidden states). On
// `select_layer` the reused tokens whose fresh K/V deviates most from the placed K/V (kvtier::blend)
// are kept and the others leave: from there on only the kept rows and the new text (always
// computed) go on, attending over the blended KV, while the other reused tokens keep the placed KV
// on the later layers. Gradual filtering (CacheBlend §4.3): keep[i] is the share of reused tokens
// whose K/V is computed on layer select_layer + 1 + i (the last share holds for the layers after);
// the rows kept are measured again on each listed layer and the smaller share is kept. On the last
// layer reused rows stop once their K/V is written (their attention and FFN would feed nothing).
// Weightings: `deviation` ranks reused tokens by their K/V deviation (CacheBlend); `question` by the
// attention mass the new text gives them on the last layer × sqrt(deviation) — the first-order error
// a token's stale K/V leaves in the new text's attention output, the mass taken from a first pass of
// the new text alone over the placed KV (naive concatenation: new-text rows only, every layer);
// `attention` by the new text's attention mass on the layer measured × sqrt(deviation).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cmath>
#include <cstring>
#include <span>
#include <vector>

#include "kvtier/blend/select.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/transfer/views.hpp"
#include "kvtier_engine/cpu/cpu_backend.hpp"

namespace kvtier_engine {

// Positions [first, last) whose KV was placed (loaded), not computed.
struct reused_range {
  std::size_t first = 0, last = 0;
};

enum class blend_weighting : std::uint8_t { deviation, question, attention };

struct blend_plan {
  std::size_t select_layer = 1;       // the first layer whose deviation is measured
  std::vector<double> keep{0.15};     // share of reused tokens computed on layer select_layer + 1 + i, non-increasing
  blend_weighting weighting = blend_weighting::deviation;
  std::size_t range_heads = 0;        // the first tokens of each reused range are always kept (within the share)
  bool per_range = false;             // each range keeps its share of the budget (else one top-k over all)
  kvtier::blend::kv_part part = kvtier::blend::kv_part::both;
  std::size_t budget_of = 0;          // tokens the shares are of (0: the reused tokens)
  // Weighting `question` with masses given per prompt position instead of the first pass (an
  // engine's own estimate; the bench's oracle from full prefill). Empty: the first pass.
  std::span<const double> question_mass;
};

struct blend_report {
  std::size_t reused = 0;                 // reused tokens (sum of the ranges)
  std::vector<std::size_t> kv_rows;       // per layer: rows whose Q/K/V were computed
  std::vector<std::size_t> reused_kv;     // per layer: reused rows among them
  std::size_t question_rows = 0;          // rows of the new text's first pass (weighting `question`), every layer
  // Share of the reused tokens' (token, layer) K/V that was recomputed.
  double recomputed_share() const noexcept {
    double s = 0;
    for (std::size_t x : reused_kv) s += double(x);
    return reused && !reused_kv.empty() ? s / double(reused * reused_kv.size()) : 0.0;
  }
};

namespace detail {
// The kept subset of `cand` (reused positions, ascending): `count` of them by deviation, the heads of
// each range first.
inline std::vector<std::size_t> keep_reused(std::span<const std::size_t> cand, std::span<const double> dev, std::size_t count,
                                            std::span<const reused_range> ranges, const blend_plan& plan, std::size_t reused) {
  std::vector<double> d(dev.begin(), dev.end());
  std::size_t forced = 0;
  const auto range_of = [&](std::size_t p) {
    for (std::size_t r = 0; r < ranges.size(); ++r)
      if (p >= ranges[r].first && p < ranges[r].last) return r;
    return ranges.size();
  };
  for (std::size_t i = 0; i < cand.size(); ++i) {
    const std::size_t r = range_of(cand[i]);
    if (plan.range_heads && r < ranges.size() && cand[i] < ranges[r].first + plan.range_heads) d[i] = 1e300, ++forced;
  }
  if (!plan.per_range) return kvtier::blend::top_k(d, std::max(count, std::min(forced, count)));
  // Per range: its share of the count, by length (largest remainders get the rest).
  std::vector<std::size_t> out;
  std::size_t given = 0;
  std::vector<std::pair<double, std::size_t>> rem;
  std::vector<std::size_t> quota(ranges.size());
  for (std::size_t r = 0; r < ranges.size(); ++r) {
    const double q = double(count) * double(ranges[r].last - ranges[r].first) / double(reused);
    quota[r] = std::size_t(q);
    given += quota[r];
    rem.push_back({q - double(quota[r]), r});
  }
  std::sort(rem.begin(), rem.end(), [](auto a, auto b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
  for (std::size_t i = 0; given < count && i < rem.size(); ++i, ++given) ++quota[rem[i].second];
  for (std::size_t r = 0; r < ranges.size(); ++r) {
    std::vector<double> dr;
    std::vector<std::size_t> at;
    for (std::size_t i = 0; i < cand.size(); ++i)
      if (range_of(cand[i]) == r) dr.push_back(d[i]), at.push_back(i);
    for (std::size_t j : kvtier::blend::top_k(dr, quota[r])) out.push_back(at[j]);
  }
  std::sort(out.begin(), out.end());
  return out;
}
}  // namespace detail

// Computes positions [start, tokens.size()) of one sequence whose reused ranges (inside that span,
// ascending, disjoint) hold placed KV; the last token's logits. `pool` is the backend's pool, the
// block table covers the prompt. invalid_argument for bad ranges or a plan that does not fit the
// model; the backend's errors as they come.
inline kvtier::result<blend_report> blend_prefill(cpu_backend& b, const kvtier::transfer::layer_first_buffer& pool,
                                                  std::size_t page_tokens, std::span<const kvtier::token_id> tokens, std::size_t start,
                                                  std::span<const kvtier::device_slot> block_table, std::span<const reused_range> ranges,
                                                  const blend_plan& plan, std::span<float> logits) {
  const model_config& cfg = b.config();
  const std::size_t n = tokens.size();
  if (start >= n || plan.select_layer >= cfg.layers || plan.keep.empty() || plan.select_layer + 1 + plan.keep.size() > cfg.layers)
    return kvtier::make_error(kvtier::errc::invalid_argument);
  blend_report rep;
  std::size_t prev = start;
  for (const auto& r : ranges) {
    if (r.first < prev || r.last <= r.first || r.last > n) return kvtier::make_error(kvtier::errc::invalid_argument);
    prev = r.last;
    rep.reused += r.last - r.first;
  }
  if (!ranges.empty() && ranges.back().last == n) return kvtier::make_error(kvtier::errc::invalid_argument);  // the last token is computed
  for (std::size_t i = 0; i < plan.keep.size(); ++i)
    if (!(plan.keep[i] >= 0 && plan.keep[i] <= 1) || (i && plan.keep[i] > plan.keep[i - 1]))
      return kvtier::make_error(kvtier::errc::invalid_argument);
  std::vector<decode_entry> rows;
  std::vector<char> is_reused(n, 0);
  for (const auto& r : ranges) std::fill(is_reused.begin() + std::ptrdiff_t(r.first), is_reused.begin() + std::ptrdiff_t(r.last), 1);
  for (std::size_t p = start; p < n; ++p) rows.push_back({tokens[p], p, block_table});

  // The placed K/V of one layer, kept before the rows overwrite it: (1, kv, position, head, dim).
  const kvtier::kv_shape one = kvtier::kv_shape::mha(1, cfg.kv_heads, cfg.head_size, kvtier::dtype::fp32);
  const std::size_t P = page_tokens, row_bytes = cfg.kv_heads * cfg.head_size * sizeof(float);
  std::vector<float> snap_mem(one.bytes_per_token() / sizeof(float) * ((n + P - 1) / P) * P);
  const auto snap = kvtier::transfer::layer_first_view(reinterpret_cast<std::byte*>(snap_mem.data()), one, (n + P - 1) / P * P);
  std::vector<kvtier::device_slot> snap_table;
  for (std::size_t i = 0; i < (n + P - 1) / P; ++i) snap_table.push_back(kvtier::device_slot{kvtier::device_slot::rep_type(i)});
  const kvtier::blend::sequence_kv fresh{pool, block_table, P}, loaded{snap, snap_table, P};
  const auto slot_row = [&](std::size_t l, std::size_t k, std::size_t p) {
    return pool.page_row(l, k, std::size_t(block_table[p / P].value()), P, p % P, 0);
  };
  std::vector<std::size_t> cur;  // reused positions still computed
  for (std::size_t p = start; p < n; ++p)
    if (is_reused[p]) cur.push_back(p);
  kvtier::result<void> failed{};
  // Weighting `question`: the new text alone over the placed KV, its last layer's attention mass.
  std::vector<double> mass_at(n, 0.0);
  if (!plan.question_mass.empty()) {
    if (plan.question_mass.size() != n) return kvtier::make_error(kvtier::errc::invalid_argument);
    mass_at.assign(plan.question_mass.begin(), plan.question_mass.end());
  } else if (plan.weighting == blend_weighting::question && rep.reused > 0) {
    std::vector<decode_entry> qrows;
    std::vector<std::size_t> qpos;
    for (std::size_t p = start; p < n; ++p)
      if (!is_reused[p]) qrows.push_back(rows[p - start]), qpos.push_back(p);
    const auto grab = [&](std::size_t l, std::vector<std::size_t>& active) {
      if (l + 1 != cfg.layers || !failed) return;
      auto mass = kvtier::blend::attention_mass(fresh, l, b.queries(active.size()), qpos, cfg.heads, cur, kvtier::dtype::fp32);
      if (!mass) failed = mass.err();
      else
        for (std::size_t i = 0; i < cur.size(); ++i) mass_at[cur[i]] = (*mass)[i];
    };
    if (auto r = b.prefill_rows(qrows, logits, {}, grab); !r) return r.err();
    if (!failed) return failed.err();
    rep.question_rows = qrows.size();
  }
  const auto measured = [&](std::size_t l) { return l >= plan.select_layer && l < plan.select_layer + plan.keep.size(); };
  const auto before = [&](std::size_t l) {
    if (!measured(l)) return;
    for (std::size_t p : cur)
      for (std::size_t k = 0; k < 2; ++k) std::memcpy(snap.page_row(0, k, p / P, P, p % P, 0), slot_row(l, k, p), row_bytes);
  };
  std::vector<float> q;
  std::vector<std::size_t> qpos;
  const auto after = [&](std::size_t l, std::vector<std::size_t>& active) {
    rep.kv_rows.push_back(active.size());
    rep.reused_kv.push_back(cur.size());
    if (!failed) return;
    std::vector<std::size_t> next;
    if (measured(l)) {
      auto dev = kvtier::blend::deviation_at(fresh, l, loaded, 0, cur, kvtier::dtype::fp32, plan.part);
      if (dev && plan.weighting == blend_weighting::attention) {
        // The new text's queries on this layer (rows are in position order: active[i] is row i of queries()).
        const auto all_q = b.queries(active.size());
        q.clear(), qpos.clear();
        for (std::size_t i = 0; i < active.size(); ++i)
          if (!is_reused[rows[active[i]].position]) {
            qpos.push_back(rows[active[i]].position);
            q.insert(q.end(), all_q.begin() + std::ptrdiff_t(i * cfg.q_dim()), all_q.begin() + std::ptrdiff_t((i + 1) * cfg.q_dim()));
          }
        auto mass = kvtier::blend::attention_mass(fresh, l, q, qpos, cfg.heads, cur, kvtier::dtype::fp32);
        if (!mass) dev = mass.err();
        else
          for (std::size_t i = 0; i < cur.size(); ++i) (*dev)[i] = (*mass)[i] * std::sqrt((*dev)[i]);
      }
      if (dev && plan.weighting == blend_weighting::question)
        for (std::size_t i = 0; i < cur.size(); ++i) (*dev)[i] = mass_at[cur[i]] * std::sqrt((*dev)[i]);
      if (!dev) {
        failed = dev.err();
        return;
      }
      const std::size_t count =
          std::min(cur.size(), kvtier::blend::kept_count(plan.keep[l - plan.select_layer], plan.budget_of ? plan.budget_of : rep.reused));
      for (std::size_t i : detail::keep_reused(cur, *dev, count, ranges, plan, rep.reused)) next.push_back(cur[i]);
    } else if (l + 1 < cfg.layers) {
      return;
    }
    cur.swap(next);  // on the last layer: no reused row goes on
    active.clear();
    std::size_t j = 0;
    for (std::size_t p = start; p < n; ++p)
      if (!is_reused[p] || (j < cur.size() && cur[j] == p)) {
        j += is_reused[p];
        active.push_back(p - start);
      }
  };
  if (auto r = b.prefill_rows(rows, logits, before, after); !r) return r.err();
  if (!failed) return failed.err();
  return rep;
}

}  // namespace kvtier_engine
