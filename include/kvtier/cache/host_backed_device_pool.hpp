#pragma once
// host_backed_device_pool: host memory standing in for a device pool, so that a CPU-only cache
// runs the GPU's code. It is laid out exactly like the engine's GPU KV (layer_first:
// (layer, kv, token, head, dim), page s = tokens [s·P, s·P + P)) and hands out device_slot ids; its
// slots and accounting are pool_core's, as in every pool. cpu_copy reaches it (host-accessible);
// GPU kernels do not (not device-accessible).
#include <cstddef>

#include "kvtier/core/kv_shape.hpp"
#include "kvtier/core/page_size.hpp"
#include "kvtier/core/tier.hpp"
#include "kvtier/memory/concepts.hpp"
#include "kvtier/memory/host_mapping.hpp"
#include "kvtier/memory/pool_core.hpp"
#include "kvtier/memory/properties.hpp"
#include "kvtier/memory/slot_geometry.hpp"
#include "kvtier/transfer/views.hpp"

namespace kvtier {

class host_backed_device_pool : public memory::detail::pool_core<device_tier> {
 public:
  using kvtier_pool = memory::pool_tag;
  using memory_properties = memory::properties_list<memory::host_accessible>;

  // `pages` device pages of `shape` with `p` tokens each. Throws config_error on a zero or
  // overflowing size.
  host_backed_device_pool(kv_shape shape, page_size<> p, std::size_t pages)
      : pool_core(memory::slot_geometry(shape, p), pages),
        memory_(geometry_.bytes_for(pages)),
        view_(transfer::layer_first_view(memory_.data(), shape, kvtier::detail::checked_mul(pages, p.tokens(), "device tokens"))) {}

  // The whole device KV as the engine sees it. // (layer, kv, token, head, dim), layer first
  const transfer::layer_first_buffer& kv_view() const noexcept { return view_; }

 private:
  memory::host_mapping memory_;
  transfer::layer_first_buffer view_;
};

static_assert(memory::pool<host_backed_device_pool>);
static_assert(!memory::device_accessible_pool<host_backed_device_pool>);

}  // namespace kvtier
