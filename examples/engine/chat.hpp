#pragma once
// kvtier-engine chat: multi-turn chats through kvtier's whole hierarchy, each turn run twice — with
// reuse (lookup → load → prefill of the new suffix) and without (everything recomputed) — printing
// the reply, both TTFTs, where the reused prefix came from, and whether reuse changed any token.
//
//  Part 1, stories260K (real weights, text): one conversation; before each turn, other users'
//  traffic pushes its history down one more tier, so turn 2 finds it on the device, turn 3 in host
//  memory, turn 4 on the file tier, turn 5 on Redis (the file tier having evicted it).
//  Part 2, a synthetic shape (default cpu-100m, ~100 M parameters): several sessions sharing a system
//  prompt, interleaved, on a device pool too small for all of them: TTFT with and without reuse.
//
//   kvtier-engine chat [--model DIR] [--shape NAME] [--seed N] [--sessions N] [--turns N]
//                      [--reply N] [--redis HOST:PORT | --no-redis] [--dir PATH] [--threads N]
//                      [--skip-synthetic]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kvtier/cache.hpp"
#include "kvtier_engine/conversation.hpp"
#include "kvtier_engine/cpu/cpu_backend.hpp"
#include "kvtier_engine/engine.hpp"
#include "kvtier_engine/model_files.hpp"
#ifdef KVTIER_ENGINE_FILE
#  include "kvtier/storage/file_tier.hpp"
#endif
#ifdef KVTIER_ENGINE_REDIS
#  include "kvtier/storage/redis_tier.hpp"
#endif

