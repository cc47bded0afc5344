// Redis tier bench: SET/GET GB/s and pages/s of the tier against redis-benchmark with the same
// value size (page + 96-byte header), the same pipelining and one connection, on a redis-server
// this bench starts on a free loopback port. Table + CSV.
//   kvtier-bench-storage-redis [--pages 131072,1048576] [--pipeline 1,16] [--mib 512]
//                              [--server /usr/bin/redis-server] [--reps 3] [--csv storage_redis.csv]
// Figures are medians of `reps` alternating runs. Like redis-benchmark's SET (one key, rewritten),
// the timed kvtier SET passes rewrite keys that exist; kvtier GETs read distinct keys in order.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <random>
#include <thread>
#include <vector>

#include "bench/storage/common.hpp"
#include "kvtier/storage/redis_tier.hpp"

using namespace kvtier;
using namespace std::chrono_literals;

namespace {
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

struct point {
  std::size_t page, pipeline, n;
  double kv_set_rps, kv_get_rps, rb_set_rps, rb_get_rps;  // medians
  double set_ratio, get_ratio;                            // medians of side-by-side ratios
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
  const std::size_t mib = std::stoull(bench::arg(argc, argv, "--mib", "512"));
  const std::string server_bin = bench::arg(argc, argv, "--server", "/usr/bin/redis-server");
  const std::string csv = bench::arg(argc, argv, "--csv", "storage_redis.csv");
  const std::size_t reps = std::max<std::size_t>(1, std::stoull(bench::arg(argc, argv, "--reps", "3")));
  const int port = free_port();
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
    std::vector<std::byte> data(n * page);
    std::mt19937_64 rng(7);
    for (auto& b : data) b = std::byte(rng());
    for (std::size_t pipe : pipelines) {
      point p{page, pipe, n, 0, 0, 0, 0, 0, 0};
      redis_tier_config cfg{.shape = shapes::llama3_8b(), .page_bytes = page};
      cfg.port = port;
      cfg.io_timeout = 30s;
      redis_tier<> t(cfg);
      std::vector<page_write> w(n);
      std::vector<page_read> r(n);
      for (std::size_t i = 0; i < n; ++i) {
        const page_address a{namespace_id{1}, page_key{i, pipe}};
        w[i] = {a, i, std::span(data).subspan(i * page, page)};
        r[i] = {a, i, std::span(data).subspan(i * page, page)};
      }
      storage_batch b;
      auto pass = [&](bool write) {
        const auto start = std::chrono::steady_clock::now();
        for (std::size_t i = 0; i < n; i += pipe) {
          const std::size_t k = std::min(pipe, n - i);
          const bool ok = write ? t.put(std::span(w).subspan(i, k), b).has_value() : t.get(std::span(r).subspan(i, k), b).has_value();
          if (!ok || !t.wait(b, 60s) || !b.all_ok()) {
            std::fprintf(stderr, "kvtier %s failed\n", write ? "SET" : "GET");
            std::exit(1);
          }
        }
        return double(n) / bench::seconds_since(start);
      };
      (void)pass(true);  // create the keys; the timed passes overwrite them, as redis-benchmark does
      // The machine is shared and noisy: alternate kvtier and redis-benchmark, keep medians.
      std::vector<double> ks, kg, rs, rg;
      for (std::size_t rep = 0; rep < reps; ++rep) {
        const bool kv_first = rep % 2 == 0;  // alternate who goes first
        if (kv_first) {
          ks.push_back(pass(true));
          kg.push_back(pass(false));
        }
        const std::string out = bench::run("redis-benchmark -p " + std::to_string(port) + " -c 1 -t set,get -n " +
                                           std::to_string(n) + " -d " + std::to_string(page + page_header_bytes) +
                                           " -P " + std::to_string(pipe) + " --csv 2>/dev/null");
        rs.push_back(rps_of(out, "SET"));
        rg.push_back(rps_of(out, "GET"));
        if (!kv_first) {
          ks.push_back(pass(true));
          kg.push_back(pass(false));
        }
      }
      std::vector<double> sr, gr;
      for (std::size_t i = 0; i < reps; ++i) {
        sr.push_back(ks[i] / rs[i]);
        gr.push_back(kg[i] / rg[i]);
      }
      p.set_ratio = median(sr);
      p.get_ratio = median(gr);
      p.kv_set_rps = median(ks);
      p.kv_get_rps = median(kg);
      p.rb_set_rps = median(rs);
      p.rb_get_rps = median(rg);
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
