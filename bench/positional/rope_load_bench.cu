// RoPE on load at the copy's full rate: 8,192 tokens of Llama-3-8B KV (bf16, 1 GiB, pages of 16)
// from pinned host memory (page first) to the device (layer first), plain load against the same load
// with K rotated on the way (rope_kernel.cuh), on the staged path (copy engines + relayout, the
// engines' choice beside compute) and the kernel path (zero-copy, 16 and 32 blocks), whole batch
// and layer by layer; rotated storage (one delta a page) and pre-rotation storage (a position a
// row). Baseline (plain load) measured in the same run, interleaved; median of 15. Table + CSV.
//   kvtier-bench-rope-load [out.csv]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "common/cuda_check.hpp"
#include "kvtier/transfer.hpp"
#include "kvtier/transfer/gpu.cuh"
#include "kvtier/transfer/rope.hpp"

using namespace kvtier;
using namespace kvtier::transfer;

int main(int argc, char** argv) {
  const std::string csv = argc > 1 ? argv[1] : "rope-load.csv";
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  const kv_shape s = shapes::llama3_8b();
  const std::size_t P = 16, pages = 512, bytes = s.bytes_per_page(P) * pages;
  std::byte *host = nullptr, *dev = nullptr;
  CK(cudaHostAlloc(reinterpret_cast<void**>(&host), bytes, cudaHostAllocMapped));
  for (std::size_t i = 0; i < bytes / 2; ++i) {  // bf16 values in [-2, 2)
    const std::uint16_t v = std::uint16_t(0x3f80 + (i * 2654435761u >> 20) % 0x80) | std::uint16_t((i & 1) << 15);
    std::memcpy(host + 2 * i, &v, 2);
  }
  CK(cudaMalloc(&dev, bytes));
  const auto hv = paged_view(host, s, pages, page_size<>(P));
  const auto dv = layer_first_view(dev, s, pages * P);
  std::vector<page_pair> pairs(pages);
  std::vector<long> deltas(pages), firsts(pages);
  for (std::size_t i = 0; i < pages; ++i) {
    pairs[i] = {std::uint32_t(i), std::uint32_t(i)};
    deltas[i] = -288;              // a truncated conversation: every page moves forward
    firsts[i] = long(i * P) + 64;  // pre-rotation K: each page served at its new position
  }
  const rope_spec spec{rope_convention::rotate_half, 500000.f, 128, 0};
  const rope_on_load rotated{spec, k_storage::rotated, deltas}, pre{spec, k_storage::pre_rotation, firsts};
  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  std::vector<cudaEvent_t> ev(s.layers());
  for (auto& e : ev) CK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  gpu::copier cp;

  // Contiguous H2D ceiling.
  float ms = 0;
  std::vector<double> ceil_t;
  for (int i = 0; i < 5; ++i) {
    CK(cudaEventRecord(a, st));
    CK(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, st));
    CK(cudaEventRecord(b, st));
    CK(cudaEventSynchronize(b));
    CK(cudaEventElapsedTime(&ms, a, b));
    ceil_t.push_back(ms);
  }
  std::sort(ceil_t.begin(), ceil_t.end());
  std::printf("contiguous pinned H2D: %.1f GB/s\n", bytes / ceil_t[2] / 1e6);

  struct variant {
    const char* path;
    gpu::strategy how;
    int blocks;
    bool layered;
  };
  struct rowv {
    std::string path, storage;
    double plain_ms, rope_ms;
  };
  std::vector<rowv> rows;
  auto time_load = [&](const variant& v, const rope_on_load* rl) {
    gpu::options o;
    o.stream = st;
    o.blocks = v.blocks;
    o.how = v.how;
    o.rope = rl;
    o.element = dtype::bf16;
    if (v.layered) o.layer_events = ev;
    CK(cudaEventRecord(a, st));
    const result<void> r = cp.load(hv, dv, pairs, layer_range::all(), o);
    if (!r) {
      std::fprintf(stderr, "load failed: %s\n", std::string(to_string(r.code())).c_str());
      std::exit(1);
    }
    CK(cudaEventRecord(b, st));
    CK(cudaEventSynchronize(b));
    float t = 0;
    CK(cudaEventElapsedTime(&t, a, b));
    return double(t);
  };
  for (const variant v : {variant{"staged", gpu::strategy::staged, 0, false}, variant{"staged, per layer", gpu::strategy::staged, 0, true},
                          variant{"kernel 16 blocks", gpu::strategy::kernel, 16, false},
                          variant{"kernel 32 blocks", gpu::strategy::kernel, 32, false}}) {
    for (const rope_on_load* rl : {&rotated, &pre}) {
      std::vector<double> tp, tr;
      time_load(v, nullptr);
      time_load(v, rl);  // warm-up
      for (int i = 0; i < 15; ++i) {  // interleaved: drift hits both alike
        tp.push_back(time_load(v, nullptr));
        tr.push_back(time_load(v, rl));
      }
      std::sort(tp.begin(), tp.end());
      std::sort(tr.begin(), tr.end());
      rows.push_back({v.path, rl->storage == k_storage::rotated ? "rotated (delta -288)" : "pre-rotation (per row)", tp[7], tr[7]});
    }
  }
  std::printf("\n| path | K storage | plain load ms | GB/s | RoPE on load ms | GB/s | RoPE cost |\n|---|---|---:|---:|---:|---:|---:|\n");
  std::ofstream out(csv);
  out << "path,storage,plain_ms,plain_gbps,rope_ms,rope_gbps,rope_cost_pct,bytes\n";
  for (const rowv& r : rows) {
    const double cost = 100.0 * (r.rope_ms - r.plain_ms) / r.plain_ms;
    std::printf("| %s | %s | %.3f | %.1f | %.3f | %.1f | %+.2f%% |\n", r.path.c_str(), r.storage.c_str(), r.plain_ms,
                bytes / r.plain_ms / 1e6, r.rope_ms, bytes / r.rope_ms / 1e6, cost);
    out << '"' << r.path << "\",\"" << r.storage << "\"," << r.plain_ms << ',' << bytes / r.plain_ms / 1e6 << ','
        << r.rope_ms << ',' << bytes / r.rope_ms / 1e6 << ',' << cost << ',' << bytes << '\n';
  }
  std::printf("bytes per load: %zu (1 GiB); ceiling %.1f GB/s\nwrote %s\n", bytes, bytes / ceil_t[2] / 1e6, csv.c_str());
  for (auto& e : ev) cudaEventDestroy(e);
  cudaFreeHost(host);
  cudaFree(dev);
  return 0;
}
