// kvtier-engine serving prompts made of known chunks (kvtier_engine/blend_request.hpp): chunks
// stored once through the engine's cache, then a prompt [chunk A][chunk B][chunk C][question] is
// served by blend_generate: A is the prompt's true prefix, B and C are blended. Recomputing every
// placed token gives the greedy reply of a full prefill token for token; at r = 15% (question
// weighting) the request recomputes 15% of B and C after layer 1; the request's slots all go back.
#include <boost/test/unit_test.hpp>

#include <vector>

#include "kvtier/cache.hpp"
#include "kvtier_engine/blend_request.hpp"
#include "kvtier_engine/model_files.hpp"

using namespace kvtier;
using namespace kvtier_engine;

namespace {
using cache_type = cache_builder<page_size<16>>::cache_type;
using engine_type = engine<cpu_backend, cache_type>;

const model_weights& weights() {
  static const model_weights w = [] {
    const model_files f = model_files::in(std::string(KVTIER_ENGINE_MODELS_DIR) + "/stories260K");
    return model_weights::load_llama2c(f.checkpoint.string(), f.name);
  }();
  return w;
}

std::vector<token_id> story(engine_type& e, std::uint64_t seed) {  // BOS + 63 tokens the model samples
  generate_options o;
  o.caching = false;
  o.max_new_tokens = 63;
  o.stop_at_bos = false;
  o.sample = sampling{1.0f, 0.95f, seed};
  const std::vector<token_id> bos{bos_token};
  auto r = e.generate(namespace_id{99}, bos, o);
  BOOST_TEST_REQUIRE(r.has_value());
  std::vector<token_id> t{bos_token};
  t.insert(t.end(), r->tokens.begin(), r->tokens.end());
  return t;
}
}  // namespace

BOOST_AUTO_TEST_CASE(chunks_served_by_the_engine) {
  engine_type e(weights(), engine_type::cache_config(weights(), precision::fp32, 96, 96), backend_options{}, 64);
  const namespace_id ns{4};
  std::vector<std::vector<token_id>> chunks;
  for (std::uint64_t s : {11, 12, 13}) chunks.push_back(story(e, s));
  for (const auto& c : chunks) BOOST_TEST_REQUIRE(store_chunk(e, ns, c).has_value());
  std::vector<token_id> prompt;
  for (const auto& c : chunks) prompt.insert(prompt.end(), c.begin(), c.end());
  for (int q : {13, 66, 100, 7, 42}) prompt.push_back(token_id{q});
  const std::size_t free_before = e.cache().device_pool().available();

  generate_options o;
  o.caching = false;
  o.max_new_tokens = 24;
  o.stop_at_bos = false;
  auto full = e.generate(namespace_id{8}, prompt, o);
  BOOST_TEST_REQUIRE(full.has_value());

  blend_plan all;
  all.keep = {1.0};
  auto b = blend_generate(e, ns, prompt, all, o);
  BOOST_TEST_REQUIRE(b.has_value());
  BOOST_TEST(b->chunks == 3u);
  BOOST_TEST(b->prefix_tokens == 64u);
  BOOST_TEST(b->blended_tokens == 128u);
  BOOST_TEST((b->tokens == full->tokens));
  BOOST_TEST(e.cache().device_pool().available() == free_before);

  blend_plan q;
  q.keep = {0.15};
  q.weighting = blend_weighting::question;
  auto b15 = blend_generate(e, ns, prompt, q, o);
  BOOST_TEST_REQUIRE(b15.has_value());
  BOOST_TEST(b15->report.reused_kv[2] == 20u);  // ceil(0.15 x 128)
  BOOST_TEST(b15->report.question_rows == 5u);
  BOOST_TEST(b15->tokens.size() == 24u);
  std::size_t same = 0;
  while (same < 24 && b15->tokens[same] == full->tokens[same]) ++same;
  BOOST_TEST_MESSAGE("r = 15%: " << same << " of 24 greedy tokens equal to full prefill's before the first difference");
  BOOST_TEST(e.cache().device_pool().available() == free_before);
  // A prompt with no known chunk is a plain prefill.
  const std::vector<token_id> plain(prompt.begin() + 70, prompt.end());
  auto p = blend_generate(e, ns, plain, q, o);
  BOOST_TEST_REQUIRE(p.has_value());
  BOOST_TEST(p->chunks == 0u);
  BOOST_TEST(p->report.question_rows == 0u);  // nothing placed: no first pass
  auto pf = e.generate(namespace_id{8}, plain, o);
  BOOST_TEST_REQUIRE(pf.has_value());
  BOOST_TEST((p->tokens == pf->tokens));
}
