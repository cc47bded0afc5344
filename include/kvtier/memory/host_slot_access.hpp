#pragma once
// The host-side slot accessors of a pool whose pages start at Pool::host_data(), written once for
// host_pool and pinned_host_pool (CRTP; pool_core supplies the geometry and the allocator).
#include <cassert>
#include <cstddef>
#include <span>

#include "kvtier/core/strong_id.hpp"
#include "kvtier/memory/properties.hpp"
#include "kvtier/memory/slot_geometry.hpp"

namespace kvtier::memory::detail {

template <class Pool, class Tier>
class host_slot_access {
 public:
  // The pool is a handle to its memory: const members hand out writable pointers; const guards the
  // allocator state. Precondition: pool.contains(s) (checked by assert in debug builds).
  std::byte* host_address(slot_id<Tier> s) const noexcept {
    assert(pool().contains(s));
    return pool().host_data() + std::size_t(s.value()) * pool().slot_stride();
  }
  // The page held in slot s: (layer, kv, token, head, dim), slot_bytes() long.
  std::span<std::byte> host_span(slot_id<Tier> s) const noexcept { return {host_address(s), pool().slot_bytes()}; }
  // Plane (layer, kv) of the page in slot s: (token, head, dim), plane_bytes() long.
  std::byte* host_plane(slot_id<Tier> s, std::size_t layer, std::size_t kv) const noexcept {
    assert(layer < pool().geometry().layers() && kv < pool().geometry().kv_planes());
    return host_address(s) + pool().geometry().plane_offset(layer, kv);
  }
  // The whole pool as a page_first array (slot, layer, kv, token, head, dim), for CPU copy paths.
  slot_region<host_accessible> host_region() const noexcept {
    return make_region<host_accessible>(pool().host_data(), pool().geometry(), pool().capacity());
  }

 private:
  const Pool& pool() const noexcept { return static_cast<const Pool&>(*this); }
};

}  // namespace kvtier::memory::detail
