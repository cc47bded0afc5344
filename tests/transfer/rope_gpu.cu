// RoPE on load on the GPU (rope_kernel.cuh through copier::load, kernel and staged paths) against
// the CPU reference transfer::cpu::load_rotated on the same host pages: V and every K row at angle
// position 0 bit for bit; other K rows within the element type's rounding (the device's sincosf
// and the host's sinf/cosf may differ by an ulp of fp32, which can move a bf16 rounding by one ulp).
// Both conventions, partial rotary dims, bf16 / fp16 / fp32, rotated and pre-rotation storage,
// per-layer events, a staging ring small enough to wrap; misuse is an error value.
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <ostream>
#include <random>
#include <vector>

#include "kvtier/codec/kv_page.hpp"
#include "kvtier/transfer.hpp"
#include "kvtier/transfer/gpu.cuh"
#include "kvtier/transfer/gpu_copy.cuh"
#include "kvtier/transfer/rope.hpp"

using namespace kvtier;
using namespace kvtier::transfer;

#define CUDA_OK(x) BOOST_TEST_REQUIRE((x) == cudaSuccess)

namespace {

constexpr std::size_t P = 16;

struct pinned {
  std::byte* p = nullptr;
  explicit pinned(std::size_t bytes) {
    BOOST_TEST_REQUIRE(cudaHostAlloc(reinterpret_cast<void**>(&p), bytes, cudaHostAllocMapped) == cudaSuccess);
  }
  ~pinned() { cudaFreeHost(p); }
};
struct device_mem {
  std::byte* p = nullptr;
  explicit device_mem(std::size_t bytes) { BOOST_TEST_REQUIRE(cudaMalloc(&p, bytes) == cudaSuccess); }
  ~device_mem() { cudaFree(p); }
};

enum class path { kernel, kernel_events, staged, staged_events };
const char* name(path p) {
  return p == path::kernel ? "kernel" : p == path::kernel_events ? "kernel+events" : p == path::staged ? "staged" : "staged+events";
}

struct outcome {
  std::size_t exact_rows = 0, rows_at_zero = 0, elements = 0, off_by_rounding = 0;
  double worst = 0;  // worst |gpu - cpu| / tolerance
  bool v_equal = true, zero_rows_equal = true;
};

outcome run(rope_convention conv, dtype t, k_storage storage, path how, std::size_t rotary, float theta) {
  const kv_shape s = kv_shape::mha(3, 4, 128, t);
  const std::size_t host_pages = 10, dev_pages = 14, eb = size_of(t);
  const std::size_t host_bytes = s.bytes_per_page(P) * host_pages, dev_bytes = s.bytes_per_page(P) * dev_pages;
  pinned host(host_bytes);
  std::mt19937_64 rng(std::uint64_t(conv) * 131 + std::uint64_t(t) * 17 + std::uint64_t(storage) * 7 + rotary);
  std::normal_distribution<float> n01;
  for (std::size_t i = 0; i < host_bytes / eb; ++i)
    kvtier::detail::with_dtype(t, [&](auto tc) { kvtier::detail::store_typed<decltype(tc)::value>(host.p, i, n01(rng)); });
  const auto hv = paged_view(host.p, s, host_pages, page_size<>(P));
  const rope_spec r{conv, theta, 128, rotary};
  // Scattered pairs; positions: 0 (a copy, or row t at t for pre-rotation), small, negative, ~32K.
  const std::vector<page_pair> pairs = {{3, 9}, {0, 2}, {7, 13}, {1, 0}, {9, 5}, {4, 11}, {6, 1}, {2, 7}};
  const std::vector<long> positions = storage == k_storage::rotated
                                          ? std::vector<long>{0, 16, -288, 4096, 0, 32752, -16, 1}
                                          : std::vector<long>{0, 16, 288, 4096, 32, 32752, 160, 1008};
  const rope_on_load rl{r, storage, positions};
  // CPU reference.
  std::vector<std::byte> ref(dev_bytes, std::byte{0});
  const auto rv = layer_first_view(ref.data(), s, dev_pages * P);
  BOOST_TEST_REQUIRE(cpu::load_rotated(hv, rv, pairs, rl, t).has_value());
  // GPU.
  device_mem dev(dev_bytes);
  CUDA_OK(cudaMemset(dev.p, 0xA5, dev_bytes));
  const auto dv = layer_first_view(dev.p, s, dev_pages * P);
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::vector<cudaEvent_t> ev(s.layers());
  for (auto& e : ev) CUDA_OK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  gpu::copier cp(staging_config{2, 64 * 1024});  // two 64 KiB slots: the batch wraps the ring
  gpu::options o;
  o.stream = stream;
  o.blocks = 4;
  o.rope = &rl;
  o.element = t;
  o.how = how == path::kernel || how == path::kernel_events ? gpu::strategy::kernel : gpu::strategy::staged;
  if (how == path::kernel_events || how == path::staged_events) o.layer_events = ev;
  const result<void> res = cp.load(hv, dv, pairs, layer_range::all(), o);
  BOOST_TEST_REQUIRE(res.has_value());
  if (!o.layer_events.empty()) CUDA_OK(cudaEventSynchronize(ev.back()));
  CUDA_OK(cudaStreamSynchronize(stream));
  std::vector<std::byte> got(dev_bytes);
  CUDA_OK(cudaMemcpy(got.data(), dev.p, dev_bytes, cudaMemcpyDeviceToHost));
  for (auto& e : ev) cudaEventDestroy(e);
  cudaStreamDestroy(stream);

  const auto gv = layer_first_view(got.data(), s, dev_pages * P);
  const double ulp = t == dtype::bf16 ? std::ldexp(1.0, -8) : t == dtype::fp16 ? std::ldexp(1.0, -11) : std::ldexp(1.0, -24);
  outcome out;
  const std::size_t row = s.row_bytes(), n = row / eb;
  for (std::size_t i = 0; i < pairs.size(); ++i)
    for (std::size_t l = 0; l < s.layers(); ++l)
      for (std::size_t ti = 0; ti < P; ++ti) {
        const std::byte* gk = gv.page_row(l, 0, pairs[i].dst, P, ti, 0);
        const std::byte* wk = rv.page_row(l, 0, pairs[i].dst, P, ti, 0);
        out.v_equal &= std::memcmp(gv.page_row(l, 1, pairs[i].dst, P, ti, 0), rv.page_row(l, 1, pairs[i].dst, P, ti, 0), row) == 0;
        const long pos = positions[i] + (storage == k_storage::pre_rotation ? long(ti) : 0);
        const bool exact = std::memcmp(gk, wk, row) == 0;
        out.exact_rows += exact;
        if (pos == 0) {
          ++out.rows_at_zero;
          out.zero_rows_equal &= exact && std::memcmp(gk, hv.page_row(l, 0, pairs[i].src, P, ti, 0), row) == 0;
          continue;
        }
        const std::byte* src = hv.page_row(l, 0, pairs[i].src, P, ti, 0);
        double row_max = 0;
        kvtier::detail::with_dtype(t, [&](auto tc) {
          constexpr dtype T = decltype(tc)::value;
          for (std::size_t e = 0; e < n; ++e) row_max = std::max(row_max, double(std::fabs(kvtier::detail::load_typed<T>(src, e))));
          for (std::size_t e = 0; e < n; ++e) {
            const double g = kvtier::detail::load_typed<T>(gk, e), w = kvtier::detail::load_typed<T>(wk, e);
            // One ulp of the element type at |w| (rounding moved by the angle's last fp32 bits),
            // plus the fp32 rotation's own error (a few ulp of fp32 of the row's magnitude).
            const double tol = 2 * ulp * std::fabs(w) + 16 * std::ldexp(1.0, -24) * row_max + 1e-30;
            ++out.elements;
            out.off_by_rounding += g != w;
            out.worst = std::max(out.worst, std::fabs(g - w) / tol);
          }
        });
      }
  return out;
}

}  // namespace

