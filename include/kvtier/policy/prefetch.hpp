#pragma once
// Prefetch policies: how long a scheduled request waits for slow-tier pages (slow tier → host)
// that prefetch(lease) started. Whatever has not arrived by then is computed instead.
//  - prefetch_best_effort: never wait; take what arrived, cancel the rest;
//  - prefetch_wait: wait until every fetch completed (or failed);
//  - prefetch_timeout: wait up to base + per_page × pages outstanding.
#include <chrono>
#include <concepts>
#include <cstddef>
#include <string_view>

#include "kvtier/core/error.hpp"

namespace kvtier {

// Opt-in tag: a prefetch policy declares `using kvtier_prefetch_policy = prefetch_policy_tag;`.
struct prefetch_policy_tag {};

namespace detail {
template <class P>
concept declares_prefetch_policy = std::same_as<typename P::kvtier_prefetch_policy, prefetch_policy_tag>;
}  // namespace detail

// clang-format off
template <class P>
concept prefetch_policy =
  std::copy_constructible<P> &&
  detail::declares_prefetch_policy<P> &&
  requires(const P& p, std::size_t pages_outstanding) {
    // How long the scheduler may wait, from the moment the request is scheduled, for
    // pages_outstanding pages still in flight. duration::max() means until all complete.
    { p.wait_budget(pages_outstanding) } noexcept -> std::same_as<std::chrono::nanoseconds>;
    { P::name } -> std::convertible_to<std::string_view>;
  };
// clang-format on

inline constexpr std::chrono::nanoseconds wait_forever = std::chrono::nanoseconds::max();

struct prefetch_best_effort {
  using kvtier_prefetch_policy = prefetch_policy_tag;
  static constexpr std::string_view name = "best effort";
  constexpr std::chrono::nanoseconds wait_budget(std::size_t) const noexcept { return std::chrono::nanoseconds{0}; }
};

struct prefetch_wait {
  using kvtier_prefetch_policy = prefetch_policy_tag;
  static constexpr std::string_view name = "wait";
  constexpr std::chrono::nanoseconds wait_budget(std::size_t) const noexcept { return wait_forever; }
};

// Waits base + per_page × outstanding pages, capped at cap: a long prefix is worth more waiting.
struct prefetch_timeout {
  using kvtier_prefetch_policy = prefetch_policy_tag;
  static constexpr std::string_view name = "timeout";

  constexpr prefetch_timeout(std::chrono::nanoseconds base_wait = std::chrono::microseconds{200},
                             std::chrono::nanoseconds per_page_wait = std::chrono::microseconds{20},
                             std::chrono::nanoseconds max_wait = std::chrono::milliseconds{50})
      : base(base_wait), per_page(per_page_wait), cap(max_wait) {
    if (base.count() < 0 || per_page.count() < 0 || cap < base)
      throw config_error("kvtier: prefetch_timeout needs 0 <= base <= cap and per_page >= 0");
  }
  constexpr std::chrono::nanoseconds wait_budget(std::size_t outstanding) const noexcept {
    const auto room = (cap - base).count();
    const auto per = per_page.count();
    if (per != 0 && std::size_t(room / per) < outstanding) return cap;  // saturate, never overflow
    return base + per_page * static_cast<std::int64_t>(outstanding);
  }

  std::chrono::nanoseconds base;
  std::chrono::nanoseconds per_page;
  std::chrono::nanoseconds cap;
};

}  // namespace kvtier
