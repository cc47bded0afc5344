// kvtier-demo: the main demo. A multi-turn chat workload (sessions with growing histories that
// start from shared system prompts, in two namespaces) runs through the whole hierarchy with small
// capacities: device (the CPU stand-in here; see docs/cache.md for the GPU), pinned-host stand-in,
// a file tier in a temporary directory, and Redis when one is reachable. Every cached page the
// engine gets back is compared byte for byte with what the model (reference_kv) would produce.
// Prints per-tier hit ratios, bytes moved each way, and prefill tokens saved.
//   kvtier-demo [--sessions N] [--device-pages N] [--host-pages N] [--disk-pages N]
//               [--redis HOST:PORT | --no-redis] [--trace FILE [--requests N]] [--quiet]
// Bad arguments end with a message that says what to change (exit 2). The file tier's temporary
// directory (under $TMPDIR, else /tmp) is removed however the demo ends, SIGINT/SIGTERM/SIGHUP included.
#include <netdb.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/mooncake_trace.hpp"
#include "kvtier/cache.hpp"
#include "kvtier/testing/chat_workload.hpp"
#include "kvtier/testing/reference_kv.hpp"
#include "kvtier/testing/simulated_engine.hpp"
#ifdef KVTIER_DEMO_FILE
#  include "kvtier/storage/file_tier.hpp"
#endif
#ifdef KVTIER_DEMO_REDIS
#  include "kvtier/storage/redis_tier.hpp"
#endif
#ifdef KVTIER_DEMO_GPU
#  include "kvtier/cache.cuh"
#  include "kvtier/testing/simulated_engine_gpu.cuh"
#endif

using namespace kvtier;
using namespace kvtier::testing;
using kvtier::examples::expand_prompt;
using kvtier::examples::read_mooncake_trace;
using kvtier::examples::trace_request;

namespace {

struct options {
  std::size_t sessions = 300;
  std::size_t device_pages = 0;  // 0: the mode's default (chat: 192, trace: 8192)
  std::size_t host_pages = 0;    // chat: 512, trace: 32768
  std::size_t disk_pages = 0;    // chat: 1024, trace: 524288
  std::string redis_host = "127.0.0.1";
  int redis_port = 6379;
  bool redis = true;
  bool redis_given = false;  // --redis: a Redis that does not answer is an error, not a fallback
  std::string trace;
  std::size_t requests = 0;  // trace: 0 = all
  bool quiet = false;
};

[[noreturn]] void usage(const char* argv0, const std::string& why = {}) {
  if (!why.empty()) std::fprintf(stderr, "kvtier-demo: %s\n\n", why.c_str());
  std::fprintf(stderr,
               "usage: %s [--sessions N] [--device-pages N] [--host-pages N] [--disk-pages N]\n"
               "          [--redis HOST:PORT | --no-redis] [--trace FILE [--requests N]] [--quiet]\n",
               argv0);
  std::exit(2);
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(argv[0], a + " needs a value");
      return argv[++i];
    };
    // A whole number in [min, max], digits only: "-1" must not wrap to 2^64 - 1.
    auto number = [&](std::size_t min, std::size_t max, const char* meaning) -> std::size_t {
      const std::string v = value();
      std::size_t n = 0;
      const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
      if (v.empty() || v[0] == '-' || v[0] == '+' || ec != std::errc{} || end != v.data() + v.size() || n < min ||
          n > max)
        usage(argv[0], a + " " + v + ": give " + meaning + ", a whole number from " + std::to_string(min) + " to " +
                           std::to_string(max));
      return n;
    };
    constexpr std::size_t max_pages = 0xffffffffu;  // slot ids are 32-bit
    if (a == "--sessions") o.sessions = number(1, 10'000'000, "the number of chat sessions");
    else if (a == "--device-pages") o.device_pages = number(0, max_pages, "device pages (0: the default)");
    else if (a == "--host-pages") o.host_pages = number(0, max_pages, "host pages (0: the default)");
    else if (a == "--disk-pages") o.disk_pages = number(0, max_pages, "disk pages (0: the default)");
    else if (a == "--requests") o.requests = number(0, max_pages, "trace requests to run (0: all)");
    else if (a == "--trace") o.trace = value();
    else if (a == "--no-redis") o.redis = false;
    else if (a == "--quiet") o.quiet = true;
    else if (a == "--redis") {
      const std::string v = value();
      const auto colon = v.rfind(':');
      if (colon == std::string::npos || colon == 0)
        usage(argv[0], "--redis " + v + ": give HOST:PORT, e.g. --redis 127.0.0.1:6379");
      o.redis_host = v.substr(0, colon);
      const std::string_view port(v.data() + colon + 1, v.size() - colon - 1);
      int p = 0;
      const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
      if (port.empty() || ec != std::errc{} || end != port.data() + port.size() || p < 1 || p > 65535)
        usage(argv[0], "--redis " + v + ": the port must be a number from 1 to 65535, e.g. --redis " + o.redis_host +
                           ":6379");
      o.redis_port = p;
      o.redis_given = true;
    } else usage(argv[0], "unknown argument " + a);
  }
  if (o.redis_given && !o.redis) usage(argv[0], "--redis and --no-redis contradict each other; give one");
