// The CPU copy path against a naive element-by-element copy: fresh random source, poisoned
// destination, every byte of the destination compared (so nothing outside the copied pages moves),
// over layouts, engine plane forms, page sizes, shapes (MHA, MLA, odd row sizes, every dtype),
// one layer and all layers, both directions; and its error values for bad input.
#include <boost/test/unit_test.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/mpl/list.hpp>

#include <random>

#include "kvtier/transfer.hpp"
#include "transfer/kv_buffers.hpp"

using namespace kvtier;
using namespace kvtier::transfer;
using namespace kvtier::testing;
namespace bdata = boost::unit_test::data;

namespace {
const kv_shape small_shapes[] = {
    kv_shape::mha(3, 2, 16, dtype::bf16),   // MHA, 64-byte rows
    kv_shape::mla(2, 36, dtype::fp16),      // MLA, one latent of 72 bytes
    kv_shape::mha(2, 3, 67, dtype::fp8_e4m3),  // odd row: 67-byte heads
    kv_shape::mha(2, 1, 8, dtype::fp32),
    kv_shape::mha(2, 1, 256, dtype::bf16),  // head dim 256
};
const planes_form forms[] = {planes_form::single, planes_form::per_layer, planes_form::per_plane};
using layouts = boost::mpl::list<layout::page_first, layout::page_head_first>;

// kv_view / paged_kv_view: positive and negative cases.
static_assert(kv_view<layer_first_buffer>);
static_assert(!paged_kv_view<layer_first_buffer>, "a layer-first engine buffer is not paged");
static_assert(kv_view<kv_buffer<layout::page_first::mapping>>);
static_assert(paged_kv_view<kv_buffer<layout::page_first::mapping>>);
static_assert(paged_kv_view<kv_buffer<layout::page_head_first::mapping>>);
static_assert(!paged_kv_view<kv_buffer<layout::layer_first::mapping>>);
struct look_alike_view {  // has a mapping but is neither a kv_buffer nor the layer-first buffer
  using mapping_type = layout::page_first::mapping;
};
static_assert(!kv_view<look_alike_view>);
static_assert(!kv_view<int>);

std::mt19937_64& rng() {
  static std::mt19937_64 r(std::random_device{}());
  return r;
}
}  // namespace

BOOST_AUTO_TEST_CASE_TEMPLATE(load_and_backup_match_naive_copy, Layout, layouts) {
  for (const kv_shape& s : small_shapes)
    for (std::size_t P : {1, 4, 16})
      for (planes_form f : forms) {
        if (f == planes_form::per_plane && s.kv_planes() == 1) continue;
        for (bool one_layer : {false, true}) {
          const std::size_t host_pages = 5, engine_pages = 7, n = 4;
          const std::size_t first = one_layer ? s.layers() - 1 : 0, count = one_layer ? 1 : s.layers();
          const layer_range layers = one_layer ? layer_range::one(first) : layer_range::all();
          const auto pairs = random_pairs(n, host_pages, engine_pages, rng());
          // load: host -> engine
          paged_buffer<Layout> host(s, host_pages, P);
          fill_random(host.mem, rng());
          engine_buffer engine(s, engine_pages * P, f), expect(s, engine_pages * P, f);
          naive_copy(host, expect, pairs, first, count, P);
          BOOST_TEST_REQUIRE(cpu::load(host.view(), engine.view(), pairs, layers).has_value());
          BOOST_TEST_REQUIRE((engine.allocs == expect.allocs));
          // backup: engine -> host, pairs reversed (engine page -> host page)
          std::vector<page_pair> back = random_pairs(n, engine_pages, host_pages, rng());
          for (auto& a : engine.allocs) fill_random(a, rng());
          paged_buffer<Layout> out(s, host_pages, P), want(s, host_pages, P);
          naive_copy(engine, want, back, first, count, P);
          BOOST_TEST_REQUIRE(cpu::backup(engine.view(), out.view(), back, layers).has_value());
          BOOST_TEST_REQUIRE((out.mem == want.mem));
        }
      }
}

