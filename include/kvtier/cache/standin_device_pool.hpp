#pragma once
// standin_device_pool: the device tier of a CPU-only cache. Host memory laid out exactly like the
// engine's GPU KV (layer_first: (layer, kv, token, head, dim), page s = tokens [s·P, s·P + P)),
// handing out device_slot ids, so the cache, its tests and the demo run the same code with
// cpu_copy as they run on a GPU with device memory and the copy kernels.
#include <cstddef>
#include <span>

#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"
#include "kvtier/core/page_size.hpp"
#include "kvtier/core/strong_id.hpp"
#include "kvtier/core/tier.hpp"
#include "kvtier/memory/concepts.hpp"
#include "kvtier/memory/host_mapping.hpp"
#include "kvtier/memory/slot_allocator.hpp"
#include "kvtier/memory/slot_geometry.hpp"
#include "kvtier/transfer/views.hpp"

namespace kvtier {

class standin_device_pool {
 public:
  using kvtier_pool = memory::pool_tag;
  using memory_properties = memory::properties_list<memory::host_accessible>;
  using tier_type = device_tier;
  using slot_type = device_slot;

  // `pages` device pages of `shape` with `p` tokens each. Throws config_error on a zero or
  // overflowing size.
  standin_device_pool(kv_shape shape, page_size<> p, std::size_t pages)
      : geometry_(shape, p), slots_(pages),
        memory_(geometry_.bytes_for(pages)),
        view_(transfer::layer_first_view(memory_.data(), shape, kvtier::detail::checked_mul(pages, p.tokens(), "device tokens"))) {}

  result<slot_type> allocate() noexcept { return slots_.allocate(); }
  result<void> allocate(std::span<slot_type> out) noexcept { return slots_.allocate(out); }
  result<void> free(slot_type s) noexcept { return slots_.free(s); }
  result<void> free(std::span<const slot_type> in) noexcept { return slots_.free(in); }
  bool is_allocated(slot_type s) const noexcept { return slots_.is_allocated(s); }

  std::size_t slot_bytes() const noexcept { return geometry_.slot_bytes(); }
  std::size_t capacity() const noexcept { return slots_.capacity(); }
  std::size_t capacity_bytes() const noexcept { return slots_.capacity() * geometry_.slot_bytes(); }
  std::size_t used() const noexcept { return slots_.used(); }
  std::size_t available() const noexcept { return slots_.available(); }
  memory::pool_stats stats() const noexcept {
    memory::pool_stats st = slots_.stats();
    st.slot_bytes = slot_bytes();
    st.capacity_bytes = capacity_bytes();
    st.used_bytes = st.used_slots * slot_bytes();
    return st;
  }

  // The whole device KV as the engine sees it: (layer, kv, token, head, dim), layer first.
  const transfer::layer_first_buffer& kv_view() const noexcept { return view_; }
  const kv_shape& shape() const noexcept { return geometry_.shape(); }
  std::size_t page_tokens() const noexcept { return geometry_.page_tokens(); }

 private:
  memory::slot_geometry geometry_;
  memory::slot_allocator<device_tier> slots_;
  memory::host_mapping memory_;
  transfer::layer_first_buffer view_;
};

static_assert(memory::pool<standin_device_pool>);
static_assert(!memory::device_accessible_pool<standin_device_pool>);

}  // namespace kvtier
