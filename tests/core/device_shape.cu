// The core vocabulary works in device code: page math and shape sizes computed by a kernel match the host.
#include <boost/test/unit_test.hpp>

#include <cuda_runtime.h>

#include "kvtier/core.hpp"

namespace {
__global__ void shape_kernel(kvtier::kv_shape s, kvtier::page_size<> p, std::size_t* out) {
  out[0] = s.bytes_per_token();
  out[1] = s.row_bytes();
  out[2] = p.full_pages(1000);
  out[3] = kvtier::page_size<16>::pages_covering(1000);
}
}  // namespace

BOOST_AUTO_TEST_CASE(shape_math_on_device) {
  const auto s = kvtier::shapes::llama3_8b();
  std::size_t* d = nullptr;
  BOOST_REQUIRE(cudaMalloc(&d, 4 * sizeof(std::size_t)) == cudaSuccess);
  shape_kernel<<<1, 1>>>(s, kvtier::page_size<>(16), d);
  std::size_t h[4] = {};
  BOOST_REQUIRE(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost) == cudaSuccess);
  cudaFree(d);
  BOOST_TEST(h[0] == s.bytes_per_token());
  BOOST_TEST(h[1] == s.row_bytes());
  BOOST_TEST(h[2] == 62u);
  BOOST_TEST(h[3] == 63u);
}
