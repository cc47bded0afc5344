#pragma once
// Least frequently used with dynamic aging (LFU-DA): a node's priority is L + hits, where L is the
// priority of the last victim. Hot nodes that stop being used are overtaken as L rises, so a
// burst long ago does not pin pages forever. Ties go to the least recently used.
#include <algorithm>
#include <cstdint>
#include <string_view>

#include "kvtier/policy/eviction/concept.hpp"

namespace kvtier {

struct lfu_aging {
  using kvtier_eviction_policy = eviction_policy_tag;
  static constexpr std::string_view name = "lfu-aging";

  struct node_state {
    std::uint32_t hits = 0;
    std::uint32_t priority = 0;   // L at the last access + hits, saturating
    std::uint32_t last_access = 0;  // low 32 bits of the tick: the tie-break
  };

  void on_insert(node_state& s, const access_info& a) noexcept {
    s.hits = 1;
    s.priority = add(age, 1);
    s.last_access = std::uint32_t(a.tick);
  }
  void on_access(node_state& s, const access_info& a) noexcept {
    if (s.hits != UINT32_MAX) ++s.hits;
    s.priority = add(age, s.hits);
    s.last_access = std::uint32_t(a.tick);
  }
  std::uint64_t key(const node_state& s) const noexcept {
    return (std::uint64_t(s.priority) << 32) | s.last_access;
  }
  void on_evict(const node_state& s) noexcept { age = std::max(age, s.priority); }

  std::uint32_t age = 0;  // L: the priority of the most valuable victim so far

 private:
  static std::uint32_t add(std::uint32_t a, std::uint32_t b) noexcept {
    return a > UINT32_MAX - b ? UINT32_MAX : a + b;
  }
};

}  // namespace kvtier
