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

#include <algorithm>
#include <cmath>
#include <cstring>
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

// prefill_batch against separate prefill() calls in bf16 batch-invariant mode: chunks of different
// sequences (lengths not multiples of 128 or of the page, one over a cached page-aligned prefix, some
// spanning two or three 128-row query tiles) on two backends over identically initialised pools;
// every chunk's logits and every byte of the pools must be equal. `lengths[i]`, `starts[i]`: chunk i.
void batch_matches_separate(const kvtier_engine::cuda::cuda_options& co, const std::vector<std::size_t>& starts,
                            const std::vector<std::size_t>& lengths) {
  model_config m{"synthetic-h128", 512, 1024, 2, 4, 2, 128, 1000, 1024, rope_style::rotate_half, 500000.0f, false, 1e-5f};
  const auto w = model_weights::synthetic(m, 11);
  const std::size_t P = 16, C = lengths.size();
  std::size_t slots = 0;
  for (std::size_t i = 0; i < C; ++i) slots += (starts[i] + lengths[i] + P - 1) / P;
  slots = (slots + 63) / 64 * 64;  // a multiple of 64: i * 7 % slots is a permutation
  const std::size_t bytes = m.kv_shape(kvtier::dtype::bf16).bytes_per_page(P) * slots;
  kvtier_engine::cuda::device_buffer<std::byte> alone_mem(bytes), batch_mem(bytes);
  kvtier_engine::cuda::check(cudaMemset(alone_mem.data(), 0, bytes), "memset");
  kvtier_engine::cuda::check(cudaMemset(batch_mem.data(), 0, bytes), "memset");
  const backend_options bo{precision::bf16, 0, 0};
  kvtier_engine::cuda::cuda_backend alone(m, w, make_pool(alone_mem.data(), m, precision::bf16, slots, P), bo, co);
  kvtier_engine::cuda::cuda_backend batched(m, w, make_pool(batch_mem.data(), m, precision::bf16, slots, P), bo, co);
  BOOST_TEST_REQUIRE(batched.batch_invariant());
  std::mt19937 rng(17);
  std::vector<std::vector<kvtier::token_id>> tokens(C);
  std::vector<std::vector<kvtier::device_slot>> tables(C);
  std::vector<prefill_chunk> chunks;
  std::vector<float> want(C * m.vocab), got(C * m.vocab, -1.0f), prefix_logits(m.vocab);
  for (std::size_t i = 0, page = 0; i < C; ++i) {  // scattered slots, disjoint between sequences
    tokens[i].resize(starts[i] + lengths[i]);
    for (auto& t : tokens[i]) t = kvtier::token_id(std::int32_t(3 + rng() % (m.vocab - 3)));
    for (std::size_t p = 0; p < (starts[i] + lengths[i] + P - 1) / P; ++p, ++page)
      tables[i].push_back(kvtier::device_slot(std::uint32_t(page * 7 % slots)));
    const std::span<const kvtier::token_id> t(tokens[i]);
    if (starts[i] > 0)  // the cached prefix, in both pools (page-aligned starts)
      for (auto* b : {&alone, &batched})
        BOOST_TEST_REQUIRE(b->prefill(prefill_chunk{t.first(starts[i]), 0, tables[i]}, prefix_logits, {}).has_value());
    chunks.push_back(prefill_chunk{t.subspan(starts[i]), starts[i], tables[i]});
  }
  for (std::size_t i = 0; i < C; ++i)
    BOOST_TEST_REQUIRE(alone.prefill(chunks[i], std::span(want).subspan(i * m.vocab, m.vocab), {}).has_value());
  std::vector<std::size_t> seen;
  BOOST_TEST_REQUIRE(batched.prefill_batch(chunks, got, [&](std::size_t l) { seen.push_back(l); }).has_value());
  std::size_t differing = 0;
  for (std::size_t i = 0; i < want.size(); ++i) differing += std::memcmp(&want[i], &got[i], sizeof(float)) != 0;
  BOOST_TEST(differing == 0u, differing << " of " << want.size() << " logits differ");
  const auto a = alone_mem.download(), b = batch_mem.download();
  BOOST_TEST((std::memcmp(a.data(), b.data(), bytes) == 0), "the pools' K/V differ");
  BOOST_TEST_REQUIRE(seen.size() >= m.layers);  // each layer announced before it is read
  for (std::size_t l = 0; l < m.layers; ++l) BOOST_TEST(seen[l] == l);
  BOOST_TEST(rel_l2(got, want) == 0.0);
  for (std::size_t i = 0; i < C; ++i)  // a model's logits (finite, not all equal)
    BOOST_TEST(*std::max_element(got.begin() + std::ptrdiff_t(i * m.vocab), got.begin() + std::ptrdiff_t((i + 1) * m.vocab)) >
               *std::min_element(got.begin() + std::ptrdiff_t(i * m.vocab), got.begin() + std::ptrdiff_t((i + 1) * m.vocab)));
  // Bad input: nothing computed, invalid_argument.
  const auto code = [&](std::span<const prefill_chunk> c, std::span<float> l) { return batched.prefill_batch(c, l, {}).code(); };
  BOOST_TEST((code({}, got) == kvtier::errc::invalid_argument));
  BOOST_TEST((code(chunks, std::span(got).first(got.size() - 1)) == kvtier::errc::invalid_argument));
  std::vector<prefill_chunk> bad = chunks;
  bad.back().block_table = bad.back().block_table.first(0);
  BOOST_TEST((code(bad, got) == kvtier::errc::invalid_argument));
  bad.back() = prefill_chunk{chunks.back().tokens, m.seq_len, chunks.back().block_table};
  BOOST_TEST((code(bad, got) == kvtier::errc::invalid_argument));
  BOOST_TEST((std::memcmp(b.data(), batch_mem.download().data(), bytes) == 0), "a rejected batch wrote K/V");
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

// prefill_batch of chunks of different sequences is prefill() of each alone, bit for bit (bf16,
// batch-invariant): 3 chunks in one forward (45 rows from 0; 203 rows over a 160-token cached prefix,
// two query tiles; 131 rows, a tile of 3), with the default options (no key splits at 1,024
// positions) and with 256-key splits (the chunks need 1 or 2: the others' rows go through the merge).
BOOST_AUTO_TEST_CASE(prefill_batch_is_separate_prefills_bit_for_bit) {
  kvtier_engine::cuda::cuda_options co;
  batch_matches_separate(co, {0, 160, 0}, {45, 203, 131});
  co.prefill_split_keys = 256;
  batch_matches_separate(co, {0, 160, 0}, {45, 203, 131});
}

// Rows past max_chunk_rows (256): greedy groups {45, 203}, {131, 70 over 32 cached}, then 300 rows
// alone in prefill()'s 256 + 44 pieces; 256-key splits; max_batch 3 keeps the groups to 3 chunks.
BOOST_AUTO_TEST_CASE(prefill_batch_groups_rows_past_max_chunk_rows) {
  kvtier_engine::cuda::cuda_options co;
  co.max_chunk_rows = 256;
  co.max_batch = 3;
  co.prefill_split_keys = 256;
  batch_matches_separate(co, {0, 160, 0, 32, 0}, {45, 203, 131, 70, 300});
  // max_batch 2 with short chunks: the chunk count splits the groups ({20, 33}, {17, 40}, {9}).
  co.max_batch = 2;
  batch_matches_separate(co, {0, 16, 0, 48, 0}, {20, 33, 17, 40, 9});
}
