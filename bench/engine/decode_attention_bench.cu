// bench/engine: the decode attention kernel (paged_attention, one query row per sequence) at the
// llama3-8b shape — 32 query heads, 8 kv heads, head_dim 128, bf16, pages of 16 tokens in shuffled
// slots — over batch × context × key-split length, as cuda_backend runs it in its batch-invariant
// mode (splits at fixed key positions) and with occupancy-chosen splits.
//
// Decode attention reads every key and value once: its floor is KV bytes over the HBM read rate,
// measured in the same run (a device-to-device copy of 2 GiB: 2 bytes moved per byte copied). Layers
// rotate over distinct pools (at least 1 GiB of KV in all) so that L2 (50 MB) holds none of them.
// The baseline, PyTorch's scaled_dot_product_attention over contiguous (not paged) KV of the same
// shapes, comes from bench/engine/decode_attention_torch.py in the same device call; given its CSV
// the table shows the ratio.
//   kvtier-bench-decode-attention [out.csv] [torch.csv]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "common/cuda_check.hpp"
#include "kvtier_engine/cuda/paged_attention.cuh"

using namespace kvtier_engine::cuda;
using bf16 = __nv_bfloat16;

namespace {

constexpr int q_heads = 32, kv_heads = 8, head_dim = 128, page = 16;

__global__ void fill_kernel(bf16* p, std::size_t n, std::uint32_t seed) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
    std::uint32_t h = std::uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    p[i] = __float2bfloat16_rn(float(h & 0xffff) / 32768.0f - 1.0f);
  }
}

// One layer's pool: K and V planes of `slots` pages.
struct layer_pool {
  device_buffer<bf16> k, v;
  explicit layer_pool(std::size_t slots, std::uint32_t seed)
      : k(slots * page * kv_heads * head_dim), v(slots * page * kv_heads * head_dim) {
    fill_kernel<<<1024, 256>>>(k.data(), k.size(), seed);
    fill_kernel<<<1024, 256>>>(v.data(), v.size(), seed ^ 0x9e3779b9u);
    CK(cudaGetLastError());
  }
  paged_kv_layer<bf16> view(const std::int32_t* tables, int stride) {
    return paged_kv_layer<bf16>::packed(reinterpret_cast<std::byte*>(k.data()), reinterpret_cast<std::byte*>(v.data()), page,
                                        kv_heads, head_dim, tables, stride);
  }
};

double hbm_read_gbs() {
  const std::size_t n = std::size_t(2) << 30;
  device_buffer<std::byte> a(n), b(n);
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  CK(cudaMemcpy(b.data(), a.data(), n, cudaMemcpyDeviceToDevice));
  float best = 1e30f;
  for (int r = 0; r < 5; ++r) {
    CK(cudaEventRecord(e0));
    CK(cudaMemcpyAsync(b.data(), a.data(), n, cudaMemcpyDeviceToDevice));
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    best = std::min(best, ms);
  }
  return 2.0 * double(n) / (best * 1e-3) / 1e9;  // read + write
}

