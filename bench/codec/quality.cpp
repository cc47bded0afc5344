// kvtier-codec-quality: what each KV codec does to a real model's output — stories260K on the
// engine's CPU backend. For each held-out sequence (sampled from the model itself, seeded), the KV of
// its first --prefix tokens is encoded and decoded by the codec (as if it came back from a tier),
// and the model then continues over the rest with that KV:
//   ratio          encoded bytes against the page in bf16 (how KV would be stored)
//   KV error       relative L2 of the decoded prefix KV, per layer (mean and worst)
//   agreement      next-token argmax equal to the uncompressed run, teacher-forced over the stretch
//   perplexity     of the sequence's own tokens over the stretch, against the uncompressed run
//   greedy         a --continuation-token greedy continuation: tokens until the first difference,
//                  and the share of continuations that are identical
// A hint only: at 260K parameters the KV is tiny (5 layers x 4 heads x 8 dims) and its statistics
// are not a large model's.
//
//   kvtier-codec-quality [--model DIR] [--sequences N] [--prefix T] [--continuation T] [--csv FILE]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/cpu_model_run.hpp"
#include "kvtier/codec.hpp"
#include "kvtier/transfer/views.hpp"
#include "kvtier_engine/cpu/cpu_backend.hpp"
#include "kvtier_engine/model_files.hpp"
#include "kvtier_engine/sampler.hpp"
#include "kvtier_engine/tokenizer.hpp"
#include "kvtier_engine/weights.hpp"

using namespace kvtier;
using namespace kvtier_engine;

namespace {

constexpr std::size_t P = kvtier_bench::cpu_model_run::page_tokens;

struct setup {
  model_weights weights;
  model_config cfg;
  std::unique_ptr<kvtier_bench::cpu_model_run> run;
  std::size_t slots;

  setup(const std::string& dir, std::size_t max_tokens) {
    const model_files f = model_files::in(dir);
    weights = model_weights::load_llama2c(f.checkpoint.string(), f.name);
    cfg = weights.config();
    slots = (max_tokens + P - 1) / P + 1;
    run = std::make_unique<kvtier_bench::cpu_model_run>(weights, slots);
  }
  kv_page_geometry geometry() const { return {cfg.kv_shape(dtype::fp32), P}; }

