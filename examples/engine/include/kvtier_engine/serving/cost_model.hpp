#pragma once
// The cost model a serving simulator needs, measured by the engine that serves:
//  - prefill: seconds of one prefill call of chunks i of n_i new tokens over s_i cached positions
//    (one chunk, or a server's batched call of a step's chunks of different sequences), fit to
//      t = a + b·Σn_i + c·Σn_i·(s_i + n_i/2)   (a call's fixed cost, linear layers per token,
//    attention per token pair; one chunk: a + b·n + c·n·(s + n/2));
//  - decode: seconds of one step of B sequences holding C positions in all, fit to
//      t = a + b·B + c·C;
//  - step overhead: the host seconds of one serving step outside the backend's prefill and decode
//    calls (admission: lookup, load issue, allocation; commits; sampling; poll), fit to
//      t = a + b·sequences + c·loaded_pages   (sequences: decodes and prefill chunks the step ran;
//    loaded_pages: host → device loads its admission issued);
//  - copies: host → device load and device → host backup bandwidth of the cache's own copy path,
//    timed on pools of the cache's types (copy_bandwidth), several sizes.
// Least squares on the samples of a run; written as JSON with the fits, their R², and the samples.
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <string>
#include <vector>

#include "kvtier/cache/parts.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/core/page_size.hpp"
#include "kvtier/layout/page_first.hpp"
#include "kvtier/storage/batch.hpp"
#include "kvtier/storage/concepts.hpp"
#include "kvtier/storage/request.hpp"
#include "kvtier/transfer/views.hpp"