namespace kvtier_engine::chat {

struct options {
  std::string model_dir = KVTIER_ENGINE_MODELS_DIR "/stories260K";
  std::string shape = "cpu-100m";
  std::uint64_t seed = 1;
  std::size_t sessions = 3, turns = 3, reply = 8;
  std::string redis_host;
  int redis_port = 0;
  std::filesystem::path dir;
  std::size_t threads = 0;
  bool synthetic = true;
};

inline bool reachable(const std::string& host, int port) {
  if (host.empty()) return false;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(std::uint16_t(port));
  const bool ok = ::inet_pton(AF_INET, host.c_str(), &a.sin_addr) == 1 && ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

// A progress bar on stderr for the long part (only when stderr is a terminal or KVTIER_PROGRESS=1).
class progress {
 public:
  progress(std::string what, std::size_t total)
      : what_(std::move(what)), total_(total), on_(::isatty(2) || std::getenv("KVTIER_PROGRESS")), t0_(clock::now()) {
    step(0);
  }
  void step(std::size_t done) {
    if (!on_) return;
    const std::size_t w = 30, fill = total_ ? w * done / total_ : w;
    std::fprintf(stderr, "\r  %s [%s%s] %zu/%zu  %.0f s ", what_.c_str(), std::string(fill, '#').c_str(),
                 std::string(w - fill, '.').c_str(), done, total_, std::chrono::duration<double>(clock::now() - t0_).count());
    if (done == total_) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

 private:
  using clock = std::chrono::steady_clock;
  std::string what_;
  std::size_t total_;
  bool on_;
  clock::time_point t0_;
};

inline const char* tier_name(int t) {
  static const char* names[] = {"(computed)", "device", "host", "file tier", "Redis"};
  return names[t];
}

// The slow tiers' reads are waited for (prefetch_wait, and settle_slow_reads for a file-tier miss
// retried on Redis, which load() does not wait for), so each tier visibly serves its turn.
// Part 1: one stories260K conversation, its history served by device, host, file tier, Redis in turn.
template <class Engine>
int stories_chat(Engine& e, const tokenizer& tok, const options& o, bool have_file, bool have_redis, std::size_t device_pages,
                 std::size_t host_pages, std::size_t disk_pages) {
  const std::vector<std::string> user = {
      "Once upon a time, there was a little dog named Max.",
      " Max wanted to find his red ball.",
      " Then Max met a big cat.",
      " The cat said, \"Let's play together!\"",
      " At night, Max was very tired.",
  };
  // Where the history should come from at each turn, and the traffic that puts it there.
  std::vector<int> target = {0, 1, 2};
  if (have_file) target.push_back(3);
  if (have_redis) target.push_back(4);
  const std::size_t turns = std::min(user.size(), target.size());
  conversation conv{kvtier::namespace_id{1}, {}};
  std::size_t differing = 0;
  std::printf("\n== stories260K: one conversation; before each turn other users' traffic pushes its history one tier down\n");
  std::printf("   capacities: device %zu pages, host %zu pages%s%s (16-token pages)\n", device_pages, host_pages,
              have_file ? (", file tier " + std::to_string(disk_pages) + " pages").c_str() : "", have_redis ? ", Redis" : "");
  std::vector<std::string> replies, rows;
  progress bar("stories260K chat", turns);
  for (std::size_t k = 0; k < turns; ++k) {
    // Push the history below the tiers above the target: each push is more traffic than those tiers hold.
    const std::size_t push = target[k] <= 1 ? 0
                           : target[k] == 2 ? device_pages + 8
                           : target[k] == 3 ? device_pages + host_pages + 8
                                            : device_pages + host_pages + disk_pages + 16;
    if (push) {
      if (auto r = other_traffic(e, kvtier::namespace_id{2}, push, 496, 100 + k); !r) return 1;
    }
    const auto prompt = conv.ask(tok.encode(user[k], false, false));
    const std::vector<kvtier::token_id> p(prompt.begin(), prompt.end());
    generate_options g;
    g.max_new_tokens = o.reply * 4;
    g.settle_slow_reads = true;
    served_from from;
    const auto on = generate_traced(e, conv.ns, p, g, from);
    g.caching = false;
    const auto off = e.generate(conv.ns, p, g);
    if (!on || !off) {
      std::fprintf(stderr, "generation failed\n");
      return 1;
    }
    const bool same = on->tokens == off->tokens;
    differing += !same;
    const std::uint64_t parts[] = {from.device, from.host, from.disk, from.remote};
    int where = 0;
    for (int t = 0; t < 4; ++t)
      if (parts[t] > 0 && (where == 0 || parts[t] > parts[where - 1])) where = t + 1;
    char row[160];
    std::snprintf(row, sizeof row, "%-5zu %-11s %7zu %7zu %7.2fms %7.2fms %8.1fx  %s", k + 1, tier_name(where), p.size(),
                  on->reused_tokens, off->ttft_s * 1e3, on->ttft_s * 1e3, off->ttft_s / on->ttft_s, same ? "yes" : "NO");
    rows.push_back(row);
    bar.step(k + 1);
    conv.answer(on->tokens);
    std::string reply = tok.decode(on->tokens, p.back());
    for (char& c : reply) c = c == '\n' ? ' ' : c;
    replies.push_back(user[k] + "  >>" + reply);
  }
  std::printf("\n%-5s %-11s %7s %7s %9s %9s %9s  %s\n", "turn", "history in", "prompt", "reused", "TTFT off", "TTFT on",
              "speed-up", "same tokens");
  for (const auto& r : rows) std::printf("%s\n", r.c_str());
  std::printf("\nThe conversation (user text, then >> the model's reply):\n");
  for (const auto& r : replies) std::printf("  %s\n", r.c_str());
  const auto& st = e.cache().stats();
  std::printf("\nhits by tier (tokens found at lookup, all traffic): device %llu, host %llu, file tier %llu, Redis %llu\n",
              (unsigned long long)st.hit_tokens[0], (unsigned long long)st.hit_tokens[1], (unsigned long long)st.hit_tokens[2],
              (unsigned long long)st.hit_tokens[3]);
  std::printf("pages fetched: file tier %llu, Redis %llu (file misses retried on Redis: %llu)\n",
              (unsigned long long)st.pages_fetched[2], (unsigned long long)st.pages_fetched[3], (unsigned long long)st.prefetch_retried);
  std::printf("reuse changed %s token (greedy, %zu turns compared with recomputation)\n", differing ? "SOME" : "no", turns);
  return differing ? 3 : 0;
}

// Part 2: sessions sharing a system prompt, on a synthetic shape; device pool for about one session.
template <class Engine>
int synthetic_chat(Engine& e, const options& o) {
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<std::int32_t> pick(3, std::int32_t(e.config().vocab) - 1);
  auto tokens = [&](std::size_t n) {
    std::vector<kvtier::token_id> t(n);
    for (auto& v : t) v = kvtier::token_id{pick(rng)};
    return t;
  };
  const auto system = tokens(192);
  std::vector<conversation> conv(o.sessions);
  for (std::size_t s = 0; s < o.sessions; ++s) {
    conv[s].ns = kvtier::namespace_id{1};
    conv[s].ask(system);
  }
  double off_total = 0, on_total = 0;
  std::size_t differing = 0, runs = 0, reused = 0, prompt_total = 0;
  progress bar(e.config().name + " chat", o.sessions * o.turns);
  std::vector<std::string> rows;
  for (std::size_t k = 0; k < o.turns; ++k)
    for (std::size_t s = 0; s < o.sessions; ++s) {
      const auto prompt = conv[s].ask(tokens(24 + 8 * ((s + k) % 3)));
      const std::vector<kvtier::token_id> p(prompt.begin(), prompt.end());
      generate_options g;
      g.max_new_tokens = o.reply;
      g.stop_at_bos = false;
      served_from from;
      const auto on = generate_traced(e, conv[s].ns, p, g, from);
      g.caching = false;
      const auto off = e.generate(conv[s].ns, p, g);
      if (!on || !off) return 1;
      differing += on->tokens != off->tokens;
      off_total += off->ttft_s;
      on_total += on->ttft_s;
      reused += on->reused_tokens;
      prompt_total += p.size();
      char row[160];
      std::snprintf(row, sizeof row, "%-8zu %-5zu %7zu %7zu %-8s %8.2fs %8.2fs %7.1fx  %s", s + 1, k + 1, p.size(), on->reused_tokens,
                    from.device >= from.host ? (from.device ? "device" : "-") : "host", off->ttft_s, on->ttft_s,
                    off->ttft_s / on->ttft_s, on->tokens == off->tokens ? "yes" : "NO");
      rows.push_back(row);
      conv[s].answer(on->tokens);
      bar.step(++runs);
    }
  std::printf("%-8s %-5s %7s %7s %-8s %9s %9s %8s  %s\n", "session", "turn", "prompt", "reused", "from", "TTFT off", "TTFT on",
              "speed-up", "same tokens");
  for (const auto& r : rows) std::printf("%s\n", r.c_str());
  std::printf("total TTFT: %.2f s recomputing every prompt, %.2f s with kvtier (%.1fx); %zu of %zu prompt tokens reused\n",
              off_total, on_total, off_total / on_total, reused, prompt_total);
  std::printf("reuse changed %s token (greedy, %zu turns compared with recomputation)\n", differing ? "SOME" : "no", runs);
  return differing ? 3 : 0;
}

template <class Cache, class... Slow>
int run_stories(const options& o, bool have_file, bool have_redis, std::size_t disk_pages, std::unique_ptr<Slow>... slow) {
  using engine_type = engine<cpu_backend, Cache>;
  const model_files files = model_files::in(o.model_dir);
  const model_weights w = model_weights::load_llama2c(files.checkpoint.string(), files.name);
  const tokenizer tok(files.tokenizer.string(), w.config().vocab);
  const std::size_t device_pages = 64, host_pages = 128;
  engine_type e(w, engine_type::cache_config(w, precision::fp32, device_pages, host_pages), backend_options{precision::fp32, o.threads},
                256, std::move(slow)...);
  return stories_chat(e, tok, o, have_file, have_redis, device_pages, host_pages, disk_pages);
}

inline int run_synthetic(const options& o) {
  using cache_type = kvtier::cache_builder<kvtier::page_size<16>>::cache_type;
  using engine_type = engine<cpu_backend, cache_type>;
  const model_config m = shapes::by_name(o.shape);
  const auto t0 = std::chrono::steady_clock::now();
  const model_weights w = model_weights::synthetic(m, o.seed);
  const double gen_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Device pool: about one session's history (the others are pushed to host and come back from it).
  const std::size_t device_pages = 20, host_pages = 256;
  engine_type e(w, engine_type::cache_config(w, precision::fp32, device_pages, host_pages), backend_options{precision::fp32, o.threads},
                256);
  std::printf("\n== %s (synthetic weights, seed %llu: %.1f M parameters, generated in %.1f s; %zu threads)\n", m.name.c_str(),
              (unsigned long long)o.seed, double(m.parameters()) / 1e6, gen_s, e.backend().threads());
  std::printf("   %zu sessions x %zu turns sharing a 192-token system prompt, interleaved; %zu-token replies;\n"
              "   device pool %zu pages (%.1f MiB), host %zu pages: TTFT with kvtier reuse vs recomputing the prompt\n\n",
              o.sessions, o.turns, o.reply, device_pages,
              double(device_pages * m.kv_shape(kvtier::dtype::fp32).bytes_per_page(16)) / (1 << 20), host_pages);
  return synthetic_chat(e, o);
}

}  // namespace kvtier_engine::chat

inline int chat_main(int argc, char** argv) {
  using namespace kvtier_engine::chat;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // rows appear as they are measured, between progress lines
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw kvtier::config_error("kvtier-engine chat: " + a + " needs a value");
      return argv[++i];
    };
    if (a == "--model") o.model_dir = value();
    else if (a == "--shape") o.shape = value();
    else if (a == "--seed") o.seed = std::stoull(value());
    else if (a == "--sessions") o.sessions = std::stoull(value());
    else if (a == "--turns") o.turns = std::stoull(value());
    else if (a == "--reply") o.reply = std::stoull(value());
    else if (a == "--threads") o.threads = std::stoull(value());
    else if (a == "--dir") o.dir = value();
    else if (a == "--no-redis") o.redis_host.clear();
    else if (a == "--skip-synthetic") o.synthetic = false;
    else if (a == "--redis") {
      const std::string v = value();
      const auto colon = v.rfind(':');
      if (colon == std::string::npos) throw kvtier::config_error("kvtier-engine chat: --redis HOST:PORT");
      o.redis_host = v.substr(0, colon);
      o.redis_port = std::atoi(v.c_str() + colon + 1);
    } else {
      std::fprintf(stderr, "usage: kvtier-engine chat [--model DIR] [--shape NAME] [--seed N] [--sessions N] [--turns N]\n"
                           "                          [--reply N] [--redis HOST:PORT | --no-redis] [--dir PATH] [--threads N]\n"
                           "                          [--skip-synthetic]\n");
      return 2;
    }
  }
  const bool redis = reachable(o.redis_host, o.redis_port);
  if (!o.redis_host.empty() && !redis)
    std::printf("(Redis at %s:%d not reachable: running without it)\n", o.redis_host.c_str(), o.redis_port);
  int rc = 0;
  const std::size_t disk_pages = 256;
  const kvtier::kv_shape shape = kvtier_engine::shapes::stories260k().kv_shape(kvtier::dtype::fp32);
  const std::size_t page_bytes = shape.bytes_per_page(16);
#ifdef KVTIER_ENGINE_FILE
  std::filesystem::path dir = o.dir;
  bool own_dir = false;
  if (dir.empty()) {
    std::string templ = (std::filesystem::temp_directory_path() / "kvtier-engine-XXXXXX").string();
    if (!::mkdtemp(templ.data())) throw kvtier::config_error("kvtier-engine chat: mkdtemp failed");
    dir = templ;
    own_dir = true;
  }
  kvtier::file_tier_config fc{dir, shape, page_bytes, disk_pages, 64, 32, true, false};
#  ifdef KVTIER_ENGINE_REDIS
  if (redis) {
    kvtier::redis_tier_config rcfg{shape, page_bytes};
    rcfg.host = o.redis_host;
    rcfg.port = o.redis_port;
    rcfg.prefix = "kvtier-engine-" + std::to_string(::getpid());
    using cache_type = kvtier::cache_builder<kvtier::page_size<16>, kvtier::device_memory<>, kvtier::host_memory<>,
                                             kvtier::slow_tiers<kvtier::slow_tier<kvtier::file_tier>, kvtier::slow_tier<kvtier::redis_tier>>,
                                             kvtier::auto_choice, kvtier::write_policies<>, kvtier::prefetch_wait>::cache_type;
    rc = run_stories<cache_type>(o, true, true, disk_pages, std::make_unique<kvtier::file_tier<>>(fc),
                                 std::make_unique<kvtier::redis_tier<>>(rcfg));
  } else
#  endif
  {
    using cache_type = kvtier::cache_builder<kvtier::page_size<16>, kvtier::device_memory<>, kvtier::host_memory<>,
                                             kvtier::slow_tiers<kvtier::slow_tier<kvtier::file_tier>>, kvtier::auto_choice,
                                             kvtier::write_policies<>, kvtier::prefetch_wait>::cache_type;
    rc = run_stories<cache_type>(o, true, false, disk_pages, std::make_unique<kvtier::file_tier<>>(fc));
  }
  if (own_dir) std::filesystem::remove_all(dir);
#else
  (void)page_bytes;
  std::printf("(built without liburing: no file tier, and so no Redis turn either)\n");
  rc = run_stories<kvtier::cache_builder<kvtier::page_size<16>>::cache_type>(o, false, false, disk_pages);
#endif
  if (rc == 0 && o.synthetic) rc = run_synthetic(o);
  return rc;
}