  // Page `page` of the pool as page_first bytes, and back.
  std::vector<std::byte> read_page(std::size_t page) const {
    const kv_page_geometry g = geometry();
    std::vector<std::byte> out(g.page_bytes());
    const std::size_t block = P * g.row_elements() * 4;
    for (std::size_t l = 0; l < cfg.layers; ++l)
      for (std::size_t k = 0; k < 2; ++k)
        std::memcpy(out.data() + (l * 2 + k) * block, run->pool().page_row(l, k, page, P, 0, 0), block);
    return out;
  }
  void write_page(std::size_t page, const std::vector<std::byte>& bytes) {
    const std::size_t block = P * geometry().row_elements() * 4;
    for (std::size_t l = 0; l < cfg.layers; ++l)
      for (std::size_t k = 0; k < 2; ++k)
        std::memcpy(run->pool().page_row(l, k, page, P, 0, 0), bytes.data() + (l * 2 + k) * block, block);
  }
  std::vector<float> prefill(std::span<const token_id> tokens) { return run->prefill(tokens, 0); }
  std::vector<float> step(token_id t, std::size_t pos) { return run->step(t, pos); }
};

double log_softmax_at(std::span<const float> logits, std::size_t i) {
  const float m = *std::max_element(logits.begin(), logits.end());
  double z = 0;
  for (float v : logits) z += std::exp(double(v) - m);
  return double(logits[i]) - m - std::log(z);
}

struct sequence_run {
  std::vector<std::size_t> argmax;  // teacher-forced argmax at each position of the stretch
  double nll = 0;                   // summed over the stretch
  std::vector<token_id> greedy;     // greedy continuation
};

// With the prefix KV already in the pool: teacher-forced pass over [prefix, tokens.size() - 1), then
// a greedy continuation from the prefix.
sequence_run continue_from_prefix(setup& s, const std::vector<token_id>& tokens, std::size_t prefix, std::size_t continuation) {
  sequence_run r;
  for (std::size_t pos = prefix; pos + 1 < tokens.size(); ++pos) {
    const auto logits = s.step(tokens[pos], pos);
    r.argmax.push_back(sampler::argmax(logits));
    r.nll -= log_softmax_at(logits, std::size_t(tokens[pos + 1].value()));
  }
  token_id t = tokens[prefix];
  for (std::size_t pos = prefix; r.greedy.size() < continuation && pos + 1 < s.slots * P; ++pos) {
    const auto logits = s.step(t, pos);
    t = token_id{int(sampler::argmax(logits))};
    r.greedy.push_back(t);
  }
  return r;
}

struct codec_entry {
  std::string name;
  std::function<std::pair<std::size_t, std::vector<std::byte>>(const std::vector<std::byte>&)> round_trip;
};

template <class Codec>
codec_entry make_entry(std::string name, Codec c) {
  return {std::move(name), [c = std::move(c)](const std::vector<std::byte>& page) {
            std::vector<std::byte> enc(c.max_encoded_bytes(page.size())), back(page.size());
            auto n = c.encode(page, enc);
            if (!n) throw std::runtime_error("encode failed");
            if (!c.decode(std::span<const std::byte>(enc).first(*n), back)) throw std::runtime_error("decode failed");
            return std::pair{*n, back};
          }};
}

struct row {
  std::string codec;
  double ratio_vs_bf16 = 0, kv_err_mean = 0, kv_err_worst = 0, agreement = 0, ppl_ref = 0, ppl = 0, greedy_until_diff = 0,
         identical_share = 0;
  std::size_t greedy_min = 0;
};

}  // namespace

