// kvtier-simulate: serving-loop simulation (scheduling/simulator.hpp) of a workload under a list
// of scheduling policies and a sweep of arrival rates; prints a table and writes sweep.csv (and
// requests.csv of the last run). The workload options are kvtier-serve's, so that the same command
// line describes the same requests in both programs (scripts/scheduling-validate).
//
// Policies: BASE[+FEATURE...] with BASE fcfs|lpm and FEATURE delay-hit|balance|bubble|strata
// (all three)|prefetch (scheduler-aware prefetch and eviction), e.g. lpm+strata+prefetch.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier_engine/scheduling/cost_model.hpp"
#include "kvtier_engine/scheduling/policies.hpp"
#include "kvtier_engine/scheduling/simulator.hpp"
#include "kvtier_engine/scheduling/summary.hpp"
#include "kvtier_engine/serving/cli.hpp"
#include "kvtier_engine/serving/policy.hpp"
#include "kvtier_engine/serving/workloads.hpp"

using namespace kvtier_engine;
using namespace kvtier_engine::scheduling;

namespace {

struct options {
  serving::cli::workload_options wl;
  std::size_t vocab = 128256, context = 0, layers = 32;
  std::string cost_path;
  std::string policy_cost_path;  // the IO-aware policies' own cost model ("default": the H200 one); empty: --cost-model's
  double step_overhead = -1;  // >= 0: a constant host overhead per step, in place of the cost model's
  sim_cache_config cache{16, 4096, 16384, 65536, sim_mode::host};
  sim_options sim;
  std::vector<std::string> policies{"fcfs", "lpm"};
  std::vector<double> sweep;
  std::string out = "simulate-out";
  bool check = false, quiet = false;
  bool server_form = false;  // --policy-form priority: the IO-aware policies as serving::server runs them
};

[[noreturn]] void usage(int code) {
  std::fprintf(code ? stderr : stdout,
               "usage: kvtier-simulate [options]\n"
               "%s"
               "            --context N --vocab N (token ids in [0, N); default llama3's 128256)\n"
               " model:     --cost-model FILE (kvtier-serve's cost_model.json; default: H200 from docs/engine.md) --layers N\n"
               "            --policy-cost-model FILE|default (the model the IO-aware policies rank with, as kvtier-serve's\n"
               "            --cost-model; default: the simulator's own)\n"
               "            --step-overhead SECONDS (host seconds per step outside the backend's calls, for cost models\n"
               "            written before kvtier-serve measured it; default the cost model's step_overhead, or 0)\n"
               " cache:     --mode none|device|host|file --device-pages N --host-pages N --disk-pages N --page-tokens N\n"
               " loop:      --budget TOKENS --chunk TOKENS --max-batch N --window N --prefetch-depth N\n"
               " policies:  --policies P1,P2,... (BASE[+delay-hit][+balance][+bubble][+strata][+prefetch], BASE fcfs|lpm)\n"
               "            --policy-form batch|priority (IO-aware policies: the batch-level select with bubble filling,\n"
               "            default; or serving::server's per-request priority and not_now, what kvtier-serve runs)\n"
               " output:    --sweep R1,R2,... (rates; trace: time-scale factors) --out DIR --check (exit 1 if an invariant fails) --quiet\n",
               serving::cli::workload_usage);
  std::exit(code);
}

options parse(int argc, char** argv) {
  options o;
  o.wl.trace.path = KVTIER_SIMULATE_DEFAULT_TRACE;
  const serving::cli::arg_reader r{argc, argv, "kvtier-simulate"};
  auto need = [&](int& i) { return r.need(i); };
  auto count = [&](int& i) { return r.count(i); };
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--help" || a == "-h") usage(0);
    else if (serving::cli::parse_workload_arg(r, i, o.wl)) continue;
    else if (a == "--context") o.context = count(i);
    else if (a == "--vocab") o.vocab = count(i);
    else if (a == "--cost-model") o.cost_path = need(i);
    else if (a == "--policy-cost-model") o.policy_cost_path = need(i);
    else if (a == "--layers") o.layers = count(i);
    else if (a == "--step-overhead") {
      const std::string v = need(i);
      char* end = nullptr;
      o.step_overhead = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end != '\0' || !(o.step_overhead >= 0) || o.step_overhead > 10)
        throw kvtier::config_error("kvtier-simulate: --step-overhead is seconds, 0 to 10");
    }
    else if (a == "--mode") {
      const std::string m = need(i);
      if (m == "none") o.cache.mode = sim_mode::none;
      else if (m == "device") o.cache.mode = sim_mode::device;
      else if (m == "host") o.cache.mode = sim_mode::host;
      else if (m == "file") o.cache.mode = sim_mode::file;
      else throw kvtier::config_error("kvtier-simulate: --mode is none, device, host or file");
    } else if (a == "--device-pages") o.cache.device_pages = count(i);
    else if (a == "--host-pages") o.cache.host_pages = count(i);
    else if (a == "--disk-pages") o.cache.disk_pages = count(i);
    else if (a == "--page-tokens") o.cache.page_tokens = count(i);
    else if (a == "--budget") o.sim.token_budget = count(i);
    else if (a == "--chunk") o.sim.chunk_tokens = count(i);
    else if (a == "--max-batch") o.sim.max_batch = count(i);
    else if (a == "--window") o.sim.policy_window = count(i);
    else if (a == "--prefetch-depth") o.sim.prefetch_depth = count(i);
    else if (a == "--policies") o.policies = serving::cli::split(need(i));
    else if (a == "--policy-form") {
      const std::string f = need(i);
      if (f != "batch" && f != "priority") throw kvtier::config_error("kvtier-simulate: --policy-form is batch or priority");
      o.server_form = f == "priority";
    }
    else if (a == "--sweep") o.sweep = serving::cli::positive_list(need(i), "kvtier-simulate: --sweep");
    else if (a == "--out") o.out = need(i);
    else if (a == "--check") o.check = true;
    else if (a == "--quiet") o.quiet = true;
    else {
      std::fprintf(stderr, "kvtier-simulate: unknown option %s\n", argv[i]);
      usage(2);
    }
  }
  if (o.layers == 0 || o.cache.page_tokens == 0) throw kvtier::config_error("kvtier-simulate: --layers and --page-tokens must be positive");
  return o;
}