namespace kvtier_engine::serving {

struct prefill_sample {
  std::size_t new_tokens = 0, cached_tokens = 0;  // summed over the call's chunks
  double seconds = 0;  // compute only (load waits removed)
  std::size_t chunks = 1;  // chunks in the call (of different sequences)
  double pairs = -1;       // Σ n_i (s_i + n_i/2) over the chunks; < 0: one chunk, n (s + n/2)
  double pair_tokens() const noexcept {
    return pairs >= 0 ? pairs : double(new_tokens) * (double(cached_tokens) + double(new_tokens) / 2);
  }
};
struct decode_sample {
  std::size_t batch = 0, context_tokens = 0;  // sequences, positions attended in all
  double seconds = 0;
};
struct step_sample {
  std::size_t sequences = 0, loaded_pages = 0;  // decodes + prefill chunks run; pages whose load admission issued
  double seconds = 0;  // the step's wall time less its prefill calls (with their load waits) and its decode call
};
struct cost_samples {
  std::vector<prefill_sample> prefill;
  std::vector<decode_sample> decode;
  std::vector<step_sample> step;
  bool batched_prefill = false;  // the server ran each step's prefill chunks as one call
  bool load_aware = false;       // the server decoded first and left loading chunks for a later step
};

// y ≈ coef · x (three features) by least squares; r2 of the fit.
struct linear_fit {
  std::array<double, 3> coef{};
  double r2 = 0;
  std::size_t samples = 0;
};

namespace detail {
inline linear_fit fit3(const std::vector<std::array<double, 3>>& x, const std::vector<double>& y) {
  linear_fit f;
  f.samples = y.size();
  if (y.size() < 3) return f;
  // Normal equations, columns scaled to unit RMS so that the 3×3 solve is well conditioned.
  std::array<double, 3> scale{};
  for (const auto& r : x)
    for (int j = 0; j < 3; ++j) scale[j] += r[j] * r[j];
  for (auto& s : scale) s = s > 0 ? std::sqrt(s / double(y.size())) : 1.0;
  double A[3][4] = {};
  for (std::size_t i = 0; i < y.size(); ++i)
    for (int j = 0; j < 3; ++j) {
      for (int k = 0; k < 3; ++k) A[j][k] += x[i][j] / scale[j] * x[i][k] / scale[k];
      A[j][3] += x[i][j] / scale[j] * y[i];
    }
  for (int j = 0; j < 3; ++j) A[j][j] += 1e-12;  // a feature that never varies stays solvable
  for (int c = 0; c < 3; ++c) {  // Gauss–Jordan with partial pivoting
    int p = c;
    for (int r = c + 1; r < 3; ++r)
      if (std::fabs(A[r][c]) > std::fabs(A[p][c])) p = r;
    for (int k = 0; k < 4; ++k) std::swap(A[c][k], A[p][k]);
    if (std::fabs(A[c][c]) < 1e-300) return f;
    for (int r = 0; r < 3; ++r) {
      if (r == c) continue;
      const double m = A[r][c] / A[c][c];
      for (int k = c; k < 4; ++k) A[r][k] -= m * A[c][k];
    }
  }
  for (int j = 0; j < 3; ++j) f.coef[std::size_t(j)] = A[j][3] / A[j][j] / scale[std::size_t(j)];
  double mean = 0, ss_tot = 0, ss_res = 0;
  for (double v : y) mean += v;
  mean /= double(y.size());
  for (std::size_t i = 0; i < y.size(); ++i) {
    const double p = f.coef[0] * x[i][0] + f.coef[1] * x[i][1] + f.coef[2] * x[i][2];
    ss_res += (y[i] - p) * (y[i] - p);
    ss_tot += (y[i] - mean) * (y[i] - mean);
  }
  f.r2 = ss_tot > 0 ? 1.0 - ss_res / ss_tot : 1.0;
  return f;
}

// Least squares of seconds on three features of each sample.
template <class Sample, class Features>
linear_fit fit_samples(const std::vector<Sample>& s, Features features) {
  std::vector<std::array<double, 3>> x;
  std::vector<double> y;
  x.reserve(s.size());
  y.reserve(s.size());
  for (const auto& p : s) {
    x.push_back(features(p));
    y.push_back(p.seconds);
  }
  return fit3(x, y);
}
}  // namespace detail

inline linear_fit fit_prefill(const std::vector<prefill_sample>& s) {
  return detail::fit_samples(s, [](const prefill_sample& p) {
    return std::array<double, 3>{1.0, double(p.new_tokens), p.pair_tokens()};
  });
}
inline linear_fit fit_decode(const std::vector<decode_sample>& s) {
  return detail::fit_samples(s, [](const decode_sample& d) {
    return std::array<double, 3>{1.0, double(d.batch), double(d.context_tokens)};
  });
}
inline linear_fit fit_step_overhead(const std::vector<step_sample>& s) {
  return detail::fit_samples(s, [](const step_sample& d) {
    return std::array<double, 3>{1.0, double(d.sequences), double(d.loaded_pages)};
  });
}

// One timed copy of `pages` pages.
struct copy_measurement {
  std::size_t pages = 0, bytes = 0;
  double load_s = 0, backup_s = 0;  // host → device (all layers landed), device → host
};

// Times the cache's copy strategy on fresh pools of the cache's own types (never its live pages):
// for each size, the median of `reps` loads and backups of that many pages (distinct slots).
template <class Cache>
std::vector<copy_measurement> copy_bandwidth(const kvtier::kv_shape& shape, std::size_t page_tokens,
                                             const std::vector<std::size_t>& sizes, int reps = 5) {
  using device_pool = typename Cache::device_pool_type;
  using host_pool = typename Cache::host_pool_type;
  using copy = typename Cache::copy_type;
  std::size_t most = 0;
  for (std::size_t s : sizes) most = std::max(most, s);
  const kvtier::page_size<> ps(page_tokens);
  device_pool dev = kvtier::detail::pool_factory<device_pool>::make(shape, ps, most);
  host_pool host = kvtier::detail::pool_factory<host_pool>::make(shape, ps, most);
  const auto dview = kvtier::detail::device_kv_view(dev);                                         // layer first
  const auto hview = kvtier::transfer::paged_view<kvtier::layout::page_first>(host.host_data(), shape, most, ps);  // page first
  typename Cache::stream_type stream;
  std::vector<typename Cache::event_type> events(shape.layers());
  std::vector<copy_measurement> out;
  using clock = std::chrono::steady_clock;
  for (std::size_t n : sizes) {
    std::vector<kvtier::transfer::page_pair> pairs;
    for (std::size_t i = 0; i < n; ++i) pairs.push_back({std::uint32_t(i), std::uint32_t(n - 1 - i)});
    std::vector<double> lt, bt;
    for (int r = 0; r <= reps; ++r) {  // the first round warms up
      const auto t0 = clock::now();
      if (!copy::load(stream, hview, dview, pairs, events)) return out;
      copy::synchronize(stream, events.back());
      const auto t1 = clock::now();
      const auto e = copy::backup(stream, dview, hview, pairs);
      if (!e) return out;
      copy::synchronize(stream, *e);
      const auto t2 = clock::now();
      if (r == 0) continue;
      lt.push_back(std::chrono::duration<double>(t1 - t0).count());
      bt.push_back(std::chrono::duration<double>(t2 - t1).count());
    }
    std::sort(lt.begin(), lt.end());
    std::sort(bt.begin(), bt.end());
    out.push_back({n, n * shape.bytes_per_page(page_tokens), lt[lt.size() / 2], bt[bt.size() / 2]});
  }
  return out;
}

// A slow tier's write and read bandwidth: `pages` pages of `page_bytes` put in one batch, then read
// back in one batch (distinct keys in namespace `ns`), each timed to its last completion.
struct slow_tier_measurement {
  std::size_t pages = 0, bytes = 0;
  double write_s = 0, read_s = 0;
  bool ok = false;  // every put and get succeeded
};
template <kvtier::storage_backend Backend>
slow_tier_measurement slow_tier_bandwidth(Backend& b, std::size_t page_bytes, std::size_t pages, kvtier::namespace_id ns) {
  slow_tier_measurement m{pages, pages * page_bytes};
  std::vector<std::byte> src(pages * page_bytes), dst(pages * page_bytes);
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = std::byte(i * 2654435761u >> 13);
  std::vector<kvtier::page_write> writes;
  std::vector<kvtier::page_read> reads;
  for (std::size_t i = 0; i < pages; ++i) {
    const kvtier::page_address a{ns, kvtier::page_key{0x5e7e5e7eull, i + 1}};
    writes.push_back({a, i, std::span<const std::byte>(src).subspan(i * page_bytes, page_bytes)});
    reads.push_back({a, i, std::span<std::byte>(dst).subspan(i * page_bytes, page_bytes)});
  }
  using clock = std::chrono::steady_clock;
  kvtier::storage_batch wb, rb;
  const auto t0 = clock::now();
  if (!b.put(writes, wb) || !b.wait(wb, std::chrono::minutes(2))) return m;
  const auto t1 = clock::now();
  if (!b.get(reads, rb) || !b.wait(rb, std::chrono::minutes(2))) return m;
  const auto t2 = clock::now();
  m.write_s = std::chrono::duration<double>(t1 - t0).count();
  m.read_s = std::chrono::duration<double>(t2 - t1).count();
  m.ok = true;
  for (const auto& e : wb.status()) m.ok &= e.code == kvtier::errc::ok;
  for (const auto& e : rb.status()) m.ok &= e.code == kvtier::errc::ok;
  m.ok &= src == dst;
  return m;
}

// Everything the JSON holds besides the fits.
struct cost_model_info {
  std::string model, backend, device, mode;
  std::size_t page_tokens = 0, page_bytes = 0;
  std::vector<slow_tier_measurement> file_tier;  // empty: not measured (no file tier in this build)
};

inline void write_cost_model_json(const std::string& path, const cost_model_info& info, const cost_samples& s,
                                  const std::vector<copy_measurement>& copies) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) throw kvtier::config_error("kvtier-serve: cannot write " + path);
  const linear_fit p = fit_prefill(s.prefill), d = fit_decode(s.decode);
  std::fprintf(f, "{\n  \"model\": \"%s\",\n  \"backend\": \"%s\",\n  \"device\": \"%s\",\n  \"mode\": \"%s\",\n", info.model.c_str(),
               info.backend.c_str(), info.device.c_str(), info.mode.c_str());
  std::fprintf(f, "  \"page_tokens\": %zu,\n  \"page_bytes\": %zu,\n", info.page_tokens, info.page_bytes);
  // prefill_batched: whether the engine ran a step's chunks as one call (the simulator charges so);
  // points: [new tokens, cached tokens, seconds, chunks, pair tokens] of each call (sums over chunks).
  std::fprintf(f, "  \"prefill_batched\": %s,\n", s.batched_prefill ? "true" : "false");
  // load_aware_steps: each step decoded first, and a chunk whose prefix was still loading waited for
  // a step with nothing else to run (server_options::load_aware; the simulator steps so).
  std::fprintf(f, "  \"load_aware_steps\": %s,\n", s.load_aware ? "true" : "false");
  std::fprintf(f, "  \"prefill\": {\"formula\": \"seconds = a + b*new_tokens + c*pair_tokens, pair_tokens = sum over the call's "
                  "chunks of n*(cached + n/2)\", \"a\": %.6e, \"b\": %.6e, \"c\": %.6e, \"r2\": %.4f, \"samples\": %zu,\n    \"points\": [",
               p.coef[0], p.coef[1], p.coef[2], p.r2, p.samples);
  const std::size_t ps = std::min<std::size_t>(s.prefill.size(), 2000), ds = std::min<std::size_t>(s.decode.size(), 2000);
  for (std::size_t i = 0; i < ps; ++i) {
    const auto& x = s.prefill[i * s.prefill.size() / ps];
    std::fprintf(f, "%s[%zu, %zu, %.6e, %zu, %.6e]", i ? ", " : "", x.new_tokens, x.cached_tokens, x.seconds, x.chunks, x.pair_tokens());
  }
  std::fprintf(f, "]},\n  \"decode\": {\"formula\": \"seconds = a + b*batch + c*context_tokens\", \"a\": %.6e, \"b\": %.6e, "
                  "\"c\": %.6e, \"r2\": %.4f, \"samples\": %zu,\n    \"points\": [",
               d.coef[0], d.coef[1], d.coef[2], d.r2, d.samples);
  for (std::size_t i = 0; i < ds; ++i) {
    const auto& x = s.decode[i * s.decode.size() / ds];
    std::fprintf(f, "%s[%zu, %zu, %.6e]", i ? ", " : "", x.batch, x.context_tokens, x.seconds);
  }
  std::fprintf(f, "]},\n");
  if (!s.step.empty()) {  // a later addition: readers of older files find no step_overhead
    const linear_fit o = fit_step_overhead(s.step);
    double mean = 0;
    for (const auto& x : s.step) mean += x.seconds / double(s.step.size());
    std::fprintf(f, "  \"step_overhead\": {\"formula\": \"seconds = a + b*sequences + c*loaded_pages\", \"a\": %.6e, \"b\": %.6e, "
                    "\"c\": %.6e, \"r2\": %.4f, \"samples\": %zu, \"mean\": %.6e},\n",
                 o.coef[0], o.coef[1], o.coef[2], o.r2, o.samples, mean);
  }
  std::fprintf(f, "  \"copies\": [");
  for (std::size_t i = 0; i < copies.size(); ++i) {
    const auto& c = copies[i];
    std::fprintf(f, "%s\n    {\"pages\": %zu, \"bytes\": %zu, \"load_h2d_s\": %.6e, \"load_h2d_bytes_per_s\": %.4e, "
                    "\"backup_d2h_s\": %.6e, \"backup_d2h_bytes_per_s\": %.4e}",
                 i ? "," : "", c.pages, c.bytes, c.load_s, c.load_s > 0 ? double(c.bytes) / c.load_s : 0.0, c.backup_s,
                 c.backup_s > 0 ? double(c.bytes) / c.backup_s : 0.0);
  }
  std::fprintf(f, "\n  ],\n  \"file_tier\": [");
  for (std::size_t i = 0; i < info.file_tier.size(); ++i) {
    const auto& c = info.file_tier[i];
    std::fprintf(f, "%s\n    {\"pages\": %zu, \"bytes\": %zu, \"ok\": %s, \"write_s\": %.6e, \"write_bytes_per_s\": %.4e, "
                    "\"read_s\": %.6e, \"read_bytes_per_s\": %.4e}",
                 i ? "," : "", c.pages, c.bytes, c.ok ? "true" : "false", c.write_s, c.write_s > 0 ? double(c.bytes) / c.write_s : 0.0,
                 c.read_s, c.read_s > 0 ? double(c.bytes) / c.read_s : 0.0);
  }
  std::fprintf(f, "\n  ]\n}\n");
  std::fclose(f);
}

}  // namespace kvtier_engine::serving
