#pragma once
// The 128-bit key of one cached page and the namespace that owns it. Index, pools and slow tiers
// all name pages this way; a slow tier stores both in every page header.
#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>

#include "kvtier/core/config.hpp"
#include "kvtier/core/strong_id.hpp"

namespace kvtier {

// A 128-bit page key (for example the chained XXH3-128 of a prefix's token ids). Plain value type.
struct page_key {
  std::uint64_t hi = 0;
  std::uint64_t lo = 0;

  friend constexpr bool operator==(page_key, page_key) noexcept = default;
  friend constexpr auto operator<=>(page_key, page_key) noexcept = default;
};

struct namespace_tag {};
// The owner of cached entries (tenant, model, adapter): two namespaces never share pages.
using namespace_id = strong_id<namespace_tag, std::uint64_t>;

}  // namespace kvtier

template <>
struct std::hash<kvtier::page_key> {
  std::size_t operator()(kvtier::page_key k) const noexcept {
    // The key is already a hash; fold the halves with a multiply so both contribute.
    return std::size_t(k.lo ^ (k.hi * 0x9e3779b97f4a7c15ull));
  }
};
