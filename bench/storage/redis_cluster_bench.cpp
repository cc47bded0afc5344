// Redis Cluster tier bench: SET/GET pages/s of redis_cluster_tier against `redis-benchmark --cluster`
// on the same three-master cluster (started by this bench on loopback, no replicas, no persistence),
// same value size (page + 96-byte header) and same requests in flight per master. Table + CSV.
//   kvtier-bench-storage-redis-cluster [--pages 131072,1048576] [--pipeline 1,16] [--mib 384]
//                                      [--reps 3] [--csv storage_redis_cluster.csv]
//                                      [--server-cpus 0] [--client-cpus 1]
// --server-cpus / --client-cpus pin the cluster's redis-servers and the clients (kvtier, and the
// redis-benchmark it runs) to those CPUs (sched_setaffinity, as taskset does); default: unpinned.
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
#include <sched.h>

#include <algorithm>
#include <vector>

#include "bench/storage/redis_common.hpp"
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

// Pins this process (and what it starts from now on) to `cpus` ("" leaves it as it is).
bool pin(const std::string& cpus) {
  if (cpus.empty()) return true;
  cpu_set_t set;
  CPU_ZERO(&set);
  for (const std::size_t c : bench::list(cpus)) CPU_SET(c, &set);
  return ::sched_setaffinity(0, sizeof set, &set) == 0;
}
}  // namespace

int main(int argc, char** argv) {
  const auto pages = bench::list(bench::arg(argc, argv, "--pages", "131072,1048576"));
  const auto pipelines = bench::list(bench::arg(argc, argv, "--pipeline", "1,16"));
  const std::size_t mib = std::stoull(bench::arg(argc, argv, "--mib", "384"));
  const std::string csv = bench::arg(argc, argv, "--csv", "storage_redis_cluster.csv");
  const std::size_t reps = std::max<std::size_t>(1, std::stoull(bench::arg(argc, argv, "--reps", "3")));
  const std::string server_cpus = bench::arg(argc, argv, "--server-cpus", "");
  const std::string client_cpus = bench::arg(argc, argv, "--client-cpus", "");
  constexpr std::size_t masters = 3;
  if (!pin(server_cpus)) return std::fprintf(stderr, "cannot pin to CPUs %s\n", server_cpus.c_str()), 1;

  testing::redis_cluster::options o;
  o.masters = int(masters);
  o.replicas = 0;
  o.node_timeout_ms = 5000;
  testing::redis_cluster cluster(o);  // its servers keep the CPUs they were started on
  if (!pin(client_cpus)) return std::fprintf(stderr, "cannot pin to CPUs %s\n", client_cpus.c_str()), 1;
  const int port = cluster.port(0);
  std::printf("redis_cluster_tier vs redis-benchmark --cluster: %zu masters on 127.0.0.1 (first :%d), no replicas; "
              "servers on CPUs %s, clients on CPUs %s\n", masters, port, server_cpus.empty() ? "any" : server_cpus.c_str(),
              client_cpus.empty() ? "any" : client_cpus.c_str());
  std::printf("%9s %4s %-6s | %9s %9s %6s %9s | %9s %9s %6s %11s %9s | %8s\n", "page", "pipe", "kvtier", "kv SET/s", "rb SET/s",
              "ratio", "rb -r SET", "kv GET/s", "rb GET/s", "ratio", "(min-max)", "rb -r GET", "kv GB/s");
  std::vector<point> results;
  for (std::size_t page : pages) {
    const std::size_t n = std::max<std::size_t>(96, (mib << 20) / page);
    std::vector<std::byte> data = bench::random_bytes(n * page);
    for (std::size_t pipe : pipelines) {
      redis_cluster_tier_config cfg{.shape = shapes::llama3_8b(), .page_bytes = page, .seeds = cluster.seeds()};
      cfg.io_timeout = 30s;
      redis_cluster_tier<> t(cfg);
      const bench::bench_pages pg(data, page, n, pipe);
      const std::vector<page_write>& w = pg.w;
      const std::vector<page_read>& r = pg.r;
      (void)bench::timed_pass(t, pg, masters * pipe, true);  // create the keys; the timed passes overwrite them, as redis-benchmark does
      // batch: one batch of masters x pipe pages at a time.
      auto batch_pass = [&](bool write) { return bench::timed_pass(t, pg, masters * pipe, write); };
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
      std::vector<double> bs, bg, ws, wg, rs, rg, rrs, rrg;
      const std::string rb_args = "--cluster -p " + std::to_string(port) + " -c " + std::to_string(masters) + " -n " +
                                  std::to_string(n) + " -d " + std::to_string(page + page_header_bytes) + " -P " + std::to_string(pipe);
      bench::alternate(reps, [&] {  // the machine is shared: alternate who goes first
        bs.push_back(batch_pass(true));
        bg.push_back(batch_pass(false));
        ws.push_back(window_pass(true));
        wg.push_back(window_pass(false));
      }, [&] {
        const auto rb = bench::redis_benchmark(rb_args);
        rs.push_back(rb.set);
        rg.push_back(rb.get);
        const auto keyed = bench::redis_benchmark(rb_args + " -r " + std::to_string(n));
        rrs.push_back(keyed.set);
        rrg.push_back(keyed.get);
      });
      auto make = [&](const char* mode, const std::vector<double>& ks, const std::vector<double>& kg) {
        const std::vector<double> sr = bench::ratios(ks, rs), gr = bench::ratios(kg, rg);
        return point{mode, page, pipe, n, bench::median(ks), bench::median(kg), bench::median(rs), bench::median(rg),
                     bench::median(rrs), bench::median(rrg), bench::median(sr), bench::median(gr),
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
