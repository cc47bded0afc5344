#pragma once
// Least recently used: the key is the tick of the node's last access.
#include <cstdint>
#include <string_view>

#include "kvtier/policy/eviction/concept.hpp"

namespace kvtier {

struct lru {
  using kvtier_eviction_policy = eviction_policy_tag;
  static constexpr std::string_view name = "lru";

  struct node_state {
    std::uint64_t last_access = 0;
  };

  void on_insert(node_state& s, const access_info& a) noexcept { s.last_access = a.tick; }
  void on_access(node_state& s, const access_info& a) noexcept { s.last_access = a.tick; }
  std::uint64_t key(const node_state& s) const noexcept { return s.last_access; }
  void on_evict(const node_state&) noexcept {}
};

}  // namespace kvtier