#if !defined(KVTIER_DEMO_FILE) || !defined(KVTIER_DEMO_REDIS)
  if (o.redis_given)
    usage(argv[0], "--redis: this kvtier-demo was built without the Redis tier (it needs hiredis and liburing); "
                   "run scripts/install-deps and rebuild, or drop --redis");
#endif
  // Trace prompts average 15K tokens (about 960 pages): the trace mode's tiers are larger.
  const bool trace = !o.trace.empty();
  if (o.device_pages == 0) o.device_pages = trace ? 8192 : 192;
  if (o.host_pages == 0) o.host_pages = trace ? 32768 : 512;
  if (o.disk_pages == 0) o.disk_pages = trace ? 524288 : 1024;
  return o;
}

// Whether something accepts TCP connections at host:port. Throws config_error when the host name
// does not resolve (a typo must not look like "no Redis running").
bool reachable(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  if (const int e = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &list); e != 0)
    throw config_error("cannot resolve the Redis host '" + host + "' (" + ::gai_strerror(e) +
                       "); give a host name or address that resolves, e.g. --redis 127.0.0.1:6379, or --no-redis");
  bool ok = false;
  for (const addrinfo* a = list; a != nullptr && !ok; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    ok = ::connect(fd, a->ai_addr, a->ai_addrlen) == 0;
    ::close(fd);
  }
  ::freeaddrinfo(list);
  return ok;
}

// The file tier's directory, removed on every way out: by ~temp_dir on a return or an exception,
// and by the signal thread (watch_signals) on SIGINT, SIGTERM or SIGHUP.
std::mutex temp_dir_mutex;
std::filesystem::path temp_dir_path;  // guarded by temp_dir_mutex; empty: none

void remove_temp_dir_locked() {
  std::error_code ec;
  // The tier's worker may still be creating files: a few passes until the directory is gone.
  for (int pass = 0; pass < 10 && !temp_dir_path.empty() && std::filesystem::exists(temp_dir_path, ec); ++pass)
    std::filesystem::remove_all(temp_dir_path, ec);
  temp_dir_path.clear();
}

class temp_dir {
 public:
  temp_dir() {
    std::error_code ec;
    std::filesystem::path base = std::filesystem::temp_directory_path(ec);
    if (ec) base = "/tmp";
    std::string templ = (base / "kvtier-demo-XXXXXX").string();
    std::lock_guard lock(temp_dir_mutex);
    if (::mkdtemp(templ.data()) == nullptr)
      throw config_error("cannot create a temporary directory " + templ + " (" + std::strerror(errno) +
                         "); set TMPDIR to a writable directory");
    temp_dir_path = templ;
    path_ = templ;
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::lock_guard lock(temp_dir_mutex);
    remove_temp_dir_locked();
  }
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and so in every thread started after it) and
// starts one thread that waits for them: it removes the temporary directory and exits 128 + signal.
void watch_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  if (::pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) return;
  std::thread([set] {
    int sig = 0;
    if (::sigwait(&set, &sig) != 0) return;
    std::lock_guard lock(temp_dir_mutex);
    const std::string dir = temp_dir_path.string();
    remove_temp_dir_locked();
    std::fprintf(stderr, "kvtier-demo: stopped by %s%s%s\n", ::strsignal(sig), dir.empty() ? "" : "; removed ",
                 dir.c_str());
    std::_Exit(128 + sig);
  }).detach();
}

std::string bytes(double b) {
  const char* unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", b, unit[u]);
  return buf;
}

// A trace request as a chat_request: the prompt only (the trace says nothing about reply tokens).
struct trace_source {
  std::vector<trace_request> records;
  std::size_t next_record = 0;
  std::optional<chat_request> operator()() {
    if (next_record == records.size()) return std::nullopt;
    chat_request r;
    expand_prompt(records[next_record++], r.prompt);
    return r;
  }
};

