#pragma once
// kvtier's hierarchical cache on a GPU: everything of kvtier/cache.hpp, plus the GPU composition
// (gpu_cache_builder: device_layer_pool, pinned_host_pool, transfer::gpu_copy). Needs nvcc.
#include "kvtier/cache.hpp"
#include "kvtier/cache/gpu_builder.cuh"
#include "kvtier/transfer/gpu_copy.cuh"
