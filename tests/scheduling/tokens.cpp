// Scheduling never changes outputs: the real serving loop (serving::server, CPU backend,
// stories260K, kvtier device+host) serves the same greedy requests under FCFS and under the
// IO-aware policies in their per-request form (balance, bubble, both, over FCFS and over
// longest-prefix-match); every request's tokens are identical. The admission orders differ (checked),
// so the test compares genuinely different schedules.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string_view>
#include <vector>

#include "kvtier_engine/scheduling/cost_model.hpp"
#include "kvtier_engine/scheduling/policies.hpp"
#include "serving/serving_fixture.hpp"

using namespace kvtier_test::serving;
using kvtier_engine::scheduling::features;
using kvtier_engine::scheduling::io_aware;

namespace {

// Long-document questions arriving at once (a queue for the policies to order, whatever the
// machine's speed: at 2,000/s a quiet machine served each before the next came, and delay-hit
// avoidance had nothing to defer) and chat sessions.
workload mixed() {
  const longdoc_options l{.documents = 5, .questions = 3, .doc_min = 160, .doc_max = 320, .question_tokens = 12,
      .answer_tokens = 6, .requests = 18, .rate = 1e9, .zipf = 0.5, .seed = 9};
  const chat_options c{.sessions = 3, .turns = 3, .system_tokens = 32, .user_min = 8, .user_max = 24,
      .reply_tokens = 8, .rate = 1000, .think_s = 0.001, .seed = 2};
  return mixed_workload(l, c, 0.0);
}

template <class Policy>
run_result serve(const workload& wl, Policy p) {
  const server_options so{.token_budget = 96, .chunk_tokens = 64, .max_batch = 3};
  return serve_stories<host_cache>(wl, 64, 256, so, std::move(p));
}

// Admission order: request ids by the time they were admitted (ties by id).
std::vector<std::size_t> admission_order(const run_result& r) {
  std::vector<std::size_t> ids(r.records.size());
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = i;
  std::stable_sort(ids.begin(), ids.end(), [&](std::size_t a, std::size_t b) { return r.records[a].admitted_s < r.records[b].admitted_s; });
  return ids;
}

}  // namespace

BOOST_AUTO_TEST_CASE(io_aware_policies_keep_greedy_tokens) {
  const workload w = mixed();
  const run_result base = serve(w, fcfs{});
  const auto cm = scheduling::h200_default();
  std::vector<run_result> runs;
  runs.push_back(serve(w, io_aware<fcfs>(features{true, false, false}, cm)));  // delay-hit alone: not_now in the server
  runs.push_back(serve(w, io_aware<fcfs>(features{false, true, false}, cm)));
  runs.push_back(serve(w, io_aware<fcfs>(features{false, false, true}, cm)));
  runs.push_back(serve(w, io_aware<fcfs>(features{true, true, true}, cm)));
  runs.push_back(serve(w, io_aware<longest_prefix>(features{true, true, true}, cm)));
  runs.push_back(serve(w, longest_prefix{}));
  std::size_t reordered = 0;
  for (std::size_t k = 0; k < runs.size(); ++k) {
    BOOST_TEST_CONTEXT("policy " << k) {
      BOOST_TEST_REQUIRE(runs[k].records.size() == base.records.size());
      for (std::size_t i = 0; i < base.records.size(); ++i) {
        BOOST_TEST_CONTEXT("request " << i) {
          BOOST_TEST(runs[k].records[i].output.size() == w.requests[i].max_new_tokens);
          BOOST_TEST(runs[k].records[i].output == base.records[i].output, "request " << i << " differs under policy " << k);
        }
      }
      reordered += admission_order(runs[k]) != admission_order(base);
    }
  }
  BOOST_TEST(reordered > 0u);  // at least one policy admitted in another order than FCFS
  // Delay-hit avoidance ran in the real server: questions on a document another request was
  // computing were left queued (not_now), and none of the policies without it deferred anything.
  BOOST_TEST(runs[0].counters.policy_deferrals > 0u);
  BOOST_TEST(runs[3].counters.policy_deferrals > 0u);
  BOOST_TEST(runs[1].counters.policy_deferrals == 0u);
  BOOST_TEST(base.counters.policy_deferrals == 0u);
}

