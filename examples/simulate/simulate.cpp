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
#include "kvtier_engine/serving/policy.hpp"
#include "kvtier_engine/serving/workloads.hpp"

using namespace kvtier_engine;
using namespace kvtier_engine::scheduling;

namespace {

struct options {
  std::string workload = "longdoc";
  serving::longdoc_options longdoc;
  serving::chat_options chat;
  serving::mooncake_options trace;
  std::size_t vocab = 128256, context = 0, layers = 32;
  std::string cost_path;
  sim_cache_config cache{16, 4096, 16384, 65536, sim_mode::host};
  sim_options sim;
  std::vector<std::string> policies{"fcfs", "lpm"};
  std::vector<double> sweep;
  std::string out = "simulate-out";
  bool check = false, quiet = false;
};

[[noreturn]] void usage(int code) {
  std::fprintf(code ? stderr : stdout,
               "usage: kvtier-simulate [options]\n"
               " workload:  --workload longdoc|chat|trace (kvtier-serve's options)\n"
               "   longdoc: --docs D --questions Q --doc-min N --doc-max N --question-tokens N --answer-tokens N\n"
               "            --requests N --rate R --zipf S --workload-seed N\n"
               "   chat:    --sessions N --turns N --system-tokens N --user-min N --user-max N --reply N --rate R --think S\n"
               "   trace:   --trace FILE --time-scale F --limit N --max-output N --context N\n"
               "            --vocab N (token ids in [0, N); default llama3's 128256)\n"
               " model:     --cost-model FILE (kvtier-serve's cost_model.json; default: H200 from docs/engine.md) --layers N\n"
               " cache:     --mode none|device|host|file --device-pages N --host-pages N --disk-pages N --page-tokens N\n"
               " loop:      --budget TOKENS --chunk TOKENS --max-batch N --window N --prefetch-depth N\n"
               " policies:  --policies P1,P2,... (BASE[+delay-hit][+balance][+bubble][+strata][+prefetch], BASE fcfs|lpm)\n"
               " output:    --sweep R1,R2,... (rates; trace: time-scale factors) --out DIR --check (exit 1 if an invariant fails) --quiet\n");
  std::exit(code);
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> v;
  std::size_t i = 0;
  while (i <= s.size()) {
    const std::size_t c = s.find(',', i);
    v.push_back(s.substr(i, c == std::string::npos ? std::string::npos : c - i));
    if (c == std::string::npos) break;
    i = c + 1;
  }
  return v;
}

options parse(int argc, char** argv) {
  options o;
  o.trace.path = KVTIER_SIMULATE_DEFAULT_TRACE;
  auto need = [&](int& i) -> std::string {
    if (i + 1 >= argc) {
      std::fprintf(stderr, "kvtier-simulate: %s needs a value\n", argv[i]);
      std::exit(2);
    }
    return argv[++i];
  };
  auto count = [&](int& i) -> std::size_t {
    const std::string name = argv[i], v = need(i);
    char* end = nullptr;
    const long long x = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || x < 0) {
      std::fprintf(stderr, "kvtier-simulate: %s takes a non-negative integer, not '%s'\n", name.c_str(), v.c_str());
      std::exit(2);
    }
    return std::size_t(x);
  };
  auto real = [&](int& i) -> double {
    const std::string name = argv[i], v = need(i);
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0' || !(x >= 0)) {
      std::fprintf(stderr, "kvtier-simulate: %s takes a non-negative number, not '%s'\n", name.c_str(), v.c_str());
      std::exit(2);
    }
    return x;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--help" || a == "-h") usage(0);
    else if (a == "--workload") o.workload = need(i);
    else if (a == "--docs") o.longdoc.documents = count(i);
    else if (a == "--questions") o.longdoc.questions = count(i);
    else if (a == "--doc-min") o.longdoc.doc_min = count(i);
    else if (a == "--doc-max") o.longdoc.doc_max = count(i);
    else if (a == "--question-tokens") o.longdoc.question_tokens = count(i);
    else if (a == "--answer-tokens") o.longdoc.answer_tokens = count(i);
    else if (a == "--requests") o.longdoc.requests = count(i);
    else if (a == "--rate") o.longdoc.rate = o.chat.rate = real(i);
    else if (a == "--zipf") o.longdoc.zipf = real(i);
    else if (a == "--workload-seed") o.longdoc.seed = o.chat.seed = count(i);
    else if (a == "--sessions") o.chat.sessions = count(i);
    else if (a == "--turns") o.chat.turns = count(i);
    else if (a == "--system-tokens") o.chat.system_tokens = count(i);
    else if (a == "--user-min") o.chat.user_min = count(i);
    else if (a == "--user-max") o.chat.user_max = count(i);
    else if (a == "--reply") o.chat.reply_tokens = count(i);
    else if (a == "--think") o.chat.think_s = real(i);
    else if (a == "--trace") o.trace.path = need(i);
    else if (a == "--time-scale") o.trace.time_scale = real(i);
    else if (a == "--limit") o.trace.limit = count(i);
    else if (a == "--max-output") o.trace.max_output = count(i);
    else if (a == "--context") o.context = count(i);
    else if (a == "--vocab") o.vocab = count(i);
    else if (a == "--cost-model") o.cost_path = need(i);
    else if (a == "--layers") o.layers = count(i);
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
    else if (a == "--policies") o.policies = split(need(i));
    else if (a == "--sweep") {
      for (const auto& x : split(need(i))) {
        char* end = nullptr;
        const double v = std::strtod(x.c_str(), &end);
        if (x.empty() || *end != '\0' || !(v > 0)) throw kvtier::config_error("kvtier-simulate: --sweep takes positive numbers");
        o.sweep.push_back(v);
      }
    } else if (a == "--out") o.out = need(i);
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

serving::workload make_workload(const options& o, double x) {
  if (o.workload == "longdoc") {
    auto l = o.longdoc;
    if (x > 0) l.rate = x;
    return serving::longdoc_workload(l, o.vocab);
  }
  if (o.workload == "chat") {
    auto c = o.chat;
    if (x > 0) c.rate = x;
    return serving::chat_workload(c, o.vocab);
  }
  if (o.workload == "trace") {
    auto t = o.trace;
    if (x > 0) t.time_scale = x;
    t.context = o.context;
    return serving::mooncake_workload(t, o.vocab);
  }
  throw kvtier::config_error("kvtier-simulate: --workload is longdoc, chat or trace");
}

struct policy_spec {
  bool lpm = false, prefetch = false;
  features use;
};
policy_spec parse_policy(const std::string& name) {
  policy_spec p;
  const auto parts = [&] {
    std::vector<std::string> v;
    std::size_t i = 0;
    for (;;) {
      const std::size_t c = name.find('+', i);
      v.push_back(name.substr(i, c == std::string::npos ? std::string::npos : c - i));
      if (c == std::string::npos) return v;
      i = c + 1;
    }
  }();
  if (parts[0] == "lpm") p.lpm = true;
  else if (parts[0] != "fcfs") throw kvtier::config_error("kvtier-simulate: policy '" + name + "' must start with fcfs or lpm");
  for (std::size_t k = 1; k < parts.size(); ++k) {
    const auto& f = parts[k];
    if (f == "delay-hit") p.use.delay_hit = true;
    else if (f == "balance") p.use.balance = true;
    else if (f == "bubble") p.use.bubble = true;
    else if (f == "strata") p.use = {true, true, true};
    else if (f == "prefetch") p.prefetch = true;
    else throw kvtier::config_error("kvtier-simulate: unknown policy feature '" + f + "' in '" + name + "'");
  }
  return p;
}

template <class Policy>
sim_result simulate(const options& o, const cost_model& cost, bool prefetch, Policy p, const serving::workload& w) {
  sim_options so = o.sim;
  so.prefetch_aware = prefetch;
  simulator<Policy> s(cost, o.cache, so, std::move(p));
  return s.run(w);
}

sim_result run_policy(const options& o, const cost_model& cost, const std::string& name, const serving::workload& w) {
  const policy_spec p = parse_policy(name);
  const bool io = p.use.delay_hit || p.use.balance || p.use.bubble;
  if (!io) {
    if (p.lpm) return simulate(o, cost, p.prefetch, serving::longest_prefix{}, w);
    return simulate(o, cost, p.prefetch, serving::fcfs{}, w);
  }
  if (p.lpm) return simulate(o, cost, p.prefetch, io_aware<serving::longest_prefix>(p.use, cost), w);
  return simulate(o, cost, p.prefetch, io_aware<serving::fcfs>(p.use, cost), w);
}

}  // namespace

