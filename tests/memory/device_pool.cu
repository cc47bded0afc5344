// device_pool and device_layer_pool on a GPU: kvtier-allocated and adopted engine memory, pages
// written by kernels and by copies land exactly where the addressing says.
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "kvtier/memory.cuh"
#include "memory/gpu_patterns.cuh"

using namespace kvtier;
using memory::device_layer_pool;
using memory::device_pool;

static_assert(memory::device_accessible_pool<device_pool>);
static_assert(memory::device_accessible_pool<device_layer_pool>);
static_assert(!memory::host_accessible_pool<device_pool>);
static_assert(std::is_same_v<device_pool::slot_type, device_slot>);

namespace {
// A page of `shape` in page-first order with pattern bytes for `slot`.
std::vector<unsigned char> page_first_pattern(const kv_shape& shape, std::size_t plane_bytes, std::uint32_t slot) {
  std::vector<unsigned char> v(shape.layers() * shape.kv_planes() * plane_bytes);
  for (std::size_t l = 0; l < shape.layers(); ++l)
    for (std::size_t kv = 0; kv < shape.kv_planes(); ++kv)
      for (std::size_t i = 0; i < plane_bytes; ++i)
        v[(l * shape.kv_planes() + kv) * plane_bytes + i] = kvtier_test::pattern(slot, l, kv, i);
  return v;
}
std::vector<unsigned char> read_back(const std::byte* d, std::size_t bytes) {
  std::vector<unsigned char> h(bytes);
  BOOST_REQUIRE(cudaMemcpy(h.data(), d, bytes, cudaMemcpyDeviceToHost) == cudaSuccess);
  return h;
}
}  // namespace

BOOST_AUTO_TEST_CASE(owned_device_pool_is_page_first) {
  const kv_shape shape = kv_shape::mha(3, 2, 64, dtype::fp16);
  device_pool p(shape, page_size<>(4), 6);
  BOOST_TEST(p.owns_memory());
  BOOST_TEST(p.capacity_bytes() == 6 * shape.bytes_per_page(4));
  BOOST_TEST(p.device_address(device_slot{5}) == p.device_data() + 5 * p.slot_bytes());
  BOOST_TEST(p.device_plane(device_slot{2}, 2, 1) == p.device_address(device_slot{2}) + 5 * p.plane_bytes());
  std::vector<device_slot> slots(2);
  BOOST_REQUIRE(p.allocate(std::span(slots)).has_value());
  // Host → slot[0] by a copy; a kernel adds 9 to slot[0] through the region; slot[0] → slot[1] by a kernel.
  const auto page = page_first_pattern(shape, p.plane_bytes(), slots[0].value());
  BOOST_REQUIRE(cudaMemcpy(p.device_address(slots[0]), page.data(), page.size(), cudaMemcpyHostToDevice) == cudaSuccess);
  BOOST_REQUIRE(cudaMemset(p.device_address(slots[1]), 0xee, p.slot_bytes()) == cudaSuccess);  // poison
  kvtier_test::add_to_slot_kernel<<<6, 128>>>(p.device_region(), slots[0].value(), shape.layers(), 9);
  kvtier_test::copy_kernel<<<8, 256>>>(p.device_address(slots[0]), p.device_address(slots[1]), p.slot_bytes());
  BOOST_REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  const auto got = read_back(p.device_address(slots[1]), p.slot_bytes());
  std::size_t bad = 0;
  for (std::size_t i = 0; i < page.size(); ++i) bad += got[i] != static_cast<unsigned char>(page[i] + 9);
  BOOST_TEST(bad == 0u);
}

BOOST_AUTO_TEST_CASE(adopted_device_buffer_is_used_in_place_and_not_freed) {
  const kv_shape shape = shapes::llama3_8b();
  const std::size_t slot = shape.bytes_per_page(1);
  std::byte* engine = nullptr;
  BOOST_REQUIRE(cudaMalloc(&engine, 10 * slot) == cudaSuccess);
  {
    device_pool p = device_pool::adopt(engine, 10 * slot, shape, page_size<>(1));
    BOOST_TEST(!p.owns_memory());
    BOOST_TEST(p.capacity() == 10u);
    BOOST_TEST(p.device_data() == engine);
    auto s = p.allocate();
    BOOST_REQUIRE(s.has_value());
    const auto page = page_first_pattern(shape, p.plane_bytes(), s->value());
    BOOST_REQUIRE(cudaMemcpy(p.device_address(*s), page.data(), slot, cudaMemcpyHostToDevice) == cudaSuccess);
    BOOST_TEST((read_back(engine + s->value() * slot, slot) == page));
    device_pool moved(std::move(p));
    BOOST_TEST(moved.device_data() == engine);
  }
  BOOST_TEST(cudaFree(engine) == cudaSuccess);  // still the engine's: the pools did not free it
}

BOOST_AUTO_TEST_CASE(adopt_rejects_wrong_buffers) {
  const kv_shape shape = shapes::llama3_8b();
  const std::size_t slot = shape.bytes_per_page(16);
  std::byte* engine = nullptr;
  BOOST_REQUIRE(cudaMalloc(&engine, 2 * slot) == cudaSuccess);
  BOOST_CHECK_THROW(device_pool::adopt(engine, 2 * slot - 2, shape, page_size<>(16)), config_error);  // not whole slots
  BOOST_CHECK_THROW(device_pool::adopt(nullptr, 2 * slot, shape, page_size<>(16)), config_error);
  std::vector<std::byte> host(slot);
  BOOST_CHECK_THROW(device_pool::adopt(host.data(), slot, shape, page_size<>(16)), config_error);  // not device memory
  cudaFree(engine);
}