namespace kvtier::transfer {
std::ostream& operator<<(std::ostream& os, rope_convention c) {
  return os << (c == rope_convention::adjacent_pairs ? "adjacent_pairs" : "rotate_half");
}
std::ostream& operator<<(std::ostream& os, k_storage c) { return os << (c == k_storage::rotated ? "rotated" : "pre_rotation"); }
}  // namespace kvtier::transfer
namespace kvtier {
std::ostream& operator<<(std::ostream& os, dtype t) { return os << to_string(t); }
}  // namespace kvtier

BOOST_DATA_TEST_CASE(gpu_rope_on_load_matches_the_cpu_reference,
                     boost::unit_test::data::make({rope_convention::adjacent_pairs, rope_convention::rotate_half}) *
                         boost::unit_test::data::make({dtype::bf16, dtype::fp16, dtype::fp32}) *
                         boost::unit_test::data::make({k_storage::rotated, k_storage::pre_rotation}),
                     conv, element, storage) {
  for (const path how : {path::kernel, path::kernel_events, path::staged, path::staged_events})
    for (const std::size_t rotary : {std::size_t(0), std::size_t(64)}) {
      const outcome o = run(conv, element, storage, how, rotary, rotary ? 10000.f : 500000.f);
      BOOST_TEST_MESSAGE(name(how) << " rotary " << rotary << ": " << o.exact_rows << " K rows bit-exact, "
                                   << o.off_by_rounding << " of " << o.elements << " rotated elements differ, worst "
                                   << o.worst << " of tolerance");
      BOOST_TEST(o.v_equal);
      BOOST_TEST(o.zero_rows_equal);
      BOOST_TEST(o.rows_at_zero > 0u);
      BOOST_TEST(o.elements > 0u);
      BOOST_TEST(o.worst <= 1.0);
    }
}

