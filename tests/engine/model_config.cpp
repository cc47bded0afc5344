// The named shapes (parameter counts against the published models), synthetic weights as a pure
// function of the seed, and the compute_backend concept's opt-in.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <span>

#include "kvtier_engine/backend.hpp"
#include "kvtier_engine/model_config.hpp"
#include "kvtier_engine/weights.hpp"

using namespace kvtier_engine;

namespace {
// Has every member but does not opt in: not a backend.
struct no_tag_backend {
  no_tag_backend(const model_config&, const model_weights&, const kv_pool&, backend_options) {}
  const model_config& config() const;
  precision mode() const;
  const char* name() const;
  kvtier::result<void> prefill(const prefill_chunk&, std::span<float>, const layer_hook&);
  kvtier::result<void> decode(std::span<const decode_entry>, std::span<float>);
};
struct tagged_backend : no_tag_backend {
  using no_tag_backend::no_tag_backend;
  using kvtier_engine_backend = backend_tag;
};
// Opts in, but has no batched decode.
struct no_decode_backend {
  using kvtier_engine_backend = backend_tag;
  no_decode_backend(const model_config&, const model_weights&, const kv_pool&, backend_options) {}
  const model_config& config() const;
  precision mode() const;
  const char* name() const;
  kvtier::result<void> prefill(const prefill_chunk&, std::span<float>, const layer_hook&);
};
}  // namespace

static_assert(compute_backend<tagged_backend>);
static_assert(!compute_backend<no_tag_backend>);
static_assert(!compute_backend<no_decode_backend>);

BOOST_AUTO_TEST_CASE(named_shapes_have_the_published_sizes) {
  const model_config s = shapes::stories260k();
  // The checkpoint holds 264,128 floats: the parameters plus two RoPE tables of seq_len x head_size / 2.
  BOOST_TEST(s.parameters() + s.seq_len * s.head_size == 264128u);
  // Llama-3-8B: 8.03 B parameters (untied classifier).
  const model_config l = shapes::llama3_8b();
  BOOST_TEST(l.parameters() == 8030261248ull);
  BOOST_TEST((l.kv_shape(kvtier::dtype::bf16) == kvtier::shapes::llama3_8b()));
  const model_config q = shapes::qwen25_14b();
  BOOST_TEST(q.layers == 48u);
  const model_config c = shapes::cpu_100m();
  BOOST_TEST(c.parameters() > 90'000'000ull);
  BOOST_TEST(c.parameters() < 110'000'000ull);
  for (const char* n : {"stories260K", "cpu-100m", "llama3-8b", "qwen2.5-14b"}) BOOST_CHECK_NO_THROW(shapes::by_name(n).validate());
  BOOST_CHECK_THROW(shapes::by_name("gpt-5"), kvtier::config_error);
  model_config bad = shapes::stories260k();
  bad.kv_heads = 3;
  BOOST_CHECK_THROW(bad.validate(), kvtier::config_error);
}

BOOST_AUTO_TEST_CASE(synthetic_weights_are_a_function_of_the_seed) {
  const model_config m = shapes::stories260k();
  const model_weights a = model_weights::synthetic(m, 7), b = model_weights::synthetic(m, 7), c = model_weights::synthetic(m, 8);
  model_weights lazy = model_weights::synthetic(m, 7, false);
  BOOST_TEST(!lazy.materialized());
  lazy.materialize();
  for (std::size_t k = 0; k < tensor_kinds; ++k) {
    const auto kind = tensor_kind(k);
    const auto ta = a.tensor(kind), tb = b.tensor(kind), tc = c.tensor(kind), tl = lazy.tensor(kind);
    BOOST_TEST(std::equal(ta.begin(), ta.end(), tb.begin(), tb.end()));
    BOOST_TEST(std::equal(ta.begin(), ta.end(), tl.begin(), tl.end()));
    if (!ta.empty()) BOOST_TEST(!std::equal(ta.begin(), ta.end(), tc.begin(), tc.end()));
  }
  // Matrices have the scale their fan-in asks for: max |w| below sqrt(3 / fan_in), and close to it.
  const auto wq = a.layer(tensor_kind::wq, 2);
  float mx = 0;
  for (float v : wq) mx = std::max(mx, std::abs(v));
  const float bound = std::sqrt(3.0f / float(m.dim));
  BOOST_TEST(mx <= bound);
  BOOST_TEST(mx > 0.95f * bound);
  // Element i of layer l is synthetic_value(seed, kind, l, i, scale): what a GPU backend generates.
  BOOST_TEST(wq[5] == synthetic_value(7, tensor_kind::wq, 2, 5, synthetic_scale(tensor_kind::wq, m.dim)));
}
