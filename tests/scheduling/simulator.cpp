// The serving-loop simulator (scheduling/simulator.hpp) on the first requests of the synthetic
// trace and on a burst of long-document questions, under every policy alone and together, with
// and without scheduler-aware prefetch and eviction, in the device+host and device+host+file modes.
// Invariants: every request served once, no page served wrong (each page a request reads holds
// the content its own prefix maps to), simulated time monotone, no deadlock; the index's tier
// counts within the pools' capacities.
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <string>
#include <unistd.h>
#include <vector>

#include "kvtier_engine/scheduling/cost_model.hpp"
#include "kvtier_engine/scheduling/policies.hpp"
#include "kvtier_engine/scheduling/simulator.hpp"
#include "kvtier_engine/scheduling/summary.hpp"
#include "kvtier_engine/serving/cost_model.hpp"
#include "kvtier_engine/serving/policy.hpp"
#include "kvtier_engine/serving/workloads.hpp"

using namespace kvtier_engine;
using namespace kvtier_engine::scheduling;

namespace {

constexpr std::size_t vocab = 128256;

serving::workload short_trace() {
  serving::mooncake_options o;
  o.path = KVTIER_TEST_TRACE;
  o.limit = 150;
  o.context = 16384;
  o.time_scale = 0.05;  // 20x faster than recorded: a queue builds
  return serving::mooncake_workload(o, vocab);
}

serving::workload burst_longdoc() {
  serving::longdoc_options l;
  l.documents = 12;
  l.questions = 6;
  l.doc_min = 4096;
  l.doc_max = 12288;
  l.requests = 120;
  l.rate = 6;  // over capacity: many questions about one document wait together
  l.zipf = 1.0;
  l.seed = 11;
  return serving::longdoc_workload(l, vocab);
}

serving::workload chat() {
  serving::chat_options c;
  c.sessions = 30;
  c.turns = 4;
  c.system_tokens = 512;
  c.user_min = 64;
  c.user_max = 512;
  c.reply_tokens = 64;
  c.rate = 3;
  c.think_s = 1.0;
  c.seed = 4;
  return serving::chat_workload(c, vocab);
}

struct outcome {
  sim_result r;
  sim_summary s;
  std::size_t device_pages = 0, host_pages = 0;
};

template <class Policy>
outcome simulate(const serving::workload& w, Policy p, sim_mode mode, bool prefetch, std::size_t device = 1024, std::size_t host = 2048) {
  sim_cache_config cc{16, device, host, 4096, mode};
  sim_options so;
  so.prefetch_aware = prefetch;
  simulator<Policy> sim(h200_default(), cc, so, std::move(p));
  outcome o;
  o.r = sim.run(w);
  o.s = summarize(o.r);
  o.device_pages = sim.cache().index().pages_in(kvtier::tier_id::device);
  o.host_pages = sim.cache().index().pages_in(kvtier::tier_id::host);
  return o;
}

void check(const serving::workload& w, const outcome& o, std::size_t device = 1024, std::size_t host = 2048) {
  const auto& c = o.r.counters;
  BOOST_TEST(!c.deadlock);
  BOOST_TEST(c.content_mismatches == 0u);  // no page served wrong
  BOOST_TEST(c.time_regressions == 0u);    // time monotone
  BOOST_TEST(c.pages_read > 0u);           // the check ran on pages actually read
  BOOST_TEST_REQUIRE(o.r.records.size() == w.requests.size());
  for (const auto& spec : w.requests) {
    const sim_record& rec = o.r.records[spec.id];
    BOOST_TEST_CONTEXT("request " << spec.id) {
      BOOST_TEST(rec.served == 1u);  // served once
      BOOST_TEST(rec.id == spec.id);
      BOOST_TEST(rec.output_tokens == spec.max_new_tokens);
      BOOST_TEST(rec.arrival_s <= rec.admitted_s);
      BOOST_TEST(rec.admitted_s <= rec.first_token_s);
      BOOST_TEST(rec.first_token_s <= rec.finish_s);
      BOOST_TEST(rec.reused_tokens + rec.computed_tokens == rec.prompt_tokens);
      BOOST_TEST(rec.computed_tokens >= 1u);
    }
  }
  BOOST_TEST(o.s.invariants_ok);
  BOOST_TEST(o.device_pages <= device);  // the index's tier counts stay within the pools
  BOOST_TEST(o.host_pages <= host);
}

const std::vector<features> all_features{{}, {true, false, false}, {false, true, false}, {false, false, true}, {true, true, true}};

}  // namespace

