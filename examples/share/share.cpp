// kvtier-share: engines that learn once and share. Separate kvtier-engine processes (CPU backend)
// point their caches at one Redis Cluster (or one Redis): a writer prefills documents and writes
// their KV through; readers, other processes whose caches have never seen them, find the pages by
// remote lookup (kvtier/cache/remote_lookup.hpp), load them and answer a question about each
// document. Each reader measures its TTFT with the shared KV against its own recompute of the same
// prompt (and, for scale, against the same prompt served from its own cache once it holds the
// pages), and checks that its greedy tokens are the recompute's.
//
//   kvtier-share demo  [--masters N] [--replicas N] [--readers N] [common options]
//       starts a Redis Cluster on loopback (kvtier::testing::redis_cluster), runs `write`, then
//       `read` --readers times, each a separate process (fork + exec of this program), and stops it.
//   kvtier-share write --cluster HOST:PORT[,HOST:PORT...] | --redis HOST:PORT  [common options]
//   kvtier-share read  --cluster ... | --redis ...  [common options] [--reader K] [--csv FILE]
// common options: --shape stories260K|cpu-100m (default stories260K; cpu-100m has synthetic weights)
//   --docs N (3) --doc-tokens N (448) --question N (24) --reply N (16) --seed N (1) --threads N (0: all)
//   --probe-pages N (256) --probe-timeout-ms N (500) --prefix P (kvtier-share)
//   --replica-reads (cluster: readers fetch from the masters' replicas, READONLY)
// Exit status: 0 when every reader reused every whole page of each document and its tokens equal
// its recompute's; 3 when tokens differ; 4 when a document was not found; 1 on a failure.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "kvtier/cache.hpp"
#include "kvtier/storage/redis_cluster_tier.hpp"
#include "kvtier/storage/redis_tier.hpp"
#include "kvtier/testing/splitmix64.hpp"
#include "kvtier_engine/cpu/cpu_backend.hpp"
#include "kvtier_engine/engine.hpp"
#include "kvtier_engine/model_files.hpp"
#ifdef KVTIER_REDIS_SERVER
#  include "kvtier/testing/redis_cluster.hpp"
#endif

using namespace kvtier_engine;

namespace {

struct options {
  std::string mode;
  std::vector<kvtier::cluster_node_address> cluster;
  kvtier::cluster_node_address redis;
  std::string shape = "stories260K";
  std::size_t docs = 3, doc_tokens = 448, question = 24, reply = 16, threads = 0;
  std::uint64_t seed = 1;
  std::size_t probe_pages = 256, reader = 1, readers = 2;
  int probe_timeout_ms = 500, masters = 3, replicas = 1;
  std::string prefix = "kvtier-share", csv;
  bool replica_reads = false;
  std::vector<std::string> passed;  // the common options, as given (handed to the child processes)
};

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: kvtier-share demo  [--masters N] [--replicas N] [--readers N] [options]\n"
               "       kvtier-share write --cluster HOST:PORT[,...] | --redis HOST:PORT [options]\n"
               "       kvtier-share read  --cluster HOST:PORT[,...] | --redis HOST:PORT [options] [--reader K] [--csv FILE]\n"
               "options: --shape stories260K|cpu-100m --docs N --doc-tokens N --question N --reply N --seed N\n"
               "         --threads N --probe-pages N --probe-timeout-ms N --prefix P --replica-reads\n");
  std::exit(2);
}

kvtier::cluster_node_address parse_address(const std::string& s) {
  const auto colon = s.rfind(':');
  if (colon == std::string::npos) throw kvtier::config_error("kvtier-share: HOST:PORT expected, got '" + s + "'");
  return {s.substr(0, colon), std::atoi(s.c_str() + colon + 1)};
}

