// Serving on the GPU (issue 12's token target): the same long-document requests through the CUDA
// backend in bf16 with no prefix caching, device-only caching and kvtier device + host give every
// request the same greedy tokens. The modes run different batches (decode batches of other sizes,
// prefill chunks that start after a cached prefix instead of at 0), so this holds only because the
// backend is batch-invariant (cuda_options::batch_invariant: one checked cuBLASLt algorithm per
// GEMM shape, attention key splits at fixed absolute positions). Small split sizes make every
// prefill and most decodes take the split path. Synthetic weights (dim 512, 4 heads of 128, GQA 2).
#include <boost/test/unit_test.hpp>

#include <map>
#include <memory>
#include <vector>

#include "kvtier/cache/gpu_builder.cuh"
#include "kvtier_engine/cuda/cuda_backend.cuh"
#include "kvtier_engine/engine.hpp"
#include "kvtier_engine/serving/modes.hpp"
#include "kvtier_engine/serving/server.hpp"
#include "kvtier_engine/serving/workloads.hpp"

using namespace kvtier_engine;
using namespace kvtier_engine::serving;

namespace {

using pages = kvtier::page_size<16>;
using device_only_cache =
    kvtier::gpu_cache_builder<pages, kvtier::slow_tiers<>, kvtier::write_policies<no_backup, kvtier::auto_choice>>::cache_type;
using host_cache = kvtier::gpu_cache_builder<pages>::cache_type;

// The CUDA backend with small fixed split sizes (every row of 256+ keys is split).
struct small_split_backend : kvtier_engine::cuda::cuda_backend {
  small_split_backend(const model_config& m, const model_weights& w, const kv_pool& pool, backend_options o)
      : cuda_backend(m, w, pool, o, options()) {}
  static kvtier_engine::cuda::cuda_options options() {
    kvtier_engine::cuda::cuda_options c;
    c.max_chunk_rows = 256;
    c.prefill_split_keys = 256;
    c.decode_split_keys = 128;
    return c;
  }
};

const model_config& model() {
  static const model_config m{"synthetic-h128", 512, 1024, 2, 4, 2, 128, 1000, 2048, rope_style::rotate_half, 500000.0f, false, 1e-5f};
  return m;
}
const model_weights& weights() {
  static const model_weights w = model_weights::synthetic(model(), 23, /*materialize=*/false);
  return w;
}

template <class Cache>
run_result serve(const workload& wl, bool caching, std::size_t host_pages, bool batch_prefill = true) {
  const auto cfg = engine<small_split_backend, Cache>::cache_config(weights(), precision::bf16, 160, host_pages);
  const server_options so{.token_budget = 320, .chunk_tokens = 128, .max_batch = 4, .caching = caching, .batch_prefill = batch_prefill};
  auto srv = std::make_unique<server<small_split_backend, Cache, fcfs>>(model(), weights(), cfg, backend_options{precision::bf16, 0, 0},
                                                                         so, fcfs{});
  BOOST_TEST_REQUIRE(srv->backend().batch_invariant(), "no batch-invariant GEMM algorithm was found on this device");
  auto r = srv->run(wl);
  BOOST_TEST_REQUIRE(r.has_value(), "the run failed: " << (r ? "" : kvtier::to_string(r.code())));
  BOOST_TEST(srv->cache().audit());
  return std::move(*r);
}

}  // namespace

BOOST_AUTO_TEST_CASE(every_mode_serves_the_same_bf16_tokens) {
  // 6 documents of 300-900 tokens (~220 pages) over a 160-page device pool: device-only evicts
  // and recomputes, device + host loads back; 24 questions arriving faster than they are served.
  const longdoc_options l{.documents = 6, .questions = 4, .doc_min = 300, .doc_max = 900, .question_tokens = 24,
                          .answer_tokens = 24, .requests = 24, .rate = 200, .zipf = 0.5, .seed = 5};
  const workload w = longdoc_workload(l, model().vocab);
  std::map<cache_mode, run_result> runs;
  runs[cache_mode::none] = serve<device_only_cache>(w, false, 1);
  runs[cache_mode::device] = serve<device_only_cache>(w, true, 1);
  runs[cache_mode::host] = serve<host_cache>(w, true, 512);
  std::size_t reused = 0, loaded = 0;
  for (const auto& rec : runs[cache_mode::host].records) reused += rec.reused_tokens, loaded += rec.loaded_pages;
  BOOST_TEST(reused > 0u);  // the modes really differ: prefixes were reused and loaded from host
  BOOST_TEST(loaded > 0u);
  for (const auto& [mode, r] : runs)
    for (std::size_t i = 0; i < w.requests.size(); ++i) {
      BOOST_TEST(r.records[i].output.size() == l.answer_tokens);
      BOOST_TEST(r.records[i].output == runs[cache_mode::none].records[i].output, "request " << i << " differs in mode " << to_string(mode));
    }
}

// A step's prefill chunks in one prefill_batch call (the default; flash_prefill_varlen, groups of at
// most 256 rows) or one prefill() call per chunk: the same greedy tokens, over loaded prefixes too.
BOOST_AUTO_TEST_CASE(batched_prefill_serves_the_same_bf16_tokens) {
  const longdoc_options l{.documents = 6, .questions = 4, .doc_min = 300, .doc_max = 900, .question_tokens = 24,
                          .answer_tokens = 8, .requests = 24, .rate = 200, .zipf = 0.5, .seed = 7};
  const workload w = longdoc_workload(l, model().vocab);
  const run_result per_chunk = serve<host_cache>(w, true, 512, false), batched = serve<host_cache>(w, true, 512, true);
  std::size_t multi = 0;
  for (const auto& s : batched.samples.prefill) multi += s.chunks > 1;
  BOOST_TEST(multi > 0u);  // calls of several chunks ran
  BOOST_TEST(batched.samples.batched_prefill);
  for (std::size_t i = 0; i < w.requests.size(); ++i) {
    BOOST_TEST(batched.records[i].output.size() == l.answer_tokens);
    BOOST_TEST(batched.records[i].output == per_chunk.records[i].output, "request " << i << " differs with batched prefill");
  }
}