template <class Policy>
sim_result simulate(const options& o, const cost_model& cost, bool prefetch, Policy p, const serving::workload& w) {
  sim_options so = o.sim;
  so.prefetch_aware = prefetch;
  simulator<Policy> s(cost, o.cache, so, std::move(p));
  return s.run(w);
}

sim_result run_policy(const options& o, const cost_model& cost, const cost_model& pcost, const std::string& name, const serving::workload& w) {
  const auto p = serving::cli::parse_policy(name, "kvtier-simulate");
  const features use{p.delay_hit, p.balance, p.bubble};
  if (!p.io_aware()) {
    if (p.lpm) return simulate(o, cost, p.prefetch, serving::longest_prefix{}, w);
    return simulate(o, cost, p.prefetch, serving::fcfs{}, w);
  }
  if (o.server_form) {
    if (p.lpm) return simulate(o, cost, p.prefetch, server_form<io_aware<serving::longest_prefix>>{io_aware<serving::longest_prefix>(use, pcost)}, w);
    return simulate(o, cost, p.prefetch, server_form<io_aware<serving::fcfs>>{io_aware<serving::fcfs>(use, pcost)}, w);
  }
  if (p.lpm) return simulate(o, cost, p.prefetch, io_aware<serving::longest_prefix>(use, pcost), w);
  return simulate(o, cost, p.prefetch, io_aware<serving::fcfs>(use, pcost), w);
}

}  // namespace

