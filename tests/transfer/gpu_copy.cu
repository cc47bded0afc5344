// GPU copies against the CPU reference path: fresh random data, poisoned destinations, every byte
// of the destination compared. Layouts x page sizes {1, 16, 64, 256} x shapes (Llama-3-8B; MLA
// 1 x 576; head dim 80) x one layer / all layers x load and backup; plus SM budgets, the
// copy-engine strategies, per-layer events, narrow-vector fallbacks and misaligned bases; the staged
// and mixed paths (small staging rings, so batches wrap the ring) and the planner's choice.
#include <boost/test/unit_test.hpp>
#include <boost/mpl/list.hpp>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "kvtier/transfer.hpp"
#include "kvtier/transfer/gpu.cuh"
#include "transfer/kv_buffers.hpp"

using namespace kvtier;
using namespace kvtier::transfer;
using namespace kvtier::testing;

#define CUDA_OK(x) BOOST_TEST_REQUIRE((x) == cudaSuccess)

namespace {
std::mt19937_64& rng() {
  static std::mt19937_64 r(std::random_device{}());
  return r;
}

// Pinned host memory mapped into the device's address space (what host pools hand out).
struct pinned {
  std::byte* p = nullptr;
  std::size_t n = 0;
  explicit pinned(std::size_t bytes) : n(bytes) {
    BOOST_TEST_REQUIRE(cudaHostAlloc(reinterpret_cast<void**>(&p), bytes + 64, cudaHostAllocMapped) == cudaSuccess);
  }
  ~pinned() { cudaFreeHost(p); }
};

// Device mirror of an engine_buffer: same forms, device allocations.
struct device_engine {
  engine_buffer& host;
  std::vector<std::byte*> ptrs;
  explicit device_engine(engine_buffer& h) : host(h) {
    for (auto& a : h.allocs) {
      std::byte* d = nullptr;
      BOOST_TEST_REQUIRE(cudaMalloc(&d, a.size()) == cudaSuccess);
      ptrs.push_back(d);
    }
  }
  ~device_engine() {
    for (auto* d : ptrs) cudaFree(d);
  }
  layer_first_buffer view() const {
    if (host.form == planes_form::single) return layer_first_view(ptrs[0], host.s, host.tokens);
    return layer_first_view(std::span<std::byte* const>(ptrs), host.s, host.tokens);
  }
  void upload(const engine_buffer& from) {
    for (std::size_t i = 0; i < ptrs.size(); ++i)
      BOOST_TEST_REQUIRE(cudaMemcpy(ptrs[i], from.allocs[i].data(), from.allocs[i].size(), cudaMemcpyHostToDevice) ==
                         cudaSuccess);
  }
  void poison_all() {
    for (std::size_t i = 0; i < ptrs.size(); ++i)
      BOOST_TEST_REQUIRE(cudaMemset(ptrs[i], int(poison), host.allocs[i].size()) == cudaSuccess);
  }
  bool equals(const engine_buffer& want) const {
    for (std::size_t i = 0; i < ptrs.size(); ++i) {
      std::vector<std::byte> got(want.allocs[i].size());
      if (cudaMemcpy(got.data(), ptrs[i], got.size(), cudaMemcpyDeviceToHost) != cudaSuccess) return false;
      if (got != want.allocs[i]) return false;
    }
    return true;
  }
};

struct stream_fixture {
  cudaStream_t stream{};
  stream_fixture() { cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking); }
  ~stream_fixture() { cudaStreamDestroy(stream); }
};

