#pragma once
// Typed pools of fixed-size page slots, host side: memory-space properties and pool concepts, the
// O(1) slot allocator, slot geometry and the host-only host_pool. No CUDA header is reachable from
// here; the CUDA pools (pinned_host_pool, device_pool, device_layer_pool) are in kvtier/memory.cuh.
#include "kvtier/memory/properties.hpp"
#include "kvtier/memory/concepts.hpp"
#include "kvtier/memory/pool_stats.hpp"
#include "kvtier/memory/slot_geometry.hpp"
#include "kvtier/memory/slot_allocator.hpp"
#include "kvtier/memory/host_mapping.hpp"
#include "kvtier/memory/host_pool.hpp"
