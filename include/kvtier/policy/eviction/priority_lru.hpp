#pragma once
// Priority, then LRU (as TensorRT-LLM's KV-cache retention priorities): the request's retention
// priority (0..255, higher kept longer) orders victims first, recency second. The most recent
// access sets the node's priority, so a prefix a high-priority request stops using can age out.
#include <cstdint>
#include <string_view>

#include "kvtier/policy/eviction/concept.hpp"

namespace kvtier {

struct priority_lru {
  using kvtier_eviction_policy = eviction_policy_tag;
  static constexpr std::string_view name = "priority-lru";

  struct node_state {
    std::uint64_t last_access = 0;
    std::uint8_t priority = 0;
  };

  void on_insert(node_state& s, const access_info& a) noexcept { on_access(s, a); }
  void on_access(node_state& s, const access_info& a) noexcept {
    s.last_access = a.tick;
    s.priority = a.priority;
  }
  std::uint64_t key(const node_state& s) const noexcept {
    return (std::uint64_t(s.priority) << 56) | (s.last_access & tick_mask);
  }
  void on_evict(const node_state&) noexcept {}

 private:
  static constexpr std::uint64_t tick_mask = (std::uint64_t{1} << 56) - 1;
};

}  // namespace kvtier