int main(int argc, char** argv) try {
  const options o = parse(argc, argv);
  cost_model cost = o.cost_path.empty() ? h200_default() : load_cost_model(o.cost_path, o.layers);
  if (o.cost_path.empty()) cost.layers = o.layers;
  if (cost.page_tokens != o.cache.page_tokens) {
    if (!o.cost_path.empty())
      throw kvtier::config_error("kvtier-simulate: --page-tokens differs from the cost model's page_tokens");
    cost.page_bytes = cost.page_bytes / double(cost.page_tokens) * double(o.cache.page_tokens);
    cost.page_tokens = o.cache.page_tokens;
  }
  for (const auto& p : o.policies) (void)parse_policy(p);
  std::filesystem::create_directories(o.out);
  const std::string csv_path = o.out + "/sweep.csv";
  std::ofstream csv(csv_path);
  if (!csv) throw kvtier::config_error("kvtier-simulate: cannot write " + csv_path);
  csv << "workload,policy,x,requests,throughput_rps,prompt_tok_s,ttft_p50_s,ttft_p90_s,ttft_p99_s,ttft_mean_s,"
         "load_wait_share,stall_step_share,reused_share,pages_loaded,pages_fetched,pages_prefetched,duplicate_pages,"
         "delay_hit_deferrals,steps,sim_wall_s,invariants_ok\n";
  const std::vector<double> xs = o.sweep.empty() ? std::vector<double>{0.0} : o.sweep;
  if (!o.quiet)
    std::printf("cost model: %s; prefill 8K %.1f ms, decode B=32 C=32K %.2f ms, load %.1f GB/s, fetch %.1f GB/s, page %zu tokens\n",
                cost.source.c_str(), cost.prefill_s(8192, 0) * 1e3, cost.decode_s(32, 32768) * 1e3, cost.load_bytes_per_s / 1e9,
                cost.fetch_bytes_per_s / 1e9, cost.page_tokens);
  if (!o.quiet)
    std::printf("%-10s %-28s %8s %6s %9s %9s %9s %8s %8s %7s %6s %8s\n", o.workload.c_str(), "policy", "x", "req", "req/s",
                "TTFT p50", "TTFT p90", "stall%", "reuse%", "dup pg", "ok", "wall s");
  bool all_ok = true;
  sim_result last;
  for (double x : xs) {
    const serving::workload w = make_workload(o, x);
    for (const auto& name : o.policies) {
      sim_result r = run_policy(o, cost, name, w);
      const sim_summary s = summarize(r);
      all_ok = all_ok && s.invariants_ok;
      const auto& c = r.counters;
      csv << o.workload << ',' << name << ',' << x << ',' << s.requests << ',' << s.throughput_rps << ',' << s.prompt_tokens_per_s
          << ',' << s.ttft_p50 << ',' << s.ttft_p90 << ',' << s.ttft_p99 << ',' << s.ttft_mean << ',' << s.load_wait_share << ','
          << s.stall_step_share << ',' << s.reused_share << ',' << c.pages_loaded << ',' << c.pages_fetched << ','
          << c.pages_prefetched << ',' << c.duplicate_pages << ',' << c.delay_hit_deferrals << ',' << c.steps << ',' << r.wall_s
          << ',' << (s.invariants_ok ? 1 : 0) << '\n';
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
