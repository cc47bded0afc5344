#pragma once
// A simulated run in the numbers kvtier-serve reports: TTFT percentiles, throughput, the share of
// step time spent waiting on loads, and the invariants the simulator checks.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "kvtier_engine/scheduling/simulator.hpp"

namespace kvtier_engine::scheduling {

struct sim_summary {
  std::size_t requests = 0;
  double throughput_rps = 0, prompt_tokens_per_s = 0, output_tokens_per_s = 0;
  double ttft_p50 = 0, ttft_p90 = 0, ttft_p99 = 0, ttft_mean = 0;
  double load_wait_share = 0;   // load-stall seconds / step seconds
  double stall_step_share = 0;  // steps with a stall / steps
  double reused_share = 0;      // prompt tokens reused / prompt tokens
  bool invariants_ok = false;   // every request served once, no page served wrong, time monotone, no deadlock
};

inline double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double k = p * double(v.size() - 1);
  const std::size_t i = std::size_t(std::floor(k));
  const double f = k - double(i);
  return i + 1 < v.size() ? v[i] * (1 - f) + v[i + 1] * f : v[i];
}

inline sim_summary summarize(const sim_result& r) {
  sim_summary s;
  std::vector<double> ttft;
  double prompt = 0, output = 0, reused = 0, first = -1, last = 0;
  bool once = true, warm = false;
  for (const auto& x : r.records) {
    once = once && x.served == 1;
    if (x.warmup) {
      warm = true;
      continue;
    }
    ++s.requests;
    if (first < 0 || x.arrival_s < first) first = x.arrival_s;
    last = std::max(last, x.finish_s);
    ttft.push_back(x.ttft_s());
    prompt += double(x.prompt_tokens);
    output += double(x.output_tokens);
    reused += double(x.reused_tokens);
  }
  const auto& c = r.counters;
  const double measured = warm ? (first >= 0 ? last - first : 0) : c.duration_s;  // the warm-up's time left out
  const double d = measured > 0 ? measured : 1;
  s.throughput_rps = double(s.requests) / d;
  s.prompt_tokens_per_s = prompt / d;
  s.output_tokens_per_s = output / d;
  s.ttft_p50 = percentile(ttft, 0.5);
  s.ttft_p90 = percentile(ttft, 0.9);
  s.ttft_p99 = percentile(ttft, 0.99);
  for (double t : ttft) s.ttft_mean += t / double(ttft.empty() ? 1 : ttft.size());
  s.load_wait_share = c.step_s > 0 ? c.load_wait_s / c.step_s : 0;
  s.stall_step_share = c.steps ? double(c.stall_steps) / double(c.steps) : 0;
  s.reused_share = prompt > 0 ? reused / prompt : 0;
  s.invariants_ok = once && c.content_mismatches == 0 && c.time_regressions == 0 && !c.deadlock;
  return s;
}

}  // namespace kvtier_engine::scheduling