BOOST_DATA_TEST_CASE(paged_to_paged_fast_path_and_head_shapes, bdata::make({1, 2, 8}), P) {
  const kv_shape s = kv_shape::mha(3, 2, 16, dtype::bf16);
  const auto pairs = random_pairs(3, 4, 4, rng());
  paged_buffer<layout::page_first> a(s, 4, P), b(s, 4, P), want(s, 4, P);
  fill_random(a.mem, rng());
  naive_copy(a, want, pairs, 0, s.layers(), P);
  const auto g = plan_copy(a.view(), b.view(), pairs, layer_range::all(), P);
  BOOST_TEST_REQUIRE(g.has_value());
  BOOST_TEST((g->shape == run_shape::page));  // same layouts, every layer: one run per page
  BOOST_TEST_REQUIRE(cpu::copy_pages(a.view(), b.view(), pairs, layer_range::all(), P).has_value());
  BOOST_TEST((b.mem == want.mem));
  // page_first -> page_head_first: runs of one head.
  paged_buffer<layout::page_head_first> c(s, 4, P), want_c(s, 4, P);
  naive_copy(a, want_c, pairs, 1, 2, P);
  BOOST_TEST((plan_copy(a.view(), c.view(), pairs, layer_range{1, 2}, P)->shape == run_shape::head));
  BOOST_TEST_REQUIRE(cpu::copy_pages(a.view(), c.view(), pairs, layer_range{1, 2}, P).has_value());
  BOOST_TEST((c.mem == want_c.mem));
}

BOOST_AUTO_TEST_CASE(run_shapes_and_sizes) {
  const kv_shape s = shapes::llama3_8b();
  paged_buffer<layout::page_first> host(s, 2, 16);
  engine_buffer engine(s, 32, planes_form::per_layer);
  const page_pair pairs[] = {{0, 1}, {1, 0}};
  const auto g = plan_copy(host.view(), engine.view(), pairs, layer_range::all(), 16);
  BOOST_TEST_REQUIRE(g.has_value());
  BOOST_TEST((g->shape == run_shape::block));
  BOOST_TEST(g->block_bytes() == 16u * 2048u);
  BOOST_TEST(g->bytes() == 2 * s.bytes_per_page(16));
  std::size_t runs = 0, bytes = 0;
  for_each_run(host.view(), engine.view(), pairs, *g, [&](std::byte*, const std::byte*, std::size_t n) {
    ++runs;
    bytes += n;
  });
  BOOST_TEST(runs == 2u * 32u * 2u);  // one run per (page, layer, kv)
  BOOST_TEST(bytes == g->bytes());
}

BOOST_AUTO_TEST_CASE(bad_input_is_an_error_value) {
  const kv_shape s = kv_shape::mha(2, 2, 16, dtype::bf16);
  paged_buffer<layout::page_first> host(s, 2, 4);
  engine_buffer engine(s, 8, planes_form::single);
  const page_pair ok[] = {{1, 1}};
  const page_pair bad_src[] = {{2, 0}};
  const page_pair bad_dst[] = {{0, 2}};
  BOOST_TEST(cpu::load(host.view(), engine.view(), ok).has_value());
  BOOST_TEST((cpu::load(host.view(), engine.view(), bad_src).code() == errc::invalid_argument));
  BOOST_TEST((cpu::load(host.view(), engine.view(), bad_dst).code() == errc::invalid_argument));
  BOOST_TEST((cpu::load(host.view(), engine.view(), ok, layer_range::one(2)).code() == errc::invalid_argument));
  BOOST_TEST((cpu::load(host.view(), engine.view(), ok, layer_range{1, 2}).code() == errc::invalid_argument));
  engine_buffer other(kv_shape::mha(2, 2, 16, dtype::fp32), 8, planes_form::single);
  BOOST_TEST((cpu::load(host.view(), other.view(), ok).code() == errc::invalid_argument));  // dtype differs
  engine_buffer more_heads(kv_shape::mha(2, 4, 16, dtype::bf16), 8, planes_form::single);
  BOOST_TEST((cpu::load(host.view(), more_heads.view(), ok).code() == errc::invalid_argument));
  paged_buffer<layout::page_first> p8(s, 1, 8);
  BOOST_TEST((cpu::copy_pages(host.view(), p8.view(), ok, layer_range::all(), 4).code() == errc::invalid_argument));
  // A plane table of the wrong length is a configuration error.
  std::vector<std::byte*> three(3, nullptr);
  BOOST_CHECK_THROW(layer_first_view(std::span<std::byte* const>(three), s, 8), config_error);
  BOOST_TEST(cpu::load(host.view(), engine.view(), std::span<const page_pair>{}).has_value());  // empty batch
}

