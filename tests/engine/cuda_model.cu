// The CUDA backend as a model: stories260K's reference text in fp32 mode (greedy, 256 steps, BOS,
// no prompt, as run.c), where bf16's greedy text departs from it, CPU vs CUDA logits on stories260K
// and on a synthetic shape whose heads (128) take the flash prefill path, and reuse exactness: a
// multi-turn conversation through kvtier's GPU cache (device pool, pinned host tier, layer-by-layer
// loads) generates the same tokens with caching on and off.
//
// Logit tolerances (relative L2 error against the CPU fp32 backend):
//  - fp32: the two backends differ only in summation order (cuBLAS's split of each dot product,
//    the attention kernels' online softmax): ~1e-7 per operation, a few 1e-6 through the layers;
//    bound 1e-4.
//  - bf16: weights, activations into each GEMM, K, V and the attention's P are rounded to 8
//    significant bits (relative error <= 2^-9 ~ 2e-3 each). About six roundings per layer, independent,
//    add in quadrature: sqrt(6 * 5) * 2e-3 ~ 1.1% for stories260K's 5 layers; bound 3e-2.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "engine/stories260k_model.hpp"
#include "kvtier/cache.hpp"
#include "kvtier/cache/gpu_builder.cuh"
#include "kvtier/testing/relative_error.hpp"
#include "kvtier_engine/conversation.hpp"
#include "kvtier_engine/cpu/cpu_backend.hpp"
#include "kvtier_engine/cuda/cuda_backend.cuh"
#include "kvtier_engine/engine.hpp"
#include "kvtier_engine/model_files.hpp"
#include "kvtier_engine/tokenizer.hpp"

using namespace kvtier_engine;
using kvtier::testing::rel_l2;
using namespace kvtier_test::engine;

namespace {
using gpu_cache = kvtier::gpu_cache_builder<kvtier::page_size<16>>::cache_type;
using cuda_engine = engine<kvtier_engine::cuda::cuda_backend, gpu_cache>;

std::vector<kvtier::token_id> greedy_256(const model_weights& w, precision p) {
  cuda_engine eng(w, cuda_engine::cache_config(w, p, 40, 40), backend_options{p, 0, 0}, 256);
  return run_c_greedy_256(eng);
}

// A layer-first pool (layer, kv, slot * P + t, kv_head, head_size) in `mem` (host or device).
kv_pool make_pool(std::byte* mem, const model_config& m, precision p, std::size_t slots, std::size_t P) {
  return kv_pool{kvtier::transfer::layer_first_view(mem, m.kv_shape(kv_dtype(p)), slots * P), P, slots};
}


// CPU fp32 vs CUDA at precision p: a prompt prefilled (on the GPU in two chunks, the second after a
// page-aligned prefix already in the pool), then three decode steps; every step's logits compared.
void compare_logits(const model_weights& w, precision p, std::size_t prompt_len, std::size_t split, double bound) {
  const model_config& m = w.config();
  const std::size_t P = 16, slots = (prompt_len + 3) / P + 2;
  std::vector<std::byte> host_mem(m.kv_shape(kvtier::dtype::fp32).bytes_per_page(P) * slots);
  cpu_backend cpu(m, w, make_pool(host_mem.data(), m, precision::fp32, slots, P), backend_options{precision::fp32, 0, 0});
  kvtier_engine::cuda::device_buffer<std::byte> dev_mem(m.kv_shape(kv_dtype(p)).bytes_per_page(P) * slots);
  kvtier_engine::cuda::cuda_backend gpu(m, w, make_pool(dev_mem.data(), m, p, slots, P), backend_options{p, 0, 0});
  std::mt19937 rng(5);
  std::vector<kvtier::token_id> tokens(prompt_len + 3);
  for (auto& t : tokens) t = kvtier::token_id(std::int32_t(3 + rng() % (m.vocab - 3)));
  std::vector<kvtier::device_slot> table(slots);
  for (std::size_t i = 0; i < slots; ++i) table[i] = kvtier::device_slot(std::uint32_t((i * 7) % slots));  // scattered
  std::vector<float> want(m.vocab), got(m.vocab);
  const std::span<const kvtier::token_id> prompt(tokens.data(), prompt_len);
  BOOST_TEST_REQUIRE(cpu.prefill(prefill_chunk{prompt, 0, table}, want, {}).has_value());
  BOOST_TEST_REQUIRE(gpu.prefill(prefill_chunk{prompt.first(split), 0, table}, got, {}).has_value());
  BOOST_TEST_REQUIRE(gpu.prefill(prefill_chunk{prompt.subspan(split), split, table}, got, {}).has_value());
  double worst = rel_l2(got, want);
  for (std::size_t step = 0; step < 3; ++step) {
    const decode_entry d{tokens[prompt_len + step], prompt_len + step, table};
    BOOST_TEST_REQUIRE(cpu.decode(std::span(&d, 1), want).has_value());
    BOOST_TEST_REQUIRE(gpu.decode(std::span(&d, 1), got).has_value());
    worst = std::max(worst, rel_l2(got, want));
  }
  BOOST_TEST_MESSAGE(m.name << " " << to_string(p) << ": CPU vs CUDA logits, worst relative L2 error " << worst
                            << " (bound " << bound << ")");
  BOOST_TEST(worst < bound);
}

// A multi-turn conversation; returns every turn's tokens. With caching, device_pages is small enough
// that earlier turns' pages move to the pinned host tier and come back through layer-by-layer loads.
std::vector<std::vector<kvtier::token_id>> chat(const model_weights& w, precision p, bool caching,
                                                std::uint64_t& host_hits, std::uint64_t& device_hits) {
  cuda_engine eng(w, cuda_engine::cache_config(w, p, 24, 96), backend_options{p, 0, 0}, 32);
  conversation c{kvtier::namespace_id{7}, {}};
  std::mt19937 rng(9);
  std::vector<std::vector<kvtier::token_id>> turns;
  for (int turn = 0; turn < 4; ++turn) {
    std::vector<kvtier::token_id> user(20 + 7 * turn);
    for (auto& t : user) t = kvtier::token_id(std::int32_t(3 + rng() % (w.config().vocab - 3)));
    generate_options g;
    g.max_new_tokens = 40;
    g.caching = caching;
    g.stop_at_bos = false;
    const auto prompt = c.ask(user);
    served_from from;
    const auto r = generate_traced(eng, c.ns, prompt, g, from);
    BOOST_TEST_REQUIRE(r.has_value());
    host_hits += from.host;
    device_hits += from.device;
    c.answer(r->tokens);
    turns.push_back(r->tokens);
    if (caching && turn == 1) {  // other users push this conversation's pages down to the host tier
      BOOST_TEST_REQUIRE(other_traffic(eng, kvtier::namespace_id{8}, 24, 64, 3).has_value());
    }
    eng.cache().drain();
  }
  return turns;
}
}  // namespace

