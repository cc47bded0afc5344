#pragma once
// KV memory layouts: mdspan-style layout mappings over one logical index (layer, kv, token, head, dim).
//  - layer_first: the engine's GPU layout (one buffer, or one tensor per layer through a plane table);
//  - page_first: every page contiguous, what the host, disk and remote tiers hold;
//  - page_head_first: pages contiguous and each head contiguous inside a page (tensor-parallel reads).
// Compiles with plain g++ and with nvcc (no range-v3, no CUDA headers).
#include "kvtier/layout/concepts.hpp"
#include "kvtier/layout/extents.hpp"
#include "kvtier/layout/layer_first.hpp"
#include "kvtier/layout/page_first.hpp"
#include "kvtier/layout/page_head_first.hpp"
