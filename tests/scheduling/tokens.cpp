// Scheduling never changes outputs: the real serving loop (serving::server, CPU backend,
// stories260K, kvtier device+host) serves the same greedy requests under FCFS and under the
// IO-aware policies in their per-request form (balance, bubble, both, over FCFS and over
// longest-prefix-match); every request's tokens are identical. The admission orders differ (checked),
// so the test compares genuinely different schedules.
#include <boost/test/unit_test.hpp>

#include <memory>
#include <vector>

#include "kvtier/cache.hpp"
#include "kvtier_engine/cpu/cpu_backend.hpp"
#include "kvtier_engine/engine.hpp"
#include "kvtier_engine/model_files.hpp"
#include "kvtier_engine/scheduling/cost_model.hpp"
#include "kvtier_engine/scheduling/policies.hpp"
#include "kvtier_engine/serving/server.hpp"
#include "kvtier_engine/serving/workloads.hpp"

using namespace kvtier_engine;
using namespace kvtier_engine::serving;
using kvtier_engine::scheduling::features;
using kvtier_engine::scheduling::io_aware;

namespace {

constexpr std::size_t P = 16;
using host_cache = kvtier::cache_builder<kvtier::page_size<P>>::cache_type;

struct stories {
  model_files files = model_files::in(KVTIER_ENGINE_MODELS_DIR "/stories260K");
  model_weights w = model_weights::load_llama2c(files.checkpoint.string(), files.name);
  model_config m = [this] {
    model_config c = w.config();
    c.seq_len = 1024;
    return c;
  }();
};
const stories& model() {
  static const stories s;
  return s;
}

// Long-document questions arriving at once (a queue for the policies to order) and chat sessions.
workload mixed() {
  const std::size_t vocab = model().m.vocab;
  longdoc_options l;
  l.documents = 5;
  l.questions = 3;
  l.doc_min = 160;
  l.doc_max = 320;
  l.question_tokens = 12;
  l.answer_tokens = 6;
  l.requests = 18;
  l.rate = 2000;
  l.zipf = 0.5;
  l.seed = 9;
  workload w = longdoc_workload(l, vocab);
  chat_options c;
  c.sessions = 3;
  c.turns = 3;
  c.system_tokens = 32;
  c.user_min = 8;
  c.user_max = 24;
  c.reply_tokens = 8;
  c.rate = 1000;
  c.think_s = 0.001;
  c.seed = 2;
  const workload chat = chat_workload(c, vocab);
  const std::size_t base = w.requests.size();
  for (request_spec r : chat.requests) {
    r.id += base;
    if (r.parent != no_parent) r.parent += base;
    r.ns = kvtier::namespace_id{2};
    w.requests.push_back(std::move(r));
  }
  return w;
}

template <class Policy>
run_result serve(const workload& wl, Policy p) {
  const stories& s = model();
  const auto cfg = engine<cpu_backend, host_cache>::cache_config(s.w, precision::fp32, 64, 256);
  server_options so;
  so.token_budget = 96;
  so.chunk_tokens = 64;
  so.max_batch = 3;
  auto srv = std::make_unique<server<cpu_backend, host_cache, Policy>>(s.m, s.w, cfg, backend_options{}, so, std::move(p));
  auto r = srv->run(wl);
  BOOST_TEST_REQUIRE(r.has_value(), "the run failed: " << (r ? "" : kvtier::to_string(r.code())));
  BOOST_TEST(srv->cache().audit());
  return std::move(*r);
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
}
