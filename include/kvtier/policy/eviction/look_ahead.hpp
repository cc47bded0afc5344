#pragma once
// The look-ahead hook: look_ahead<P> orders nodes as P does, except that a node some queued
// request will need (expected > 0) goes after every node none needs. The scheduler drives it
// through radix_index::expect / radix_index::unexpect with the queued prompts.
#include <cstdint>
#include <string_view>

#include "kvtier/policy/eviction/concept.hpp"
#include "kvtier/policy/eviction/lru.hpp"

namespace kvtier {

template <eviction_policy Base = lru>
struct look_ahead {
  using kvtier_eviction_policy = eviction_policy_tag;
  static constexpr std::string_view name = "look-ahead";

  struct node_state {
    typename Base::node_state base{};
    std::uint32_t expected = 0;  // queued requests that will need this node (a saturating count)
  };

  void on_insert(node_state& s, const access_info& a) noexcept { base.on_insert(s.base, a); }
  void on_access(node_state& s, const access_info& a) noexcept { base.on_access(s.base, a); }
  std::uint64_t key(const node_state& s) const noexcept {
    return (s.expected > 0 ? protected_bit : 0) | (base.key(s.base) >> 1);
  }
  void on_evict(const node_state& s) noexcept { base.on_evict(s.base); }
  void on_expect(node_state& s, int delta) noexcept {
    if (delta > 0) s.expected = s.expected > UINT32_MAX - std::uint32_t(delta) ? UINT32_MAX : s.expected + std::uint32_t(delta);
    else s.expected = s.expected < std::uint32_t(-delta) ? 0 : s.expected - std::uint32_t(-delta);
  }

  Base base{};

 private:
  static constexpr std::uint64_t protected_bit = std::uint64_t{1} << 63;
};

}  // namespace kvtier
