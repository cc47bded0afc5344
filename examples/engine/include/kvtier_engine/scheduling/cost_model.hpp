#pragma once
// The simulator's cost model: what one step of the serving loop costs, read from the JSON that
// kvtier-serve writes (serving/cost_model.hpp: fits and copy timings), or a default H200 model
// built from docs/engine.md's measured figures (llama3-8b shape, bf16, 16-token pages of 2 MiB).
//  - prefill chunk of n new tokens over s cached positions: a + b·n + c·n·(s + n/2) seconds; when
//    the engine batches a step's chunks into one call (cost_model.json's prefill_batched), the
//    call of chunks (n_i, s_i): a + b·Σn_i + c·Σn_i·(s_i + n_i/2);
//  - decode step of B sequences holding C positions in all: a + b·B + c·C seconds;
//  - host → device load and device → host backup: bytes / bandwidth (+ a fixed latency), one link
//    each way; slow tier → host fetch: bytes / the file tier's read bandwidth;
//  - step overhead (host work outside the backend's calls: admission, commits, sampling), when the
//    engine measured it (cost_model.json's step_overhead, or kvtier-simulate --step-overhead):
//    a + b·sequences + c·loaded_pages seconds per step; 0 otherwise (the default model, older files).
// Loads land layer by layer (`layers`): a chunk waits for layer l just before computing it.
#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

#include "kvtier/core/error.hpp"

namespace kvtier_engine::scheduling {

struct cost_model {
  std::size_t page_tokens = 16;
  double page_bytes = 2.0 * 1024 * 1024;
  std::size_t layers = 32;
  double prefill_a = 2.0e-3, prefill_b = 2.32e-5, prefill_c = 1.62e-9;
  double decode_a = 7.15e-3, decode_b = 1.1e-4, decode_c = 4.3e-8;
  double load_bytes_per_s = 50e9;     // pinned host → device through kvtier's copier
  double load_latency_s = 20e-6;
  double backup_bytes_per_s = 50e9;   // device → host
  double fetch_bytes_per_s = 5e9;     // slow tier → host (NVMe-class file tier)
  double fetch_latency_s = 100e-6;
  double step_a = 0, step_b = 0, step_c = 0;  // step overhead; all 0: not measured
  bool batched_prefill = false;  // the engine runs a step's prefill chunks as one call (one a per step)
  bool load_aware = false;       // the engine decodes first and leaves loading chunks for a later step
  std::string source = "default H200 (docs/engine.md)";

