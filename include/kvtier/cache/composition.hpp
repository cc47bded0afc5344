#pragma once
// The pieces a hierarchical cache is composed from, as small tag structs (CUTLASS-style): each
// names one choice, and auto_choice lets the library pick. cache_builder (builder.hpp) checks the
// choices against their concepts and resolves them into one cache type.
#include <cstddef>

#include "kvtier/codec/concepts.hpp"
#include "kvtier/codec/identity.hpp"

namespace kvtier {

// "Let kvtier pick": the CPU stand-in or the GPU, the pool that suits the copy strategy, LRU, …
struct auto_choice {};

// The device tier: the engine's KV, in the engine's layout. Layout: layout::layer_first (what
// attention reads); Pool: host_backed_device_pool (CPU-only), or a device pool of kvtier/memory.cuh.
template <class Layout = auto_choice, class Pool = auto_choice>
struct device_memory {
  using layout_type = Layout;
  using pool_type = Pool;
};

// The host tier: whole pages, page-first (one contiguous block per page, all layers), so a page
// moves to slow tiers in one transfer. Layout: layout::page_first or page_head_first;
// Pool: memory::host_pool (CPU-only) or a pinned host pool (GPU).
template <class Layout = auto_choice, class Pool = auto_choice>
struct host_memory {
  using layout_type = Layout;
  using pool_type = Pool;
};

// One slow tier below host DRAM: a storage backend template and the codec its pages go through,
// e.g. slow_tier<file_tier>, slow_tier<redis_tier, identity_codec>.
template <template <class> class Backend, class Codec = identity_codec>
struct slow_tier {
  using codec_type = Codec;
  using backend_type = Backend<Codec>;
};

// Zero, one or two slow tiers, fastest first: the first is the disk tier, the second the remote.
template <class... Tiers>
struct slow_tiers {
  static constexpr std::size_t size = sizeof...(Tiers);
};

// Write policies per edge of the hierarchy: device → host, and host → slow tiers.
template <class DeviceToHost = auto_choice, class HostToSlow = auto_choice>
struct write_policies {
  using device_to_host = DeviceToHost;
  using host_to_slow = HostToSlow;
};

}  // namespace kvtier
