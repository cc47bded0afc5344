// Redis tier bench: SET/GET GB/s and pages/s of the tier against redis-benchmark with the same
// value size (page + 96-byte header), the same pipelining and one connection, on a redis-server
// this bench starts on a free loopback port. Table + CSV.
//   kvtier-bench-storage-redis [--pages 131072,1048576] [--pipeline 1,16] [--mib 512]
//                              [--server /usr/bin/redis-server] [--reps 3] [--csv storage_redis.csv]
// Figures are medians of `reps` alternating runs. Like redis-benchmark's SET (one key, rewritten),
// the timed kvtier SET passes rewrite keys that exist; kvtier GETs read distinct keys in order.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <thread>
#include <vector>

#include "bench/storage/redis_common.hpp"
#include "kvtier/storage/redis_tier.hpp"
#include "kvtier/testing/redis_server.hpp"

using namespace kvtier;
using namespace std::chrono_literals;

namespace {
struct point {
  std::size_t page, pipeline, n;
  double kv_set_rps, kv_get_rps, rb_set_rps, rb_get_rps;  // medians
  double set_ratio, get_ratio;                            // medians of side-by-side ratios
};
}  // namespace

int main(int argc, char** argv) {
  const auto pages = bench::list(bench::arg(argc, argv, "--pages", "131072,1048576"));
  const auto pipelines = bench::list(bench::arg(argc, argv, "--pipeline", "1,16"));
  const std::size_t mib = std::stoull(bench::arg(argc, argv, "--mib", "512"));
  const std::string server_bin = bench::arg(argc, argv, "--server", "/usr/bin/redis-server");
  const std::string csv = bench::arg(argc, argv, "--csv", "storage_redis.csv");
  const std::size_t reps = std::max<std::size_t>(1, std::stoull(bench::arg(argc, argv, "--reps", "3")));
  const int port = testing::free_loopback_port();
  const pid_t server = ::fork();
  if (server == 0) {
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    const std::string p = std::to_string(port);
    ::execl(server_bin.c_str(), server_bin.c_str(), "--port", p.c_str(), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning", static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  std::this_thread::sleep_for(300ms);
  std::printf("redis tier vs redis-benchmark (1 connection, same value size and pipelining), server 127.0.0.1:%d\n", port);
  std::printf("%9s %4s | %12s %12s %7s | %12s %12s %7s %9s\n", "page", "pipe", "kv SET/s", "rb SET/s", "ratio",
              "kv GET/s", "rb GET/s", "ratio", "kv GET GB/s");
  std::vector<point> results;
  for (std::size_t page : pages) {
    const std::size_t n = std::max<std::size_t>(64, (mib << 20) / page);
    std::vector<std::byte> data = bench::random_bytes(n * page);
    for (std::size_t pipe : pipelines) {
      point p{page, pipe, n, 0, 0, 0, 0, 0, 0};
      redis_tier_config cfg{.shape = shapes::llama3_8b(), .page_bytes = page};
      cfg.port = port;
      cfg.io_timeout = 30s;
      redis_tier<> t(cfg);
      const bench::bench_pages pg(data, page, n, pipe);
      (void)bench::timed_pass(t, pg, pipe, true);  // create the keys; the timed passes overwrite them, as redis-benchmark does
      // The machine is shared and noisy: alternate kvtier and redis-benchmark, keep medians.
      std::vector<double> ks, kg, rs, rg;
      bench::alternate(reps, [&] {
        ks.push_back(bench::timed_pass(t, pg, pipe, true));
        kg.push_back(bench::timed_pass(t, pg, pipe, false));
      }, [&] {
        const auto rb = bench::redis_benchmark("-p " + std::to_string(port) + " -c 1 -n " + std::to_string(n) + " -d " +
                                               std::to_string(page + page_header_bytes) + " -P " + std::to_string(pipe));
        rs.push_back(rb.set);
        rg.push_back(rb.get);
      });
      p.set_ratio = bench::median(bench::ratios(ks, rs));
      p.get_ratio = bench::median(bench::ratios(kg, rg));
      p.kv_set_rps = bench::median(ks);
      p.kv_get_rps = bench::median(kg);
      p.rb_set_rps = bench::median(rs);
      p.rb_get_rps = bench::median(rg);
      bench::run("redis-cli -p " + std::to_string(port) + " flushall >/dev/null");
      std::printf("%6zu KiB %4zu | %12.0f %12.0f %6.0f%% | %12.0f %12.0f %6.0f%% %9.2f\n", page >> 10, pipe, p.kv_set_rps,
                  p.rb_set_rps, 100 * p.set_ratio, p.kv_get_rps, p.rb_get_rps, 100 * p.get_ratio, p.kv_get_rps * double(page) / 1e9);
      std::fflush(stdout);
      results.push_back(p);
    }
  }
  ::kill(server, SIGTERM);
  ::waitpid(server, nullptr, 0);
  std::ofstream out(csv);
  out << "page_bytes,value_bytes,pipeline,pages,kvtier_set_per_s,redis_benchmark_set_per_s,kvtier_get_per_s,"
         "redis_benchmark_get_per_s,kvtier_get_gbps,redis_benchmark_get_gbps,get_ratio\n";
  for (const point& p : results)
    out << p.page << ',' << p.page + page_header_bytes << ',' << p.pipeline << ',' << p.n << ',' << p.kv_set_rps << ','
        << p.rb_set_rps << ',' << p.kv_get_rps << ',' << p.rb_get_rps << ',' << p.kv_get_rps * double(p.page) / 1e9 << ','
        << p.rb_get_rps * double(p.page + page_header_bytes) / 1e9 << ',' << p.get_ratio << '\n';
  std::printf("pages/s, medians; ratio = median of kvtier/redis-benchmark over runs taken side by side;\n"
              "GB/s = 1e9 bytes/s of page payload; CSV: %s\n", csv.c_str());
  return 0;
}
