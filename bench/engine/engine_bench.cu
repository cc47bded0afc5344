// bench/engine: kvtier-engine's CUDA backend at the llama3-8b shape (synthetic bf16 weights from a
// seed, generated on the device): prefill time and TFLOP/s at 2K, 8K, 32K tokens; the flash prefill
// kernel alone; decode time per token at batch 1 and 32; and time to first token for a 32,256-token
// cached prefix plus 512 new tokens with the prefix (a) recomputed, (b) on the device, (c) in pinned
// host memory loaded by kvtier's copier layer by layer while the suffix computes. The ceilings
// (cuBLAS bf16 GEMM rate, contiguous host→device copy rate) are measured in the same run; the
// Hugging Face baseline runs beside it (bench/engine/hf_baseline.py, from scripts/engine-gpu-check).
// (d) on kvtier's file tier (O_DIRECT, io_uring): read into the pinned host pool, then as (c).
//   kvtier-bench-engine [out.csv] [file-tier directory]
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
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
#include "kvtier_engine/cuda/cuda_backend.cuh"
#if KVTIER_BENCH_FILE_TIER
#include <filesystem>

#include "kvtier/storage/file_tier.hpp"
#endif

using namespace kvtier_engine;
using namespace kvtier_engine::cuda;
using clk = std::chrono::steady_clock;
using kvtier_bench::must;

