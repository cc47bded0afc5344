#pragma once
// The three workloads of a serving run, each a seeded, reproducible list of request_spec:
//  - mooncake_workload: a Mooncake-format trace, its blocks expanded exactly as kvtier-replay does
//    (examples/common/mooncake_trace.hpp), then folded into the model's vocabulary (id % vocab, so
//    equal blocks stay equal) and cut to the model's context; a time-scale factor and a request limit.
//  - longdoc_workload: long-document QA (LooGLE-like, as Strata measures): D documents of
//    [doc_min, doc_max] tokens, Q short questions each; Poisson arrivals at `rate`, the document of
//    each request drawn with Zipf(s) popularity, the question uniformly among its Q.
//  - chat_workload: multi-turn chat: S sessions arriving at `rate` (Poisson), T turns each behind a
//    shared system prompt; turn k+1 arrives an exponential think time after turn k finished, its
//    prompt the whole history (turn k's prompt and reply) plus new user tokens.
// Configuration errors throw kvtier::config_error.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/mooncake_trace.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/testing/splitmix64.hpp"
#include "kvtier_engine/serving/request.hpp"

namespace kvtier_engine::serving {

namespace detail {
// A splitmix64 stream: the same numbers on every platform (std distributions are not).
class rng {
 public:
  explicit rng(std::uint64_t seed) : s_(seed * 0x9e3779b97f4a7c15ull + 0x2545f4914f6cdd1dull) {}
  std::uint64_t next() noexcept { return kvtier::testing::splitmix64(s_ += 0x9e3779b97f4a7c15ull); }
  double uniform() noexcept { return double(next() >> 11) * 0x1.0p-53; }          // [0, 1)
  std::size_t below(std::size_t n) noexcept { return std::size_t(next() % n); }   // [0, n)
  std::size_t between(std::size_t lo, std::size_t hi) noexcept { return lo + below(hi - lo + 1); }
  double exponential(double mean) noexcept { return -mean * std::log1p(-uniform()); }

