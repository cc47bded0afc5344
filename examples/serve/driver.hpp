#pragma once
// kvtier-serve's driver, shared by the CPU build (serve_cpu.cpp: cpu_backend, stories260K) and the
// CUDA build (serve_cuda.cu: cuda_backend, synthetic llama3-8b shape): options, one server per
// (mode, rate), the reports. A traits type gives the backend, the cache type of each mode and the
// model.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier_engine/engine.hpp"
#include "kvtier_engine/scheduling/cost_model.hpp"
#include "kvtier_engine/scheduling/policies.hpp"
#include "kvtier_engine/serving/cli.hpp"
#include "kvtier_engine/serving/cost_model.hpp"
#include "kvtier_engine/serving/metrics.hpp"
#include "kvtier_engine/serving/modes.hpp"
#include "kvtier_engine/serving/policy.hpp"
#include "kvtier_engine/serving/server.hpp"
#include "kvtier_engine/serving/workloads.hpp"

namespace kvtier_serve {

using namespace kvtier_engine;
using namespace kvtier_engine::serving;

struct options {
  std::string model_dir, shape;
  std::uint64_t seed = 7;
  std::size_t context = 0, threads = 0;
  cli::workload_options wl;
  std::vector<cache_mode> modes;
  std::size_t device_pages = 256, host_pages = 1024, disk_pages = 4096;
  std::string dir, out = "serve-out";
  std::string policy = "fcfs";
  std::string cost_path;  // the IO-aware policies' cost model (kvtier-serve's cost_model.json); default the H200 one
  bool batch_invariant = true;  // CUDA: batch-invariant kernels (cuda_options::batch_invariant)
  std::size_t decode_split_keys = 0;  // CUDA, batch-invariant: decode attention's split length (0: the backend's default)
  server_options server;
  std::vector<double> sweep;  // rates (trace: time-scale factors)
  bool quiet = false;
};

inline void usage(std::FILE* f, const char* prog) {
  std::fprintf(f,
               "usage: %s [options]\n"
               " model:     --model DIR (llama2.c checkpoint; CPU default models/stories260K) | --shape NAME --seed N\n"
               "            --context N (the longest prompt + reply; default the model's) --threads N\n"
               "            --batch-invariant 0|1 (CUDA: batch-invariant GEMMs and attention splits; default 1)\n"
               "            --decode-split-keys N (CUDA, batch-invariant: keys per decode attention split; default the backend's)\n"
               "%s"
               " modes:     --modes none,device,host,file   capacities in pages: --device-pages N --host-pages N --disk-pages N\n"
               "            --dir PATH (file tier directory; default a temporary one)\n"
               " scheduler: --policy BASE[+delay-hit][+balance][+bubble][+strata] (BASE fcfs|lpm) --cost-model FILE\n"
               "            --budget TOKENS --chunk TOKENS --max-batch N\n"
               "            --batch-prefill 0|1 (a step's prefill chunks in one backend call when it has prefill_batch; default 1)\n"
               "            --load-aware 0|1 (decode first; a chunk whose prefix is still loading waits for a step with nothing else; default 1)\n"
               " output:    --out DIR (requests.csv, summary.csv, sweep.csv, sweep.svg, cost_model.json) --sweep R1,R2,...\n"
               "            (trace: --sweep takes time-scale factors)  --quiet\n",
               prog, cli::workload_usage);
}

// Parses argv; exits 2 with a message on a bad argument.
inline options parse(int argc, char** argv, const options& defaults) {
  options o = defaults;
  std::string modes = "none,device,host,file";
  const cli::arg_reader r{argc, argv, "kvtier-serve"};
  auto need = [&](int& i) { return r.need(i); };
  auto count = [&](int& i) { return r.count(i); };
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--help" || a == "-h") usage(stdout, argv[0]), std::exit(0);
    else if (a == "--model") o.model_dir = need(i), o.shape.clear();
    else if (a == "--shape") o.shape = need(i), o.model_dir.clear();
    else if (a == "--seed") o.seed = count(i);
    else if (a == "--context") o.context = count(i);
    else if (a == "--threads") o.threads = count(i);
    else if (cli::parse_workload_arg(r, i, o.wl)) continue;
    else if (a == "--modes") modes = need(i);
    else if (a == "--device-pages") o.device_pages = count(i);
    else if (a == "--host-pages") o.host_pages = count(i);
    else if (a == "--disk-pages") o.disk_pages = count(i);
    else if (a == "--dir") o.dir = need(i);
    else if (a == "--policy") o.policy = need(i);
    else if (a == "--cost-model") o.cost_path = need(i);
    else if (a == "--batch-invariant") o.batch_invariant = count(i) != 0;
    else if (a == "--decode-split-keys") o.decode_split_keys = count(i);
    else if (a == "--budget") o.server.token_budget = count(i);
    else if (a == "--chunk") o.server.chunk_tokens = count(i);
    else if (a == "--max-batch") o.server.max_batch = count(i);
    else if (a == "--batch-prefill") o.server.batch_prefill = count(i) != 0;
    else if (a == "--load-aware") o.server.load_aware = count(i) != 0;
    else if (a == "--out") o.out = need(i);
    else if (a == "--sweep") o.sweep = cli::positive_list(need(i), "kvtier-serve: --sweep");
    else if (a == "--quiet") o.quiet = true;
    else {
      std::fprintf(stderr, "kvtier-serve: unknown argument '%s'\n", argv[i]);
      usage(stderr, argv[0]);
      std::exit(2);
    }
  }
  o.modes = parse_modes(modes);
  if (cli::parse_policy(o.policy, "kvtier-serve").prefetch)
    throw kvtier::config_error("kvtier-serve: +prefetch (scheduler-aware prefetch) runs in kvtier-simulate only");
  if (o.wl.kind != "longdoc" && o.wl.kind != "chat" && o.wl.kind != "trace")
    throw kvtier::config_error("kvtier-serve: --workload is longdoc, chat or trace");
  if (o.device_pages == 0 || o.host_pages == 0) throw kvtier::config_error("kvtier-serve: --device-pages and --host-pages must be positive");
  return o;
}

