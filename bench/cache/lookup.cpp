// kvtier-bench-cache: lookup + plan of a long prompt against a warm cache, on one core.
// Target (issue 6): a 32K-token prompt at 16-token pages (2,000 pages) in ≤ 20 µs.
//   lookup+release : index match (locks the prefix) + the lease's block table, then unlock
//   lookup+load   : the same, then load()'s plan over the prefix (nothing to copy: all on device)
//                   and release()
//   cold lookup   : a prompt of the same length that shares nothing (a miss), for scale
// Prints a table and writes CSV (--csv FILE). The KV shape does not enter lookup's cost; a small
// one keeps the stand-in device memory small.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kvtier/cache.hpp"

using namespace kvtier;
using clk = std::chrono::steady_clock;

namespace {

struct figure {
  const char* what;
  double median_us, min_us, p90_us;
};

template <class F>
figure measure(const char* what, int reps, F&& f) {
  std::vector<double> us;
  for (int i = 0; i < 50; ++i) f();  // warm up
  for (int i = 0; i < reps; ++i) {
    const auto t0 = clk::now();
    f();
    us.push_back(std::chrono::duration<double, std::micro>(clk::now() - t0).count());
  }
  std::sort(us.begin(), us.end());
  return {what, us[us.size() / 2], us.front(), us[us.size() * 9 / 10]};
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t prompt = 32768;
  int reps = 2000;
  const char* csv = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--tokens") && i + 1 < argc) prompt = std::strtoull(argv[++i], nullptr, 10);
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--csv") && i + 1 < argc) csv = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--tokens N] [--reps N] [--csv FILE]\n", argv[0]);
      return 2;
    }
  }
  constexpr std::size_t P = 16;
  using cache_type = cache_builder<page_size<P>>::cache_type;
  const kv_shape shape = kv_shape::mha(1, 1, 8, dtype::fp16);
  const std::size_t pages = prompt / P;
  cache_type cache(cache_type::config{shape, {}, pages + 64, 64});

  std::vector<token_id> tokens(prompt), other(prompt);
  for (std::size_t i = 0; i < prompt; ++i) {
    tokens[i] = token_id{std::int32_t((i * 2654435761u) % 128000)};
    other[i] = token_id{std::int32_t((i * 40503u + 7) % 128000)};
  }
  // Warm the cache: the prompt's pages are on the device.
  cache_type::lease_type l;
  (void)cache.lookup(namespace_id{1}, tokens, l);
  std::vector<device_slot> slots(pages);
  if (!cache.allocate(slots) || !cache.commit(l, tokens, slots)) {
    std::fprintf(stderr, "warm-up failed\n");
    return 1;
  }
  (void)cache.release(l);
  cache.drain();
  transfer::cpu_stream stream;

  std::vector<figure> figs;
  std::size_t cached = 0;
  figs.push_back(measure("lookup+release", reps, [&] {
    (void)cache.lookup(namespace_id{1}, tokens, l);
    cached = l.cached_pages();
    (void)cache.release(l);
  }));
  figs.push_back(measure("lookup+load(plan)+release", reps, [&] {
    (void)cache.lookup(namespace_id{1}, tokens, l);
    (void)cache.load(l, stream);
    cached = l.cached_pages();
    (void)cache.release(l);
  }));
  figs.push_back(measure("cold lookup (miss)", reps, [&] {
    (void)cache.lookup(namespace_id{1}, other, l);
    (void)cache.release(l);
  }));
  if (cached != pages) {
    std::fprintf(stderr, "expected %zu cached pages, got %zu\n", pages, cached);
    return 1;
  }

  std::printf("kvtier cache lookup: %zu-token prompt, %zu-token pages (%zu pages), warm cache, %d reps, one thread\n",
              prompt, P, pages, reps);
  std::printf("%-26s %12s %12s %12s %10s\n", "operation", "median us", "min us", "p90 us", "ns/page");
  for (const auto& f : figs)
    std::printf("%-26s %12.2f %12.2f %12.2f %10.2f\n", f.what, f.median_us, f.min_us, f.p90_us,
                f.median_us * 1000.0 / double(pages));
  std::printf("target: lookup + plan <= 20 us -> %s\n", figs[1].median_us <= 20.0 ? "met" : "NOT met");
  if (csv) {
    if (FILE* out = std::fopen(csv, "w")) {
      std::fprintf(out, "operation,prompt_tokens,page_tokens,median_us,min_us,p90_us\n");
      for (const auto& f : figs)
        std::fprintf(out, "%s,%zu,%zu,%.3f,%.3f,%.3f\n", f.what, prompt, P, f.median_us, f.min_us, f.p90_us);
      std::fclose(out);
    }
  }
  return 0;
}
