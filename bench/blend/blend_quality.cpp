// kvtier-blend-quality: CacheBlend's selective recompute on stories260K (the engine's CPU backend).
// A prompt is 2-6 stories (each a chunk: BOS + text, computed on its own at positions 0.., as a
// chunk store would hold it) followed by a cue. Three ways to get the prompt's KV:
//   full      prefill of the whole prompt (the reference)
//   naive     each chunk's own KV placed at its offset (RoPE on load: transfer::cpu::load_rotated),
//             only the cue computed
//   blend     the same placement, then kvtier_engine::blend_prefill: the first chunk is a true
//             prefix (its KV is full prefill's: never recomputed); layers below the selection layer
//             computed for the other chunks and the cue; on the selection layer the chunk tokens
//             whose K/V deviates most (kvtier::blend) are kept and only they (and the cue) go on
//             through the later layers, attending over the blended KV. A method names the
//             selection layer, the shares kept per layer (gradual filtering), and options.
// Quality against full prefill: KL divergence of the next-token distribution after the cue, and a
// greedy continuation (tokens until the first difference). A hint only: stories260K is tiny.
// A method's shares are multiples of r for the layers after the selection layer (capped at 1); r is
// thus the mean share of the placed chunks' tokens (all chunks but the first) whose K/V is recomputed
// on those layers when the multiples average 1. "K/V recomputed" is the share of all the placed
// tokens' (token, layer) K/V recomputed, layers up to the selection layer (all tokens) included.
//
//   kvtier-blend-quality [--model DIR] [--trials N] [--seed S] [--chunk-tokens T] [--continuation T]
//                        [--methods "name:layer=1,keep=2/1,weight=question,heads=1,per=1,part=kv;..."] [--csv FILE]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/cpu_model_run.hpp"
#include "kvtier/blend/select.hpp"
#include "kvtier_engine/cpu/blend_prefill.hpp"
#include "kvtier/transfer.hpp"
#include "kvtier/transfer/rope.hpp"
#include "kvtier_engine/model_files.hpp"
#include "kvtier_engine/tokenizer.hpp"

using namespace kvtier;
using namespace kvtier_engine;
using kvtier_bench::cpu_model_run;

