// kvtier-bench-index: replays a workload through kvtier's prefix index and, in the same process
// and the same run, through a baseline written here in the style of vLLM's prefix cache (one
// chained 64-bit hash per page, a hash map from page hash to block, an LRU list of unused blocks
// freed in reverse order, evicted from the head at a capacity). Index work only: prompt
// generation is outside the timed region (requests are expanded in cache-sized batches, each
// batch timed as one interval). Prints a table (ns per page on the thread's CPU clock
// and on the wall clock, the ratio, bytes per cached page, system-time share, minor faults) and
// writes CSV. Both serve() functions are kept out of line, so that
//   valgrind --tool=callgrind --toggle-collect='*engine::serve*' kvtier-bench-index --runs 1 ...
// counts the instructions of index work alone (repeatable where the clock is not).
//
//   kvtier-bench-index [TRACE.jsonl] [--capacities 1M,inf] [--page-size 16] [--runs 3]
//                      [--chat-requests 12031] [--no-chat] [--no-trace] [--engine kvtier|baseline|both]
//                      [--csv FILE]
//
// Workloads: the Mooncake-format trace (expanded as kvtier-replay does) and a synthetic
// multi-turn chat (kvtier::testing::chat_workload: sessions whose prompts are their whole history).
#include <sys/resource.h>
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/mooncake_trace.hpp"
#include "kvtier/index.hpp"
#include "kvtier/testing/chat_workload.hpp"

using namespace kvtier;

namespace {

constexpr std::uint64_t unbounded = std::numeric_limits<std::uint64_t>::max();
constexpr std::size_t page_tokens = 16;

// ------------------------------------------------------------------ the two indexes
// Both serve a request the same way: look up the longest cached prefix (whole pages), make every
// page of the prompt cached (most recently used), then evict least recently used pages down to
// the capacity. Both return the prompt's hit pages.

class kvtier_engine {
 public:
  static constexpr const char* name = "kvtier radix_index";
  [[gnu::noinline]] std::size_t serve(std::uint64_t ns, std::span<const token_id> tokens, std::size_t capacity_pages) {
    (void)idx_.match_and_insert(namespace_id{ns}, tokens, m_, on_device(device_slot{0}));
    const std::size_t held = idx_.pages_in(tier_id::device);
    if (held > capacity_pages) (void)idx_.evict(tier_id::device, held - capacity_pages, [](const victim&) { return true; });
    return m_.size();
  }
  std::size_t pages() const { return idx_.pages(); }
  std::size_t memory_bytes() const { return idx_.memory_bytes(); }

 private:
  radix_index<lru, page_tokens> idx_;
  match_result m_;
};

// vLLM's prefix cache (BlockPool + FreeKVCacheBlockQueue), reduced to one request at a time:
// block hash = hash(parent block hash, block tokens); cached_block_hash_to_block is a hash map;
// blocks of finished requests go to the tail of a doubly linked free queue in reverse order (a
// request's last block is evicted first); a hit block leaves the queue while in use.
class vllm_style_engine {
 public:
  static constexpr const char* name = "vLLM-style block-hash LRU";
  [[gnu::noinline]] std::size_t serve(std::uint64_t ns, std::span<const token_id> tokens, std::size_t capacity_pages) {
    const std::size_t n = tokens.size() / page_tokens;
    request_.clear();
    std::uint64_t parent = ns * 0x9e3779b97f4a7c15ull + 1;
    std::size_t hits = 0;
    bool hitting = true;
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint64_t h = XXH3_64bits_withSeed(tokens.data() + i * page_tokens, page_tokens * sizeof(token_id), parent);
      parent = h;
      if (hitting) {
        if (const auto it = cached_.find(h); it != cached_.end()) {
          unlink(it->second);  // in use: out of the free queue
          request_.push_back(it->second);
          ++hits;
          continue;
        }
        hitting = false;
      }
      const auto [it, fresh] = cached_.try_emplace(h, 0);
      if (!fresh) {  // the same page further down this prompt (a repeated block): shared
        unlink(it->second);
        request_.push_back(it->second);
        continue;
      }
      const std::uint32_t b = new_block();
      blocks_[b].hash = h;
      it->second = b;
      request_.push_back(b);
    }
    // The request finishes: its blocks return to the free queue, last block first.
    for (auto b = request_.rbegin(); b != request_.rend(); ++b) push_tail(*b);
    while (cached_.size() > capacity_pages) {  // evict from the head (least recently used)
      const std::uint32_t b = head_;
      unlink(b);
      cached_.erase(blocks_[b].hash);
      spare_.push_back(b);
    }
    return hits;
  }
  std::size_t pages() const { return cached_.size(); }
  // unordered_map: a node (key, value, next pointer) plus malloc's 16-byte header, and a bucket
  // pointer each; a block: hash and two links; the spare list.
  std::size_t memory_bytes() const {
    return cached_.size() * (sizeof(void*) + 16 + 16) + cached_.bucket_count() * sizeof(void*) +
           blocks_.capacity() * sizeof(block) + spare_.capacity() * 4 + request_.capacity() * 4;
  }

