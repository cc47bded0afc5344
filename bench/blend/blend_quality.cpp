// kvtier-blend-quality: CacheBlend's selective recompute on stories260K (the engine's CPU backend).
// A prompt is 2-6 stories (each a chunk: BOS + text, computed on its own at positions 0.., as a
// chunk store would hold it) followed by a cue. Three ways to get the prompt's KV:
//   full      prefill of the whole prompt (the reference)
//   naive     each chunk's own KV placed at its offset (RoPE on load: transfer::cpu::load_rotated),
//             only the cue computed
//   blend r   the same placement; layers [0, select_layer] recomputed for every token, the tokens
//             whose KV deviates most on select_layer (blend::select_deviating) — a share r of the
//             chunk tokens — recomputed on every layer, attending over the blended KV
// Quality against full prefill: KL divergence of the next-token distribution after the cue, and a
// greedy continuation (tokens until the first difference). A hint only: stories260K is tiny.
//
//   kvtier-blend-quality [--model DIR] [--trials N] [--chunk-tokens T] [--continuation T] [--csv FILE]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "common/cpu_model_run.hpp"
#include "kvtier/blend/select.hpp"
#include "kvtier/transfer.hpp"
#include "kvtier/transfer/rope.hpp"
#include "kvtier_engine/model_files.hpp"
#include "kvtier_engine/tokenizer.hpp"

using namespace kvtier;
using namespace kvtier_engine;
using kvtier_bench::cpu_model_run;

namespace {

constexpr std::size_t P = cpu_model_run::page_tokens;
constexpr std::size_t select_layer = 1;  // layer 0's KV does not depend on context: deviation shows from layer 1

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

// Copies layers [0, last] of positions [0, n) from one identity-table pool to another.
void copy_layers(const transfer::layer_first_buffer& from, const transfer::layer_first_buffer& to, std::size_t last, std::size_t n,
                 std::size_t row_bytes) {
  for (std::size_t l = 0; l <= last; ++l)
    for (std::size_t k = 0; k < 2; ++k)
      for (std::size_t pos = 0; pos < n; ++pos) std::memcpy(to.row(l, k, pos, 0), from.row(l, k, pos, 0), row_bytes);
}

}  // namespace

