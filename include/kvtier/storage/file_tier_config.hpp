#pragma once
// The configuration of a file tier, and the I/O paths it can run on (see file_tier.hpp).
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string_view>

#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"

namespace kvtier {

// The I/O path a file tier runs on.
enum class file_io_path : std::uint8_t { uring_direct, uring_buffered, pread_direct, pread_buffered };

constexpr std::string_view to_string(file_io_path p) noexcept {
  switch (p) {
    case file_io_path::uring_direct: return "io_uring + O_DIRECT";
    case file_io_path::uring_buffered: return "io_uring, buffered";
    case file_io_path::pread_direct: return "pread/pwrite + O_DIRECT";
    case file_io_path::pread_buffered: return "pread/pwrite, buffered";
  }
  return "?";
}

struct file_tier_config {
  std::filesystem::path directory;   // created if missing; holds the slot files, a layout and a lock file
  kv_shape shape;                    // pages of another shape found at open are foreign, not served
  std::size_t page_bytes = 0;        // bytes of one page (decoded); > 0
  std::size_t capacity_pages = 0;    // slots in all files; > 0
  std::size_t pages_per_file = 256;  // slots per preallocated file
  unsigned queue_depth = 32;         // I/O requests in flight at most (1..4096)
  bool use_uring = true;             // false: pread/pwrite
  bool use_direct = true;            // false: through the page cache
};

// cfg itself, or config_error for a value out of range.
inline file_tier_config validated(file_tier_config cfg) {
  if (cfg.page_bytes == 0) throw config_error("kvtier: file_tier with page_bytes 0");
  if (cfg.capacity_pages == 0 || cfg.capacity_pages >= std::size_t(UINT32_MAX))
    throw config_error("kvtier: file_tier capacity_pages must be in [1, 2^32-1)");
  if (cfg.pages_per_file == 0) throw config_error("kvtier: file_tier with pages_per_file 0");
  if (cfg.queue_depth == 0 || cfg.queue_depth > 4096) throw config_error("kvtier: file_tier queue_depth must be in [1, 4096]");
  return cfg;
}

}  // namespace kvtier
