// pinned_host_pool on a GPU: pages written by the CPU are read and modified by kernels through the
// mapped device pointer, for every backing (cudaHostAlloc, mmap + cudaHostRegister, 2 MiB pages).
#include <boost/test/unit_test.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/data/monomorphic.hpp>

#include <cstring>
#include <ostream>
#include <vector>

#include "kvtier/memory.cuh"
#include "memory/gpu_patterns.cuh"

using namespace kvtier;
using memory::pinned_backing;
using memory::pinned_host_pool;
namespace bdata = boost::unit_test::data;

namespace kvtier::memory {
// Names data-test samples in Boost.Test's log.
inline std::ostream& operator<<(std::ostream& o, pinned_backing b) { return o << to_string(b); }
}  // namespace kvtier::memory

static_assert(memory::mapped_host_pool<pinned_host_pool>);
static_assert(memory::pool<pinned_host_pool>);

namespace {
void write_pattern(const pinned_host_pool& p, host_slot s) {
  for (std::size_t l = 0; l < p.shape().layers(); ++l)
    for (std::size_t kv = 0; kv < p.shape().kv_planes(); ++kv) {
      auto* b = reinterpret_cast<unsigned char*>(p.host_plane(s, l, kv));
      for (std::size_t i = 0; i < p.plane_bytes(); ++i) b[i] = kvtier_test::pattern(s.value(), l, kv, i);
    }
}
std::size_t count_mismatches(const pinned_host_pool& p, host_slot s, unsigned char delta) {
  std::size_t bad = 0;
  for (std::size_t l = 0; l < p.shape().layers(); ++l)
    for (std::size_t kv = 0; kv < p.shape().kv_planes(); ++kv) {
      const auto* b = reinterpret_cast<const unsigned char*>(p.host_plane(s, l, kv));
      for (std::size_t i = 0; i < p.plane_bytes(); ++i)
        bad += b[i] != static_cast<unsigned char>(kvtier_test::pattern(s.value(), l, kv, i) + delta);
    }
  return bad;
}
const pinned_backing backings[] = {pinned_backing::cuda_host_alloc, pinned_backing::registered,
                                   pinned_backing::registered_huge_pages};
}  // namespace

BOOST_DATA_TEST_CASE(kernels_read_and_write_through_the_mapped_pointer, bdata::make(backings), backing) {
  const kv_shape shape = kv_shape::mha(4, 2, 64, dtype::bf16);  // 256-byte rows
  pinned_host_pool p(shape, page_size<>(16), 8, {.backing = backing});
  BOOST_TEST_MESSAGE(memory::to_string(backing) << ": huge pages " << memory::to_string(p.huge_pages()));
  BOOST_TEST(p.device_data() != nullptr);
  BOOST_TEST((p.backing() == backing));
  BOOST_TEST(p.pinned_bytes() >= p.capacity_bytes());
  cudaPointerAttributes a{};
  BOOST_REQUIRE(cudaPointerGetAttributes(&a, p.host_data()) == cudaSuccess);
  BOOST_TEST((a.type == cudaMemoryTypeHost));  // pinned, known to CUDA
  BOOST_TEST(a.devicePointer == static_cast<void*>(p.device_data()));

  std::vector<host_slot> slots(3);
  BOOST_REQUIRE(p.allocate(std::span(slots)).has_value());
  for (auto s : slots) write_pattern(p, s);
  // The kernel adds 5 to slot[1] only, through the device region of the mapped memory.
  kvtier_test::add_to_slot_kernel<<<8, 128>>>(p.device_region(), slots[1].value(), shape.layers(), 5);
  BOOST_REQUIRE(cudaGetLastError() == cudaSuccess);
  BOOST_REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  BOOST_TEST(count_mismatches(p, slots[0], 0) == 0u);
  BOOST_TEST(count_mismatches(p, slots[1], 5) == 0u);
  BOOST_TEST(count_mismatches(p, slots[2], 0) == 0u);

  // device_plane agrees with the region, and a kernel copy between two planes lands where the host expects.
  BOOST_TEST(p.device_plane(slots[2], 3, 1) == p.device_region().plane(slots[2].value(), 3, 1));
  kvtier_test::copy_kernel<<<4, 256>>>(p.device_plane(slots[0], 1, 0), p.device_plane(slots[2], 2, 1), p.plane_bytes());
  BOOST_REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  BOOST_TEST(std::memcmp(p.host_plane(slots[2], 2, 1), p.host_plane(slots[0], 1, 0), p.plane_bytes()) == 0);
}

BOOST_DATA_TEST_CASE(copy_engines_reach_the_pinned_pages, bdata::make(backings), backing) {
  const kv_shape shape = shapes::llama3_8b();
  pinned_host_pool p(shape, page_size<>(2), 4, {.backing = backing});  // 256 KiB slots
  auto s = p.allocate();
  BOOST_REQUIRE(s.has_value());
  write_pattern(p, *s);
  std::byte* d = nullptr;
  BOOST_REQUIRE(cudaMalloc(&d, p.slot_bytes()) == cudaSuccess);
  BOOST_REQUIRE(cudaMemcpyAsync(d, p.host_address(*s), p.slot_bytes(), cudaMemcpyHostToDevice, 0) == cudaSuccess);
  BOOST_REQUIRE(cudaStreamSynchronize(0) == cudaSuccess);
  std::memset(p.host_address(*s), 0, p.slot_bytes());  // the copy back must restore every byte
  BOOST_REQUIRE(cudaMemcpyAsync(p.host_address(*s), d, p.slot_bytes(), cudaMemcpyDeviceToHost, 0) == cudaSuccess);
  BOOST_REQUIRE(cudaStreamSynchronize(0) == cudaSuccess);
  cudaFree(d);
  BOOST_TEST(count_mismatches(p, *s, 0) == 0u);
}

BOOST_AUTO_TEST_CASE(moves_keep_the_mapping_and_release_once) {
  pinned_host_pool a(kv_shape::mha(1, 1, 64, dtype::fp16), page_size<>(1), 2, {.backing = pinned_backing::registered});
  std::byte* h = a.host_data();
  std::byte* d = a.device_data();
  pinned_host_pool b(std::move(a));
  BOOST_TEST(b.host_data() == h);
  BOOST_TEST(b.device_data() == d);
  BOOST_TEST(a.host_data() == nullptr);  // NOLINT: moved-from is empty
  BOOST_TEST(a.capacity() == 0u);
  pinned_host_pool c(kv_shape::mha(1, 1, 64, dtype::fp16), page_size<>(1), 2);
  c = std::move(b);  // c's cudaHostAlloc memory is freed, b's registration moves
  BOOST_TEST(c.host_data() == h);
  BOOST_TEST((c.backing() == pinned_backing::registered));
  cudaPointerAttributes at{};
  BOOST_REQUIRE(cudaPointerGetAttributes(&at, h) == cudaSuccess);
  BOOST_TEST((at.type == cudaMemoryTypeHost));
}
