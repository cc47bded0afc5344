// The compute-or-load planner under a discrete-event simulation of an engine and a slow tier that
// run at once: every page is computed or loaded exactly once, never a gap, computed chunks only
// after all earlier KV exists, and the time to finish is near Cake's Tc·Tl / (Tc + Tl).
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstddef>
#include <functional>
#include <vector>

#include "kvtier/policy/compute_or_load.hpp"

using namespace kvtier;

namespace {

constexpr std::size_t page_tokens = 16, page_bytes = 2 << 20;  // Llama-3-8B: 2 MiB per 16-token page

compute_or_load_config config(double load_gbs) {
  compute_or_load_config c;
  c.page_tokens = page_tokens;
  c.page_bytes = page_bytes;
  c.compute_chunk_pages = 32;
  c.load_batch_pages = 8;
  c.compute = {0.002, 40e-6, 2.5e-9};  // roughly an 8B model on one GPU: 2 ms/chunk, 40 µs/token
  c.load_bytes_per_s = load_gbs * 1e9;
  return c;
}

struct outcome {
  double finish = 0;
  std::size_t computed = 0, loaded = 0;
};

// true_scale: real compute time / modelled; bandwidth(t): the slow tier's real rate at time t;
// fails(range): whether a load batch is a miss.
outcome simulate(compute_or_load_planner& p, const compute_or_load_config& c, std::size_t first, std::size_t pages,
                 double true_scale, const std::function<double(double)>& bandwidth,
                 const std::function<bool(page_range)>& fails = [](page_range) { return false; }) {
  enum state : char { none, computed, loaded };
  std::vector<state> page(pages, none);
  std::vector<double> ready(pages, -1);  // when the page's KV is in the cache
  double t_compute = 0, t_load = 0;      // when each side is next idle
  std::size_t guard = 0;
  while (!p.done()) {
    BOOST_REQUIRE(++guard < 100000);
    bool progressed = false;
    // The side that is idle first acts first.
    if (t_compute <= t_load) {
      if (auto r = p.next_compute()) {
        double start = t_compute;
        for (std::size_t i = first; i < r->begin; ++i) {  // causal: all earlier KV must exist
          BOOST_REQUIRE_MESSAGE(page[i] != none, "chunk [" << r->begin << "," << r->end << ") before page " << i);
          start = std::max(start, ready[i]);
        }
        const double d = true_scale * c.compute.seconds(r->begin * page_tokens, r->end * page_tokens);
        for (std::size_t i = r->begin; i < r->end; ++i) {
          BOOST_REQUIRE_MESSAGE(page[i] == none || ready[i] < 0, "page " << i << " served twice");
          page[i] = computed;
          ready[i] = start + d;
        }
        t_compute = start + d;
        p.compute_done(*r, d);
        progressed = true;
      }
    }
    if (!progressed) {
      if (auto r = p.next_load()) {
        const double d = double(r->size() * page_bytes) / bandwidth(t_load);
        for (std::size_t i = r->begin; i < r->end; ++i) BOOST_REQUIRE_MESSAGE(page[i] == none, "page " << i << " served twice");
        if (fails(*r)) {
          p.load_failed(*r);
        } else {
          for (std::size_t i = r->begin; i < r->end; ++i) {
            page[i] = loaded;
            ready[i] = t_load + d;
          }
          p.load_done(*r, d);
        }
        t_load += d;
        progressed = true;
      }
    }
    if (!progressed) {  // the acting side had nothing: let the other side's clock catch up
      if (t_compute <= t_load) t_compute = t_load;
      else t_load = t_compute;
      if (auto r = p.next_compute()) {  // retry compute once clocks are level (failed ranges)
        double start = std::max(t_compute, t_load);
        for (std::size_t i = first; i < r->begin; ++i) {
          BOOST_REQUIRE(page[i] != none);
          start = std::max(start, ready[i]);
        }
        const double d = true_scale * c.compute.seconds(r->begin * page_tokens, r->end * page_tokens);
        for (std::size_t i = r->begin; i < r->end; ++i) {
          page[i] = computed;
          ready[i] = start + d;
        }
        t_compute = start + d;
        p.compute_done(*r, d);
      }
    }
  }
  outcome o;
  for (std::size_t i = first; i < pages; ++i) {
    BOOST_REQUIRE_MESSAGE(page[i] != none, "gap at page " << i);
    o.finish = std::max(o.finish, ready[i]);
    (page[i] == computed ? o.computed : o.loaded)++;
  }
  BOOST_TEST(o.computed == p.computed_pages());
  BOOST_TEST(o.loaded == p.loaded_pages());
  return o;
}

}  // namespace

