#pragma once
// What the Redis benches (single node, cluster) share: the pages they move (random bytes under
// distinct keys), one timed pass of a tier over them in batches, redis-benchmark's rates, medians,
// and the alternation of kvtier and the baseline on a shared, noisy machine.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "bench/storage/common.hpp"
#include "kvtier/storage/batch.hpp"
#include "kvtier/storage/request.hpp"

namespace kvtier::bench {

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Random bytes (the same for a given size in every run).
inline std::vector<std::byte> random_bytes(std::size_t n) {
  std::vector<std::byte> data(n);
  std::mt19937_64 rng(7);
  for (auto& b : data) b = std::byte(rng());
  return data;
}

// n pages of `page` bytes of `data` under keys {i, tag} of namespace 1: writes, and reads into the
// same bytes (a read that is served overwrites a page with itself).
struct bench_pages {
  bench_pages(std::span<std::byte> data, std::size_t page, std::size_t n, std::uint64_t tag) : n(n), w(n), r(n) {
    for (std::size_t i = 0; i < n; ++i) {
      const page_address a{namespace_id{1}, page_key{i, tag}};
      w[i] = {a, i, data.subspan(i * page, page)};
      r[i] = {a, i, data.subspan(i * page, page)};
    }
  }
  std::size_t n;
  std::vector<page_write> w;
  std::vector<page_read> r;
};

// Every page written (or read) once, in batches of `batch_pages`, each waited for: pages/s. A
// failed request ends the bench (every GET is verified by the tier).
template <class Tier>
double timed_pass(Tier& t, const bench_pages& p, std::size_t batch_pages, bool write) {
  storage_batch b;
  const auto start = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < p.n; i += batch_pages) {
    const std::size_t k = std::min(batch_pages, p.n - i);
    const bool ok = write ? t.put(std::span(p.w).subspan(i, k), b).has_value() : t.get(std::span(p.r).subspan(i, k), b).has_value();
    if (!ok || !t.wait(b, std::chrono::seconds(60)) || !b.all_ok()) {
      std::fprintf(stderr, "kvtier %s failed\n", write ? "SET" : "GET");
      std::exit(1);
    }
  }
  return double(p.n) / seconds_since(start);
}

// redis-benchmark's SET and GET requests per second: `args` are its options (server, clients,
// value size, pipelining, ...); the tests and CSV output are added here.
struct benchmark_rates {
  double set = 0, get = 0;
};
inline benchmark_rates redis_benchmark(const std::string& args) {
  const std::string csv = run("redis-benchmark " + args + " -t set,get --csv 2>/dev/null");
  auto rps_of = [&](const char* test) {
    const std::string tag = std::string("\"") + test + "\",\"";
    const std::size_t at = csv.find(tag);
    return at == std::string::npos ? 0 : std::strtod(csv.c_str() + at + tag.size(), nullptr);
  };
  return {rps_of("SET"), rps_of("GET")};
}

// `reps` rounds of kvtier then the baseline, who goes first alternating round by round.
template <class Kvtier, class Baseline>
void alternate(std::size_t reps, Kvtier&& kvtier, Baseline&& baseline) {
  for (std::size_t rep = 0; rep < reps; ++rep) {
    if (rep % 2 == 0) kvtier();
    baseline();
    if (rep % 2 == 1) kvtier();
  }
}

// Medians over rounds of kvtier / baseline, measured side by side (0 where the baseline failed).
inline std::vector<double> ratios(const std::vector<double>& kv, const std::vector<double>& base) {
  std::vector<double> r;
  for (std::size_t i = 0; i < kv.size() && i < base.size(); ++i) r.push_back(base[i] > 0 ? kv[i] / base[i] : 0);
  return r;
}

}  // namespace kvtier::bench
