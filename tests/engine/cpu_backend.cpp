// The CPU reference backend: a position's K, V and logits do not depend on how positions were split
// into prefill chunks, decode steps or decode batches (bit for bit: what makes reuse exact); the
// rotate-half RoPE convention computes what adjacent pairs compute once wq/wk rows are permuted as
// Hugging Face's conversion permutes them; bad block tables and tokens are errors, not crashes.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "kvtier/transfer/views.hpp"
#include "kvtier_engine/cpu/cpu_backend.hpp"
#include "kvtier_engine/model_files.hpp"

using namespace kvtier_engine;
using kvtier::device_slot;
using kvtier::token_id;

namespace {

constexpr std::size_t P = 16;

// A KV pool of `slots` pages in plain host memory, laid out as kvtier's device pool.
struct pool_memory {
  pool_memory(const model_config& m, std::size_t slots)
      : shape(m.kv_shape(kvtier::dtype::fp32)), bytes(shape.bytes_per_page(P) * slots, std::byte{0x7f}),
        pool{kvtier::transfer::layer_first_view(bytes.data(), shape, slots * P), P, slots} {}
  kvtier::kv_shape shape;
  std::vector<std::byte> bytes;
  kv_pool pool;
  // (layer, kv, position) row of a sequence.
  const std::byte* row(std::size_t l, std::size_t kv, std::span<const device_slot> table, std::size_t pos) const {
    return pool.view.row(l, kv, table[pos / P].value() * P + pos % P, 0);
  }
};

model_config small_shape() {
  // GQA 4/2, rotate-half, theta 500,000, untied classifier: the other paths than stories260K's.
  return {"small", 64, 96, 2, 4, 2, 16, 200, 256, rope_style::rotate_half, 500000.0f, false, 1e-5f};
}

std::vector<token_id> tokens(std::size_t n, std::size_t vocab, std::uint32_t seed) {
  std::vector<token_id> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = token_id{std::int32_t(3 + (i * 2654435761u + seed) % (vocab - 3))};
  return t;
}

std::vector<device_slot> slots(std::size_t first, std::size_t n) {
  std::vector<device_slot> s(n);
  for (std::size_t i = 0; i < n; ++i) s[i] = device_slot{std::uint32_t(first + i)};
  return s;
}

}  // namespace

BOOST_AUTO_TEST_CASE(chunks_decode_steps_and_batches_give_identical_bits) {
  const model_config m = small_shape();
  const model_weights w = model_weights::synthetic(m, 11);
  pool_memory mem(m, 32);
  cpu_backend b(m, w, mem.pool, backend_options{precision::fp32, 2});
  const std::size_t n = 100;
  const auto t = tokens(n, m.vocab, 5);
  const auto one = slots(0, 7), split = slots(16, 7);  // pages in different slots, same positions

  // A: one prefill chunk of 100 tokens.
  std::vector<float> a(m.vocab), c(m.vocab);
  BOOST_TEST_REQUIRE(b.prefill({t, 0, one}, a, {}).has_value());
  // B: chunks of 16 and 48 tokens, then decode steps for the rest.
  BOOST_TEST_REQUIRE(b.prefill({std::span(t).first(16), 0, std::span(split).first(1)}, c, {}).has_value());
  BOOST_TEST_REQUIRE(b.prefill({std::span(t).subspan(16, 48), 16, std::span(split).first(4)}, c, {}).has_value());
  for (std::size_t p = 64; p < n; ++p) {
    const decode_entry d{t[p], p, split};
    BOOST_TEST_REQUIRE(b.decode(std::span(&d, 1), c).has_value());
  }
  BOOST_TEST(std::memcmp(a.data(), c.data(), a.size() * sizeof(float)) == 0);
  std::size_t differing_rows = 0;
  for (std::size_t l = 0; l < m.layers; ++l)
    for (std::size_t kv = 0; kv < 2; ++kv)
      for (std::size_t p = 0; p < n; ++p)
        differing_rows += std::memcmp(mem.row(l, kv, one, p), mem.row(l, kv, split, p), m.kv_dim() * sizeof(float)) != 0;
  BOOST_TEST(differing_rows == 0u);

  // A decode batch of two sequences (the 101st token of each) gives each one's logits alone.
  const auto u = tokens(n + 1, m.vocab, 9);
  std::vector<float> alone(m.vocab), batched(2 * m.vocab);
  const decode_entry next_a{u[n], n, one}, next_b{u[n], n, split};
  BOOST_TEST_REQUIRE(b.decode(std::span(&next_a, 1), alone).has_value());
  const decode_entry both[] = {next_a, next_b};
  BOOST_TEST_REQUIRE(b.decode(both, batched).has_value());
  BOOST_TEST(std::memcmp(alone.data(), batched.data(), alone.size() * sizeof(float)) == 0);
  BOOST_TEST(std::memcmp(alone.data(), batched.data() + m.vocab, alone.size() * sizeof(float)) == 0);
  // The logits are those of a model (finite, not all equal).
  BOOST_TEST(std::all_of(a.begin(), a.end(), [](float v) { return std::isfinite(v); }));
  BOOST_TEST((*std::max_element(a.begin(), a.end()) > *std::min_element(a.begin(), a.end())));
}

