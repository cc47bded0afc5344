// host_pool: page-first addressing, sizes from kv_shape × page size, accounting, RAII moves.
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <cstring>
#include <set>
#include <type_traits>
#include <vector>

#include "kvtier/layout/page_first.hpp"
#include "kvtier/memory.hpp"

using namespace kvtier;
using memory::host_pool;

static_assert(!std::is_copy_constructible_v<host_pool>);
static_assert(!std::is_copy_assignable_v<host_pool>);
static_assert(std::is_nothrow_move_constructible_v<host_pool>);
static_assert(std::is_nothrow_move_assignable_v<host_pool>);

BOOST_AUTO_TEST_CASE(sizes_follow_shape_and_page_size) {
  const kv_shape llama = shapes::llama3_8b();
  host_pool p(llama, page_size<16>{}, 3);
  BOOST_TEST(p.slot_bytes() == llama.bytes_per_page(16));  // 2 MiB: 16 tokens × 32 layers × 2 × 8 × 128 × 2 B
  BOOST_TEST(p.slot_bytes() == std::size_t{2} << 20);
  BOOST_TEST(p.slot_stride() == p.slot_bytes());
  BOOST_TEST(p.plane_bytes() == 16u * llama.row_bytes());
  BOOST_TEST(p.capacity() == 3u);
  BOOST_TEST(p.capacity_bytes() == 3 * p.slot_bytes());
  BOOST_TEST(p.page_tokens() == 16u);
  BOOST_TEST((p.shape() == llama));
  BOOST_TEST(reinterpret_cast<std::uintptr_t>(p.host_data()) % 4096 == 0u);
}

BOOST_AUTO_TEST_CASE(addresses_are_page_first) {
  const kv_shape s = kv_shape::mha(3, 2, 8, dtype::fp16);  // row 32 B, plane of 4 tokens 128 B
  host_pool p(s, page_size<>(4), 5);
  const std::size_t page = s.bytes_per_page(4);
  BOOST_TEST(page == 3u * 2 * 4 * 32);
  for (std::uint32_t i = 0; i < 5; ++i) {
    const host_slot slot{i};
    BOOST_TEST(p.host_address(slot) == p.host_data() + i * page);
    BOOST_TEST(p.host_span(slot).data() == p.host_address(slot));
    BOOST_TEST(p.host_span(slot).size() == page);
    for (std::size_t layer = 0; layer < 3; ++layer)
      for (std::size_t kv = 0; kv < 2; ++kv)
        BOOST_TEST(p.host_plane(slot, layer, kv) == p.host_address(slot) + ((layer * 2 + kv) * 4 * 32));
  }
  // The region view computes the same addresses (what CPU copy paths and kernels use).
  const auto r = p.host_region();
  BOOST_TEST(r.capacity == 5u);
  BOOST_TEST(r.kv_planes == 2u);
  BOOST_TEST(r.plane(4, 2, 1) == p.host_plane(host_slot{4}, 2, 1));
  BOOST_TEST(r.slot(3) == p.host_address(host_slot{3}));
}

BOOST_AUTO_TEST_CASE(mla_has_one_plane_per_layer) {
  const kv_shape mla = shapes::deepseek_v3_mla();
  host_pool p(mla, page_size<>(1), 2);
  BOOST_TEST(p.slot_bytes() == 61u * 576 * 2);
  BOOST_TEST(p.host_plane(host_slot{1}, 60, 0) == p.host_address(host_slot{1}) + 60 * 576 * 2);
}

BOOST_AUTO_TEST_CASE(slots_do_not_overlap_and_keep_their_bytes) {
  const kv_shape s = kv_shape::mha(2, 1, 16, dtype::bf16);
  host_pool p(s, page_size<>(3), 6);
  std::vector<host_slot> slots(6);
  BOOST_REQUIRE(p.allocate(std::span(slots)).has_value());
  for (auto slot : slots) std::memset(p.host_span(slot).data(), int(slot.value() + 1), p.slot_bytes());
  for (auto slot : slots)
    for (std::byte b : p.host_span(slot)) BOOST_REQUIRE(int(b) == int(slot.value() + 1));
}

BOOST_AUTO_TEST_CASE(slot_alignment_pads_the_stride) {
  const kv_shape s = kv_shape::mha(1, 1, 24, dtype::fp16);  // 48 B rows
  host_pool p(s, page_size<>(1), 4, {.alignment = 256, .slot_alignment = 64});
  BOOST_TEST(p.slot_bytes() == 96u);
  BOOST_TEST(p.slot_stride() == 128u);
  BOOST_TEST(p.capacity_bytes() == 4u * 128);
  BOOST_TEST(p.host_address(host_slot{3}) == p.host_data() + 3 * 128);
  BOOST_TEST(reinterpret_cast<std::uintptr_t>(p.host_data()) % 256 == 0u);
  BOOST_TEST(p.host_region().slot_stride == 128u);
}