 private:
  static constexpr std::uint32_t none = UINT32_MAX;
  struct block {
    std::uint64_t hash = 0;
    std::uint32_t prev = none, next = none;
    bool queued = false;
  };
  std::uint32_t new_block() {
    if (!spare_.empty()) {
      const std::uint32_t b = spare_.back();
      spare_.pop_back();
      return b;
    }
    blocks_.emplace_back();
    return std::uint32_t(blocks_.size() - 1);
  }
  void unlink(std::uint32_t b) {
    block& x = blocks_[b];
    if (!x.queued) return;
    (x.prev == none ? head_ : blocks_[x.prev].next) = x.next;
    (x.next == none ? tail_ : blocks_[x.next].prev) = x.prev;
    x.prev = x.next = none;
    x.queued = false;
  }
  void push_tail(std::uint32_t b) {
    if (blocks_[b].queued) return;  // listed twice in one request
    blocks_[b].prev = tail_;
    blocks_[b].next = none;
    (tail_ == none ? head_ : blocks_[tail_].next) = b;
    tail_ = b;
    blocks_[b].queued = true;
  }

  std::unordered_map<std::uint64_t, std::uint32_t> cached_;
  std::vector<block> blocks_;
  std::vector<std::uint32_t> spare_;
  std::vector<std::uint32_t> request_;
  std::uint32_t head_ = none, tail_ = none;
};

// ----------------------------------------------------------------------- workloads
constexpr std::size_t batch_tokens = 64 * 1024;

struct request_batch {
  struct request {
    std::uint64_t ns;
    std::size_t begin, size;  // in tokens
  };
  std::vector<token_id> tokens;
  std::vector<request> requests;

  void add(std::uint64_t ns, std::span<const token_id> t) {
    requests.push_back({ns, tokens.size(), t.size()});
    tokens.insert(tokens.end(), t.begin(), t.end());
  }
  void clear() {
    tokens.clear();
    requests.clear();
  }
  std::span<const token_id> prompt(const request& r) const { return std::span(tokens).subspan(r.begin, r.size); }
};

struct workload {
  std::string name;
  std::vector<examples::trace_request> trace;  // empty: the chat workload
  std::size_t chat_requests = 0;

  // Calls f(batch) for consecutive runs of requests, in order: each batch holds whole requests,
  // about 64 K tokens (256 KB, cache-sized) unless one request is longer, so that the bench reads
  // the clock once a batch instead of twice a request (two system calls each time).
  template <class F>
  void for_each_batch(F&& f) const {
    request_batch batch;
    auto add = [&](std::uint64_t ns, std::span<const token_id> tokens) {
      batch.add(ns, tokens);
      if (batch.tokens.size() >= batch_tokens) {
        f(std::as_const(batch));
        batch.clear();
      }
    };
    if (!trace.empty()) {
      std::vector<token_id> tokens;
      for (const auto& r : trace) {
        examples::expand_prompt(r, tokens);
        add(std::uint64_t{0}, std::span<const token_id>(tokens));
      }
    } else {
      testing::chat_workload chat(chat_config());
      for (std::size_t i = 0; i < chat_requests; ++i) {
        auto r = chat.next();
        if (!r) break;
        add(r->name_space, std::span<const token_id>(r->prompt));
      }
    }
    if (!batch.requests.empty()) f(std::as_const(batch));
  }
  static testing::chat_workload_config chat_config() {
    testing::chat_workload_config c;
    c.sessions = 4000;
    c.concurrent = 64;
    c.min_turns = 2;
    c.max_turns = 10;
    c.system_prompts = 8;
    c.system_tokens = 1024;
    c.min_user_tokens = 16;
    c.max_user_tokens = 400;
    c.min_reply_tokens = 16;
    c.max_reply_tokens = 400;
    c.namespaces = 1;
    c.seed = 14;
    return c;
  }
};