 private:
  std::uint64_t s_;
};
inline void random_tokens(rng& r, std::size_t n, std::size_t vocab, std::vector<kvtier::token_id>& out) {
  for (std::size_t i = 0; i < n; ++i) out.push_back(kvtier::token_id{std::int32_t(1 + r.below(vocab - 1))});
}
}  // namespace detail

struct mooncake_options {
  std::string path;
  double time_scale = 1.0;        // arrival = timestamp × time_scale (0.5: the trace twice as fast)
  std::size_t limit = 0;          // the first `limit` requests (0: all)
  std::size_t max_output = 0;     // cap on output_length (0: the trace's)
  std::size_t context = 0;        // prompt + output ≤ context (the model's seq_len): prompts are cut to fit
};

inline workload mooncake_workload(const mooncake_options& o, std::size_t vocab) {
  if (o.time_scale <= 0) throw kvtier::config_error("kvtier-serve: --time-scale must be positive");
  if (vocab < 2) throw kvtier::config_error("kvtier-serve: a vocabulary of at least 2 tokens");
  const auto trace = kvtier::examples::read_mooncake_trace(o.path);
  workload w{"mooncake", {}, vocab};
  std::vector<kvtier::token_id> t;
  for (std::size_t i = 0; i < trace.size() && (o.limit == 0 || i < o.limit); ++i) {
    const auto& r = trace[i];
    request_spec s;
    s.id = i;
    s.arrival_s = r.timestamp_ms / 1000.0 * o.time_scale;
    s.max_new_tokens = std::max<std::size_t>(1, o.max_output ? std::min<std::size_t>(r.output_length, o.max_output) : r.output_length);
    kvtier::examples::expand_prompt(r, t);  // kvtier-replay's tokens
    std::size_t n = t.size();
    if (o.context) {
      if (s.max_new_tokens + 1 >= o.context) s.max_new_tokens = o.context / 2;
      n = std::min(n, o.context - s.max_new_tokens);
    }
    s.prompt.resize(n);
    for (std::size_t k = 0; k < n; ++k) s.prompt[k] = kvtier::token_id{std::int32_t(std::uint32_t(t[k].value()) % vocab)};
    w.requests.push_back(std::move(s));
  }
  return w;
}

struct longdoc_options {
  std::size_t documents = 16;      // D
  std::size_t questions = 8;       // Q per document
  std::size_t doc_min = 8192, doc_max = 32768;  // document tokens
  std::size_t question_tokens = 32;
  std::size_t answer_tokens = 32;  // tokens generated per request
  std::size_t requests = 0;        // 0: D × Q
  double rate = 1.0;               // requests per second (Poisson)
  double zipf = 1.0;               // popularity exponent (0: uniform)
  std::uint64_t seed = 1;
};

inline workload longdoc_workload(const longdoc_options& o, std::size_t vocab) {
  if (o.documents == 0 || o.questions == 0 || o.doc_min == 0 || o.doc_min > o.doc_max || o.question_tokens == 0 ||
      o.answer_tokens == 0)
    throw kvtier::config_error("kvtier-serve: long-document QA needs documents, questions, 0 < doc-min <= doc-max, question and answer tokens");
  if (!(o.rate > 0)) throw kvtier::config_error("kvtier-serve: --rate must be positive");
  if (o.zipf < 0) throw kvtier::config_error("kvtier-serve: --zipf must be >= 0");
  detail::rng r(o.seed);
  std::vector<std::vector<kvtier::token_id>> docs(o.documents);
  for (auto& d : docs) detail::random_tokens(r, r.between(o.doc_min, o.doc_max), vocab, d);
  std::vector<std::vector<kvtier::token_id>> questions(o.documents * o.questions);
  for (auto& q : questions) detail::random_tokens(r, o.question_tokens, vocab, q);
  std::vector<double> cdf(o.documents);  // Zipf: P(doc k) ∝ 1 / (k + 1)^s
  double sum = 0;
  for (std::size_t k = 0; k < o.documents; ++k) cdf[k] = sum += std::pow(double(k + 1), -o.zipf);
  workload w{"longdoc", {}, vocab};
  const std::size_t n = o.requests ? o.requests : o.documents * o.questions;
  double t = 0;
  for (std::size_t i = 0; i < n; ++i) {
    t += r.exponential(1.0 / o.rate);
    const double u = r.uniform() * sum;
    const std::size_t d = std::size_t(std::lower_bound(cdf.begin(), cdf.end(), u) - cdf.begin());
    const std::size_t q = r.below(o.questions);
    request_spec s;
    s.id = i;
    s.arrival_s = t;
    s.doc = std::min(d, o.documents - 1);
    s.prompt = docs[s.doc];
    s.prompt.insert(s.prompt.end(), questions[s.doc * o.questions + q].begin(), questions[s.doc * o.questions + q].end());
    s.max_new_tokens = o.answer_tokens;
    w.requests.push_back(std::move(s));
  }
  return w;
}

struct chat_options {
  std::size_t sessions = 8, turns = 4;
  std::size_t system_tokens = 64;     // a system prompt every session starts with
  std::size_t user_min = 16, user_max = 64;
  std::size_t reply_tokens = 24;
  double rate = 1.0;                  // sessions per second (Poisson)
  double think_s = 0.5;               // mean think time between a reply and the next turn
  std::uint64_t seed = 1;
};

inline workload chat_workload(const chat_options& o, std::size_t vocab) {
  if (o.sessions == 0 || o.turns == 0 || o.user_min == 0 || o.user_min > o.user_max || o.reply_tokens == 0)
    throw kvtier::config_error("kvtier-serve: chat needs sessions, turns, 0 < user-min <= user-max, reply tokens");
  if (!(o.rate > 0) || o.think_s < 0) throw kvtier::config_error("kvtier-serve: chat --rate > 0 and --think >= 0");
  detail::rng r(o.seed);
  std::vector<kvtier::token_id> system;
  detail::random_tokens(r, o.system_tokens, vocab, system);
  workload w{"chat", {}, vocab};
  double t = 0;
  for (std::size_t s = 0; s < o.sessions; ++s) {
    t += r.exponential(1.0 / o.rate);
    for (std::size_t k = 0; k < o.turns; ++k) {
      request_spec q;
      q.id = w.requests.size();
      q.session = s;
      q.turn = k;
      q.arrival_s = k == 0 ? t : r.exponential(o.think_s);
      q.parent = k == 0 ? no_parent : q.id - 1;
      if (k == 0) q.prompt = system;
      detail::random_tokens(r, r.between(o.user_min, o.user_max), vocab, q.prompt);
      q.max_new_tokens = o.reply_tokens;
      w.requests.push_back(std::move(q));
    }
  }
  return w;
}

}  // namespace kvtier_engine::serving
