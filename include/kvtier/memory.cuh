#pragma once
// Typed pools of fixed-size page slots, CUDA side: everything in kvtier/memory.hpp plus the pools
// the GPU reaches: pinned_host_pool (mapped pinned host memory), device_pool (page-first device
// memory) and device_layer_pool (layer-first device memory, usually the engine's own tensors).
// Uses the CUDA runtime API only; host-only users include kvtier/memory.hpp instead.
#include "kvtier/memory.hpp"
#include "kvtier/memory/cuda_support.cuh"
#include "kvtier/memory/pinned_host_pool.cuh"
#include "kvtier/memory/device_pool.cuh"
#include "kvtier/memory/device_layer_pool.cuh"
