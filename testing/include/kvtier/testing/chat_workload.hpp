#pragma once
// A deterministic multi-turn chat workload: sessions with growing histories that start from a
// few shared system prompts, spread over namespaces (tenants). Each request's prompt is the
// session's whole history; after it runs, the reply and the next user message extend it.
// Used by the end-to-end tests, the bench and the demo.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier/core/strong_id.hpp"

namespace kvtier::testing {

struct chat_workload_config {
  std::size_t sessions = 200;             // conversations in total
  std::size_t concurrent = 16;            // conversations open at a time (interleaved turns)
  std::size_t min_turns = 2, max_turns = 8;
  std::size_t system_prompts = 4;         // shared prefixes, per namespace
  std::size_t system_tokens = 512;
  std::size_t min_user_tokens = 16, max_user_tokens = 160;
  std::size_t min_reply_tokens = 16, max_reply_tokens = 240;
  std::size_t namespaces = 2;
  std::size_t vocabulary = 32000;
  std::uint64_t seed = 1;

  void validate() const {
    if (sessions == 0 || concurrent == 0 || namespaces == 0 || system_prompts == 0 || vocabulary < 2)
      throw config_error("kvtier: chat_workload needs sessions, concurrency, namespaces, prompts and a vocabulary");
    if (min_turns == 0 || min_turns > max_turns || min_user_tokens > max_user_tokens || min_reply_tokens > max_reply_tokens)
      throw config_error("kvtier: chat_workload ranges need 0 < min <= max");
  }
};

struct chat_request {
  std::uint64_t name_space = 0;
  std::size_t session = 0;
  std::size_t turn = 0;              // 0 for the first turn of a session
  std::vector<token_id> prompt;      // the whole history, system prompt first
  std::vector<token_id> reply;       // what the model generates for this turn
};

class chat_workload {
 public:
  explicit chat_workload(chat_workload_config cfg) : cfg_((cfg.validate(), cfg)), rng_(cfg.seed) {
    // System prompts per namespace: token streams seeded by (namespace, prompt).
    system_.resize(cfg_.namespaces * cfg_.system_prompts);
    for (std::size_t i = 0; i < system_.size(); ++i) {
      std::mt19937_64 r(cfg_.seed * 1'000'003 + i);
      system_[i] = random_tokens(r, cfg_.system_tokens);
    }
  }

  const chat_workload_config& config() const noexcept { return cfg_; }

  // The next request, or nullopt when every session has run all its turns.
  std::optional<chat_request> next() {
    while (open_.size() < cfg_.concurrent && started_ < cfg_.sessions) open_.push_back(start_session());
    if (open_.empty()) return std::nullopt;
    const std::size_t pick = std::uniform_int_distribution<std::size_t>(0, open_.size() - 1)(rng_);
    session& s = open_[pick];
    chat_request req;
    req.name_space = s.name_space;
    req.session = s.id;
    req.turn = s.turn;
    // History so far plus this turn's user message.
    append(s.history, random_tokens(rng_, uniform(cfg_.min_user_tokens, cfg_.max_user_tokens)));
    req.prompt = s.history;
    req.reply = random_tokens(rng_, uniform(cfg_.min_reply_tokens, cfg_.max_reply_tokens));
    append(s.history, req.reply);
    if (++s.turn == s.turns) {
      open_[pick] = std::move(open_.back());
      open_.pop_back();
    }
    return req;
  }

 private:
  struct session {
    std::size_t id;
    std::uint64_t name_space;
    std::size_t turn;
    std::size_t turns;
    std::vector<token_id> history;
  };

  std::size_t uniform(std::size_t lo, std::size_t hi) {
    return std::uniform_int_distribution<std::size_t>(lo, hi)(rng_);
  }
  template <class Rng>
  std::vector<token_id> random_tokens(Rng& r, std::size_t n) const {
    std::uniform_int_distribution<std::int32_t> d(1, std::int32_t(cfg_.vocabulary - 1));
    std::vector<token_id> out(n);
    for (auto& t : out) t = token_id{d(r)};
    return out;
  }
  static void append(std::vector<token_id>& to, const std::vector<token_id>& what) {
    to.insert(to.end(), what.begin(), what.end());
  }
  session start_session() {
    session s;
    s.id = started_++;
    s.name_space = uniform(0, cfg_.namespaces - 1);
    s.turn = 0;
    s.turns = uniform(cfg_.min_turns, cfg_.max_turns);
    s.history = system_[s.name_space * cfg_.system_prompts + uniform(0, cfg_.system_prompts - 1)];
    return s;
  }

  chat_workload_config cfg_;
  std::mt19937_64 rng_;
  std::vector<std::vector<token_id>> system_;
  std::vector<session> open_;
  std::size_t started_ = 0;
};

}  // namespace kvtier::testing
