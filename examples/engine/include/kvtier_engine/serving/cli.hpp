#pragma once
// The command line that kvtier-serve and kvtier-simulate share: value readers that exit 2 with a
// message on a bad value, comma lists, the workload options (so that one command line describes
// the same requests in both programs), building the workload at a sweep point, and policy names
// BASE[+FEATURE...] (BASE fcfs|lpm; FEATURE delay-hit|balance|bubble|strata (all three)|prefetch).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier_engine/serving/workloads.hpp"

namespace kvtier_engine::serving::cli {

// Reads option values from argv; `prog` prefixes the messages.
struct arg_reader {
  int argc;
  char** argv;
  const char* prog;

  std::string need(int& i) const {
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s: %s needs a value\n", prog, argv[i]);
      std::exit(2);
    }
    return argv[++i];
  }
  std::size_t count(int& i) const {
    const std::string name = argv[i], v = need(i);
    char* end = nullptr;
    const long long x = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || x < 0) {
      std::fprintf(stderr, "%s: %s takes a non-negative integer, not '%s'\n", prog, name.c_str(), v.c_str());
      std::exit(2);
    }
    return std::size_t(x);
  }
  double real(int& i) const {
    const std::string name = argv[i], v = need(i);
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0' || !(x >= 0)) {
      std::fprintf(stderr, "%s: %s takes a non-negative number, not '%s'\n", prog, name.c_str(), v.c_str());
      std::exit(2);
    }
    return x;
  }
};

inline std::vector<std::string> split(const std::string& s, char sep = ',') {
  std::vector<std::string> v;
  std::size_t i = 0;
  for (;;) {
    const std::size_t c = s.find(sep, i);
    v.push_back(s.substr(i, c == std::string::npos ? std::string::npos : c - i));
    if (c == std::string::npos) return v;
    i = c + 1;
  }
}

// "R1,R2,..." of positive numbers. Throws config_error.
inline std::vector<double> positive_list(const std::string& s, const std::string& what) {
  std::vector<double> v;
  for (const auto& item : split(s)) {
    char* end = nullptr;
    const double x = std::strtod(item.c_str(), &end);
    if (item.empty() || *end != '\0' || !(x > 0)) throw kvtier::config_error(what + " takes positive numbers separated by commas");
    v.push_back(x);
  }
  return v;
}

// The workload options of both programs.
struct workload_options {
  std::string kind = "longdoc";  // longdoc | chat | trace
  longdoc_options longdoc;
  chat_options chat;
  mooncake_options trace;
  double duration_s = 0;  // longdoc: requests = rate × duration at each sweep point (0: --requests)
  double warmup_s = 0;    // longdoc: one warm-up request per document first (see add_warmup)
};

inline constexpr const char* workload_usage =
    " workload:  --workload longdoc|chat|trace\n"
    "   longdoc: --docs D --questions Q --doc-min N --doc-max N --question-tokens N --answer-tokens N\n"
    "            --requests N --rate R (req/s) --zipf S --workload-seed N\n"
    "   chat:    --sessions N --turns N --system-tokens N --user-min N --user-max N --reply N --rate R (sessions/s) --think S\n"
    "   trace:   --trace FILE --time-scale F --limit N --max-output N\n"
    "   longdoc: --duration S (requests = rate x S at each sweep point) --warmup S (each document once at time 0,\n"
    "            the measured requests from S on; the warm-up is served but left out of every figure)\n";

// Consumes argv[i] (and its value) when it is a workload option; false otherwise.
inline bool parse_workload_arg(const arg_reader& r, int& i, workload_options& w) {
  const std::string_view a = r.argv[i];
  if (a == "--workload") w.kind = r.need(i);
  else if (a == "--docs") w.longdoc.documents = r.count(i);
  else if (a == "--questions") w.longdoc.questions = r.count(i);
  else if (a == "--doc-min") w.longdoc.doc_min = r.count(i);
  else if (a == "--doc-max") w.longdoc.doc_max = r.count(i);
  else if (a == "--question-tokens") w.longdoc.question_tokens = r.count(i);
  else if (a == "--answer-tokens") w.longdoc.answer_tokens = r.count(i);
  else if (a == "--requests") w.longdoc.requests = r.count(i);
  else if (a == "--rate") w.longdoc.rate = w.chat.rate = r.real(i);
  else if (a == "--zipf") w.longdoc.zipf = r.real(i);
  else if (a == "--workload-seed") w.longdoc.seed = w.chat.seed = r.count(i);
  else if (a == "--sessions") w.chat.sessions = r.count(i);
  else if (a == "--turns") w.chat.turns = r.count(i);
  else if (a == "--system-tokens") w.chat.system_tokens = r.count(i);
  else if (a == "--user-min") w.chat.user_min = r.count(i);
  else if (a == "--user-max") w.chat.user_max = r.count(i);
  else if (a == "--reply") w.chat.reply_tokens = r.count(i);
  else if (a == "--think") w.chat.think_s = r.real(i);
  else if (a == "--trace") w.trace.path = r.need(i);
  else if (a == "--time-scale") w.trace.time_scale = r.real(i);
  else if (a == "--limit") w.trace.limit = r.count(i);
  else if (a == "--max-output") w.trace.max_output = r.count(i);
  else if (a == "--duration") w.duration_s = r.real(i);
  else if (a == "--warmup") w.warmup_s = r.real(i);
  else return false;
  return true;
}

