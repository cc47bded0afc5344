#pragma once
// What a serving run measured, and its reports: per-request records, per-step counters and the
// cache's data movement, summed into one summary (TTFT/TPOT percentiles, throughput, hits per tier,
// bytes per direction, load stalls), written as CSV rows and a table.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "kvtier/core/tier.hpp"
#include "kvtier_engine/serving/request.hpp"

namespace kvtier_engine::serving {

// Counters of the whole run (the server's steps, and the cache's movement during the run).
struct run_counters {
  std::size_t steps = 0;
  std::size_t stall_steps = 0;        // steps in which a prefill waited for a layer still loading
  double step_s = 0;                  // time in steps (compute + waits), idle time excluded
  double load_wait_s = 0;             // of which: waiting for host → device layers
  double duration_s = 0;              // first arrival to last finish
  std::size_t deferred_admissions = 0;  // admissions refused for lack of device slots (retried later)
  std::size_t policy_deferrals = 0;     // requests the policy answered not_now for, a free slot notwithstanding
  std::size_t load_deferrals = 0;       // prefill chunks left for a later step while their prefix loaded (load_aware)
  std::uint64_t page_bytes = 0;
  std::uint64_t bytes_loaded = 0, pages_loaded = 0;        // host → device
  std::uint64_t bytes_backed_up = 0, pages_backed_up = 0;  // device → host
  std::array<std::uint64_t, kvtier::tier_count> bytes_written{}, bytes_fetched{};  // host → slow, slow → host
  std::array<std::uint64_t, kvtier::tier_count> pages_fetched{};
};

inline double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double r = p / 100.0 * double(v.size() - 1);  // linear interpolation between ranks
  const std::size_t lo = std::size_t(std::floor(r)), hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (r - double(lo));
}

struct summary {
  std::string mode, workload, policy;
  double rate = 0;                   // offered load (the workload's), 0 when not a sweep
  std::size_t requests = 0;
  double ttft_p50 = 0, ttft_p90 = 0, ttft_p99 = 0, tpot_p50 = 0, tpot_p90 = 0, tpot_p99 = 0;
  double req_per_s = 0, prompt_tok_per_s = 0, output_tok_per_s = 0;
  std::size_t prompt_tokens = 0, output_tokens = 0, reused_tokens = 0;
  std::array<std::uint64_t, kvtier::tier_count> hit_tokens{};
  run_counters c;
  double load_wait_fraction() const noexcept { return c.step_s > 0 ? c.load_wait_s / c.step_s : 0; }
  double stall_step_fraction() const noexcept { return c.steps ? double(c.stall_steps) / double(c.steps) : 0; }
};

inline summary summarize(const std::vector<request_record>& recs, const run_counters& c) {
  summary s;
  s.c = c;
  std::vector<double> ttft, tpot;
  double first = -1, last = 0;  // measured requests' first arrival and last finish
  bool warm = false;
  for (const auto& r : recs) {
    if (r.warmup) {
      warm = true;
      continue;
    }
    ++s.requests;
    if (first < 0 || r.arrival_s < first) first = r.arrival_s;
    last = std::max(last, r.finish_s);
    ttft.push_back(r.ttft_s());
    if (r.output_tokens > 1) tpot.push_back(r.tpot_s());
    s.prompt_tokens += r.prompt_tokens;
    s.output_tokens += r.output_tokens;
    s.reused_tokens += r.reused_tokens;
    for (std::size_t t = 0; t < kvtier::tier_count; ++t) s.hit_tokens[t] += r.hit_tokens[t];
  }
  s.ttft_p50 = percentile(ttft, 50), s.ttft_p90 = percentile(ttft, 90), s.ttft_p99 = percentile(ttft, 99);
  s.tpot_p50 = percentile(tpot, 50), s.tpot_p90 = percentile(tpot, 90), s.tpot_p99 = percentile(tpot, 99);
  if (warm) s.c.duration_s = first >= 0 ? last - first : 0;  // the warm-up's time left out
  if (s.c.duration_s > 0) {
    s.req_per_s = double(s.requests) / s.c.duration_s;
    s.prompt_tok_per_s = double(s.prompt_tokens) / s.c.duration_s;
    s.output_tok_per_s = double(s.output_tokens) / s.c.duration_s;
  }
  return s;
}

