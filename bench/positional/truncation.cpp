// kvtier-truncation: a conversation that outgrows the model's window (CachedAttention's truncation)
// on stories260K, the engine's CPU backend. Each turn appends a user line and a greedy reply; once
// the next turn would not fit, the oldest whole pages after the head (the pages holding the system
// prompt) are dropped and the kept pages move forward. With positional-encoding decoupling kvtier
// moves each kept page to its new slot with RoPE applied for its new position
// (transfer::cpu::load_rotated, the pages passing through a page-first host buffer as they would
// through the host tier), so only the new user line is computed. Without decoupling the truncated
// prompt no longer shares a prefix with the cache and is recomputed whole.
//
// Each turn's reply is also generated from a full recompute of the same truncated prompt (positions
// 0..n, exact arithmetic), and the two replies are compared token by token.
//
//   kvtier-truncation [--model DIR] [--turns N] [--reply T] [--csv FILE] [--show] [--check]
// --check: exit 1 unless the conversation was truncated and decoupling recomputed at most 25% of
// each truncated turn's prompt (the target), for ctest.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "common/cpu_model_run.hpp"
#include "kvtier/transfer.hpp"
#include "kvtier/transfer/rope.hpp"
#include "kvtier_engine/cpu/cpu_backend.hpp"
#include "kvtier_engine/model_files.hpp"
#include "kvtier_engine/sampler.hpp"
#include "kvtier_engine/tokenizer.hpp"
#include "kvtier_engine/weights.hpp"

using namespace kvtier;
using namespace kvtier_engine;
using kvtier_bench::cpu_model_run;

namespace {

constexpr std::size_t P = cpu_model_run::page_tokens;

const char* const lines[] = {
    "Lily said, \"Can we go to the park?\"", "Tom asked, \"Where is the red ball?\"", "Mom said, \"Be careful.\"",
    "The dog barked at the cat.", "Ben wanted to help his friend.", "Sue said, \"I am sorry.\"",
    "They went home to eat.", "The sun was warm and bright.", "Max found a big box.", "Anna smiled at her mom.",
};

}  // namespace

