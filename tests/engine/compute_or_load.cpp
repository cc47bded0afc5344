// Compute or load, executed by kvtier-engine's CPU backend on stories260K: a 432-token prompt whose
// first 400 tokens are cached (2 pages in the pool already, 23 on a slow tier paced to the rate that
// makes loading them take about as long as computing them), prefilled by computing chunks from the
// head while a loader thread moves pages from the tail for real. The plan covers every slow page
// exactly once, compute runs in causal order from the head, both sides do work, and the logits and
// 24 greedy tokens equal a full recompute's bit for bit; a failed load is computed instead.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "kvtier/transfer.hpp"
#include "kvtier_engine/compute_or_load.hpp"
#include "kvtier_engine/cpu/cpu_backend.hpp"
#include "kvtier_engine/model_files.hpp"
#include "kvtier_engine/tokenizer.hpp"

using namespace kvtier_engine;
using kvtier::device_slot;
using kvtier::token_id;

namespace {

constexpr std::size_t P = 16, N = 432, prefix_pages = 25, first_slow = 2, decode_steps = 24;

struct setup {
  model_files files = model_files::in(KVTIER_ENGINE_MODELS_DIR "/stories260K");
  model_weights w = model_weights::load_llama2c(files.checkpoint.string(), files.name);
  const model_config& m = w.config();
  kvtier::kv_shape shape = m.kv_shape(kvtier::dtype::fp32);
  static constexpr std::size_t slots = 64;
  std::vector<float> pool_mem = std::vector<float>(shape.bytes_per_page(P) * slots / 4, std::nanf(""));
  kv_pool pool{kvtier::transfer::layer_first_view(reinterpret_cast<std::byte*>(pool_mem.data()), shape, slots * P), P, slots};
  cpu_backend be{m, w, pool, backend_options{precision::fp32, 2}};
  // The slow tier's pages (page first), filled from the reference run's KV.
  std::vector<std::byte> store = std::vector<std::byte>(shape.bytes_per_page(P) * prefix_pages);
  kvtier::transfer::kv_buffer<kvtier::layout::page_first::mapping> store_view =
      kvtier::transfer::paged_view(store.data(), shape, prefix_pages, kvtier::page_size<>(P));
  std::vector<token_id> prompt;
  std::vector<device_slot> ref_table, table;
  setup() {
    for (std::size_t i = 0; i < N; ++i) prompt.push_back(token_id{std::int32_t(3 + (i * 2654435761u + 17) % (m.vocab - 3))});
    prompt[0] = bos_token;
    const std::size_t pages = (N + decode_steps + P - 1) / P;
    for (std::size_t i = 0; i < pages; ++i) {
      ref_table.push_back(device_slot{std::uint32_t(i)});
      table.push_back(device_slot{std::uint32_t(slots - 1 - 2 * i)});  // other slots, scattered
    }
  }
  // Greedy decode after a prefill whose logits are `logits`: the tokens.
  std::vector<token_id> decode(std::vector<float> logits, std::span<const device_slot> t) {
    std::vector<token_id> out;
    for (std::size_t s = 0; s < decode_steps; ++s) {
      const token_id tok{std::int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin())};
      out.push_back(tok);
      const decode_entry d{tok, N + s, t};
      BOOST_REQUIRE(be.decode(std::span(&d, 1), logits).has_value());
    }
    return out;
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(compute_from_the_head_load_from_the_tail_equals_full_recompute) {
  setup s;
  // Reference: the whole prompt computed (chunks of 64), then greedy decoding.
  std::vector<float> ref_logits(s.m.vocab), logits(s.m.vocab);
  const auto c0 = std::chrono::steady_clock::now();
  for (std::size_t b = 0; b < N; b += 64)
    BOOST_REQUIRE(s.be.prefill({std::span(s.prompt).subspan(b, std::min<std::size_t>(64, N - b)), b,
                                std::span(s.ref_table).first((std::min(N, b + 64) + P - 1) / P)},
                               ref_logits, {})
                      .has_value());
  const double full_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - c0).count();
  const auto ref_tokens = s.decode(ref_logits, s.ref_table);
  // The prefix's KV goes to the slow tier: reference slot i -> store page i.
  std::vector<kvtier::transfer::page_pair> to_store;
  for (std::size_t i = 0; i < prefix_pages; ++i) to_store.push_back({s.ref_table[i].value(), std::uint32_t(i)});
  BOOST_REQUIRE(kvtier::transfer::cpu::backup(s.pool.view, s.store_view, to_store).has_value());