inline workload make_workload(const options& o, std::size_t vocab, std::size_t context, double point) {
  return cli::make_workload(o.wl, vocab, context, point, "kvtier-serve");
}

// A fresh directory for one file tier, removed by the destructor.
struct scratch_dir {
  std::filesystem::path path;
  bool own = false;
  explicit scratch_dir(const std::string& base) {
    if (!base.empty()) {
      static int n = 0;
      path = std::filesystem::path(base) / ("run-" + std::to_string(::getpid()) + "-" + std::to_string(n++));
      std::filesystem::create_directories(path);
    } else {
      std::string t = (std::filesystem::temp_directory_path() / "kvtier-serve-XXXXXX").string();
      if (!::mkdtemp(t.data())) throw kvtier::config_error("kvtier-serve: mkdtemp failed");
      path = t;
    }
    own = true;
  }
  ~scratch_dir() {
    std::error_code ec;
    if (own) std::filesystem::remove_all(path, ec);
  }
};

// What the traits of both programs hold: the model as it runs, its weights, the backend's options.
struct traits_base {
  model_weights w;
  model_config m;
  backend_options bo;
  const model_config& config() const { return m; }
};

// One (mode, point) run's outcome.
struct mode_run {
  cache_mode mode;
  double point = 0;
  summary sum;
  run_result result;
};

// One server of cache type Cache over workload `wl`: mode none runs it with caching off.
template <class Backend, class Cache, class... Slow>
kvtier::result<run_result> serve_once(const model_config& m, const model_weights& w, precision p, backend_options bo,
                                      const options& o, bool caching, std::size_t host_pages, const workload& wl,
                                      std::unique_ptr<Slow>... slow) {
  const auto cfg = engine<Backend, Cache>::cache_config(w, p, o.device_pages, host_pages);
  server_options so = o.server;
  so.caching = caching;
  auto go = [&](auto policy) {
    auto s = std::make_unique<server<Backend, Cache, decltype(policy)>>(m, w, cfg, bo, so, std::move(policy), std::move(slow)...);
    return s->run(wl);
  };
  const auto spec = cli::parse_policy(o.policy, "kvtier-serve");
  if (!spec.io_aware()) return spec.lpm ? go(longest_prefix{}) : go(fcfs{});
  const scheduling::cost_model cost = o.cost_path.empty() ? scheduling::h200_default() : scheduling::load_cost_model(o.cost_path, m.layers);
  const scheduling::features use{spec.delay_hit, spec.balance, spec.bubble};
  if (spec.lpm) return go(scheduling::io_aware<longest_prefix>(use, cost));
  return go(scheduling::io_aware<fcfs>(use, cost));
}

