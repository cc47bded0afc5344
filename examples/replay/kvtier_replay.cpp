// kvtier-replay: replays a Mooncake-format trace through the prefix index with a capacity in
// tokens, a page size and an eviction policy; prints the prefix hit ratio (tokens served from
// cache over prompt tokens), requests/s and ns per page of index work. Parsing and token
// expansion are timed apart from the index work. --sweep runs capacities x policies and writes
// CSV and a gnuplot PNG of hit ratio against capacity. Bad arguments, an unwritable --out and a
// trace too large for the memory this process may use end with a message and a non-zero exit.
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <limits>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include "common/mooncake_trace.hpp"
#include "kvtier/index.hpp"

using namespace kvtier;
using namespace kvtier::examples;
using clock_type = std::chrono::steady_clock;

namespace {

constexpr std::uint64_t unbounded = std::numeric_limits<std::uint64_t>::max();

struct options {
  std::string trace = KVTIER_DEFAULT_TRACE;
  std::uint64_t capacity = 1'000'000;  // tokens
  std::size_t page_tokens = 16;
  std::string policy = "lru";
  bool csv = false;
  bool sweep = false;
  bool progress = true;
  std::string out_dir = "replay-sweep";
  std::vector<std::uint64_t> capacities{100'000, 300'000, 1'000'000, 3'000'000, 10'000'000, 30'000'000, unbounded};
  std::vector<std::string> policies{"lru", "lfu-aging", "priority-lru", "look-ahead"};
  std::size_t window = 32;                // look-ahead: queued requests the scheduler sees
  // priority-lru: which pages get retention priority 1 (the trace carries no priorities):
  //  "shared": the prefix a request found cached (as an engine marks its system prompts);
  //  "short":  whole prompts of at most priority_below tokens.
  std::string priority_rule = "shared";
  std::uint64_t priority_below = 4096;
};

struct outcome {
  std::string policy;
  std::uint64_t capacity = 0;
  std::size_t page_tokens = 0;
  std::uint64_t requests = 0, prompt_tokens = 0, hit_tokens = 0, pages = 0, evicted = 0;
  double index_s = 0, expand_s = 0;
  double index_cpu_s = 0;        // the same index work on the thread's CPU clock (load on the machine apart)
  double sys_share = 0;          // system time over user + system time of the whole replay
  double user_s = 0, sys_s = 0;  // the replay thread's user and system time (getrusage)
  long minor_faults = 0;
  std::size_t peak_pages = 0;
  double bytes_per_page = 0;
  double hit_ratio() const { return prompt_tokens ? double(hit_tokens) / double(prompt_tokens) : 0; }
};

[[noreturn]] void usage(const char* why) {
  if (why) std::fprintf(stderr, "kvtier-replay: %s\n\n", why);
  std::fprintf(stderr,
               "usage: kvtier-replay [TRACE.jsonl] [--capacity TOKENS|inf] [--page-size N]\n"
               "                     [--policy lru|lfu-aging|priority-lru|look-ahead] [--csv] [--no-progress]\n"
               "                     [--window N] [--priority-rule shared|short] [--priority-below TOKENS]\n"
               "       kvtier-replay [TRACE.jsonl] --sweep [--capacities 1e5,1e6,inf] [--policies lru,...]\n"
               "                     [--out DIR]   (writes DIR/sweep.csv and DIR/sweep.png)\n"
               "TOKENS accepts K/M/G suffixes and decimals that make a whole number: 0.1M = 100000.\n");
  std::exit(2);
}

// A whole count of tokens (or pages, or requests) for `option`: a decimal number (1e5, 0.1M) with an
// optional K/M/G suffix that makes a whole number; never rounded.
std::uint64_t parse_tokens(std::string_view s, std::string_view option) {
  if (s == "inf" || s == "unbounded") return unbounded;
  const auto bad = [&](const std::string& why) {
    usage((std::string(option) + " " + std::string(s) + ": " + why).c_str());
  };
  std::string str(s);
  double mult = 1;
  if (!str.empty()) {
    const char c = str.back();
    if (c == 'K' || c == 'k') mult = 1e3;
    if (c == 'M' || c == 'm') mult = 1e6;
    if (c == 'G' || c == 'g') mult = 1e9;
    if (mult != 1) str.pop_back();
  }
  char* end = nullptr;
  const double v = std::strtod(str.c_str(), &end);
  if (str.empty() || end != str.c_str() + str.size() || str.find_first_not_of("0123456789.eE+") != std::string::npos ||
      !(std::isdigit(static_cast<unsigned char>(str[0])) || str[0] == '.'))
    bad("not a count; give a number with an optional K, M or G suffix, e.g. 16, 100000, 1e5 or 0.1M");
  if (v * mult > 1e18) bad("too large; counts go up to 1e18 (or inf where unbounded is meant)");
  const double whole = std::round(v * mult);
  if (std::fabs(v * mult - whole) > 1e-6 * std::max(1.0, whole))
    bad("not a whole number; counts are never rounded, give " + std::to_string(std::uint64_t(std::floor(v * mult))) +
        " or " + std::to_string(std::uint64_t(std::ceil(v * mult))));
  return std::uint64_t(whole);
}

std::vector<std::string> split(std::string_view s) {
  std::vector<std::string> out;
  while (!s.empty()) {
    const auto comma = s.find(',');
    out.emplace_back(s.substr(0, comma));
    if (comma == std::string_view::npos) break;
    s.remove_prefix(comma + 1);
  }
  return out;
}

options parse_args(int argc, char** argv) {
  options o;
  bool have_trace = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&]() -> std::string_view {
      if (i + 1 >= argc) usage(("missing value after " + std::string(a)).c_str());
      return argv[++i];
    };
    if (a == "--capacity") o.capacity = parse_tokens(value(), a);
    else if (a == "--page-size") {
      const auto v = parse_tokens(value(), a);
      if (v == 0 || v > (1u << 20)) usage("--page-size must be 1 to 1048576 (2^20) tokens, e.g. --page-size 16");
      o.page_tokens = std::size_t(v);
    } else if (a == "--policy") o.policy = value();
    else if (a == "--csv") o.csv = true;
    else if (a == "--sweep") o.sweep = true;
    else if (a == "--no-progress") o.progress = false;
    else if (a == "--out") o.out_dir = value();
    else if (a == "--window") {
      const auto v = parse_tokens(value(), a);
      if (v == 0 || v > 1'000'000) usage("--window must be 1 to 1000000 queued requests, e.g. --window 32");
      o.window = std::size_t(v);
    } else if (a == "--priority-below") o.priority_below = parse_tokens(value(), a);
    else if (a == "--priority-rule") {
      o.priority_rule = value();
      if (o.priority_rule != "shared" && o.priority_rule != "short") usage("--priority-rule is shared or short");
    }
    else if (a == "--capacities") {
      o.capacities.clear();
      for (const auto& c : split(value())) o.capacities.push_back(parse_tokens(c, a));
    } else if (a == "--policies") o.policies = split(value());
    else if (a == "-h" || a == "--help") usage(nullptr);
    else if (!a.empty() && a[0] == '-') usage(("unknown option " + std::string(a)).c_str());
    else if (!have_trace) {
      o.trace = a;
      have_trace = true;
    } else usage("more than one trace given");
  }
  for (const auto& p : o.sweep ? o.policies : std::vector<std::string>{o.policy})
    if (p != "lru" && p != "lfu-aging" && p != "priority-lru" && p != "look-ahead")
      usage(("unknown policy " + p).c_str());
  if (o.sweep) {
    // Checked before the trace is read, so that a bad --out does not cost a whole sweep.
    std::error_code ec;
    const auto st = std::filesystem::status(o.out_dir, ec);
    for (const char c : o.out_dir)
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
        usage("--out must not hold control characters (newline, tab, ...); give a plain directory name");
    if (std::filesystem::exists(st) && !std::filesystem::is_directory(st))
      usage(("--out " + o.out_dir + " is not a directory; give a directory (created when missing) for sweep.csv and sweep.png")
                .c_str());
  }
  return o;
}

