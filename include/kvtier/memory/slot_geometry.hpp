#pragma once
// Where a page's bytes sit inside a pool of fixed-size slots. Pools hold pages page-first: one slot
// is one page of all layers, contiguous, ordered (layer, kv, token, head, dim) row-major, so a page
// moves to and from slow tiers as one transfer.
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "kvtier/core/config.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"
#include "kvtier/core/page_size.hpp"
#include "kvtier/memory/properties.hpp"

namespace kvtier::memory {

// The most slots one pool holds: slot ids are 32-bit and the all-ones id means "invalid".
inline constexpr std::size_t max_slots = std::numeric_limits<std::uint32_t>::max() - 1;

// The byte arithmetic of one page-first slot.
class slot_geometry {
 public:
  // slot_alignment pads the distance between slots (1: slots are packed back to back, so the pool
  // is exactly a page_first array). Throws config_error on overflow or a non-power-of-two alignment.
  constexpr slot_geometry(kv_shape shape, page_size<> pages, std::size_t slot_alignment = 1)
      : shape_(shape), page_tokens_(pages.tokens()), slot_bytes_(shape.bytes_per_page(pages.tokens())),
        plane_bytes_(pages.tokens() * shape.row_bytes()) {
    if (slot_alignment == 0 || (slot_alignment & (slot_alignment - 1)) != 0)
      throw config_error("kvtier: slot alignment must be a power of two");
    if (slot_bytes_ > std::numeric_limits<std::size_t>::max() - slot_alignment)
      throw config_error("kvtier: overflow computing the slot stride");
    slot_stride_ = (slot_bytes_ + slot_alignment - 1) / slot_alignment * slot_alignment;
  }

  constexpr const kv_shape& shape() const noexcept { return shape_; }
  constexpr std::size_t page_tokens() const noexcept { return page_tokens_; }
  constexpr std::size_t layers() const noexcept { return shape_.layers(); }
  constexpr std::size_t kv_planes() const noexcept { return shape_.kv_planes(); }
  // Bytes of one page, all layers: the payload of one slot.
  constexpr std::size_t slot_bytes() const noexcept { return slot_bytes_; }
  // Bytes from one slot's start to the next (slot_bytes rounded up to the slot alignment).
  constexpr std::size_t slot_stride() const noexcept { return slot_stride_; }
  // Bytes of one (layer, kv) plane of one page: page_tokens rows of row_bytes.
  constexpr std::size_t plane_bytes() const noexcept { return plane_bytes_; }
  // Offset of plane (layer, kv) inside a slot.
  constexpr std::size_t plane_offset(std::size_t layer, std::size_t kv) const noexcept {
    return (layer * kv_planes() + kv) * plane_bytes_;
  }
  // Bytes of `slots` slots; throws config_error on overflow (capacities come from configuration).
  constexpr std::size_t bytes_for(std::size_t slots) const {
    return kvtier::detail::checked_mul(slots, slot_stride_, "pool bytes");
  }

  friend constexpr bool operator==(const slot_geometry&, const slot_geometry&) = default;

 private:
  kv_shape shape_;
  std::size_t page_tokens_;
  std::size_t slot_bytes_;
  std::size_t plane_bytes_;
  std::size_t slot_stride_ = 0;
};

// A page-first array of slots in one memory space, small and trivially copyable so a kernel can
// take it by value. Space is host_accessible or device_accessible: a kernel that asks for
// slot_region<device_accessible> cannot be given host-only memory.
// (slot, layer, kv, token, head, dim)
template <class Space>
  requires std::same_as<Space, host_accessible> || std::same_as<Space, device_accessible>
struct slot_region {
  using memory_space = Space;

  std::byte* base = nullptr;        // slot 0, in Space's address space
  std::size_t slot_stride = 0;      // bytes from one slot to the next
  std::size_t plane_bytes = 0;      // bytes of one (layer, kv) plane of one page
  std::uint32_t capacity = 0;       // slots
  std::uint32_t kv_planes = 0;      // 2 for MHA (K, V), 1 for MLA

  KVTIER_HOST_DEVICE constexpr std::byte* slot(std::uint32_t s) const noexcept {
    return base + std::size_t(s) * slot_stride;
  }
  KVTIER_HOST_DEVICE constexpr std::byte* plane(std::uint32_t s, std::size_t layer, std::size_t kv) const noexcept {
    return slot(s) + (layer * kv_planes + kv) * plane_bytes;
  }
};

namespace detail {
template <class Space>
constexpr slot_region<Space> make_region(std::byte* base, const slot_geometry& g, std::size_t capacity) noexcept {
  return slot_region<Space>{base, g.slot_stride(), g.plane_bytes(), std::uint32_t(capacity),
                            std::uint32_t(g.kv_planes())};
}
}  // namespace detail

}  // namespace kvtier::memory
