// GPU decoders against the CPU decoders: pages encoded on the host, decoded on the device into a
// poisoned layer-first pool, every byte compared with the CPU decode of the same page laid out the
// same way; damaged and foreign pages must be flagged, never silently written as data.
#include <boost/test/unit_test.hpp>

#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kvtier/codec.hpp"
#include "kvtier/codec/gpu_decode.cuh"
#include "kvtier/testing/kv_like_pages.hpp"

using namespace kvtier;
using kvtier::testing::kv_like_page;

#define CUDA_OK(x) BOOST_TEST_REQUIRE((x) == cudaSuccess)

namespace {


// Encodes `pages` pages with codec c, decodes them on the GPU into pool slots (reversed order, to
// exercise the slot mapping), and compares with the CPU decode. `damage` corrupts page 1.
template <class Decode, class Codec>
void check(const Codec& c, const kv_page_geometry& g, std::size_t pages, Decode&& decode, bool damage = false) {
  const std::size_t slots = pages + 2, block_bytes = g.page_tokens * g.row_elements() * g.shape.element_bytes();
  const std::size_t blocks = g.shape.layers() * g.shape.kv_planes();
  std::vector<std::vector<std::byte>> enc(pages), want(pages);
  std::vector<std::byte> packed;
  std::vector<std::size_t> offset(pages);
  for (std::size_t p = 0; p < pages; ++p) {
    const auto page = kv_like_page(g, 1000 + p);
    enc[p].resize(c.max_encoded_bytes(page.size()));
    auto n = c.encode(page, enc[p]);
    BOOST_REQUIRE(n.has_value());
    enc[p].resize(*n);
    want[p].resize(page.size());
    BOOST_REQUIRE(c.decode(enc[p], want[p]).has_value());
    offset[p] = packed.size();
    packed.insert(packed.end(), enc[p].begin(), enc[p].end());
    packed.resize((packed.size() + 15) / 16 * 16);
  }
  if (damage) packed[offset[1] + 3] ^= std::byte{0x40};  // inside the tag
  std::byte* d_enc = nullptr;
  std::byte* d_pool = nullptr;
  encoded_page* d_pages = nullptr;
  std::uint8_t* d_status = nullptr;
  const std::size_t pool_bytes = slots * g.page_bytes();
  CUDA_OK(cudaMalloc(&d_enc, packed.size()));
  CUDA_OK(cudaMalloc(&d_pool, pool_bytes));
  CUDA_OK(cudaMalloc(&d_pages, pages * sizeof(encoded_page)));
  CUDA_OK(cudaMalloc(&d_status, pages));
  CUDA_OK(cudaMemcpy(d_enc, packed.data(), packed.size(), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemset(d_pool, 0xcd, pool_bytes));  // poison
  CUDA_OK(cudaMemset(d_status, 0, pages));
  std::vector<encoded_page> desc(pages);
  for (std::size_t p = 0; p < pages; ++p) desc[p] = {d_enc + offset[p], std::uint32_t(enc[p].size()), std::uint32_t(slots - 1 - p)};
  CUDA_OK(cudaMemcpy(d_pages, desc.data(), pages * sizeof(encoded_page), cudaMemcpyHostToDevice));
  const auto pool = transfer::layer_first_view(d_pool, g.shape, slots * g.page_tokens);
  CUDA_OK(decode(d_pages, pages, pool, d_status));
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<std::byte> host(pool_bytes);
  std::vector<std::uint8_t> status(pages);
  CUDA_OK(cudaMemcpy(host.data(), d_pool, pool_bytes, cudaMemcpyDeviceToHost));
  CUDA_OK(cudaMemcpy(status.data(), d_status, pages, cudaMemcpyDeviceToHost));
  const auto hpool = transfer::layer_first_view(host.data(), g.shape, slots * g.page_tokens);
  std::size_t wrong = 0;
  for (std::size_t p = 0; p < pages; ++p) {
    if (damage && p == 1) {
      BOOST_TEST(status[p] == 1);
      continue;
    }
    BOOST_TEST(status[p] == 0);
    for (std::size_t b = 0; b < blocks; ++b) {
      const std::byte* got = hpool.page_row(b / g.shape.kv_planes(), b % g.shape.kv_planes(), slots - 1 - p, g.page_tokens, 0, 0);
      wrong += std::memcmp(got, want[p].data() + b * block_bytes, block_bytes) != 0;
    }
  }
  BOOST_TEST(wrong == 0u);
  cudaFree(d_enc);
  cudaFree(d_pool);
  cudaFree(d_pages);
  cudaFree(d_status);
}

const kv_page_geometry llama_like{kv_shape::mha(4, 8, 128, dtype::bf16), 16};

std::shared_ptr<const cachegen_profile> fit(const kv_page_geometry& g, cachegen_options o) {
  std::vector<std::vector<std::byte>> s{kv_like_page(g, 1), kv_like_page(g, 2)};
  std::vector<std::span<const std::byte>> v(s.begin(), s.end());
  return cachegen_profile::fit(g, v, o);
}

}  // namespace

BOOST_AUTO_TEST_CASE(int8_and_fp8_decode_like_the_cpu) {
  for (dtype t : {dtype::bf16, dtype::fp16, dtype::fp32}) {
    const kv_page_geometry g{kv_shape::mha(3, 4, 64, t), 16};
    const int8_codec i8(g);
    check(i8, g, 5, [&](auto* pages, std::size_t n, auto pool, auto* st) { return decode_on_device(i8, pages, n, pool, st, nullptr); });
    const fp8_codec f8(g);
    check(f8, g, 5, [&](auto* pages, std::size_t n, auto pool, auto* st) { return decode_on_device(f8, pages, n, pool, st, nullptr); }, true);
  }
}

BOOST_AUTO_TEST_CASE(cachegen_decodes_like_the_cpu) {
  for (bool lossless : {false, true}) {
    cachegen_options o;
    o.lossless = lossless;
    o.target_error = 0.02;
    const auto profile = fit(llama_like, o);
    const cachegen_codec c(llama_like, profile);
    const device_cachegen_profile dp(*profile);
    check(c, llama_like, 6, [&](auto* pages, std::size_t n, auto pool, auto* st) { return decode_on_device(c, dp, pages, n, pool, st, nullptr); },
          true);
  }
}
