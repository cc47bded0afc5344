// stories260K (karpathy/llama2.c tinyllamas, in models/stories260K): the CPU backend reproduces
// llama2.c's run.c: greedy, 256 steps, BOS and no prompt, prints exactly the reference text
// (../shared/models/README.md), and the tokenizer round-trips text as run.c encodes it.
#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

#include "engine/stories260k_model.hpp"
#include "kvtier/cache.hpp"
#include "kvtier_engine/cpu/cpu_backend.hpp"
#include "kvtier_engine/engine.hpp"
#include "kvtier_engine/model_files.hpp"

using namespace kvtier_engine;
using namespace kvtier_test::engine;

namespace {
using cache_type = kvtier::cache_builder<kvtier::page_size<16>>::cache_type;
using engine_type = engine<cpu_backend, cache_type>;
}  // namespace

BOOST_AUTO_TEST_CASE(checkpoint_header) {
  const stories s;
  const model_config& m = s.w.config();
  BOOST_TEST(m.dim == 64u);
  BOOST_TEST(m.hidden_dim == 172u);
  BOOST_TEST(m.layers == 5u);
  BOOST_TEST(m.heads == 8u);
  BOOST_TEST(m.kv_heads == 4u);
  BOOST_TEST(m.vocab == 512u);
  BOOST_TEST(m.seq_len == 512u);
  BOOST_TEST(m.tied_classifier);
  BOOST_TEST((m.rope == rope_style::adjacent_pairs));
  const model_config named = shapes::stories260k();
  BOOST_TEST(named.parameters() == m.parameters());
}

BOOST_AUTO_TEST_CASE(greedy_256_steps_prints_the_reference_text) {
  const stories s;
  const std::size_t pages = 40;
  engine_type eng(s.w, engine_type::cache_config(s.w, precision::fp32, pages, pages), backend_options{}, 256);
  BOOST_TEST(s.tok.decode(run_c_greedy_256(eng), bos_token) == reference);
}

BOOST_AUTO_TEST_CASE(tokenizer_encodes_as_run_c) {
  const stories s;
  const std::string text = "Once upon a time, there was a little girl named Lily.";
  const auto t = s.tok.encode(text, true, false);
  BOOST_TEST_REQUIRE(t.size() > 2u);
  BOOST_TEST((t.front() == bos_token));
  BOOST_TEST(t.size() < text.size() / 2);  // merges happened
  std::vector<kvtier::token_id> rest(t.begin() + 1, t.end());
  BOOST_TEST(s.tok.decode(rest, bos_token) == text);  // the dummy-prefix space is dropped after BOS
  BOOST_TEST(s.tok.encode("", true, false).size() == 1u);
  BOOST_TEST((s.tok.encode("", true, true).back() == eos_token));
  // Characters outside the vocabulary fall back to bytes (<0xXX> = byte + 3) and decode back.
  const auto u = s.tok.encode("\xE8\xAA\x9E", false, false);  // U+8A9E, not in the 512-token vocabulary
  std::vector<kvtier::token_id> bytes(u.begin() + 1, u.end());
  BOOST_TEST_REQUIRE(bytes.size() == 3u);
  BOOST_TEST(bytes[0].value() == 0xE8 + 3);
  BOOST_TEST(bytes[2].value() == 0x9E + 3);
  BOOST_TEST(s.tok.decode(bytes, kvtier::token_id{0}) == "");  // non-printable single bytes are dropped, as safe_printf does
  // "é" is a vocabulary piece of its own: no fallback.
  BOOST_TEST(s.tok.encode("\xC3\xA9", false, false).size() == 2u);
}

BOOST_AUTO_TEST_CASE(sampling_is_seeded) {
  const stories s;
  engine_type eng(s.w, engine_type::cache_config(s.w, precision::fp32, 40, 40), backend_options{}, 256);
  const std::vector<kvtier::token_id> prompt = s.tok.encode("Once upon a time", true, false);
  auto run = [&](float temperature, float top_p, std::uint64_t seed) {
    generate_options g;
    g.max_new_tokens = 48;
    g.sample = sampling{temperature, top_p, seed};
    g.stop_at_bos = false;
    const auto r = eng.generate(kvtier::namespace_id{1}, prompt, g);
    BOOST_TEST_REQUIRE(r.has_value());
    return r->tokens;
  };
  const auto greedy = run(0.0f, 0.9f, 1);
  const auto a = run(1.0f, 0.9f, 42), b = run(1.0f, 0.9f, 42), c = run(1.0f, 0.9f, 43), d = run(1.0f, 1.0f, 42);
  BOOST_TEST(a == b);        // a seed gives the same tokens (the second run reuses the cached prompt)
  BOOST_TEST(a != c);        // another seed, another story
  BOOST_TEST(a != greedy);
  BOOST_TEST(a != d);        // top-p 0.9 and the whole distribution differ somewhere in 48 tokens
  // Low temperature concentrates the distribution: at 0.01 the samples are the greedy tokens.
  BOOST_TEST(run(0.01f, 0.9f, 7) == greedy);
}
