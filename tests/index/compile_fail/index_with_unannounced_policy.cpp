// An eviction policy must opt in: a type with every member but no tag is refused by radix_index.
#include <cstdint>
#include <string_view>

#include "kvtier/index.hpp"

struct unannounced_policy {
  static constexpr std::string_view name = "unannounced";
  struct node_state {
    std::uint64_t t = 0;
  };
  void on_insert(node_state&, const kvtier::access_info&) noexcept {}
  void on_access(node_state&, const kvtier::access_info&) noexcept {}
  std::uint64_t key(const node_state& s) const noexcept { return s.t; }
  void on_evict(const node_state&) noexcept {}
};

struct announced_policy : unannounced_policy {
  using kvtier_eviction_policy = kvtier::eviction_policy_tag;
};

kvtier::radix_index<announced_policy, 16>* fine = nullptr;
#ifdef KVTIER_COMPILE_FAIL
kvtier::radix_index<unannounced_policy, 16>* refused = nullptr;  // the misuse
#endif
