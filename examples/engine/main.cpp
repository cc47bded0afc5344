// kvtier-engine: a Llama inference engine on kvtier's hierarchical cache (CPU reference backend).
//
//   kvtier-engine --model DIR [--prompt TEXT] [--temperature T] [--topp P] [--seed N] [--steps N]
//       Generates like llama2.c's `run DIR/<model>.bin -z DIR/tok*.bin -t T -p P -s N -n N -i TEXT`:
//       the prompt is encoded with BOS first, steps counts prompt and generated tokens together, and
//       the text printed is the prompt followed by the continuation, token for token the same.
//   kvtier-engine chat [--model DIR | --shape NAME --seed N] [options]   (see chat.hpp)
//       A multi-turn chat through device, host, file tier and Redis: per-turn TTFT with and without
//       reuse, hits per tier, and the check that reuse changed no token.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "chat.hpp"
#include "kvtier_engine/cpu/cpu_backend.hpp"
#include "kvtier_engine/engine.hpp"
#include "kvtier_engine/model_files.hpp"

using namespace kvtier_engine;

namespace {

struct run_options {
  std::string model_dir = KVTIER_ENGINE_MODELS_DIR "/stories260K";
  std::string prompt;
  float temperature = 1.0f;  // run.c's defaults
  float topp = 0.9f;
  std::uint64_t seed = 0;    // 0: the time, as run.c does
  std::size_t steps = 256;
  std::size_t threads = 0;
};

[[noreturn]] void usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s --model DIR [--prompt TEXT] [--temperature T] [--topp P] [--seed N] [--steps N] [--threads N]\n"
               "       %s chat [--model DIR | --shape NAME] [options]   (%s chat --help)\n",
               argv0, argv0, argv0);
  std::exit(2);
}

int run(int argc, char** argv) {
  run_options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(argv[0]);
      return argv[++i];
    };
    if (a == "--model") o.model_dir = value();
    else if (a == "--prompt" || a == "-i") o.prompt = value();
    else if (a == "--temperature" || a == "-t") o.temperature = std::stof(value());
    else if (a == "--topp" || a == "-p") o.topp = std::stof(value());
    else if (a == "--seed" || a == "-s") o.seed = std::stoull(value());
    else if (a == "--steps" || a == "-n") o.steps = std::stoull(value());
    else if (a == "--threads") o.threads = std::stoull(value());
    else usage(argv[0]);
  }
  if (o.seed == 0) o.seed = std::uint64_t(std::time(nullptr));
  const model_files files = model_files::in(o.model_dir);
  const model_weights w = model_weights::load_llama2c(files.checkpoint.string(), files.name);
  const model_config& m = w.config();
  const tokenizer tok(files.tokenizer.string(), m.vocab);
  if (o.steps == 0 || o.steps > m.seq_len) o.steps = m.seq_len;

  const std::vector<kvtier::token_id> prompt = tok.encode(o.prompt, true, false);
  if (prompt.size() > o.steps) {
    std::fprintf(stderr, "kvtier-engine: the prompt has %zu tokens, more than --steps %zu\n", prompt.size(), o.steps);
    return 1;
  }
  // One request: a cache with room for the whole sequence on the device, no slow tier.
  using cache_type = kvtier::cache_builder<kvtier::page_size<16>>::cache_type;
  using engine_type = engine<cpu_backend, cache_type>;
  const std::size_t pages = (m.seq_len + 15) / 16 + 1;
  engine_type eng(w, engine_type::cache_config(w, precision::fp32, pages, pages), backend_options{precision::fp32, o.threads}, 256);
  generate_options g;
  g.max_new_tokens = o.steps - prompt.size() + 1;
  g.sample = sampling{o.temperature, o.topp, o.seed};
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = eng.generate(kvtier::namespace_id{1}, prompt, g);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!r) {
    std::fprintf(stderr, "kvtier-engine: generation failed: %s\n", std::string(kvtier::to_string(r.code())).c_str());
    return 1;
  }
  std::vector<kvtier::token_id> all(prompt.begin() + 1, prompt.end());  // printed as run.c prints them
  for (const auto t : r->tokens)
    if (t != bos_token) all.push_back(t);
  std::printf("%s\n", tok.decode(all, bos_token).c_str());
  std::fflush(stdout);
  std::fprintf(stderr, "achieved tok/s: %.1f (%zu positions, TTFT %.2f ms, %s, %zu threads)\n",
               double(prompt.size() + r->tokens.size() - 1) / s, prompt.size() + r->tokens.size() - 1, r->ttft_s * 1e3,
               std::string(eng.backend().name()).c_str(), eng.backend().threads());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc > 1 && std::string(argv[1]) == "chat") return chat_main(argc - 1, argv + 1);
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvtier-engine: %s\n", e.what());
    return 2;
  }
}
