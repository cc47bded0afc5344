#pragma once
// The part every pool shares: slot geometry, the slot allocator and accounting. Pools derive from
// it and add their memory and their memory-space properties.
#include <cstddef>
#include <span>
#include <utility>

#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"
#include "kvtier/core/strong_id.hpp"
#include "kvtier/memory/pool_stats.hpp"
#include "kvtier/memory/slot_allocator.hpp"
#include "kvtier/memory/slot_geometry.hpp"

namespace kvtier::memory::detail {

template <class Tier>
class pool_core {
 public:
  using tier_type = Tier;
  using slot_type = slot_id<Tier>;

  // Allocation: see slot_allocator for the error values. Not thread-safe.
  result<slot_type> allocate() noexcept { return slots_.allocate(); }
  result<void> allocate(std::span<slot_type> out) noexcept { return slots_.allocate(out); }
  result<void> free(slot_type s) noexcept { return slots_.free(s); }
  result<void> free(std::span<const slot_type> in) noexcept { return slots_.free(in); }
  bool is_allocated(slot_type s) const noexcept { return slots_.is_allocated(s); }
  bool contains(slot_type s) const noexcept { return slots_.contains(s); }

  const slot_geometry& geometry() const noexcept { return geometry_; }
  const kv_shape& shape() const noexcept { return geometry_.shape(); }
  std::size_t page_tokens() const noexcept { return geometry_.page_tokens(); }
  std::size_t slot_bytes() const noexcept { return geometry_.slot_bytes(); }
  std::size_t slot_stride() const noexcept { return geometry_.slot_stride(); }
  std::size_t plane_bytes() const noexcept { return geometry_.plane_bytes(); }

  // Capacity and occupancy. A moved-from pool has capacity 0.
  std::size_t capacity() const noexcept { return slots_.capacity(); }
  std::size_t capacity_bytes() const noexcept { return slots_.capacity() * geometry_.slot_stride(); }
  std::size_t used() const noexcept { return slots_.used(); }
  std::size_t available() const noexcept { return slots_.available(); }
  pool_stats stats() const noexcept {
    pool_stats st = slots_.stats();
    st.slot_bytes = geometry_.slot_bytes();
    st.capacity_bytes = capacity_bytes();
    st.used_bytes = st.used_slots * geometry_.slot_stride();
    return st;
  }

 protected:
  // Checks the pool's byte size before any memory is taken; throws config_error on overflow.
  pool_core(const slot_geometry& g, std::size_t capacity)
      : geometry_(g), slots_(((void)g.bytes_for(capacity), capacity)) {}
  pool_core(pool_core&&) noexcept = default;
  pool_core& operator=(pool_core&&) noexcept = default;
  ~pool_core() = default;

  slot_geometry geometry_;
  slot_allocator<Tier> slots_;
};

}  // namespace kvtier::memory::detail