template <class Cache, class Access, class... Slow>
int run(const options& o, const kv_shape& shape, const std::string& tiers, std::unique_ptr<Slow>... slow) {
  constexpr std::size_t P = 16;
  typename Cache::config cfg{shape, page_size<P>{}};
  cfg.device_pages = o.device_pages;
  cfg.host_pages = o.host_pages;
  Cache cache(cfg, std::move(slow)...);
  const reference_kv model(shape, 2024);
  typename Cache::stream_type stream;  // the engine's copy stream (a CUDA stream, or a thread standing in for one)

  std::printf("kvtier demo: %s\n", tiers.c_str());
  std::printf("  KV shape: %zu layers, %zu KV heads x %zu, %s: %s per %zu-token page\n", shape.layers(), shape.heads(),
              shape.head_dim(), std::string(to_string(shape.element_type())).c_str(),
              bytes(double(shape.bytes_per_page(P))).c_str(), P);
  std::printf("  capacities: device %zu pages (%s), host %zu pages (%s)\n", o.device_pages,
              bytes(double(o.device_pages * shape.bytes_per_page(P))).c_str(), o.host_pages,
              bytes(double(o.host_pages * shape.bytes_per_page(P))).c_str());
  std::printf("  policies: device->host %s, host->slow %s, prefetch %s, eviction %s\n",
              std::string(Cache::parts::write_to_host_type::name).c_str(),
              std::string(Cache::parts::write_to_slow_type::name).c_str(),
              std::string(Cache::parts::prefetch_type::name).c_str(), std::string(Cache::parts::eviction_type::name).c_str());

  const auto t0 = std::chrono::steady_clock::now();
  simulated_engine_report rep;
  if (o.trace.empty()) {
    chat_workload_config w;
    w.sessions = o.sessions;
    w.concurrent = 32;
    w.min_turns = 2;
    w.max_turns = 10;
    w.system_prompts = 4;
    w.system_tokens = 384;
    w.min_user_tokens = 16;
    w.max_user_tokens = 128;
    w.min_reply_tokens = 16;
    w.max_reply_tokens = 160;
    w.namespaces = 2;
    std::printf("  workload: %zu chat sessions of 2-10 turns, 4 shared %zu-token system prompts in each of 2 namespaces\n",
                w.sessions, w.system_tokens);
    chat_workload work(w);
    rep = run_chat_workload<Access>(cache, work, model, stream);
  } else {
    trace_source src{read_mooncake_trace(o.trace)};
    if (o.requests && o.requests < src.records.size()) src.records.resize(o.requests);
    std::printf("  workload: %zu requests of the Mooncake trace %s\n", src.records.size(), o.trace.c_str());
    rep = run_simulated_engine<Access>(cache, src, model, stream);
  }
  cache.drain();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const cache_stats& s = cache.stats();

  std::printf("\n  %-8s %14s %10s\n", "tier", "hit tokens", "hit ratio");
  const char* names[] = {"device", "host", "disk", "redis"};
  for (std::size_t t = 0; t < tier_count; ++t)
    std::printf("  %-8s %14llu %9.1f%%\n", names[t], (unsigned long long)s.hit_tokens[t], 100.0 * s.hit_ratio(tier_id(t)));
  std::printf("  prompt tokens %llu; prefill tokens saved %llu (%.1f%%), computed %llu\n",
              (unsigned long long)s.prompt_tokens, (unsigned long long)s.served_tokens, 100.0 * s.served_ratio(),
              (unsigned long long)s.computed_tokens);
  std::printf("\n  bytes moved\n");
  std::printf("  host -> device  %10s (%llu pages)    device -> host  %10s (%llu pages)\n", bytes(double(s.bytes_loaded)).c_str(),
              (unsigned long long)s.pages_loaded, bytes(double(s.bytes_backed_up)).c_str(), (unsigned long long)s.pages_backed_up);
  for (std::size_t t = 2; t < tier_count; ++t)
    if (s.pages_written[t] || s.pages_fetched[t])
      std::printf("  host -> %-6s  %10s (%llu pages)    %-6s -> host  %10s (%llu pages)\n", names[t],
                  bytes(double(s.bytes_written[t])).c_str(), (unsigned long long)s.pages_written[t], names[t],
                  bytes(double(s.bytes_fetched[t])).c_str(), (unsigned long long)s.pages_fetched[t]);
  std::printf("  evictions: device %llu (dropped %llu), host %llu (dropped %llu); prefetch: %llu asked, %llu arrived, "
              "%llu missed, %llu late, %llu retried below\n",
              (unsigned long long)s.evicted[0], (unsigned long long)s.dropped[0], (unsigned long long)s.evicted[1],
              (unsigned long long)s.dropped[1], (unsigned long long)s.prefetch_requested,
              (unsigned long long)s.prefetch_arrived, (unsigned long long)s.prefetch_missed,
              (unsigned long long)s.prefetch_abandoned, (unsigned long long)s.prefetch_retried);
  std::printf("\n  %zu requests in %.1f s (%.0f requests/s); %zu cached pages read back and checked byte for byte: "
              "%zu wrong rows; %zu errors\n",
              rep.requests, secs, double(rep.requests) / secs, rep.pages_checked, rep.rows_mismatched, rep.errors);
  return rep.rows_mismatched == 0 && rep.errors == 0 ? 0 : 1;
}