// gnuplot's single-quoted string for s: a quote inside is written twice, nothing else is special.
std::string gnuplot_quote(std::string_view s) {
  std::string out = "'";
  for (const char c : s) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}

// Runs `gnuplot script` directly (posix_spawnp with an argv, no shell); returns its exit status,
// or -1 with the reason in `why` when it could not be started.
int run_gnuplot(const std::string& script, std::string& why) {
  std::string prog = "gnuplot";
  char* argv[] = {prog.data(), const_cast<char*>(script.c_str()), nullptr};
  pid_t pid = 0;
  if (const int e = ::posix_spawnp(&pid, "gnuplot", nullptr, nullptr, argv, environ); e != 0) {
    why = std::string("cannot start gnuplot: ") + std::strerror(e);
    return -1;
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) {
      why = std::string("waitpid: ") + std::strerror(errno);
      return -1;
    }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  why = "gnuplot was killed by signal " + std::to_string(WTERMSIG(status));
  return -1;
}

class progress_bar {
 public:
  progress_bar(bool on, std::string label, std::size_t total)
      : on_(on && isatty(STDOUT_FILENO)), label_(std::move(label)), total_(total) {}
  void update(std::size_t done) {
    if (!on_ || total_ == 0) return;
    const int pct = int(done * 100 / total_);
    if (pct == last_) return;
    last_ = pct;
    const int width = 40, fill = pct * width / 100;
    std::printf("\r%-28s [%.*s%*s] %3d%%", label_.c_str(), fill, "########################################",
                width - fill, "", pct);
    std::fflush(stdout);
  }
  ~progress_bar() {
    if (on_ && last_ >= 0) std::printf("\r%*s\r", 80, "");
  }