BOOST_AUTO_TEST_CASE(trace_every_policy_keeps_the_invariants) {
  const serving::workload w = short_trace();
  for (sim_mode mode : {sim_mode::host, sim_mode::file})
    for (bool prefetch : {false, true}) {
      BOOST_TEST_CONTEXT("mode " << int(mode) << " prefetch " << prefetch) {
        check(w, simulate(w, serving::fcfs{}, mode, prefetch));
        check(w, simulate(w, serving::longest_prefix{}, mode, prefetch));
        for (const features& f : all_features) {
          const io_aware<serving::longest_prefix> p(f, h200_default());
          BOOST_TEST_CONTEXT(p.name()) { check(w, simulate(w, p, mode, prefetch)); }
        }
      }
    }
}

BOOST_AUTO_TEST_CASE(chat_follow_ups_reuse_their_history) {
  const serving::workload w = chat();
  const outcome o = simulate(w, io_aware<serving::longest_prefix>(features{true, true, true}, h200_default()), sim_mode::file, true);
  check(w, o);
  // Turns after the first find their history cached.
  std::size_t later = 0, reused = 0;
  for (const auto& spec : w.requests)
    if (spec.turn > 0) ++later, reused += o.r.records[spec.id].reused_tokens > 0;
  BOOST_TEST(reused * 10 >= later * 9);
}

BOOST_AUTO_TEST_CASE(delay_hit_avoidance_removes_duplicate_prefills) {
  const serving::workload w = burst_longdoc();
  const outcome lpm = simulate(w, serving::longest_prefix{}, sim_mode::host, false);
  const outcome dh = simulate(w, io_aware<serving::longest_prefix>(features{true, false, false}, h200_default()), sim_mode::host, false);
  check(w, lpm);
  check(w, dh);
  // Longest-prefix-match admits questions about a document still being computed together: each
  // computes it again. Delay-hit avoidance defers them until it is cached.
  BOOST_TEST(lpm.r.counters.duplicate_pages > 0u);
  BOOST_TEST(dh.r.counters.duplicate_pages < lpm.r.counters.duplicate_pages);
  BOOST_TEST(dh.r.counters.delay_hit_deferrals > 0u);
}

BOOST_AUTO_TEST_CASE(the_same_run_twice_is_the_same) {
  const serving::workload w = short_trace();
  const io_aware<serving::longest_prefix> p(features{true, true, true}, h200_default());
  const outcome a = simulate(w, p, sim_mode::file, true), b = simulate(w, p, sim_mode::file, true);
  BOOST_TEST(a.r.counters.steps == b.r.counters.steps);
  BOOST_TEST(a.s.ttft_p90 == b.s.ttft_p90);
  BOOST_TEST(a.r.counters.pages_loaded == b.r.counters.pages_loaded);
}