// ---- CSV and table
inline void write_request_csv_header(std::FILE* f) {
  std::fprintf(f, "mode,rate,id,session,turn,arrival_s,admitted_s,first_token_s,finish_s,ttft_s,tpot_s,prompt_tokens,"
                  "output_tokens,reused_tokens,computed_tokens,hit_device,hit_host,hit_disk,hit_remote,loaded_pages,"
                  "load_wait_s,prefill_chunks\n");
}
inline void write_request_csv(std::FILE* f, const std::string& mode, double rate, const std::vector<request_record>& recs) {
  for (const auto& r : recs)
    std::fprintf(f, "%s,%g,%zu,%zu,%zu,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%zu,%zu,%zu,%zu,%llu,%llu,%llu,%llu,%zu,%.6f,%zu\n",
                 mode.c_str(), rate, r.id, r.session, r.turn, r.arrival_s, r.admitted_s, r.first_token_s, r.finish_s,
                 r.ttft_s(), r.tpot_s(), r.prompt_tokens, r.output_tokens, r.reused_tokens, r.computed_tokens,
                 (unsigned long long)r.hit_tokens[0], (unsigned long long)r.hit_tokens[1],
                 (unsigned long long)r.hit_tokens[2], (unsigned long long)r.hit_tokens[3], r.loaded_pages, r.load_wait_s,
                 r.prefill_chunks);
}
inline void write_summary_csv_header(std::FILE* f) {
  std::fprintf(f, "workload,policy,mode,rate,requests,duration_s,req_per_s,prompt_tok_per_s,output_tok_per_s,ttft_p50_s,"
                  "ttft_p90_s,ttft_p99_s,tpot_p50_s,tpot_p90_s,tpot_p99_s,prompt_tokens,output_tokens,reused_tokens,"
                  "hit_device,hit_host,hit_disk,hit_remote,bytes_h2d,bytes_d2h,bytes_host_to_disk,bytes_disk_to_host,"
                  "bytes_host_to_remote,bytes_remote_to_host,steps,stall_steps,stall_step_fraction,step_s,load_wait_s,"
                  "load_wait_fraction,deferred_admissions,policy_deferrals,load_deferrals\n");
}
inline void write_summary_csv(std::FILE* f, const summary& s) {
  const auto u = [](std::uint64_t v) { return (unsigned long long)v; };
  std::fprintf(f, "%s,%s,%s,%g,%zu,%.6f,%.4f,%.1f,%.1f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%zu,%zu,%zu,%llu,%llu,%llu,%llu,"
                  "%llu,%llu,%llu,%llu,%llu,%llu,%zu,%zu,%.4f,%.6f,%.6f,%.4f,%zu,%zu,%zu\n",
               s.workload.c_str(), s.policy.c_str(), s.mode.c_str(), s.rate, s.requests, s.c.duration_s, s.req_per_s,
               s.prompt_tok_per_s, s.output_tok_per_s, s.ttft_p50, s.ttft_p90, s.ttft_p99, s.tpot_p50, s.tpot_p90,
               s.tpot_p99, s.prompt_tokens, s.output_tokens, s.reused_tokens, u(s.hit_tokens[0]), u(s.hit_tokens[1]),
               u(s.hit_tokens[2]), u(s.hit_tokens[3]), u(s.c.bytes_loaded), u(s.c.bytes_backed_up), u(s.c.bytes_written[2]),
               u(s.c.bytes_fetched[2]), u(s.c.bytes_written[3]), u(s.c.bytes_fetched[3]), s.c.steps, s.c.stall_steps,
               s.stall_step_fraction(), s.c.step_s, s.c.load_wait_s, s.load_wait_fraction(), s.c.deferred_admissions,
               s.c.policy_deferrals, s.c.load_deferrals);
}

inline void print_summary_header(std::FILE* f) {
  std::fprintf(f, "%-14s %6s %5s %8s %9s %9s | %8s %8s %8s | %7s %7s | %9s %9s %9s | %9s %9s %9s | %6s %6s\n", "mode", "rate",
               "reqs", "req/s", "prompt/s", "output/s", "TTFT p50", "p90", "p99", "TPOT p50", "p99", "hit dev", "hit host",
               "hit file", "MB h2d", "MB d2h", "MB file", "wait%", "stall%");
}
inline void print_summary_row(std::FILE* f, const summary& s) {
  const double mb = 1e6;
  std::fprintf(f, "%-14s %6g %5zu %8.3f %9.0f %9.1f | %8.4f %8.4f %8.4f | %7.4f %7.4f | %9llu %9llu %9llu | %9.1f %9.1f %9.1f | %6.2f %6.2f\n",
               s.mode.c_str(), s.rate, s.requests, s.req_per_s, s.prompt_tok_per_s, s.output_tok_per_s, s.ttft_p50, s.ttft_p90,
               s.ttft_p99, s.tpot_p50, s.tpot_p99, (unsigned long long)s.hit_tokens[0], (unsigned long long)s.hit_tokens[1],
               (unsigned long long)(s.hit_tokens[2] + s.hit_tokens[3]), double(s.c.bytes_loaded) / mb,
               double(s.c.bytes_backed_up) / mb, double(s.c.bytes_written[2] + s.c.bytes_fetched[2]) / mb,
               100.0 * s.load_wait_fraction(), 100.0 * s.stall_step_fraction());
}

}  // namespace kvtier_engine::serving
