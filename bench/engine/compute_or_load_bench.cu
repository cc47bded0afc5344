// bench/engine: compute or load (Cake) on the GPU. llama3-8b shape, synthetic bf16 weights, a
// prompt of `prefix` cached tokens + 512 new ones whose prefix KV sits on a slow tier of bandwidth
// B (pages in pinned host memory moved for real by kvtier's copier, staged path, paced to B by
// kvtier_engine::throttled_loader, as a tier of that rate would deliver them). Time to first token:
//   compute only:    prefill of all prefix + 512 tokens (the slow tier unused)
//   load only:       every prefix page through the tier at B, then the 512-token suffix
//   compute or load: prefill_compute_or_load (chunks of 2,048 computed from the head while 64-page
//                    batches load from the tail, re-planned as each completes), then the suffix
// at B = 1, 2, 4, 8, 16 GB/s and at the balance point (the B at which loading the prefix takes as
// long as computing it) for the first prefix length, at the balance point for the others. Median of
// 3 (compute only), of 2 (upper value; load only at 1 and 2 GB/s: one run).
// The planner's compute model (per token, per token pair) is fitted in the same run from two
// 2,048-token chunks. Prints a table, writes CSV.
//   kvtier-bench-compute-or-load [out.csv] [prefix tokens...]
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "common/cuda_check.hpp"
#include "kvtier/layout.hpp"
#include "kvtier/memory/device_layer_pool.cuh"
#include "kvtier/memory/pinned_host_pool.cuh"
#include "kvtier/transfer/gpu.cuh"
#include "kvtier/transfer/views.hpp"
#include "kvtier_engine/compute_or_load.hpp"
#include "kvtier_engine/cuda/cuda_backend.cuh"

using namespace kvtier_engine;
using namespace kvtier_engine::cuda;
using clk = std::chrono::steady_clock;
using kvtier_bench::must;

namespace {
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
double secs(clk::time_point a, clk::time_point b) { return std::chrono::duration<double>(b - a).count(); }
}  // namespace