using key = std::tuple<int, int>;  // batch, context
std::map<key, double> read_torch(const char* path) {
  std::map<key, double> m;
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);  // header: batch,context,us_per_layer
  while (std::getline(in, line)) {
    std::istringstream s(line);
    std::string b, c, us;
    if (std::getline(s, b, ',') && std::getline(s, c, ',') && std::getline(s, us, ','))
      m[{std::stoi(b), std::stoi(c)}] = std::stod(us);
  }
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIPPED: no CUDA device\n");
    return 0;
  }
  const char* csv_path = argc > 1 ? argv[1] : "decode_attention.csv";
  const auto torch = argc > 2 ? read_torch(argv[2]) : std::map<key, double>{};
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const double bw = hbm_read_gbs();
  std::printf("decode attention, llama3-8b shape (32 q heads, 8 kv heads, head_dim 128, bf16, %d-token pages)\n", page);
  std::printf("HBM copy rate (read+write) %.0f GB/s; the floor is KV bytes at that rate\n\n", bw);
  std::printf("%5s %7s %7s %10s %9s %9s %8s %10s %9s\n", "batch", "context", "split", "us/layer", "GB/s", "floor us",
              "x floor", "torch us", "vs torch");
  std::ofstream csv(csv_path);
  csv << "batch,context,split_keys,us_per_layer,gb_per_s,floor_us,over_floor,torch_us,speedup_vs_torch\n";

  std::mt19937 rng(7);
  for (const int ctx : {2048, 6144, 16384})
    for (const int B : {1, 4, 8, 16, 32}) {
      const int pages = (ctx + page - 1) / page;
      const std::size_t slots = std::size_t(B) * pages;
      const double layer_bytes = double(B) * ctx * kv_heads * head_dim * 2 * sizeof(bf16);
      const int rot = int(std::clamp(std::ceil(double(1ull << 30) / layer_bytes), 2.0, 64.0));
      std::vector<layer_pool> layers;
      layers.reserve(rot);
      for (int l = 0; l < rot; ++l) layers.emplace_back(slots, std::uint32_t(l * 7919 + ctx + B));
      std::vector<std::int32_t> tables(slots);
      std::iota(tables.begin(), tables.end(), 0);
      std::shuffle(tables.begin(), tables.end(), rng);
      device_buffer<std::int32_t> dt(slots), seq(B), keys(B);
      dt.upload(tables);
      std::vector<std::int32_t> hs(B), hk(B, ctx);
      std::iota(hs.begin(), hs.end(), 0);
      seq.upload(hs);
      keys.upload(hk);
      device_buffer<bf16> q(std::size_t(B) * q_heads * head_dim), out(q.size());
      fill_kernel<<<256, 256>>>(q.data(), q.size(), 99);
      attention_rows<bf16> a;
      a.q = q.data();
      a.out = out.data();
      a.rows = B;
      a.q_heads = q_heads;
      a.row_seq = seq.data();
      a.row_keys = keys.data();
      a.max_keys = ctx;
      a.scale = 1.0f / std::sqrt(float(head_dim));
      for (const int split : {128, 256, 512, 1024, 0}) {  // 0: occupancy-chosen (paged_attention_splits)
        const int splits = split > 0 ? (ctx + split - 1) / split : paged_attention_splits(B, kv_heads, ctx, sms, 16);
        device_buffer<float> ws(paged_attention_workspace(B, q_heads, head_dim, splits));
        auto run = [&](int l) { paged_attention(a, layers[l].view(dt.data(), pages), splits, ws.data(), nullptr, split); };
        for (int l = 0; l < rot; ++l) run(l);  // warm-up
        CK(cudaDeviceSynchronize());
        const int reps = std::max(1, 256 / rot);
        cudaEvent_t e0, e1;
        CK(cudaEventCreate(&e0));
        CK(cudaEventCreate(&e1));
        std::vector<double> per;
        for (int t = 0; t < 3; ++t) {
          CK(cudaEventRecord(e0));
          for (int r = 0; r < reps; ++r)
            for (int l = 0; l < rot; ++l) run(l);
          CK(cudaEventRecord(e1));
          CK(cudaEventSynchronize(e1));
          float ms = 0;
          CK(cudaEventElapsedTime(&ms, e0, e1));
          per.push_back(ms * 1e3 / (reps * rot));
        }
        CK(cudaEventDestroy(e0));
        CK(cudaEventDestroy(e1));
        const double us = *std::min_element(per.begin(), per.end());
        const double floor_us = layer_bytes / (bw * 1e9) * 1e6;
        const auto it = torch.find({B, ctx});
        const double tu = it != torch.end() ? it->second : 0;
        std::printf("%5d %7d %7s %10.2f %9.0f %9.2f %8.2f %10.2f %9.2f\n", B, ctx,
                    split > 0 ? std::to_string(split).c_str() : ("occ" + std::to_string(splits)).c_str(), us,
                    layer_bytes / (us * 1e-6) / 1e9, floor_us, us / floor_us, tu, tu > 0 ? tu / us : 0.0);
        csv << B << ',' << ctx << ',' << split << ',' << us << ',' << layer_bytes / (us * 1e-6) / 1e9 << ',' << floor_us << ','
            << us / floor_us << ',' << tu << ',' << (tu > 0 ? tu / us : 0.0) << '\n';
      }
    }
  std::printf("\nsplit: keys per split at fixed positions (the batch-invariant decode); occN: N occupancy-chosen splits\n");
  return 0;
}
