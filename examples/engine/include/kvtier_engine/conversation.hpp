#pragma once
// Multi-turn conversations over an engine, and "other traffic" that pushes a conversation's pages
// down the hierarchy (device → host → slow tiers) the way other users' requests would. Used by the
// chat mode of kvtier-engine and the reuse tests.
#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier/core/strong_id.hpp"
#include "kvtier/core/tier.hpp"
#include "kvtier_engine/engine.hpp"

namespace kvtier_engine {

// One conversation: the token history (BOS first), grown by each user message and reply.
struct conversation {
  kvtier::namespace_id ns{};
  std::vector<kvtier::token_id> history;

  // This turn's prompt: the history plus the user's tokens.
  std::span<const kvtier::token_id> ask(std::span<const kvtier::token_id> user) {
    if (history.empty()) history.push_back(bos_token);
    history.insert(history.end(), user.begin(), user.end());
    return history;
  }
  // The reply joins the history (a BOS that ended it does not).
  void answer(std::span<const kvtier::token_id> reply) {
    for (const auto t : reply)
      if (t != bos_token) history.push_back(t);
  }
};

// Where one turn's prefix came from: hits at lookup by tier, with storage hits split by the slow
// tier that actually delivered them (a page the file tier had evicted is retried on Redis).
struct served_from {
  std::uint64_t device = 0, host = 0, disk = 0, remote = 0;  // tokens
};

// Runs `E::generate` and reports, besides its result, which tiers served the prefix.
template <class Engine>
kvtier::result<turn_result> generate_traced(Engine& e, kvtier::namespace_id ns, std::span<const kvtier::token_id> prompt,
                                            const generate_options& o, served_from& from) {
  const auto before = e.cache().stats();
  auto r = e.generate(ns, prompt, o);
  if (!r) return r;
  const auto& after = e.cache().stats();
  const std::size_t P = Engine::page_tokens;
  from.device = r->hit_tokens[std::size_t(kvtier::tier_id::device)];
  from.host = r->hit_tokens[std::size_t(kvtier::tier_id::host)];
  from.disk = (after.pages_fetched[std::size_t(kvtier::tier_id::disk)] - before.pages_fetched[std::size_t(kvtier::tier_id::disk)]) * P;
  from.remote = (after.pages_fetched[std::size_t(kvtier::tier_id::remote)] - before.pages_fetched[std::size_t(kvtier::tier_id::remote)]) * P;
  return r;
}

// Other users' traffic in namespace `ns`: prompts of random tokens (each up to `request_tokens`)
// prefilled and committed, `pages` whole pages in all, so that least-recently-used pages of everyone
// else move down a tier (or out). Returns the first error.
template <class Engine>
kvtier::result<void> other_traffic(Engine& e, kvtier::namespace_id ns, std::size_t pages, std::size_t request_tokens,
                                   std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const std::size_t P = Engine::page_tokens;
  std::uniform_int_distribution<std::int32_t> pick(3, std::int32_t(e.config().vocab) - 1);
  generate_options o;
  o.max_new_tokens = 1;
  std::vector<kvtier::token_id> prompt;
  for (std::size_t done = 0; done < pages;) {
    const std::size_t n = std::min(request_tokens / P, pages - done) * P;
    prompt.assign(1, bos_token);
    while (prompt.size() < n + 1) prompt.push_back(kvtier::token_id{pick(rng)});
    if (auto r = e.generate(ns, prompt, o); !r) return r.err();
    e.cache().drain();  // backups and write-backs land before the next request looks
    done += n / P;
  }
  return {};
}

}  // namespace kvtier_engine