 private:
  bool on_;
  std::string label_;
  std::size_t total_;
  int last_ = -1;
};

template <class Policy, std::size_t PageSize>
outcome replay(const std::vector<trace_request>& trace, const options& o, page_size<PageSize> ps,
               const std::string& policy_name, std::uint64_t capacity) {
  outcome r;
  r.policy = policy_name;
  r.capacity = capacity;
  r.page_tokens = ps.tokens();
  const std::size_t capacity_pages = capacity == unbounded ? std::numeric_limits<std::size_t>::max()
                                                           : std::size_t(capacity / ps.tokens());
  radix_index<Policy, PageSize> idx(ps, index_options{.model = 1});
  const namespace_id ns{0};
  match_result m;
  // Expanded prompts of the request being served and, for look-ahead, of the queued ones.
  std::deque<std::vector<token_id>> queue;
  std::vector<std::vector<token_id>> spare;
  std::size_t next_to_queue = 0;
  constexpr bool hook = look_ahead_policy<Policy>;
  const std::size_t window = hook ? std::max<std::size_t>(o.window, 1) : 1;
  clock_type::duration index_time{}, expand_time{};
  auto cpu_now = [] {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
  };
  rusage usage0;
  getrusage(RUSAGE_THREAD, &usage0);
  progress_bar bar(o.progress && !o.csv, policy_name + " " + (capacity == unbounded ? std::string("inf") : std::to_string(capacity)), trace.size());

  for (std::size_t i = 0; i < trace.size(); ++i) {
    while (next_to_queue < trace.size() && next_to_queue < i + window) {
      const auto t0 = clock_type::now();
      std::vector<token_id> t;
      if (!spare.empty()) {
        t = std::move(spare.back());
        spare.pop_back();
      }
      expand_prompt(trace[next_to_queue], t);
      const auto t1 = clock_type::now();
      if constexpr (hook) idx.expect(ns, t);  // a request entered the scheduler's queue
      expand_time += t1 - t0;
      index_time += clock_type::now() - t1;
      queue.push_back(std::move(t));
      ++next_to_queue;
    }
    const std::vector<token_id>& tokens = queue.front();
    const bool shared_rule = o.priority_rule == "shared";
    const std::uint8_t priority = !shared_rule && trace[i].input_length <= o.priority_below ? 1 : 0;

    const double c0 = cpu_now();
    const auto t0 = clock_type::now();
    if constexpr (hook) idx.unexpect(ns, tokens);  // it leaves the queue: served now
    (void)idx.match_and_insert(ns, tokens, m, on_device(device_slot{0}), match_options{.priority = priority},
                               insert_options{.priority = priority});  // match, then insert: one walk
    r.hit_tokens += m.size() * ps.tokens();
    if constexpr (std::same_as<Policy, priority_lru>)
      if (shared_rule && !m.empty())  // the shared prefix is retained first
        idx.match(ns, std::span(tokens).first(m.size() * ps.tokens()), m, match_options{.priority = 1});
    if (idx.pages_in(tier_id::device) > capacity_pages)
      r.evicted += idx.evict(tier_id::device, idx.pages_in(tier_id::device) - capacity_pages,
                             [](const victim&) { return true; });
    index_time += clock_type::now() - t0;
    r.index_cpu_s += cpu_now() - c0;

    r.prompt_tokens += tokens.size();
    r.pages += ps.full_pages(tokens.size());
    r.peak_pages = std::max(r.peak_pages, idx.pages());
    ++r.requests;
    spare.push_back(std::move(queue.front()));
    queue.pop_front();
    bar.update(i + 1);
  }
  r.index_s = std::chrono::duration<double>(index_time).count();
  r.expand_s = std::chrono::duration<double>(expand_time).count();
  r.bytes_per_page = idx.pages() ? double(idx.memory_bytes()) / double(idx.pages()) : 0;
  rusage usage1;
  getrusage(RUSAGE_THREAD, &usage1);
  auto secs = [](const timeval& a, const timeval& b) { return double(b.tv_sec - a.tv_sec) + 1e-6 * double(b.tv_usec - a.tv_usec); };
  const double user_s = secs(usage0.ru_utime, usage1.ru_utime), sys_s = secs(usage0.ru_stime, usage1.ru_stime);
  r.sys_share = user_s + sys_s > 0 ? sys_s / (user_s + sys_s) : 0;
  r.user_s = user_s;
  r.sys_s = sys_s;
  r.minor_faults = usage1.ru_minflt - usage0.ru_minflt;
  return r;
}

