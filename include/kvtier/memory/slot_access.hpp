#pragma once
// The slot accessors pools share, written once (CRTP; pool_core supplies the geometry and the
// allocator): host_slot_access for pools whose pages start at Pool::host_data() (host_pool,
// pinned_host_pool), device_slot_access for those whose pages start at Pool::device_data()
// (device_pool, pinned_host_pool's device view). The pool is a handle to its memory: const members
// hand out writable pointers; const guards the allocator state. Precondition of every slot
// function: pool.contains(s) (checked by assert in debug builds).
#include <cassert>
#include <cstddef>
#include <span>

#include "kvtier/core/strong_id.hpp"
#include "kvtier/memory/properties.hpp"
#include "kvtier/memory/slot_geometry.hpp"

namespace kvtier::memory::detail {

// Slot s of `pool`, whose slot 0 is at base: (layer, kv, token, head, dim).
template <class Pool, class Slot>
std::byte* slot_address(const Pool& pool, std::byte* base, Slot s) noexcept {
  assert(pool.contains(s));
  return base + std::size_t(s.value()) * pool.slot_stride();
}
// Plane (layer, kv) of slot s: (token, head, dim), plane_bytes() long.
template <class Pool, class Slot>
std::byte* slot_plane(const Pool& pool, std::byte* base, Slot s, std::size_t layer, std::size_t kv) noexcept {
  assert(layer < pool.geometry().layers() && kv < pool.geometry().kv_planes());
  return slot_address(pool, base, s) + pool.geometry().plane_offset(layer, kv);
}

template <class Pool, class Tier>
class host_slot_access {
 public:
  std::byte* host_address(slot_id<Tier> s) const noexcept { return slot_address(pool(), pool().host_data(), s); }
  // The page held in slot s: (layer, kv, token, head, dim), slot_bytes() long.
  std::span<std::byte> host_span(slot_id<Tier> s) const noexcept { return {host_address(s), pool().slot_bytes()}; }
  // Plane (layer, kv) of the page in slot s: (token, head, dim), plane_bytes() long.
  std::byte* host_plane(slot_id<Tier> s, std::size_t layer, std::size_t kv) const noexcept {
    return slot_plane(pool(), pool().host_data(), s, layer, kv);
  }
  // The whole pool as a page_first array (slot, layer, kv, token, head, dim), for CPU copy paths.
  slot_region<host_accessible> host_region() const noexcept {
    return make_region<host_accessible>(pool().host_data(), pool().geometry(), pool().capacity());
  }

 private:
  const Pool& pool() const noexcept { return static_cast<const Pool&>(*this); }
};

// Device addresses: not dereferenceable on the host (unless the memory is mapped host memory).
template <class Pool, class Tier>
class device_slot_access {
 public:
  std::byte* device_address(slot_id<Tier> s) const noexcept { return slot_address(pool(), pool().device_data(), s); }
  // Plane (layer, kv) of the page in slot s: (token, head, dim), plane_bytes() long.
  std::byte* device_plane(slot_id<Tier> s, std::size_t layer, std::size_t kv) const noexcept {
    return slot_plane(pool(), pool().device_data(), s, layer, kv);
  }
  // The whole pool as a page_first array (slot, layer, kv, token, head, dim), for kernels.
  slot_region<device_accessible> device_region() const noexcept {
    return make_region<device_accessible>(pool().device_data(), pool().geometry(), pool().capacity());
  }

 private:
  const Pool& pool() const noexcept { return static_cast<const Pool&>(*this); }
};

}  // namespace kvtier::memory::detail
