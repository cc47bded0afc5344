// The CUDA backend's partial prefill (cuda_backend::prefill_rows) and CacheBlend on it
// (cuda/blend_prefill.cuh), on stories260K (fp32 and bf16: head size 8, the paged attention path)
// and on a synthetic head-128 shape (bf16: the flash kernel with per-row positions):
//  - every row through prefill_rows = prefill(): logits and the whole pool bit for bit;
//  - a subset of rows (any positions, the last among them) over a pool a full prefill wrote, with or
//    without rows dropped after some layer's K/V: the last row's logits are the full prefill's (same
//    K/V in, same result): bit for bit where the backend is batch-invariant (bf16), else within the
//    bounds of tests/engine/cuda_model.cu (cuBLAS may choose another algorithm for another row
//    count); where batch-invariant the pool is left as the full prefill wrote it;
//  - bad rows and filters are errors, and the backend still works after them;
//  - CacheBlend over stale placed KV: keep 100% gives full prefill's logits (bit for bit in bf16), keep
//    15% recomputes exactly the ceil(15%) placed tokens the CPU reference (kvtier::blend::
//    select_deviating) picks from the same placed and fresh K/V, keep 0 none.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kvtier/blend/select.hpp"
#include "kvtier/testing/relative_error.hpp"
#include "kvtier_engine/cuda/blend_prefill.cuh"
#include "kvtier_engine/cuda/cuda_backend.cuh"
#include "kvtier_engine/model_files.hpp"

using namespace kvtier_engine;
using kvtier::testing::rel_l2;
using kvtier_engine::cuda::cuda_backend;