template <std::size_t PageSize>
outcome replay_policy(const std::vector<trace_request>& trace, const options& o, page_size<PageSize> ps,
                      const std::string& policy, std::uint64_t capacity) {
  if (policy == "lru") return replay<lru>(trace, o, ps, policy, capacity);
  if (policy == "lfu-aging") return replay<lfu_aging>(trace, o, ps, policy, capacity);
  if (policy == "priority-lru") return replay<priority_lru>(trace, o, ps, policy, capacity);
  return replay<look_ahead<lru>>(trace, o, ps, policy, capacity);
}

outcome run_one(const std::vector<trace_request>& trace, const options& o, const std::string& policy,
                std::uint64_t capacity) {
  // Common page sizes are compile-time constants; any other runs with a run-time page size.
  switch (o.page_tokens) {
    case 16: return replay_policy(trace, o, page_size<16>{}, policy, capacity);
    case 32: return replay_policy(trace, o, page_size<32>{}, policy, capacity);
    case 64: return replay_policy(trace, o, page_size<64>{}, policy, capacity);
    case 512: return replay_policy(trace, o, page_size<512>{}, policy, capacity);
    default: return replay_policy(trace, o, page_size<>(o.page_tokens), policy, capacity);
  }
}

std::string capacity_text(std::uint64_t c) { return c == unbounded ? "inf" : std::to_string(c); }

const char* csv_header =
    "policy,capacity_tokens,page_tokens,requests,prompt_tokens,hit_tokens,hit_ratio,index_s,requests_per_s,"
    "ns_per_page,expand_s,parse_s,evicted_pages,peak_pages,bytes_per_page,cpu_ns_per_page,sys_share,minor_faults\n";

// Index time per whole page. The trace is checked to hold at least one whole page before any run.
double ns_per_page(const outcome& r) { return r.pages ? r.index_s * 1e9 / double(r.pages) : 0; }

void print_csv(std::FILE* f, const outcome& r, double parse_s) {
  std::fprintf(f, "%s,%s,%zu,%llu,%llu,%llu,%.6f,%.6f,%.1f,%.2f,%.6f,%.6f,%llu,%zu,%.1f,%.2f,%.4f,%ld\n", r.policy.c_str(),
               capacity_text(r.capacity).c_str(), r.page_tokens, (unsigned long long)r.requests,
               (unsigned long long)r.prompt_tokens, (unsigned long long)r.hit_tokens, r.hit_ratio(), r.index_s,
               double(r.requests) / r.index_s, ns_per_page(r), r.expand_s, parse_s,
               (unsigned long long)r.evicted, r.peak_pages, r.bytes_per_page,
               r.pages ? r.index_cpu_s * 1e9 / double(r.pages) : 0, r.sys_share, r.minor_faults);
}