int main(int argc, char** argv) try {
  std::string dir = std::string(KVTIER_ENGINE_MODELS_DIR) + "/stories260K", csv;
  std::size_t sequences = 24, prefix = 128, continuation = 200, fit_sequences = 4;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) { std::fprintf(stderr, "kvtier-codec-quality: %s needs a value\n", a.c_str()); return 2; }
    const char* v = argv[++i];
    const auto count = [&](const char* flag) {
      char* end = nullptr;
      const unsigned long long n = std::strtoull(v, &end, 10);
      if (!*v || *end || n == 0 || v[0] == '-') { std::fprintf(stderr, "kvtier-codec-quality: %s needs a positive whole number\n", flag); std::exit(2); }
      return std::size_t(n);
    };
    if (a == "--model") dir = v;
    else if (a == "--sequences") sequences = count("--sequences");
    else if (a == "--prefix") prefix = count("--prefix") / P * P;
    else if (a == "--continuation") continuation = count("--continuation");
    else if (a == "--csv") csv = v;
    else { std::fprintf(stderr, "kvtier-codec-quality: unknown option %s\n", a.c_str()); return 2; }
  }
  if (prefix == 0) { std::fprintf(stderr, "kvtier-codec-quality: --prefix must be at least one page (%zu tokens)\n", P); return 2; }
  const std::size_t length = prefix + 64;  // the teacher-forced stretch: 63 positions after the prefix
  setup s(dir, std::max(length, prefix + continuation + 1));
  if (prefix + continuation + 1 > s.cfg.seq_len) {
    std::fprintf(stderr, "kvtier-codec-quality: --prefix + --continuation must stay within the model's %zu positions\n", s.cfg.seq_len);
    return 2;
  }

  // Sequences sampled from the model (temperature 1, seeded): the first ones fit the profile.
  std::vector<std::vector<token_id>> seqs;
  for (std::size_t i = 0; i < sequences + fit_sequences; ++i) {
    sampler smp(sampling{1.0f, 0.95f, 1000 + i});
    std::vector<token_id> t{bos_token};
    std::vector<float> logits = s.prefill(std::span<const token_id>(t));
    while (t.size() < length) {
      t.push_back(smp.next(logits));
      logits = s.step(t.back(), t.size() - 1);
    }
    seqs.push_back(std::move(t));
  }
  const kv_page_geometry g = s.geometry();
  std::vector<std::vector<std::byte>> fit_pages;
  for (std::size_t i = 0; i < fit_sequences; ++i) {
    (void)s.prefill(std::span<const token_id>(seqs[i]).first(prefix));
    for (std::size_t p = 0; p < prefix / P; ++p) fit_pages.push_back(s.read_page(p));
  }
  std::vector<std::span<const std::byte>> fit_views(fit_pages.begin(), fit_pages.end());

  // int8's error on the fit pages sets the cachegen targets.
  const int8_codec i8(g);
  double num = 0, den = 0;
  for (const auto& pg : fit_pages) {
    auto [n, back] = make_entry("int8", i8).round_trip(pg);
    for (std::size_t e = 0; e < g.elements(); ++e) {
      const double x = kvtier::detail::load_element(pg.data(), dtype::fp32, e), y = kvtier::detail::load_element(back.data(), dtype::fp32, e);
      num += (x - y) * (x - y);
      den += x * x;
    }
  }
  const double int8_err = std::sqrt(num / den);
  // Reference point: the same KV stored as bf16 (no codec), what an engine's bf16 cache already does.
  codec_entry bf16_only{"bf16 rounding only (identity codec on a bf16 page)", [&](const std::vector<std::byte>& page) {
                          std::vector<std::byte> back(page.size());
                          for (std::size_t e = 0; e < g.elements(); ++e)
                            kvtier::detail::store_element(back.data(), dtype::fp32, e,
                                                          kvtier::detail::round_to<dtype::bf16>(kvtier::detail::load_element(page.data(), dtype::fp32, e)));
                          return std::pair{page.size() / 2, back};
                        }};
  std::vector<codec_entry> codecs{bf16_only, make_entry("int8", i8), make_entry("fp8_e4m3", fp8_codec(g))};
  for (double f : {1.0, 2.0, 4.0}) {
    cachegen_options o;
    o.target_error = int8_err * f;
    o.streams_per_block = 1;  // 32 channels a block: one stream
    char name[64];
    std::snprintf(name, sizeof name, "cachegen (%gx int8's error)", f);
    codecs.push_back(make_entry(name, cachegen_codec(g, cachegen_profile::fit(g, fit_views, o))));
  }

  std::vector<row> rows(codecs.size());
  std::vector<double> layer_num(codecs.size() * s.cfg.layers), layer_den(codecs.size() * s.cfg.layers);
  std::vector<std::size_t> enc_bytes(codecs.size()), agree(codecs.size()), identical(codecs.size()), until_sum(codecs.size());
  std::vector<std::size_t> until_min(codecs.size(), ~std::size_t{0});
  std::vector<double> nll(codecs.size());
  double nll_ref = 0;
  std::size_t positions = 0, pages_total = 0;
  for (std::size_t i = fit_sequences; i < seqs.size(); ++i) {
    const auto& t = seqs[i];
    std::fprintf(stderr, "\rsequence %zu/%zu", i - fit_sequences + 1, sequences);
    (void)s.prefill(std::span<const token_id>(t).first(prefix));
    std::vector<std::vector<std::byte>> orig;
    for (std::size_t p = 0; p < prefix / P; ++p) orig.push_back(s.read_page(p));
    const sequence_run ref = continue_from_prefix(s, t, prefix, continuation);
    nll_ref += ref.nll;
    positions += ref.argmax.size();
    pages_total += orig.size();
    for (std::size_t c = 0; c < codecs.size(); ++c) {
      for (std::size_t p = 0; p < orig.size(); ++p) {
        auto [n, back] = codecs[c].round_trip(orig[p]);
        enc_bytes[c] += n;
        const std::size_t per_layer = g.elements() / s.cfg.layers;
        for (std::size_t e = 0; e < g.elements(); ++e) {
          const double x = kvtier::detail::load_element(orig[p].data(), dtype::fp32, e), y = kvtier::detail::load_element(back.data(), dtype::fp32, e);
          layer_num[c * s.cfg.layers + e / per_layer] += (x - y) * (x - y);
          layer_den[c * s.cfg.layers + e / per_layer] += x * x;
        }
        s.write_page(p, back);
      }
      const sequence_run run = continue_from_prefix(s, t, prefix, continuation);
      for (std::size_t k = 0; k < run.argmax.size(); ++k) agree[c] += run.argmax[k] == ref.argmax[k];
      nll[c] += run.nll;
      std::size_t same = 0;
      while (same < run.greedy.size() && same < ref.greedy.size() && run.greedy[same] == ref.greedy[same]) ++same;
      until_sum[c] += same;
      until_min[c] = std::min(until_min[c], same);
      identical[c] += same == ref.greedy.size();
    }
  }
  std::fprintf(stderr, "\n");
  const double bf16_page = double(g.page_bytes()) / 2;  // the pool is fp32 here; KV is stored as bf16
  for (std::size_t c = 0; c < codecs.size(); ++c) {
    row& r = rows[c];
    r.codec = codecs[c].name;
    r.ratio_vs_bf16 = bf16_page * double(pages_total) / double(enc_bytes[c]);
    double sum = 0;
    for (std::size_t l = 0; l < s.cfg.layers; ++l) {
      const double e = std::sqrt(layer_num[c * s.cfg.layers + l] / layer_den[c * s.cfg.layers + l]);
      sum += e;
      r.kv_err_worst = std::max(r.kv_err_worst, e);
    }
    r.kv_err_mean = sum / double(s.cfg.layers);
    r.agreement = double(agree[c]) / double(positions);
    r.ppl_ref = std::exp(nll_ref / double(positions));
    r.ppl = std::exp(nll[c] / double(positions));
    r.greedy_until_diff = double(until_sum[c]) / double(sequences);
    r.greedy_min = until_min[c];
    r.identical_share = double(identical[c]) / double(sequences);
  }
  std::printf("stories260K (CPU backend, fp32): %zu sequences sampled from the model, prefix %zu tokens (%zu pages) through the codec,"
              " %zu teacher-forced positions, %zu-token greedy continuations; int8's KV error on the fit pages %.4f\n",
              sequences, prefix, prefix / P, positions, continuation, int8_err);
  std::printf("| codec | ratio vs bf16 | KV rel. L2 (mean of layers) | worst layer | next-token agreement | perplexity (uncompressed %.3f) | greedy tokens until first difference (mean / min) | continuations identical |\n|---|---|---|---|---|---|---|---|\n",
              rows[0].ppl_ref);
  for (const auto& r : rows)
    std::printf("| %s | %.2f | %.4f | %.4f | %.2f%% | %.3f (%+.2f%%) | %.1f / %zu | %.0f%% |\n", r.codec.c_str(), r.ratio_vs_bf16, r.kv_err_mean,
                r.kv_err_worst, 100 * r.agreement, r.ppl, 100 * (r.ppl / r.ppl_ref - 1), r.greedy_until_diff, r.greedy_min,
                100 * r.identical_share);
  if (!csv.empty()) {
    std::ofstream f(csv);
    f << "codec,ratio_vs_bf16,kv_rel_l2_mean,kv_rel_l2_worst,next_token_agreement,ppl_ref,ppl,greedy_until_diff_mean,greedy_until_diff_min,identical_share\n";
    for (const auto& r : rows)
      f << '"' << r.codec << "\"," << r.ratio_vs_bf16 << ',' << r.kv_err_mean << ',' << r.kv_err_worst << ',' << r.agreement << ','
        << r.ppl_ref << ',' << r.ppl << ',' << r.greedy_until_diff << ',' << r.greedy_min << ',' << r.identical_share << '\n';
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "kvtier-codec-quality: %s\n", e.what());
  return 1;
}
