// The serving layer's parts: the scheduling_policy concept (opt-in, one clause per requirement),
// the workload generators (Mooncake expansion identical to kvtier-replay's, seeded long-document
// QA and chat), percentiles and the cost-model fit.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <string_view>
#include <vector>

#include "common/mooncake_trace.hpp"
#include "kvtier_engine/serving/cost_model.hpp"
#include "kvtier_engine/serving/metrics.hpp"
#include "kvtier_engine/serving/modes.hpp"
#include "kvtier_engine/serving/policy.hpp"
#include "kvtier_engine/serving/workloads.hpp"

using namespace kvtier_engine::serving;

namespace {
// Models the requirements but does not opt in.
struct no_tag {
  static constexpr bool uses_cached_prefix = false;
  std::string_view name() const { return "x"; }
  double priority(const queued_request&, const in_flight&) const { return 0; }
};
// Opts in, but ranks with an int.
struct int_priority {
  using kvtier_serving_policy = policy_tag;
  static constexpr bool uses_cached_prefix = false;
  std::string_view name() const { return "x"; }
  int priority(const queued_request&, const in_flight&) const { return 0; }
};
// Opts in, but does not say whether it needs the cached prefix.
struct no_prefix_flag {
  using kvtier_serving_policy = policy_tag;
  std::string_view name() const { return "x"; }
  double priority(const queued_request&, const in_flight&) const { return 0; }
};
// An IO-aware policy fits: it sees the prefix per tier and what is in flight.
struct defer_disk_while_loading {
  using kvtier_serving_policy = policy_tag;
  static constexpr bool uses_cached_prefix = true;
  std::string_view name() const { return "io"; }
  double priority(const queued_request& q, const in_flight& f) const {
    return q.arrival_s + (f.load_pages > 0 && q.cached_tokens[2] > 0 ? 1e3 : 0.0);
  }
};
}  // namespace

static_assert(scheduling_policy<fcfs>);
static_assert(scheduling_policy<longest_prefix>);
static_assert(scheduling_policy<defer_disk_while_loading>);
static_assert(!scheduling_policy<no_tag>);
static_assert(!scheduling_policy<int_priority>);
static_assert(!scheduling_policy<no_prefix_flag>);
static_assert(!scheduling_policy<int>);

BOOST_AUTO_TEST_CASE(policies_rank_as_documented) {
  queued_request early{0, 1.0, 100, {}}, late_cached{1, 2.0, 100, {32, 16, 0, 0}};
  const in_flight f{};
  BOOST_TEST(fcfs{}.priority(early, f) < fcfs{}.priority(late_cached, f));
  BOOST_TEST(longest_prefix{}.priority(late_cached, f) < longest_prefix{}.priority(early, f));
  BOOST_TEST(late_cached.cached_total() == 48u);
}

BOOST_AUTO_TEST_CASE(mooncake_tokens_are_replays_folded_into_the_vocabulary) {
  mooncake_options o;
  o.path = KVTIER_TEST_TRACE;
  o.limit = 20;
  o.time_scale = 0.5;
  const workload w = mooncake_workload(o, 512);
  const auto trace = kvtier::examples::read_mooncake_trace(o.path);
  BOOST_TEST_REQUIRE(w.requests.size() == 20u);
  std::vector<kvtier::token_id> t;
  for (std::size_t i = 0; i < 20; ++i) {
    kvtier::examples::expand_prompt(trace[i], t);  // what kvtier-replay indexes
    const auto& r = w.requests[i];
    BOOST_TEST_REQUIRE(r.prompt.size() == t.size());
    bool same = true;
    for (std::size_t k = 0; k < t.size(); ++k) same &= r.prompt[k].value() == std::int32_t(std::uint32_t(t[k].value()) % 512);
    BOOST_TEST(same);
    BOOST_TEST(r.arrival_s == trace[i].timestamp_ms / 1000.0 * 0.5);
    BOOST_TEST(r.max_new_tokens == std::max<std::uint64_t>(1, trace[i].output_length));
  }
  // A context cuts prompts (shared prefixes stay shared) and keeps the output.
  o.context = 1024;
  o.max_output = 8;
  for (const auto& r : mooncake_workload(o, 512).requests) {
    BOOST_TEST(r.prompt.size() + r.max_new_tokens <= 1024u);
    BOOST_TEST(r.max_new_tokens <= 8u);
  }
}

