// A write policy that does not opt in (no `using kvtier_write_policy = write_policy_tag;`).
#include "kvtier/cache.hpp"
using namespace kvtier;
struct backup_sometimes {  // the right members, no opt-in tag
  static constexpr std::string_view name = "sometimes";
  constexpr bool backup_on_insert() const noexcept { return true; }
  constexpr bool backup_on_hit(std::uint32_t) const noexcept { return false; }
  constexpr on_evict victim_without_copy() const noexcept { return on_evict::drop; }
};
#ifdef KVTIER_COMPILE_FAIL
using bad = cache_builder<page_size<16>, device_memory<>, host_memory<>, slow_tiers<>, auto_choice,
                          write_policies<backup_sometimes>>::cache_type;
bad* p = nullptr;
#else
using good = cache_builder<page_size<16>, device_memory<>, host_memory<>, slow_tiers<>, auto_choice,
                           write_policies<write_back>>::cache_type;
good* p = nullptr;
#endif