// One load and one backup of `n` random pairs through `opts`, each compared with the CPU path.
template <class Layout>
void check_round(const kv_shape& s, std::size_t P, planes_form form, layer_range layers, gpu::copier& c,
                 gpu::options opts, std::size_t misalign = 0, std::size_t page_pad = 0) {
  const std::size_t host_pages = 4, engine_pages = 5, n = 3;
  BOOST_TEST_CONTEXT("shape L" << s.layers() << " H" << s.heads() << " D" << s.head_dim() << " es"
                                << s.element_bytes() << " P" << P << " form " << int(form) << " layers "
                                << layers.first << "+" << layers.count << " blocks " << opts.blocks << " how "
                                << int(opts.how) << " misalign " << misalign) {
    // load: pinned paged host -> device layer-first
    paged_buffer<Layout> host(s, host_pages, P);
    fill_random(host.mem, rng());
    // Pinned copy of the host pages, page_pad bytes between pages (a pool's slot alignment).
    const std::size_t page_bytes = s.bytes_per_page(P), stride = page_bytes + page_pad;
    pinned ph(host_pages * stride);
    std::byte* hbase = ph.p + misalign;
    for (std::size_t i = 0; i < host_pages; ++i)
      std::memcpy(hbase + i * stride, host.mem.data() + i * page_bytes, page_bytes);
    const auto hview = paged_view<Layout>(hbase, s, host_pages, page_size<>(P), page_pad ? stride : 0);
    engine_buffer want(s, engine_pages * P, form), scratch(s, engine_pages * P, form);
    device_engine dev(scratch);
    dev.poison_all();
    const auto pairs = random_pairs(n, host_pages, engine_pages, rng());
    BOOST_TEST_REQUIRE(cpu::load(host.view(), want.view(), pairs, layers).has_value());
    const result<void> r = c.load(hview, dev.view(), pairs, layers, opts);
    BOOST_TEST_REQUIRE(r.has_value(), "load: " << r.err().message());
    CUDA_OK(cudaStreamSynchronize(opts.stream));
    BOOST_TEST_REQUIRE(dev.equals(want), "load differs from the CPU path");

    // backup: device layer-first (random) -> pinned paged host (poisoned)
    for (auto& a : scratch.allocs) fill_random(a, rng());
    dev.upload(scratch);
    paged_buffer<Layout> back_want(s, host_pages, P);
    const auto back = random_pairs(n, engine_pages, host_pages, rng());
    BOOST_TEST_REQUIRE(cpu::backup(scratch.view(), back_want.view(), back, layers).has_value());
    std::memset(hbase, int(poison), host_pages * stride);
    const result<void> b = c.backup(dev.view(), hview, back, layers, opts);
    BOOST_TEST_REQUIRE(b.has_value(), "backup: " << b.err().message());
    CUDA_OK(cudaStreamSynchronize(opts.stream));
    for (std::size_t i = 0; i < host_pages; ++i) {
      BOOST_TEST_REQUIRE(std::memcmp(hbase + i * stride, back_want.mem.data() + i * page_bytes, page_bytes) == 0,
                         "backup differs from the CPU path");
      for (std::size_t b2 = page_bytes; b2 < stride; ++b2)  // padding untouched
        BOOST_TEST_REQUIRE((hbase[i * stride + b2] == poison));
    }
  }
}

using layouts = boost::mpl::list<layout::page_first, layout::page_head_first>;
}  // namespace

BOOST_AUTO_TEST_CASE_TEMPLATE(kernel_matches_cpu_path, Layout, layouts) {
  stream_fixture f;
  gpu::copier c;
  const struct {
    kv_shape s;
    planes_form form;
  } cases[] = {{shapes::llama3_8b(), planes_form::single},
               {kv_shape::mla(4, 576, dtype::bf16), planes_form::per_layer},
               {kv_shape::mha(4, 4, 80, dtype::fp16), planes_form::per_plane},
               {kv_shape::mha(3, 2, 256, dtype::bf16), planes_form::single}};  // head dim 256
  for (const auto& cs : cases)
    for (std::size_t P : {1, 16, 64, 256})
      for (layer_range layers : {layer_range::all(), layer_range::one(cs.s.layers() / 2)})
        check_round<Layout>(cs.s, P, cs.form, layers, c, gpu::options{f.stream});
}

BOOST_AUTO_TEST_CASE(sm_budgets_strategies_and_dtypes) {
  stream_fixture f;
  gpu::copier c;
  const kv_shape s = kv_shape::mha(6, 8, 128, dtype::bf16);
  for (int blocks : {1, 2, 8, 132}) {
    gpu::options o{f.stream};
    o.blocks = blocks;
    check_round<layout::page_first>(s, 16, planes_form::per_layer, layer_range::all(), c, o);
  }
  for (gpu::strategy how : {gpu::strategy::memcpy_per_run, gpu::strategy::memcpy_batch}) {
    gpu::options o{f.stream};
    o.how = how;
    check_round<layout::page_first>(s, 4, planes_form::single, layer_range::all(), c, o);
    check_round<layout::page_head_first>(s, 4, planes_form::per_plane, layer_range{2, 3}, c, o);
  }
  // The bulk-copy kernel: small tiles packed into a stage (P = 1), tiles split over stages
  // (P = 256: 512 KiB blocks), MLA rows, one layer, plane tables; head tiles fall back to vectors.
  {
    gpu::options o{f.stream};
    o.how = gpu::strategy::bulk;
    for (int blocks : {1, 3}) {
      o.blocks = blocks;
      check_round<layout::page_first>(shapes::llama3_8b(), 1, planes_form::single, layer_range::all(), c, o);
      check_round<layout::page_first>(shapes::llama3_8b(), 256, planes_form::per_layer, layer_range::one(5), c, o);
      check_round<layout::page_first>(kv_shape::mla(4, 576, dtype::bf16), 16, planes_form::per_layer,
                                      layer_range::all(), c, o);
      check_round<layout::page_head_first>(s, 16, planes_form::per_plane, layer_range::all(), c, o);
      check_round<layout::page_first>(kv_shape::mha(3, 3, 67, dtype::fp8_e4m3), 4, planes_form::single,
                                      layer_range::all(), c, o);
    }
  }
  for (dtype t : {dtype::fp8_e4m3, dtype::fp32, dtype::fp16})
    check_round<layout::page_first>(kv_shape::mha(3, 2, 64, t), 16, planes_form::single, layer_range::all(), c,
                                    gpu::options{f.stream});
}