void print_human(const outcome& r, double parse_s) {
  std::printf("trace          %llu requests, %llu prompt tokens, %zu-token pages, %llu whole pages\n",
              (unsigned long long)r.requests, (unsigned long long)r.prompt_tokens, r.page_tokens,
              (unsigned long long)r.pages);
  std::printf("index          policy %s, capacity %s tokens\n", r.policy.c_str(), capacity_text(r.capacity).c_str());
  std::printf("prefix hits    %llu tokens = %.2f%% of prompt tokens (%llu pages evicted, peak %zu pages)\n",
              (unsigned long long)r.hit_tokens, 100 * r.hit_ratio(), (unsigned long long)r.evicted, r.peak_pages);
  std::printf("index work     %.3f s: %.0f requests/s, %.1f ns per page (match + insert + evict)\n", r.index_s,
              double(r.requests) / r.index_s, ns_per_page(r));
  std::printf("index CPU      %.3f s: %.1f ns per page on the thread's CPU clock (the wall figure above includes\n"
              "               time the core spent on other processes)\n",
              r.index_cpu_s, r.pages ? r.index_cpu_s * 1e9 / double(r.pages) : 0);
  std::printf("not timed in   parse %.3f s, token expansion %.3f s; index bookkeeping %.1f B per cached page\n",
              parse_s, r.expand_s, r.bytes_per_page);
  std::printf("system time    %.1f%% of the replay's CPU time (%.3f s system, %.3f s user, expansion included),\n"
              "               %ld minor page faults\n",
              100 * r.sys_share, r.sys_s, r.user_s, r.minor_faults);
}

int sweep(const std::vector<trace_request>& trace, const options& o, double parse_s) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  if (ec || !fs::is_directory(o.out_dir)) {
    std::fprintf(stderr, "kvtier-replay: cannot create the --out directory %s (%s); give a writable directory\n",
                 o.out_dir.c_str(), ec ? ec.message().c_str() : "a file is in the way");
    return 1;
  }
  const fs::path csv = fs::path(o.out_dir) / "sweep.csv";
  std::FILE* f = std::fopen(csv.c_str(), "w");
  if (!f) {
    std::fprintf(stderr, "kvtier-replay: cannot write %s (%s); give a writable --out directory\n", csv.c_str(),
                 std::strerror(errno));
    return 1;
  }
  std::fputs(csv_header, f);
  std::printf("%-14s %14s %10s %10s %12s %12s %10s\n", "policy", "capacity", "hit ratio", "index s", "ns/page",
              "cpu ns/page", "B/page");
  std::uint64_t max_finite = 0;
  for (const auto& c : o.capacities)
    if (c != unbounded) max_finite = std::max(max_finite, c);
  for (const auto& policy : o.policies)
    for (const auto capacity : o.capacities) {
      const outcome r = run_one(trace, o, policy, capacity);
      print_csv(f, r, parse_s);
      std::fflush(f);
      std::printf("%-14s %14s %9.2f%% %10.3f %12.1f %12.1f %10.1f\n", policy.c_str(), capacity_text(capacity).c_str(),
                  100 * r.hit_ratio(), r.index_s, ns_per_page(r), r.pages ? r.index_cpu_s * 1e9 / double(r.pages) : 0,
                  r.bytes_per_page);
      std::fflush(stdout);
    }
  std::fclose(f);
  // The plot: unbounded capacity is drawn as a dashed line (gnuplot cannot place inf on a log axis).
  const fs::path plot = fs::path(o.out_dir) / "sweep.gp";
  const fs::path png = fs::path(o.out_dir) / "sweep.png";
  {
    std::ofstream gp(plot);
    // Every string from the command line goes in quoted (gnuplot_quote); --out has no control
    // characters (parse_args), and the title's file name has them replaced.
    std::string trace_name = fs::path(o.trace).filename().string();
    for (char& c : trace_name)
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
    gp << "set terminal pngcairo size 900,560 noenhanced\nset output " << gnuplot_quote(png.string()) << "\n"
       << "set datafile separator ','\nset logscale x\nset key bottom right\nset grid\n"
       << "set xlabel 'capacity (tokens)'\nset ylabel 'prefix hit ratio (%)'\n"
       << "set title " << gnuplot_quote("kvtier-replay: " + trace_name + ", " + std::to_string(o.page_tokens) + "-token pages")
       << "\n";
    gp << "plot ";
    for (std::size_t k = 0; k < o.policies.size(); ++k) {
      if (k) gp << ", ";
      gp << gnuplot_quote(csv.string()) << " using (strcol(1) eq " << gnuplot_quote(o.policies[k])
         << " && strcol(2) ne 'inf' ? $2 : 1/0):($7*100) with linespoints title " << gnuplot_quote(o.policies[k]);
    }
    // Unbounded reference line (the same for every policy).
    gp << ", " << gnuplot_quote(csv.string()) << " using (strcol(2) eq 'inf' ? " << (max_finite ? max_finite : 1)
       << " : 1/0):($7*100) with points pt 7 ps 1.5 lc rgb 'black' title 'unbounded (drawn at the largest capacity)'\n";
  }
  // gnuplot runs from an argv (never through a shell): no file name can become a command.
  std::string why;
  const int rc = run_gnuplot(plot.string(), why);
  if (rc == 0) {
    std::printf("wrote %s and %s\n", csv.c_str(), png.c_str());
    return 0;
  }
  if (rc > 0) why = "gnuplot exited with status " + std::to_string(rc);
  std::printf("wrote %s; no PNG (%s: install gnuplot, e.g. scripts/install-deps --bench, or plot %s yourself)\n",
              csv.c_str(), why.c_str(), plot.c_str());
  return 1;
}

