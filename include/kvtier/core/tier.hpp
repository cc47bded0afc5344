#pragma once
// The memory hierarchy, fastest first. Tags name tiers at compile time; tier_id at run time.
#include <cstdint>
#include <string_view>

namespace kvtier {

enum class tier_id : std::uint8_t { device = 0, host = 1, disk = 2, remote = 3 };
inline constexpr std::size_t tier_count = 4;

struct device_tier { static constexpr tier_id id = tier_id::device; };
struct host_tier   { static constexpr tier_id id = tier_id::host; };
struct disk_tier   { static constexpr tier_id id = tier_id::disk; };
struct remote_tier { static constexpr tier_id id = tier_id::remote; };

constexpr std::string_view to_string(tier_id t) noexcept {
  switch (t) {
    case tier_id::device: return "device";
    case tier_id::host: return "host";
    case tier_id::disk: return "disk";
    case tier_id::remote: return "remote";
  }
  return "?";
}

// A set of tiers (which tiers hold a page), one bit each.
struct tier_set {
  std::uint8_t bits = 0;
  constexpr bool has(tier_id t) const noexcept { return bits & (1u << unsigned(t)); }
  constexpr tier_set& add(tier_id t) noexcept { bits |= std::uint8_t(1u << unsigned(t)); return *this; }
  constexpr tier_set& remove(tier_id t) noexcept { bits &= std::uint8_t(~(1u << unsigned(t))); return *this; }
  constexpr bool empty() const noexcept { return bits == 0; }
  friend constexpr bool operator==(tier_set, tier_set) = default;
};

}  // namespace kvtier
