// The CUDA backend's kernels against CPU references in double on fresh random data, destinations
// poisoned with NaN first: every element must be written and match. bf16 tolerances: inputs are
// bf16 values (exact in the reference), so the error is the kernels' own roundings (bf16 outputs,
// bf16 P in the flash kernel): about 2^-8 relative per element; the tests bound the relative L2
// error at 1e-2 and fp32 kernels at 1e-5.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "kvtier_engine/cuda/flash_prefill.cuh"
#include "kvtier_engine/cuda/invariant_gemm.cuh"
#include "kvtier_engine/cuda/kernels.cuh"
#include "kvtier_engine/cuda/linear.cuh"
#include "kvtier_engine/cuda/paged_attention.cuh"

using namespace kvtier_engine;
using namespace kvtier_engine::cuda;
using bf16 = __nv_bfloat16;

namespace {

std::mt19937_64 rng(20261201);

std::vector<float> random_floats(std::size_t n, float scale = 1.0f) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}
// Rounds through T, so the reference sees exactly what the device holds.
template <class T>
std::vector<float> through(const std::vector<float>& v) {
  std::vector<float> r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) r[i] = to_float(from_float<T>(v[i]));
  return r;
}
template <class T>
device_buffer<T> to_device(const std::vector<float>& v) {
  device_buffer<T> d(v.size());
  d.upload(convert_from_float<T>(v.data(), v.size()));
  return d;
}
template <class T>
device_buffer<T> poisoned(std::size_t n) {
  device_buffer<T> d(n);
  check(cudaMemset(d.data(), 0xff, n * sizeof(T)), "memset");  // NaN in fp32 and bf16
  return d;
}
template <class T>
std::vector<float> to_host(const device_buffer<T>& d) {
  check(cudaDeviceSynchronize(), "sync");
  const std::vector<T> h = d.download();
  std::vector<float> r(h.size());
  for (std::size_t i = 0; i < h.size(); ++i) r[i] = to_float(h[i]);
  return r;
}
// ‖got − want‖ / ‖want‖, and every element finite.
double rel_error(const std::vector<float>& got, const std::vector<double>& want) {
  BOOST_REQUIRE_EQUAL(got.size(), want.size());
  double num = 0, den = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}
template <class T>
constexpr double tolerance = std::is_same_v<T, float> ? 1e-5 : 1e-2;

using storage_types = std::tuple<float, bf16>;

}  // namespace

BOOST_AUTO_TEST_CASE_TEMPLATE(rmsnorm_matches_reference, T, storage_types) {
  const int rows = 37, dim = 4096;
  const auto x = random_floats(std::size_t(rows) * dim, 3.0f);
  const auto w = random_floats(dim);
  device_buffer<float> dx(x.size()), dw(dim);
  dx.upload(x);
  dw.upload(w);
  auto out = poisoned<T>(x.size());
  rmsnorm(dx.data(), dw.data(), out.data(), rows, dim, 1e-5f, nullptr);
  std::vector<double> want(x.size());
  for (int r = 0; r < rows; ++r) {
    double ss = 0;
    for (int i = 0; i < dim; ++i) ss += double(x[r * dim + i]) * x[r * dim + i];
    const double s = 1.0 / std::sqrt(ss / dim + 1e-5);
    for (int i = 0; i < dim; ++i) want[r * dim + i] = w[i] * x[r * dim + i] * s;
  }
  BOOST_TEST(rel_error(to_host(out), want) < tolerance<T>);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(embedding_and_swiglu_match_reference, T, storage_types) {
  const int vocab = 300, dim = 96, rows = 50, hidden = 200;
  const auto table = through<T>(random_floats(std::size_t(vocab) * dim));
  std::vector<std::int32_t> tok(rows);
  for (auto& t : tok) t = std::int32_t(rng() % vocab);
  auto dt = to_device<T>(table);
  device_buffer<std::int32_t> dtok(rows);
  dtok.upload(tok);
  auto x = poisoned<float>(std::size_t(rows) * dim);
  embedding(dtok.data(), rows, dt.data(), x.data(), dim, nullptr);
  std::vector<double> want(std::size_t(rows) * dim);
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < dim; ++i) want[r * dim + i] = table[std::size_t(tok[r]) * dim + i];
  BOOST_TEST(rel_error(to_host(x), want) == 0.0);

  for (const int h : {hidden, 77}) {  // even (bf16 pairs) and odd (element by element) widths
    const auto gu = through<T>(random_floats(std::size_t(rows) * 2 * h, 4.0f));
    auto dgu = to_device<T>(gu);
    auto out = poisoned<T>(std::size_t(rows) * h);
    swiglu(dgu.data(), out.data(), rows, h, nullptr);
    std::vector<double> w2(std::size_t(rows) * h);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < h; ++c) {
        const double g = gu[r * 2 * h + c], u = gu[r * 2 * h + h + c];
        w2[r * h + c] = g / (1 + std::exp(-g)) * u;
      }
    BOOST_TEST(rel_error(to_host(out), w2) < tolerance<T>, "hidden " << h);
  }
}

