#pragma once
// The eviction_policy concept. A policy keeps a small state in every node of the prefix index and
// turns it into a 64-bit key; the index evicts the smallest key first (among evictable leaves).
// The key must depend on the node's state only, so a key stored in a heap can be re-checked later.
#include <concepts>
#include <cstdint>
#include <string_view>
#include <type_traits>

namespace kvtier {

// Opt-in tag: an eviction policy declares `using kvtier_eviction_policy = eviction_policy_tag;`.
struct eviction_policy_tag {};

// What the index tells a policy about one access (a match or an insert touching a node).
struct access_info {
  std::uint64_t tick = 0;      // the index's logical clock: one tick per match or insert
  std::uint8_t priority = 0;   // the request's retention priority (higher is kept longer)
};

namespace detail {
template <class P>
concept declares_eviction_policy = std::same_as<typename P::kvtier_eviction_policy, eviction_policy_tag>;

template <class S>
concept policy_node_state =
  std::default_initializable<S> &&
  std::is_trivially_copyable_v<S>;
}  // namespace detail

// clang-format off
template <class P>
concept eviction_policy =
  std::copy_constructible<P> &&
  detail::declares_eviction_policy<P> &&
  detail::policy_node_state<typename P::node_state> &&
  requires(P& p, const P& cp, typename P::node_state& s, const typename P::node_state& cs,
           const access_info& a) {
    { p.on_insert(s, a) } noexcept -> std::same_as<void>;   // the node was created
    { p.on_access(s, a) } noexcept -> std::same_as<void>;   // a match or insert went through it
    { cp.key(cs) } noexcept -> std::same_as<std::uint64_t>; // smaller keys are evicted first
    { p.on_evict(cs) } noexcept -> std::same_as<void>;      // a page of the node was evicted
    { P::name } -> std::convertible_to<std::string_view>;
  };

// A policy through which a scheduler protects the pages that queued requests will need.
template <class P>
concept look_ahead_policy =
  eviction_policy<P> &&
  requires(P& p, typename P::node_state& s, int delta) {
    { p.on_expect(s, delta) } noexcept -> std::same_as<void>;  // +1: a queued request needs it; -1: no longer
  };
// clang-format on

}  // namespace kvtier