  double prefill_s(std::size_t new_tokens, std::size_t cached) const noexcept {
    if (new_tokens == 0) return 0;
    const double n = double(new_tokens);
    return std::max(0.0, prefill_a + prefill_b * n + prefill_c * n * (double(cached) + n / 2));
  }
  // One call of several chunks: new_tokens = Σn_i, pair_tokens = Σn_i (s_i + n_i/2).
  double prefill_call_s(std::size_t new_tokens, double pair_tokens) const noexcept {
    if (new_tokens == 0) return 0;
    return std::max(0.0, prefill_a + prefill_b * double(new_tokens) + prefill_c * pair_tokens);
  }
  double decode_s(std::size_t batch, std::size_t context) const noexcept {
    if (batch == 0) return 0;
    return std::max(0.0, decode_a + decode_b * double(batch) + decode_c * double(context));
  }
  double load_s(std::size_t pages) const noexcept {
    return pages ? load_latency_s + double(pages) * page_bytes / load_bytes_per_s : 0.0;
  }
  double backup_s(std::size_t pages) const noexcept {
    return pages ? double(pages) * page_bytes / backup_bytes_per_s : 0.0;
  }
  // Host seconds of a step that ran `sequences` decodes and prefill chunks and issued `loaded_pages` loads.
  double step_overhead_s(std::size_t sequences, std::size_t loaded_pages) const noexcept {
    if (sequences == 0) return 0;
    return std::max(0.0, step_a + step_b * double(sequences) + step_c * double(loaded_pages));
  }
  double fetch_s(std::size_t pages) const noexcept {
    return pages ? fetch_latency_s + double(pages) * page_bytes / fetch_bytes_per_s : 0.0;
  }
};

// The H200 model (docs/engine.md): prefill 2K / 8K / 32K tokens 50.9 / 244.4 / 1,687.8 ms fit to
// the prefill formula; decode batch 1 and 32 at 1,024 positions 7.31 / 12.09 ms with attention at
// 3 TB/s of 128 KiB per position; loads at kvtier's staged copy rate (3.94 GiB in 83.7 ms with the
// suffix overlapped: ~50 GB/s against the 55.1 GB/s pinned ceiling).
inline cost_model h200_default() { return cost_model{}; }

namespace detail {
// The number after "key": inside the text that follows `within` (the first occurrence of the
// object's key, or the whole text when within is empty). A tiny reader for kvtier-serve's own JSON.
inline bool json_number(std::string_view text, std::string_view within, std::string_view key, double& out) {
  std::size_t from = 0;
  if (!within.empty()) {
    from = text.find("\"" + std::string(within) + "\"");
    if (from == std::string_view::npos) return false;
  }
  const std::size_t k = text.find("\"" + std::string(key) + "\"", from);
  if (k == std::string_view::npos) return false;
  std::size_t i = text.find(':', k);
  if (i == std::string_view::npos) return false;
  ++i;
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  const std::string tail(text.substr(i, 40));
  char* end = nullptr;
  const double v = std::strtod(tail.c_str(), &end);
  if (end == tail.c_str()) return false;
  out = v;
  return true;
}
}  // namespace detail

// Reads kvtier-serve's cost_model.json. The copy rate is the largest copy's (the fits' intercepts
// keep the small-copy latency); a file tier left unmeasured (0) keeps `fallback`'s rate.
// Throws config_error when the file is missing or lacks the fits.
inline cost_model load_cost_model(const std::string& path, std::size_t layers, const cost_model& fallback = h200_default()) {
  std::ifstream in(path);
  if (!in) throw kvtier::config_error("kvtier-simulate: cannot read cost model " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  cost_model m = fallback;
  m.source = path;
  m.layers = layers;
  double v = 0;
  auto need = [&](std::string_view obj, std::string_view key, double& out) {
    if (!detail::json_number(text, obj, key, out))
      throw kvtier::config_error("kvtier-simulate: " + path + " has no " + std::string(obj) + "." + std::string(key));
  };
  need("", "page_tokens", v);
  m.page_tokens = std::size_t(v);
  need("", "page_bytes", m.page_bytes);
  need("prefill", "a", m.prefill_a);
  need("prefill", "b", m.prefill_b);
  need("prefill", "c", m.prefill_c);
  need("decode", "a", m.decode_a);
  need("decode", "b", m.decode_b);
  need("decode", "c", m.decode_c);
  if (m.page_tokens == 0 || !(m.page_bytes > 0)) throw kvtier::config_error("kvtier-simulate: " + path + ": bad page size");
  // The copies: the entry with the most pages sets the rates.
  double best_pages = -1;
  for (std::size_t at = text.find("\"copies\""); at != std::string::npos;) {
    at = text.find("{\"pages\"", at);
    if (at == std::string::npos) break;
    const std::string_view entry(text.data() + at, std::min<std::size_t>(400, text.size() - at));
    double pages = 0, ld = 0, bk = 0;
    if (detail::json_number(entry, "", "pages", pages) && detail::json_number(entry, "", "load_h2d_bytes_per_s", ld) &&
        detail::json_number(entry, "", "backup_d2h_bytes_per_s", bk) && pages > best_pages && ld > 0 && bk > 0) {
      best_pages = pages;
      m.load_bytes_per_s = ld;
      m.backup_bytes_per_s = bk;
    }
    ++at;
  }
  if (detail::json_number(text, "file_tier", "read_bytes_per_s", v) && v > 0) m.fetch_bytes_per_s = v;
  // Written by kvtier-serve since it batches prefill chunks; older files: one call per chunk.
  m.batched_prefill = text.find("\"prefill_batched\": true") != std::string::npos;
  // Written since the server's load-aware steps; older files: prefills first, loading chunks waited for.
  m.load_aware = text.find("\"load_aware_steps\": true") != std::string::npos;
  // Written by kvtier-serve since it measures the step overhead; older files have none (0).
  if (text.find("\"step_overhead\"") != std::string::npos) {
    need("step_overhead", "a", m.step_a);
    need("step_overhead", "b", m.step_b);
    need("step_overhead", "c", m.step_c);
  }
  return m;
}

}  // namespace kvtier_engine::scheduling