// compute-sanitizer lists the two CUDA API errors this case provokes on purpose (cudaMalloc's out
// of memory, and cudaGetLastError clearing it); it has no others.
BOOST_AUTO_TEST_CASE(oversized_pool_is_a_config_error) {
  // 256 GiB: more than any one GPU holds, so cudaMalloc refuses and the constructor throws.
  BOOST_CHECK_THROW(device_pool(shapes::llama3_8b(), page_size<>(16), std::size_t{1} << 17), config_error);
  BOOST_TEST(cudaGetLastError() == cudaSuccess);  // the failure does not linger for the engine's next check
}

BOOST_AUTO_TEST_CASE(owned_layer_pool_has_one_array_per_plane) {
  const kv_shape shape = kv_shape::mha(3, 2, 64, dtype::bf16);
  device_layer_pool p(shape, page_size<>(8), 5);
  BOOST_TEST(p.owns_memory());
  BOOST_TEST(p.plane_table().size() == 6u);
  BOOST_TEST(p.plane_slot_stride() == p.plane_bytes());
  for (std::size_t i = 1; i < 6; ++i) BOOST_TEST(p.plane_table()[i] == p.plane_table()[0] + i * 5 * p.plane_bytes());
  // A kernel writes slot 3 through the device copy of the plane table; each plane reads back right.
  kvtier_test::fill_planes_kernel<<<6, 128>>>(p.device_plane_table(), p.plane_slot_stride(), p.plane_bytes(), 6, 2, 3);
  BOOST_REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  for (std::size_t l = 0; l < 3; ++l)
    for (std::size_t kv = 0; kv < 2; ++kv) {
      const auto got = read_back(p.device_plane(device_slot{3}, l, kv), p.plane_bytes());
      std::size_t bad = 0;
      for (std::size_t i = 0; i < got.size(); ++i) bad += got[i] != kvtier_test::pattern(3, l, kv, i);
      BOOST_TEST(bad == 0u, "layer " << l << " kv " << kv);
    }
}

// An engine with one tensor per layer shaped [pages, 2, tokens, heads, dim] (K and V interleaved
// per page): two planes per layer, V one plane after K, a slot stride of two planes.
BOOST_AUTO_TEST_CASE(adopted_per_layer_tensors_with_interleaved_kv) {
  const kv_shape shape = kv_shape::mha(4, 2, 128, dtype::fp16);
  const std::size_t tokens = 16, pages = 7;
  const std::size_t plane = tokens * shape.row_bytes();
  const std::size_t layer_bytes = pages * 2 * plane;
  std::vector<std::byte*> layers(4, nullptr);
  for (auto& l : layers) {
    BOOST_REQUIRE(cudaMalloc(&l, layer_bytes) == cudaSuccess);
    BOOST_REQUIRE(cudaMemset(l, 0, layer_bytes) == cudaSuccess);
  }
  std::vector<std::byte*> planes;
  for (auto* l : layers) {
    planes.push_back(l);          // K of page 0
    planes.push_back(l + plane);  // V of page 0
  }
  {
    device_layer_pool p = device_layer_pool::adopt(planes, pages, shape, page_size<>(tokens), 2 * plane);
    BOOST_TEST(!p.owns_memory());
    BOOST_TEST(p.capacity() == pages);
    auto s = p.allocate();
    BOOST_REQUIRE(s.has_value());
    auto s2 = p.allocate();
    BOOST_REQUIRE(s2.has_value());
    kvtier_test::fill_planes_kernel<<<8, 128>>>(p.device_plane_table(), p.plane_slot_stride(), p.plane_bytes(), 8, 2,
                                                s2->value());
    BOOST_REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  }
  // Check with the engine's own index formula: byte (page, kv, i) of layer l at ((page * 2 + kv) * plane + i).
  std::size_t bad = 0;
  for (std::size_t l = 0; l < 4; ++l) {
    const auto got = read_back(layers[l], layer_bytes);
    for (std::size_t page = 0; page < pages; ++page)
      for (std::size_t kv = 0; kv < 2; ++kv)
        for (std::size_t i = 0; i < plane; ++i) {
          const unsigned char want = page == 1 ? kvtier_test::pattern(1, l, kv, i) : 0;
          bad += got[(page * 2 + kv) * plane + i] != want;
        }
  }
  BOOST_TEST(bad == 0u);
  for (auto* l : layers) BOOST_TEST(cudaFree(l) == cudaSuccess);
}

BOOST_AUTO_TEST_CASE(layer_adopt_rejects_wrong_tables) {
  const kv_shape shape = kv_shape::mha(2, 1, 64, dtype::fp16);
  std::byte* d = nullptr;
  BOOST_REQUIRE(cudaMalloc(&d, 1 << 20) == cudaSuccess);
  std::vector<std::byte*> three{d, d + 4096, d + 8192};  // needs 2 layers × 2 planes
  BOOST_CHECK_THROW(device_layer_pool::adopt(three, 4, shape, page_size<>(4)), config_error);
  std::vector<std::byte*> four{d, d + 4096, nullptr, d + 8192};
  BOOST_CHECK_THROW(device_layer_pool::adopt(four, 4, shape, page_size<>(4)), config_error);
  std::vector<std::byte*> ok{d, d + 4096, d + 8192, d + 12288};
  BOOST_CHECK_THROW(device_layer_pool::adopt(ok, 4, shape, page_size<>(4), 100), config_error);  // stride < plane
  device_layer_pool p = device_layer_pool::adopt(ok, 4, shape, page_size<>(4));
  BOOST_TEST(p.device_plane(device_slot{2}, 1, 1) == d + 12288 + 2 * p.plane_bytes());
  cudaFree(d);
}