options parse(int argc, char** argv) {
  if (argc < 2) usage();
  options o;
  o.mode = argv[1];
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage();
      return argv[++i];
    };
    auto common = [&](const std::string& v) {
      o.passed.push_back(a);
      o.passed.push_back(v);
      return v;
    };
    if (a == "--cluster") {
      std::string list = value();
      for (std::size_t p = 0; p <= list.size();) {
        const std::size_t comma = std::min(list.find(',', p), list.size());
        o.cluster.push_back(parse_address(list.substr(p, comma - p)));
        p = comma + 1;
      }
    } else if (a == "--redis") o.redis = parse_address(value());
    else if (a == "--shape") o.shape = common(value());
    else if (a == "--docs") o.docs = std::stoull(common(value()));
    else if (a == "--doc-tokens") o.doc_tokens = std::stoull(common(value()));
    else if (a == "--question") o.question = std::stoull(common(value()));
    else if (a == "--reply") o.reply = std::stoull(common(value()));
    else if (a == "--seed") o.seed = std::stoull(common(value()));
    else if (a == "--threads") o.threads = std::stoull(common(value()));
    else if (a == "--probe-pages") o.probe_pages = std::stoull(common(value()));
    else if (a == "--probe-timeout-ms") o.probe_timeout_ms = std::stoi(common(value()));
    else if (a == "--prefix") o.prefix = common(value());
    else if (a == "--replica-reads") o.replica_reads = true, o.passed.push_back(a);
    else if (a == "--reader") o.reader = std::stoull(value());
    else if (a == "--readers") o.readers = std::stoull(value());
    else if (a == "--masters") o.masters = std::stoi(value());
    else if (a == "--replicas") o.replicas = std::stoi(value());
    else if (a == "--csv") o.csv = value();
    else usage();
  }
  if (o.docs == 0 || o.doc_tokens < 32 || o.question == 0 || o.reply == 0 || o.readers == 0)
    throw kvtier::config_error("kvtier-share: --docs, --question, --reply, --readers must be > 0 and --doc-tokens >= 32");
  return o;
}

model_weights load_model(const options& o) {
  if (o.shape == "stories260K") {
    const model_files f = model_files::in(KVTIER_ENGINE_MODELS_DIR "/stories260K");
    return model_weights::load_llama2c(f.checkpoint.string(), f.name);
  }
  return model_weights::synthetic(shapes::by_name(o.shape), 1);
}

