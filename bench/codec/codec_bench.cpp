// kvtier-bench-codec: compression ratio, KV error and host throughput (one core) of every KV codec,
// with memcpy (the identity codec's cost) measured in the same run as the baseline.
//
//   kvtier-bench-codec [--kv FILE --layers L --kv-heads H --head-dim D --page-tokens P]
//                      [--pages N] [--target-error E] [--layer-slope S] [--csv FILE]
//
// Without --kv the pages are KV-like synthetic data at the Llama-3-8B shape (channels of very
// different scales, tokens correlated along the sequence: AR(1), rho 0.9) — a stand-in whose
// ratios say nothing of a real model. With --kv, FILE holds raw bf16 pages in page_first order
// (layer, kv, token, head, dim), e.g. dumped by `kvtier-engine --dump-kv`. Half the pages fit the
// CacheGen profile, the other half are measured.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kvtier/codec.hpp"
#include "kvtier/testing/kv_like_pages.hpp"

using namespace kvtier;
using clk = std::chrono::steady_clock;

namespace {

struct options {
  std::string kv_file, csv;
  std::size_t layers = 32, kv_heads = 8, head_dim = 128, page_tokens = 16, pages = 64;
  double target_error = 0, layer_slope = 0;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr, "kvtier-bench-codec: %s\n(see the header of bench/codec/codec_bench.cpp for the options)\n", why);
  std::exit(2);
}

std::size_t parse_count(const char* flag, const char* v) {
  char* end = nullptr;
  const unsigned long long n = std::strtoull(v, &end, 10);
  if (!*v || *end || n == 0 || v[0] == '-') usage((std::string(flag) + " needs a positive whole number").c_str());
  return std::size_t(n);
}

std::vector<std::vector<std::byte>> synthetic_pages(const kv_page_geometry& g, std::size_t n) {
  testing::kv_like_sequence seq(g, 42);  // consecutive pages continue the same sequence
  std::vector<std::vector<std::byte>> pages;
  for (std::size_t p = 0; p < n; ++p) pages.push_back(seq.next_page());
  return pages;
}

std::vector<std::vector<std::byte>> file_pages(const std::string& path, const kv_page_geometry& g, std::size_t limit) {
  std::ifstream in(path, std::ios::binary);
  if (!in) usage(("cannot open --kv file " + path).c_str());
  std::vector<std::vector<std::byte>> pages;
  while (pages.size() < limit) {
    std::vector<std::byte> page(g.page_bytes());
    if (!in.read(reinterpret_cast<char*>(page.data()), std::streamsize(page.size()))) break;
    pages.push_back(std::move(page));
  }
  if (pages.size() < 2) usage("--kv file holds fewer than 2 whole pages of the given shape");
  return pages;
}

double rel_error(const kv_page_geometry& g, const std::vector<std::byte>& a, const std::vector<std::byte>& b,
                 std::vector<double>& num, std::vector<double>& den) {
  const std::size_t per_layer = g.elements() / g.shape.layers();
  for (std::size_t i = 0; i < g.elements(); ++i) {
    const double x = detail::load_element(a.data(), g.shape.element_type(), i);
    const double y = detail::load_element(b.data(), g.shape.element_type(), i);
    num[i / per_layer] += (x - y) * (x - y);
    den[i / per_layer] += x * x;
  }
  return 0;
}

struct row {
  std::string codec;
  double ratio, mean_error, worst_layer_error, encode_gbs, decode_gbs;
};

template <class Codec>
row measure(const char* name, const Codec& c, const kv_page_geometry& g, const std::vector<std::vector<std::byte>>& pages) {
  std::vector<std::vector<std::byte>> enc(pages.size());
  std::vector<std::size_t> n(pages.size());
  for (auto& e : enc) e.resize(c.max_encoded_bytes(g.page_bytes()));
  const auto t0 = clk::now();
  for (std::size_t i = 0; i < pages.size(); ++i) {
    auto r = c.encode(pages[i], enc[i]);
    if (!r) throw std::runtime_error(std::string(name) + ": encode failed: " + r.err().message());
    n[i] = *r;
  }
  const double te = std::chrono::duration<double>(clk::now() - t0).count();
  std::vector<std::vector<std::byte>> back(pages.size(), std::vector<std::byte>(g.page_bytes()));
  const auto t1 = clk::now();
  for (std::size_t i = 0; i < pages.size(); ++i) {
    auto r = c.decode(std::span<const std::byte>(enc[i]).first(n[i]), back[i]);
    if (!r) throw std::runtime_error(std::string(name) + ": decode failed: " + r.err().message());
  }
  const double td = std::chrono::duration<double>(clk::now() - t1).count();
  std::vector<double> num(g.shape.layers()), den(g.shape.layers());
  std::size_t total = 0;
  for (std::size_t i = 0; i < pages.size(); ++i) {
    rel_error(g, pages[i], back[i], num, den);
    total += n[i];
  }
  double worst = 0, sn = 0, sd = 0;
  for (std::size_t l = 0; l < num.size(); ++l) {
    worst = std::max(worst, den[l] > 0 ? std::sqrt(num[l] / den[l]) : 0.0);
    sn += num[l];
    sd += den[l];
  }
  const double bytes = double(pages.size() * g.page_bytes());
  return {name, bytes / double(total), sd > 0 ? std::sqrt(sn / sd) : 0.0, worst, bytes / te / 1e9, bytes / td / 1e9};
}

}  // namespace