int main(int argc, char** argv) {
  const std::string csv = argc > 1 ? argv[1] : "compute-or-load.csv";
  std::vector<std::size_t> prefixes;
  for (int i = 2; i < argc; ++i) prefixes.push_back(std::stoul(argv[i]));
  if (prefixes.empty()) prefixes = {32256, 16128};
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "props");
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);

  model_config m = shapes::llama3_8b();
  m.seq_len = 34816;
  const std::size_t P = 16, suffix = 512, chunk_tokens = 2048, batch_pages = 64;
  const std::size_t max_total = *std::max_element(prefixes.begin(), prefixes.end()) + suffix;  // prefixes: multiples of 16
  const std::size_t slots = max_total / P + 8;
  const kvtier::kv_shape shape = m.kv_shape(kvtier::dtype::bf16);
  const std::size_t page_bytes = shape.bytes_per_page(P);
  kvtier::memory::device_layer_pool dev(shape, kvtier::page_size<>(P), slots);
  const kv_pool pool{kvtier::transfer::layer_first_view(dev.plane_table(), shape, slots * P), P, slots};
  const auto weights = model_weights::synthetic(m, 7, /*materialize=*/false);
  cuda_options co;
  co.max_chunk_rows = 8192;
  cuda_backend be(m, weights, pool, backend_options{precision::bf16, 0, 0}, co);
  cudaStream_t s = be.stream();
  std::vector<kvtier::device_slot> table(slots);
  for (std::size_t i = 0; i < slots; ++i) table[i] = kvtier::device_slot(std::uint32_t(i));
  std::vector<float> logits(m.vocab), logits_load(m.vocab);
  std::mt19937 rng(1);
  std::vector<kvtier::token_id> all(max_total);
  for (auto& t : all) t = kvtier::token_id(std::int32_t(rng() % m.vocab));
  auto prefill = [&](std::span<const kvtier::token_id> prompt, std::size_t start, std::size_t n) {
    must(be.prefill(prefill_chunk{prompt.subspan(start, n), start, std::span(table).first((start + n + P - 1) / P)}, logits, {}),
         "prefill");
  };

  // The slow tier's pages: pinned host memory, page first (its own layout), moved by the copier.
  const std::size_t max_pages = (max_total - suffix) / P;
  kvtier::memory::pinned_host_pool store(shape, kvtier::page_size<>(P), max_pages);
  const auto store_view = kvtier::transfer::paged_view<kvtier::layout::page_first>(store.device_data(), shape, max_pages,
                                                                                     kvtier::page_size<>(P));
  kvtier::transfer::gpu::copier cp;
  cudaStream_t load_stream;
  int lowest = 0, highest = 0;
  check(cudaDeviceGetStreamPriorityRange(&lowest, &highest), "priorities");
  check(cudaStreamCreateWithPriority(&load_stream, cudaStreamNonBlocking, highest), "stream");
  // The loader's copy path: staged (default; what run 1 measured), or KVTIER_COL_LOADER=batch (copy
  // engines only, cudaMemcpyBatchAsync: no SM beside compute) or =kernel.
  const char* lp = std::getenv("KVTIER_COL_LOADER");
  const std::string loader_name = lp ? lp : "staged";
  const auto loader_path = loader_name == "batch"    ? kvtier::transfer::gpu::strategy::memcpy_batch
                           : loader_name == "kernel" ? kvtier::transfer::gpu::strategy::kernel
                                                     : kvtier::transfer::gpu::strategy::staged;
  std::printf("loader path: %s\n", loader_name.c_str());
  auto move = [&](kvtier::page_range r) {  // the loader thread: store pages -> their device slots
    std::vector<kvtier::transfer::page_pair> pairs;
    for (std::size_t p = r.begin; p < r.end; ++p) pairs.push_back({std::uint32_t(p), table[p].value()});
    kvtier::transfer::gpu::options o{load_stream, 0, {}, loader_path};
    if (!cp.load(store_view, pool.view, pairs, kvtier::transfer::layer_range::all(), o)) return false;
    return cudaStreamSynchronize(load_stream) == cudaSuccess;
  };

  std::ofstream out(csv);
  out << "prefix_tokens,suffix_tokens,gbps,strategy,ttft_ms,ideal_ms,meeting_page,pages,computed_pages,loaded_pages,"
         "coverage_exact,logits_equal_load_only\n";
  std::printf("\n| prefix | GB/s | compute only ms | load only ms | compute or load ms | Tc·Tl/(Tc+Tl) ms | CoL / ideal | "
              "best single / CoL | meeting page / pages | logits = load only |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
  prefill(all, 0, 2048);  // warm-up: cuBLAS algorithms, module load
  for (const std::size_t prefix : prefixes) {
    const std::size_t N = prefix + suffix, pages = prefix / P;
    const std::span<const kvtier::token_id> prompt(all.data(), N);
    // Compute only: the whole prompt, as the engine would prefill it.
    std::vector<double> tc;
    for (int i = 0; i < 3; ++i) {
      check(cudaStreamSynchronize(s), "sync");
      const auto t0 = clk::now();
      prefill(prompt, 0, N);
      tc.push_back(secs(t0, clk::now()));
    }
    const double Tc = median(tc);
    // The prefix's KV onto the slow tier (this prefill's, so every strategy serves the same bytes).
    {
      std::vector<kvtier::transfer::page_pair> pairs;
      for (std::size_t p = 0; p < pages; ++p) pairs.push_back({table[p].value(), std::uint32_t(p)});
      must(cp.backup(pool.view, store_view, pairs, kvtier::transfer::layer_range::all(),
                     {load_stream, 0, {}, kvtier::transfer::gpu::strategy::staged}),
           "backup");
      check(cudaStreamSynchronize(load_stream), "backup sync");
    }
    // The compute model, from two chunks: [0, C) and [prefix - C, prefix) (per token and per pair).
    auto chunk_s = [&](std::size_t start) {
      std::vector<double> t;
      for (int i = 0; i < 3; ++i) {
        const auto t0 = clk::now();
        prefill(prompt, start, chunk_tokens);
        t.push_back(secs(t0, clk::now()));
      }
      return median(t);
    };
    const double t_head = chunk_s(0), t_tail = chunk_s(prefix - chunk_tokens);
    kvtier::compute_or_load_config cfg;
    cfg.page_tokens = P;
    cfg.compute_chunk_pages = chunk_tokens / P;
    cfg.load_batch_pages = batch_pages;
    cfg.page_bytes = page_bytes;
    const double n = double(chunk_tokens);
    cfg.compute.per_token_pair_s = std::max(0.0, (t_tail - t_head) / (n * double(prefix - chunk_tokens)));
    cfg.compute.per_token_s = std::max(1e-9, (t_head - cfg.compute.per_token_pair_s * n * (n + 1) / 2) / n);
    const double prefix_bytes = double(pages * page_bytes);
    const double Tc_prefix = cfg.compute.seconds(0, prefix);
    const double balance = prefix_bytes / Tc_prefix / 1e9;
    std::printf("prefix %zu: compute only %.1f ms; chunk of 2048 at 0: %.2f ms, at %zu: %.2f ms; model prefix %.1f ms; "
                "balance %.2f GB/s; prefix %.2f GiB\n",
                prefix, Tc * 1e3, t_head * 1e3, prefix - chunk_tokens, t_tail * 1e3, Tc_prefix * 1e3, balance,
                prefix_bytes / double(1 << 30));
    // The full sweep for the longest prefix; the balance point alone for the others.
    std::vector<double> rates = {balance};
    if (prefix == prefixes.front()) rates = {1, 2, 4, 8, 16, balance};
    for (const double gbps : rates) {
      cfg.load_bytes_per_s = gbps * 1e9;
      // Load only: every batch through the tier, then the suffix.
      std::vector<double> tl;
      for (int rep = 0; rep < (gbps < 2.5 ? 1 : 2); ++rep) {
        check(cudaMemsetAsync(dev.device_plane(kvtier::device_slot(0), 0, 0), 0, 4096, s), "clobber");
        check(cudaStreamSynchronize(s), "sync");
        throttled_loader loader(cfg.load_bytes_per_s, page_bytes, move);
        const auto t0 = clk::now();
        std::size_t started = 0;
        for (std::size_t e = pages; e > 0; e -= std::min(e, batch_pages), ++started)
          loader.start({e - std::min(e, batch_pages), e});
        bool ok = true;
        for (std::size_t i = 0; i < started; ++i) ok &= loader.wait().ok;
        if (!ok) std::fprintf(stderr, "a load failed\n");
        prefill(prompt, prefix, suffix);
        tl.push_back(secs(t0, clk::now()));
      }
      const double Tl = median(tl);
      logits_load = logits;
      // Compute or load.
      std::vector<double> tb;
      compute_or_load_result last;
      bool exact = true, same = true;
      for (int rep = 0; rep < 2; ++rep) {
        check(cudaMemsetAsync(dev.device_plane(kvtier::device_slot(0), 0, 0), 0, 4096, s), "clobber");
        check(cudaStreamSynchronize(s), "sync");
        throttled_loader loader(cfg.load_bytes_per_s, page_bytes, move);
        compute_or_load_options o;
        o.suffix_chunk_tokens = suffix;
        const auto t0 = clk::now();
        auto r = prefill_compute_or_load(be, loader, prompt, table, 0, pages, cfg, logits, o);
        tb.push_back(secs(t0, clk::now()));
        if (!r) {  // recorded, and the sweep goes on
          std::printf("compute or load failed at %.2f GB/s: %s\n", gbps, std::string(kvtier::to_string(r.code())).c_str());
          exact = false;
          break;
        }
        exact &= covers_exactly_once(r->computed, r->loaded, 0, pages) && r->failed.empty();
        same &= std::equal(logits.begin(), logits.end(), logits_load.begin());
        last = *r;
      }
      const double Tb = median(tb), ideal = Tc * Tl / (Tc + Tl);
      std::size_t computed = 0, loaded = 0;
      for (const auto& c : last.computed) computed += c.size();
      for (const auto& l : last.loaded) loaded += l.size();
      std::printf("| %zu | %.2f | %.1f | %.1f | %.1f | %.1f | %.3f | %.2f | %zu / %zu | %s |\n", prefix, gbps, Tc * 1e3, Tl * 1e3,
                  Tb * 1e3, ideal * 1e3, Tb / ideal, std::min(Tc, Tl) / Tb, last.meeting_page, pages, same ? "yes" : "NO");
      std::fflush(stdout);
      for (auto [name, t] : {std::pair<const char*, double>{"compute_only", Tc}, {"load_only", Tl}, {"compute_or_load", Tb}})
        out << prefix << ',' << suffix << ',' << gbps << ',' << name << ',' << t * 1e3 << ',' << ideal * 1e3 << ','
            << last.meeting_page << ',' << pages << ',' << computed << ',' << loaded << ',' << (exact ? 1 : 0) << ','
            << (same ? 1 : 0) << '\n';
      out.flush();  // a later failure keeps the rows written so far
    }
  }
  std::printf("wrote %s\n", csv.c_str());
  cudaStreamDestroy(load_stream);
  return 0;
}
