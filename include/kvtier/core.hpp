#pragma once
// kvtier's core vocabulary: shapes, page sizes, ids, tiers and the error model.
// Host and CUDA translation units may both include this header.
#include "kvtier/core/config.hpp"
#include "kvtier/core/error.hpp"
#include "kvtier/core/kv_shape.hpp"
#include "kvtier/core/page_size.hpp"
#include "kvtier/core/strong_id.hpp"
#include "kvtier/core/tier.hpp"