BOOST_AUTO_TEST_CASE(narrow_vector_fallbacks) {
  stream_fixture f;
  gpu::copier c;
  // Head bytes 67 (1-byte path), 132 (4-byte), 280 (8-byte), and 16-byte rows on a base 8 bytes off.
  check_round<layout::page_first>(kv_shape::mha(3, 3, 67, dtype::fp8_e4m3), 16, planes_form::single,
                                  layer_range::all(), c, gpu::options{f.stream});
  check_round<layout::page_head_first>(kv_shape::mha(3, 3, 67, dtype::fp8_e4m3), 4, planes_form::per_plane,
                                       layer_range::one(1), c, gpu::options{f.stream});
  check_round<layout::page_first>(kv_shape::mha(2, 2, 66, dtype::fp16), 16, planes_form::per_layer,
                                  layer_range::all(), c, gpu::options{f.stream});
  check_round<layout::page_first>(kv_shape::mha(2, 2, 70, dtype::fp32), 1, planes_form::single, layer_range::all(),
                                  c, gpu::options{f.stream});
  check_round<layout::page_first>(shapes::llama3_8b(), 16, planes_form::single, layer_range::all(), c,
                                  gpu::options{f.stream}, 8);
  check_round<layout::page_first>(shapes::llama3_8b(), 1, planes_form::single, layer_range::one(3), c,
                                  gpu::options{f.stream}, 2);
  // Padded pages (a pool's slot alignment): 4 KiB keeps 16-byte vectors, 8 bytes forces 8-byte ones.
  for (std::size_t pad : {4096, 8}) {
    check_round<layout::page_first>(shapes::llama3_8b(), 16, planes_form::per_layer, layer_range::all(), c,
                                    gpu::options{f.stream}, 0, pad);
    gpu::options o{f.stream};
    o.how = gpu::strategy::bulk;
    check_round<layout::page_head_first>(kv_shape::mla(3, 576, dtype::bf16), 4, planes_form::single,
                                         layer_range::all(), c, o, 0, pad);
  }
}

BOOST_AUTO_TEST_CASE(per_layer_events_complete_in_order) {
  stream_fixture f;
  gpu::copier c;
  const kv_shape s = kv_shape::mha(4, 8, 128, dtype::bf16);
  std::vector<cudaEvent_t> events(s.layers());
  for (auto& e : events) CUDA_OK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  gpu::options o{f.stream};
  o.layer_events = events;
  check_round<layout::page_first>(s, 16, planes_form::single, layer_range::all(), c, o);
  for (auto e : events) BOOST_TEST(cudaEventQuery(e) == cudaSuccess);
  o.how = gpu::strategy::bulk;
  check_round<layout::page_first>(s, 64, planes_form::per_plane, layer_range::all(), c, o);
  for (auto e : events) BOOST_TEST(cudaEventQuery(e) == cudaSuccess);
  o.how = gpu::strategy::kernel;
  // A wrong number of events is an error value, not a crash.
  o.layer_events = std::span<const cudaEvent_t>(events).first(2);
  paged_buffer<layout::page_first> host(s, 2, 16);
  pinned ph(host.mem.size());
  engine_buffer e(s, 32, planes_form::single);
  device_engine dev(e);
  const page_pair pairs[] = {{0, 0}};
  BOOST_TEST((c.load(paged_view(ph.p, s, 2, page_size<>(16)), dev.view(), pairs, layer_range::all(), o).code() ==
              errc::invalid_argument));
  for (auto ev : events) cudaEventDestroy(ev);
}

