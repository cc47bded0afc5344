#pragma once
// What the serving and scheduling tests share (tests/serving/modes.cpp, tests/scheduling/tokens.cpp):
// stories260K at a 1,024-token context, a workload of long-document questions followed by chat
// sessions in their own namespace, and one server run on the CPU backend that must succeed and
// leave the cache's books balanced.
#include <boost/test/unit_test.hpp>

#include <memory>
#include <utility>

#include "kvtier/cache.hpp"
#include "kvtier_engine/cpu/cpu_backend.hpp"
#include "kvtier_engine/engine.hpp"
#include "kvtier_engine/model_files.hpp"
#include "kvtier_engine/serving/server.hpp"
#include "kvtier_engine/serving/workloads.hpp"

namespace kvtier_test::serving {

using namespace kvtier_engine;
using namespace kvtier_engine::serving;

inline constexpr std::size_t P = 16;
using pages = kvtier::page_size<P>;
using host_cache = kvtier::cache_builder<pages>::cache_type;

struct stories {
  model_files files = model_files::in(KVTIER_ENGINE_MODELS_DIR "/stories260K");
  model_weights w = model_weights::load_llama2c(files.checkpoint.string(), files.name);
  model_config m = [this] {
    model_config c = w.config();
    c.seq_len = 1024;
    return c;
  }();
};
inline const stories& model() {
  static const stories s;
  return s;
}

// Long-document questions (ids 0..L-1), then chat sessions in namespace 2, sessions numbered from
// 1000; a session's first turn arrives `chat_start` of the way through the documents' arrivals.
inline workload mixed_workload(const longdoc_options& l, const chat_options& c, double chat_start) {
  const std::size_t vocab = model().m.vocab;
  workload w = longdoc_workload(l, vocab);
  const workload chat = chat_workload(c, vocab);
  const std::size_t base = w.requests.size();
  const double t_end = w.requests.empty() ? 0.0 : w.requests.back().arrival_s;
  for (request_spec r : chat.requests) {
    r.id += base;
    if (r.parent != no_parent) r.parent += base;
    else r.arrival_s += t_end * chat_start;
    r.session += 1000;
    r.ns = kvtier::namespace_id{2};
    w.requests.push_back(std::move(r));
  }
  w.name = "mixed";
  return w;
}

// One run of `wl` on stories260K with a device pool of `device_pages` and a host pool of `host_pages`.
template <class Cache, class Policy, class... Slow>
run_result serve_stories(const workload& wl, std::size_t device_pages, std::size_t host_pages, const server_options& so, Policy policy,
                         std::unique_ptr<Slow>... slow) {
  const stories& s = model();
  const auto cfg = engine<cpu_backend, Cache>::cache_config(s.w, precision::fp32, device_pages, host_pages);
  auto srv = std::make_unique<server<cpu_backend, Cache, Policy>>(s.m, s.w, cfg, backend_options{}, so, std::move(policy), std::move(slow)...);
  auto r = srv->run(wl);
  BOOST_TEST_REQUIRE(r.has_value(), "the run failed: " << (r ? "" : kvtier::to_string(r.code())));
  BOOST_TEST(srv->cache().audit());
  return std::move(*r);
}

}  // namespace kvtier_test::serving