// Runs one mode on the traits' backend and caches (Traits: device_only_cache, host_cache, and with
// a file tier file_cache, file_tier_type and file_config(dir, pages); precision(); m, w, bo).
template <class Backend, class Traits>
kvtier::result<run_result> run_mode(const Traits& t, cache_mode mode, const options& o, const workload& wl) {
  using device_only = typename Traits::device_only_cache;
  switch (mode) {
    case cache_mode::none: return serve_once<Backend, device_only>(t.m, t.w, t.run_precision(), t.bo, o, false, 1, wl);
    case cache_mode::device: return serve_once<Backend, device_only>(t.m, t.w, t.run_precision(), t.bo, o, true, 1, wl);
    case cache_mode::host:
      return serve_once<Backend, typename Traits::host_cache>(t.m, t.w, t.run_precision(), t.bo, o, true, o.host_pages, wl);
    case cache_mode::file:
      if constexpr (Traits::has_file_tier) {
        using tier = typename Traits::file_tier_type;
        scratch_dir dir(o.dir);
        return serve_once<Backend, typename Traits::file_cache>(t.m, t.w, t.run_precision(), t.bo, o, true, o.host_pages, wl,
                                                                std::make_unique<tier>(t.file_config(dir.path, o.disk_pages)));
      }
      break;
  }
  return kvtier::make_error(kvtier::errc::invalid_argument);
}

// The file tier's put and get bandwidth on a scratch tier of its own (`pages` pages, one batch each way).
template <class Traits>
std::vector<slow_tier_measurement> file_bandwidth_of(const Traits& t, const options& o, std::size_t pages) {
  if constexpr (Traits::has_file_tier) {
    scratch_dir dir(o.dir);
    auto cfg = t.file_config(dir.path, pages);
    typename Traits::file_tier_type tier(cfg);
    return {slow_tier_bandwidth(tier, cfg.page_bytes, pages, kvtier::namespace_id{0xca1})};
  } else {
    (void)t, (void)o, (void)pages;
    return {};
  }
}

// Compares greedy tokens of every run with the first: requests and tokens that differ.
struct token_check {
  std::size_t compared = 0, differing_requests = 0, differing_tokens = 0;
};
inline token_check compare_tokens(const run_result& ref, const run_result& r) {
  token_check c;
  for (std::size_t i = 0; i < ref.records.size() && i < r.records.size(); ++i) {
    const auto& a = ref.records[i].output;
    const auto& b = r.records[i].output;
    ++c.compared;
    std::size_t diff = a.size() > b.size() ? a.size() - b.size() : b.size() - a.size();
    for (std::size_t k = 0; k < std::min(a.size(), b.size()); ++k) diff += a[k] != b[k];
    c.differing_tokens += diff;
    c.differing_requests += diff > 0;
  }
  return c;
}