// The engine's host overhead per step (cost_model::step_overhead_s), when measured: every step
// that ran something pays it once, after its calls; time stays monotone and the invariants hold.
BOOST_AUTO_TEST_CASE(step_overhead_is_paid_once_per_step) {
  const serving::workload w = burst_longdoc();
  cost_model with = h200_default();
  with.step_a = 1e-3;
  with.step_b = 1e-4;
  with.step_c = 1e-6;
  BOOST_TEST(h200_default().step_overhead_s(5, 100) == 0.0);  // not measured: none
  BOOST_TEST(with.step_overhead_s(0, 100) == 0.0);            // a step that ran nothing
  BOOST_TEST(with.step_overhead_s(5, 100) == 1e-3 + 5e-4 + 1e-4, boost::test_tools::tolerance(1e-12));
  const sim_cache_config cc{16, 1024, 2048, 4096, sim_mode::host};
  simulator<serving::fcfs> plain(h200_default(), cc, sim_options{}, serving::fcfs{});
  simulator<serving::fcfs> paid(with, cc, sim_options{}, serving::fcfs{});
  outcome a, b;
  a.r = plain.run(w), a.s = summarize(a.r);
  b.r = paid.run(w), b.s = summarize(b.r);
  a.device_pages = plain.cache().index().pages_in(kvtier::tier_id::device), a.host_pages = plain.cache().index().pages_in(kvtier::tier_id::host);
  b.device_pages = paid.cache().index().pages_in(kvtier::tier_id::device), b.host_pages = paid.cache().index().pages_in(kvtier::tier_id::host);
  check(w, a);
  check(w, b);
  BOOST_TEST(a.r.counters.overhead_s == 0.0);
  const auto& c = b.r.counters;
  // At least a per step, at most a + b·(max_batch + chunks) + c·(every page loaded) per step.
  BOOST_TEST(c.overhead_s >= 1e-3 * double(c.steps) * (1 - 1e-9));
  BOOST_TEST(c.overhead_s <= 1e-3 * double(c.steps) + 1e-4 * double(c.steps) * 64 + 1e-6 * double(c.pages_loaded) + 1e-9);
  BOOST_TEST(c.overhead_s < c.step_s);
  BOOST_TEST(b.s.throughput_rps < a.s.throughput_rps);  // a saturated burst: the host's time is lost
}

// The IO-aware policies as serving::server runs them (server_form: priority and not_now, no batch
// select, no chunk reordering): the invariants hold, and delay-hit avoidance still defers questions
// whose document another request is computing, with fewer duplicate prefills than lpm.
BOOST_AUTO_TEST_CASE(server_form_runs_the_engine_policies) {
  const serving::workload w = burst_longdoc();
  const outcome lpm = simulate(w, serving::longest_prefix{}, sim_mode::host, false);
  using strata = io_aware<serving::longest_prefix>;
  const outcome dh = simulate(w, server_form<strata>{strata(features{true, false, false}, h200_default())}, sim_mode::host, false);
  const outcome all = simulate(w, server_form<strata>{strata(features{true, true, true}, h200_default())}, sim_mode::file, true);
  check(w, dh);
  check(w, all);
  BOOST_TEST(dh.r.counters.delay_hit_deferrals > 0u);
  BOOST_TEST(dh.r.counters.duplicate_pages < lpm.r.counters.duplicate_pages);
  static_assert(!detail::batch_selecting<server_form<strata>>);
  static_assert(serving::scheduling_policy<server_form<strata>>);
}

