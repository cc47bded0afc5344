#pragma once
// The four cache modes a serving run compares, same engine, same run:
//  - none:   no prefix caching (every prompt prefilled; the cache only hands out slots);
//  - device: prefix caching in the device pool only, what an engine does without offload: pages
//            evicted from the device are dropped (no_backup), never copied to host;
//  - host:   kvtier device + host (write-through backups, loads layer by layer);
//  - file:   kvtier device + host + file tier (host victims written back to files, prefetched).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kvtier/core/error.hpp"
#include "kvtier/policy/write.hpp"

namespace kvtier_engine::serving {

enum class cache_mode : std::uint8_t { none, device, host, file };

constexpr std::string_view to_string(cache_mode m) noexcept {
  switch (m) {
    case cache_mode::none: return "none";
    case cache_mode::device: return "device";
    case cache_mode::host: return "device+host";
    case cache_mode::file: return "device+host+file";
  }
  return "?";
}

// "none,device,host,file" → modes; config_error for an unknown name.
inline std::vector<cache_mode> parse_modes(std::string_view list) {
  std::vector<cache_mode> out;
  while (!list.empty()) {
    const auto comma = list.find(',');
    const std::string_view m = list.substr(0, comma);
    if (m == "none") out.push_back(cache_mode::none);
    else if (m == "device") out.push_back(cache_mode::device);
    else if (m == "host") out.push_back(cache_mode::host);
    else if (m == "file") out.push_back(cache_mode::file);
    else throw kvtier::config_error("kvtier-serve: unknown mode '" + std::string(m) + "' (none, device, host, file)");
    list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
  }
  if (out.empty()) throw kvtier::config_error("kvtier-serve: --modes needs at least one mode");
  return out;
}

// The device-only mode's device → host policy: never copy down; an evicted page is dropped.
struct no_backup {
  using kvtier_write_policy = kvtier::write_policy_tag;
  static constexpr std::string_view name = "no backup (device only)";
  static constexpr bool counts_hits = false;
  constexpr bool backup_on_insert() const noexcept { return false; }
  constexpr bool backup_on_hit(std::uint32_t) const noexcept { return false; }
  constexpr kvtier::on_evict victim_without_copy() const noexcept { return kvtier::on_evict::drop; }
};
static_assert(kvtier::write_policy<no_backup>);

}  // namespace kvtier_engine::serving
