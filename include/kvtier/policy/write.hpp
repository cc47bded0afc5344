#pragma once
// Write policies: when a page gets a copy one tier below (device → host, host → slow tier).
//  - write_through: back up as soon as the page enters the tier;
//  - selective_write_through: back up on the page's Nth hit (hot pages only);
//  - write_back: back up only when the page is evicted.
// A policy answers three questions; the cache runs the copies asynchronously and never blocks
// lookup on them. Each edge of the hierarchy has its own policy (device→host, host→slow).
#include <concepts>
#include <cstdint>
#include <string_view>

#include "kvtier/core/error.hpp"

namespace kvtier {

// Opt-in tag: a write policy declares `using kvtier_write_policy = write_policy_tag;`.
struct write_policy_tag {};

// What to do with a victim that has no copy in the tier below. A backup that cannot happen (the
// tier below is full, down or failing) never keeps the victim: it is dropped all the same (a future
// miss), so trouble below a tier never pins its pages nor stops eviction (docs/reliability.md).
enum class on_evict : std::uint8_t {
  backup,  // copy it down first (without waiting on slow-tier I/O), then free the slot
  drop,    // free the slot; the page is lost from the hierarchy below this tier
};

namespace detail {
template <class P>
concept declares_write_policy = std::same_as<typename P::kvtier_write_policy, write_policy_tag>;
}  // namespace detail

// clang-format off
template <class P>
concept write_policy =
  std::copy_constructible<P> &&
  detail::declares_write_policy<P> &&
  requires(const P& p, std::uint32_t hits) {
    { p.backup_on_insert() } noexcept -> std::same_as<bool>;     // copy down when the page is inserted
    { p.backup_on_hit(hits) } noexcept -> std::same_as<bool>;    // copy down on a hit (hits counts it)
    { p.victim_without_copy() } noexcept -> std::same_as<on_evict>;
    { P::name } -> std::convertible_to<std::string_view>;
  };
// clang-format on

// Whether the cache must count hits per page for P (its backup_on_hit can answer true). A policy
// that never backs up on a hit says `static constexpr bool counts_hits = false;` and saves lookup
// a counter update per page.
template <write_policy P>
inline constexpr bool write_policy_counts_hits = [] {
  if constexpr (requires { { P::counts_hits } -> std::convertible_to<bool>; }) return bool(P::counts_hits);
  else return true;
}();

// Back up every page when it enters the tier. Victims without a copy (their backup failed or is
// still queued) are backed up before they leave.
struct write_through {
  using kvtier_write_policy = write_policy_tag;
  static constexpr std::string_view name = "write-through";
  static constexpr bool counts_hits = false;
  constexpr bool backup_on_insert() const noexcept { return true; }
  constexpr bool backup_on_hit(std::uint32_t) const noexcept { return false; }
  constexpr on_evict victim_without_copy() const noexcept { return on_evict::backup; }
};

// Back up a page on its Nth hit; pages never hit that often are dropped when evicted (by default),
// so cold prefixes cost no bandwidth below.
struct selective_write_through {
  using kvtier_write_policy = write_policy_tag;
  static constexpr std::string_view name = "selective write-through";

  constexpr explicit selective_write_through(std::uint32_t hits = 2, on_evict cold = on_evict::drop)
      : threshold(hits), cold_victims(cold) {
    if (hits == 0) throw config_error("kvtier: selective_write_through needs a hit threshold of at least 1");
  }
  constexpr bool backup_on_insert() const noexcept { return false; }
  constexpr bool backup_on_hit(std::uint32_t hits) const noexcept { return hits >= threshold; }
  constexpr on_evict victim_without_copy() const noexcept { return cold_victims; }

  std::uint32_t threshold;
  on_evict cold_victims;
};

// Back up only on eviction: no bandwidth spent on pages that are never evicted.
struct write_back {
  using kvtier_write_policy = write_policy_tag;
  static constexpr std::string_view name = "write-back";
  static constexpr bool counts_hits = false;
  constexpr bool backup_on_insert() const noexcept { return false; }
  constexpr bool backup_on_hit(std::uint32_t) const noexcept { return false; }
  constexpr on_evict victim_without_copy() const noexcept { return on_evict::backup; }
};

}  // namespace kvtier
