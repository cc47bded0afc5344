#pragma once
// kvtier's policies, chosen at compile time: eviction (which page leaves a tier first), write (when
// a page is copied one tier down) and prefetch (how long a scheduled request waits for slow-tier
// pages). Host-only and CUDA translation units may both include this header.
#include "kvtier/policy/compute_or_load.hpp"
#include "kvtier/policy/eviction.hpp"
#include "kvtier/policy/prefetch.hpp"
#include "kvtier/policy/write.hpp"