// The largest prompt of the trace, in tokens.
std::uint64_t longest_prompt(const std::vector<trace_request>& trace) {
  std::uint64_t n = 0;
  for (const trace_request& r : trace) n = std::max(n, r.input_length);
  return n;
}

// What a std::bad_alloc means here and what to do about it.
void report_out_of_memory(const options& o, const char* stage, const std::vector<trace_request>& trace) {
  std::fprintf(stderr, "kvtier-replay: out of memory while %s %s", stage, o.trace.c_str());
  if (!trace.empty()) {
    const std::uint64_t n = longest_prompt(trace);
    std::fprintf(stderr, " (its longest prompt has %llu tokens, %.1f GiB once expanded; look-ahead holds up to --window %zu "
                         "expanded prompts at once)",
                 (unsigned long long)n, double(n) * sizeof(token_id) / double(1ull << 30), o.window);
  }
  std::fprintf(stderr, ".\nThe process may not allocate that much: raise its memory limit (ulimit -v), or replay a trace "
                       "without the largest requests.\n");
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse_args(argc, argv);
  std::vector<trace_request> trace;
  const auto t0 = clock_type::now();
  try {
    trace = read_mooncake_trace(o.trace);
  } catch (const std::bad_alloc&) {
    trace.clear();
    report_out_of_memory(o, "reading", trace);
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvtier-replay: %s\n", e.what());
    return 1;
  }
  const double parse_s = std::chrono::duration<double>(clock_type::now() - t0).count();
  if (trace.empty()) {
    std::fprintf(stderr, "kvtier-replay: %s holds no requests\n", o.trace.c_str());
    return 1;
  }
  if (const std::uint64_t longest = longest_prompt(trace); longest < o.page_tokens) {
    std::fprintf(stderr,
                 "kvtier-replay: no prompt of %s fills one %zu-token page (the longest has %llu tokens), so nothing "
                 "could be cached; give a --page-size of at most %llu\n",
                 o.trace.c_str(), o.page_tokens, (unsigned long long)longest, (unsigned long long)longest);
    return 1;
  }
  try {
    if (o.sweep) return sweep(trace, o, parse_s);
    const outcome r = run_one(trace, o, o.policy, o.capacity);
    if (o.csv) {
      std::fputs(csv_header, stdout);
      print_csv(stdout, r, parse_s);
    } else {
      print_human(r, parse_s);
    }
  } catch (const std::bad_alloc&) {
    report_out_of_memory(o, "replaying", trace);
    return 1;
  }
  return 0;
}