BOOST_AUTO_TEST_CASE(pageable_host_memory_is_refused_not_faulted) {
  stream_fixture f;
  gpu::copier c;
  const kv_shape s = kv_shape::mha(2, 2, 64, dtype::bf16);
  std::vector<std::byte> pageable(2 * s.bytes_per_page(16));
  engine_buffer e(s, 32, planes_form::single);
  device_engine dev(e);
  const page_pair pairs[] = {{0, 1}};
  const auto host = paged_view(pageable.data(), s, 2, page_size<>(16));
  BOOST_TEST((c.load(host, dev.view(), pairs, layer_range::all(), gpu::options{f.stream}).code() ==
              errc::invalid_argument));
  BOOST_TEST((c.backup(dev.view(), host, pairs, layer_range::all(), gpu::options{f.stream}).code() ==
              errc::invalid_argument));
  // The copy engines take pageable memory: the baseline strategies still run.
  gpu::options o{f.stream};
  o.how = gpu::strategy::memcpy_per_run;
  BOOST_TEST(c.load(host, dev.view(), pairs, layer_range::all(), o).has_value());
  CUDA_OK(cudaStreamSynchronize(f.stream));
  // A moved copier keeps working.
  gpu::copier moved(std::move(c));
  pinned ph(pageable.size());
  BOOST_TEST(moved.load(paged_view(ph.p, s, 2, page_size<>(16)), dev.view(), pairs, layer_range::all(),
                        gpu::options{f.stream})
                 .has_value());
  CUDA_OK(cudaStreamSynchronize(f.stream));
}

// The staged path (copy engines + staging ring + relayout kernel) and the mixed one against the CPU
// path: a ring of two 1 MiB slots, so batches span several chunks and layer groups and the ring
// wraps; page sizes 1..256, one layer or all, plane tables, per-layer events, padded pages.
BOOST_AUTO_TEST_CASE(staged_and_mixed_match_cpu_path) {
  stream_fixture f;
  gpu::copier c(staging_config{2, std::size_t{1} << 20});
  const struct {
    kv_shape s;
    planes_form form;
  } cases[] = {{shapes::llama3_8b(), planes_form::single},
               {kv_shape::mla(4, 576, dtype::bf16), planes_form::per_layer},
               {kv_shape::mha(4, 4, 80, dtype::fp16), planes_form::per_plane},
               {kv_shape::mha(3, 3, 67, dtype::fp8_e4m3), planes_form::single}};  // 1-byte vectors
  std::uint64_t staged = 0, mixed = 0;
  for (gpu::strategy how : {gpu::strategy::staged, gpu::strategy::mixed})
    for (const auto& cs : cases)
      for (std::size_t P : {1, 16, 64, 256})
        for (layer_range layers : {layer_range::all(), layer_range::one(cs.s.layers() / 2)}) {
          gpu::options o{f.stream};
          o.how = how;
          check_round<layout::page_first>(cs.s, P, cs.form, layers, c, o);
          (how == gpu::strategy::staged ? staged : mixed) += 2;
        }
  // Per-layer events (layer groups), padded pages, a misaligned host base.
  std::vector<cudaEvent_t> events(shapes::llama3_8b().layers());
  for (auto& e : events) CUDA_OK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  gpu::options o{f.stream};
  o.how = gpu::strategy::staged;
  o.layer_events = events;
  check_round<layout::page_first>(shapes::llama3_8b(), 16, planes_form::per_layer, layer_range::all(), c, o, 0, 4096);
  for (auto e : events) BOOST_TEST(cudaEventQuery(e) == cudaSuccess);
  o.layer_events = std::span<const cudaEvent_t>(events).first(3);
  check_round<layout::page_first>(shapes::llama3_8b(), 1, planes_form::per_plane, layer_range{4, 3}, c, o, 8);
  staged += 4;
  for (auto e : events) cudaEventDestroy(e);
  BOOST_TEST(c.stats().of(copy_path::staged) == staged);
  BOOST_TEST(c.stats().of(copy_path::mixed) == mixed);
  BOOST_TEST(c.stats().planned == 0u);
  // page_head_first hosts have no contiguous layer groups: forced staged is refused, automatic runs the kernel.
  o = gpu::options{f.stream};
  o.how = gpu::strategy::staged;
  paged_buffer<layout::page_head_first> host(shapes::llama3_8b(), 2, 16);
  pinned ph(host.mem.size());
  engine_buffer e(shapes::llama3_8b(), 32, planes_form::single);
  device_engine dev(e);
  const page_pair pairs[] = {{0, 1}};
  const auto hview = paged_view<layout::page_head_first>(ph.p, shapes::llama3_8b(), 2, page_size<>(16));
  BOOST_TEST((c.load(hview, dev.view(), pairs, layer_range::all(), o).code() == errc::unsupported));
  o.how = gpu::strategy::automatic;
  check_round<layout::page_head_first>(kv_shape::mha(6, 8, 128, dtype::bf16), 16, planes_form::single,
                                       layer_range::all(), c, o);
  BOOST_TEST((c.stats().last == copy_path::kernel));
  BOOST_TEST(c.stats().planned == 2u);
}