// ------------------------------------------------------------------------- timing
double thread_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}
double wall_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct run_figures {
  std::uint64_t pages = 0, hit_pages = 0, requests = 0;
  double cpu_s = 0, wall_s = 0;   // index work only
  double user_s = 0, sys_s = 0;   // the whole run (rusage), workload generation included
  long minor_faults = 0;
  std::size_t end_pages = 0;
  double end_bytes_per_page = 0, peak_bytes_per_page = 0;
  double cpu_ns() const { return cpu_s * 1e9 / double(pages); }
  double wall_ns() const { return wall_s * 1e9 / double(pages); }
};

template <class Engine>
run_figures run_once(const workload& w, std::uint64_t capacity_tokens) {
  const std::size_t capacity_pages =
      capacity_tokens == unbounded ? std::numeric_limits<std::size_t>::max() : std::size_t(capacity_tokens / page_tokens);
  Engine e;
  run_figures f;
  rusage r0, r1;
  getrusage(RUSAGE_THREAD, &r0);
  w.for_each_batch([&](const request_batch& batch) {
    const double c0 = thread_seconds(), w0 = wall_seconds();
    for (const auto& r : batch.requests) f.hit_pages += e.serve(r.ns, batch.prompt(r), capacity_pages);
    f.cpu_s += thread_seconds() - c0;
    f.wall_s += wall_seconds() - w0;
    for (const auto& r : batch.requests) f.pages += r.size / page_tokens;
    f.requests += batch.requests.size();
    if (e.pages() > 0) f.peak_bytes_per_page = std::max(f.peak_bytes_per_page, double(e.memory_bytes()) / double(e.pages()));
  });
  getrusage(RUSAGE_THREAD, &r1);
  auto secs = [](const timeval& a, const timeval& b) { return double(b.tv_sec - a.tv_sec) + 1e-6 * double(b.tv_usec - a.tv_usec); };
  f.user_s = secs(r0.ru_utime, r1.ru_utime);
  f.sys_s = secs(r0.ru_stime, r1.ru_stime);
  f.minor_faults = r1.ru_minflt - r0.ru_minflt;
  f.end_pages = e.pages();
  f.end_bytes_per_page = e.pages() ? double(e.memory_bytes()) / double(e.pages()) : 0;
  return f;
}

run_figures median_run(std::vector<run_figures> runs) {
  std::sort(runs.begin(), runs.end(), [](const auto& a, const auto& b) { return a.cpu_s < b.cpu_s; });
  return runs[runs.size() / 2];
}

std::uint64_t parse_tokens(std::string_view s) {
  if (s == "inf" || s == "unbounded") return unbounded;
  std::string str(s);
  double mult = 1;
  if (!str.empty() && (str.back() == 'K' || str.back() == 'k')) mult = 1e3, str.pop_back();
  else if (!str.empty() && (str.back() == 'M' || str.back() == 'm')) mult = 1e6, str.pop_back();
  char* end = nullptr;
  const double v = std::strtod(str.c_str(), &end);
  if (str.empty() || *end != '\0' || !(v > 0)) {
    std::fprintf(stderr, "kvtier-bench-index: bad capacity %s\n", std::string(s).c_str());
    std::exit(2);
  }
  return std::uint64_t(std::llround(v * mult));
}

std::string capacity_text(std::uint64_t c) {
  if (c == unbounded) return "inf";
  if (c % 1'000'000 == 0) return std::to_string(c / 1'000'000) + "M";
  return std::to_string(c);
}

}  // namespace