namespace {

constexpr std::size_t P = cpu_model_run::page_tokens;

double kl(std::span<const float> ref_logits, std::span<const float> logits) {
  const auto softmax = [](std::span<const float> l) {
    std::vector<double> p(l.begin(), l.end());
    const double m = *std::max_element(p.begin(), p.end());
    double z = 0;
    for (auto& v : p) z += (v = std::exp(v - m));
    for (auto& v : p) v /= z;
    return p;
  };
  const auto p = softmax(ref_logits), q = softmax(logits);
  double s = 0;
  for (std::size_t i = 0; i < p.size(); ++i)
    if (p[i] > 0) s += p[i] * std::log(p[i] / std::max(q[i], 1e-300));
  return s;
}

std::size_t same_prefix(const std::vector<token_id>& a, const std::vector<token_id>& b) {
  std::size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

// A blending method: its plan at share r is `keep` (multiples of r, capped at 1) from `layer` on.
struct method {
  std::string name;
  std::size_t layer = 1;
  std::vector<double> keep{1.0};
  std::size_t heads = 0;
  bool per_range = false;
  blend::kv_part part = blend::kv_part::both;
  bool all_chunks = false;  // shares of all chunk tokens (the prefix chunk too), as CacheBlend counts
  blend_weighting weighting = blend_weighting::deviation;
  bool oracle = false;  // question weighting with full prefill's own last-layer attention (not reachable: a bound)

  blend_plan plan(double r, std::size_t chunk_tokens_total) const {
    blend_plan p;
    p.select_layer = layer;
    p.keep.clear();
    for (double m : keep) p.keep.push_back(std::min(1.0, m * r));
    p.range_heads = heads;
    p.per_range = per_range;
    p.part = part;
    p.weighting = weighting;
    p.budget_of = all_chunks ? chunk_tokens_total : 0;
    return p;
  }
};

// "name:layer=1,keep=2/1,weight=attention,heads=1,per=1,part=kv|k|v,all=1"; methods separated by ';'.
std::vector<method> parse_methods(const std::string& spec) {
  std::vector<method> out;
  std::stringstream ss(spec);
  std::string one;
  while (std::getline(ss, one, ';')) {
    if (one.empty()) continue;
    method m;
    const auto colon = one.find(':');
    m.name = one.substr(0, colon);
    std::stringstream opts(colon == std::string::npos ? "" : one.substr(colon + 1));
    std::string kv;
    while (std::getline(opts, kv, ',')) {
      const auto eq = kv.find('=');
      if (eq == std::string::npos) throw std::runtime_error("method option without '=': " + kv);
      const std::string k = kv.substr(0, eq), v = kv.substr(eq + 1);
      if (k == "layer") m.layer = std::stoul(v);
      else if (k == "heads") m.heads = std::stoul(v);
      else if (k == "per") m.per_range = v == "1";
      else if (k == "all") m.all_chunks = v == "1";
      else if (k == "weight") {
        m.weighting = v == "attention" ? blend_weighting::attention : v == "deviation" ? blend_weighting::deviation : blend_weighting::question;
        m.oracle = v == "oracle";
        if (v != "attention" && v != "deviation" && v != "question" && v != "oracle") throw std::runtime_error("unknown weight " + v);
      }
      else if (k == "part") m.part = v == "k" ? blend::kv_part::k : v == "v" ? blend::kv_part::v : blend::kv_part::both;
      else if (k == "keep") {
        m.keep.clear();
        std::stringstream ks(v);
        std::string x;
        while (std::getline(ks, x, '/')) m.keep.push_back(std::stod(x));
      } else throw std::runtime_error("unknown method option " + k);
    }
    out.push_back(std::move(m));
  }
  if (out.empty()) throw std::runtime_error("no method");
  return out;
}

}  // namespace

int main(int argc, char** argv) try {
  std::string dir = std::string(KVTIER_ENGINE_MODELS_DIR) + "/stories260K", csv;
  // CacheBlend's one-shot selection; its gradual filtering (shares 1.5r, r, 0.5r: r on average);
  // the one-shot selection weighted by the cue's last-layer attention over the placed KV; the same
  // with full prefill's own attention (an oracle: how far better weights could go).
  std::string methods_spec =
      "cacheblend:layer=1,keep=1;gradual:layer=1,keep=1.5/1/0.5;question:layer=1,keep=1,weight=question;"
      "oracle:layer=1,keep=1,weight=oracle";
  std::size_t trials = 6, chunk_tokens = 64, continuation = 32, seed = 500;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) { std::fprintf(stderr, "kvtier-blend-quality: %s needs a value\n", a.c_str()); return 2; }
    const char* v = argv[++i];
    const auto count = [&] {
      char* end = nullptr;
      const unsigned long long n = std::strtoull(v, &end, 10);
      if (!*v || *end || n == 0 || v[0] == '-') { std::fprintf(stderr, "kvtier-blend-quality: %s needs a positive whole number\n", a.c_str()); std::exit(2); }
      return std::size_t(n);
    };
    if (a == "--model") dir = v;
    else if (a == "--trials") trials = count();
    else if (a == "--seed") seed = count();
    else if (a == "--chunk-tokens") chunk_tokens = count();
    else if (a == "--continuation") continuation = count();
    else if (a == "--methods") methods_spec = v;
    else if (a == "--csv") csv = v;
    else { std::fprintf(stderr, "kvtier-blend-quality: unknown option %s\n", a.c_str()); return 2; }
  }
  if (chunk_tokens % P != 0) { std::fprintf(stderr, "kvtier-blend-quality: --chunk-tokens must be a multiple of %zu\n", P); return 2; }
  const std::vector<method> methods = parse_methods(methods_spec);
  const model_files f = model_files::in(dir);
  const model_weights w = model_weights::load_llama2c(f.checkpoint.string(), f.name);
  const model_config& cfg = w.config();
  for (const auto& m : methods)
    if (m.layer + 1 + m.keep.size() > cfg.layers || m.keep.empty()) { std::fprintf(stderr, "kvtier-blend-quality: method %s does not fit the model\n", m.name.c_str()); return 2; }
  const tokenizer tok(f.tokenizer.string(), cfg.vocab);
  const std::vector<std::size_t> chunk_counts{2, 3, 4, 6};
  const std::vector<double> ratios{0.05, 0.10, 0.15, 0.20, 0.30};
  const std::vector<token_id> cue = tok.encode("\nOne day, the", false);
  if (6 * chunk_tokens + cue.size() + continuation > cfg.seq_len) { std::fprintf(stderr, "kvtier-blend-quality: prompts would exceed the window\n"); return 2; }
  const std::size_t slots = cfg.seq_len / P + 1;
  cpu_model_run full(w, slots), scratch(w, slots), blend(w, slots);
  const kv_shape shape = full.shape();
  const transfer::rope_spec rope{cfg.rope == rope_style::adjacent_pairs ? transfer::rope_convention::adjacent_pairs
                                                                        : transfer::rope_convention::rotate_half,
                                 cfg.rope_theta, cfg.head_size, 0};
  std::vector<std::byte> host(shape.bytes_per_page(P) * slots);  // chunk pages, page first, as a host tier holds them
  const auto host_view = transfer::paged_view(host.data(), shape, slots, page_size<>(P));

  // A pool of stories sampled from the model, each BOS + chunk_tokens - 1 tokens; --seed picks the set.
  std::vector<std::vector<token_id>> stories;
  for (std::size_t i = 0; i < 24; ++i) {
    sampler smp(sampling{1.0f, 0.95f, seed + i});
    std::vector<token_id> t{bos_token};
    auto logits = scratch.prefill(t, 0);
    while (t.size() < chunk_tokens) {
      t.push_back(smp.next(logits));
      logits = scratch.step(t.back(), t.size() - 1);
    }
    stories.push_back(std::move(t));
  }

  struct acc {
    double kl = 0, until = 0, top1 = 0, compute = 0;
    std::size_t n = 0;
  };
  const std::size_t M = methods.size(), R = ratios.size();
  std::vector<acc> naive(chunk_counts.size()), blended(chunk_counts.size() * M * R);
  std::vector<float> logits(cfg.vocab);
  for (std::size_t ci = 0; ci < chunk_counts.size(); ++ci)
    for (std::size_t trial = 0; trial < trials; ++trial) {
      const std::size_t n = chunk_counts[ci];
      std::vector<token_id> prompt;
      std::vector<std::size_t> pick;
      std::vector<reused_range> ranges;  // the placed chunks after the first (a true prefix)
      for (std::size_t c = 0; c < n; ++c) {
        pick.push_back((trial * 7 + c * 5 + ci) % stories.size());
        if (c) ranges.push_back({prompt.size(), prompt.size() + chunk_tokens});
        prompt.insert(prompt.end(), stories[pick.back()].begin(), stories[pick.back()].end());
      }
      const std::size_t S = prompt.size();
      prompt.insert(prompt.end(), cue.begin(), cue.end());
      std::fprintf(stderr, "\r%zu chunks, trial %zu/%zu   ", n, trial + 1, trials);
      // Full prefill.
      // Full prefill, keeping the cue's last-layer attention mass (the oracle methods' weights).
      std::vector<float> ref_logits(cfg.vocab);
      std::vector<double> oracle_mass(prompt.size(), 0.0);
      {
        std::vector<decode_entry> rows;
        for (std::size_t p = 0; p < prompt.size(); ++p) rows.push_back({prompt[p], p, full.block_table()});
        std::vector<std::size_t> qpos, at(S);
        for (std::size_t p = S; p < prompt.size(); ++p) qpos.push_back(p);
        for (std::size_t p = 0; p < S; ++p) at[p] = p;
        const blend::sequence_kv fk{full.pool(), full.block_table(), P};
        const auto grab = [&](std::size_t l, std::vector<std::size_t>& active) {
          if (l + 1 != cfg.layers) return;
          const auto q = full.backend().queries(active.size());
          auto m = blend::attention_mass(fk, l, q.subspan(q.size() - cue.size() * cfg.q_dim()), qpos, cfg.heads, at, dtype::fp32);
          if (!m) throw std::runtime_error("attention mass failed");
          std::copy(m->begin(), m->end(), oracle_mass.begin());
        };
        if (!full.backend().prefill_rows(rows, ref_logits, {}, grab)) throw std::runtime_error("full prefill failed");
      }
      const auto ref_cont = full.greedy(ref_logits, prompt.size(), continuation);
      const std::size_t ref_top = sampler::argmax(ref_logits);
      // Placement: each chunk computed alone at 0.., its pages moved to its offset with RoPE on load.
      const auto place = [&] {
        for (std::size_t c = 0; c < n; ++c) {
          (void)scratch.prefill(stories[pick[c]], 0);
          std::vector<transfer::page_pair> out, in;
          std::vector<long> delta;
          for (std::size_t p = 0; p < chunk_tokens / P; ++p) {
            out.push_back({std::uint32_t(p), std::uint32_t(p)});
            in.push_back({std::uint32_t(p), std::uint32_t(c * chunk_tokens / P + p)});
            delta.push_back(long(c * chunk_tokens));
          }
          if (!transfer::cpu::backup(scratch.pool(), host_view, out) ||
              !transfer::cpu::load_rotated(host_view, blend.pool(), in, delta, rope, dtype::fp32))
            throw std::runtime_error("placement failed");
        }
      };
      place();
      {
        const auto lg = blend.prefill(std::span<const token_id>(prompt).subspan(S), S);
        const auto cont = blend.greedy(lg, prompt.size(), continuation);
        naive[ci].kl += kl(ref_logits, lg);
        naive[ci].until += double(same_prefix(cont, ref_cont));
        naive[ci].top1 += sampler::argmax(lg) == ref_top;
        ++naive[ci].n;
      }
      for (std::size_t mi = 0; mi < M; ++mi)
        for (std::size_t ri = 0; ri < R; ++ri) {
          place();
          blend_plan plan = methods[mi].plan(ratios[ri], S);
          if (methods[mi].oracle) plan.question_mass = oracle_mass;
          auto rep = blend_prefill(blend.backend(), blend.pool(), P, prompt, chunk_tokens, blend.block_table(), ranges, plan, logits);
          if (!rep) throw std::runtime_error("blend_prefill failed: " + rep.err().message());
          const auto cont = blend.greedy(logits, prompt.size(), continuation);
          acc& a = blended[(ci * M + mi) * R + ri];
          a.kl += kl(ref_logits, logits);
          a.until += double(same_prefix(cont, ref_cont));
          a.top1 += sampler::argmax(logits) == ref_top;
          a.compute += rep->recomputed_share();
          ++a.n;
        }
    }
  std::fprintf(stderr, "\n");
  std::printf("stories260K: prompts of 2-6 chunks of %zu tokens (stories sampled from the model, seed %zu) + a %zu-token cue, %zu trials each;"
              " %zu-token greedy continuations\n",
              chunk_tokens, seed, cue.size(), trials, continuation);
  for (const auto& m : methods) {
    std::printf("method %s: selection on layer %zu, kept shares", m.name.c_str(), m.layer);
    for (double k : m.keep) std::printf(" %g×r", k);
    std::printf("%s%s%s, deviation over %s%s\n", m.heads ? ", range heads kept" : "", m.per_range ? ", per-chunk budgets" : "",
                m.weighting == blend_weighting::attention ? ", weighted by the cue's attention on the layer measured"
                : m.oracle ? ", weighted by the cue's last-layer attention in full prefill (an oracle: a bound, not a method)"
                : m.weighting == blend_weighting::question ? ", weighted by the cue's last-layer attention (first pass over the placed KV)" : "",
                m.part == blend::kv_part::both ? "K and V" : m.part == blend::kv_part::k ? "K" : "V",
                m.all_chunks ? ", r of all chunk tokens" : "");
  }
  std::printf("| chunks | method | r | K/V recomputed (placed tokens × layers) | KL(full ‖ method) | KL gap closed | next token = full | greedy tokens equal to full (mean) |\n|---|---|---|---|---|---|---|---|\n");
  std::ofstream o;
  if (!csv.empty()) {
    o.open(csv);
    o << "chunks,method,ratio,compute,kl,gap_closed,top1_agreement,greedy_equal_tokens\n";
  }
  std::vector<double> pooled(M * R, 0.0), pooled_compute(M * R, 0.0);
  double pooled_naive = 0;
  for (std::size_t ci = 0; ci < chunk_counts.size(); ++ci) {
    const acc& nv = naive[ci];
    const double kl_naive = nv.kl / double(nv.n);
    pooled_naive += nv.kl;
    std::printf("| %zu | naive | 0%% | 0%% | %.4f | 0%% | %.0f%% | %.1f |\n", chunk_counts[ci], kl_naive, 100 * nv.top1 / double(nv.n),
                nv.until / double(nv.n));
    if (o) o << chunk_counts[ci] << ",naive,0,0," << kl_naive << ",0," << nv.top1 / double(nv.n) << ',' << nv.until / double(nv.n) << '\n';
    for (std::size_t mi = 0; mi < M; ++mi)
      for (std::size_t ri = 0; ri < R; ++ri) {
        const acc& a = blended[(ci * M + mi) * R + ri];
        pooled[mi * R + ri] += a.kl;
        pooled_compute[mi * R + ri] += a.compute / double(a.n) / double(chunk_counts.size());
        const double k = a.kl / double(a.n), closed = kl_naive > 0 ? 1 - k / kl_naive : 1;
        std::printf("| %zu | %s | %.0f%% | %.0f%% | %.4f | %.0f%% | %.0f%% | %.1f |\n", chunk_counts[ci], methods[mi].name.c_str(), 100 * ratios[ri],
                    100 * a.compute / double(a.n), k, 100 * closed, 100 * a.top1 / double(a.n), a.until / double(a.n));
        if (o) o << chunk_counts[ci] << ',' << methods[mi].name << ',' << ratios[ri] << ',' << a.compute / double(a.n) << ',' << k << ','
                 << closed << ',' << a.top1 / double(a.n) << ',' << a.until / double(a.n) << '\n';
      }
  }
  std::printf("\nKL gap closed over all prompts (1 - sum KL(method) / sum KL(naive)), in brackets the share of the placed"
              " tokens' (token, layer) K/V recomputed:\n| method |");
  for (double r : ratios) std::printf(" r = %.0f%% |", 100 * r);
  std::printf("\n|---|");
  for (std::size_t ri = 0; ri < R; ++ri) std::printf("---|");
  std::printf("\n");
  for (std::size_t mi = 0; mi < M; ++mi) {
    std::printf("| %s |", methods[mi].name.c_str());
    for (std::size_t ri = 0; ri < R; ++ri)
      std::printf(" %.0f%% (%.0f%%) |", 100 * (1 - pooled[mi * R + ri] / pooled_naive), 100 * pooled_compute[mi * R + ri]);
    std::printf("\n");
    if (o) for (std::size_t ri = 0; ri < R; ++ri) o << "all," << methods[mi].name << ',' << ratios[ri] << ',' << pooled_compute[mi * R + ri] << ',' << pooled[mi * R + ri] / double(trials * chunk_counts.size()) << ',' << 1 - pooled[mi * R + ri] / pooled_naive << ",,\n";
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "kvtier-blend-quality: %s\n", e.what());
  return 1;
}
