// Compute or load on the CPU: kvtier-engine's CPU backend on stories260K, a 496-token prompt whose
// first 480 tokens (30 pages) are cached on a slow tier paced to a bandwidth (kvtier_engine::
// throttled_loader moving the pages for real with transfer::cpu::load), at multiples of the balance
// bandwidth (loading the prefix takes as long as computing it). Time to first token of compute only
// (the whole prompt prefilled), load only (every page through the tier, then the 16-token suffix)
// and compute or load (prefill_compute_or_load), interleaved, median of `reps`; the ideal Tc·Tl/(Tc+Tl) from the
// medians of the first two. Every compute-or-load run is checked: coverage exact, logits equal to
// compute only's bit for bit. Prints a table, writes CSV.
//   kvtier-compute-or-load-cpu [out.csv] [reps]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "kvtier/transfer.hpp"
#include "kvtier_engine/compute_or_load.hpp"
#include "kvtier_engine/cpu/cpu_backend.hpp"
#include "kvtier_engine/model_files.hpp"
#include "kvtier_engine/tokenizer.hpp"

using namespace kvtier_engine;
using clk = std::chrono::steady_clock;

int main(int argc, char** argv) {
  const std::string csv = argc > 1 ? argv[1] : "compute-or-load-cpu.csv";
  const int reps = argc > 2 ? std::max(1, std::stoi(argv[2])) : 5;
  const model_files files = model_files::in(KVTIER_ENGINE_MODELS_DIR "/stories260K");
  const model_weights w = model_weights::load_llama2c(files.checkpoint.string(), files.name);
  const model_config& m = w.config();
  constexpr std::size_t P = 16, N = 496, pages = 30, chunk_pages = 2, batch_pages = 2, slots = 40;
  const kvtier::kv_shape shape = m.kv_shape(kvtier::dtype::fp32);
  const std::size_t page_bytes = shape.bytes_per_page(P);
  std::vector<std::byte> pool_mem(page_bytes * slots);
  const kv_pool pool{kvtier::transfer::layer_first_view(pool_mem.data(), shape, slots * P), P, slots};
  cpu_backend be(m, w, pool, backend_options{precision::fp32, 2});
  std::vector<kvtier::token_id> prompt(N);
  for (std::size_t i = 0; i < N; ++i) prompt[i] = kvtier::token_id{std::int32_t(3 + (i * 2654435761u + 17) % (m.vocab - 3))};
  prompt[0] = bos_token;
  std::vector<kvtier::device_slot> table(N / P + 1);
  for (std::size_t i = 0; i < table.size(); ++i) table[i] = kvtier::device_slot{std::uint32_t(i)};
  std::vector<float> logits(m.vocab), ref(m.vocab);
  auto prefill = [&](std::size_t b, std::size_t e) {
    if (!be.prefill({std::span(prompt).subspan(b, e - b), b, std::span(table).first((e + P - 1) / P)}, logits, {})) std::exit(1);
  };
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  auto timed = [](auto&& f) {
    const auto t0 = clk::now();
    f();
    return std::chrono::duration<double>(clk::now() - t0).count();
  };
  // Compute only (chunks of chunk_pages, as the compute side runs), the reference logits and KV.
  std::vector<double> tc;
  for (int i = 0; i < reps + 1; ++i)
    tc.push_back(timed([&] {
      for (std::size_t b = 0; b < N; b += chunk_pages * P) prefill(b, std::min(N, b + chunk_pages * P));
    }));
  tc.erase(tc.begin());  // warm-up
  ref = logits;
  std::vector<std::byte> store(page_bytes * pages);
  const auto store_view = kvtier::transfer::paged_view(store.data(), shape, pages, kvtier::page_size<>(P));
  std::vector<kvtier::transfer::page_pair> to_store;
  for (std::size_t i = 0; i < pages; ++i) to_store.push_back({std::uint32_t(i), std::uint32_t(i)});
  if (!kvtier::transfer::cpu::backup(pool.view, store_view, to_store)) return 1;
  auto move = [&](kvtier::page_range r) {
    std::vector<kvtier::transfer::page_pair> pairs;
    for (std::size_t p = r.begin; p < r.end; ++p) pairs.push_back({std::uint32_t(p), table[p].value()});
    return kvtier::transfer::cpu::load(store_view, pool.view, pairs).has_value();
  };
  // The planner's compute model, from two chunks (head and tail of the prefix).
  const std::size_t C = chunk_pages * P;
  std::vector<double> th, tt;
  for (int i = 0; i < reps; ++i) th.push_back(timed([&] { prefill(0, C); })), tt.push_back(timed([&] { prefill(pages * P - C, pages * P); }));
  kvtier::compute_or_load_config cfg;
  cfg.page_tokens = P;
  cfg.compute_chunk_pages = chunk_pages;
  cfg.load_batch_pages = batch_pages;
  cfg.page_bytes = page_bytes;
  const double n = double(C);
  cfg.compute.per_token_pair_s = std::max(0.0, (median(tt) - median(th)) / (n * double(pages * P - C)));
  cfg.compute.per_token_s = std::max(1e-9, (median(th) - cfg.compute.per_token_pair_s * n * (n + 1) / 2) / n);
  const double balance = double(pages * page_bytes) / cfg.compute.seconds(0, pages * P);
  std::printf("stories260K, %zu-token prompt, %zu cached pages of %zu bytes; compute only (before the sweep) %.2f ms; model "
              "prefix %.2f ms; balance %.1f MB/s\n",
              N, pages, page_bytes, median(tc) * 1e3, cfg.compute.seconds(0, pages * P) * 1e3, balance / 1e6);
  std::printf("\n| bandwidth (x balance) | MB/s | compute only ms | load only ms | compute or load ms | Tc·Tl/(Tc+Tl) ms | CoL / ideal | "
              "best single / CoL | pages computed / loaded | exact |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
  std::ofstream out(csv);
  out << "x_balance,mbps,compute_only_ms,load_only_ms,compute_or_load_ms,ideal_ms,computed_pages,loaded_pages,exact\n";
  for (const double x : {0.25, 0.5, 1.0, 2.0, 4.0}) {
    const double rate = balance * x;
    cfg.load_bytes_per_s = rate;
    std::vector<double> tl, tb, tcr;
    bool exact = true;
    std::size_t computed = 0, loaded = 0;
    for (int rep = 0; rep < reps; ++rep) {  // the three interleaved, so the machine's drift hits all alike
      tcr.push_back(timed([&] {
        for (std::size_t b = 0; b < N; b += chunk_pages * P) prefill(b, std::min(N, b + chunk_pages * P));
      }));
      std::fill(pool_mem.begin(), pool_mem.end(), std::byte{0xff});  // NaN: nothing stale is read
      {
        throttled_loader loader(rate, page_bytes, move);
        tl.push_back(timed([&] {
          std::size_t started = 0;
          for (std::size_t e = pages; e > 0; e -= std::min(e, batch_pages), ++started) loader.start({e - std::min(e, batch_pages), e});
          for (std::size_t i = 0; i < started; ++i) exact &= loader.wait().ok;
          prefill(pages * P, N);
        }));
        exact &= std::memcmp(logits.data(), ref.data(), logits.size() * 4) == 0;
      }
      std::fill(pool_mem.begin(), pool_mem.end(), std::byte{0xff});
      throttled_loader loader(rate, page_bytes, move);
      kvtier::result<compute_or_load_result> r = kvtier::make_error(kvtier::errc::invalid_argument);
      tb.push_back(timed([&] { r = prefill_compute_or_load(be, loader, prompt, table, 0, pages, cfg, logits); }));
      if (!r) return 1;
      exact &= covers_exactly_once(r->computed, r->loaded, 0, pages) && std::memcmp(logits.data(), ref.data(), logits.size() * 4) == 0;
      computed = loaded = 0;
      for (const auto& c : r->computed) computed += c.size();
      for (const auto& l : r->loaded) loaded += l.size();
    }
    const double Tc = median(tcr), Tl = median(tl), Tb = median(tb), ideal = Tc * Tl / (Tc + Tl);
    std::printf("| %.2f | %.1f | %.2f | %.2f | %.2f | %.2f | %.3f | %.2f | %zu / %zu | %s |\n", x, rate / 1e6, Tc * 1e3, Tl * 1e3,
                Tb * 1e3, ideal * 1e3, Tb / ideal, std::min(Tc, Tl) / Tb, computed, loaded, exact ? "yes" : "NO");
    out << x << ',' << rate / 1e6 << ',' << Tc * 1e3 << ',' << Tl * 1e3 << ',' << Tb * 1e3 << ',' << ideal * 1e3 << ',' << computed
        << ',' << loaded << ',' << (exact ? 1 : 0) << '\n';
  }
  std::printf("wrote %s\n", csv.c_str());
  return 0;
}