int main(int argc, char** argv) try {
  std::string dir = std::string(KVTIER_ENGINE_MODELS_DIR) + "/stories260K", csv;
  std::size_t turns = 20, reply_tokens = 48;
  bool show = false, check = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--show") { show = true; continue; }
    if (a == "--check") { check = true; continue; }
    if (i + 1 >= argc) { std::fprintf(stderr, "kvtier-truncation: %s needs a value\n", a.c_str()); return 2; }
    const char* v = argv[++i];
    const auto count = [&] {
      char* end = nullptr;
      const unsigned long long n = std::strtoull(v, &end, 10);
      if (!*v || *end || n == 0 || v[0] == '-') { std::fprintf(stderr, "kvtier-truncation: %s needs a positive whole number\n", a.c_str()); std::exit(2); }
      return std::size_t(n);
    };
    if (a == "--model") dir = v;
    else if (a == "--turns") turns = count();
    else if (a == "--reply") reply_tokens = count();
    else if (a == "--csv") csv = v;
    else { std::fprintf(stderr, "kvtier-truncation: unknown option %s\n", a.c_str()); return 2; }
  }
  const model_files f = model_files::in(dir);
  const model_weights w = model_weights::load_llama2c(f.checkpoint.string(), f.name);
  const model_config& cfg = w.config();
  const tokenizer tok(f.tokenizer.string(), cfg.vocab);
  const std::size_t window = cfg.seq_len, slots = window / P + 1;
  if (reply_tokens + 64 > window / 2) { std::fprintf(stderr, "kvtier-truncation: --reply too long for a %zu-token window\n", window); return 2; }
  const transfer::rope_spec rope{cfg.rope == rope_style::adjacent_pairs ? transfer::rope_convention::adjacent_pairs
                                                                        : transfer::rope_convention::rotate_half,
                                 cfg.rope_theta, cfg.head_size, 0};
  const kv_shape shape = cfg.kv_shape(dtype::fp32);

  cpu_model_run reuse(w, slots), full(w, slots);
  std::vector<token_id> ctx = tok.encode("Once upon a time, there was a little girl named Lily. She had a dog.", true);
  const std::size_t head_pages = (ctx.size() + P - 1) / P;  // pages holding the system prompt stay put
  std::vector<float> logits = reuse.prefill(ctx, 0);
  std::vector<std::byte> host(shape.bytes_per_page(P) * slots);  // the kept pages pass through here
  const auto host_view = transfer::paged_view(host.data(), shape, slots, page_size<>(P));

  struct turn_row {
    std::size_t turn, prompt_tokens, dropped_tokens, recomputed_decoupled, recomputed_without, same_prefix;
    bool identical;
  };
  std::vector<turn_row> rows;
  std::size_t truncations = 0;
  for (std::size_t turn = 0; turn < turns; ++turn) {
    std::vector<token_id> line = tok.encode(std::string("\n") + lines[turn % std::size(lines)], false);
    std::size_t dropped = 0;
    if (ctx.size() + line.size() + reply_tokens > window) {  // truncate: drop the oldest whole pages after the head
      const std::size_t need = ctx.size() + line.size() + reply_tokens - window;
      const std::size_t k = (need + P - 1) / P, pages = (ctx.size() + P - 1) / P;
      if (head_pages + k >= pages) throw std::runtime_error("the window cannot hold the head and one turn");
      std::vector<transfer::page_pair> out, in;
      std::vector<long> delta;
      for (std::size_t p = head_pages + k; p < pages; ++p) {
        out.push_back({std::uint32_t(p), std::uint32_t(p)});
        in.push_back({std::uint32_t(p), std::uint32_t(p - k)});
        delta.push_back(-long(k * P));
      }
      if (!transfer::cpu::backup(reuse.pool(), host_view, out)) throw std::runtime_error("backup failed");
      if (!transfer::cpu::load_rotated(host_view, reuse.pool(), in, delta, rope, dtype::fp32)) throw std::runtime_error("load_rotated failed");
      ctx.erase(ctx.begin() + std::ptrdiff_t(head_pages * P), ctx.begin() + std::ptrdiff_t((head_pages + k) * P));
      dropped = k * P;
      ++truncations;
    }
    const std::size_t prompt = ctx.size() + line.size();
    // Decoupled reuse: only the new line is computed, over the moved pages.
    logits = reuse.prefill(line, ctx.size());
    ctx.insert(ctx.end(), line.begin(), line.end());
    const std::vector<token_id> got = reuse.greedy(logits, ctx.size(), reply_tokens);
    // Reference: the same truncated prompt computed from scratch.
    const std::vector<token_id> want = full.greedy(full.prefill(ctx, 0), ctx.size(), reply_tokens);
    std::size_t same = 0;
    while (same < got.size() && got[same] == want[same]) ++same;
    // Without decoupling, a truncated prompt shares only the head pages with what is cached.
    rows.push_back({turn + 1, prompt, dropped, line.size(), dropped ? prompt - head_pages * P : line.size(), same, same == got.size()});
    if (show) std::printf("--- turn %zu%s\n%s|%s\n", turn + 1, dropped ? " (truncated)" : "", tok.decode(line, ctx[ctx.size() - line.size() - 1]).c_str(),
                          tok.decode(got, ctx.back()).c_str());
    // The reply's KV is written by the decode steps; its last token is fed so the next turn starts after it.
    (void)reuse.step(got.back(), ctx.size() + got.size() - 1);
    ctx.insert(ctx.end(), got.begin(), got.end());
  }

  std::printf("stories260K, %zu-token window, %zu turns of a user line + a %zu-token greedy reply; %zu truncations\n", window, turns,
              reply_tokens, truncations);
  std::printf("| turn | prompt tokens | dropped | recomputed (decoupled) | recomputed (without decoupling) | reply tokens equal to full recompute |\n|---|---|---|---|---|---|\n");
  double share_d = 0, share_w = 0;
  std::size_t after = 0, identical = 0;
  for (const auto& r : rows) {
    std::printf("| %zu | %zu | %zu | %zu (%.1f%%) | %zu (%.1f%%) | %zu / %zu%s |\n", r.turn, r.prompt_tokens, r.dropped_tokens, r.recomputed_decoupled,
                100.0 * double(r.recomputed_decoupled) / double(r.prompt_tokens), r.recomputed_without,
                100.0 * double(r.recomputed_without) / double(r.prompt_tokens), r.same_prefix, reply_tokens, r.identical ? " (identical)" : "");
    if (r.dropped_tokens > 0) {
      share_d += double(r.recomputed_decoupled) / double(r.prompt_tokens);
      share_w += double(r.recomputed_without) / double(r.prompt_tokens);
      ++after;
      identical += r.identical;
    }
  }
  if (after)
    std::printf("truncated turns: %zu; recomputed per turn (mean): %.1f%% decoupled vs %.1f%% without; replies identical to a full recompute: %zu of %zu\n",
                after, 100 * share_d / double(after), 100 * share_w / double(after), identical, after);
  if (!csv.empty()) {
    std::ofstream o(csv);
    o << "turn,prompt_tokens,dropped_tokens,recomputed_decoupled,recomputed_without,reply_equal_prefix,reply_tokens,identical\n";
    for (const auto& r : rows)
      o << r.turn << ',' << r.prompt_tokens << ',' << r.dropped_tokens << ',' << r.recomputed_decoupled << ',' << r.recomputed_without << ','
        << r.same_prefix << ',' << reply_tokens << ',' << r.identical << '\n';
  }
  if (check && (after == 0 || share_d / double(after) > 0.25)) {
    std::fprintf(stderr, "kvtier-truncation: check failed (%zu truncated turns, %.1f%% recomputed)\n", after,
                 after ? 100 * share_d / double(after) : 0.0);
    return 1;
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "kvtier-truncation: %s\n", e.what());
  return 1;
}