BOOST_AUTO_TEST_CASE(misuse_is_an_error) {
  const kv_shape s = kv_shape::mha(1, 2, 64, dtype::bf16);
  pinned host(s.bytes_per_page(P) * 2);
  device_mem dev(s.bytes_per_page(P) * 2);
  const auto hv = paged_view(host.p, s, 2, page_size<>(P));
  const auto dv = layer_first_view(dev.p, s, 2 * P);
  const page_pair pairs[] = {{0, 1}};
  const long one[] = {5}, two[] = {5, 6};
  gpu::copier cp;
  const rope_on_load good{rope_spec{rope_convention::rotate_half, 1e4f, 64, 0}, k_storage::rotated, one};
  const rope_on_load wrong_count{good.rope, k_storage::rotated, two};
  const rope_on_load wrong_dim{rope_spec{rope_convention::rotate_half, 1e4f, 128, 0}, k_storage::rotated, one};
  gpu::options o;
  o.rope = &wrong_count;
  BOOST_TEST((cp.load(hv, dv, pairs, layer_range::all(), o).code() == errc::invalid_argument));
  o.rope = &wrong_dim;
  BOOST_TEST((cp.load(hv, dv, pairs, layer_range::all(), o).code() == errc::invalid_argument));
  o.rope = &good;
  o.how = gpu::strategy::memcpy_per_run;
  BOOST_TEST((cp.load(hv, dv, pairs, layer_range::all(), o).code() == errc::invalid_argument));
  o.how = gpu::strategy::kernel;
  BOOST_TEST((cp.backup(dv, hv, pairs, layer_range::all(), o).code() == errc::invalid_argument));
  BOOST_TEST(cp.load(hv, dv, pairs, layer_range::all(), o).has_value());
  BOOST_TEST(cudaDeviceSynchronize() == cudaSuccess);
}

// The cache's GPU copy strategy (gpu_copy::load_rotated, what load_at calls) against the CPU path.
BOOST_AUTO_TEST_CASE(gpu_copy_strategy_loads_rotated) {
  const kv_shape s = kv_shape::mha(2, 2, 64, dtype::bf16);
  pinned host(s.bytes_per_page(P) * 3);
  device_mem dev(s.bytes_per_page(P) * 3);
  std::mt19937_64 rng(9);
  std::normal_distribution<float> n01;
  for (std::size_t i = 0; i < s.bytes_per_page(P) * 3 / 2; ++i) kvtier::detail::store_typed<dtype::bf16>(host.p, i, n01(rng));
  const auto hv = paged_view(host.p, s, 3, page_size<>(P));
  const auto dv = layer_first_view(dev.p, s, 3 * P);
  const page_pair pairs[] = {{0, 2}, {2, 0}, {1, 1}};
  const long deltas[] = {-8, 0, 24};
  const rope_on_load rl{rope_spec{rope_convention::rotate_half, 1e4f, 64, 0}, k_storage::rotated, deltas};
  gpu_stream st;
  std::vector<gpu_copy::event_type> ev(s.layers());
  BOOST_TEST_REQUIRE(gpu_copy::load_rotated(st, hv, dv, pairs, rl, dtype::bf16, ev).has_value());
  gpu_copy::synchronize(st, ev.back());
  std::vector<std::byte> got(s.bytes_per_page(P) * 3), want(got.size());
  CUDA_OK(cudaMemcpy(got.data(), dev.p, got.size(), cudaMemcpyDeviceToHost));
  BOOST_TEST_REQUIRE(cpu::load_rotated(hv, layer_first_view(want.data(), s, 3 * P), pairs, rl, dtype::bf16).has_value());
  std::size_t far = 0;
  for (std::size_t i = 0; i < got.size() / 2; ++i) {
    const float g = kvtier::detail::load_typed<dtype::bf16>(got.data(), i), w = kvtier::detail::load_typed<dtype::bf16>(want.data(), i);
    far += std::fabs(g - w) > std::ldexp(1.0, -7) * std::fabs(w) + 1e-6;
  }
  BOOST_TEST(far == 0u);
}
