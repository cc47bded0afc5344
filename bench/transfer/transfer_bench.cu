// Bandwidth of moving 8,192 tokens of Llama-3-8B KV (1 GiB) between pinned host memory (page-first)
// and the device (layer-first), both directions, page sizes 1..128: the contiguous copy (ceiling),
// per-run cudaMemcpyAsync, cudaMemcpyBatchAsync, kvtier's kernel at SM budgets of 1, 2, 4, 8
// blocks, the staged path (copy engines + staging ring + relayout), the mixed path and the planner's
// choice (whole batches and layer by layer; host pages consecutive, and scattered); then the same
// beside a bf16 cuBLAS GEMM loop on another stream (the GEMM's slowdown and the copy's rate).
// Prints a table, writes CSV.
//   kvtier-bench-transfer [csv path] [--quick]
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/cuda_check.hpp"
#include "kvtier/transfer.hpp"
#include "kvtier/transfer/gpu.cuh"

using namespace kvtier;
using namespace kvtier::transfer;

namespace {
struct row {
  std::string direction, method;
  std::size_t page = 0;
  int blocks = 0;
  double ms = 0, gbps = 0, pct = 0, gemm_slowdown_pct = std::nan("");  // NaN: no GEMM alongside
};
std::vector<row> rows;
double ceiling[2];  // GB/s of the contiguous copy: [0] load (H2D), [1] backup (D2H)
constexpr double gib = 1024.0 * 1024 * 1024;

template <class F>
double median_ms(cudaStream_t s, int reps, F&& f) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  f();  // warm-up
  CK(cudaStreamSynchronize(s));
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    CK(cudaEventRecord(a, s));
    f();
    CK(cudaEventRecord(b, s));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void add(const std::string& dir, const std::string& method, std::size_t page, int blocks, double ms, double bytes,
         double slowdown = std::nan("")) {
  row r{dir, method, page, blocks, ms, bytes / (ms * 1e-3) / 1e9, 0, slowdown};
  r.pct = 100.0 * r.gbps / ceiling[dir == "load" ? 0 : 1];
  rows.push_back(r);
  std::printf("  %-7s %-22s P=%-4zu blocks=%-3d %9.3f ms %7.2f GB/s %6.1f%%%s\n", dir.c_str(), method.c_str(), page,
              blocks, ms, r.gbps, r.pct, !std::isnan(slowdown) ? (" gemm " + std::to_string(slowdown) + "%").c_str() : "");
  std::fflush(stdout);
}

void fill(std::byte* p, std::size_t n, std::uint64_t seed) {
  std::uint64_t x = seed | 1;
  for (std::size_t i = 0; i + 8 <= n; i += 8) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    std::memcpy(p + i, &x, 8);
  }
}

__global__ void fill_bf16(__nv_bfloat16* p, std::size_t n, unsigned seed) {
  for (std::size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += std::size_t{gridDim.x} * blockDim.x) {
    unsigned h = static_cast<unsigned>(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    p[i] = __float2bfloat16((h & 0xffff) / 65536.0f - 0.5f);
  }
}

// Compares sampled (page, layer, kv) blocks of the device buffer with the host pages.
bool verify(const kv_buffer<layout::page_first::mapping>& host, const layer_first_buffer& dev,
            const std::vector<page_pair>& pairs, bool load, std::size_t P) {
  std::mt19937 rng(7);
  const auto& e = host.map.extents();
  const std::size_t bytes = P * e.row_elements() * host.element_bytes;
  std::vector<std::byte> got(bytes);
  for (int i = 0; i < 256; ++i) {
    const page_pair p = pairs[rng() % pairs.size()];
    const std::size_t l = rng() % e.layers(), k = rng() % e.kv();
    const std::byte* h = host.page_row(l, k, load ? p.src : p.dst, P, 0, 0);
    const std::byte* d = dev.page_row(l, k, load ? p.dst : p.src, P, 0, 0);
    CK(cudaMemcpy(got.data(), d, bytes, cudaMemcpyDeviceToHost));
    if (std::memcmp(got.data(), h, bytes) != 0) return false;
  }
  return true;
}
}  // namespace