namespace {

constexpr std::size_t P = 16;

// The models folder: $KVTIER_ENGINE_MODELS_DIR where set (a binary carried to another checkout), else the tree's.
model_weights stories_weights() {
  const char* env = std::getenv("KVTIER_ENGINE_MODELS_DIR");
  const model_files files = model_files::in(std::string(env != nullptr && *env ? env : KVTIER_ENGINE_MODELS_DIR) + "/stories260K");
  return model_weights::load_llama2c(files.checkpoint.string(), files.name);
}
// Synthetic, head_size 128 (bf16 attention through flash_prefill), GQA 4/2, rotate-half, untied, 4 layers.
model_weights synthetic_h128() {
  const model_config m{"synthetic-h128", 512, 1024, 4, 4, 2, 128, 1000, 2048, rope_style::rotate_half, 500000.0f, false, 1e-5f};
  return model_weights::synthetic(m, 11);
}

// A backend over a device pool of `slots` pages reached through a scattered block table.
struct rig {
  const model_weights& w;
  precision p;
  std::size_t slots;
  kvtier_engine::cuda::device_buffer<std::byte> mem;
  kv_pool pool;
  cuda_backend be;
  std::vector<kvtier::device_slot> table;
  // Pages for `tokens` and a few more, a count prime to 7 (the scattered table's stride).
  static std::size_t slots_for(std::size_t tokens) {
    const std::size_t s = (tokens + P - 1) / P + 3;
    return s % 7 == 0 ? s + 1 : s;
  }
  rig(const model_weights& w_, precision p_, std::size_t tokens)
      : w(w_), p(p_), slots(slots_for(tokens)), mem(w.config().kv_shape(kv_dtype(p)).bytes_per_page(P) * slots),
        pool{kvtier::transfer::layer_first_view(mem.data(), w.config().kv_shape(kv_dtype(p)), slots * P), P, slots},
        be(w.config(), w, pool, backend_options{p, 0, 0}) {
    for (std::size_t i = 0; i < slots; ++i) table.push_back(kvtier::device_slot(std::uint32_t((i * 7) % slots)));
  }
  std::string name() const { return w.config().name + " " + std::string(to_string(p)); }
  // Whether equal inputs must give equal bits for any row count.
  bool exact() const { return be.batch_invariant(); }
  std::vector<float> prefill(std::span<const kvtier::token_id> t, std::size_t start = 0) {
    std::vector<float> logits(w.config().vocab);
    BOOST_TEST_REQUIRE(be.prefill(prefill_chunk{t.subspan(start), start, table}, logits, {}).has_value());
    return logits;
  }
  std::vector<decode_entry> rows(std::span<const kvtier::token_id> t, const std::vector<std::size_t>& positions) const {
    std::vector<decode_entry> r;
    for (std::size_t q : positions) r.push_back({t[q], q, table});
    return r;
  }
};

std::vector<kvtier::token_id> random_tokens(std::size_t n, std::size_t vocab, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<kvtier::token_id> t(n);
  for (auto& x : t) x = kvtier::token_id(std::int32_t(3 + rng() % (vocab - 3)));
  return t;
}

bool same_bits(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}
// Bit for bit where the backend is batch-invariant, else within the bounds of engine.cuda_model
// (fp32 1e-4; bf16 3e-2 should the checked GEMM algorithms have fallen back to cuBLAS's heuristics).
void check_same_result(const rig& r, std::span<const float> got, std::span<const float> want, const std::string& what) {
  const double e = rel_l2(got, want);
  BOOST_TEST_MESSAGE(r.name() << ": " << what << ": relative L2 error " << e << (same_bits(got, want) ? " (bit for bit)" : ""));
  if (r.exact()) BOOST_TEST(same_bits(got, want), r.name() << ": " << what << " not bit for bit (rel L2 " << e << ")");
  else BOOST_TEST(e < (r.p == precision::fp32 ? 1e-4 : 3e-2), r.name() << ": " << what);
}

void all_rows_equal_prefill(const model_weights& w, precision p, std::size_t n) {
  rig r(w, p, n);
  const auto t = random_tokens(n, w.config().vocab, 3);
  BOOST_TEST_REQUIRE(cudaMemset(r.mem.data(), 0, r.mem.size()) == cudaSuccess);  // pages past the prompt: zeros
  const auto want = r.prefill(t);
  const auto pool_full = r.mem.download();
  BOOST_TEST_REQUIRE(cudaMemset(r.mem.data(), 0, r.mem.size()) == cudaSuccess);
  std::vector<std::size_t> all(n);
  for (std::size_t i = 0; i < n; ++i) all[i] = i;
  std::vector<float> got(w.config().vocab);
  BOOST_TEST_REQUIRE(r.be.prefill_rows(r.rows(t, all), got, {}, {}).has_value());
  // Same rows, same count, same kernels: bit for bit in either precision.
  BOOST_TEST(same_bits(got, want), r.name() << ": all rows vs prefill, rel L2 " << rel_l2(got, want));
  BOOST_TEST((r.mem.download() == pool_full), r.name() << ": the pool after all rows differs from prefill's");
  // Rows from a page-aligned start over the prefill's prefix (the chunked-prefill case).
  const std::size_t start = (n / 3) / P * P;
  std::vector<std::size_t> tail(all.begin() + std::ptrdiff_t(start), all.end());
  BOOST_TEST_REQUIRE(r.be.prefill_rows(r.rows(t, tail), got, {}, {}).has_value());
  check_same_result(r, got, want, "rows [" + std::to_string(start) + ", n) over the prefix");
}

void subset_over_full_kv(const model_weights& w, precision p, std::size_t n) {
  rig r(w, p, n);
  const std::size_t L = w.config().layers;
  const auto t = random_tokens(n, w.config().vocab, 4);
  const auto want = r.prefill(t);
  const auto pool_full = r.mem.download();
  std::vector<std::size_t> some;  // scattered positions, a run, and the last
  for (std::size_t q = 5; q < n - 1; q += 3 + q % 4) some.push_back(q);
  for (std::size_t q = n - 40; q < n; ++q)
    if (some.back() < q) some.push_back(q);
  std::vector<float> got(w.config().vocab);
  std::vector<std::size_t> layers_seen;
  const layer_hook seen = [&](std::size_t l) { layers_seen.push_back(l); };
  BOOST_TEST_REQUIRE(r.be.prefill_rows(r.rows(t, some), got, seen, {}).has_value());
  check_same_result(r, got, want, std::to_string(some.size()) + " scattered rows");
  BOOST_TEST(layers_seen.size() == L);
  if (r.exact()) BOOST_TEST((r.mem.download() == pool_full), r.name() << ": scattered rows changed the pool");
  // Rows dropped after layer 1's K/V (every other one) and after the last layer's (all but the last row).
  std::vector<std::size_t> counts;
  const row_filter drop = [&](std::size_t l, std::vector<std::size_t>& active) {
    counts.push_back(active.size());
    if (l == 1) {
      std::vector<std::size_t> keep;
      for (std::size_t i = 0; i < active.size(); ++i)
        if (i % 2 == 1 || i + 1 == active.size()) keep.push_back(active[i]);
      active.swap(keep);
    }
    if (l + 1 == L) active.erase(active.begin(), active.end() - 1);
  };
  BOOST_TEST_REQUIRE(r.be.prefill_rows(r.rows(t, some), got, {}, drop).has_value());
  check_same_result(r, got, want, "scattered rows, half dropped after layer 1");
  BOOST_TEST_REQUIRE(counts.size() == L);
  BOOST_TEST(counts[0] == some.size());
  BOOST_TEST(counts[2] == some.size() / 2 + (some.size() % 2 == 1 ? 1 : 0));
  if (r.exact()) BOOST_TEST((r.mem.download() == pool_full), r.name() << ": dropped rows changed the pool");
}

void bad_rows_are_errors(const model_weights& w, precision p) {
  const std::size_t n = 100;
  rig r(w, p, n);
  const auto t = random_tokens(n, w.config().vocab, 5);
  const auto want = r.prefill(t);
  std::vector<float> got(w.config().vocab);
  const auto is_invalid = [](const kvtier::result<void>& res) { return !res && res.code() == kvtier::errc::invalid_argument; };
  BOOST_TEST(is_invalid(r.be.prefill_rows(r.rows(t, {10, 9, 99}), got, {}, {})));       // not ascending
  BOOST_TEST(is_invalid(r.be.prefill_rows(r.rows(t, {10, 10, 99}), got, {}, {})));      // repeated
  BOOST_TEST(is_invalid(r.be.prefill_rows({}, got, {}, {})));                            // no rows
  BOOST_TEST(is_invalid(r.be.prefill_rows(r.rows(t, {1, 99}), std::span(got).first(3), {}, {})));
  std::vector<decode_entry> other = r.rows(t, {1, 99});
  const std::vector<kvtier::device_slot> table2 = r.table;
  other[0].block_table = table2;  // two sequences
  BOOST_TEST(is_invalid(r.be.prefill_rows(other, got, {}, {})));
  std::vector<decode_entry> too_far = r.rows(t, {1, 99});
  too_far[1].block_table = std::span(r.table).first(2);  // table short of the last position
  too_far[0].block_table = too_far[1].block_table;
  BOOST_TEST(is_invalid(r.be.prefill_rows(too_far, got, {}, {})));
  const row_filter adds = [](std::size_t, std::vector<std::size_t>& a) { a.insert(a.begin(), 0); };
  const row_filter drops_last = [](std::size_t, std::vector<std::size_t>& a) { a.pop_back(); };
  const row_filter unsorted = [](std::size_t, std::vector<std::size_t>& a) { std::swap(a[0], a[1]); };
  BOOST_TEST(is_invalid(r.be.prefill_rows(r.rows(t, {3, 50, 99}), got, {}, adds)));
  BOOST_TEST(is_invalid(r.be.prefill_rows(r.rows(t, {3, 50, 99}), got, {}, drops_last)));
  BOOST_TEST(is_invalid(r.be.prefill_rows(r.rows(t, {3, 50, 99}), got, {}, unsorted)));
  // The backend is still usable: a fresh prefill gives the same logits as before.
  BOOST_TEST(same_bits(r.prefill(t), want));
}

// Stale placed KV: positions [start, n) computed after another first chunk, then the true first
// chunk computed (the prefix, exact); blended with keep 1, 0.15 and 0.
void blend_over_stale_kv(const model_weights& w, precision p, std::size_t start, std::size_t placed, std::size_t n) {
  rig r(w, p, n);
  const model_config& m = w.config();
  const auto t = random_tokens(n, m.vocab, 6);
  const auto want = r.prefill(t);
  auto other = t;
  const auto alt = random_tokens(start, m.vocab, 7);
  std::copy(alt.begin(), alt.end(), other.begin());
  const auto naive = [&] {
    r.prefill(other);                              // [start, n) after another first chunk
    r.prefill(std::span(t).first(start));          // the true first chunk (the prefix)
    return r.mem.download();
  }();
  kvtier_engine::cuda::blend_prefiller bp(r.be, r.pool);
  const kvtier::dtype dt = kv_dtype(p);
  const auto host_view = [&](std::vector<std::byte>& bytes) {
    return kvtier::transfer::layer_first_view(bytes.data(), m.kv_shape(dt), r.slots * P);
  };
  for (const double keep : {1.0, 0.15, 0.0}) {
    r.mem.upload(naive);
    std::vector<float> got(m.vocab);
    kvtier_engine::cuda::blend_options o;
    o.keep = keep;
    auto rep = bp.run(t, start, placed, r.table, o, got);
    BOOST_TEST_REQUIRE(rep.has_value());
    const std::size_t k = kvtier::blend::kept_count(keep, placed - start);
    BOOST_TEST(rep->computed == n - start);
    BOOST_TEST(rep->placed == placed - start);
    BOOST_TEST_REQUIRE(rep->kept.size() == k);
    // The CPU reference's choice from the same K/V: the pool after the run holds every row's fresh
    // K/V on the selection layer; the placed K/V is the pool before it.
    auto fresh_bytes = r.mem.download(), placed_bytes = naive;
    const kvtier::blend::sequence_kv fresh{host_view(fresh_bytes), r.table, P}, loaded{host_view(placed_bytes), r.table, P};
    const auto ref = kvtier::blend::select_deviating(fresh, loaded, o.select_layer, start, placed, keep, dt);
    BOOST_TEST_REQUIRE(ref.has_value());
    BOOST_TEST((*ref == rep->kept), r.name() << ": keep " << keep << ": the GPU kept other tokens than the CPU reference");
    BOOST_TEST_MESSAGE(r.name() << ": blend keep " << keep << ": " << k << " of " << placed - start
                                << " placed tokens recomputed, logits rel L2 vs full prefill " << rel_l2(got, want)
                                << ", selection " << rep->select_ms << " ms");
    if (keep == 1.0) check_same_result(r, got, want, "blend keep 100%");
  }
  std::vector<float> got(m.vocab);
  BOOST_TEST(!bp.run(t, placed, start, r.table, {}, got).has_value());  // start after placed
}

}  // namespace

BOOST_AUTO_TEST_CASE(all_rows_give_prefill_bit_for_bit) {
  const auto s = stories_weights();
  all_rows_equal_prefill(s, precision::fp32, 200);
  all_rows_equal_prefill(s, precision::bf16, 200);
  all_rows_equal_prefill(synthetic_h128(), precision::bf16, 600);
}

BOOST_AUTO_TEST_CASE(a_subset_over_full_kv_gives_full_logits) {
  const auto s = stories_weights();
  subset_over_full_kv(s, precision::fp32, 240);
  subset_over_full_kv(s, precision::bf16, 240);
  subset_over_full_kv(synthetic_h128(), precision::bf16, 700);
}

BOOST_AUTO_TEST_CASE(bad_rows_and_filters_are_errors) {
  bad_rows_are_errors(stories_weights(), precision::bf16);
}

BOOST_AUTO_TEST_CASE(cacheblend_on_the_gpu) {
  const auto s = stories_weights();
  blend_over_stale_kv(s, precision::fp32, 32, 160, 176);
  blend_over_stale_kv(s, precision::bf16, 32, 160, 176);
  blend_over_stale_kv(synthetic_h128(), precision::bf16, 128, 512, 576);
}
