#pragma once
// kvtier's hierarchical cache: the one type an engine includes. Build it with cache_builder:
//   using cache_type = kvtier::cache_builder<kvtier::page_size<16>>::cache_type;
// then lookup → prefetch → load → (compute) → commit → release, and poll() once per step.
// Host-only (the CPU copy strategy and host memory standing in for the device); the GPU
// composition is kvtier/cache.cuh.
#include "kvtier/cache/builder.hpp"
#include "kvtier/cache/composition.hpp"
#include "kvtier/cache/hierarchical_cache.hpp"
#include "kvtier/cache/host_backed_device_pool.hpp"
#include "kvtier/cache/lease.hpp"
#include "kvtier/cache/stats.hpp"
#include "kvtier/policy/eviction.hpp"
#include "kvtier/policy/prefetch.hpp"
#include "kvtier/policy/write.hpp"
#include "kvtier/storage/memory_tier.hpp"
#include "kvtier/transfer/copy_strategy.hpp"
#include "kvtier/transfer/cpu_copy.hpp"
