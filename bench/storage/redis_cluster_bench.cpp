// Redis Cluster tier bench: SET/GET pages/s of redis_cluster_tier against `redis-benchmark --cluster`
// on the same three-master cluster (started by this bench on loopback, no replicas, no persistence),
// same value size (page + 96-byte header) and same requests in flight per master. Table + CSV.
//   kvtier-bench-storage-redis-cluster [--pages 131072,1048576] [--pipeline 1,16] [--mib 384]
//                                      [--reps 3] [--csv storage_redis_cluster.csv]
// redis-benchmark: `--cluster -c 3 -P <pipeline>`, one client per master, each with <pipeline>
// requests in flight. kvtier, same 3 x <pipeline> pages in flight (distinct keys, spread over the
// masters by hash slot), every GET verified, in two ways:
//   batch:  one batch of 3 x <pipeline> pages at a time (wait for all, then the next);
//   window: 3 batches of <pipeline> pages in flight, each resubmitted as soon as it completes
//           (as redis-benchmark's three clients do).
// Figures are medians of `reps` alternating runs; ratios are medians of side-by-side ratios. Like
// redis-benchmark's SET (one key per master, rewritten), the timed kvtier SETs rewrite keys that exist.
// redis-benchmark runs twice: as is (one key per master: a hot value in the server's cache), and
// with -r <pages> (random keys over as many keys as kvtier uses: the same memory footprint);
// the ratios are against the first, the "-r" columns show the second.
#include <algorithm>
#include <random>
#include <vector>

#include "bench/storage/common.hpp"
#include "kvtier/storage/redis_cluster_tier.hpp"
#include "kvtier/testing/redis_cluster.hpp"

using namespace kvtier;
using namespace std::chrono_literals;