BOOST_AUTO_TEST_CASE(longdoc_is_seeded_poisson_and_zipf) {
  longdoc_options o;
  o.documents = 10;
  o.questions = 3;
  o.doc_min = 100;
  o.doc_max = 200;
  o.question_tokens = 8;
  o.requests = 4000;
  o.rate = 50;
  o.zipf = 1.2;
  const workload a = longdoc_workload(o, 512), b = longdoc_workload(o, 512);
  BOOST_TEST_REQUIRE(a.requests.size() == 4000u);
  std::vector<std::size_t> per_doc(10);
  double prev = 0;
  for (std::size_t i = 0; i < a.requests.size(); ++i) {
    const auto& r = a.requests[i];
    BOOST_TEST_REQUIRE(r.prompt == b.requests[i].prompt);  // seeded
    BOOST_TEST(r.arrival_s > prev);
    prev = r.arrival_s;
    BOOST_TEST(r.prompt.size() >= 108u);
    BOOST_TEST(r.prompt.size() <= 208u);
    for (auto t : r.prompt) BOOST_TEST_REQUIRE((t.value() >= 1 && t.value() < 512));
    ++per_doc[r.doc];
  }
  BOOST_TEST(std::fabs(prev / 4000.0 - 1.0 / 50) < 0.1 / 50);  // mean gap 1/rate within 10%
  for (std::size_t d = 1; d < 10; ++d) {  // Zipf: ~ (d+1)^-1.2 of the first document's share
    const double expect = std::pow(double(d + 1), -1.2), got = double(per_doc[d]) / double(per_doc[0]);
    BOOST_TEST(std::fabs(got - expect) < 0.35 * expect + 0.02);
  }
  o.seed = 2;
  BOOST_TEST(longdoc_workload(o, 512).requests[0].prompt != a.requests[0].prompt);
}

BOOST_AUTO_TEST_CASE(chat_turns_follow_their_parent) {
  chat_options o;
  o.sessions = 3;
  o.turns = 4;
  const workload w = chat_workload(o, 512);
  BOOST_TEST_REQUIRE(w.requests.size() == 12u);
  for (const auto& r : w.requests) {
    BOOST_TEST(r.turn == r.id % 4);
    BOOST_TEST(r.session == r.id / 4);
    if (r.turn == 0) BOOST_TEST(r.parent == no_parent);
    else BOOST_TEST(r.parent == r.id - 1);
  }
  // Every session starts with the same system prompt.
  for (std::size_t s = 1; s < 3; ++s)
    BOOST_TEST(std::equal(w.requests[0].prompt.begin(), w.requests[0].prompt.begin() + 64, w.requests[s * 4].prompt.begin()));
}

BOOST_AUTO_TEST_CASE(bad_configurations_throw) {
  longdoc_options l;
  l.doc_min = 10, l.doc_max = 5;
  BOOST_CHECK_THROW(longdoc_workload(l, 512), kvtier::config_error);
  chat_options c;
  c.rate = 0;
  BOOST_CHECK_THROW(chat_workload(c, 512), kvtier::config_error);
  BOOST_CHECK_THROW(parse_modes("none,gpu"), kvtier::config_error);
  BOOST_TEST(parse_modes("host,file").size() == 2u);
}

BOOST_AUTO_TEST_CASE(percentiles_interpolate) {
  std::vector<double> v;
  for (int i = 100; i >= 1; --i) v.push_back(i);
  BOOST_TEST(percentile(v, 50) == 50.5);
  BOOST_TEST(percentile(v, 0) == 1.0);
  BOOST_TEST(percentile(v, 100) == 100.0);
  BOOST_TEST(std::fabs(percentile(v, 99) - 99.01) < 1e-9);
  BOOST_TEST(percentile({}, 90) == 0.0);
}

BOOST_AUTO_TEST_CASE(cost_fit_recovers_its_coefficients) {
  std::vector<prefill_sample> p;
  for (std::size_t n : {16, 64, 256, 1024})
    for (std::size_t s : {0, 512, 4096}) p.push_back({n, s, 1e-3 + 2e-6 * double(n) + 3e-10 * double(n) * (double(s) + double(n) / 2)});
  const linear_fit f = fit_prefill(p);
  BOOST_TEST(std::fabs(f.coef[0] - 1e-3) < 1e-9);
  BOOST_TEST(std::fabs(f.coef[1] - 2e-6) < 1e-11);
  BOOST_TEST(std::fabs(f.coef[2] - 3e-10) < 1e-14);
  BOOST_TEST(f.r2 > 0.999999);
  std::vector<decode_sample> d;
  for (std::size_t b : {1, 4, 16})
    for (std::size_t c : {100, 1000, 10000}) d.push_back({b, c * b, 5e-4 + 1e-5 * double(b) + 2e-9 * double(c * b)});
  const linear_fit g = fit_decode(d);
  BOOST_TEST(std::fabs(g.coef[1] - 1e-5) < 1e-10);
  BOOST_TEST(std::fabs(g.coef[2] - 2e-9) < 1e-13);
}