// The prefix identity the server shows a policy: requests on the same uncached document share it
// (the document's first page) while the document is missing; once the document is cached, a
// question's missing prefix lies past it (another key). Checked through a policy that records what
// it is shown.
struct recording {
  using kvtier_serving_policy = policy_tag;
  static constexpr bool uses_cached_prefix = true;
  std::shared_ptr<std::vector<queued_request>> seen = std::make_shared<std::vector<queued_request>>();
  std::string_view name() const noexcept { return "recording"; }
  double priority(const queued_request& q, const in_flight&) const {
    seen->push_back(q);
    return q.arrival_s;
  }
};

BOOST_AUTO_TEST_CASE(queued_requests_carry_their_missing_prefix) {
  const longdoc_options l{.documents = 1, .questions = 4, .doc_min = 200, .doc_max = 200, .question_tokens = 12,
      .answer_tokens = 4, .requests = 4, .rate = 4000, .seed = 4};
  const workload w = longdoc_workload(l, model().m.vocab);
  // One at a time: the others queue while the document is computed, then hit it.
  const server_options so{.token_budget = 64, .chunk_tokens = 64, .max_batch = 1};
  recording rec;
  (void)serve_stories<host_cache>(w, 64, 256, so, rec);
  std::size_t uncached = 0, same_key = 0, cached = 0, other_key = 0;
  std::uint64_t first = 0;
  for (const auto& q : *rec.seen) {
    if (q.cached_total() == 0) {
      ++uncached;
      if (first == 0) first = q.missing_prefix;
      same_key += q.missing_prefix != 0 && q.missing_prefix == first;
    } else if (q.cached_total() >= 192) {  // the document's 12 whole pages
      ++cached;
      other_key += q.missing_prefix != first;
    }
  }
  BOOST_TEST(uncached > 1u);
  BOOST_TEST(same_key == uncached);
  BOOST_TEST(cached > 0u);
  BOOST_TEST(other_key == cached);
}

// The server measures the host's share of each step (outside its prefill and decode calls) and
// cost_model.json carries its fit, which the simulator reads; a file without it (written before
// the server measured it) gives no overhead.
BOOST_AUTO_TEST_CASE(the_server_measures_its_step_overhead) {
  const workload w = mixed();
  const run_result r = serve(w, fcfs{});
  BOOST_TEST_REQUIRE(!r.samples.step.empty());
  BOOST_TEST(r.samples.step.size() <= r.counters.steps);
  std::size_t sequences = 0, loaded = 0, record_loaded = 0;
  double host = 0;
  for (const auto& s : r.samples.step) {
    BOOST_TEST(s.seconds >= 0.0);
    BOOST_TEST(s.sequences >= 1u);
    sequences += s.sequences, loaded += s.loaded_pages, host += s.seconds;
  }
  std::size_t calls = 0;
  for (const auto& p : r.samples.prefill) calls += p.chunks;  // a batched prefill call: its chunks
  for (const auto& d : r.samples.decode) calls += d.batch;
  BOOST_TEST(sequences == calls);  // every prefill chunk and decode sequence counted once
  for (const auto& rec : r.records) record_loaded += rec.loaded_pages;
  // Every load the cache issued, counted in the step whose admission issued it (a request refused
  // for room after its load and admitted later loads again: more than the records keep).
  BOOST_TEST(loaded == r.counters.pages_loaded);
  BOOST_TEST(loaded >= record_loaded);
  BOOST_TEST(host <= r.counters.step_s);
  const auto dir = std::filesystem::temp_directory_path();
  const std::string with = (dir / "kvtier_scheduling_cost_with.json").string(), without = (dir / "kvtier_scheduling_cost_without.json").string();
  const cost_model_info info{"stories260K", "cpu", "cpu", "device+host", 16, 4096, {}};
  write_cost_model_json(with, info, r.samples, {});
  cost_samples old = r.samples;
  old.step.clear();
  write_cost_model_json(without, info, old, {});
  const auto fit = fit_step_overhead(r.samples.step);
  const auto m = scheduling::load_cost_model(with, 5), o = scheduling::load_cost_model(without, 5);
  BOOST_TEST(m.step_a == fit.coef[0], boost::test_tools::tolerance(1e-5));
  BOOST_TEST(m.step_b == fit.coef[1], boost::test_tools::tolerance(1e-5));
  BOOST_TEST(m.step_c == fit.coef[2], boost::test_tools::tolerance(1e-5));
  BOOST_TEST(o.step_a == 0.0);
  BOOST_TEST(o.step_b == 0.0);
  BOOST_TEST(o.step_c == 0.0);
  BOOST_TEST(o.prefill_a == m.prefill_a);  // the rest reads the same
  std::remove(with.c_str());
  std::remove(without.c_str());
}
