#pragma once
// Counters every pool reports: occupancy in slots and bytes, and what callers asked of it.
#include <cstddef>
#include <cstdint>

namespace kvtier::memory {

struct pool_stats {
  std::size_t capacity_slots = 0;
  std::size_t used_slots = 0;
  std::size_t free_slots = 0;
  std::size_t high_water_slots = 0;     // most slots ever in use at once
  std::size_t slot_bytes = 0;           // payload of one slot (one page, all layers)
  std::size_t capacity_bytes = 0;       // capacity_slots × slot stride
  std::size_t used_bytes = 0;           // used_slots × slot stride
  std::uint64_t allocated = 0;          // slots handed out, singly or in batches
  std::uint64_t freed = 0;              // slots given back
  std::uint64_t failed_allocations = 0; // allocate calls answered with capacity_exhausted
  std::uint64_t rejected_frees = 0;     // free calls answered with invalid_argument (foreign or double free)

  friend constexpr bool operator==(const pool_stats&, const pool_stats&) = default;
};

}  // namespace kvtier::memory