// The taste of the copy API quoted in docs/gpu.md.
BOOST_AUTO_TEST_CASE(readme_taste) {
  const kv_shape s = shapes::llama3_8b();
  std::vector<std::byte> host(4 * s.bytes_per_page(16)), engine(64 * s.bytes_per_token());
  fill_random(host, rng());
  const auto pages = paged_view(host.data(), s, 4, page_size<16>{});  // (page, layer, kv, token, head, dim)
  const auto gpu_kv = layer_first_view(engine.data(), s, 64);         // (layer, kv, token, head, dim)
  const page_pair batch[] = {{0, 3}, {2, 0}};                          // host page -> engine page
  BOOST_TEST(cpu::load(pages, gpu_kv, batch).has_value());             // every layer
  BOOST_TEST(cpu::backup(gpu_kv, pages, batch, layer_range::one(5)).has_value());  // one layer back
  BOOST_TEST(std::memcmp(gpu_kv.row(7, 1, 3 * 16, 0), pages.row(7, 1, 0, 0), s.row_bytes()) == 0);
}

// A host buffer whose pages are padded (a pool with slot alignment) copies like a packed one.
BOOST_AUTO_TEST_CASE(padded_host_pages) {
  const kv_shape s = kv_shape::mha(3, 2, 16, dtype::bf16);
  const std::size_t P = 4, pages = 5, page_bytes = s.bytes_per_page(P), stride = page_bytes + 4096;
  std::vector<std::byte> padded(pages * stride);
  fill_random(padded, rng());
  paged_buffer<layout::page_first> packed(s, pages, P);
  for (std::size_t i = 0; i < pages; ++i)
    std::memcpy(packed.mem.data() + i * page_bytes, padded.data() + i * stride, page_bytes);
  const auto view = paged_view(padded.data(), s, pages, page_size<>(P), stride);
  BOOST_TEST(view.bytes() == (pages - 1) * stride + page_bytes);
  const auto pairs = random_pairs(4, pages, 6, rng());
  engine_buffer a(s, 6 * P, planes_form::per_layer), b(s, 6 * P, planes_form::per_layer);
  BOOST_TEST_REQUIRE(cpu::load(view, a.view(), pairs).has_value());
  BOOST_TEST_REQUIRE(cpu::load(packed.view(), b.view(), pairs).has_value());
  BOOST_TEST((a.allocs == b.allocs));
  // And back: backup into the padded buffer leaves the padding untouched.
  const std::vector<std::byte> before = padded;
  const auto back = random_pairs(3, 6, pages, rng());
  BOOST_TEST_REQUIRE(cpu::backup(a.view(), view, back, layer_range::one(1)).has_value());
  for (std::size_t i = 0; i < pages; ++i)
    BOOST_TEST(std::memcmp(padded.data() + i * stride + page_bytes, before.data() + i * stride + page_bytes,
                           stride - page_bytes) == 0);
  BOOST_CHECK_THROW(paged_view(padded.data(), s, pages, page_size<>(P), page_bytes - 2), config_error);
}