// gnuplot, when installed: p90 TTFT against request throughput, one line per mode (argv, no shell).
inline void plot_sweep(const options& o, const std::vector<mode_run>& runs) {
  const std::string gp = o.out + "/sweep.gp", svg = o.out + "/sweep.svg";
  std::FILE* f = std::fopen(gp.c_str(), "w");
  if (!f) return;
  std::fprintf(f, "set terminal svg size 800,500\nset output '%s'\nset xlabel 'throughput (requests/s)'\n"
                  "set ylabel 'p90 TTFT (s)'\nset logscale y\nset key top left\nset grid\nset title 'kvtier-serve: %s, latency vs throughput'\n",
               svg.c_str(), o.wl.kind.c_str());
  std::vector<std::string> modes;
  for (const auto& r : runs)
    if (std::find(modes.begin(), modes.end(), r.sum.mode) == modes.end()) modes.push_back(r.sum.mode);
  std::fprintf(f, "plot ");
  for (std::size_t i = 0; i < modes.size(); ++i)
    std::fprintf(f, "%s'-' using 1:2 with linespoints title '%s'", i ? ", " : "", modes[i].c_str());
  std::fprintf(f, "\n");
  for (const auto& m : modes) {
    for (const auto& r : runs)
      if (r.sum.mode == m) std::fprintf(f, "%g %g\n", r.sum.req_per_s, r.sum.ttft_p90);
    std::fprintf(f, "e\n");
  }
  std::fclose(f);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execlp("gnuplot", "gnuplot", gp.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  if (pid > 0) ::waitpid(pid, &status, 0);
  if (pid < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    std::printf("(gnuplot not found or failed: %s holds the data; scripts/install-deps --bench installs gnuplot)\n", gp.c_str());
  else
    std::printf("plot: %s\n", svg.c_str());
}

// Runs every mode at every sweep point, writes the reports; returns the exit code.
// Traits (serve_cpu.cpp, serve_cuda.cu): page_tokens, the caches of the modes (run_mode), config(),
// kv_type(), backend_name(), device_name(), run(mode, options, workload), file_bandwidth_pages.
template <class Traits>
int run_all(const options& o, Traits& traits) {
  std::filesystem::create_directories(o.out);
  const model_config m = traits.config();
  std::FILE* req_csv = std::fopen((o.out + "/requests.csv").c_str(), "w");
  std::FILE* sum_csv = std::fopen((o.out + "/summary.csv").c_str(), "w");
  if (!req_csv || !sum_csv) throw kvtier::config_error("kvtier-serve: cannot write into " + o.out);
  write_request_csv_header(req_csv);
  write_summary_csv_header(sum_csv);
  std::vector<double> points = o.sweep.empty() ? std::vector<double>{0.0} : o.sweep;
  std::vector<mode_run> runs;
  cost_samples all_samples;
  std::printf("kvtier-serve: %s on %s (%s), context %zu, workload %s, policy %s, budget %zu tokens/step, chunk %zu, max batch %zu\n",
              m.name.c_str(), traits.backend_name().c_str(), traits.device_name().c_str(), m.seq_len, o.wl.kind.c_str(),
              o.policy.c_str(), o.server.token_budget, o.server.chunk_tokens, o.server.max_batch);
  std::printf("capacities: device %zu pages, host %zu pages, file %zu pages (%zu tokens/page, %zu bytes/page)\n", o.device_pages,
              o.host_pages, o.disk_pages, Traits::page_tokens, std::size_t(m.kv_shape(traits.kv_type()).bytes_per_page(Traits::page_tokens)));
  int rc = 0;
  for (double point : points) {
    const workload w = make_workload(o, m.vocab, m.seq_len, point);
    std::size_t prompt_tokens = 0;
    for (const auto& r : w.requests) prompt_tokens += r.prompt.size();
    const double shown = point > 0 ? point : (o.wl.kind == "trace" ? o.wl.trace.time_scale : o.wl.kind == "chat" ? o.wl.chat.rate : o.wl.longdoc.rate);
    std::printf("\n%s: %zu requests, %zu prompt tokens (first turns only for chat), %s %g\n", w.name.c_str(), w.requests.size(),
                prompt_tokens, o.wl.kind == "trace" ? "time scale" : "rate", shown);
    print_summary_header(stdout);
    std::optional<std::size_t> ref;
    for (cache_mode mode : o.modes) {
      if (mode == cache_mode::file && !Traits::has_file_tier) {
        std::printf("%-14s (skipped: built without liburing, no file tier)\n", std::string(to_string(mode)).c_str());
        continue;
      }
      auto r = traits.run(mode, o, w);
      if (!r) {
        std::fprintf(stderr, "kvtier-serve: mode %s failed: %s\n", std::string(to_string(mode)).c_str(),
                     std::string(kvtier::to_string(r.code())).c_str());
        return 1;
      }
      summary s = summarize(r->records, r->counters);
      s.mode = std::string(to_string(mode));
      s.workload = w.name;
      s.policy = o.policy;
      s.rate = shown;
      print_summary_row(stdout, s);
      std::fflush(stdout);
      write_summary_csv(sum_csv, s);
      write_request_csv(req_csv, s.mode, shown, r->records);
      std::fflush(sum_csv);  // a run stopped early keeps every finished (mode, point)
      std::fflush(req_csv);
      all_samples.prefill.insert(all_samples.prefill.end(), r->samples.prefill.begin(), r->samples.prefill.end());
      all_samples.decode.insert(all_samples.decode.end(), r->samples.decode.begin(), r->samples.decode.end());
      all_samples.step.insert(all_samples.step.end(), r->samples.step.begin(), r->samples.step.end());
      all_samples.batched_prefill |= r->samples.batched_prefill;
      all_samples.load_aware |= r->samples.load_aware;
      runs.push_back(mode_run{mode, shown, s, std::move(*r)});
      if (!ref) ref = runs.size() - 1;
    }
    // Greedy tokens must not depend on the mode.
    for (std::size_t i = *ref + 1; i < runs.size(); ++i) {
      const token_check c = compare_tokens(runs[*ref].result, runs[i].result);
      std::printf("tokens %s vs %s: %zu requests compared, %zu differ (%zu tokens)\n", runs[i].sum.mode.c_str(),
                  runs[*ref].sum.mode.c_str(), c.compared, c.differing_requests, c.differing_tokens);
      if (c.differing_tokens) rc = 3;
    }
    // Keep only the summaries of earlier points (records are in the CSVs already).
    for (auto& r : runs) r.result.records.clear(), r.result.records.shrink_to_fit();
  }
  std::fclose(req_csv);
  std::fclose(sum_csv);

  // The latency–throughput sweep: one row per (mode, point), and a plot of p90 TTFT against throughput.
  if (points.size() > 1) {
    const std::string csv = o.out + "/sweep.csv";
    std::FILE* f = std::fopen(csv.c_str(), "w");
    if (!f) throw kvtier::config_error("kvtier-serve: cannot write " + csv);
    std::fprintf(f, "mode,offered,req_per_s,prompt_tok_per_s,output_tok_per_s,ttft_p50_s,ttft_p90_s,ttft_p99_s,tpot_p50_s,tpot_p90_s,"
                    "tpot_p99_s,load_wait_fraction,stall_step_fraction\n");
    for (const auto& r : runs)
      std::fprintf(f, "%s,%g,%.4f,%.1f,%.1f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.4f,%.4f\n", r.sum.mode.c_str(), r.point, r.sum.req_per_s,
                   r.sum.prompt_tok_per_s, r.sum.output_tok_per_s, r.sum.ttft_p50, r.sum.ttft_p90, r.sum.ttft_p99, r.sum.tpot_p50,
                   r.sum.tpot_p90, r.sum.tpot_p99, r.sum.load_wait_fraction(), r.sum.stall_step_fraction());
    std::fclose(f);
    std::printf("\nsweep: %s\n", csv.c_str());
    plot_sweep(o, runs);
  }
  // The cost model: compute fits from every run, copy bandwidth of the device+host cache's path.
  cost_model_info info{m.name, traits.backend_name(), traits.device_name(), "all modes", Traits::page_tokens,
                       std::size_t(m.kv_shape(traits.kv_type()).bytes_per_page(Traits::page_tokens))};
  const auto copies = serving::copy_bandwidth<typename Traits::host_cache>(m.kv_shape(traits.kv_type()), Traits::page_tokens, {1, 16, 256});
  info.file_tier = file_bandwidth_of(traits, o, Traits::file_bandwidth_pages);
  write_cost_model_json(o.out + "/cost_model.json", info, all_samples, copies);
  const linear_fit pf = fit_prefill(all_samples.prefill), df = fit_decode(all_samples.decode);
  std::printf("cost model: prefill t = %.3g + %.3g*n + %.3g*n*(s+n/2) s (R2 %.3f, %zu chunks); decode t = %.3g + %.3g*B + %.3g*C s "
              "(R2 %.3f, %zu steps)\n",
              pf.coef[0], pf.coef[1], pf.coef[2], pf.r2, pf.samples, df.coef[0], df.coef[1], df.coef[2], df.r2, df.samples);
  for (const auto& c : copies)
    std::printf("            copies of %zu pages (%zu B): load h2d %.2f GB/s, backup d2h %.2f GB/s\n", c.pages, c.bytes,
                c.load_s > 0 ? double(c.bytes) / c.load_s / 1e9 : 0.0, c.backup_s > 0 ? double(c.bytes) / c.backup_s / 1e9 : 0.0);
  for (const auto& c : info.file_tier)
    std::printf("            file tier, %zu pages (%zu B) in one batch: write %.2f GB/s, read %.2f GB/s%s\n", c.pages, c.bytes,
                c.write_s > 0 ? double(c.bytes) / c.write_s / 1e9 : 0.0, c.read_s > 0 ? double(c.bytes) / c.read_s / 1e9 : 0.0,
                c.ok ? "" : " (FAILED: some put or get did not succeed)");
  std::printf("wrote %s/{summary.csv, requests.csv, cost_model.json%s}\n", o.out.c_str(), points.size() > 1 ? ", sweep.csv, sweep.svg" : "");
  return rc;
}

// main() of both programs: options over `defaults`, the traits, every run; 2 on a bad configuration.
template <class Traits>
int serve_main(int argc, char** argv, const options& defaults, const char* prog) {
  try {
    const options o = parse(argc, argv, defaults);
    Traits traits(o);
    return run_all(o, traits);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", prog, e.what());
    return 2;
  }
}

}  // namespace kvtier_serve
