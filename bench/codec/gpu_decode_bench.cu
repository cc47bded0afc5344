// kvtier-bench-codec-gpu: the effective host → device load bandwidth of compressed KV pages —
// encoded pages in pinned host memory, copied to the device compressed (copy engine) and decoded
// there into the layer-first pool, pipelined in chunks — against the physical rate of one
// contiguous pinned copy of the uncompressed bytes, measured in the same run. Also each decoder's
// rate with its input already in HBM.
//
//   kvtier-bench-codec-gpu [--pages N] [--chunk PAGES] [--csv FILE]
//
// Data: KV-like synthetic pages at the Llama-3-8B shape (AR(1) along tokens, channels of very
// different scales): the ratios are the codec's on that data, not a real model's.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/cuda_check.hpp"
#include "kvtier/codec.hpp"
#include "kvtier/codec/gpu_decode.cuh"
#include "kvtier/testing/kv_like_pages.hpp"

using namespace kvtier;
using kvtier::testing::kv_like_page;

namespace {

struct row {
  std::string codec;
  double ratio, effective_gbs, vs_copy, decode_only_gbs;
};

float elapsed_ms(cudaEvent_t a, cudaEvent_t b) {
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, a, b));
  return ms;
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t pages = 512, chunk = 64, distinct = 32;
  std::string csv;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) { std::fprintf(stderr, "%s needs a value\n", a.c_str()); return 2; }
    if (a == "--pages") pages = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--chunk") chunk = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--csv") csv = argv[++i];
    else { std::fprintf(stderr, "unknown option %s\n", a.c_str()); return 2; }
  }
  if (pages == 0 || chunk == 0) { std::fprintf(stderr, "--pages and --chunk must be positive\n"); return 2; }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIPPED: no CUDA device\n");
    return 0;
  }
  const kv_page_geometry g{shapes::llama3_8b(), 16};
  const std::size_t page_bytes = g.page_bytes(), total = pages * page_bytes;

  std::vector<std::vector<std::byte>> raw(distinct);
  {
    std::vector<std::thread> th;
    for (std::size_t i = 0; i < distinct; ++i) th.emplace_back([&, i] { raw[i] = kv_like_page(g, 7 + i); });
    for (auto& t : th) t.join();
  }
  std::vector<std::span<const std::byte>> fit_views(raw.begin(), raw.begin() + 8);

  // Device pool, staging, events.
  std::byte* pool_mem = nullptr;
  CK(cudaMalloc(&pool_mem, total));
  const auto pool = transfer::layer_first_view(pool_mem, g.shape, pages * g.page_tokens);
  std::uint8_t* status = nullptr;
  CK(cudaMalloc(&status, pages));
  cudaStream_t copy_s, compute_s;
  CK(cudaStreamCreateWithFlags(&copy_s, cudaStreamNonBlocking));
  CK(cudaStreamCreateWithFlags(&compute_s, cudaStreamNonBlocking));
  cudaEvent_t t0, t1;
  CK(cudaEventCreate(&t0));
  CK(cudaEventCreate(&t1));
  // The best of three runs of `op` on stream s, as GB/s of the uncompressed bytes.
  auto best_gbs = [&](cudaStream_t s, auto&& op) {
    double gbs = 0;
    for (int rep = 0; rep < 3; ++rep) {
      CK(cudaEventRecord(t0, s));
      op();
      CK(cudaEventRecord(t1, s));
      CK(cudaEventSynchronize(t1));
      gbs = std::max(gbs, double(total) / elapsed_ms(t0, t1) / 1e6);
    }
    return gbs;
  };

  // Baseline: one contiguous pinned copy of the uncompressed bytes.
  std::byte* host_raw = nullptr;
  CK(cudaHostAlloc(reinterpret_cast<void**>(&host_raw), total, cudaHostAllocDefault));
  for (std::size_t p = 0; p < pages; ++p) std::memcpy(host_raw + p * page_bytes, raw[p % distinct].data(), page_bytes);
  const double copy_gbs =
      best_gbs(copy_s, [&] { CK(cudaMemcpyAsync(pool_mem, host_raw, total, cudaMemcpyHostToDevice, copy_s)); });
  std::vector<row> rows;
  rows.push_back({"uncompressed (contiguous pinned copy)", 1.0, copy_gbs, 1.0, 0});

  // Runs one codec: encode `distinct` pages on the host, lay `pages` of them out in pinned memory,
  // then time (a) decode from HBM and (b) the pipelined copy + decode.
  auto run = [&](const std::string& name, auto& codec, auto&& decode) {
    std::vector<std::vector<std::byte>> enc(distinct);
    std::vector<std::thread> th;
    for (std::size_t i = 0; i < distinct; ++i)
      th.emplace_back([&, i] {
        enc[i].resize(codec.max_encoded_bytes(page_bytes));
        auto n = codec.encode(raw[i], enc[i]);
        if (!n) { std::fprintf(stderr, "%s: encode failed\n", name.c_str()); std::exit(1); }
        enc[i].resize(*n);
      });
    for (auto& t : th) t.join();
    std::vector<std::size_t> off(pages);
    std::size_t bytes = 0;
    for (std::size_t p = 0; p < pages; ++p) {
      off[p] = bytes;
      bytes += (enc[p % distinct].size() + 15) / 16 * 16;
    }
    std::byte* host_enc = nullptr;
    std::byte* dev_enc = nullptr;
    encoded_page* dev_desc = nullptr;
    CK(cudaHostAlloc(reinterpret_cast<void**>(&host_enc), bytes, cudaHostAllocDefault));
    CK(cudaMalloc(&dev_enc, bytes));
    CK(cudaMalloc(&dev_desc, pages * sizeof(encoded_page)));
    for (std::size_t p = 0; p < pages; ++p) std::memcpy(host_enc + off[p], enc[p % distinct].data(), enc[p % distinct].size());
    std::vector<encoded_page> desc(pages);
    for (std::size_t p = 0; p < pages; ++p) desc[p] = {dev_enc + off[p], std::uint32_t(enc[p % distinct].size()), std::uint32_t(p)};
    CK(cudaMemcpy(dev_desc, desc.data(), pages * sizeof(encoded_page), cudaMemcpyHostToDevice));
    CK(cudaMemset(status, 0, pages));
    // (a) decode only, input in HBM
    CK(cudaMemcpy(dev_enc, host_enc, bytes, cudaMemcpyHostToDevice));
    const double decode_gbs = best_gbs(compute_s, [&] { CK(decode(dev_desc, pages, pool, status, compute_s)); });
    // (b) pipelined: chunk i copied on copy_s, decoded on compute_s after its copy event.
    double eff = 0;
    std::vector<cudaEvent_t> copied((pages + chunk - 1) / chunk);
    for (auto& e : copied) CK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    for (int rep = 0; rep < 3; ++rep) {
      CK(cudaDeviceSynchronize());
      CK(cudaEventRecord(t0, copy_s));
      CK(cudaStreamWaitEvent(compute_s, t0));
      for (std::size_t c = 0, i = 0; c < pages; c += chunk, ++i) {
        const std::size_t n = std::min(chunk, pages - c);
        const std::size_t from = off[c], to = c + n < pages ? off[c + n] : bytes;
        CK(cudaMemcpyAsync(dev_enc + from, host_enc + from, to - from, cudaMemcpyHostToDevice, copy_s));
        CK(cudaEventRecord(copied[i], copy_s));
        CK(cudaStreamWaitEvent(compute_s, copied[i]));
        CK(decode(dev_desc + c, n, pool, status + c, compute_s));
      }
      CK(cudaEventRecord(t1, compute_s));
      CK(cudaEventSynchronize(t1));
      eff = std::max(eff, double(total) / elapsed_ms(t0, t1) / 1e6);
    }
    std::vector<std::uint8_t> st(pages);
    CK(cudaMemcpy(st.data(), status, pages, cudaMemcpyDeviceToHost));
    const auto failed = std::count(st.begin(), st.end(), std::uint8_t{1});
    if (failed) { std::fprintf(stderr, "%s: %ld pages failed to decode\n", name.c_str(), long(failed)); std::exit(1); }
    for (auto& e : copied) CK(cudaEventDestroy(e));
    std::size_t enc_total = 0;
    for (std::size_t p = 0; p < pages; ++p) enc_total += enc[p % distinct].size();
    rows.push_back({name, double(total) / double(enc_total), eff, eff / copy_gbs, decode_gbs});
    CK(cudaFreeHost(host_enc));
    CK(cudaFree(dev_enc));
    CK(cudaFree(dev_desc));
  };

  const int8_codec i8(g);
  run("int8", i8, [&](auto* d, std::size_t n, auto p, auto* s, cudaStream_t st) { return decode_on_device(i8, d, n, p, s, st); });
  const fp8_codec f8(g);
  run("fp8_e4m3", f8, [&](auto* d, std::size_t n, auto p, auto* s, cudaStream_t st) { return decode_on_device(f8, d, n, p, s, st); });
  // CacheGen at int8's error on this data, then at twice that.
  double int8_error = 0;
  {
    double num = 0, den = 0;
    std::vector<std::byte> e(i8.max_encoded_bytes(page_bytes)), b(page_bytes);
    for (std::size_t i = 8; i < distinct; ++i) {
      auto n = i8.encode(raw[i], e);
      (void)i8.decode(std::span<const std::byte>(e).first(*n), b);
      for (std::size_t k = 0; k < g.elements(); ++k) {
        const double x = detail::load_element(raw[i].data(), dtype::bf16, k), y = detail::load_element(b.data(), dtype::bf16, k);
        num += (x - y) * (x - y);
        den += x * x;
      }
    }
    int8_error = std::sqrt(num / den);
  }
  for (double f : {1.0, 2.0}) {
    cachegen_options o;
    o.target_error = int8_error * f;
    const auto prof = cachegen_profile::fit(g, fit_views, o);
    const cachegen_codec cg(g, prof);
    const device_cachegen_profile dp(*prof);
    run(f == 1.0 ? "cachegen (int8's error)" : "cachegen (2x int8's error)", cg,
        [&](auto* d, std::size_t n, auto p, auto* s, cudaStream_t st) { return decode_on_device(cg, dp, d, n, p, s, st); });
  }
  cachegen_options ll;
  ll.lossless = true;
  {
    const auto prof = cachegen_profile::fit(g, fit_views, ll);
    const cachegen_codec cg(g, prof);
    const device_cachegen_profile dp(*prof);
    run("cachegen lossless", cg, [&](auto* d, std::size_t n, auto p, auto* s, cudaStream_t st) { return decode_on_device(cg, dp, d, n, p, s, st); });
  }

  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("%s: %zu pages of Llama-3-8B KV (16-token pages, %.2f GiB decoded), chunks of %zu pages; synthetic KV-like data\n",
              prop.name, pages, double(total) / (1u << 30), chunk);
  std::printf("| codec | ratio | effective load GB/s (decoded KV landing in the pool) | x contiguous copy | decode only, input in HBM (GB/s) |\n|---|---|---|---|---|\n");
  for (const auto& r : rows)
    std::printf("| %s | %.2f | %.1f | %.2f | %.1f |\n", r.codec.c_str(), r.ratio, r.effective_gbs, r.vs_copy, r.decode_only_gbs);
  if (!csv.empty()) {
    std::ofstream f(csv);
    f << "codec,ratio,effective_gbs,x_contiguous_copy,decode_only_gbs\n";
    for (const auto& r : rows) f << '"' << r.codec << "\"," << r.ratio << ',' << r.effective_gbs << ',' << r.vs_copy << ',' << r.decode_only_gbs << '\n';
  }
  return 0;
}