// An engine that batches a step's prefill chunks (cost_model::batched_prefill) is charged one call
// per step: three requests admitted together, each a single chunk, all get their first token when
// the one call ends (a + b·Σn + c·Σn²/2), where one call per chunk ends them one after the other.
BOOST_AUTO_TEST_CASE(batched_prefill_is_one_call_per_step) {
  serving::workload w;
  const std::size_t lengths[] = {300, 517, 700};
  for (std::size_t i = 0; i < 3; ++i) {
    serving::request_spec r;
    r.id = i;
    r.ns = kvtier::namespace_id{std::uint32_t(10 + i)};  // nothing shared
    for (std::size_t t = 0; t < lengths[i]; ++t) r.prompt.push_back(kvtier::token_id{std::int32_t(1 + (t * 7 + i) % 1000)});
    r.max_new_tokens = 1;
    w.requests.push_back(r);
  }
  w.vocab = 1000;
  cost_model per_chunk = h200_default(), batched = h200_default();
  batched.batched_prefill = true;
  BOOST_TEST(batched.prefill_call_s(300, 300.0 * 150) == batched.prefill_s(300, 0));  // one chunk: the same formula
  const sim_cache_config cc{16, 1024, 2048, 4096, sim_mode::host};
  simulator<serving::fcfs> a(per_chunk, cc, sim_options{}, serving::fcfs{}), b(batched, cc, sim_options{}, serving::fcfs{});
  const sim_result ra = a.run(w), rb = b.run(w);
  std::size_t sum = 0;
  double pairs = 0, alone = 0;
  for (const std::size_t n : lengths) sum += n, pairs += double(n) * double(n) / 2;
  const double call = batched.prefill_call_s(sum, pairs);
  for (std::size_t i = 0; i < 3; ++i) {
    alone += per_chunk.prefill_s(lengths[i], 0);
    BOOST_TEST(ra.records[i].first_token_s == alone, boost::test_tools::tolerance(1e-9));  // after the chunks before it
    BOOST_TEST(rb.records[i].first_token_s == call, boost::test_tools::tolerance(1e-9));   // all at the one call's end
  }
  BOOST_TEST(rb.records[2].first_token_s < ra.records[2].first_token_s - 1.9 * per_chunk.prefill_a);  // two calls' a saved
  BOOST_TEST(ra.counters.steps == rb.counters.steps);
}

// The batched charge on loaded prefixes and every policy (bubble filling splits a step's chunks
// into the ready ones' call, then the waiting ones'): invariants hold, loads still wait, and a
// saturated burst serves faster than with one call per chunk.
BOOST_AUTO_TEST_CASE(batched_prefill_keeps_the_invariants) {
  const serving::workload w = burst_longdoc();
  cost_model batched = h200_default();
  batched.batched_prefill = true;
  const sim_cache_config cc{16, 1024, 2048, 4096, sim_mode::host};
  auto run = [&](const cost_model& cm, auto policy) {
    simulator<decltype(policy)> sim(cm, cc, sim_options{}, policy);
    outcome o;
    o.r = sim.run(w), o.s = summarize(o.r);
    o.device_pages = sim.cache().index().pages_in(kvtier::tier_id::device);
    o.host_pages = sim.cache().index().pages_in(kvtier::tier_id::host);
    return o;
  };
  const outcome per_chunk = run(h200_default(), serving::fcfs{}), one = run(batched, serving::fcfs{});
  check(w, per_chunk);
  check(w, one);
  BOOST_TEST(one.r.counters.load_wait_s <= one.r.counters.step_s);
  BOOST_TEST(one.s.throughput_rps > per_chunk.s.throughput_rps);
  for (const features& f : all_features) {
    const io_aware<serving::longest_prefix> p(f, h200_default());
    BOOST_TEST_CONTEXT(p.name()) {
      const outcome o = run(batched, p);
      check(w, o);
      BOOST_TEST(o.r.counters.load_wait_s <= o.r.counters.step_s);
    }
  }
}

namespace {
// s written by the engine's cost_model.json writer and read back by the simulator's loader.
cost_model round_trip(const serving::cost_samples& s) {
  const auto path = (std::filesystem::temp_directory_path() / ("kvtier-cost-model-" + std::to_string(::getpid()) + ".json")).string();
  const serving::cost_model_info info{"x", "cpu", "cpu", "host", 16, 4096, {}};
  serving::write_cost_model_json(path, info, s, {});
  const cost_model m = load_cost_model(path, 5);
  std::filesystem::remove(path);
  return m;
}
}  // namespace