// Tokens of the prefix × slow-tier bandwidth (GB/s), both sides' rates as modelled.
BOOST_DATA_TEST_CASE(both_beat_either_and_approach_cakes_bound,
                     boost::unit_test::data::make({1024, 16384, 32768}) * boost::unit_test::data::make({1.0, 2.0, 4.0, 8.0, 16.0}),
                     tokens, gbs) {
  const std::size_t pages = std::size_t(tokens) / page_tokens;
  const auto c = config(gbs);
  compute_or_load_planner p(c, 0, pages);
  const double tc = p.predicted_compute_only(), tl = p.predicted_load_only();
  const outcome o = simulate(p, c, 0, pages, 1.0, [&](double) { return gbs * 1e9; });
  const double cake = tc * tl / (tc + tl);
  BOOST_TEST_MESSAGE(tokens << " tokens, " << gbs << " GB/s: compute " << tc << " s, load " << tl << " s, both "
                            << o.finish << " s (Tc·Tl/(Tc+Tl) = " << cake << "), meeting at page " << p.meeting_point());
  BOOST_TEST(o.finish <= std::min(tc, tl) * 1.0001);
  // Within one compute chunk or load batch of the continuous bound (work is handed out in units).
  const double unit = std::max(c.compute.seconds(std::size_t(tokens) - 512, std::size_t(tokens)), double(8 * page_bytes) / (gbs * 1e9));
  BOOST_TEST(o.finish <= std::max(cake * 1.1, cake + unit));
}

BOOST_AUTO_TEST_CASE(adapts_when_bandwidth_drops_and_compute_is_slower_than_modelled) {
  const std::size_t pages = 2048;  // 32K tokens
  const auto c = config(8.0);
  compute_or_load_planner p(c, 0, pages);
  const std::size_t planned = p.predicted_meeting_point();
  // The tier delivers 8 GB/s for 50 ms, then 2; compute runs 1.5× slower than modelled.
  const outcome o = simulate(p, c, 0, pages, 1.5, [](double t) { return t < 0.05 ? 8e9 : 2e9; });
  BOOST_TEST_MESSAGE("planned meeting page " << planned << ", actual " << p.meeting_point() << ", finish " << o.finish);
  BOOST_TEST(p.meeting_point() != planned);  // the plan moved
  double static_compute = 1.5 * c.compute.seconds(0, planned * page_tokens);
  double static_load = 0.05 * 8e9 >= double((pages - planned) * page_bytes)
                           ? double((pages - planned) * page_bytes) / 8e9
                           : 0.05 + (double((pages - planned) * page_bytes) - 0.05 * 8e9) / 2e9;
  BOOST_TEST(o.finish <= std::max(static_compute, static_load));
}

BOOST_AUTO_TEST_CASE(failed_loads_are_computed_after_what_precedes_them) {
  const std::size_t first = 10, pages = 600;
  const auto c = config(4.0);
  compute_or_load_planner p(c, first, pages);
  int n = 0;
  const outcome o = simulate(p, c, first, pages, 1.0, [](double) { return 4e9; },
                             [&](page_range) { return ++n % 3 == 0; });  // every third batch is a miss
  BOOST_TEST(o.computed + o.loaded == pages - first);
  BOOST_TEST(o.loaded > 0);
}

BOOST_AUTO_TEST_CASE(empty_and_tiny_ranges) {
  const auto c = config(4.0);
  compute_or_load_planner empty(c, 5, 5);
  BOOST_TEST(empty.done());
  BOOST_TEST(!empty.next_compute());
  BOOST_TEST(!empty.next_load());
  compute_or_load_planner one(c, 0, 1);
  const outcome o = simulate(one, c, 0, 1, 1.0, [](double) { return 4e9; });
  BOOST_TEST(o.computed + o.loaded == 1u);
}

BOOST_AUTO_TEST_CASE(bad_configuration_throws) {
  auto c = config(4.0);
  BOOST_CHECK_THROW(compute_or_load_planner(c, 6, 5), config_error);
  c.load_bytes_per_s = 0;
  BOOST_CHECK_THROW(compute_or_load_planner(c, 0, 5), config_error);
  c = config(4.0);
  c.compute = {};
  BOOST_CHECK_THROW(compute_or_load_planner(c, 0, 5), config_error);
  c = config(4.0);
  c.page_bytes = 0;
  BOOST_CHECK_THROW(compute_or_load_planner(c, 0, 5), config_error);
}