namespace {
struct point {
  const char* mode;
  std::size_t page, pipeline, n;
  double kv_set, kv_get, rb_set, rb_get;  // pages/s, medians
  double rr_set, rr_get;                  // redis-benchmark -r <pages>, medians
  double set_ratio, get_ratio;            // medians of side-by-side ratios
  double get_ratio_min, get_ratio_max;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// redis-benchmark's requests per second for `test` from its CSV output.
double rps_of(const std::string& csv, const char* test) {
  const std::string tag = std::string("\"") + test + "\",\"";
  const std::size_t at = csv.find(tag);
  return at == std::string::npos ? 0 : std::strtod(csv.c_str() + at + tag.size(), nullptr);
}
}  // namespace

int main(int argc, char** argv) {
  const auto pages = bench::list(bench::arg(argc, argv, "--pages", "131072,1048576"));
  const auto pipelines = bench::list(bench::arg(argc, argv, "--pipeline", "1,16"));
  const std::size_t mib = std::stoull(bench::arg(argc, argv, "--mib", "384"));
  const std::string csv = bench::arg(argc, argv, "--csv", "storage_redis_cluster.csv");
  const std::size_t reps = std::max<std::size_t>(1, std::stoull(bench::arg(argc, argv, "--reps", "3")));
  constexpr std::size_t masters = 3;

  testing::redis_cluster::options o;
  o.masters = int(masters);
  o.replicas = 0;
  o.node_timeout_ms = 5000;
  testing::redis_cluster cluster(o);
  const int port = cluster.port(0);
  std::printf("redis_cluster_tier vs redis-benchmark --cluster: %zu masters on 127.0.0.1 (first :%d), no replicas\n",
              masters, port);
  std::printf("%9s %4s %-6s | %9s %9s %6s %9s | %9s %9s %6s %11s %9s | %8s\n", "page", "pipe", "kvtier", "kv SET/s", "rb SET/s",
              "ratio", "rb -r SET", "kv GET/s", "rb GET/s", "ratio", "(min-max)", "rb -r GET", "kv GB/s");
  std::vector<point> results;
  for (std::size_t page : pages) {
    const std::size_t n = std::max<std::size_t>(96, (mib << 20) / page);
    std::vector<std::byte> data(n * page);
    std::mt19937_64 rng(7);
    for (auto& b : data) b = std::byte(rng());
    for (std::size_t pipe : pipelines) {
      redis_cluster_tier_config cfg{.shape = shapes::llama3_8b(), .page_bytes = page, .seeds = cluster.seeds()};
      cfg.io_timeout = 30s;
      redis_cluster_tier<> t(cfg);
      std::vector<page_write> w(n);
      std::vector<page_read> r(n);
      for (std::size_t i = 0; i < n; ++i) {
        const page_address a{namespace_id{1}, page_key{i, pipe}};
        w[i] = {a, i, std::span(data).subspan(i * page, page)};
        r[i] = {a, i, std::span(data).subspan(i * page, page)};
      }
      // batch: one batch of masters x pipe pages at a time.
      storage_batch b;
      auto batch_pass = [&](bool write) {
        const std::size_t batch_pages = masters * pipe;
        const auto start = std::chrono::steady_clock::now();
        for (std::size_t i = 0; i < n; i += batch_pages) {
          const std::size_t k = std::min(batch_pages, n - i);
          const bool ok = write ? t.put(std::span(w).subspan(i, k), b).has_value() : t.get(std::span(r).subspan(i, k), b).has_value();
          if (!ok || !t.wait(b, 60s) || !b.all_ok()) {
            std::fprintf(stderr, "kvtier %s failed\n", write ? "SET" : "GET");
            std::exit(1);
          }
        }
        return double(n) / bench::seconds_since(start);
      };
      // window: `masters` batches of pipe pages in flight, each refilled when it completes.
      std::vector<storage_batch> ring(masters);
      auto window_pass = [&](bool write) {
        const auto start = std::chrono::steady_clock::now();
        std::size_t next = 0;
        auto submit = [&](storage_batch& s) {
          if (next >= n) return;
          const std::size_t k = std::min(pipe, n - next);
          const bool ok = write ? t.put(std::span(w).subspan(next, k), s).has_value() : t.get(std::span(r).subspan(next, k), s).has_value();
          if (!ok) std::exit(1);
          next += k;
        };
        auto settle = [&](storage_batch& s) {
          if (!t.wait(s, 60s) || !s.all_ok()) {
            std::fprintf(stderr, "kvtier %s failed\n", write ? "SET" : "GET");
            std::exit(1);
          }
        };
        for (auto& s : ring) submit(s);
        for (std::size_t k = 0; next < n; ++k) {  // the oldest batch completes first: refill it
          storage_batch& s = ring[k % masters];
          settle(s);
          submit(s);
        }
        for (auto& s : ring) settle(s);
        return double(n) / bench::seconds_since(start);
      };
      (void)batch_pass(true);  // create the keys; the timed passes overwrite them, as redis-benchmark does
      std::vector<double> bs, bg, ws, wg, rs, rg, rrs, rrg;
      for (std::size_t rep = 0; rep < reps; ++rep) {
        const bool kv_first = rep % 2 == 0;  // the machine is shared: alternate who goes first
        auto kv = [&] {
          bs.push_back(batch_pass(true));
          bg.push_back(batch_pass(false));
          ws.push_back(window_pass(true));
          wg.push_back(window_pass(false));
        };
        if (kv_first) kv();
        const std::string out = bench::run("redis-benchmark --cluster -p " + std::to_string(port) + " -c " +
                                           std::to_string(masters) + " -t set,get -n " + std::to_string(n) + " -d " +
                                           std::to_string(page + page_header_bytes) + " -P " + std::to_string(pipe) +
                                           " --csv 2>/dev/null");
        rs.push_back(rps_of(out, "SET"));
        rg.push_back(rps_of(out, "GET"));
        const std::string keyed = bench::run("redis-benchmark --cluster -p " + std::to_string(port) + " -c " +
                                             std::to_string(masters) + " -t set,get -n " + std::to_string(n) + " -r " +
                                             std::to_string(n) + " -d " + std::to_string(page + page_header_bytes) +
                                             " -P " + std::to_string(pipe) + " --csv 2>/dev/null");
        rrs.push_back(rps_of(keyed, "SET"));
        rrg.push_back(rps_of(keyed, "GET"));
        if (!kv_first) kv();
      }
      auto make = [&](const char* mode, const std::vector<double>& ks, const std::vector<double>& kg) {
        std::vector<double> sr, gr;
        for (std::size_t i = 0; i < reps; ++i) {
          sr.push_back(rs[i] > 0 ? ks[i] / rs[i] : 0);
          gr.push_back(rg[i] > 0 ? kg[i] / rg[i] : 0);
        }
        return point{mode, page, pipe, n, median(ks), median(kg), median(rs), median(rg), median(rrs), median(rrg), median(sr), median(gr),
                     *std::min_element(gr.begin(), gr.end()), *std::max_element(gr.begin(), gr.end())};
      };
      for (const point& p : {make("batch", bs, bg), make("window", ws, wg)}) {
        std::printf("%6zu KiB %4zu %-6s | %9.0f %9.0f %5.0f%% %9.0f | %9.0f %9.0f %5.0f%% (%3.0f-%3.0f%%) %9.0f | %8.2f\n",
                    page >> 10, pipe, p.mode, p.kv_set, p.rb_set, 100 * p.set_ratio, p.rr_set, p.kv_get, p.rb_get,
                    100 * p.get_ratio, 100 * p.get_ratio_min, 100 * p.get_ratio_max, p.rr_get, p.kv_get * double(page) / 1e9);
        results.push_back(p);
      }
      std::fflush(stdout);
      for (std::size_t m = 0; m < cluster.size(); ++m) (void)cluster.command(m, {"FLUSHALL"});
    }
  }
  std::ofstream out(csv);
  out << "kvtier_mode,page_bytes,value_bytes,masters,pipeline_per_master,pages,kvtier_set_per_s,redis_benchmark_set_per_s,set_ratio,"
         "kvtier_get_per_s,redis_benchmark_get_per_s,get_ratio,get_ratio_min,get_ratio_max,kvtier_get_gbps,"
         "redis_benchmark_r_set_per_s,redis_benchmark_r_get_per_s\n";
  for (const point& p : results)
    out << p.mode << ',' << p.page << ',' << p.page + page_header_bytes << ',' << masters << ',' << p.pipeline << ',' << p.n << ','
        << p.kv_set << ',' << p.rb_set << ',' << p.set_ratio << ',' << p.kv_get << ',' << p.rb_get << ',' << p.get_ratio
        << ',' << p.get_ratio_min << ',' << p.get_ratio_max << ',' << p.kv_get * double(p.page) / 1e9 << ',' << p.rr_set
        << ',' << p.rr_get << '\n';
  std::printf("pages/s, medians of %zu alternating runs; ratio = median of kvtier/redis-benchmark side by side;\n"
              "GB/s = 1e9 bytes/s of page payload; CSV: %s\n", reps, csv.c_str());
  return 0;
}
