// Serving through every cache mode (issue 12's CI test): a few dozen stories260K requests — long-
// document questions and multi-turn chat sessions — served with continuous batching by the same
// engine with no prefix caching, device-only caching, kvtier device+host, and device+host+file.
// Checks that the metrics add up (every request served once, token counts consistent, hits within
// the prompt, bytes moved consistent with the pages loaded and fetched) and that greedy tokens
// are identical across modes.
#include <boost/test/unit_test.hpp>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kvtier/testing/temp_dir.hpp"
#include "kvtier_engine/serving/metrics.hpp"
#include "kvtier_engine/serving/modes.hpp"
#include "serving/serving_fixture.hpp"
#ifdef KVTIER_TEST_FILE_TIER
#  include "kvtier/storage/file_tier.hpp"
#endif

using namespace kvtier_test::serving;

namespace {

using device_only_cache = kvtier::cache_builder<pages, kvtier::device_memory<>, kvtier::host_memory<>, kvtier::slow_tiers<>,
                                                kvtier::auto_choice, kvtier::write_policies<no_backup, kvtier::auto_choice>>::cache_type;

constexpr std::size_t device_pages = 64, host_pages = 32, disk_pages = 1024;

server_options options_for(bool caching) {
  // max_batch 2: two requests of at most 27 pages each fit the 64-page device with room to evict.
  return server_options{.token_budget = 128, .chunk_tokens = 64, .max_batch = 2, .caching = caching};
}

template <class Cache, class Policy = fcfs, class... Slow>
run_result serve(const workload& wl, bool caching, std::size_t host, std::unique_ptr<Slow>... slow) {
  return serve_stories<Cache>(wl, device_pages, host, options_for(caching), Policy{}, std::move(slow)...);
}

// Long-document questions and chat sessions in one workload: ids 0..L-1 long-document, then chat.
workload mixed() {
  const longdoc_options l{.documents = 6, .questions = 4, .doc_min = 192, .doc_max = 384, .question_tokens = 12,
      .answer_tokens = 8, .requests = 24, .rate = 400, .zipf = 0.3, .seed = 3};
  const chat_options c{.sessions = 4, .turns = 4, .system_tokens = 40, .user_min = 8, .user_max = 24,
      .reply_tokens = 12, .rate = 200, .think_s = 0.002, .seed = 5};
  return mixed_workload(l, c, 0.5);  // sessions start while documents are still asked about
}

// The metrics add up, whatever the mode.
void check_accounting(const workload& w, const run_result& r, cache_mode mode) {
  BOOST_TEST_CONTEXT("mode " << to_string(mode)) {
    BOOST_TEST_REQUIRE(r.records.size() == w.requests.size());
    std::size_t loaded = 0;
    std::uint64_t hit_slow = 0;
    for (const auto& spec : w.requests) {
      const request_record& rec = r.records[spec.id];
      BOOST_TEST_CONTEXT("request " << spec.id) {
        BOOST_TEST(rec.id == spec.id);  // served, once: finish_s set, exactly max_new tokens
        BOOST_TEST(rec.output.size() == spec.max_new_tokens);
        BOOST_TEST(rec.output_tokens == spec.max_new_tokens);
        BOOST_TEST(rec.finish_s > 0.0);
        BOOST_TEST(rec.arrival_s <= rec.admitted_s);
        BOOST_TEST(rec.admitted_s <= rec.first_token_s);
        BOOST_TEST(rec.first_token_s <= rec.finish_s);
        // The prompt: its own tokens, or (a chat turn) the parent's prompt and reply, then its own.
        const std::size_t expect = spec.parent == no_parent ? spec.prompt.size()
                                                            : r.records[spec.parent].prompt_tokens + r.records[spec.parent].output_tokens + spec.prompt.size();
        BOOST_TEST(rec.prompt_tokens == expect);
        BOOST_TEST(rec.reused_tokens + rec.computed_tokens == rec.prompt_tokens);
        BOOST_TEST(rec.reused_tokens % P == 0u);
        BOOST_TEST(rec.computed_tokens >= 1u);  // the last prompt token is always computed
        std::uint64_t hits = 0;
        for (auto h : rec.hit_tokens) hits += h;
        BOOST_TEST(hits <= (rec.prompt_tokens - 1) / P * P);  // whole pages of the looked-up prompt
        BOOST_TEST(rec.reused_tokens <= hits);
        BOOST_TEST(rec.loaded_pages * P <= rec.hit_tokens[1] + rec.hit_tokens[2] + rec.hit_tokens[3]);
        if (mode == cache_mode::none) BOOST_TEST(hits == 0u);
        if (mode != cache_mode::file) BOOST_TEST(rec.hit_tokens[2] + rec.hit_tokens[3] == 0u);
        if (mode == cache_mode::none || mode == cache_mode::device) BOOST_TEST(rec.hit_tokens[1] == 0u);
        loaded += rec.loaded_pages;
        hit_slow += rec.hit_tokens[2];
      }
    }
    const run_counters& c = r.counters;
    BOOST_TEST(c.pages_loaded == loaded);  // every host → device page belongs to one request's load
    BOOST_TEST(c.bytes_loaded == c.pages_loaded * c.page_bytes);
    BOOST_TEST(c.bytes_backed_up == c.pages_backed_up * c.page_bytes);
    BOOST_TEST(c.bytes_fetched[2] == c.pages_fetched[2] * c.page_bytes);
    if (c.deferred_admissions == 0) BOOST_TEST(c.pages_fetched[2] * P <= hit_slow);  // a page is fetched for a disk hit only
    if (mode == cache_mode::none || mode == cache_mode::device) {
      BOOST_TEST(c.bytes_loaded == 0u);
      BOOST_TEST(c.bytes_backed_up == 0u);
    }
    if (mode != cache_mode::file) BOOST_TEST(c.bytes_written[2] + c.bytes_fetched[2] == 0u);
    BOOST_TEST(c.steps > 0u);
    BOOST_TEST(c.stall_steps <= c.steps);
    BOOST_TEST(c.load_wait_s <= c.step_s);
    BOOST_TEST(c.duration_s > 0.0);
    const summary s = summarize(r.records, c);
    BOOST_TEST(s.requests == w.requests.size());
    BOOST_TEST(s.ttft_p50 <= s.ttft_p90);
    BOOST_TEST(s.ttft_p90 <= s.ttft_p99);
    BOOST_TEST(s.req_per_s > 0.0);
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(every_mode_serves_the_same_tokens) {
  const workload w = mixed();
  BOOST_TEST_REQUIRE(w.requests.size() == 40u);
  std::map<cache_mode, run_result> runs;
  runs[cache_mode::none] = serve<device_only_cache>(w, false, 1);
  runs[cache_mode::device] = serve<device_only_cache>(w, true, 1);
  runs[cache_mode::host] = serve<host_cache>(w, true, host_pages);
#ifdef KVTIER_TEST_FILE_TIER
  kvtier::testing::temp_dir dir;
  const kvtier::kv_shape shape = model().m.kv_shape(kvtier::dtype::fp32);
  kvtier::file_tier_config fc{dir.path, shape, shape.bytes_per_page(P), disk_pages, 64, 32, true, false};
  using file_cache = kvtier::cache_builder<pages, kvtier::device_memory<>, kvtier::host_memory<>,
                                           kvtier::slow_tiers<kvtier::slow_tier<kvtier::file_tier>>>::cache_type;
  runs[cache_mode::file] = serve<file_cache>(w, true, host_pages, std::make_unique<kvtier::file_tier<>>(fc));
#else
  BOOST_TEST_MESSAGE("no liburing: the file-tier mode is not run");
#endif
  for (const auto& [mode, r] : runs) {
    check_accounting(w, r, mode);
    const summary s = summarize(r.records, r.counters);
    BOOST_TEST_MESSAGE(to_string(mode) << ": reused " << s.reused_tokens << " of " << s.prompt_tokens << " prompt tokens; hits device "
                                       << s.hit_tokens[0] << ", host " << s.hit_tokens[1] << ", file " << s.hit_tokens[2] << "; pages loaded "
                                       << r.counters.pages_loaded << ", fetched " << r.counters.pages_fetched[2] << ", written " << r.counters.bytes_written[2] / r.counters.page_bytes << "; TTFT p50 "
                                       << s.ttft_p50 << " s, " << r.counters.steps << " steps, " << r.counters.stall_steps << " stalled");
  }

  // Greedy tokens do not depend on where the prefix came from.
  for (const auto& [mode, r] : runs)
    for (std::size_t i = 0; i < w.requests.size(); ++i)
      BOOST_TEST(r.records[i].output == runs[cache_mode::none].records[i].output,
                 "request " << i << " differs in mode " << to_string(mode));

  // Each mode does what it is for: caching reuses prefixes; host and file serve what the device lost.
  auto reused = [&](cache_mode m) {
    std::size_t n = 0;
    for (const auto& rec : runs[m].records) n += rec.reused_tokens;
    return n;
  };
  auto hit = [&](cache_mode m, std::size_t tier) {
    std::uint64_t n = 0;
    for (const auto& rec : runs[m].records) n += rec.hit_tokens[tier];
    return n;
  };
  BOOST_TEST(reused(cache_mode::none) == 0u);
  BOOST_TEST(reused(cache_mode::device) > 0u);
  BOOST_TEST(hit(cache_mode::host, 1) > 0u);
  BOOST_TEST(reused(cache_mode::host) > reused(cache_mode::device));
  BOOST_TEST(runs[cache_mode::host].counters.pages_loaded > 0u);
#ifdef KVTIER_TEST_FILE_TIER
  BOOST_TEST(hit(cache_mode::file, 2) > 0u);
  BOOST_TEST(runs[cache_mode::file].counters.bytes_written[2] > 0u);
  BOOST_TEST(runs[cache_mode::file].counters.bytes_fetched[2] > 0u);
#endif
}

// Longest-prefix-match admits differently from FCFS, not differently computed: same tokens.
BOOST_AUTO_TEST_CASE(longest_prefix_policy_same_tokens) {
  const workload w = mixed();
  const run_result a = serve<host_cache, fcfs>(w, true, host_pages);
  const run_result b = serve<host_cache, longest_prefix>(w, true, host_pages);
  check_accounting(w, b, cache_mode::host);
  for (std::size_t i = 0; i < w.requests.size(); ++i) BOOST_TEST(a.records[i].output == b.records[i].output);
}

// The CPU backend has prefill_batch: by default a step's prefill chunks run as one call. The same
// run with one call per chunk (batch_prefill off) gives the same tokens; the batched run's cost
// samples are one per call, with the chunk count and token sums of the chunks it held.
BOOST_AUTO_TEST_CASE(batched_prefill_serves_the_same_tokens) {
  const workload w = mixed();
  server_options per_chunk = options_for(true), batched = options_for(true);
  per_chunk.batch_prefill = false;
  batched.batch_prefill = true;
  const run_result a = serve_stories<host_cache>(w, device_pages, host_pages, per_chunk, fcfs{});
  const run_result b = serve_stories<host_cache>(w, device_pages, host_pages, batched, fcfs{});
  check_accounting(w, a, cache_mode::host);
  check_accounting(w, b, cache_mode::host);
  for (std::size_t i = 0; i < w.requests.size(); ++i)
    BOOST_TEST(a.records[i].output == b.records[i].output, "request " << i << " differs with batched prefill");
  BOOST_TEST(!a.samples.batched_prefill);
  BOOST_TEST(b.samples.batched_prefill);
  for (const run_result* r : {&a, &b}) {
    std::size_t chunks = 0, record_chunks = 0, tokens = 0, computed = 0, multi = 0;
    for (const auto& s : r->samples.prefill) {
      chunks += s.chunks, tokens += s.new_tokens, multi += s.chunks > 1;
      BOOST_TEST(s.seconds >= 0.0);
      if (s.chunks == 1) BOOST_TEST(s.pair_tokens() == double(s.new_tokens) * (double(s.cached_tokens) + double(s.new_tokens) / 2));
      else BOOST_TEST(s.pair_tokens() >= double(s.new_tokens) * double(s.new_tokens) / (2.0 * double(s.chunks)));
    }
    for (const auto& rec : r->records) record_chunks += rec.prefill_chunks, computed += rec.computed_tokens;
    BOOST_TEST(chunks == record_chunks);  // every chunk in one call
    BOOST_TEST(tokens == computed);       // every computed prompt token in one chunk
    if (r == &a) BOOST_TEST(multi == 0u);
    else BOOST_TEST(multi > 0u);  // steps with two prefilling requests ran them in one call
  }
}
