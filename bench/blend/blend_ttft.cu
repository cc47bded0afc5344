// bench/blend: time to first token of CacheBlend on kvtier-engine's CUDA backend at the llama3-8b
// shape (synthetic bf16 weights generated on the device), against full prefill measured in the same
// run. The prompt: 8 chunks of 2,048 tokens and a 64-token question (16,448 tokens; other sizes from
// the command line, e.g. the issue's 6 x 512 + 100). Each chunk's KV
// is computed alone (positions 0..2047) and backed up to kvtier's pinned host pool (page-first), as a
// chunk index would hold it. Blending:
//  - placement: kvtier's GPU copier loads the chunk pages into the prompt's pages with RoPE on load
//    (K rotated by the chunk's offset while it moves; chunk 0 at offset 0 is a bit copy), layer by
//    layer with one event per layer;
//  - partial prefill (cuda/blend_prefill.cuh): chunk 0 is a true prefix (never computed); layer 0
//    computes every other row; on layer 1 every row's K/V is computed and the placed tokens are ranked
//    by CacheBlend's K+V deviation from the placed K/V on the GPU (kvtier::blend::gpu::deviation and
//    a CUB radix sort: select_deviating's choice); the top r of the placed tokens (chunks 1..) and the
//    question go on through layers 1..31 (placed rows stop after the last layer's K/V).
// Per r: placement alone (device time), selection (wall, GPU idle), recompute (KV already placed:
// wall of the partial prefill less the selection), TTFT (placement and partial prefill together:
// each layer waits for its placement), speed-up = full prefill / TTFT. Full prefill runs twice: as one
// pass of the whole prompt and with the backend's default options (4,096-row pieces); the faster is the baseline. Floors: FLOPs / 790 TFLOP/s
// (H200 bf16 dense peak), chunk KV bytes / 55 GB/s (host→device).
//   kvtier-bench-blend-ttft [out.csv [chunks chunk_tokens question_tokens]]   (default 8 2048 64)
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "kvtier/layout.hpp"
#include "kvtier/memory/device_layer_pool.cuh"
#include "kvtier/memory/pinned_host_pool.cuh"
#include "kvtier/transfer/gpu.cuh"
#include "kvtier/transfer/rope.hpp"
#include "kvtier/transfer/views.hpp"
#include "kvtier_engine/cuda/blend_prefill.cuh"
#include "kvtier_engine/cuda/cuda_backend.cuh"

using namespace kvtier_engine;
using namespace kvtier_engine::cuda;
using clk = std::chrono::steady_clock;

namespace {

constexpr double peak_flops = 790e12;  // H200 SXM bf16 dense tensor-core peak
constexpr double h2d_bytes_s = 55e9;   // host → device over PCIe 5.0 x16, achievable

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}
template <class F>
double wall_ms(F&& f) {
  const auto t0 = clk::now();
  f();
  return std::chrono::duration<double, std::milli>(clk::now() - t0).count();
}
void must(const kvtier::result<void>& r, const char* what) {
  if (!r) {
    std::fprintf(stderr, "%s failed: %s\n", what, std::string(kvtier::to_string(r.code())).c_str());
    std::exit(1);
  }
}
double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    num += double(got[i] - want[i]) * (got[i] - want[i]);
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / den);
}
std::size_t argmax(const std::vector<float>& v) { return std::size_t(std::max_element(v.begin(), v.end()) - v.begin()); }

struct row {
  std::string name;
  double r = 0;
  std::size_t kept = 0;
  double placement_ms = 0, selection_ms = 0, recompute_ms = 0, ttft_ms = 0, speedup = 0, floor_ms = 0, rel = 0;
  bool argmax_same = true, exact = false;
};

}  // namespace

