#pragma once
// scheduling_policy: which queued request the server admits next. The server asks a policy for a
// priority per queued request each time it admits (lower first, ties by arrival) and shows it:
//  - the request: arrival, prompt length, and (when the policy says uses_cached_prefix) the cached
//    prefix of its prompt by tier, as a lookup would find it now (device, host, disk/remote);
//  - what is in flight: running requests by phase, host → device pages still loading, slow-tier
//    pages being fetched, the step's token budget and the free device pages.
//  - a prefix identity per queued request (the content key of the first page of its prompt that is
//    ready neither on the device nor on host) and the same key of every admitted request that has
//    not committed its prompt yet (in flight, or admitted earlier in the same round);
// and takes the answer `not_now` (+infinity): the request stays queued this round. The server asks
// again, with what it admitted so far this round, right before it admits each request, so a policy
// can defer a request whose missing prefix another request is computing or fetching (Strata's
// delay-hit avoidance: once the first commits, the later one finds the pages cached).
//
// A type opts in with `using kvtier_serving_policy = kvtier_engine::serving::policy_tag;`.
#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string_view>

#include "kvtier/core/tier.hpp"

namespace kvtier_engine::serving {

struct policy_tag {};

// A priority meaning "leave this request queued this round".
inline constexpr double not_now = std::numeric_limits<double>::infinity();

// A queued request as a policy sees it.
struct queued_request {
  std::size_t id = 0;
  double arrival_s = 0;
  std::size_t prompt_tokens = 0;
  // Tokens of the cached prefix by the fastest tier holding each page (device, host, disk, remote),
  // filled only for policies with uses_cached_prefix; whole pages, at most the prompt.
  std::array<std::size_t, kvtier::tier_count> cached_tokens{};
  // Content key of the first whole page of the prompt ready neither on the device nor on host (a
  // chained hash of the namespace and every token up to that page's end: two requests share it iff
  // they share that prefix); 0 when nothing is missing. Filled with cached_tokens.
  std::uint64_t missing_prefix = 0;
  std::size_t cached_total() const noexcept {
    std::size_t s = 0;
    for (std::size_t t : cached_tokens) s += t;
    return s;
  }
};

// What the server has in flight when it admits.
struct in_flight {
  double now_s = 0;
  std::size_t running = 0, prefilling = 0, decoding = 0, fetching = 0;
  std::size_t load_pages = 0;         // host → device pages queued and not yet landed
  std::size_t fetch_pages = 0;        // slow tier → host pages requested by admitted requests
  std::size_t token_budget = 0;       // tokens a step may compute
  std::size_t free_device_pages = 0;
  // missing_prefix of every admitted request that has not committed its prompt yet (fetching or
  // prefilling), then of those admitted earlier in this round; 0s left out.
  std::span<const std::uint64_t> pending_prefixes;
  bool pending(std::uint64_t key) const noexcept {
    if (key == 0) return false;
    for (std::uint64_t k : pending_prefixes)
      if (k == key) return true;
    return false;
  }
};

namespace detail {
template <class P>
concept declares_serving_policy = std::same_as<typename P::kvtier_serving_policy, policy_tag>;
}  // namespace detail

// clang-format off
template <class P>
concept scheduling_policy =
  detail::declares_serving_policy<P> &&
  std::copy_constructible<P> &&
  requires(const P& p, const queued_request& q, const in_flight& f) {
    { P::uses_cached_prefix } -> std::convertible_to<bool>;      // the server fills cached_tokens
    { p.name() } -> std::convertible_to<std::string_view>;
    { p.priority(q, f) } -> std::same_as<double>;                // lower is admitted first; not_now: not this round
  };
// clang-format on

// First come, first served.
struct fcfs {
  using kvtier_serving_policy = policy_tag;
  static constexpr bool uses_cached_prefix = false;
  std::string_view name() const noexcept { return "fcfs"; }
  double priority(const queued_request& q, const in_flight&) const noexcept { return q.arrival_s; }
};

// Longest cached prefix first (SGLang's lpm), whatever tier holds it; FCFS among equals.
struct longest_prefix {
  using kvtier_serving_policy = policy_tag;
  static constexpr bool uses_cached_prefix = true;
  std::string_view name() const noexcept { return "lpm"; }
  double priority(const queued_request& q, const in_flight&) const noexcept { return -double(q.cached_total()); }
};

static_assert(scheduling_policy<fcfs>);
static_assert(scheduling_policy<longest_prefix>);

}  // namespace kvtier_engine::serving
