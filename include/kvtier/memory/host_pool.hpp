#pragma once
// host_pool: page-first slots in plain aligned host memory. Serves CPU-only builds and tests; the
// GPU cannot reach it (use pinned_host_pool, in pinned_host_pool.cuh, for that).
#include <cstddef>
#include <new>
#include <utility>

#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"
#include "kvtier/core/page_size.hpp"
#include "kvtier/core/tier.hpp"
#include "kvtier/memory/concepts.hpp"
#include "kvtier/memory/pool_core.hpp"
#include "kvtier/memory/properties.hpp"
#include "kvtier/memory/slot_access.hpp"
#include "kvtier/memory/slot_geometry.hpp"

namespace kvtier::memory {

struct host_pool_options {
  std::size_t alignment = 4096;   // of the buffer's start: a power of two (4096 suits O_DIRECT)
  std::size_t slot_alignment = 1; // of every slot's start; 1 packs slots into an exact page_first array
};

class host_pool : public detail::pool_core<host_tier>, public detail::host_slot_access<host_pool, host_tier> {
 public:
  using kvtier_pool = pool_tag;
  using memory_properties = properties_list<host_accessible>;

  // capacity_slots pages of `shape` with `pages` tokens each. Throws config_error for a zero or
  // overflowing size or a bad alignment, std::bad_alloc when the memory is not there.
  host_pool(kv_shape shape, page_size<> pages, std::size_t capacity_slots, host_pool_options opt = {})
      : pool_core(slot_geometry(shape, pages, opt.slot_alignment), capacity_slots), align_(opt.alignment) {
    if (align_ == 0 || (align_ & (align_ - 1)) != 0) throw config_error("kvtier: host_pool alignment must be a power of two");
    if (align_ < alignof(std::max_align_t)) align_ = alignof(std::max_align_t);
    data_ = static_cast<std::byte*>(::operator new(capacity_bytes(), std::align_val_t(align_)));
  }

  host_pool(host_pool&& o) noexcept
      : pool_core(std::move(o)), data_(std::exchange(o.data_, nullptr)), align_(o.align_) {}
  host_pool& operator=(host_pool&& o) noexcept {
    if (this != &o) {
      release();
      pool_core::operator=(std::move(o));
      data_ = std::exchange(o.data_, nullptr);
      align_ = o.align_;
    }
    return *this;
  }
  host_pool(const host_pool&) = delete;
  host_pool& operator=(const host_pool&) = delete;
  ~host_pool() { release(); }

  // Slot 0 of the pool's memory; host_address, host_span, host_plane and host_region come from
  // detail::host_slot_access (slot_access.hpp).
  std::byte* host_data() const noexcept { return data_; }
  std::size_t alignment() const noexcept { return align_; }

 private:
  void release() noexcept {
    if (data_ != nullptr) ::operator delete(data_, std::align_val_t(align_));
    data_ = nullptr;
  }

  std::byte* data_ = nullptr;
  std::size_t align_;
};

static_assert(host_accessible_pool<host_pool>);
static_assert(!device_accessible_pool<host_pool>);

}  // namespace kvtier::memory