// Steady state for long-document QA: each document the workload asks about is asked once (its
// tokens without a question, one output token, arrival 0, in order of first use), and the measured
// requests arrive `warmup_s` later; the warm-up requests are flagged, served like any other, and
// left out of TTFT, throughput and every summary figure (request ids stay: they are appended).
inline void add_warmup(workload& w, std::size_t question_tokens, double warmup_s) {
  std::vector<std::size_t> docs;
  for (auto& r : w.requests) {
    if (std::find(docs.begin(), docs.end(), r.doc) == docs.end()) docs.push_back(r.doc);
    r.arrival_s += warmup_s;
  }
  const std::size_t n = w.requests.size();
  for (const std::size_t d : docs) {
    const request_spec* first = nullptr;
    for (std::size_t i = 0; i < n && !first; ++i)
      if (w.requests[i].doc == d) first = &w.requests[i];
    request_spec s;
    s.id = w.requests.size();
    s.doc = d;
    s.prompt.assign(first->prompt.begin(), first->prompt.end() - std::ptrdiff_t(question_tokens));
    s.max_new_tokens = 1;
    s.warmup = true;
    w.requests.push_back(std::move(s));
  }
}

// The workload at one sweep point (rate; for traces the time-scale factor; 0: as configured), token
// ids in [0, vocab), prompts within `context` (0: unchecked). Throws config_error.
inline workload make_workload(const workload_options& o, std::size_t vocab, std::size_t context, double point,
                              const std::string& prog) {
  if (o.kind == "longdoc") {
    longdoc_options l = o.longdoc;
    if (point > 0) l.rate = point;
    if (o.duration_s > 0) l.requests = std::max<std::size_t>(1, std::size_t(std::llround(l.rate * o.duration_s)));
    if (context && l.doc_max + l.question_tokens + l.answer_tokens > context)
      throw kvtier::config_error(prog + ": --doc-max + --question-tokens + --answer-tokens exceed the context (" +
                                 std::to_string(context) + "); raise --context or shorten the documents");
    workload w = longdoc_workload(l, vocab);
    if (o.warmup_s > 0) add_warmup(w, l.question_tokens, o.warmup_s);
    return w;
  }
  if (o.kind == "chat") {
    chat_options c = o.chat;
    if (point > 0) c.rate = point;
    if (context && c.system_tokens + c.turns * (c.user_max + c.reply_tokens) > context)
      throw kvtier::config_error(prog + ": a whole chat session exceeds the context (" + std::to_string(context) + ")");
    return chat_workload(c, vocab);
  }
  if (o.kind == "trace") {
    mooncake_options t = o.trace;
    if (point > 0) t.time_scale = point;
    t.context = context;
    return mooncake_workload(t, vocab);
  }
  throw kvtier::config_error(prog + ": --workload is longdoc, chat or trace");
}

// A policy name BASE[+FEATURE...]. Throws config_error.
struct policy_spec {
  bool lpm = false, prefetch = false;
  bool delay_hit = false, balance = false, bubble = false;
  bool io_aware() const noexcept { return delay_hit || balance || bubble; }
};
inline policy_spec parse_policy(const std::string& name, const std::string& prog) {
  policy_spec p;
  const auto parts = split(name, '+');
  if (parts[0] == "lpm") p.lpm = true;
  else if (parts[0] != "fcfs") throw kvtier::config_error(prog + ": policy '" + name + "' must start with fcfs or lpm");
  for (std::size_t k = 1; k < parts.size(); ++k) {
    const auto& f = parts[k];
    if (f == "delay-hit") p.delay_hit = true;
    else if (f == "balance") p.balance = true;
    else if (f == "bubble") p.bubble = true;
    else if (f == "strata") p.delay_hit = p.balance = p.bubble = true;
    else if (f == "prefetch") p.prefetch = true;
    else throw kvtier::config_error(prog + ": unknown policy feature '" + f + "' in '" + name + "'");
  }
  return p;
}

}  // namespace kvtier_engine::serving::cli