BOOST_AUTO_TEST_CASE(rotate_half_is_adjacent_pairs_with_permuted_rows) {
  const model_files files = model_files::in(KVTIER_ENGINE_MODELS_DIR "/stories260K");
  const model_weights w = model_weights::load_llama2c(files.checkpoint.string(), files.name);
  model_weights hf = w;
  hf.set_rope(rope_style::rotate_half, 10000.0f);
  const model_config& m = w.config();
  // Hugging Face's permute: row 2j + c of each head moves to row c * head_size/2 + j.
  for (tensor_kind k : {tensor_kind::wq, tensor_kind::wk}) {
    const std::size_t heads = k == tensor_kind::wq ? m.heads : m.kv_heads;
    auto dst = hf.mutable_tensor(k);
    const auto src = w.tensor(k);
    const std::size_t hs = m.head_size, half = hs / 2;
    for (std::size_t l = 0; l < m.layers; ++l)
      for (std::size_t h = 0; h < heads; ++h)
        for (std::size_t j = 0; j < half; ++j)
          for (std::size_t c = 0; c < 2; ++c) {
            const std::size_t base = (l * heads + h) * hs;
            std::copy_n(src.data() + (base + 2 * j + c) * m.dim, m.dim, dst.data() + (base + c * half + j) * m.dim);
          }
  }
  pool_memory ma(m, 8), mb(m, 8);
  cpu_backend a(m, w, ma.pool), b(hf.config(), hf, mb.pool);
  const auto t = tokens(60, m.vocab, 3);
  const auto table = slots(0, 4);
  std::vector<float> la(m.vocab), lb(m.vocab);
  BOOST_TEST_REQUIRE(a.prefill({t, 0, table}, la, {}).has_value());
  BOOST_TEST_REQUIRE(b.prefill({t, 0, table}, lb, {}).has_value());
  float worst = 0;
  for (std::size_t i = 0; i < la.size(); ++i) worst = std::max(worst, std::abs(la[i] - lb[i]));
  BOOST_TEST(worst < 1e-3f);  // the same function, summed in another order
  BOOST_TEST(worst > 0.0f);   // and not the same code path
  BOOST_TEST((std::max_element(la.begin(), la.end()) - la.begin() == std::max_element(lb.begin(), lb.end()) - lb.begin()));
}

BOOST_AUTO_TEST_CASE(bad_requests_are_errors) {
  const model_config m = small_shape();
  const model_weights w = model_weights::synthetic(m, 2, false);  // expanded by the backend
  pool_memory mem(m, 4);
  cpu_backend b(m, w, mem.pool);
  std::vector<float> logits(m.vocab);
  const auto t = tokens(40, m.vocab, 1);
  const auto table = slots(0, 2);  // covers 32 positions only
  BOOST_TEST((b.prefill({t, 0, table}, logits, {}).code() == kvtier::errc::invalid_argument));
  const auto far = std::vector<device_slot>{device_slot{0}, device_slot{9}, device_slot{1}};  // slot 9 is outside the pool
  BOOST_TEST((b.prefill({t, 0, far}, logits, {}).code() == kvtier::errc::invalid_argument));
  const token_id bad[] = {token_id{std::int32_t(m.vocab)}};
  BOOST_TEST((b.prefill({bad, 0, table}, logits, {}).code() == kvtier::errc::invalid_argument));
  const decode_entry past{token_id{5}, m.seq_len, table};
  BOOST_TEST((b.decode(std::span(&past, 1), logits).code() == kvtier::errc::invalid_argument));
  BOOST_CHECK_THROW(cpu_backend(m, w, mem.pool, backend_options{precision::bf16}), kvtier::config_error);
  model_config other = m;
  other.kv_heads = 4;
  BOOST_CHECK_THROW(cpu_backend(other, model_weights::synthetic(other, 1, false), mem.pool), kvtier::config_error);
  // The layer hook is called once per layer, in order, before the layer reads the pool.
  std::vector<std::size_t> seen;
  BOOST_TEST_REQUIRE(b.prefill({std::span(t).first(20), 0, table}, logits, [&](std::size_t l) { seen.push_back(l); }).has_value());
  std::vector<std::size_t> expected(m.layers);
  std::iota(expected.begin(), expected.end(), 0u);
  BOOST_TEST(seen == expected);
}

