#pragma once
// kvtier's prefix index: a page-granular radix tree over token ids that answers "how much of this
// prompt is cached, and in which tiers", keeps pages in use from eviction, and picks victims per
// tier with a compile-time eviction policy. Keys for slow tiers are chained XXH3-128 hashes.
#include "kvtier/index/page_keys.hpp"
#include "kvtier/index/radix_index.hpp"
#include "kvtier/index/residency.hpp"
#include "kvtier/policy/eviction.hpp"
