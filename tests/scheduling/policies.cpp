// The IO-aware policies' choices (scheduling/policies.hpp): delay-hit deferral, balanced batches,
// bubble filling, and their per-request form for serving's scheduling_policy concept.
#include <boost/test/unit_test.hpp>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "kvtier_engine/scheduling/cost_model.hpp"
#include "kvtier_engine/scheduling/policies.hpp"
#include "kvtier_engine/serving/policy.hpp"

using namespace kvtier_engine;
using namespace kvtier_engine::scheduling;

namespace {

struct untagged {  // has every member, no opt-in tag: not a policy
  static constexpr bool uses_cached_prefix = true;
  std::string_view name() const { return "x"; }
  double priority(const serving::queued_request&, const serving::in_flight&) const { return 0; }
};
static_assert(serving::scheduling_policy<io_aware<serving::fcfs>>);
static_assert(serving::scheduling_policy<io_aware<serving::longest_prefix>>);
static_assert(!serving::scheduling_policy<untagged>);

candidate make(std::size_t id, double arrival, std::uint64_t group, double load_s, double compute_s) {
  candidate c;
  c.q.id = id;
  c.q.arrival_s = arrival;
  c.q.prompt_tokens = 1000;
  c.group = group;
  c.load_s = load_s;
  c.compute_s = compute_s;
  return c;
}

batch_state state(std::size_t slots, std::span<const std::uint64_t> pending = {}, double load = 0, double compute = 0) {
  batch_state s;
  s.pending_groups = pending;
  s.load_ahead_s = load;
  s.compute_ahead_s = compute;
  s.slots = slots;
  return s;
}

}  // namespace

BOOST_AUTO_TEST_CASE(names_say_the_features) {
  BOOST_TEST(io_aware<serving::fcfs>(features{}, h200_default()).name() == "fcfs");
  BOOST_TEST(io_aware<serving::longest_prefix>(features{true, true, true}, h200_default()).name() == "lpm+delay-hit+balance+bubble");
}

BOOST_AUTO_TEST_CASE(delay_hit_defers_a_shared_missing_prefix) {
  const io_aware<serving::fcfs> p(features{true, false, false}, h200_default());
  // 0 and 2 share a missing prefix (group 7), 1 is alone, 3 shares the group an admitted request is computing.
  const std::vector<candidate> c{make(0, 0.0, 7, 0, 1), make(1, 0.1, 8, 0, 1), make(2, 0.2, 7, 0, 1), make(3, 0.3, 9, 0, 1)};
  const std::vector<std::uint64_t> pending{9};
  std::vector<std::size_t> out;
  p.select(c, state(4, pending), out);
  BOOST_TEST(out == (std::vector<std::size_t>{0, 1}), boost::test_tools::per_element());
  // Without the feature every request is taken, in arrival order.
  const io_aware<serving::fcfs> plain(features{}, h200_default());
  out.clear();
  plain.select(c, state(4, pending), out);
  BOOST_TEST(out == (std::vector<std::size_t>{0, 1, 2, 3}), boost::test_tools::per_element());
  // Group 0 (nothing missing) never defers.
  const std::vector<candidate> hits{make(0, 0.0, 0, 0, 1), make(1, 0.1, 0, 0, 1)};
  out.clear();
  p.select(hits, state(4), out);
  BOOST_TEST(out.size() == 2u);
}