BOOST_AUTO_TEST_CASE(accounting_and_exhaustion) {
  host_pool p(shapes::llama3_8b(), page_size<>(1), 4);
  std::vector<host_slot> three(3), two(2);
  BOOST_REQUIRE(p.allocate(std::span(three)).has_value());
  BOOST_TEST((p.allocate(std::span(two)).code() == errc::capacity_exhausted));
  auto last = p.allocate();
  BOOST_REQUIRE(last.has_value());
  BOOST_TEST((p.allocate().code() == errc::capacity_exhausted));
  const memory::pool_stats st = p.stats();
  BOOST_TEST(st.capacity_slots == 4u);
  BOOST_TEST(st.used_slots == 4u);
  BOOST_TEST(st.free_slots == 0u);
  BOOST_TEST(st.high_water_slots == 4u);
  BOOST_TEST(st.slot_bytes == p.slot_bytes());
  BOOST_TEST(st.capacity_bytes == 4 * p.slot_bytes());
  BOOST_TEST(st.used_bytes == 4 * p.slot_bytes());
  BOOST_TEST(st.allocated == 4u);
  BOOST_TEST(st.failed_allocations == 2u);
  BOOST_TEST(p.free(*last).has_value());
  BOOST_TEST((p.free(*last).code() == errc::invalid_argument));
  BOOST_TEST(p.stats().used_bytes == 3 * p.slot_bytes());
  BOOST_TEST(p.stats().rejected_frees == 1u);
}

BOOST_AUTO_TEST_CASE(moves_transfer_ownership) {
  host_pool a(kv_shape::mha(1, 1, 8, dtype::fp32), page_size<>(2), 4);
  auto s = a.allocate();
  BOOST_REQUIRE(s.has_value());
  std::byte* data = a.host_data();
  host_pool b(std::move(a));
  BOOST_TEST(b.host_data() == data);
  BOOST_TEST(b.is_allocated(*s));
  BOOST_TEST(b.used() == 1u);
  BOOST_TEST(a.host_data() == nullptr);  // NOLINT: moved-from is empty by contract
  BOOST_TEST(a.capacity() == 0u);
  BOOST_TEST((a.allocate().code() == errc::capacity_exhausted));
  host_pool c(kv_shape::mha(1, 1, 8, dtype::fp32), page_size<>(2), 1);
  c = std::move(b);  // c's old buffer is released (ASan reports a leak otherwise)
  BOOST_TEST(c.host_data() == data);
  BOOST_TEST(c.capacity() == 4u);
}

BOOST_AUTO_TEST_CASE(bad_configuration_throws) {
  const kv_shape s = shapes::llama3_8b();
  BOOST_CHECK_THROW(host_pool(s, page_size<>(16), 0), config_error);
  BOOST_CHECK_THROW(host_pool(s, page_size<>(16), 4, {.alignment = 3000}), config_error);
  BOOST_CHECK_THROW(host_pool(s, page_size<>(16), 4, {.alignment = 4096, .slot_alignment = 0}), config_error);
  BOOST_CHECK_THROW(host_pool(s, page_size<>(1u << 20), memory::max_slots), config_error);  // bytes overflow
}

// The snippet docs/memory.md quotes: a pool sized from the model's shape, a batch taken all or
// nothing, one page written plane by plane, the slots given back.
BOOST_AUTO_TEST_CASE(readme_taste) {
  using namespace kvtier::memory;
  host_pool pool(shapes::llama3_8b(), page_size<16>{}, 64);  // 64 slots of 2 MiB, page-first
  std::vector<host_slot> slots(8);
  if (auto r = pool.allocate(std::span(slots)); !r)                 // all or nothing
    BOOST_FAIL("pool full: " << r.err().message());                // errc::capacity_exhausted
  std::byte* k0 = pool.host_plane(slots[0], /*layer=*/0, /*kv=*/0); // (token, head, dim) of layer 0's K
  std::memset(k0, 0, pool.plane_bytes());
  BOOST_TEST(pool.stats().used_bytes == 8 * pool.slot_bytes());
  BOOST_TEST(pool.free(std::span<const host_slot>(slots)).has_value());
}

// A host pool (packed slots) is exactly the layout engineer's page_first array: every row the pool
// addresses is where layout::page_first::mapping puts it, so copies built on that layout can take
// host_data() as their base.
BOOST_AUTO_TEST_CASE(pool_memory_is_a_page_first_array) {
  for (const kv_shape s : {kv_shape::mha(3, 2, 16, dtype::bf16), kv_shape::mla(2, 40, dtype::fp8_e4m3)}) {
    const std::size_t P = 4, slots = 3;
    host_pool p(s, page_size<>(P), slots);
    const layout::page_first::mapping m(layout::kv_extents::of(s, slots * P), page_size<>(P));
    BOOST_TEST(m.required_span_size() * s.element_bytes() == p.capacity_bytes());
    for (std::uint32_t slot = 0; slot < slots; ++slot)
      for (std::size_t l = 0; l < s.layers(); ++l)
        for (std::size_t kv = 0; kv < s.kv_planes(); ++kv)
          for (std::size_t t = 0; t < P; ++t)
            for (std::size_t h = 0; h < s.heads(); ++h) {
              const std::byte* by_pool = p.host_plane(host_slot{slot}, l, kv) + (t * s.heads() + h) * s.head_dim() * s.element_bytes();
              const std::byte* by_layout = p.host_data() + m(l, kv, slot * P + t, h, 0) * s.element_bytes();
              BOOST_REQUIRE(by_pool == by_layout);
            }
  }
}