namespace {

struct row {
  std::string metric;
  double value;
  std::string unit, note;
};
std::vector<row> rows;
void report(const std::string& metric, double value, const std::string& unit, const std::string& note = "") {
  rows.push_back({metric, value, unit, note});
  std::printf("%-44s %12.3f %-8s %s\n", metric.c_str(), value, unit.c_str(), note.c_str());
  std::fflush(stdout);
}
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
template <class F>
double wall_ms(F&& f) {
  const auto t0 = clk::now();
  f();
  return std::chrono::duration<double, std::milli>(clk::now() - t0).count();
}
template <class F>
double event_ms(F&& f, int reps, cudaStream_t s) {
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "event");
  check(cudaEventCreate(&b), "event");
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    check(cudaEventRecord(a, s), "record");
    f();
    check(cudaEventRecord(b, s), "record");
    check(cudaEventSynchronize(b), "sync");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, a, b), "elapsed");
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return median(t);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string csv = argc > 1 ? argv[1] : "engine.csv";
  const std::string file_dir = argc > 2 ? argv[2] : "/tmp/kvtier-bench-engine-files";
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "props");
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);

  model_config m = shapes::llama3_8b();
  m.seq_len = 34816;
  const std::size_t P = 16, prefix = 32256, suffix = 512, total = prefix + suffix;
  const std::size_t slots = total / P + 64;  // the prompt's pages, then one decode page per sequence
  const kvtier::kv_shape shape = m.kv_shape(kvtier::dtype::bf16);
  kvtier::memory::device_layer_pool dev(shape, kvtier::page_size<>(P), slots);
  const kv_pool pool{kvtier::transfer::layer_first_view(dev.plane_table(), shape, slots * P), P, slots};
  const auto weights = model_weights::synthetic(m, 7, /*materialize=*/false);
  cuda_backend be(m, weights, pool, backend_options{precision::bf16, 0, 0}, cuda_options{8192, 32, 16});
  cudaStream_t s = be.stream();

  std::mt19937 rng(1);
  std::vector<kvtier::token_id> tokens(total);
  for (auto& t : tokens) t = kvtier::token_id(std::int32_t(rng() % m.vocab));
  std::vector<kvtier::device_slot> table(slots);
  for (std::size_t i = 0; i < slots; ++i) table[i] = kvtier::device_slot(std::uint32_t(i));
  std::vector<float> logits(32 * m.vocab);

  // Ceilings: cuBLAS bf16 GEMM on random data, device copy, contiguous pinned host → device copy.
  {
    const int n = 8192;
    device_buffer<__nv_bfloat16> a(std::size_t(n) * n), b(std::size_t(n) * n);
    device_buffer<float> c(std::size_t(n) * n);
    synthetic_fill(a.data(), a.size(), 1, tensor_kind::wq, 0, 1.0f, s);
    synthetic_fill(b.data(), b.size(), 2, tensor_kind::wk, 0, 1.0f, s);
    cublas_handle h(s);
    linear(h.get(), a.data(), b.data(), c.data(), n, n, n, false);
    const double ms = event_ms([&] { linear(h.get(), a.data(), b.data(), c.data(), n, n, n, false); }, 10, s);
    report("ceiling: cuBLAS bf16 GEMM 8192^3", 2.0 * n * n * n / ms / 1e9, "TFLOP/s", "random data, fp32 out");
    const std::size_t bytes = std::size_t(1) << 30;
    void* host = nullptr;
    check(cudaHostAlloc(&host, bytes, cudaHostAllocDefault), "hostalloc");
    std::memset(host, 1, bytes);
    device_buffer<char> d(bytes), d2(bytes);
    const double h2d = event_ms([&] { check(cudaMemcpyAsync(d.data(), host, bytes, cudaMemcpyHostToDevice, s), "h2d"); }, 5, s);
    report("ceiling: contiguous pinned H2D copy", bytes / h2d / 1e6, "GB/s", "1 GiB cudaMemcpyAsync");
    const double d2d = event_ms([&] { check(cudaMemcpyAsync(d2.data(), d.data(), bytes, cudaMemcpyDeviceToDevice, s), "d2d"); }, 5, s);
    report("ceiling: device copy (read+write)", 2.0 * bytes / d2d / 1e6, "GB/s", "1 GiB");
    cudaFreeHost(host);
  }
  auto attn_flops = [&](double start, double n) {  // causal: QK^T and PV over keys [0, start + i]
    return 4.0 * m.head_size * m.heads * m.layers * (n * start + n * (n + 1) / 2);
  };
  auto linear_flops = [&](double n) { return 2.0 * double(m.linear_macs_per_token(false)) * n + 2.0 * m.vocab * m.dim; };
  auto prefill = [&](std::size_t start, std::size_t n, const layer_hook& hook = {}) {
    must(be.prefill(prefill_chunk{std::span(tokens).subspan(start, n), start, table}, logits, hook), "prefill");
  };

  // Prefill at 2K, 8K, 32K (from position 0).
  prefill(0, 2048);  // warm-up: cuBLAS heuristics, module load
  for (const std::size_t n : {std::size_t(2048), std::size_t(8192), std::size_t(32768)}) {
    std::vector<double> t;
    for (int i = 0; i < (n > 8192 ? 3 : 5); ++i) t.push_back(wall_ms([&] { prefill(0, n); }));
    const double ms = median(t), fl = attn_flops(0, n) + linear_flops(n);
    report("prefill " + std::to_string(n) + " tokens", ms, "ms", std::to_string(fl / ms / 1e9).substr(0, 6) + " TFLOP/s");
    report("prefill " + std::to_string(n) + " TFLOP/s", fl / ms / 1e9, "TFLOP/s", "causal attention counted once");
  }
  // The flash kernel alone on layer 0 of the pool (the 32K prefill's KV), one layer's 32 heads.
  {
    device_buffer<__nv_bfloat16> q(32768 * m.q_dim()), o(32768 * m.q_dim());
    synthetic_fill(q.data(), q.size(), 3, tensor_kind::wq, 0, 1.0f, s);
    device_buffer<std::int32_t> dt(slots);
    std::vector<std::int32_t> ht(slots);
    for (std::size_t i = 0; i < slots; ++i) ht[i] = std::int32_t(i);
    dt.upload(ht);
    paged_kv_layer<__nv_bfloat16> kv{pool.view.planes.plane(0, 0), pool.view.planes.plane(0, 1), P * m.kv_dim() * 2,
                                     int(P), int(m.kv_heads), int(m.head_size), dt.data(), 0};
    for (const int n : {2048, 8192, 32768}) {
      attention_rows<__nv_bfloat16> a{q.data(), o.data(), n, int(m.heads), nullptr, nullptr, 0, n, 0.0883883f};
      flash_prefill(a, kv, s);
      const double ms = event_ms([&] { flash_prefill(a, kv, s); }, 5, s);
      const double fl = attn_flops(0, n) / m.layers;
      report("flash_prefill kernel " + std::to_string(n) + " (1 layer)", ms, "ms", std::to_string(fl / ms / 1e9).substr(0, 6) + " TFLOP/s");
      report("flash_prefill kernel " + std::to_string(n) + " TFLOP/s", fl / ms / 1e9, "TFLOP/s", "32 heads x 128, GQA 4");
    }
    {  // the TTFT suffix: 512 rows after 32,256 cached positions, split over the keys
      const int n = int(suffix), st = int(prefix);
      attention_rows<__nv_bfloat16> a{q.data(), o.data(), n, int(m.heads), nullptr, nullptr, st, st + n, 0.0883883f};
      const int splits = flash_prefill_splits(n, st, int(m.heads), prop.multiProcessorCount, 16);
      device_buffer<float> ws(paged_attention_workspace(n, int(m.heads), 128, splits));
      flash_prefill(a, kv, s, splits, ws.data());
      const double ms = event_ms([&] { flash_prefill(a, kv, s, splits, ws.data()); }, 5, s);
      const double ms1 = event_ms([&] { flash_prefill(a, kv, s, 1, nullptr); }, 5, s);
      const double fl = attn_flops(st, n) / m.layers;
      report("flash_prefill kernel 512 after 32256 (1 layer)", ms, "ms",
             std::to_string(fl / ms / 1e9).substr(0, 6) + " TFLOP/s, " + std::to_string(splits) + " key splits");
      report("flash_prefill kernel 512 after 32256, no split", ms1, "ms", std::to_string(fl / ms1 / 1e9).substr(0, 6) + " TFLOP/s");
    }
  }
  // Decode: context 1024 per sequence (pages of the 32K prefill's KV), one fresh page each.
  for (const std::size_t B : {std::size_t(1), std::size_t(32)}) {
    std::vector<std::vector<kvtier::device_slot>> tabs(B);
    std::vector<decode_entry> batch(B);
    for (std::size_t b = 0; b < B; ++b) {
      for (std::size_t p = 0; p < 64; ++p) tabs[b].push_back(kvtier::device_slot(std::uint32_t(b * 64 + p)));
      tabs[b].push_back(kvtier::device_slot(std::uint32_t(total / P + b)));
      batch[b] = decode_entry{tokens[b], 1024, tabs[b]};
    }
    must(be.decode(batch, logits), "decode");
    std::vector<double> t;
    for (int i = 0; i < 20; ++i) t.push_back(wall_ms([&] { must(be.decode(batch, logits), "decode"); }));
    const double ms = median(t);
    const double weight_bytes = 2.0 * double(m.parameters());
    report("decode batch " + std::to_string(B) + " (context 1024)", ms, "ms/step",
           std::to_string(weight_bytes / ms / 1e6).substr(0, 6) + " GB/s of weights");
  }
  // Time to first token: 32,256 cached tokens + 512 new ones.
  const double prefix_bytes = double(prefix) * shape.bytes_per_token();
  double ttft_a, ttft_b, ttft_c;
  {
    std::vector<double> t;
    for (int i = 0; i < 2; ++i) t.push_back(wall_ms([&] { prefill(0, total); }));
    ttft_a = median(t);
    report("TTFT (a) prefix recomputed", ttft_a, "ms", "prefill of all 32,768 tokens");
  }
  std::vector<float> logits_b(m.vocab);
  {
    std::vector<double> t;
    for (int i = 0; i < 5; ++i) t.push_back(wall_ms([&] { prefill(prefix, suffix); }));
    ttft_b = median(t);
    logits_b.assign(logits.begin(), logits.begin() + m.vocab);
    report("TTFT (b) prefix on the device", ttft_b, "ms", "= suffix compute");
  }
  {
    const std::size_t pages = prefix / P;
    kvtier::memory::pinned_host_pool host(shape, kvtier::page_size<>(P), pages);
    const auto host_view = kvtier::transfer::paged_view<kvtier::layout::page_first>(host.device_data(), shape, pages,
                                                                                    kvtier::page_size<>(P));
    std::vector<kvtier::transfer::page_pair> pairs(pages);
    for (std::size_t i = 0; i < pages; ++i) pairs[i] = {std::uint32_t(i), std::uint32_t(i)};
    kvtier::transfer::gpu::copier cp;
    cudaStream_t copy_stream;
    int lowest = 0, highest = 0;  // the loads' relayout kernels go ahead of compute blocks waiting for SMs
    check(cudaDeviceGetStreamPriorityRange(&lowest, &highest), "priorities");
    check(cudaStreamCreateWithPriority(&copy_stream, cudaStreamNonBlocking, highest), "stream");
    must(cp.backup(pool.view, host_view, pairs, kvtier::transfer::layer_range::all(),
                   {copy_stream, 0, {}, kvtier::transfer::gpu::strategy::kernel}), "backup");
    check(cudaStreamSynchronize(copy_stream), "backup sync");
    std::vector<cudaEvent_t> ev(m.layers);
    for (auto& e : ev) check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "event");
    const double floor_ms = prefix_bytes / (rows[1].value * 1e6);
    report("I/O floor (prefix bytes / contiguous H2D)", floor_ms, "ms", std::to_string(prefix_bytes / double(1 << 30)).substr(0, 5) + " GiB");
    report("suffix compute", ttft_b, "ms", "512 tokens over 32,256 cached");
    struct variant { const char* name; kvtier::transfer::gpu::strategy how; int blocks; };
    double best = 1e30;
    for (const variant v : {variant{"staged", kvtier::transfer::gpu::strategy::staged, 0},
                            variant{"kernel 16 blocks", kvtier::transfer::gpu::strategy::kernel, 16},
                            variant{"kernel 32 blocks", kvtier::transfer::gpu::strategy::kernel, 32}}) {
      std::vector<double> t;
      bool same = true;
      for (int i = 0; i < 3; ++i) {
        check(cudaMemsetAsync(dev.device_plane(kvtier::device_slot(0), 0, 0), 0, 4096, s), "clobber");
        check(cudaStreamSynchronize(s), "sync");
        t.push_back(wall_ms([&] {
          must(cp.load(host_view, pool.view, pairs, kvtier::transfer::layer_range::all(),
                       {copy_stream, v.blocks, ev, v.how}), "load");
          prefill(prefix, suffix, [&](std::size_t l) { check(cudaStreamWaitEvent(s, ev[l], 0), "wait layer"); });
        }));
        same = same && std::equal(logits_b.begin(), logits_b.end(), logits.begin());
      }
      const double ms = median(t);
      best = std::min(best, ms);
      report(std::string("TTFT (c) prefix in pinned host, ") + v.name, ms, "ms",
             same ? "logits == (b) bit for bit" : "LOGITS DIFFER FROM (b)");
    }
    ttft_c = best;
    report("TTFT (c) / max(floor, suffix)", ttft_c / std::max(floor_ms, ttft_b), "x", "target <= 1.1");
    report("TTFT (a) / (c)", ttft_a / ttft_c, "x", "target >= 15");
