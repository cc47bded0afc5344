// blend::gpu::select_deviating and blend::gpu::deviation against the CPU reference (select.hpp):
// the same deviations bit for bit and the same tokens, for bf16 and fp32 pools reached through
// shuffled block tables, K, V or both, with ties (rows left equal); bad arguments are errors. Also
// times one selection at the llama3-8b shape (8 KV heads of 128, bf16) over 8 × 2K + 100 tokens.
#include <boost/test/unit_test.hpp>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "kvtier/blend/select.cuh"

using namespace kvtier;

#define CUDA_OK(x) BOOST_TEST_REQUIRE((x) == cudaSuccess)

namespace {

constexpr std::size_t P = 16;

// A layer-first pool on the host and its copy on the device, one sequence through a shuffled table.
struct pools {
  kv_shape s;
  std::size_t pages;
  std::vector<std::byte> fresh, loaded;
  std::vector<device_slot> table_f, table_l;
  void* dev = nullptr;  // fresh, loaded, table_f, table_l
  pools(kv_shape shape, std::size_t tokens, std::uint64_t seed, bool ties) : s(shape), pages((tokens + P - 1) / P) {
    const std::size_t bytes = s.bytes_per_token() * pages * P;
    fresh.resize(bytes), loaded.resize(bytes);
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> n01;
    const std::size_t elems = bytes / s.element_bytes();
    kvtier::detail::with_dtype(s.element_type(), [&](auto tc) {
      constexpr dtype T = decltype(tc)::value;
      for (std::size_t i = 0; i < elems; ++i) {
        const float v = n01(rng);
        kvtier::detail::store_typed<T>(fresh.data(), i, v);
        // A quarter of the elements moved; with ties, every third page not at all.
        const bool same = (ties && (i / (s.heads() * s.head_dim())) / P % 3 == 0) || rng() % 4 != 0;
        kvtier::detail::store_typed<T>(loaded.data(), i, same ? v : v + 0.5f * n01(rng));
      }
    });
    for (std::size_t p = 0; p < pages; ++p) table_f.push_back(device_slot{device_slot::rep_type(p)});
    table_l = table_f;
    std::shuffle(table_f.begin(), table_f.end(), rng);
    std::shuffle(table_l.begin(), table_l.end(), rng);
    // The tables say where each sequence page lives: put the pages there (the data above is by sequence page).
    std::vector<std::byte> f2(bytes), l2(bytes);
    const auto vf = view(fresh.data()), vl = view(loaded.data()), wf = view(f2.data()), wl = view(l2.data());
    for (std::size_t l = 0; l < s.layers(); ++l)
      for (std::size_t k = 0; k < 2; ++k)
        for (std::size_t p = 0; p < pages; ++p)
          for (std::size_t t = 0; t < P; ++t) {
            std::memcpy(wf.page_row(l, k, table_f[p].value(), P, t, 0), vf.page_row(l, k, p, P, t, 0), s.row_bytes());
            std::memcpy(wl.page_row(l, k, table_l[p].value(), P, t, 0), vl.page_row(l, k, p, P, t, 0), s.row_bytes());
          }
    fresh.swap(f2), loaded.swap(l2);
    CUDA_OK(cudaMalloc(&dev, 2 * bytes + 2 * pages * sizeof(device_slot)));
    CUDA_OK(cudaMemcpy(dev, fresh.data(), bytes, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(static_cast<std::byte*>(dev) + bytes, loaded.data(), bytes, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dev_table(0), table_f.data(), pages * sizeof(device_slot), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dev_table(1), table_l.data(), pages * sizeof(device_slot), cudaMemcpyHostToDevice));
  }
  ~pools() { (void)cudaFree(dev); }
  transfer::layer_first_buffer view(std::byte* base) const { return transfer::layer_first_view(base, s, pages * P); }
  device_slot* dev_table(int which) const {
    return reinterpret_cast<device_slot*>(static_cast<std::byte*>(dev) + 2 * fresh.size()) + which * pages;
  }
  blend::sequence_kv host(bool is_fresh) {
    return {view(is_fresh ? fresh.data() : loaded.data()), is_fresh ? table_f : table_l, P};
  }
  blend::sequence_kv device(bool is_fresh) const {
    std::byte* base = static_cast<std::byte*>(dev) + (is_fresh ? 0 : fresh.size());
    return {view(base), std::span<const device_slot>(dev_table(is_fresh ? 0 : 1), pages), P};
  }
};

void compare(pools& p, std::size_t layer, std::size_t first, std::size_t last, double ratio, blend::kv_part part) {
  const auto want = blend::select_deviating(p.host(true), p.host(false), layer, first, last, ratio, p.s.element_type());
  BOOST_TEST_REQUIRE(want.has_value());
  // Deviations, bit for bit.
  std::vector<std::size_t> pos(last - first);
  std::iota(pos.begin(), pos.end(), first);
  const auto dev_cpu = blend::deviation_at(p.host(true), layer, p.host(false), layer, pos, p.s.element_type(), part);
  BOOST_TEST_REQUIRE(dev_cpu.has_value());
  double* d = nullptr;
  std::uint32_t* idx = nullptr;
  CUDA_OK(cudaMalloc(&d, pos.size() * sizeof(double)));
  CUDA_OK(cudaMalloc(&idx, pos.size() * sizeof(std::uint32_t)));
  BOOST_TEST_REQUIRE(blend::gpu::deviation(p.device(true), p.device(false), layer, first, last, p.s.element_type(), d, idx, nullptr, part).has_value());
  std::vector<double> dev_gpu(pos.size());
  CUDA_OK(cudaMemcpy(dev_gpu.data(), d, pos.size() * sizeof(double), cudaMemcpyDeviceToHost));
  (void)cudaFree(d), (void)cudaFree(idx);
  std::size_t differ = 0;
  for (std::size_t i = 0; i < pos.size(); ++i) differ += dev_gpu[i] != (*dev_cpu)[i];
  BOOST_TEST(differ == 0u);
  // The choice.
  const auto got = blend::gpu::select_deviating(p.device(true), p.device(false), layer, first, last, ratio, p.s.element_type(), nullptr, part);
  BOOST_TEST_REQUIRE(got.has_value());
  if (part == blend::kv_part::both) BOOST_TEST((*got == *want));
  std::vector<double> ref(dev_cpu->begin(), dev_cpu->end());
  std::vector<std::size_t> want_part = blend::top_k(ref, blend::kept_count(ratio, ref.size()));
  for (auto& i : want_part) i += first;
  BOOST_TEST((*got == want_part));
}

}  // namespace

BOOST_AUTO_TEST_CASE(gpu_selection_matches_the_cpu_reference) {
  pools bf(kv_shape::mha(3, 4, 64, dtype::bf16), 1000, 1, true);
  for (double r : {0.05, 0.15, 0.3, 1.0})
    for (auto part : {blend::kv_part::both, blend::kv_part::k, blend::kv_part::v}) compare(bf, 1, 0, 1000, r, part);
  compare(bf, 2, 100, 613, 0.15, blend::kv_part::both);
  pools f32(kv_shape::mha(2, 2, 32, dtype::fp32), 517, 2, false);
  compare(f32, 1, 0, 517, 0.15, blend::kv_part::both);
  compare(f32, 0, 17, 400, 0.1, blend::kv_part::v);
}

BOOST_AUTO_TEST_CASE(gpu_bad_arguments_are_errors) {
  pools p(kv_shape::mha(2, 2, 32, dtype::bf16), 64, 3, false);
  BOOST_TEST((blend::gpu::select_deviating(p.device(true), p.device(false), 2, 0, 64, 0.1, dtype::bf16, nullptr).code() == errc::invalid_argument));
  BOOST_TEST((blend::gpu::select_deviating(p.device(true), p.device(false), 0, 0, 65, 0.1, dtype::bf16, nullptr).code() == errc::invalid_argument));
  BOOST_TEST((blend::gpu::select_deviating(p.device(true), p.device(false), 0, 0, 64, 1.5, dtype::bf16, nullptr).code() == errc::invalid_argument));
  BOOST_TEST((blend::gpu::select_deviating(p.device(true), p.device(false), 0, 0, 64, 0.1, dtype::fp32, nullptr).code() == errc::invalid_argument));
  auto none = blend::gpu::select_deviating(p.device(true), p.device(false), 0, 5, 5, 0.1, dtype::bf16, nullptr);
  BOOST_TEST_REQUIRE(none.has_value());
  BOOST_TEST(none->empty());
}

BOOST_AUTO_TEST_CASE(gpu_selection_time_at_the_llama3_8b_shape) {
  // One layer of KV (8 KV heads of 128, bf16) for 8 chunks of 2K tokens and a 100-token question.
  const std::size_t n = 8 * 2048 + 100;
  pools p(kv_shape::mha(1, 8, 128, dtype::bf16), n, 4, false);
  compare(p, 0, 0, n, 0.15, blend::kv_part::both);
  cudaEvent_t a, b;
  CUDA_OK(cudaEventCreate(&a));
  CUDA_OK(cudaEventCreate(&b));
  float best = 1e30f;
  for (int i = 0; i < 5; ++i) {
    CUDA_OK(cudaEventRecord(a));
    BOOST_TEST_REQUIRE(blend::gpu::select_deviating(p.device(true), p.device(false), 0, 0, n, 0.15, dtype::bf16, nullptr).has_value());
    CUDA_OK(cudaEventRecord(b));
    CUDA_OK(cudaEventSynchronize(b));
    float ms = 0;
    CUDA_OK(cudaEventElapsedTime(&ms, a, b));
    best = std::min(best, ms);
  }
  BOOST_TEST_MESSAGE("select_deviating, " << n << " tokens x 8 x 128 bf16, K and V: " << best << " ms (best of 5, allocation and copy-back included)");
  (void)cudaEventDestroy(a), (void)cudaEventDestroy(b);
}