// Token ids in [3, vocab) from a seed: the documents and questions every process agrees on.
std::vector<kvtier::token_id> tokens(std::size_t n, std::uint64_t seed, std::size_t vocab) {
  std::vector<kvtier::token_id> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = kvtier::token_id{std::int32_t(3 + kvtier::testing::splitmix64(seed * 1000003 + i) % (vocab - 3))};
  return t;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

template <class Engine>
int write_documents(Engine& e, const options& o, std::size_t slow) {
  const auto& m = e.config();
  generate_options g;
  g.max_new_tokens = 1;  // prefill only: the document's whole pages are committed and written through
  for (std::size_t d = 0; d < o.docs; ++d) {
    const auto doc = tokens(o.doc_tokens, o.seed * 100 + d, m.vocab);
    const auto r = e.generate(kvtier::namespace_id{1}, doc, g);
    if (!r) {
      std::fprintf(stderr, "kvtier-share write: generation failed: %s\n", std::string(kvtier::to_string(r.code())).c_str());
      return 1;
    }
    std::printf("writer (pid %d): document %zu, %zu tokens prefilled in %.1f ms\n", int(::getpid()), d + 1, doc.size(), r->ttft_s * 1e3);
  }
  e.cache().drain();  // every page written through before the process ends
  const auto& s = e.cache().stats();
  const std::size_t want = o.docs * (o.doc_tokens / 16);
  std::printf("writer: %llu pages written to the shared tier (%llu bytes), %llu failed; %zu expected\n",
              (unsigned long long)s.pages_written[slow], (unsigned long long)s.bytes_written[slow],
              (unsigned long long)s.write_failures, want);
  return s.pages_written[slow] >= want && s.write_failures == 0 ? 0 : 1;
}

template <class Engine>
int read_documents(Engine& e, const options& o, std::size_t slow) {
  const auto& m = e.config();
  const kvtier::namespace_id ns{1};
  generate_options g;
  g.max_new_tokens = o.reply;
  g.stop_at_bos = false;
  // Warm-up (threads, the tier's connections and slot map): a prompt no one wrote, both ways.
  const auto warm = tokens(64, o.seed * 100 + 99 + o.reader, m.vocab);
  if (!e.generate(ns, warm, g)) return 1;
  g.caching = false;
  if (!e.generate(ns, warm, g)) return 1;
  std::printf("\nreader %zu (pid %d, %s, %zu threads): a question after each document; TTFT with the shared KV vs "
              "recomputing the prompt\n", o.reader, int(::getpid()), m.name.c_str(), e.backend().threads());
  std::printf("%-4s %7s %7s %12s %12s %9s %12s  %s\n", "doc", "prompt", "reused", "TTFT shared", "TTFT recomp", "speed-up",
              "TTFT local", "same tokens");
  std::vector<double> on_s, off_s, local_s;
  std::size_t differing = 0, missing = 0;
  std::ofstream csv;
  if (!o.csv.empty()) {
    std::error_code ec;
    const bool fresh = std::filesystem::file_size(o.csv, ec) == 0 || ec;
    csv.open(o.csv, std::ios::app);
    if (fresh) csv << "reader,shape,doc,prompt_tokens,reused_tokens,ttft_shared_ms,ttft_recompute_ms,ttft_local_ms,same_tokens\n";
  }
  for (std::size_t d = 0; d < o.docs; ++d) {
    auto prompt = tokens(o.doc_tokens, o.seed * 100 + d, m.vocab);
    const auto q = tokens(o.question, o.seed * 100 + 50 + o.reader * 7 + d, m.vocab);
    prompt.insert(prompt.end(), q.begin(), q.end());
    g.caching = true;
    const auto on = e.generate(ns, prompt, g);
    g.caching = false;
    const auto off = e.generate(ns, prompt, g);
    g.caching = true;  // the same prompt again: now from this engine's own device pool
    const auto local = e.generate(ns, prompt, g);
    if (!on || !off || !local) {
      std::fprintf(stderr, "kvtier-share read: generation failed\n");
      return 1;
    }
    const bool same = on->tokens == off->tokens && local->tokens == off->tokens;
    differing += !same;
    missing += on->reused_tokens < o.doc_tokens / 16 * 16;
    on_s.push_back(on->ttft_s);
    off_s.push_back(off->ttft_s);
    local_s.push_back(local->ttft_s);
    std::printf("%-4zu %7zu %7zu %10.2fms %10.2fms %8.1fx %10.2fms  %s\n", d + 1, prompt.size(), on->reused_tokens, on->ttft_s * 1e3,
                off->ttft_s * 1e3, off->ttft_s / on->ttft_s, local->ttft_s * 1e3, same ? "yes" : "NO");
    if (csv) csv << o.reader << ',' << m.name << ',' << d + 1 << ',' << prompt.size() << ',' << on->reused_tokens << ','
                 << on->ttft_s * 1e3 << ',' << off->ttft_s * 1e3 << ',' << local->ttft_s * 1e3 << ',' << (same ? 1 : 0) << '\n';
  }
  const auto& s = e.cache().stats();
  std::printf("reader %zu: median TTFT %.2f ms shared vs %.2f ms recomputed (%.1fx), %.2f ms from its own cache; probes %llu "
              "(%llu unanswered), pages adopted %llu, fetched %llu; greedy tokens %s\n",
              o.reader, median(on_s) * 1e3, median(off_s) * 1e3, median(off_s) / median(on_s), median(local_s) * 1e3,
              (unsigned long long)s.remote_probes,
              (unsigned long long)s.remote_probe_timeouts, (unsigned long long)s.remote_pages_adopted,
              (unsigned long long)s.pages_fetched[slow], differing ? "DIFFER" : "equal the recompute's");
  return differing ? 3 : missing ? 4 : 0;
}

// One engine process on a shared tier of type Tier (redis_cluster_tier or redis_tier).
// `configure(shape, page_bytes)` gives the tier's configuration for the model's pages.
template <template <class> class Tier, class Configure>
int run_engine(const options& o, Configure&& configure) {
  using cache_type = kvtier::cache_builder<kvtier::page_size<16>, kvtier::device_memory<>, kvtier::host_memory<>,
                                           kvtier::slow_tiers<kvtier::slow_tier<Tier>>, kvtier::auto_choice,
                                           kvtier::write_policies<kvtier::write_through, kvtier::write_through>,
                                           kvtier::prefetch_wait>::cache_type;
  using engine_type = engine<cpu_backend, cache_type>;
  const model_weights w = load_model(o);
  const auto& m = w.config();
  if (o.doc_tokens + o.question + o.reply > m.seq_len)
    throw kvtier::config_error("kvtier-share: document, question and reply exceed the model's " + std::to_string(m.seq_len) + " positions");
  const kvtier::kv_shape shape = m.kv_shape(kv_dtype(precision::fp32));
  auto tc = configure(shape, shape.bytes_per_page(16));
  tc.prefix = o.prefix;
  const std::size_t seq_pages = (o.doc_tokens + o.question + o.reply) / 16 + 2;
  auto cfg = engine_type::cache_config(w, precision::fp32, 2 * seq_pages + 8, std::max<std::size_t>(64, o.docs * seq_pages + 16));
  cfg.remote = kvtier::remote_lookup{o.probe_pages, std::chrono::milliseconds(o.probe_timeout_ms)};
  engine_type e(w, cfg, backend_options{precision::fp32, o.threads}, 256, std::make_unique<Tier<kvtier::identity_codec>>(tc));
  const std::size_t slow = std::size_t(cache_type::slow_tier_id(0));
  return o.mode == "write" ? write_documents(e, o, slow) : read_documents(e, o, slow);
}

// Runs this program again as a child process with `args`; its exit status.
int run_child(const std::vector<std::string>& args) {
  std::fflush(stdout);
  const pid_t pid = ::fork();
  if (pid == 0) {
    std::vector<char*> argv;
    static std::string self = "/proc/self/exe";
    argv.push_back(self.data());
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv("/proc/self/exe", argv.data());
    std::_Exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

int demo(const options& o) {
#ifdef KVTIER_REDIS_SERVER
  if (std::system("redis-cli --version >/dev/null 2>&1") != 0 || ::access(KVTIER_REDIS_SERVER, X_OK) != 0) {
    std::printf("SKIPPED: kvtier-share demo needs redis-server and redis-cli\n");
    return 77;
  }
  const auto t0 = std::chrono::steady_clock::now();
  kvtier::testing::redis_cluster cluster(kvtier::testing::redis_cluster::options{.masters = o.masters, .replicas = o.replicas});
  std::string seeds;
  for (const auto& s : cluster.seeds()) seeds += (seeds.empty() ? "" : ",") + s.host + ":" + std::to_string(s.port);
  std::printf("kvtier-share demo: a Redis Cluster of %d masters and %d replicas each on 127.0.0.1 (%s), up in %.1f s\n", o.masters,
              o.replicas, seeds.c_str(), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  std::vector<std::string> common = o.passed;
  common.insert(common.end(), {"--cluster", seeds});
  std::vector<std::string> w = {"write"};
  w.insert(w.end(), common.begin(), common.end());
  if (const int rc = run_child(w); rc != 0) return rc;
  // Replication is asynchronous: readers of replicas wait until they hold what the writer wrote.
  if (o.replica_reads && o.replicas > 0 && !cluster.wait_replicas_caught_up(std::chrono::seconds(20)))
    std::printf("kvtier-share demo: the replicas did not catch up within 20 s: readers may miss pages\n");
  int worst = 0;
  for (std::size_t k = 1; k <= o.readers; ++k) {
    std::vector<std::string> r = {"read", "--reader", std::to_string(k)};
    r.insert(r.end(), common.begin(), common.end());
    if (!o.csv.empty()) r.insert(r.end(), {"--csv", o.csv});
    worst = std::max(worst, run_child(r));
  }
  std::printf("\nkvtier-share demo: %s\n", worst == 0 ? "every reader reused every document and answered as its own recompute"
                                                       : "FAILED (see above)");
  return worst;
#else
  (void)o;
  std::printf("SKIPPED: kvtier-share was built without redis-server (no demo cluster)\n");
  return 77;
#endif
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    const options o = parse(argc, argv);
    if (o.mode == "demo") return demo(o);
    if (o.mode != "write" && o.mode != "read") usage();
    if (!o.cluster.empty())
      return run_engine<kvtier::redis_cluster_tier>(o, [&](kvtier::kv_shape shape, std::size_t page_bytes) {
        kvtier::redis_cluster_tier_config c{.shape = shape, .page_bytes = page_bytes, .seeds = o.cluster};
        c.read_from_replicas = o.replica_reads;
        return c;
      });
    if (o.redis.port == 0) usage();
    return run_engine<kvtier::redis_tier>(o, [&](kvtier::kv_shape shape, std::size_t page_bytes) {
      return kvtier::redis_tier_config{.shape = shape, .page_bytes = page_bytes, .host = o.redis.host, .port = o.redis.port};
    });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvtier-share: %s\n", e.what());
    return 1;
  }
}