int main(int argc, char** argv) try {
  std::string dir = std::string(KVTIER_ENGINE_MODELS_DIR) + "/stories260K", csv;
  std::size_t trials = 6, chunk_tokens = 64, continuation = 32;
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
    else if (a == "--chunk-tokens") chunk_tokens = count();
    else if (a == "--continuation") continuation = count();
    else if (a == "--csv") csv = v;
    else { std::fprintf(stderr, "kvtier-blend-quality: unknown option %s\n", a.c_str()); return 2; }
  }
  if (chunk_tokens % P != 0) { std::fprintf(stderr, "kvtier-blend-quality: --chunk-tokens must be a multiple of %zu\n", P); return 2; }
  const model_files f = model_files::in(dir);
  const model_weights w = model_weights::load_llama2c(f.checkpoint.string(), f.name);
  const model_config& cfg = w.config();
  const tokenizer tok(f.tokenizer.string(), cfg.vocab);
  const std::vector<std::size_t> chunk_counts{2, 3, 4, 6};
  const std::vector<double> ratios{0.05, 0.10, 0.15, 0.20, 0.30};
  const std::vector<token_id> cue = tok.encode("\nOne day, the", false);
  if (6 * chunk_tokens + cue.size() + continuation > cfg.seq_len) { std::fprintf(stderr, "kvtier-blend-quality: prompts would exceed the window\n"); return 2; }
  const std::size_t slots = cfg.seq_len / P + 1;
  cpu_model_run full(w, slots), scratch(w, slots), blend(w, slots);
  const kv_shape shape = full.shape();
  const std::size_t row_bytes = cfg.kv_heads * cfg.head_size * sizeof(float);
  const transfer::rope_spec rope{cfg.rope == rope_style::adjacent_pairs ? transfer::rope_convention::adjacent_pairs
                                                                        : transfer::rope_convention::rotate_half,
                                 cfg.rope_theta, cfg.head_size, 0};
  std::vector<std::byte> host(shape.bytes_per_page(P) * slots);  // chunk pages, page first, as a host tier holds them
  const auto host_view = transfer::paged_view(host.data(), shape, slots, page_size<>(P));

  // A pool of stories sampled from the model, each BOS + chunk_tokens - 1 tokens.
  std::vector<std::vector<token_id>> stories;
  for (std::size_t i = 0; i < 24; ++i) {
    sampler smp(sampling{1.0f, 0.95f, 500 + i});
    std::vector<token_id> t{bos_token};
    auto logits = scratch.prefill(t, 0);
    while (t.size() < chunk_tokens) {
      t.push_back(smp.next(logits));
      logits = scratch.step(t.back(), t.size() - 1);
    }
    stories.push_back(std::move(t));
  }

  struct acc {
    double kl = 0, until = 0, top1 = 0;
    std::size_t n = 0;
  };
  std::vector<acc> naive(chunk_counts.size()), blended(chunk_counts.size() * ratios.size());
  for (std::size_t ci = 0; ci < chunk_counts.size(); ++ci)
    for (std::size_t trial = 0; trial < trials; ++trial) {
      const std::size_t n = chunk_counts[ci];
      std::vector<token_id> prompt;
      std::vector<std::size_t> pick;
      for (std::size_t c = 0; c < n; ++c) {
        pick.push_back((trial * 7 + c * 5 + ci) % stories.size());
        prompt.insert(prompt.end(), stories[pick.back()].begin(), stories[pick.back()].end());
      }
      const std::size_t S = prompt.size();
      prompt.insert(prompt.end(), cue.begin(), cue.end());
      std::fprintf(stderr, "\r%zu chunks, trial %zu/%zu   ", n, trial + 1, trials);
      // Full prefill.
      const auto ref_logits = full.prefill(prompt, 0);
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
        const auto logits = blend.prefill(std::span<const token_id>(prompt).subspan(S), S);
        const auto cont = blend.greedy(logits, prompt.size(), continuation);
        naive[ci].kl += kl(ref_logits, logits);
        naive[ci].until += double(same_prefix(cont, ref_cont));
        naive[ci].top1 += sampler::argmax(logits) == ref_top;
        ++naive[ci].n;
      }
      for (std::size_t ri = 0; ri < ratios.size(); ++ri) {
        place();
        const blend::sequence_kv fresh{full.pool(), full.block_table(), P}, loaded{blend.pool(), blend.block_table(), P};
        auto sel = blend::select_deviating(fresh, loaded, select_layer, 0, S, ratios[ri], dtype::fp32);
        if (!sel) throw std::runtime_error("selection failed");
        copy_layers(full.pool(), blend.pool(), select_layer, S, row_bytes);  // layers [0, select_layer]: fresh
        std::vector<token_id> toks;
        std::vector<std::size_t> pos;
        for (std::size_t p : *sel) {
          toks.push_back(prompt[p]);
          pos.push_back(p);
        }
        for (std::size_t p = S; p < prompt.size(); ++p) {
          toks.push_back(prompt[p]);
          pos.push_back(p);
        }
        const auto all = blend.rows(toks, pos);
        const std::vector<float> logits(all.end() - std::ptrdiff_t(cfg.vocab), all.end());
        const auto cont = blend.greedy(logits, prompt.size(), continuation);
        acc& a = blended[ci * ratios.size() + ri];
        a.kl += kl(ref_logits, logits);
        a.until += double(same_prefix(cont, ref_cont));
        a.top1 += sampler::argmax(logits) == ref_top;
        ++a.n;
      }
    }
  std::fprintf(stderr, "\n");
  std::printf("stories260K: prompts of 2-6 chunks of %zu tokens (stories sampled from the model) + a %zu-token cue, %zu trials each;"
              " selection on layer %zu; %zu-token greedy continuations\n",
              chunk_tokens, cue.size(), trials, select_layer, continuation);
  std::printf("| chunks | method | recomputed share of chunk tokens | KL(full ‖ method) | KL gap closed | next token = full | greedy tokens equal to full (mean) |\n|---|---|---|---|---|---|---|\n");
  std::ofstream o;
  if (!csv.empty()) {
    o.open(csv);
    o << "chunks,method,ratio,kl,gap_closed,top1_agreement,greedy_equal_tokens\n";
  }
  for (std::size_t ci = 0; ci < chunk_counts.size(); ++ci) {
    const acc& nv = naive[ci];
    const double kl_naive = nv.kl / double(nv.n);
    std::printf("| %zu | naive concatenation | 0%% | %.4f | 0%% | %.0f%% | %.1f |\n", chunk_counts[ci], kl_naive, 100 * nv.top1 / double(nv.n),
                nv.until / double(nv.n));
    if (o) o << chunk_counts[ci] << ",naive,0," << kl_naive << ",0," << nv.top1 / double(nv.n) << ',' << nv.until / double(nv.n) << '\n';
    for (std::size_t ri = 0; ri < ratios.size(); ++ri) {
      const acc& a = blended[ci * ratios.size() + ri];
      const double k = a.kl / double(a.n), closed = kl_naive > 0 ? 1 - k / kl_naive : 1;
      std::printf("| %zu | blend | %.0f%% | %.4f | %.0f%% | %.0f%% | %.1f |\n", chunk_counts[ci], 100 * ratios[ri], k, 100 * closed,
                  100 * a.top1 / double(a.n), a.until / double(a.n));
      if (o) o << chunk_counts[ci] << ",blend," << ratios[ri] << ',' << k << ',' << closed << ',' << a.top1 / double(a.n) << ','
               << a.until / double(a.n) << '\n';
    }
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "kvtier-blend-quality: %s\n", e.what());
  return 1;
}