// The CPU composition: host memory stands in for the device, cpu_copy moves the pages.
struct cpu_composition {
  template <class Slow>
  struct cache_of {
    using type = typename cache_builder<page_size<16>, device_memory<>, host_memory<>, Slow>::cache_type;
  };
  using access = host_device_access;
  static std::string device() { return "device (CPU stand-in)"; }
};
#ifdef KVTIER_DEMO_GPU
// The GPU composition: device_layer_pool, mapped pinned host pool, kvtier's copy kernels.
struct gpu_composition {
  template <class Slow>
  struct cache_of {
    using type = typename gpu_cache_builder<page_size<16>, Slow>::cache_type;
  };
  using access = cuda_device_access;
  static std::string device() {
    cudaDeviceProp p{};
    (void)cudaGetDeviceProperties(&p, 0);
    return std::string("device (GPU: ") + p.name + ")";
  }
};
bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}
#endif

template <class C>
int run_all(const options& o, const kv_shape& shape) {
  constexpr std::size_t P = 16;
#ifdef KVTIER_DEMO_FILE
    const temp_dir tmp;
    const std::filesystem::path& dir = tmp.path();
    file_tier_config fc{dir, shape, shape.bytes_per_page(P), o.disk_pages};
    auto disk = std::make_unique<file_tier<>>(fc);
    const std::string disk_desc = "file tier in " + dir.string() + " (" + std::to_string(o.disk_pages) + " pages)";
#  ifdef KVTIER_DEMO_REDIS
    const bool redis_up = o.redis && reachable(o.redis_host, o.redis_port);
    if (o.redis_given && !redis_up)
      throw config_error("no Redis answers at " + o.redis_host + ":" + std::to_string(o.redis_port) +
                         " (--redis); start one there (redis-server --port " + std::to_string(o.redis_port) +
                         ") or pass --no-redis");
    if (redis_up) {
      redis_tier_config rc{shape, shape.bytes_per_page(P)};
      rc.host = o.redis_host;
      rc.port = o.redis_port;
      rc.prefix = "kvtier-demo-" + std::to_string(::getpid());
      using cache_type = typename C::template cache_of<slow_tiers<slow_tier<file_tier>, slow_tier<redis_tier>>>::type;
      return run<cache_type, typename C::access>(o, shape,
                             C::device() + " -> host -> " + disk_desc + " -> Redis at " + o.redis_host + ":" +
                                 std::to_string(o.redis_port),
                             std::move(disk), std::make_unique<redis_tier<>>(rc));
    }
    const std::string no_redis = o.redis ? " (no Redis reachable at " + o.redis_host + ":" + std::to_string(o.redis_port) + ")"
                                         : " (Redis off)";
#  else
    const std::string no_redis = " (built without hiredis)";
#  endif
    using cache_type = typename C::template cache_of<slow_tiers<slow_tier<file_tier>>>::type;
    return run<cache_type, typename C::access>(o, shape, C::device() + " -> host -> " + disk_desc + no_redis, std::move(disk));
#else
    using cache_type = typename C::template cache_of<slow_tiers<slow_tier<memory_tier>>>::type;
    auto slow = std::make_unique<memory_tier<>>(memory_tier_config{shape, shape.bytes_per_page(P), o.disk_pages, false});
    return run<cache_type, typename C::access>(o, shape, C::device() + " -> host -> in-memory slow tier (built without liburing)",
                           std::move(slow));
#endif
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  watch_signals();  // before any other thread starts
  // A scaled-down model (8 layers, 2 KV heads of 64, bf16: 4 KiB a token) keeps the demo at a few
  // seconds on two cores; the data path is the same for a Llama-3-8B shape.
  const kv_shape shape = o.trace.empty() ? kv_shape::mha(8, 2, 64, dtype::bf16) : kv_shape::mha(2, 1, 64, dtype::bf16);
  try {
#ifdef KVTIER_DEMO_GPU
    if (have_gpu()) return run_all<gpu_composition>(o, shape);
    std::printf("kvtier demo: no CUDA device, running the CPU path\n");
#endif
    return run_all<cpu_composition>(o, shape);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "kvtier-demo: out of memory building the tiers or running the workload; lower --device-pages, "
                         "--host-pages or --requests, or raise the process's memory limit (ulimit -v)\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvtier-demo: %s\n", e.what());
    return 1;
  }
}