#if KVTIER_BENCH_FILE_TIER
    try {  // (d): the prefix's pages on the file tier; read back whole (a page holds every layer), then (c)
      using namespace std::chrono_literals;
      auto ok = [](const kvtier::result<void>& r, const char* what) {
        if (!r) throw std::runtime_error(std::string(what) + ": " + std::string(kvtier::to_string(r.code())));
      };
      const std::size_t page_bytes = shape.bytes_per_page(P);
      std::filesystem::remove_all(file_dir);
      kvtier::file_tier_config fc{.directory = file_dir, .shape = shape, .page_bytes = page_bytes, .capacity_pages = pages};
      fc.queue_depth = 64;
      kvtier::file_tier<> files(fc);
      auto address = [](std::size_t i) { return kvtier::page_address{kvtier::namespace_id{1}, kvtier::page_key{7, i}}; };
      std::vector<kvtier::page_write> writes(pages);
      for (std::size_t i = 0; i < pages; ++i)
        writes[i] = {address(i), i, std::span<const std::byte>(host.host_data() + i * page_bytes, page_bytes)};
      kvtier::storage_batch wb;
      const double put_ms = wall_ms([&] {
        ok(files.put(writes, wb), "file put");
        ok(files.wait(wb, 600s), "file put wait");
      });
      if (wb.count(kvtier::errc::ok) != pages) throw std::runtime_error("some pages were not written");
      report("file tier write of the prefix", prefix_bytes / put_ms / 1e6, "GB/s", std::to_string(put_ms).substr(0, 7) + " ms, O_DIRECT");
      std::vector<kvtier::page_read> reads(pages);
      for (std::size_t i = 0; i < pages; ++i)
        reads[i] = {address(i), i, std::span<std::byte>(host.host_data() + i * page_bytes, page_bytes)};
      std::vector<double> t, tr;
      bool same = true;
      for (int rep = 0; rep < 2; ++rep) {
        std::memset(host.host_data(), 0, 4096);  // the read, not a leftover, must bring the bytes back
        check(cudaMemsetAsync(dev.device_plane(kvtier::device_slot(0), 0, 0), 0, 4096, s), "clobber");
        check(cudaStreamSynchronize(s), "sync");
        kvtier::storage_batch rb;
        double read_ms = 0;
        t.push_back(wall_ms([&] {
          read_ms = wall_ms([&] {
            ok(files.get(reads, rb), "file get");
            ok(files.wait(rb, 600s), "file get wait");
          });
          ok(cp.load(host_view, pool.view, pairs, kvtier::transfer::layer_range::all(),
                       {copy_stream, 0, ev, kvtier::transfer::gpu::strategy::staged}), "load");
          prefill(prefix, suffix, [&](std::size_t l) { check(cudaStreamWaitEvent(s, ev[l], 0), "wait layer"); });
        }));
        tr.push_back(read_ms);
        same = same && rb.count(kvtier::errc::ok) == pages && std::equal(logits_b.begin(), logits_b.end(), logits.begin());
      }
      report("file tier read of the prefix", prefix_bytes / median(tr) / 1e6, "GB/s", std::to_string(median(tr)).substr(0, 7) + " ms, O_DIRECT");
      report("TTFT (d) prefix on the file tier", median(t), "ms", same ? "read, then as (c); logits == (b)" : "LOGITS DIFFER FROM (b)");
      std::filesystem::remove_all(file_dir);
    } catch (const std::exception& e) {  // e.g. a directory on a file system without O_DIRECT
      report("TTFT (d) prefix on the file tier", 0, "ms", std::string("not measured: ") + e.what());
    }
#endif
    for (auto& e : ev) cudaEventDestroy(e);
    cudaStreamDestroy(copy_stream);
  }
  std::ofstream out(csv);
  out << "metric,value,unit,note\n";
  for (const row& r : rows) out << '"' << r.metric << "\"," << r.value << ',' << r.unit << ",\"" << r.note << "\"\n";
  std::printf("wrote %s\n", csv.c_str());
  return 0;
}