BOOST_AUTO_TEST_CASE(prefill_batch_is_separate_prefills_bit_for_bit) {
  const model_config m = small_shape();
  const model_weights w = model_weights::synthetic(m, 13);
  pool_memory alone_mem(m, 40), batch_mem(m, 40);
  cpu_backend alone(m, w, alone_mem.pool, backend_options{precision::fp32, 2});
  cpu_backend batched(m, w, batch_mem.pool, backend_options{precision::fp32, 2});
  // Three sequences: one from position 0, one over a 32-token prefix already in the pool, one short
  // chunk; chunk lengths not multiples of the page size.
  const auto ta = tokens(37, m.vocab, 1), tb = tokens(32 + 45, m.vocab, 2), tc = tokens(5, m.vocab, 3);
  const auto sa = slots(0, 3), sb = slots(8, 5), sc = slots(20, 1);
  std::vector<float> prefix_logits(m.vocab);
  for (cpu_backend* b : {&alone, &batched})  // sequence b's cached prefix, in both pools
    BOOST_TEST_REQUIRE(b->prefill({std::span(tb).first(32), 0, std::span(sb).first(2)}, prefix_logits, {}).has_value());
  const prefill_chunk chunks[] = {{ta, 0, sa}, {std::span(tb).subspan(32), 32, sb}, {tc, 0, sc}};
  std::vector<float> want(3 * m.vocab), got(3 * m.vocab, -1.0f);
  for (std::size_t i = 0; i < 3; ++i)
    BOOST_TEST_REQUIRE(alone.prefill(chunks[i], std::span(want).subspan(i * m.vocab, m.vocab), {}).has_value());
  std::vector<std::size_t> seen;
  BOOST_TEST_REQUIRE(batched.prefill_batch(chunks, got, [&](std::size_t l) { seen.push_back(l); }).has_value());
  BOOST_TEST(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)) == 0);
  BOOST_TEST(std::memcmp(alone_mem.bytes.data(), batch_mem.bytes.data(), alone_mem.bytes.size()) == 0);  // every K/V row
  BOOST_TEST(seen.size() >= m.layers);  // each layer announced before it is read (per chunk here)
  BOOST_TEST(std::is_sorted(seen.begin(), seen.begin() + std::ptrdiff_t(m.layers)));
  BOOST_TEST(std::all_of(got.begin(), got.end(), [](float v) { return std::isfinite(v); }));

  // Bad input is invalid_argument and computes nothing: an empty span, too few logits, a chunk as
  // prefill() rejects it (empty, table too short, slot outside the pool, bad token, past seq_len).
  const auto before = batch_mem.bytes;
  auto code = [&](std::span<const prefill_chunk> c, std::span<float> l) { return batched.prefill_batch(c, l, {}).code(); };
  BOOST_TEST((code({}, got) == kvtier::errc::invalid_argument));
  BOOST_TEST((code(chunks, std::span(got).first(3 * m.vocab - 1)) == kvtier::errc::invalid_argument));
  const auto far = std::vector<device_slot>{device_slot{0}, device_slot{99}, device_slot{1}};
  const auto whole = slots(0, m.seq_len / P);
  const token_id bad_token[] = {token_id{std::int32_t(m.vocab)}};
  const prefill_chunk bad[] = {{std::span(ta).first(0), 0, sa}, {ta, 0, std::span(sa).first(2)}, {ta, 0, far},
                               {bad_token, 0, sc}, {tc, m.seq_len - 2, whole}};
  for (const prefill_chunk& b : bad) {
    const prefill_chunk pair[] = {chunks[0], b};  // the good chunk first: still nothing is computed
    BOOST_TEST((code(pair, got) == kvtier::errc::invalid_argument));
    BOOST_TEST((alone.prefill(b, std::span(want).first(m.vocab), {}).code() == kvtier::errc::invalid_argument));
  }
  BOOST_TEST(std::memcmp(before.data(), batch_mem.bytes.data(), before.size()) == 0);
}

BOOST_AUTO_TEST_CASE(decode_greedy_is_the_argmax_of_decode) {
  const model_config m = small_shape();
  const model_weights w = model_weights::synthetic(m, 13);
  pool_memory mem(m, 32);
  cpu_backend b(m, w, mem.pool, backend_options{precision::fp32, 2});
  const auto t = tokens(40, m.vocab, 3);
  const auto sa = slots(0, 4), sb = slots(8, 4);
  std::vector<float> logits(m.vocab);
  BOOST_TEST_REQUIRE(b.prefill({std::span(t).first(30), 0, sa}, logits, {}).has_value());
  BOOST_TEST_REQUIRE(b.prefill({std::span(t).first(20), 0, sb}, logits, {}).has_value());
  const decode_entry batch[] = {{t[30], 30, sa}, {t[20], 20, sb}};
  // decode_greedy writes the same positions' K/V again (the same values): logits first, then tokens.
  std::vector<float> all(2 * m.vocab);
  BOOST_TEST_REQUIRE(b.decode(batch, all).has_value());
  std::vector<kvtier::token_id> next(2);
  BOOST_TEST_REQUIRE(b.decode_greedy(batch, next).has_value());
  for (std::size_t i = 0; i < 2; ++i)
    BOOST_TEST(std::size_t(next[i].value()) == sampler::argmax(std::span(all).subspan(i * m.vocab, m.vocab)));
  std::vector<kvtier::token_id> too_few(1);
  BOOST_TEST((b.decode_greedy(batch, too_few).code() == kvtier::errc::invalid_argument));
}