int main(int argc, char** argv) try {
  const options o = parse(argc, argv);
  cost_model cost = o.cost_path.empty() ? h200_default() : load_cost_model(o.cost_path, o.layers);
  if (o.cost_path.empty()) cost.layers = o.layers;
  if (o.step_overhead >= 0) cost.step_a = o.step_overhead, cost.step_b = 0, cost.step_c = 0;
  if (cost.page_tokens != o.cache.page_tokens) {
    if (!o.cost_path.empty())
      throw kvtier::config_error("kvtier-simulate: --page-tokens differs from the cost model's page_tokens");
    cost.page_bytes = cost.page_bytes / double(cost.page_tokens) * double(o.cache.page_tokens);
    cost.page_tokens = o.cache.page_tokens;
  }
  for (const auto& p : o.policies) (void)serving::cli::parse_policy(p, "kvtier-simulate");
  cost_model pcost = cost;
  if (o.policy_cost_path == "default") pcost = h200_default(), pcost.layers = o.layers;
  else if (!o.policy_cost_path.empty()) pcost = load_cost_model(o.policy_cost_path, o.layers);
  std::filesystem::create_directories(o.out);
  const std::string csv_path = o.out + "/sweep.csv";
  std::ofstream csv(csv_path);
  if (!csv) throw kvtier::config_error("kvtier-simulate: cannot write " + csv_path);
  csv << "workload,policy,x,requests,throughput_rps,prompt_tok_s,ttft_p50_s,ttft_p90_s,ttft_p99_s,ttft_mean_s,"
         "load_wait_share,stall_step_share,reused_share,pages_loaded,pages_fetched,pages_prefetched,duplicate_pages,"
         "delay_hit_deferrals,steps,sim_wall_s,invariants_ok,step_s,overhead_s\n";
  const std::vector<double> xs = o.sweep.empty() ? std::vector<double>{0.0} : o.sweep;
  if (!o.quiet)
    std::printf("cost model: %s; prefill 8K %.1f ms, decode B=32 C=32K %.2f ms, load %.1f GB/s, fetch %.1f GB/s, page %zu tokens; "
                "step overhead %.3g + %.3g*sequences + %.3g*loaded_pages s\n",
                cost.source.c_str(), cost.prefill_s(8192, 0) * 1e3, cost.decode_s(32, 32768) * 1e3, cost.load_bytes_per_s / 1e9,
                cost.fetch_bytes_per_s / 1e9, cost.page_tokens, cost.step_a, cost.step_b, cost.step_c);
  if (!o.quiet)
    std::printf("%-10s %-28s %8s %6s %9s %9s %9s %8s %8s %7s %6s %8s\n", o.wl.kind.c_str(), "policy", "x", "req", "req/s",
                "TTFT p50", "TTFT p90", "stall%", "reuse%", "dup pg", "ok", "wall s");
  bool all_ok = true;
  sim_result last;
  for (double x : xs) {
    const serving::workload w = serving::cli::make_workload(o.wl, o.vocab, o.context, x, "kvtier-simulate");
    for (const auto& name : o.policies) {
      sim_result r = run_policy(o, cost, pcost, name, w);
      const sim_summary s = summarize(r);
      all_ok = all_ok && s.invariants_ok;
      const auto& c = r.counters;
      csv << o.wl.kind << ',' << name << ',' << x << ',' << s.requests << ',' << s.throughput_rps << ',' << s.prompt_tokens_per_s
          << ',' << s.ttft_p50 << ',' << s.ttft_p90 << ',' << s.ttft_p99 << ',' << s.ttft_mean << ',' << s.load_wait_share << ','
          << s.stall_step_share << ',' << s.reused_share << ',' << c.pages_loaded << ',' << c.pages_fetched << ','
          << c.pages_prefetched << ',' << c.duplicate_pages << ',' << c.delay_hit_deferrals << ',' << c.steps << ',' << r.wall_s
          << ',' << (s.invariants_ok ? 1 : 0) << ',' << c.step_s << ',' << c.overhead_s << '\n';
      if (!o.quiet)
        std::printf("%-10s %-28s %8.3g %6zu %9.3f %9.3f %9.3f %7.2f%% %7.1f%% %7llu %6s %8.2f\n", w.name.c_str(), name.c_str(), x,
                    s.requests, s.throughput_rps, s.ttft_p50, s.ttft_p90, 100 * s.load_wait_share, 100 * s.reused_share,
                    (unsigned long long)c.duplicate_pages, s.invariants_ok ? "yes" : "NO", r.wall_s);
      last = std::move(r);
    }
  }
  std::ofstream req(o.out + "/requests.csv");
  req << "id,arrival_s,admitted_s,first_token_s,finish_s,ttft_s,prompt_tokens,reused_tokens,computed_tokens,loaded_pages,fetched_pages,load_wait_s\n";
  for (const auto& x : last.records)
    req << x.id << ',' << x.arrival_s << ',' << x.admitted_s << ',' << x.first_token_s << ',' << x.finish_s << ',' << x.ttft_s() << ','
        << x.prompt_tokens << ',' << x.reused_tokens << ',' << x.computed_tokens << ',' << x.loaded_pages << ',' << x.fetched_pages << ','
        << x.load_wait_s << '\n';
  if (!o.quiet) std::printf("wrote %s\n", csv_path.c_str());
  if (o.check && !all_ok) {
    std::fprintf(stderr, "kvtier-simulate: an invariant failed (see invariants_ok in %s)\n", csv_path.c_str());
    return 1;
  }
  return 0;
} catch (const kvtier::config_error& e) {
  std::fprintf(stderr, "%s\n", e.what());
  return 2;
} catch (const std::exception& e) {
  std::fprintf(stderr, "kvtier-simulate: %s\n", e.what());
  return 1;
}