BOOST_AUTO_TEST_CASE(balance_pairs_loads_with_compute) {
  const io_aware<serving::fcfs> p(features{false, true, false}, h200_default());
  // A load-heavy request at the head; the next one that evens load and compute is the compute-heavy one.
  const std::vector<candidate> c{make(0, 0.0, 0, 0.080, 0.010), make(1, 0.1, 0, 0.090, 0.005), make(2, 0.2, 0, 0.0, 0.070)};
  std::vector<std::size_t> out;
  p.select(c, state(2), out);
  BOOST_TEST_REQUIRE(out.size() == 2u);
  // First pick: |0.08-0.01| = 0.07 vs |0.09-0.005| vs |0-0.07| = 0.07 → the head (ties by order);
  // second: with 0 taken, 2 brings load 0.08 vs compute 0.08.
  BOOST_TEST(out[0] == 0u);
  BOOST_TEST(out[1] == 2u);
  // The look-ahead bounds how far past the head it reaches.
  const io_aware<serving::fcfs> near(features{false, true, false}, h200_default(), {}, 1);
  out.clear();
  near.select(c, state(2), out);
  BOOST_TEST(out == (std::vector<std::size_t>{0, 1}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(bubble_takes_no_load_requests_while_loads_outrun_compute) {
  const io_aware<serving::fcfs> p(features{false, false, true}, h200_default());
  const std::vector<candidate> c{make(0, 0.0, 0, 0.050, 0.010), make(1, 0.1, 0, 0.0, 0.020), make(2, 0.2, 0, 0.030, 0.010)};
  std::vector<std::size_t> out;
  p.select(c, state(1, {}, 0.100, 0.010), out);  // 100 ms of loads queued, 10 ms of compute to hide them
  BOOST_TEST(out == (std::vector<std::size_t>{1}), boost::test_tools::per_element());
  out.clear();
  p.select(c, state(1, {}, 0.0, 0.050), out);  // compute ahead covers the link: base order
  BOOST_TEST(out == (std::vector<std::size_t>{0}), boost::test_tools::per_element());
  BOOST_TEST(p.fill_bubbles());
}

BOOST_AUTO_TEST_CASE(per_request_priority_for_the_server) {
  const cost_model cm = h200_default();
  const io_aware<serving::fcfs> p(features{false, true, true}, cm);
  serving::queued_request load_heavy{0, 1.0, 32768, {0, 32768 - 16, 0, 0}};  // whole prefix on host, tiny suffix
  serving::queued_request compute_heavy{1, 2.0, 8192, {}};                 // nothing cached
  serving::in_flight idle, busy;
  busy.load_pages = 500;
  // Link busy: the compute-heavy request first (bubble and balance agree), though it arrived later.
  BOOST_TEST(p.priority(compute_heavy, busy) < p.priority(load_heavy, busy));
  // Link idle: balance prefers the load-heavy one (its load hides under running prefills).
  BOOST_TEST(p.priority(load_heavy, idle) < p.priority(compute_heavy, idle));
  // No feature: FCFS.
  const io_aware<serving::fcfs> plain(features{}, cm);
  BOOST_TEST(plain.priority(load_heavy, busy) < plain.priority(compute_heavy, busy));
}

BOOST_AUTO_TEST_CASE(cost_model_reads_the_serving_json) {
  const cost_model d = h200_default();
  // docs/engine.md: 2K / 8K / 32K prefill 50.9 / 244.4 / 1,687.8 ms; decode B=1 and B=32 at 1,024: 7.31 / 12.09 ms.
  BOOST_TEST(d.prefill_s(2048, 0) == 0.0509, boost::test_tools::tolerance(0.1));
  BOOST_TEST(d.prefill_s(8192, 0) == 0.2444, boost::test_tools::tolerance(0.1));
  BOOST_TEST(d.prefill_s(32768, 0) == 1.6878, boost::test_tools::tolerance(0.1));
  BOOST_TEST(d.decode_s(1, 1024) == 0.00731, boost::test_tools::tolerance(0.05));
  BOOST_TEST(d.decode_s(32, 32768) == 0.01209, boost::test_tools::tolerance(0.05));
  // kvtier-serve's JSON (serving/cost_model.hpp's layout): fits, the largest copy's rates, the file tier.
  const auto path = std::filesystem::temp_directory_path() / ("kvtier-cost-" + std::to_string(::getpid()) + ".json");
  {
    std::ofstream f(path);
    f << R"({"model": "x", "page_tokens": 16, "page_bytes": 2097152,
  "prefill": {"formula": "f", "a": 1.0e-03, "b": 2.0e-05, "c": 1.5e-09, "r2": 0.99, "samples": 3, "points": [[1, 2, 3.0e-3]]},
  "decode": {"formula": "f", "a": 7.0e-03, "b": 1.0e-04, "c": 4.0e-08, "r2": 0.9, "samples": 3, "points": [[1, 2, 3.0e-3]]},
  "copies": [
    {"pages": 1, "bytes": 2097152, "load_h2d_s": 1e-4, "load_h2d_bytes_per_s": 2.0e10, "backup_d2h_s": 1e-4, "backup_d2h_bytes_per_s": 2.0e10},
    {"pages": 256, "bytes": 536870912, "load_h2d_s": 1e-2, "load_h2d_bytes_per_s": 5.3e10, "backup_d2h_s": 1e-2, "backup_d2h_bytes_per_s": 5.1e10}],
  "file_tier": {"write_bytes_per_s": 0.0000e+00, "read_bytes_per_s": 3.0e9}})";
  }
  const cost_model m = load_cost_model(path.string(), 32);
  std::filesystem::remove(path);
  BOOST_TEST(m.page_tokens == 16u);
  BOOST_TEST(m.prefill_a == 1.0e-3);
  BOOST_TEST(m.prefill_c == 1.5e-9);
  BOOST_TEST(m.decode_b == 1.0e-4);
  BOOST_TEST(m.decode_c == 4.0e-8);
  BOOST_TEST(m.load_bytes_per_s == 5.3e10);  // the 256-page copy, not the 1-page one
  BOOST_TEST(m.backup_bytes_per_s == 5.1e10);
  BOOST_TEST(m.fetch_bytes_per_s == 3.0e9);
  BOOST_CHECK_THROW(load_cost_model((path.string() + ".missing"), 32), kvtier::config_error);
}