BOOST_AUTO_TEST_CASE(fp32_mode_prints_the_reference_text) {
  const stories s;
  BOOST_TEST(s.tok.decode(greedy_256(s.w, precision::fp32), bos_token) == reference);
}

BOOST_AUTO_TEST_CASE(bf16_mode_reports_where_its_greedy_text_departs) {
  const stories s;
  const auto f = greedy_256(s.w, precision::fp32), b = greedy_256(s.w, precision::bf16);
  BOOST_TEST_REQUIRE(b.size() == f.size());
  std::size_t same = 0;
  while (same < f.size() && f[same] == b[same]) ++same;
  if (same == f.size()) {
    BOOST_TEST_MESSAGE("bf16: greedy text identical to the fp32 reference for all " << f.size() << " tokens");
  } else {
    BOOST_TEST_MESSAGE("bf16: greedy text departs at generated token " << same << " of " << f.size() << ", after \""
                                                                      << s.tok.decode(std::span(f).first(same), bos_token)
                                                                      << "\"; bf16 continues \""
                                                                      << s.tok.decode(std::span(b).subspan(same), f[same])
                                                                      << "\"");
  }
  // The first sentences are far from any near-tie of the logits: bf16 must agree there.
  BOOST_TEST(same >= 10u);
}

BOOST_AUTO_TEST_CASE(cpu_and_cuda_logits_agree) {
  const stories s;
  compare_logits(s.w, precision::fp32, 150, 64, 1e-4);
  compare_logits(s.w, precision::bf16, 150, 64, 3e-2);
  // Synthetic, head_size 128 (bf16 prefill through flash_prefill), GQA 4/2, rotate-half RoPE, untied.
  model_config m{"synthetic-h128", 512, 1024, 2, 4, 2, 128, 1000, 1024, rope_style::rotate_half, 500000.0f, false, 1e-5f};
  const auto w = model_weights::synthetic(m, 11);
  compare_logits(w, precision::fp32, 300, 160, 1e-4);
  compare_logits(w, precision::bf16, 300, 160, 3e-2);
}

BOOST_AUTO_TEST_CASE(reuse_is_exact_through_the_gpu_cache) {
  const stories s;
  for (const precision p : {precision::fp32, precision::bf16}) {
    std::uint64_t host_on = 0, dev_on = 0, host_off = 0, dev_off = 0;
    const auto on = chat(s.w, p, true, host_on, dev_on);
    const auto off = chat(s.w, p, false, host_off, dev_off);
    BOOST_TEST_MESSAGE(to_string(p) << ": caching on reused " << dev_on << " tokens from the device, " << host_on
                                    << " from the host tier");
    BOOST_TEST(dev_on > 0u);
    BOOST_TEST(host_on > 0u);
    BOOST_TEST(host_off + dev_off == 0u);
    BOOST_TEST_REQUIRE(on.size() == off.size());
    for (std::size_t t = 0; t < on.size(); ++t) BOOST_TEST((on[t] == off[t]), to_string(p) << " turn " << t);
  }
}