// A whole-pool batch the way an engine loads a prefix: consecutive host pages (their runs merge into
// one copy per chunk), shuffled device pages, every page size; the planner's choice on each.
BOOST_AUTO_TEST_CASE(staged_batches_of_adjacent_pages_and_the_planner) {
  stream_fixture f;
  gpu::copier c(staging_config{3, std::size_t{2} << 20});
  const kv_shape s = kv_shape::mha(8, 8, 128, dtype::bf16);  // 32 KiB per token
  const std::size_t tokens = 512;                             // 16 MiB
  std::vector<cudaEvent_t> events(s.layers());
  for (auto& e : events) CUDA_OK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  for (std::size_t P : {1, 4, 16, 64, 256})
    for (gpu::strategy how : {gpu::strategy::staged, gpu::strategy::mixed, gpu::strategy::automatic})
      for (bool per_layer : {false, true}) {
        BOOST_TEST_CONTEXT("P " << P << " how " << int(how) << " per layer " << per_layer) {
          const std::size_t pages = tokens / P;
          paged_buffer<layout::page_first> host(s, pages, P);
          fill_random(host.mem, rng());
          pinned ph(host.mem.size());
          std::memcpy(ph.p, host.mem.data(), host.mem.size());
          const auto hview = paged_view(ph.p, s, pages, page_size<>(P));
          std::vector<page_pair> pairs(pages);
          std::vector<std::uint32_t> perm(pages);
          std::iota(perm.begin(), perm.end(), 0u);
          std::shuffle(perm.begin(), perm.end(), rng());
          for (std::size_t i = 0; i < pages; ++i) pairs[i] = {static_cast<std::uint32_t>(i), perm[i]};
          engine_buffer want(s, tokens, planes_form::single), scratch(s, tokens, planes_form::single);
          device_engine dev(scratch);
          dev.poison_all();
          gpu::options o{f.stream};
          o.how = how;
          o.compute = compute_hint::idle;
          if (per_layer) o.layer_events = events;
          BOOST_TEST_REQUIRE(cpu::load(host.view(), want.view(), pairs).has_value());
          const result<void> r = c.load(hview, dev.view(), pairs, layer_range::all(), o);
          BOOST_TEST_REQUIRE(r.has_value(), "load: " << r.err().message());
          CUDA_OK(cudaStreamSynchronize(f.stream));
          BOOST_TEST_REQUIRE(dev.equals(want), "load differs from the CPU path");
          const copy_path loaded = c.stats().last;
          // Backup of the same pages back to a poisoned host buffer, pairs reversed.
          std::vector<page_pair> back(pages);
          for (std::size_t i = 0; i < pages; ++i) back[i] = {perm[i], static_cast<std::uint32_t>(i)};
          std::memset(ph.p, int(poison), host.mem.size());
          const result<void> b = c.backup(dev.view(), hview, back, layer_range::all(), o);
          BOOST_TEST_REQUIRE(b.has_value(), "backup: " << b.err().message());
          CUDA_OK(cudaStreamSynchronize(f.stream));
          BOOST_TEST_REQUIRE(std::memcmp(ph.p, host.mem.data(), host.mem.size()) == 0, "backup differs");
          const copy_path backed = c.stats().last;
          if (per_layer)
            for (auto e : events) BOOST_TEST(cudaEventQuery(e) == cudaSuccess);
          if (how == gpu::strategy::automatic) {  // 16 MiB batches of merged runs, compute idle
            batch_facts bf;
            bf.bytes = tokens * s.bytes_per_token();
            bf.per_layer = per_layer;
            bf.compute = compute_hint::idle;
            bf.dma_run = per_layer ? transfer::detail::staged_run_bytes(*plan_copy(hview, dev.view(), pairs, layer_range::all(), P),
                                                             true, c.staging().slot_bytes)
                                   : c.staging().slot_bytes;
            BOOST_TEST((loaded == plan(bf, c.planner())));
            bf.backup = true;
            BOOST_TEST((backed == plan(bf, c.planner())));
          }
        }
      }
  for (auto e : events) cudaEventDestroy(e);
}