// One layer of a paged pool on the device: K plane then V plane, `slots` pages of P tokens each.
template <class T>
struct test_pool {
  int slots, P, H, D;
  device_buffer<T> mem;
  test_pool(int slots_, int P_, int H_, int D_) : slots(slots_), P(P_), H(H_), D(D_), mem(2 * std::size_t(slots_) * P_ * H_ * D_) {}
  std::size_t plane() const { return std::size_t(slots) * P * H * D; }
  paged_kv_layer<T> layer(const std::int32_t* tables, int table_stride) {
    return paged_kv_layer<T>::packed(reinterpret_cast<std::byte*>(mem.data()), reinterpret_cast<std::byte*>(mem.data() + plane()),
                                     P, H, D, tables, table_stride);
  }
  // Host index of (kv, slot, row, head, 0).
  std::size_t at(int k, int slot, int row, int h) const {
    return k * plane() + ((std::size_t(slot) * P + row) * H + h) * D;
  }
};

std::vector<std::int32_t> shuffled_slots(int n) {
  std::vector<std::int32_t> s(n);
  std::iota(s.begin(), s.end(), 0);
  std::shuffle(s.begin(), s.end(), rng);
  return s;
}

BOOST_AUTO_TEST_CASE_TEMPLATE(rope_store_writes_rotated_q_and_kv_into_the_pool, T, storage_types) {
  for (const rope_style style : {rope_style::adjacent_pairs, rope_style::rotate_half}) {
    const int Hq = 8, H = 2, D = 64, P = 16, slots = 12, rows = 70, start = 48;
    const float theta = style == rope_style::adjacent_pairs ? 10000.f : 500000.f;
    test_pool<T> pool(slots, P, H, D);
    check(cudaMemset(pool.mem.data(), 0xff, pool.mem.size() * sizeof(T)), "memset");
    const auto table = shuffled_slots(slots);
    device_buffer<std::int32_t> dtable(slots), dpos(rows);
    dtable.upload(table);
    std::vector<std::int32_t> pos(rows);
    for (int i = 0; i < rows; ++i) pos[i] = start + i;
    dpos.upload(pos);
    const auto qkv = through<T>(random_floats(std::size_t(rows) * (Hq + 2 * H) * D));
    auto dqkv = to_device<T>(qkv);
    auto q = poisoned<T>(std::size_t(rows) * Hq * D);
    rope_store(dqkv.data(), q.data(), pool.layer(dtable.data(), 0), dpos.data(), nullptr, rows, Hq, theta, style, nullptr);
    const auto got_q = to_host(q), got_pool = to_host(pool.mem);
    std::vector<double> want_q(got_q.size());
    std::vector<float> got_kv;
    std::vector<double> want_kv;
    for (int r = 0; r < rows; ++r)
      for (int head = 0; head < Hq + 2 * H; ++head) {
        const float* src = &qkv[(std::size_t(r) * (Hq + 2 * H) + head) * D];
        std::vector<double> v(src, src + D);
        if (head < Hq + H)
          for (int j = 0; j < D / 2; ++j) {
            const int a = style == rope_style::adjacent_pairs ? 2 * j : j, b = style == rope_style::adjacent_pairs ? 2 * j + 1 : j + D / 2;
            const double ang = double(pos[r]) * std::pow(double(theta), -2.0 * j / D);
            v[a] = src[a] * std::cos(ang) - src[b] * std::sin(ang);
            v[b] = src[a] * std::sin(ang) + src[b] * std::cos(ang);
          }
        if (head < Hq) {
          std::copy(v.begin(), v.end(), want_q.begin() + (std::size_t(r) * Hq + head) * D);
        } else {
          const int k = head < Hq + H ? 0 : 1, h = (head - Hq) % H, p = pos[r];
          const std::size_t o = pool.at(k, table[p / P], p % P, h);
          got_kv.insert(got_kv.end(), got_pool.begin() + o, got_pool.begin() + o + D);
          want_kv.insert(want_kv.end(), v.begin(), v.end());
        }
      }
    // Angles up to ~120 rad in fp32: the reference's double angle differs by ~1e-5 there.
    BOOST_TEST(rel_error(got_q, want_q) < std::max(tolerance<T>, 1e-4));
    BOOST_TEST(rel_error(got_kv, want_kv) < std::max(tolerance<T>, 1e-4));
    // Rows before `start` (page 0..2 of the table) stay untouched: still NaN.
    BOOST_TEST(std::isnan(got_pool[pool.at(0, table[0], 0, 0)]));
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(linear_matches_reference, T, storage_types) {
  const int rows = 33, in = 256, out = 320;
  const auto x = through<T>(random_floats(std::size_t(rows) * in));
  const auto w = through<T>(random_floats(std::size_t(out) * in));
  const auto y0 = random_floats(std::size_t(rows) * out);
  auto dx = to_device<T>(x), dw = to_device<T>(w);
  device_buffer<float> y(y0.size());
  y.upload(y0);
  cublas_handle h(nullptr);
  linear(h.get(), dx.data(), dw.data(), y.data(), rows, in, out, true);
  std::vector<double> want(y0.size());
  for (int r = 0; r < rows; ++r)
    for (int o = 0; o < out; ++o) {
      double s = y0[r * out + o];
      for (int i = 0; i < in; ++i) s += double(x[r * in + i]) * w[o * in + i];
      want[r * out + o] = s;
    }
  BOOST_TEST(rel_error(to_host(y), want) < 1e-5);
}

// invariant_gemm at a llama-like shape: every row count of the phase gives the rows of the full call
// bit for bit (small calls may run a second, bit-identical algorithm), against the reference in
// double within bf16 input rounding, and accumulate adds to y.
BOOST_AUTO_TEST_CASE(invariant_gemm_rows_do_not_depend_on_the_call) {
  const int rows = 2048, in = 1024, out = 1536;
  const auto x = through<bf16>(random_floats(std::size_t(rows) * in));
  const auto w = through<bf16>(random_floats(std::size_t(out) * in, 0.05f));
  auto dx = to_device<bf16>(x), dw = to_device<bf16>(w);
  cublas_handle h(nullptr);
  invariant_gemm g(h.get(), nullptr);
  BOOST_TEST_REQUIRE(g.plan<float>(dw.data(), in, out, rows));
  BOOST_TEST(g.invariant());
  device_buffer<float> full(std::size_t(rows) * out);
  g.run(dx.data(), dw.data(), full.data(), rows, in, out, false);
  const auto want = to_host(full);
  std::vector<double> ref(std::size_t(8) * out);
  for (int r = 0; r < 8; ++r)
    for (int o = 0; o < out; ++o) {
      double acc = 0;
      for (int i = 0; i < in; ++i) acc += double(x[std::size_t(r) * in + i]) * w[std::size_t(o) * in + i];
      ref[std::size_t(r) * out + o] = acc;
    }
  BOOST_TEST(rel_error(std::vector<float>(want.begin(), want.begin() + 8 * out), ref) < 1e-5);
  for (const int m : {1, 2, 7, 32, 100, 333, 1024, 2047}) {
    for (const int from : {0, rows - m}) {
      auto part = poisoned<float>(std::size_t(m) * out);
      g.run(dx.data() + std::size_t(from) * in, dw.data(), part.data(), m, in, out, false);
      const auto got = to_host(part);
      BOOST_TEST(std::equal(got.begin(), got.end(), want.begin() + std::ptrdiff_t(from) * out),
                 m << " rows from row " << from << " differ from the full call's");
    }
  }
  device_buffer<float> twice(std::size_t(rows) * out);
  g.run(dx.data(), dw.data(), twice.data(), 5, in, out, false);
  g.run(dx.data(), dw.data(), twice.data(), 5, in, out, true);
  const auto t2 = to_host(twice);
  for (int i = 0; i < 5 * out; i += 97) BOOST_TEST(t2[std::size_t(i)] == 2.0f * want[std::size_t(i)]);
}

BOOST_AUTO_TEST_CASE(sampling_matches_reference) {
  const int rows = 8, vocab = 5000;
  auto logits = random_floats(std::size_t(rows) * vocab, 6.0f);
  logits[3 * vocab + 17] = logits[3 * vocab + 4000] = 50.f;  // a tie: the first index wins
  device_buffer<float> dl(logits.size());
  dl.upload(logits);
  auto out = poisoned<std::int32_t>(rows);
  argmax(dl.data(), rows, vocab, out.data(), nullptr);
  const auto got = out.download();
  for (int r = 0; r < rows; ++r) {
    const auto b = logits.begin() + std::size_t(r) * vocab;
    BOOST_TEST(got[r] == std::max_element(b, b + vocab) - b);
  }
  for (const float top_p : {0.9f, 0.5f, 1.0f}) {
    const float temperature = 0.8f;
    const auto coins = random_floats(rows, 0.5f);
    std::vector<float> c(rows);
    for (int r = 0; r < rows; ++r) c[r] = coins[r] + 0.5f;
    device_buffer<float> dc(rows);
    dc.upload(c);
    sample_top_p(dl.data(), rows, vocab, temperature, top_p, dc.data(), out.data(), nullptr);
    check(cudaDeviceSynchronize(), "sync");
    const auto s = out.download();
    for (int r = 0; r < rows; ++r) {
      const float* l = &logits[std::size_t(r) * vocab];
      const double m = *std::max_element(l, l + vocab);
      std::vector<double> p(vocab);
      double z = 0;
      for (int i = 0; i < vocab; ++i) z += p[i] = std::exp((l[i] - m) / temperature);
      for (auto& v : p) v /= z;
      std::vector<double> sorted = p;
      std::sort(sorted.begin(), sorted.end(), std::greater<>());
      double cum = 0, tau = 0;
      for (double v : sorted) {  // the smallest probability of the nucleus
        cum += v;
        tau = v;
        if (cum >= top_p) break;
      }
      if (top_p >= 1.0f) tau = 0;
      double mass = 0;
      for (double v : p) mass += v >= tau ? v : 0;
      const double target = c[r] * mass;
      double acc = 0;
      int want = -1;
      for (int i = 0; i < vocab && want < 0; ++i)
        if (p[i] >= tau && target < (acc += p[i])) want = i;
      BOOST_TEST(s[r] == want, "row " << r << " top_p " << top_p);
      BOOST_TEST(p[s[r]] >= tau * (1 - 1e-5));
    }
  }
}

// Reference attention of query rows over a paged sequence, in double.
template <class T>
std::vector<double> reference_attention(const std::vector<float>& q, const std::vector<float>& pool, const test_pool<T>& tp,
                                        const std::vector<std::int32_t>& tables, int table_stride, int rows, int Hq,
                                        const std::vector<int>& row_seq, const std::vector<int>& row_keys) {
  const int D = tp.D, H = tp.H, G = Hq / H, P = tp.P;
  std::vector<double> out(std::size_t(rows) * Hq * D);
  for (int r = 0; r < rows; ++r)
    for (int hq = 0; hq < Hq; ++hq) {
      const int h = hq / G, n = row_keys[r];
      std::vector<double> s(n);
      double m = -INFINITY;
      for (int t = 0; t < n; ++t) {
        const std::size_t o = tp.at(0, tables[row_seq[r] * table_stride + t / P], t % P, h);
        double d = 0;
        for (int i = 0; i < D; ++i) d += double(q[(std::size_t(r) * Hq + hq) * D + i]) * pool[o + i];
        s[t] = d / std::sqrt(double(D));
        m = std::max(m, s[t]);
      }
      double z = 0;
      for (auto& v : s) z += v = std::exp(v - m);
      for (int i = 0; i < D; ++i) {
        double acc = 0;
        for (int t = 0; t < n; ++t)
          acc += s[t] * pool[tp.at(1, tables[row_seq[r] * table_stride + t / P], t % P, h) + i];
        out[(std::size_t(r) * Hq + hq) * D + i] = acc / z;
      }
    }
  return out;
}

// Prefill (causal, after a cached prefix) through paged_attention and, for bf16 head_dim 128,
// flash_prefill; decode of a batch with split-KV.
template <class T>
void check_attention(int D, int Hq, int H, int P, int start, int rows, bool flash, int splits = 1) {
  const int seqs = 3, pages = (start + rows + P - 1) / P + 2, slots = seqs * pages;
  test_pool<T> tp(slots, P, H, D);
  const auto pool = through<T>(random_floats(tp.mem.size(), 2.0f));
  tp.mem.upload(convert_from_float<T>(pool.data(), pool.size()));
  const auto tables = shuffled_slots(slots);  // (seq, page) → slot, pages per row
  device_buffer<std::int32_t> dtables(tables.size());
  dtables.upload(tables);
  {  // prefill of sequence 0
    const auto q = through<T>(random_floats(std::size_t(rows) * Hq * D, 2.0f));
    auto dq = to_device<T>(q);
    auto out = poisoned<T>(q.size());
    attention_rows<T> a;
    a.q = dq.data();
    a.out = out.data();
    a.rows = rows;
    a.q_heads = Hq;
    a.causal_start = start;
    a.max_keys = start + rows;
    a.scale = 1.0f / std::sqrt(float(D));
    const auto kv = tp.layer(dtables.data(), 0);
    if constexpr (std::is_same_v<T, bf16>) {
      device_buffer<float> ws(paged_attention_workspace(rows, Hq, D, splits));
      if (flash) flash_prefill(a, kv, nullptr, splits, ws.data());
      else paged_attention(a, kv, 1, nullptr, nullptr);
    } else {
      paged_attention(a, kv, 1, nullptr, nullptr);
    }
    std::vector<int> rs(rows, 0), rk(rows);
    for (int r = 0; r < rows; ++r) rk[r] = start + r + 1;
    const double e = rel_error(to_host(out), reference_attention(q, pool, tp, tables, 0, rows, Hq, rs, rk));
    BOOST_TEST_MESSAGE("prefill D=" << D << " start=" << start << " rows=" << rows << (flash ? " flash" : "") << " splits=" << splits << ": " << e);
    BOOST_TEST(e < tolerance<T>);
  }
  if (!flash) {  // decode: one row per sequence, different lengths, split over the keys
    const int B = seqs;
    const auto q = through<T>(random_floats(std::size_t(B) * Hq * D, 2.0f));
    auto dq = to_device<T>(q);
    auto out = poisoned<T>(q.size());
    std::vector<int> rs(B), rk(B);
    std::vector<std::int32_t> rs32(B), rk32(B);
    for (int b = 0; b < B; ++b) {
      rs[b] = rs32[b] = b;
      rk[b] = rk32[b] = std::max(1, start + rows - 37 * b);
    }
    device_buffer<std::int32_t> drs(B), drk(B);
    drs.upload(rs32);
    drk.upload(rk32);
    attention_rows<T> a;
    a.q = dq.data();
    a.out = out.data();
    a.rows = B;
    a.q_heads = Hq;
    a.row_seq = drs.data();
    a.row_keys = drk.data();
    a.max_keys = *std::max_element(rk.begin(), rk.end());
    a.scale = 1.0f / std::sqrt(float(D));
    const int splits = 5;
    device_buffer<float> ws(paged_attention_workspace(B, Hq, D, splits));
    paged_attention(a, tp.layer(dtables.data(), pages), splits, ws.data(), nullptr);
    const auto want = reference_attention(q, pool, tp, tables, pages, B, Hq, rs, rk);
    const double e = rel_error(to_host(out), want);
    BOOST_TEST_MESSAGE("decode D=" << D << " keys up to " << a.max_keys << ": " << e);
    BOOST_TEST(e < tolerance<T>);
    // Splits at fixed key positions (the batch-invariant decode): against the reference, and each
    // row alone (a batch of one) must give the batch's bits.
    const int fixed = 48, fixed_splits = (a.max_keys + fixed - 1) / fixed;
    device_buffer<float> wf(paged_attention_workspace(B, Hq, D, fixed_splits));
    auto batched = poisoned<T>(q.size());
    a.out = batched.data();
    paged_attention(a, tp.layer(dtables.data(), pages), fixed_splits, wf.data(), nullptr, fixed);
    const auto got = to_host(batched);
    const double ef = rel_error(got, want);
    BOOST_TEST_MESSAGE("decode D=" << D << ", splits of " << fixed << " keys: " << ef);
    BOOST_TEST(ef < tolerance<T>);
    for (int b = 0; b < B; ++b) {
      auto one = poisoned<T>(std::size_t(Hq) * D);
      attention_rows<T> a1 = a;
      a1.q = dq.data() + std::size_t(b) * Hq * D;
      a1.out = one.data();
      a1.rows = 1;
      a1.row_seq = drs.data() + b;
      a1.row_keys = drk.data() + b;
      a1.max_keys = rk[b];
      paged_attention(a1, tp.layer(dtables.data(), pages), (rk[b] + fixed - 1) / fixed, wf.data(), nullptr, fixed);
      const auto alone = to_host(one);
      BOOST_TEST(std::equal(alone.begin(), alone.end(), got.begin() + std::ptrdiff_t(b) * Hq * D),
                 "decode row " << b << " alone differs from the batch");
    }
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(paged_attention_matches_reference, T, storage_types) {
  check_attention<T>(8, 8, 4, 16, 0, 45, false);     // stories260K's heads
  check_attention<T>(8, 8, 4, 16, 64, 45, false);
  check_attention<T>(64, 12, 4, 16, 32, 70, false);
  check_attention<T>(128, 32, 8, 16, 160, 50, false);
  check_attention<T>(128, 64, 8, 16, 900, 40, false);  // groups of 8 query heads, long rows
  check_attention<T>(96, 8, 8, 16, 300, 20, false);    // a head that is not a power of two (no grouping)
  check_attention<T>(72, 8, 2, 16, 100, 20, false);    // 16-byte chunks that leave lanes idle (bf16: 9 of 16)
  check_attention<T>(66, 8, 2, 16, 100, 20, false);    // not whole 16-byte chunks: the scalar path
}

BOOST_AUTO_TEST_CASE(flash_prefill_matches_reference) {
  check_attention<bf16>(128, 8, 2, 16, 0, 300, true);    // no prefix, a partial last query tile
  check_attention<bf16>(128, 8, 2, 16, 160, 300, true);  // a cached prefix of 10 pages
  check_attention<bf16>(128, 4, 4, 32, 96, 128, true);   // no grouping, page size 32
  check_attention<bf16>(128, 8, 1, 16, 1000, 7, true);   // a few rows after a long prefix
  check_attention<bf16>(128, 8, 2, 16, 2000, 200, true, 4);  // split-KV: 4 key ranges merged by log-sum-exp
  check_attention<bf16>(128, 8, 2, 64, 960, 64, true, 7);    // 7 splits of 2 tiles, some rows see none of a split
}

// flash_prefill with per-row positions (partial prefill, attention_rows::row_pos): rows at ascending
// positions anywhere, each over keys [0, its position] (the keys between the rows are the pool's);
// against the double reference with the same key counts. Rows at consecutive positions must give
// the contiguous kernel's bits.
void check_flash_positions(int Hq, int H, int P, const std::vector<int>& pos, int splits) {
  const int D = 128, rows = int(pos.size()), keys = pos.back() + 1, slots = (keys + P - 1) / P + 2;
  test_pool<bf16> tp(slots, P, H, D);
  const auto pool = through<bf16>(random_floats(tp.mem.size(), 2.0f));
  tp.mem.upload(convert_from_float<bf16>(pool.data(), pool.size()));
  const auto tables = shuffled_slots(slots);
  device_buffer<std::int32_t> dtables(tables.size()), dpos(pos.size());
  dtables.upload(tables);
  dpos.upload(std::vector<std::int32_t>(pos.begin(), pos.end()));
  const auto q = through<bf16>(random_floats(std::size_t(rows) * Hq * D, 2.0f));
  auto dq = to_device<bf16>(q);
  auto out = poisoned<bf16>(q.size());
  attention_rows<bf16> a;
  a.q = dq.data();
  a.out = out.data();
  a.rows = rows;
  a.q_heads = Hq;
  a.row_pos = dpos.data();
  a.max_keys = keys;
  a.scale = 1.0f / std::sqrt(float(D));
  const auto kv = tp.layer(dtables.data(), 0);
  device_buffer<float> ws(paged_attention_workspace(rows, Hq, D, splits));
  flash_prefill(a, kv, nullptr, splits, ws.data());
  const std::vector<int> rs(rows, 0);
  std::vector<int> rk(rows);
  for (int r = 0; r < rows; ++r) rk[r] = pos[r] + 1;
  const auto got = to_host(out);
  const double e = rel_error(got, reference_attention(q, pool, tp, tables, 0, rows, Hq, rs, rk));
  BOOST_TEST_MESSAGE("flash, " << rows << " rows at positions " << pos.front() << ".." << pos.back() << ", splits " << splits << ": " << e);
  BOOST_TEST(e < tolerance<bf16>);
  if (pos.back() - pos.front() == rows - 1) {  // consecutive: the contiguous kernel, same bits
    auto out2 = poisoned<bf16>(q.size());
    attention_rows<bf16> c = a;
    c.out = out2.data();
    c.row_pos = nullptr;
    c.causal_start = pos.front();
    flash_prefill(c, kv, nullptr, splits, ws.data());
    const auto want = to_host(out2);
    BOOST_TEST(std::equal(got.begin(), got.end(), want.begin()), "positional vs contiguous rows differ");
  }
}

BOOST_AUTO_TEST_CASE(flash_prefill_with_row_positions_matches_reference) {
  std::vector<int> sparse, tail;
  for (int p = 3; p < 1500; p += 5 + p % 4) sparse.push_back(p);  // gaps of 5-8: warps span several key tiles
  for (int p = 1900; p < 2000; ++p) tail.push_back(p);
  std::vector<int> gap{0, 1, 2, 1400, 1401, 1402, 1403};  // one warp across a long gap
  std::vector<int> run(300);
  std::iota(run.begin(), run.end(), 160);
  check_flash_positions(8, 2, 16, sparse, 1);
  check_flash_positions(8, 2, 16, sparse, 4);  // split-KV: a block's key range split in four
  check_flash_positions(8, 1, 16, tail, 1);
  check_flash_positions(8, 1, 16, tail, 5);
  check_flash_positions(4, 4, 32, gap, 1);
  check_flash_positions(8, 2, 16, run, 1);
  check_flash_positions(8, 2, 16, run, 3);
}