int main(int argc, char** argv) {
  std::string trace_path = KVTIER_DEFAULT_TRACE, csv_path = "index_bench.csv";
  std::vector<std::uint64_t> capacities{1'000'000, unbounded};
  int runs = 3;
  std::size_t chat_requests = 12'031;
  bool chat = true, trace = true, run_ours = true, run_base = true;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&]() -> std::string_view {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "kvtier-bench-index: %s needs a value\n", argv[i]);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--capacities") {
      capacities.clear();
      std::string_view v = value();
      while (!v.empty()) {
        const auto comma = v.find(',');
        capacities.push_back(parse_tokens(v.substr(0, comma)));
        if (comma == std::string_view::npos) break;
        v.remove_prefix(comma + 1);
      }
    } else if (a == "--runs") runs = std::max(1, std::atoi(std::string(value()).c_str()));
    else if (a == "--chat-requests") chat_requests = std::size_t(std::atoll(std::string(value()).c_str()));
    else if (a == "--no-chat") chat = false;
    else if (a == "--no-trace") trace = false;
    else if (a == "--engine") {  // kvtier, baseline or both (callgrind runs one at a time)
      const std::string_view e = value();
      run_ours = e != "baseline";
      run_base = e != "kvtier";
      if (!run_ours && !run_base) return 2;
    }
    else if (a == "--csv") csv_path = value();
    else if (a == "--page-size") {
      if (std::string(value()) != "16") {
        std::fprintf(stderr, "kvtier-bench-index: only 16-token pages are built in\n");
        return 2;
      }
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr,
                   "usage: kvtier-bench-index [TRACE.jsonl] [--capacities 1M,inf] [--runs 3] [--chat-requests N]\n"
                   "                          [--no-chat] [--no-trace] [--engine kvtier|baseline|both] [--csv FILE]\n");
      return 2;
    } else trace_path = a;
  }

  std::vector<workload> workloads;
  if (trace) {
    try {
      workloads.push_back({"mooncake " + trace_path.substr(trace_path.find_last_of('/') + 1),
                           examples::read_mooncake_trace(trace_path), 0});
    } catch (const std::exception& e) {
      std::fprintf(stderr, "kvtier-bench-index: %s (skipping the trace workload)\n", e.what());
    }
  }
  if (chat) workloads.push_back({"chat " + std::to_string(chat_requests) + " requests", {}, chat_requests});

  std::FILE* csv = std::fopen(csv_path.c_str(), "w");
  if (!csv) {
    std::fprintf(stderr, "kvtier-bench-index: cannot write %s\n", csv_path.c_str());
    return 1;
  }
  std::fputs("workload,capacity_tokens,engine,requests,pages,hit_pages,cpu_ns_per_page,wall_ns_per_page,"
             "ratio_cpu,end_pages,end_bytes_per_page,peak_bytes_per_page,sys_share,minor_faults\n",
             csv);
  std::printf("16-token pages, one thread; index work per page: median of %d runs by CPU time (wall time beside it)\n",
              runs);
  std::printf("%-30s %5s %-26s %11s %8s %8s %8s %7s %7s %6s %9s\n", "workload", "cap", "engine", "hit pages",
              "cpu ns", "wall ns", "vs base", "B/page", "peak B", "sys%", "minflt");
  for (const auto& w : workloads)
    for (const std::uint64_t cap : capacities) {
      std::vector<run_figures> ours, base;
      for (int r = 0; r < runs; ++r) {  // interleaved: load on the machine hits both alike
        if (run_ours) ours.push_back(run_once<kvtier_engine>(w, cap));
        if (run_base) base.push_back(run_once<vllm_style_engine>(w, cap));
      }
      const run_figures a = run_ours ? median_run(ours) : run_figures{};
      const run_figures b = run_base ? median_run(base) : run_figures{};
      for (const auto* f : {&a, &b}) {
        if ((f == &a && !run_ours) || (f == &b && !run_base)) continue;
        const char* engine = f == &a ? kvtier_engine::name : vllm_style_engine::name;
        const double ratio = run_base ? f->cpu_ns() / b.cpu_ns() : 0;  // 0: no baseline this run
        const double sys_share = f->sys_s / std::max(1e-9, f->user_s + f->sys_s);
        std::printf("%-30s %5s %-26s %11llu %8.1f %8.1f %7.2fx %7.1f %7.1f %5.1f%% %9ld\n", w.name.c_str(),
                    capacity_text(cap).c_str(), engine, (unsigned long long)f->hit_pages, f->cpu_ns(), f->wall_ns(),
                    ratio, f->end_bytes_per_page, f->peak_bytes_per_page, 100 * sys_share, f->minor_faults);
        std::fprintf(csv, "%s,%s,%s,%llu,%llu,%llu,%.2f,%.2f,%.3f,%zu,%.1f,%.1f,%.4f,%ld\n", w.name.c_str(),
                     capacity_text(cap).c_str(), engine, (unsigned long long)f->requests,
                     (unsigned long long)f->pages, (unsigned long long)f->hit_pages, f->cpu_ns(), f->wall_ns(), ratio,
                     f->end_pages, f->end_bytes_per_page, f->peak_bytes_per_page, sys_share, f->minor_faults);
      }
      std::fflush(stdout);
      std::fflush(csv);
    }
  std::fclose(csv);
  std::printf("wrote %s (vs base: kvtier's CPU ns per page over the baseline's; below 1 is faster)\n", csv_path.c_str());
  return 0;
}