  for (const bool fail_first_load : {false, true}) {
    BOOST_TEST_CONTEXT("a failed load: " << fail_first_load) {
      std::fill(s.pool_mem.begin(), s.pool_mem.end(), std::nanf(""));
      auto move = [&](kvtier::page_range r) {
        std::vector<kvtier::transfer::page_pair> pairs;
        for (std::size_t p = r.begin; p < r.end; ++p) pairs.push_back({std::uint32_t(p), s.table[p].value()});
        return kvtier::transfer::cpu::load(s.store_view, s.pool.view, pairs).has_value();
      };
      // The head (pages on a fast tier) is in the pool before the prefill starts.
      BOOST_REQUIRE(move({0, first_slow}));
      const std::size_t page_bytes = s.shape.bytes_per_page(P);
      kvtier::compute_or_load_config cfg;
      cfg.page_tokens = P;
      cfg.compute_chunk_pages = 2;
      cfg.load_batch_pages = 2;
      cfg.page_bytes = page_bytes;
      cfg.compute.per_token_s = full_s / double(N);
      // A link at which loading the slow pages takes as long as computing them.
      const double slow_compute_s = cfg.compute.seconds(first_slow * P, prefix_pages * P);
      cfg.load_bytes_per_s = double((prefix_pages - first_slow) * page_bytes) / slow_compute_s;
      bool failed_once = false;
      throttled_loader loader(cfg.load_bytes_per_s, page_bytes, [&](kvtier::page_range r) {
        if (fail_first_load && !failed_once) {
          failed_once = true;
          return false;  // the tier lost this range: it must be computed
        }
        return move(r);
      });
      const auto r = prefill_compute_or_load(s.be, loader, s.prompt, s.table, first_slow, prefix_pages, cfg, logits);
      BOOST_REQUIRE(r.has_value());
      BOOST_TEST_MESSAGE("computed " << r->computed.size() << " chunks, loaded " << r->loaded.size() << " batches, meeting page "
                                     << r->meeting_page << ", prefix " << r->prefix_s * 1e3 << " ms (predicted compute only "
                                     << r->predicted_compute_only_s * 1e3 << ", load only " << r->predicted_load_only_s * 1e3
                                     << ", both " << r->predicted_both_s * 1e3 << ")");
      BOOST_TEST(covers_exactly_once(r->computed, r->loaded, first_slow, prefix_pages));
      BOOST_TEST(!r->computed.empty());
      BOOST_TEST(!r->loaded.empty());
      BOOST_TEST(r->failed.size() == (fail_first_load ? 1u : 0u));
      // Causal order: the head's chunks are contiguous from first_slow (a failed range, computed
      // last, starts where the others ended or above).
      std::size_t next = first_slow;
      for (const auto& c : r->computed) {
        if (c.begin == next) next = c.end;
        else BOOST_TEST((fail_first_load && c.begin > next));
      }
      BOOST_TEST(std::memcmp(logits.data(), ref_logits.data(), logits.size() * sizeof(float)) == 0);
      const auto tokens = s.decode(logits, s.table);
      std::size_t same = 0;
      for (std::size_t i = 0; i < decode_steps; ++i) same += tokens[i] == ref_tokens[i];
      BOOST_TEST(same == decode_steps);
    }
  }
}

BOOST_AUTO_TEST_CASE(a_prefix_that_leaves_nothing_to_compute_is_an_error) {
  setup s;
  std::vector<float> logits(s.m.vocab);
  kvtier::compute_or_load_config cfg;
  cfg.page_bytes = 1;
  cfg.compute.per_token_s = 1e-6;
  cfg.load_bytes_per_s = 1e6;
  throttled_loader loader(1e6, 1, [](kvtier::page_range) { return true; });
  const std::span<const token_id> whole_pages = std::span(s.prompt).first(prefix_pages * P);
  BOOST_TEST((prefill_compute_or_load(s.be, loader, whole_pages, s.table, 0, prefix_pages, cfg, logits).code() ==
              kvtier::errc::invalid_argument));
}

namespace {
// A loader whose moves finish inside start(): every completion is already there at the next poll.
struct instant_loader {
  std::function<bool(kvtier::page_range)> move;
  std::deque<load_completion> done;
  void start(kvtier::page_range r) { done.push_back({r, 1e-6 * double(r.size()), move(r)}); }
  load_completion wait() {
    const load_completion c = done.front();
    done.pop_front();
    return c;
  }
  std::optional<load_completion> poll() {
    if (done.empty()) return std::nullopt;
    return wait();
  }
};
}  // namespace

// A fast tier whose loads complete between two polls (the planner gives compute nothing: the load
// side finishes everything sooner): the plan must still run to the end, not stop for want of
// something in flight (the first H200 run stopped there at 16 GB/s with an I/O error).
BOOST_AUTO_TEST_CASE(loads_that_finish_between_polls_never_stall_the_plan) {
  setup s;
  std::vector<float> ref_logits(s.m.vocab), logits(s.m.vocab);
  BOOST_REQUIRE(s.be.prefill({s.prompt, 0, s.ref_table}, ref_logits, {}).has_value());
  std::vector<kvtier::transfer::page_pair> to_store;
  for (std::size_t i = 0; i < prefix_pages; ++i) to_store.push_back({s.ref_table[i].value(), std::uint32_t(i)});
  BOOST_REQUIRE(kvtier::transfer::cpu::backup(s.pool.view, s.store_view, to_store).has_value());
  instant_loader loader{[&](kvtier::page_range r) {
    std::vector<kvtier::transfer::page_pair> pairs;
    for (std::size_t p = r.begin; p < r.end; ++p) pairs.push_back({std::uint32_t(p), s.table[p].value()});
    return kvtier::transfer::cpu::load(s.store_view, s.pool.view, pairs).has_value();
  }};
  kvtier::compute_or_load_config cfg;
  cfg.page_tokens = P;
  cfg.compute_chunk_pages = 2;
  cfg.load_batch_pages = 2;
  cfg.page_bytes = s.shape.bytes_per_page(P);
  cfg.compute.per_token_s = 1e-3;  // compute modelled far slower than the tier
  cfg.load_bytes_per_s = 1e12;
  const auto r = prefill_compute_or_load(s.be, loader, s.prompt, s.table, 0, prefix_pages, cfg, logits);
  BOOST_REQUIRE(r.has_value());
  BOOST_TEST(r->computed.empty());
  BOOST_TEST(covers_exactly_once(r->computed, r->loaded, 0, prefix_pages));
  BOOST_TEST(std::memcmp(logits.data(), ref_logits.data(), logits.size() * sizeof(float)) == 0);
}