int main(int argc, char** argv) {
  const char* csv_path = "transfer.csv";
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--quick") quick = true;
    else csv_path = argv[i];
  }
  const kv_shape s = shapes::llama3_8b();
  const std::size_t tokens = 8192, bytes = s.bytes_per_token() * tokens;  // 1 GiB
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("kvtier transfer bench: %s, %d SMs; %zu tokens of Llama-3-8B = %.2f GiB\n", prop.name,
              prop.multiProcessorCount, tokens, bytes / gib);

  std::byte *host = nullptr, *dev = nullptr;
  CK(cudaHostAlloc(reinterpret_cast<void**>(&host), bytes, cudaHostAllocMapped));
  CK(cudaMalloc(&dev, bytes));
  fill(host, bytes, 12345);
  CK(cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice));
  int lo = 0, hi = 0;
  CK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
  cudaStream_t st, gs;
  CK(cudaStreamCreateWithPriority(&st, cudaStreamNonBlocking, hi));  // the transfer stream
  CK(cudaStreamCreateWithPriority(&gs, cudaStreamNonBlocking, lo));  // the GEMM stream

  // Ceiling and floor first: the contiguous copy, median of 10, measured again at the end; the
  // faster of the two medians is the ceiling (so a slow first reading cannot flatter the kernels).
  const int reps = quick ? 3 : 5;
  auto contiguous = [&](bool h2d_dir) {
    return median_ms(st, 10, [&] {
      if (h2d_dir) CK(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, st));
      else CK(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, st));
    });
  };
  double h2d = contiguous(true);
  double d2h = contiguous(false);
  ceiling[0] = bytes / (h2d * 1e-3) / 1e9;
  ceiling[1] = bytes / (d2h * 1e-3) / 1e9;
  std::printf("floor: 1 GiB at the contiguous rate: load %.2f ms (%.2f GB/s), backup %.2f ms (%.2f GB/s)\n", h2d,
              ceiling[0], d2h, ceiling[1]);
  add("load", "contiguous memcpy", 0, 0, h2d, bytes);
  add("backup", "contiguous memcpy", 0, 0, d2h, bytes);

  gpu::copier c;
  const layer_first_buffer dview = layer_first_view(dev, s, tokens);
  bool all_ok = true;
  const std::vector<std::size_t> page_sizes = quick ? std::vector<std::size_t>{1, 16, 128}
                                                    : std::vector<std::size_t>{1, 4, 16, 32, 64, 128, 256};
  std::mt19937 rng(42);
  for (std::size_t P : page_sizes) {
    const std::size_t pages = tokens / P;
    const auto hview = paged_view(host, s, pages, page_size<>(P));
    std::vector<std::uint32_t> perm(pages);
    std::iota(perm.begin(), perm.end(), 0u);
    std::shuffle(perm.begin(), perm.end(), rng);
    std::vector<page_pair> load_pairs(pages), backup_pairs(pages), load_scattered(pages), backup_scattered(pages);
    std::vector<std::uint32_t> host_perm(pages);  // a fragmented host pool: no two host pages adjacent in order
    std::iota(host_perm.begin(), host_perm.end(), 0u);
    std::shuffle(host_perm.begin(), host_perm.end(), rng);
    for (std::size_t i = 0; i < pages; ++i) {
      load_pairs[i] = {static_cast<std::uint32_t>(i), perm[i]};
      backup_pairs[i] = {perm[i], static_cast<std::uint32_t>(i)};
      load_scattered[i] = {host_perm[i], perm[i]};
      backup_scattered[i] = {perm[i], host_perm[i]};
    }
    for (bool load : {true, false}) {
      const std::string dir = load ? "load" : "backup";
      const auto& pairs = load ? load_pairs : backup_pairs;
      const auto& scattered = load ? load_scattered : backup_scattered;
      auto run = [&](gpu::options o, const std::vector<page_pair>* ps = nullptr) {
        o.stream = st;
        const auto& use = ps ? *ps : pairs;
        const result<void> r = load ? c.load(hview, dview, use, layer_range::all(), o)
                                    : c.backup(dview, hview, use, layer_range::all(), o);
        if (!r) {
          std::fprintf(stderr, "copy failed: %s\n", r.err().message().c_str());
          std::exit(1);
        }
      };
      gpu::options o;
      o.how = gpu::strategy::memcpy_per_run;
      if (P > 1)  // 1-token pages: 0.8 GB/s (docs/gpu.md), 3 s of device time per direction
        add(dir, "per-run cudaMemcpyAsync", P, 0, median_ms(st, P <= 4 ? 1 : 3, [&] { run(o); }), bytes);
      o.how = gpu::strategy::memcpy_batch;
      add(dir, "cudaMemcpyBatchAsync", P, 0, median_ms(st, 3, [&] { run(o); }), bytes);
      o.how = gpu::strategy::kernel;
      for (int b : {1, 2, 4, 8}) {
        o.blocks = b;
        add(dir, "kvtier kernel", P, b, median_ms(st, reps, [&] { run(o); }), bytes);
      }
      {  // layer by layer: one launch and one CUDA event per layer, as an engine overlapping layers uses it
        std::vector<cudaEvent_t> ev(s.layers());
        for (auto& e : ev) CK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
        gpu::options lo = o;
        lo.blocks = 2;
        lo.layer_events = ev;
        add(dir, "kvtier kernel per layer", P, 2, median_ms(st, reps, [&] { run(lo); }), bytes);
        for (auto e : ev) cudaEventDestroy(e);
      }
      {  // per layer with 4 and 8 blocks (the grid-shape side of the 1-token per-layer gap)
        std::vector<cudaEvent_t> ev(s.layers());
        for (auto& e : ev) CK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
        gpu::options lo = o;
        lo.layer_events = ev;
        for (int b : {4, 8}) {
          lo.blocks = b;
          add(dir, "kvtier kernel per layer", P, b, median_ms(st, reps, [&] { run(lo); }), bytes);
        }
        // The staged path and the planner, layer by layer (events per layer group).
        lo.blocks = 0;
        lo.how = gpu::strategy::staged;
        add(dir, "kvtier staged per layer", P, 0, median_ms(st, reps, [&] { run(lo); }), bytes);
        lo.how = gpu::strategy::automatic;
        lo.compute = compute_hint::idle;
        const double ms = median_ms(st, reps, [&] { run(lo); });
        add(dir, std::string("planner per layer: ") + name(c.stats().last), P, 0, ms, bytes);
        for (auto e : ev) cudaEventDestroy(e);
      }
      o.how = gpu::strategy::bulk;
      for (int b : {2}) {
        o.blocks = b;
        add(dir, "kvtier bulk", P, b, median_ms(st, reps, [&] { run(o); }), bytes);
      }
      o.blocks = 0;
      o.how = gpu::strategy::staged;
      add(dir, "kvtier staged", P, 0, median_ms(st, reps, [&] { run(o); }), bytes);
      add(dir, "kvtier staged scattered host pages", P, 0, median_ms(st, reps, [&] { run(o, &scattered); }), bytes);
      o.how = gpu::strategy::mixed;
      add(dir, "kvtier mixed", P, 0, median_ms(st, reps, [&] { run(o); }), bytes);
      add(dir, "kvtier mixed scattered host pages", P, 0, median_ms(st, reps, [&] { run(o, &scattered); }), bytes);
      o.how = gpu::strategy::automatic;
      o.compute = compute_hint::idle;
      {
        const double ms = median_ms(st, reps, [&] { run(o); });
        add(dir, std::string("planner: ") + name(c.stats().last), P, 0, ms, bytes);
        const double ms2 = median_ms(st, reps, [&] { run(o, &scattered); });
        add(dir, std::string("planner scattered host pages: ") + name(c.stats().last), P, 0, ms2, bytes);
      }
      o.compute = compute_hint::unknown;
      // Correctness of every path: poison the destination, copy once, compare sampled blocks.
      for (gpu::strategy how : {gpu::strategy::kernel, gpu::strategy::bulk, gpu::strategy::staged,
                                gpu::strategy::mixed}) {
        CK(cudaStreamSynchronize(st));
        if (load) CK(cudaMemset(dev, 0xA5, bytes));
        else std::memset(host, 0xA5, bytes);
        o.how = how;
        o.blocks = 2;
        run(o, how == gpu::strategy::mixed ? &scattered : nullptr);
        CK(cudaStreamSynchronize(st));
        const bool ok = verify(hview, dview, how == gpu::strategy::mixed ? scattered : pairs, load, P);
        all_ok = all_ok && ok;
        if (!ok) std::printf("  VERIFY FAILED: %s P=%zu strategy %d\n", dir.c_str(), P, static_cast<int>(how));
      }
    }
  }

  {  // the ceiling again; keep the faster median and rescale the percentages
    const double h2d_end = contiguous(true), d2h_end = contiguous(false);
    std::printf("contiguous again: load %.2f ms, backup %.2f ms\n", h2d_end, d2h_end);
    h2d = std::min(h2d, h2d_end);
    d2h = std::min(d2h, d2h_end);
    ceiling[0] = bytes / (h2d * 1e-3) / 1e9;
    ceiling[1] = bytes / (d2h * 1e-3) / 1e9;
    for (row& r : rows) {
      r.pct = 100.0 * r.gbps / ceiling[r.direction == "load" ? 0 : 1];
      if (r.method == "contiguous memcpy") {
        r.ms = r.direction == "load" ? h2d : d2h;
        r.gbps = ceiling[r.direction == "load" ? 0 : 1];
        r.pct = 100.0;
      }
    }
  }

  // kvtier next to a bf16 GEMM loop on a lower-priority stream.
  {
    const int n = 8192, gemms = quick ? 10 : 40;
    __nv_bfloat16 *A, *B, *C;
    CK(cudaMalloc(&A, sizeof(__nv_bfloat16) * n * n));
    CK(cudaMalloc(&B, sizeof(__nv_bfloat16) * n * n));
    CK(cudaMalloc(&C, sizeof(__nv_bfloat16) * n * n));
    fill_bf16<<<1024, 256>>>(A, std::size_t(n) * n, 1);
    fill_bf16<<<1024, 256>>>(B, std::size_t(n) * n, 2);
    CK(cudaDeviceSynchronize());
    cublasHandle_t h;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) return 1;
    cublasSetStream(h, gs);
    const float alpha = 1, beta = 0;
    auto gemm_loop = [&] {
      for (int i = 0; i < gemms; ++i)
        if (cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, A, CUDA_R_16BF, n, B, CUDA_R_16BF, n, &beta, C,
                         CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS)
          std::exit(1);
    };
    const double gemm_alone = median_ms(gs, 3, gemm_loop);
    std::printf("GEMM alone: %d x %d^3 bf16 in %.2f ms (%.0f TFLOP/s)\n", gemms, n, gemm_alone,
                2.0 * n * n * double(n) * gemms / (gemm_alone * 1e-3) / 1e12);
    std::vector<cudaEvent_t> layer_events(s.layers());
    for (auto& e : layer_events) CK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    gpu::copier deep(staging_config{8, std::size_t{32} << 20});
    for (const std::size_t P : {std::size_t{16}, std::size_t{1}, std::size_t{64}}) {
    const std::size_t pages = tokens / P;
    const auto hview = paged_view(host, s, pages, page_size<>(P));
    std::vector<page_pair> pairs(pages);
    for (std::size_t i = 0; i < pages; ++i) pairs[i] = {static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(pages - 1 - i)};
    struct variant {
      const char* dir;
      const char* method;
      int blocks;
      gpu::strategy how;
      bool per_layer = false;  // one launch (and event) per layer: short kernels the GEMM can interleave with
    };
    const std::vector<variant> staged_variants = {
        variant{"load", "kvtier staged + GEMM", 2, gpu::strategy::staged},
        variant{"backup", "kvtier staged + GEMM", 2, gpu::strategy::staged},
        variant{"load", "kvtier staged per layer + GEMM", 2, gpu::strategy::staged, true},
        variant{"backup", "kvtier staged per layer + GEMM", 2, gpu::strategy::staged, true},
        variant{"load", "planner + GEMM", 2, gpu::strategy::automatic},
        variant{"backup", "planner + GEMM", 2, gpu::strategy::automatic},
        variant{"load", "planner per layer + GEMM", 2, gpu::strategy::automatic, true},
        variant{"load", "contiguous memcpy + GEMM", 0, gpu::strategy::kernel},
        variant{"backup", "contiguous memcpy + GEMM", 0, gpu::strategy::kernel}};
    const std::vector<variant> all_variants = {variant{"load", "kvtier kernel + GEMM", 2, gpu::strategy::kernel},
                            variant{"backup", "kvtier kernel + GEMM", 1, gpu::strategy::kernel},
                            variant{"backup", "kvtier kernel + GEMM", 2, gpu::strategy::kernel},
                            variant{"load", "kvtier bulk + GEMM", 2, gpu::strategy::bulk},
                            variant{"backup", "kvtier bulk + GEMM", 1, gpu::strategy::bulk},
                            variant{"load", "kvtier per layer + GEMM", 2, gpu::strategy::kernel, true},
                            variant{"backup", "kvtier per layer + GEMM", 1, gpu::strategy::kernel, true},
                            variant{"backup", "kvtier per layer + GEMM", 2, gpu::strategy::kernel, true},
                            variant{"load", "bulk per layer + GEMM", 2, gpu::strategy::bulk, true},
                            variant{"load", "contiguous memcpy + GEMM", 0, gpu::strategy::kernel},
                            variant{"backup", "contiguous memcpy + GEMM", 0, gpu::strategy::kernel}};
    std::vector<variant> variants = staged_variants;
    if (P == 16) {  // a deeper ring (8 x 32 MiB): how much of the copy rate is the ring's depth
      variants.push_back(variant{"load", "kvtier staged 8-slot ring + GEMM", 2, gpu::strategy::staged});
      variants.push_back(variant{"backup", "kvtier staged 8-slot ring + GEMM", 2, gpu::strategy::staged});
    }
    if (P == 16) variants.insert(variants.end(), all_variants.begin(), all_variants.end() - 2);
    for (const variant& v : variants) {
      if (P != 16 && v.blocks == 0) continue;  // the contiguous rows once
      const bool load = std::string(v.dir) == "load";
      auto copy_once = [&] {
        if (v.blocks == 0) {
          if (load) CK(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, st));
          else CK(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, st));
          return;
        }
        gpu::options o;
        o.stream = st;
        o.blocks = v.blocks;
        o.how = v.how;
        o.compute = compute_hint::busy;
        if (v.per_layer) o.layer_events = layer_events;
        gpu::copier& cc = std::string(v.method).find("8-slot") != std::string::npos ? deep : c;
        const result<void> r = load ? cc.load(hview, dview, pairs, layer_range::all(), o)
                                    : cc.backup(dview, hview, pairs, layer_range::all(), o);
        if (!r) std::exit(1);
      };
      const double one = median_ms(st, 3, copy_once);
      const int copies = std::max(1, static_cast<int>(gemm_alone / one));
      cudaEvent_t g0, g1, t0, t1;
      for (auto* e : {&g0, &g1, &t0, &t1}) CK(cudaEventCreate(e));
      // Alternate GEMM alone and GEMM + copies, five times each; medians of both.
      std::vector<double> alone, together, copy_ms;
      for (int rep = 0; rep < 5; ++rep) {
        CK(cudaDeviceSynchronize());
        CK(cudaEventRecord(g0, gs));
        gemm_loop();
        CK(cudaEventRecord(g1, gs));
        CK(cudaEventSynchronize(g1));
        float gm = 0, tm = 0;
        CK(cudaEventElapsedTime(&gm, g0, g1));
        alone.push_back(gm);
        CK(cudaEventRecord(t0, st));
        CK(cudaEventRecord(g0, gs));
        gemm_loop();
        for (int i = 0; i < copies; ++i) copy_once();
        CK(cudaEventRecord(g1, gs));
        CK(cudaEventRecord(t1, st));
        CK(cudaDeviceSynchronize());
        CK(cudaEventElapsedTime(&gm, g0, g1));
        CK(cudaEventElapsedTime(&tm, t0, t1));
        together.push_back(gm);
        copy_ms.push_back(tm / copies);
      }
      auto median = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
      };
      const double slowdown = 100.0 * (median(together) / median(alone) - 1.0);
      std::string method = v.method;
      if (v.how == gpu::strategy::automatic) method += std::string(" (") + name(c.stats().last) + ")";
      add(v.dir, method, v.blocks ? P : 0, v.blocks, median(copy_ms), bytes, slowdown);
      for (auto e : {g0, g1, t0, t1}) cudaEventDestroy(e);
    }
    }
    cublasDestroy(h);
    cudaFree(A);
    cudaFree(B);
    cudaFree(C);
  }

  // Table and CSV.
  std::printf("\n| direction | method | page tokens | blocks | GB/s | %% of contiguous | GEMM slowdown |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  FILE* f = std::fopen(csv_path, "w");
  if (f) std::fprintf(f, "direction,method,page_tokens,blocks,ms,gbps,pct_of_contiguous,gemm_slowdown_pct\n");
  for (const row& r : rows) {
    std::printf("| %s | %s | %zu | %d | %.2f | %.1f | %s |\n", r.direction.c_str(), r.method.c_str(), r.page, r.blocks,
                r.gbps, r.pct, !std::isnan(r.gemm_slowdown_pct) ? (std::to_string(r.gemm_slowdown_pct).substr(0, 5) + "%").c_str() : "");
    if (f)
      std::fprintf(f, "%s,%s,%zu,%d,%.4f,%.3f,%.2f,%.2f\n", r.direction.c_str(), r.method.c_str(), r.page, r.blocks, r.ms,
                   r.gbps, r.pct, r.gemm_slowdown_pct);
  }
  if (f) std::fclose(f);
  std::printf("verification of sampled pages: %s\n", all_ok ? "ok" : "FAILED");
  cudaFreeHost(host);
  cudaFree(dev);
  return all_ok ? 0 : 2;
}