int main(int argc, char** argv) {
  const std::string csv = argc > 1 ? argv[1] : "blend-ttft.csv";
  const auto arg = [&](int i, std::size_t def) { return argc > i ? std::size_t(std::stoul(argv[i])) : def; };
  const std::size_t P = 16, chunks = arg(2, 8), chunk = arg(3, 2048), question = arg(4, 64);
  if (chunks < 2 || chunk == 0 || chunk % P != 0 || question == 0) {
    std::fprintf(stderr, "kvtier-bench-blend-ttft: at least 2 chunks of a multiple of %zu tokens, a question\n", P);
    return 2;
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // every line out at once, also into a file cut short by a timeout
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "props");
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);

  model_config m = shapes::llama3_8b();
  const std::size_t start = chunk, placed = chunks * chunk;
  const std::size_t n = placed + question, pages = (n + P - 1) / P, chunk_pages = placed / P, slots = pages + 4;
  m.seq_len = n + P;
  const kvtier::kv_shape shape = m.kv_shape(kvtier::dtype::bf16);
  kvtier::memory::device_layer_pool dev(shape, kvtier::page_size<>(P), slots);
  const kv_pool pool{kvtier::transfer::layer_first_view(dev.plane_table(), shape, slots * P), P, slots};
  const auto weights = model_weights::synthetic(m, 7, /*materialize=*/false);
  // One pass holds the whole prompt: the baseline prefill runs as one chunk of every row too.
  cuda_backend be(m, weights, pool, backend_options{precision::bf16, 0, 0}, cuda_options{int(pages * P), 8, 16});
  cudaStream_t s = be.stream();
  std::printf("backend: bf16, batch-invariant %s, one pass of %zu rows\n", be.batch_invariant() ? "yes" : "no", n);

  std::mt19937 rng(1);
  std::vector<kvtier::token_id> tokens(n);
  for (auto& t : tokens) t = kvtier::token_id(std::int32_t(rng() % m.vocab));
  std::vector<kvtier::device_slot> table(slots);
  for (std::size_t i = 0; i < slots; ++i) table[i] = kvtier::device_slot(std::uint32_t(i));
  std::vector<float> logits(m.vocab), full_logits(m.vocab);

  // Floors.
  const auto attn_flops = [&](double pos) { return 4.0 * m.head_size * m.heads * (pos + 1); };  // one row, one layer
  const double qkv_flops = 2.0 * m.dim * (m.q_dim() + 2 * m.kv_dim());
  const double layer_flops = 2.0 * double(m.linear_macs_per_token(false)) / double(m.layers);  // one row, one layer
  const double head_flops = 2.0 * double(m.vocab) * m.dim;
  double full_flops = head_flops;
  for (std::size_t p = 0; p < n; ++p) full_flops += m.layers * (layer_flops + attn_flops(double(p)));
  const double chunk_bytes = double(placed) * shape.bytes_per_token();
  std::printf("floor: full prefill %.1f TFLOP / %.0f TFLOP/s = %.1f ms\n", full_flops / 1e12, peak_flops / 1e12,
              full_flops / peak_flops * 1e3);
  std::printf("floor: chunk KV %.3f GB / %.0f GB/s = %.1f ms\n", chunk_bytes / 1e9, h2d_bytes_s / 1e9, chunk_bytes / h2d_bytes_s * 1e3);
  // FLOPs of a blend that computed `kept` placed rows after layer 1 (layer 0 all rows, layer 1 K/V of all).
  const auto blend_flops = [&](const std::vector<std::size_t>& kept) {
    double a_all = 0, a_kept = 0, a_new = 0;
    for (std::size_t p = start; p < n; ++p) a_all += attn_flops(double(p));
    for (std::size_t p : kept) a_kept += attn_flops(double(p));
    for (std::size_t p = placed; p < n; ++p) a_new += attn_flops(double(p));
    const double n_all = double(n - start), n_go = double(kept.size() + question), n_new = double(question);
    const double rest = layer_flops - qkv_flops;
    return head_flops + (n_all * layer_flops + a_all)                           // layer 0
           + n_all * qkv_flops + n_go * rest + a_kept + a_new                   // layer 1
           + double(m.layers - 3) * (n_go * layer_flops + a_kept + a_new)       // layers 2..30
           + n_go * qkv_flops + n_new * rest + a_new;                           // layer 31
  };

  // Contiguous pinned host → device rate (for reference next to the 55 GB/s floor).
  {
    const std::size_t bytes = std::size_t(1) << 30;
    void* host = nullptr;
    check(cudaHostAlloc(&host, bytes, cudaHostAllocDefault), "hostalloc");
    std::memset(host, 1, bytes);
    device_buffer<char> d(bytes);
    cudaEvent_t a, b;
    check(cudaEventCreate(&a), "event");
    check(cudaEventCreate(&b), "event");
    std::vector<double> t;
    for (int i = 0; i < 4; ++i) {
      check(cudaEventRecord(a, s), "record");
      check(cudaMemcpyAsync(d.data(), host, bytes, cudaMemcpyHostToDevice, s), "h2d");
      check(cudaEventRecord(b, s), "record");
      check(cudaEventSynchronize(b), "sync");
      float ms = 0;
      check(cudaEventElapsedTime(&ms, a, b), "elapsed");
      if (i > 0) t.push_back(ms);
    }
    std::printf("measured: contiguous pinned H2D %.1f GB/s (1 GiB cudaMemcpyAsync)\n", bytes / median(t) / 1e6);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    cudaFreeHost(host);
  }

  // The chunks' own KV: each computed alone at positions 0.., backed up to the pinned host pool.
  kvtier::memory::pinned_host_pool host(shape, kvtier::page_size<>(P), chunk_pages);
  const auto host_view = kvtier::transfer::paged_view<kvtier::layout::page_first>(host.device_data(), shape, chunk_pages,
                                                                                  kvtier::page_size<>(P));
  std::vector<kvtier::transfer::page_pair> pairs(chunk_pages);
  std::vector<long> deltas(chunk_pages);
  for (std::size_t i = 0; i < chunk_pages; ++i) {
    pairs[i] = {std::uint32_t(i), std::uint32_t(i)};
    deltas[i] = long(i / (chunk / P) * chunk);  // the chunk's offset in the prompt
  }
  for (std::size_t c = 0; c < chunks; ++c)
    must(be.prefill(prefill_chunk{std::span(tokens).subspan(c * chunk, chunk), 0, std::span(table).subspan(c * chunk / P)}, logits, {}),
         "chunk prefill");
  kvtier::transfer::gpu::copier cp;
  cudaStream_t copy_stream;
  int lowest = 0, highest = 0;  // the loads' kernels go ahead of compute blocks waiting for SMs
  check(cudaDeviceGetStreamPriorityRange(&lowest, &highest), "priorities");
  check(cudaStreamCreateWithPriority(&copy_stream, cudaStreamNonBlocking, highest), "stream");
  {
    kvtier::transfer::gpu::options o;
    o.stream = copy_stream;
    must(cp.backup(pool.view, host_view, pairs, kvtier::transfer::layer_range::all(), o), "backup");
    check(cudaStreamSynchronize(copy_stream), "backup sync");
  }

  // (a) Full prefill of the whole prompt.
  std::vector<row> table_rows;
  double full_ms = 0;
  {
    const prefill_chunk all{tokens, 0, table};
    must(be.prefill(all, full_logits, {}), "prefill");  // warm-up
    std::vector<double> t;
    for (int i = 0; i < 3; ++i) t.push_back(wall_ms([&] { must(be.prefill(all, full_logits, {}), "prefill"); }));
    full_ms = median(t);
    row r{"full prefill, one pass"};
    r.r = 1;
    r.kept = placed - start;
    r.recompute_ms = r.ttft_ms = full_ms;
    r.floor_ms = full_flops / peak_flops * 1e3;
    r.exact = true;
    table_rows.push_back(r);
    std::printf("full prefill, one %zu-row pass: %.1f ms (%.0f TFLOP/s)\n", n, full_ms, full_flops / full_ms / 1e9);
    // The same prefill with the backend's default options: 4,096-row pieces (the engine's usual chunking).
    cuda_backend be2(m, weights, pool, backend_options{precision::bf16, 0, 0}, cuda_options{});
    std::vector<float> l2(m.vocab);
    must(be2.prefill(all, l2, {}), "prefill");  // warm-up
    t.clear();
    for (int i = 0; i < 3; ++i) t.push_back(wall_ms([&] { must(be2.prefill(all, l2, {}), "prefill"); }));
    row r2 = r;
    r2.name = "full prefill, 4,096-row pieces";
    r2.recompute_ms = r2.ttft_ms = median(t);
    r2.rel = rel_l2(l2, full_logits);
    r2.exact = std::memcmp(l2.data(), full_logits.data(), l2.size() * sizeof(float)) == 0;
    r2.argmax_same = argmax(l2) == argmax(full_logits);
    table_rows.push_back(r2);
    std::printf("full prefill, 4,096-row pieces: %.1f ms (%.0f TFLOP/s), logits %s the one pass's\n", r2.ttft_ms,
                full_flops / r2.ttft_ms / 1e9, r2.exact ? "bit for bit" : "NOT bit for bit");
    full_ms = std::min(full_ms, r2.ttft_ms);  // the baseline: the faster of the two
    for (row& b : table_rows) b.speedup = full_ms / b.ttft_ms;
    std::printf("baseline for the speed-ups: %.1f ms\n", full_ms);
  }

  // Placement through the copier with RoPE on load; the faster of the staged and kernel paths.
  const kvtier::transfer::rope_spec spec{m.rope == rope_style::rotate_half ? kvtier::transfer::rope_convention::rotate_half
                                                                           : kvtier::transfer::rope_convention::adjacent_pairs,
                                         m.rope_theta, m.head_size, 0};
  const kvtier::transfer::rope_on_load rl{spec, kvtier::transfer::k_storage::rotated, deltas};
  std::vector<cudaEvent_t> ev(m.layers);
  for (auto& e : ev) check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "event");
  cudaEvent_t ea, eb;
  check(cudaEventCreate(&ea), "event");
  check(cudaEventCreate(&eb), "event");
  kvtier::transfer::gpu::options load;
  load.stream = copy_stream;
  load.rope = &rl;
  load.element = kvtier::dtype::bf16;
  load.layer_events = ev;
  const auto place = [&] { must(cp.load(host_view, pool.view, pairs, kvtier::transfer::layer_range::all(), load), "placement"); };
  const auto place_ms = [&] {
    check(cudaEventRecord(ea, copy_stream), "record");
    place();
    check(cudaEventRecord(eb, copy_stream), "record");
    check(cudaEventSynchronize(eb), "sync");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, ea, eb), "elapsed");
    return double(ms);
  };
  struct variant {
    const char* name;
    kvtier::transfer::gpu::strategy how;
    int blocks;
  };
  double placement_ms = 1e30;
  const char* placement_path = "";
  for (const variant v : {variant{"staged", kvtier::transfer::gpu::strategy::staged, 0},
                          variant{"kernel 32 blocks", kvtier::transfer::gpu::strategy::kernel, 32}}) {
    load.how = v.how;
    load.blocks = v.blocks;
    check(cudaStreamSynchronize(copy_stream), "idle");
    if (auto r = cp.load(host_view, pool.view, pairs, kvtier::transfer::layer_range::all(), load); !r) {  // warm-up
      std::printf("placement (copier, RoPE on load, %s): not available: %s\n", v.name, std::string(kvtier::to_string(r.code())).c_str());
      check(cudaStreamSynchronize(copy_stream), "placement");
      continue;
    }
    std::vector<double> t;
    for (int i = 0; i < 3; ++i) t.push_back(place_ms());
    std::printf("placement (copier, RoPE on load, %s): %.1f ms, %.1f GB/s\n", v.name, median(t), chunk_bytes / median(t) / 1e6);
    if (median(t) < placement_ms) placement_ms = median(t), placement_path = v.name;
  }
  for (const variant v : {variant{"staged", kvtier::transfer::gpu::strategy::staged, 0},
                          variant{"kernel 32 blocks", kvtier::transfer::gpu::strategy::kernel, 32}})
    if (std::string(v.name) == placement_path) load.how = v.how, load.blocks = v.blocks;
  if (placement_ms > 1e29) {
    std::printf("placement: no copier path could load with RoPE on load\n");
    return 1;
  }
  std::printf("placement path used below: %s\n", placement_path);
  std::printf("selection: CacheBlend's one-shot K+V deviation on layer 1 on the GPU (kvtier::blend::gpu::deviation + CUB sort), "
              "top r of the %zu placed tokens; layer 0 computed for all %zu rows, chunk 0 a true prefix\n",
              placed - start, n - start);

  // (b) Blending at each r.
  blend_prefiller bp(be, pool);
  const layer_hook wait_placement = [&](std::size_t l) { check(cudaStreamWaitEvent(s, ev[l], 0), "wait layer"); };
  for (const double r : {0.0, 0.05, 0.10, 0.15, 0.20, 0.30, 1.0}) {
    blend_options o;
    o.keep = r;
    row out{r == 0 ? "naive (r = 0)" : "blend"};
    out.r = r;
    const int reps = r == 1.0 ? 1 : 3;
    std::vector<double> compute, select, ttft;
    blend_report rep;
    const auto blend = [&](const layer_hook& wait) {
      auto res = bp.run(tokens, start, placed, table, o, logits, wait);
      if (!res) must(res.err(), "blend");
      rep = std::move(*res);
    };
    for (int i = 0; i < reps + 1; ++i) {  // KV placed first: the partial prefill alone (first run: warm-up)
      place();
      check(cudaStreamSynchronize(copy_stream), "placement");
      const double ms = wall_ms([&] { blend({}); });
      if (i > 0) compute.push_back(ms), select.push_back(rep.select_ms);
    }
    out.kept = rep.kept.size();
    out.rel = rel_l2(logits, full_logits);
    out.argmax_same = argmax(logits) == argmax(full_logits);
    out.exact = std::memcmp(logits.data(), full_logits.data(), logits.size() * sizeof(float)) == 0;
    for (int i = 0; i < reps; ++i) {  // TTFT: placement and partial prefill together
      check(cudaStreamSynchronize(s), "idle");
      const double ms = wall_ms([&] {
        place();
        blend(wait_placement);
      });
      ttft.push_back(ms);
    }
    out.placement_ms = placement_ms;
    out.selection_ms = median(select);
    out.recompute_ms = median(compute) - out.selection_ms;
    out.ttft_ms = median(ttft);
    out.speedup = full_ms / out.ttft_ms;
    out.floor_ms = std::max(blend_flops(rep.kept) / peak_flops, chunk_bytes / h2d_bytes_s) * 1e3;
    table_rows.push_back(out);
    std::printf("r = %.0f%%: %zu placed tokens recomputed, selection %.2f ms, recompute %.1f ms, TTFT %.1f ms, %.2fx, "
                "logits rel L2 %.3g%s\n", r * 100, out.kept, out.selection_ms, out.recompute_ms, out.ttft_ms, out.speedup, out.rel,
                out.exact ? " (bit for bit)" : "");
  }

  std::printf("\nTTFT, llama3-8b shape, bf16, %zu chunks x %zu tokens + %zu-token question (%zu tokens), H2D placement path: %s\n",
              chunks, chunk, question, n, placement_path);
  std::printf("| method | r | placed tokens recomputed | placement ms | selection ms | recompute ms | TTFT ms | speed-up vs full | "
              "floor ms | logits rel L2 vs full | next token = full |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const row& r : table_rows)
    std::printf("| %s | %.0f%% | %zu | %.1f | %.2f | %.1f | %.1f | %.2fx | %.1f | %.3g%s | %s |\n", r.name.c_str(), r.r * 100, r.kept,
                r.placement_ms, r.selection_ms, r.recompute_ms, r.ttft_ms, r.speedup, r.floor_ms, r.rel,
                r.exact ? " (bit for bit)" : "", r.argmax_same ? "yes" : "no");
  std::printf("placement: chunk pages from kvtier's pinned host pool through the GPU copier with RoPE on load, "
              "each layer's compute waiting for its layer event in the TTFT column\n");
  std::printf("floor: full = FLOPs / 790 TFLOP/s; blend = max(its FLOPs / 790 TFLOP/s, chunk KV / 55 GB/s)\n");

  std::ofstream f(csv);
  f << "method,r,kept_tokens,placement_ms,selection_ms,recompute_ms,ttft_ms,speedup,floor_ms,logits_rel_l2,bit_exact,argmax_same,"
       "placement_path\n";
  for (const row& r : table_rows)
    f << '"' << r.name << "\"," << r.r << ',' << r.kept << ',' << r.placement_ms << ',' << r.selection_ms << ',' << r.recompute_ms << ','
      << r.ttft_ms << ',' << r.speedup << ',' << r.floor_ms << ',' << r.rel << ',' << r.exact << ',' << r.argmax_same << ",\""
      << placement_path << "\"\n";
  std::printf("wrote %s\n", csv.c_str());
  for (auto& e : ev) cudaEventDestroy(e);
  cudaEventDestroy(ea);
  cudaEventDestroy(eb);
  cudaStreamDestroy(copy_stream);
  return 0;
}
