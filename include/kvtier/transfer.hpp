#pragma once
// Moving KV pages between layouts: views (base pointer or plane table + layout mapping), batches of
// (source page, destination page) pairs, and the CPU copy path (load, backup, copy_pages).
// Host-safe: no CUDA header. The GPU path with the same signatures is kvtier/transfer/gpu.cuh.
#include "kvtier/transfer/cpu.hpp"
#include "kvtier/transfer/geometry.hpp"
#include "kvtier/transfer/views.hpp"