int main(int argc, char** argv) try {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto val = [&]() -> const char* {
      if (i + 1 >= argc) usage((a + " needs a value").c_str());
      return argv[++i];
    };
    if (a == "--kv") o.kv_file = val();
    else if (a == "--csv") o.csv = val();
    else if (a == "--layers") o.layers = parse_count("--layers", val());
    else if (a == "--kv-heads") o.kv_heads = parse_count("--kv-heads", val());
    else if (a == "--head-dim") o.head_dim = parse_count("--head-dim", val());
    else if (a == "--page-tokens") o.page_tokens = parse_count("--page-tokens", val());
    else if (a == "--pages") o.pages = parse_count("--pages", val());
    else if (a == "--target-error") o.target_error = std::atof(val());
    else if (a == "--layer-slope") o.layer_slope = std::atof(val());
    else usage(("unknown option " + a).c_str());
  }
  const kv_page_geometry g{kv_shape::mha(o.layers, o.kv_heads, o.head_dim, dtype::bf16), o.page_tokens};
  auto pages = o.kv_file.empty() ? synthetic_pages(g, o.pages) : file_pages(o.kv_file, g, o.pages);
  const std::size_t half = pages.size() / 2;
  std::vector<std::vector<std::byte>> fit(pages.begin(), pages.begin() + std::ptrdiff_t(half)),
      test(pages.begin() + std::ptrdiff_t(half), pages.end());
  std::vector<std::span<const std::byte>> fit_views(fit.begin(), fit.end());

  std::vector<row> rows;
  {  // baseline: memcpy, the identity codec's whole cost
    std::vector<std::byte> dst(g.page_bytes());
    const auto t0 = clk::now();
    for (int rep = 0; rep < 4; ++rep)
      for (auto& p : test) std::memcpy(dst.data(), p.data(), p.size());
    const double t = std::chrono::duration<double>(clk::now() - t0).count() / 4;
    const double gbs = double(test.size() * g.page_bytes()) / t / 1e9;
    rows.push_back({"memcpy (identity)", 1.0, 0.0, 0.0, gbs, gbs});
  }
  rows.push_back(measure("int8", int8_codec(g), g, test));
  rows.push_back(measure("fp8_e4m3", fp8_codec(g), g, test));
  const double int8_error = rows.back().codec == "fp8_e4m3" ? rows[1].mean_error : 0.0;
  cachegen_options co;
  co.target_error = o.target_error > 0 ? o.target_error : int8_error;  // default: int8's error
  co.layer_slope = o.layer_slope;
  rows.push_back(measure("cachegen (at int8 error)", cachegen_codec(g, cachegen_profile::fit(g, fit_views, co)), g, test));
  co.target_error *= 2;
  rows.push_back(measure("cachegen (2x int8 error)", cachegen_codec(g, cachegen_profile::fit(g, fit_views, co)), g, test));
  cachegen_options ll;
  ll.lossless = true;
  rows.push_back(measure("cachegen lossless", cachegen_codec(g, cachegen_profile::fit(g, fit_views, ll)), g, test));

  std::printf("KV: %s, %zu layers x %zu kv heads x %zu dims, %zu-token pages (%zu KiB), %zu pages measured, one core\n",
              o.kv_file.empty() ? "synthetic AR(1) KV-like data (a stand-in: ratios say nothing of a real model)" : o.kv_file.c_str(),
              o.layers, o.kv_heads, o.head_dim, o.page_tokens, g.page_bytes() / 1024, test.size());
  std::printf("| codec | ratio | x int8 | rel. L2 error (all) | worst layer | encode GB/s | decode GB/s (output) |\n|---|---|---|---|---|---|---|\n");
  for (const auto& r : rows)
    std::printf("| %s | %.2f | %.2f | %.4f | %.4f | %.2f | %.2f |\n", r.codec.c_str(), r.ratio, r.ratio / rows[1].ratio,
                r.mean_error, r.worst_layer_error, r.encode_gbs, r.decode_gbs);
  if (!o.csv.empty()) {
    std::ofstream csv(o.csv);
    csv << "codec,ratio,ratio_vs_int8,rel_l2_error,worst_layer_error,encode_gbs,decode_gbs\n";
    for (const auto& r : rows)
      csv << '"' << r.codec << "\"," << r.ratio << ',' << r.ratio / rows[1].ratio << ',' << r.mean_error << ','
          << r.worst_layer_error << ',' << r.encode_gbs << ',' << r.decode_gbs << '\n';
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "kvtier-bench-codec: %s\n", e.what());
  return 1;
}