// cost_model.json of a batching engine: the prefill fit over calls of several chunks recovers
// t = a + b·Σn + c·Σn(s + n/2), prefill_batched reads back; a file without it (older, or an engine
// that does not batch) is one call per chunk.
BOOST_AUTO_TEST_CASE(batched_cost_model_round_trips) {
  const double a = 1.5e-3, b = 2.5e-5, c = 1.25e-9;
  serving::cost_samples s;
  for (std::size_t k = 1; k <= 40; ++k) {
    serving::prefill_sample p{0, 0, 0, 1 + k % 4, 0};
    for (std::size_t i = 0; i < p.chunks; ++i) {
      const std::size_t n = 16 + (k * 37 + i * 101) % 2000, cached = (k * 13 + i * 7) % 5 * 1024;
      p.new_tokens += n, p.cached_tokens += cached, p.pairs += double(n) * (double(cached) + double(n) / 2);
    }
    if (p.chunks == 1) p.pairs = -1;  // a single chunk's sample as the per-chunk path writes it
    p.seconds = a + b * double(p.new_tokens) + c * p.pair_tokens();
    s.prefill.push_back(p);
  }
  for (std::size_t k = 1; k <= 5; ++k) s.decode.push_back({k, 1000 * k, 0.01 + 1e-4 * double(k)});
  const serving::linear_fit f = serving::fit_prefill(s.prefill);
  BOOST_TEST(f.coef[0] == a, boost::test_tools::tolerance(1e-6));
  BOOST_TEST(f.coef[1] == b, boost::test_tools::tolerance(1e-6));
  BOOST_TEST(f.coef[2] == c, boost::test_tools::tolerance(1e-6));
  s.batched_prefill = true;
  const cost_model yes = round_trip(s);
  s.batched_prefill = false;
  const cost_model no = round_trip(s);
  BOOST_TEST(yes.batched_prefill);
  BOOST_TEST(!no.batched_prefill);
  BOOST_TEST(yes.prefill_a == a, boost::test_tools::tolerance(1e-5));
  BOOST_TEST(yes.prefill_c == c, boost::test_tools::tolerance(1e-5));
  BOOST_TEST(!h200_default().batched_prefill);
}

// Load-aware steps (the server's default since it batches: decode first, a chunk whose prefix is
// still loading left for a later step while the step has other work): on a burst over loaded
// prefixes with a slow H2D link, the invariants hold, chunks were deferred, the time waited on
// loads falls, and load_aware_steps round-trips through cost_model.json.
BOOST_AUTO_TEST_CASE(load_aware_steps_defer_loading_chunks) {
  const serving::workload w = burst_longdoc();
  cost_model base = h200_default();
  base.batched_prefill = true;
  base.load_bytes_per_s = 8e9;  // loads long against a step: a prefill would wait for them
  cost_model aware = base;
  aware.load_aware = true;
  const sim_cache_config cc{16, 1024, 2048, 4096, sim_mode::host};
  auto run = [&](const cost_model& cm) {
    simulator<serving::fcfs> sim(cm, cc, sim_options{}, serving::fcfs{});
    outcome o;
    o.r = sim.run(w), o.s = summarize(o.r);
    o.device_pages = sim.cache().index().pages_in(kvtier::tier_id::device);
    o.host_pages = sim.cache().index().pages_in(kvtier::tier_id::host);
    return o;
  };
  const outcome inline_waits = run(base), deferred = run(aware);
  check(w, inline_waits);
  check(w, deferred);
  BOOST_TEST(inline_waits.r.counters.load_deferrals == 0u);
  BOOST_TEST(deferred.r.counters.load_deferrals > 0u);
  BOOST_TEST(inline_waits.r.counters.load_wait_s > 0.0);
  BOOST_TEST(deferred.r.counters.load_wait_s < inline_waits.r.counters.load_wait_s);

  serving::cost_samples s;
  for (std::size_t k = 1; k <= 5; ++k) s.prefill.push_back({100 * k, 0, 1e-3 * double(k), 1, -1});
  for (std::size_t k = 1; k <= 5; ++k) s.decode.push_back({k, 1000 * k, 0.01 + 1e-4 * double(k)});
  s.load_aware = true;
  const cost_model yes = round_trip(s);
  s.load_aware = false;
  const cost_model no = round_trip(s);
  BOOST_TEST(yes.load_aware);
  BOOST_TEST(!no.load_aware);
}
